//! Meta-loss over meta-training, on a log scale.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{PlotError, Result};
use crate::render::{
    AXIS_DESC_SIZE, Area, FONT, LEGEND_SIZE, MAX_DRAWN_POINTS, TICK_SIZE, TITLE_SIZE, draw_note, fmt_log,
    log_ticks, minmax_downsample, write_png_atomically,
};

const TRAIN_RAW: RGBColor = RGBColor(100, 149, 237);
const TRAIN_AVG: RGBColor = RGBColor(16, 52, 140);
const EVAL: RGBColor = RGBColor(214, 39, 40);

/// The log axis spans at most this many decades (plus padding).
const MAX_DECADES: f64 = 100.0;

/// Fewer train points than this get no moving average (the raw line says it all).
const MIN_POINTS_FOR_AVERAGE: usize = 20;

/// Meta-loss over training: x = meta-step, y = loss on a log scale; `train` is (step, meta-loss)
/// per logged step (possibly thousands of points: draw a thin line plus a moving average);
/// `eval` optionally (step, mean, ci95) points from periodic evaluation drawn as markers with error bars.
///
/// Writes a [`WIDTH`](crate::WIDTH) × [`HEIGHT`](crate::HEIGHT) PNG to `path` atomically.
///
/// * The train series is drawn as a thin light line (downsampled to about 2000 points with
///   min/max buckets when longer) plus, from 20 points on, a centred moving average of
///   log(loss) (a geometric mean) over about 2% of the points.
/// * Points are sorted by step; non-finite or non-positive losses cannot sit on a log axis and
///   are skipped. Eval points whose mean is not finite and positive are skipped; a non-finite
///   or negative `ci95` draws the marker without an error bar; error bars extend the axis by
///   at most a decade beyond the data and are clipped at the chart edges (a bar reaching zero
///   or below ends at the bottom of the axis).
/// * With nothing left to draw (both series empty or all skipped) the chart is still written,
///   with labelled axes and a "no data" note.
///
/// # Errors
/// [`PlotError::Io`] when the destination directory does not exist or the file cannot be
/// written, [`PlotError::InvalidInput`] when `path` names no file, [`PlotError::Drawing`] or
/// [`PlotError::Font`] when rendering fails.
pub fn plot_meta_loss(
    path: &Path,
    title: &str,
    train: &[(u64, f64)],
    eval: &[(u64, f64, f64)],
) -> Result<()> {
    let mut tr: Vec<(i64, f64)> =
        train.iter().filter(|p| p.1.is_finite() && p.1 > 0.0).map(|&(s, y)| (step_coord(s), y)).collect();
    tr.sort_by_key(|p| p.0);
    // (step, mean, upper, lower): bounds are None when there is no usable interval.
    let mut ev: Vec<EvalPoint> = eval
        .iter()
        .filter(|p| p.1.is_finite() && p.1 > 0.0)
        .map(|&(s, mean, ci)| {
            let ci = (ci.is_finite() && ci > 0.0).then_some(ci);
            EvalPoint {
                step: step_coord(s),
                mean,
                upper: ci.map(|c| mean + c).filter(|u| u.is_finite()),
                lower: ci.map(|c| mean - c).filter(|l| l.is_finite() && *l > 0.0),
                has_bar: ci.is_some(),
            }
        })
        .collect();
    ev.sort_by_key(|p| p.step);
    let skipped = train.len() - tr.len() + eval.len() - ev.len();

    write_png_atomically(path, |root| draw_chart(root, title, &tr, &ev, skipped, train.len() + eval.len()))
}

struct EvalPoint {
    step: i64,
    mean: f64,
    upper: Option<f64>,
    lower: Option<f64>,
    has_bar: bool,
}

fn step_coord(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX / 2)
}

fn draw_chart(
    root: &Area<'_>,
    title: &str,
    tr: &[(i64, f64)],
    ev: &[EvalPoint],
    skipped: usize,
    total: usize,
) -> Result<()> {
    let empty = tr.is_empty() && ev.is_empty();

    // x range (integer meta-steps), padded so edge markers are not clipped.
    let (x_lo, x_hi) = if empty {
        (0, 1)
    } else {
        let lo = tr.iter().map(|p| p.0).chain(ev.iter().map(|p| p.step)).min();
        let hi = tr.iter().map(|p| p.0).chain(ev.iter().map(|p| p.step)).max();
        let (lo, hi) = (lo.unwrap_or(0), hi.unwrap_or(1));
        let pad = ((hi - lo) / 50).max(1);
        (lo - pad, hi + pad)
    };

    // y range (log), padded by 5% of the decades shown (at least 0.1 decade).
    // Error bars widen it by at most one decade beyond the data, so one absurd interval cannot
    // squash the curves (such a bar is clipped at the edge of the chart).
    let ys = tr.iter().map(|p| p.1).chain(ev.iter().map(|p| p.mean));
    let (data_lo, data_hi) =
        ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let bars = ev.iter().flat_map(|p| [p.upper, p.lower]).flatten();
    let (lo, hi) = bars.fold((data_lo, data_hi), |(lo, hi), y| {
        (lo.min(y.max(data_lo / 10.0)), hi.max(y.min(data_hi * 10.0)))
    });
    let (y_lo, y_hi) = if lo.is_finite() && hi.is_finite() {
        // At most MAX_DECADES decades, keeping the top: values further below are clipped.
        // (Plotters' log-axis tick generation never ends when max / min overflows to inf.)
        let lh = hi.log10();
        let ll = lo.log10().max(lh - MAX_DECADES);
        let pad = (0.05 * (lh - ll)).max(0.1);
        let y_hi = 10f64.powf(lh + pad).min(f64::MAX);
        let y_lo = 10f64.powf(ll - pad).max(y_hi * 10f64.powf(-MAX_DECADES - 1.0)).max(f64::MIN_POSITIVE);
        (y_lo, if y_hi > y_lo { y_hi } else { 10.0 * y_lo })
    } else {
        (0.1, 1.0)
    };

    let (y_ticks, y_light) = log_ticks(y_lo, y_hi);

    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, TITLE_SIZE))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            x_lo..x_hi,
            (y_lo..y_hi).log_scale().with_key_points(y_ticks).with_light_points(y_light),
        )
        .map_err(PlotError::drawing)?;
    chart
        .configure_mesh()
        .x_desc("meta-step")
        .y_desc("meta-loss (log scale)")
        .label_style((FONT, TICK_SIZE))
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .x_labels(8)
        .x_label_formatter(&|v: &i64| if *v >= 0 { v.to_string() } else { String::new() })
        .y_label_formatter(&|v: &f64| fmt_log(*v))
        .x_max_light_lines(4)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(PlotError::drawing)?;

    if empty {
        let msg = if total == 0 {
            "no data".to_string()
        } else {
            format!("no data: all {skipped} points are non-finite or non-positive")
        };
        return draw_note(&chart.plotting_area().strip_coord_spec(), &msg);
    }

    let mut labelled = false;
    if tr.len() == 1 {
        chart
            .draw_series(tr.iter().map(|&p| Circle::new(p, 3, TRAIN_AVG.filled())))
            .map_err(PlotError::drawing)?
            .label("train meta-loss")
            .legend(|(x, y)| Circle::new((x + 10, y), 3, TRAIN_AVG.filled()));
        labelled = true;
    } else if tr.len() > 1 {
        let raw_label = if tr.len() >= MIN_POINTS_FOR_AVERAGE {
            "train meta-loss (per logged step)"
        } else {
            "train meta-loss"
        };
        let raw_color =
            if tr.len() >= MIN_POINTS_FOR_AVERAGE { TRAIN_RAW.mix(0.45) } else { TRAIN_AVG.mix(1.0) };
        let drawn = minmax_downsample(tr, MAX_DRAWN_POINTS);
        chart
            .draw_series(LineSeries::new(drawn, raw_color.stroke_width(1)))
            .map_err(PlotError::drawing)?
            .label(raw_label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], raw_color.stroke_width(2)));
        labelled = true;

        if tr.len() >= MIN_POINTS_FOR_AVERAGE {
            let window = (tr.len() / 50).max(5) | 1;
            let avg = moving_geometric_mean(tr, window);
            let drawn = minmax_downsample(&avg, MAX_DRAWN_POINTS);
            chart
                .draw_series(LineSeries::new(drawn, TRAIN_AVG.stroke_width(2)))
                .map_err(PlotError::drawing)?
                .label(format!("moving average ({window} points)"))
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TRAIN_AVG.stroke_width(2)));
        }
    }

    if !ev.is_empty() {
        let bar_style = EVAL.stroke_width(2);
        chart
            .draw_series(ev.iter().filter(|p| p.has_bar).map(|p| {
                ErrorBar::new_vertical(
                    p.step,
                    p.lower.map_or(y_lo, |l| l.max(y_lo)),
                    p.mean,
                    p.upper.unwrap_or(p.mean).min(y_hi),
                    bar_style,
                    8,
                )
            }))
            .map_err(PlotError::drawing)?;
        chart
            .draw_series(ev.iter().map(|p| Circle::new((p.step, p.mean), 4, EVAL.filled())))
            .map_err(PlotError::drawing)?
            .label("evaluation mean ± 95% CI")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, EVAL.filled()));
        labelled = true;
    }

    if labelled {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, LEGEND_SIZE))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(150, 150, 150))
            .margin(10)
            .draw()
            .map_err(PlotError::drawing)?;
    }
    Ok(())
}

/// Centred moving average of `ln(y)` over `window` points (shrinking at the ends), mapped
/// back with `exp`: a geometric mean, which is what a smooth curve on a log axis should show.
fn moving_geometric_mean(pts: &[(i64, f64)], window: usize) -> Vec<(i64, f64)> {
    let n = pts.len();
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0.0f64);
    for p in pts {
        let last = prefix.last().copied().unwrap_or(0.0);
        prefix.push(last + p.1.ln());
    }
    let half = window / 2;
    (0..n)
        .map(|i| {
            let a = i.saturating_sub(half);
            let b = (i + half + 1).min(n);
            (pts[i].0, ((prefix[b] - prefix[a]) / (b - a) as f64).exp())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_mean_of_constant_is_constant() {
        let pts: Vec<(i64, f64)> = (0..100).map(|i| (i, 3.0)).collect();
        let avg = moving_geometric_mean(&pts, 11);
        assert_eq!(avg.len(), 100);
        assert!(avg.iter().all(|p| (p.1 - 3.0).abs() < 1e-12));
        let two = [(0, 1.0), (1, 100.0)];
        let avg = moving_geometric_mean(&two, 3);
        assert!((avg[0].1 - 10.0).abs() < 1e-9);
    }
}
