//! Learned learning rate per parameter group over the inner steps.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{PlotError, Result};
use crate::render::{
    AXIS_DESC_SIZE, Area, FONT, LEGEND_SIZE, MAX_DRAWN_POINTS, TICK_SIZE, TITLE_SIZE, draw_note,
    envelope_downsample, fmt_linear, minmax_downsample, padded_linear, runs, series_color,
    write_png_atomically,
};
use crate::{HEIGHT, WIDTH};

/// Legend layout (pixels).
const LEGEND_TOP: i32 = 58;
const LEGEND_BOTTOM_MARGIN: i32 = 60;
const LEGEND_ROW: i32 = 19;
const LEGEND_SWATCH: i32 = 22;
const LEGEND_GAP: i32 = 6;
const LEGEND_COL_PAD: i32 = 14;
const LEGEND_MAX_COLS: usize = 3;
/// The legend panel takes at most this fraction of the image width.
const LEGEND_MAX_FRACTION: f64 = 0.42;
/// Widest group name shown (pixels); longer ones are shortened.
const LEGEND_MAX_NAME: i32 = 220;

/// The learned learning rate per parameter group (layer tensor) over the inner steps:
/// one line per group, x = inner step t (0..T-1), y = rate. `rates` is row-major [T, G]
/// (typically the mean over evaluation tasks); `band` optionally gives per-(t,g) (min, max)
/// drawn as a light band or error bars. Title e.g. "learned learning rates (mean over 600 tasks)".
///
/// Writes a [`WIDTH`] × [`HEIGHT`] PNG to `path` atomically, with a legend of the group names
/// in a panel right of the chart: up to three columns for many groups; if some name is too
/// long, the prefix shared by all names (cut at a `.`, `/`, `:` or `_`) is shown once as a
/// header and dropped from the entries, and names still too long lose their middle to "…";
/// if even three columns cannot hold every group, the last row says how many were left out.
///
/// * `steps` is T and `group_names.len()` is G. The band is drawn as a translucent area in the
///   group's colour, or as an error bar where it covers a single step (T = 1, or isolated
///   finite values); `(min, max)` given in the wrong order are swapped.
/// * Non-finite rates or band bounds are skipped (lines are broken there; an isolated finite
///   point is drawn as a marker). With T = 1 every group is a marker (plus error bar), spread
///   sideways around t = 0 so that equal rates do not hide each other.
/// * Series longer than about 2000 steps are downsampled for drawing, keeping the minimum and
///   maximum of each bucket.
/// * T = 0 or G = 0 (or no finite rate at all) still writes a labelled chart with a "no data"
///   note.
///
/// # Errors
/// [`PlotError::InvalidInput`] when `rates.len() != steps * group_names.len()`, when `band`
/// has a different length than `rates`, or when `path` names no file; [`PlotError::Io`] when
/// the destination directory does not exist or the file cannot be written;
/// [`PlotError::Drawing`] or [`PlotError::Font`] when rendering fails.
pub fn plot_lr_schedule(
    path: &Path,
    title: &str,
    rates: &[f32],
    steps: usize,
    group_names: &[String],
    band: Option<&[(f32, f32)]>,
) -> Result<()> {
    let groups = group_names.len();
    if steps.checked_mul(groups) != Some(rates.len()) {
        return Err(PlotError::InvalidInput(format!(
            "rates has {} values, expected steps * groups = {steps} * {groups}",
            rates.len()
        )));
    }
    if let Some(b) = band
        && b.len() != rates.len()
    {
        return Err(PlotError::InvalidInput(format!(
            "band has {} (min, max) pairs, expected one per rate ({})",
            b.len(),
            rates.len()
        )));
    }
    write_png_atomically(path, |root| {
        draw_plot(root, title, "learning rate", rates, steps, group_names, band)
    })
}

/// [`plot_lr_schedule`]'s chart for any per-step series (e.g. `apply`'s validation-loss
/// curves of several methods), with `y_desc` as the y-axis label instead of "learning rate":
/// one chart style for every per-step figure. Same input rules and errors.
pub fn plot_step_series(
    path: &Path,
    title: &str,
    y_desc: &str,
    values: &[f32],
    steps: usize,
    names: &[String],
    band: Option<&[(f32, f32)]>,
) -> Result<()> {
    if steps.checked_mul(names.len()) != Some(values.len()) {
        return Err(PlotError::InvalidInput(format!(
            "values has {} entries, expected steps * series = {steps} * {}",
            values.len(),
            names.len()
        )));
    }
    if let Some(b) = band
        && b.len() != values.len()
    {
        return Err(PlotError::InvalidInput(format!(
            "band has {} (min, max) pairs, expected one per value ({})",
            b.len(),
            values.len()
        )));
    }
    write_png_atomically(path, |root| draw_plot(root, title, y_desc, values, steps, names, band))
}

fn draw_plot(
    root: &Area<'_>,
    title: &str,
    y_desc: &str,
    rates: &[f32],
    steps: usize,
    names: &[String],
    band: Option<&[(f32, f32)]>,
) -> Result<()> {
    let groups = names.len();
    let legend = if groups > 0 { Some(layout_legend(root, names, band.is_some())?) } else { None };
    let legend_width = legend.as_ref().map_or(0, |l| l.width);
    let (chart_area, legend_area) = root.split_horizontally(WIDTH as i32 - legend_width);

    let rate = |t: usize, g: usize| -> Option<f64> {
        let v = f64::from(rates[t * groups + g]);
        v.is_finite().then_some(v)
    };
    let bounds = |t: usize, g: usize| -> Option<(f64, f64)> {
        let (a, b) = band?[t * groups + g];
        let (a, b) = (f64::from(a), f64::from(b));
        (a.is_finite() && b.is_finite()).then(|| (a.min(b), a.max(b)))
    };

    // y range over every finite rate and band bound.
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for t in 0..steps {
        for g in 0..groups {
            for v in rate(t, g).into_iter().chain(bounds(t, g).into_iter().flat_map(|(a, b)| [a, b])) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    let has_data = lo.is_finite();
    let (y_lo, y_hi) = if has_data { padded_linear(lo, hi, 0.05) } else { (0.0, 1.0) };
    let (x_lo, x_hi) = match steps {
        0 => (0.0, 1.0),
        1 => (-0.5, 0.5),
        t => (0.0, (t - 1) as f64),
    };
    let last_step = steps.saturating_sub(1) as f64;
    // With a single step every group sits at t = 0: spread them sideways so none hides another.
    let x_of = |t: usize, g: usize| -> f64 {
        if steps == 1 && groups > 1 { -0.35 + 0.7 * g as f64 / (groups - 1) as f64 } else { t as f64 }
    };
    let y_step = (y_hi - y_lo) / 10.0;
    let y_abs = y_lo.abs().max(y_hi.abs());

    let mut chart = ChartBuilder::on(&chart_area)
        .caption(title, (FONT, TITLE_SIZE))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(PlotError::drawing)?;
    chart
        .configure_mesh()
        .x_desc("inner step t")
        .y_desc(y_desc)
        .label_style((FONT, TICK_SIZE))
        .axis_desc_style((FONT, AXIS_DESC_SIZE))
        .x_labels(steps.clamp(2, 10))
        .y_labels(10)
        .x_label_formatter(&|v: &f64| {
            let r = v.round();
            if (v - r).abs() < 1e-6 && r >= 0.0 && r <= last_step.max(0.0) {
                format!("{r:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v: &f64| fmt_linear(*v, y_step, y_abs))
        .max_light_lines(4)
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(PlotError::drawing)?;

    if !has_data {
        let msg = if rates.is_empty() { "no data" } else { "no data: no finite learning rate" };
        draw_note(&chart.plotting_area().strip_coord_spec(), msg)?;
    } else {
        // Bands first so the lines stay on top.
        for g in 0..groups {
            let color = series_color(g, groups);
            for run in runs(steps, |t| bounds(t, g).map(|(a, b)| (t, a, b))) {
                if run.len() == 1 {
                    let (t, a, b) = run[0];
                    let mid = rate(t, g).unwrap_or(0.5 * (a + b)).clamp(a, b);
                    chart
                        .draw_series(std::iter::once(ErrorBar::new_vertical(
                            x_of(t, g),
                            a,
                            mid,
                            b,
                            color.mix(0.6).stroke_width(2),
                            10,
                        )))
                        .map_err(PlotError::drawing)?;
                } else {
                    let run: Vec<(f64, f64, f64)> = run.iter().map(|&(t, a, b)| (t as f64, a, b)).collect();
                    let run = envelope_downsample(&run, MAX_DRAWN_POINTS);
                    let outline: Vec<(f64, f64)> =
                        run.iter().map(|p| (p.0, p.2)).chain(run.iter().rev().map(|p| (p.0, p.1))).collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(outline, color.mix(0.15).filled())))
                        .map_err(PlotError::drawing)?;
                }
            }
        }
        for g in 0..groups {
            let color = series_color(g, groups);
            for run in runs(steps, |t| rate(t, g).map(|v| (x_of(t, g), v))) {
                if run.len() == 1 {
                    chart
                        .draw_series(std::iter::once(Circle::new(run[0], 4, color.filled())))
                        .map_err(PlotError::drawing)?;
                } else {
                    let drawn = minmax_downsample(&run, MAX_DRAWN_POINTS);
                    chart
                        .draw_series(LineSeries::new(drawn, color.stroke_width(2)))
                        .map_err(PlotError::drawing)?;
                }
            }
        }
    }

    if let Some(legend) = legend {
        draw_legend(&legend_area, &legend, groups)?;
    }
    Ok(())
}

/// What the legend panel shows and how it is laid out.
struct Legend {
    /// Panel width in pixels.
    width: i32,
    /// Rows per column.
    rows: usize,
    /// Column width in pixels.
    col_width: i32,
    /// Shown entries: (group index or None for the band note / overflow line, text).
    entries: Vec<(Option<usize>, String, EntryKind)>,
}

#[derive(Clone, Copy, PartialEq)]
enum EntryKind {
    /// The prefix shared by all group names (stripped from the entries).
    Header,
    /// A group: colour swatch and (shortened) name.
    Group,
    /// The band explanation.
    Band,
    /// "+N more" when not every group fits.
    More,
}

fn legend_style() -> TextStyle<'static> {
    TextStyle::from((FONT, LEGEND_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

fn text_width(area: &Area<'_>, text: &str) -> Result<i32> {
    let (w, _) = area.estimate_text_size(text, &legend_style()).map_err(PlotError::drawing)?;
    Ok(i32::try_from(w).unwrap_or(i32::MAX))
}

/// Shortens `name` to at most `max_w` pixels by replacing its middle with "…", keeping about
/// a third of the kept characters from the start and two thirds from the end (parameter names
/// differ mostly in their layer index and their `.weight` / `.bias` suffix).
fn fit(area: &Area<'_>, name: &str, max_w: i32) -> Result<String> {
    if text_width(area, name)? <= max_w {
        return Ok(name.to_string());
    }
    let chars: Vec<char> = name.chars().collect();
    for keep in (1..chars.len()).rev() {
        let tail = (2 * keep).div_ceil(3);
        let head = keep - tail;
        let candidate: String =
            chars[..head].iter().chain(std::iter::once(&'…')).chain(&chars[chars.len() - tail..]).collect();
        if text_width(area, &candidate)? <= max_w {
            return Ok(candidate);
        }
    }
    Ok("…".to_string())
}

fn layout_legend(area: &Area<'_>, names: &[String], band: bool) -> Result<Legend> {
    let rows =
        usize::try_from((HEIGHT as i32 - LEGEND_TOP - LEGEND_BOTTOM_MARGIN) / LEGEND_ROW).unwrap_or(1).max(1);
    let max_panel = (f64::from(WIDTH) * LEGEND_MAX_FRACTION) as i32;
    let chrome = LEGEND_SWATCH + LEGEND_GAP + LEGEND_COL_PAD;
    let max_name_for = |cols: usize| (max_panel / cols as i32 - chrome).clamp(20, LEGEND_MAX_NAME);

    // If some name is too long, drop the prefix shared by all names (shown once as a header).
    let mut cols = (names.len() + usize::from(band)).div_ceil(rows).clamp(1, LEGEND_MAX_COLS);
    let mut prefix = String::new();
    let mut too_long = false;
    for name in names {
        too_long |= text_width(area, name)? > max_name_for(cols);
    }
    if too_long {
        prefix = common_prefix(names);
    }
    let header = usize::from(!prefix.is_empty());
    let wanted = header + names.len() + usize::from(band);
    cols = wanted.div_ceil(rows).clamp(1, LEGEND_MAX_COLS);
    let max_name = max_name_for(cols);

    let capacity = rows * cols;
    let mut entries = Vec::with_capacity(capacity);
    if header == 1 {
        let text = fit(area, &format!("{prefix}*"), max_name + LEGEND_SWATCH + LEGEND_GAP)?;
        entries.push((None, text, EntryKind::Header));
    }
    let reserved = header + usize::from(band) + usize::from(wanted > capacity);
    let shown = names.len().min(capacity.saturating_sub(reserved));
    for (g, name) in names.iter().enumerate().take(shown) {
        let short = name.strip_prefix(prefix.as_str()).unwrap_or(name);
        entries.push((Some(g), fit(area, short, max_name)?, EntryKind::Group));
    }
    if shown < names.len() {
        entries.push((None, format!("+{} more", names.len() - shown), EntryKind::More));
    }
    if band {
        entries.push((None, fit(area, "shaded: (min, max)", max_name)?, EntryKind::Band));
    }
    let mut col_width = 0;
    for (_, text, kind) in &entries {
        let w = text_width(area, text)?;
        let swatch = matches!(kind, EntryKind::Group | EntryKind::Band);
        col_width = col_width.max(if swatch { w + chrome } else { w + LEGEND_COL_PAD });
    }
    let used_cols = entries.len().div_ceil(rows).max(1);
    Ok(Legend { width: col_width * used_cols as i32 + 10, rows, col_width, entries })
}

/// The longest prefix shared by all `names` (at least two) that ends with a separator
/// (`.`, `/`, `:` or `_`) and leaves every name non-empty; empty if there is none.
fn common_prefix(names: &[String]) -> String {
    let Some((first, rest)) = names.split_first() else { return String::new() };
    if rest.is_empty() {
        return String::new();
    }
    // Byte length of the shared prefix; always a char boundary of `first` (it ends where the
    // names differ, or at the end of a name that is a prefix of `first`).
    let mut end = first.len();
    for name in rest {
        let diff = first.char_indices().zip(name.chars()).find(|((_, a), b)| a != b);
        end = end.min(diff.map_or(first.len().min(name.len()), |((i, _), _)| i));
    }
    let shared = &first[..end];
    match shared.rfind(['.', '/', ':', '_']) {
        Some(i) if names.iter().all(|n| n.len() > i + 1) => shared[..=i].to_string(),
        _ => String::new(),
    }
}

fn draw_legend(area: &Area<'_>, legend: &Legend, groups: usize) -> Result<()> {
    let style = legend_style();
    for (i, (group, text, kind)) in legend.entries.iter().enumerate() {
        let col = (i / legend.rows) as i32;
        let row = (i % legend.rows) as i32;
        let x = col * legend.col_width;
        let y = LEGEND_TOP + row * LEGEND_ROW + LEGEND_ROW / 2;
        let text_x = match kind {
            EntryKind::Group => {
                let color = series_color(group.unwrap_or(0), groups);
                area.draw(&PathElement::new(vec![(x, y), (x + LEGEND_SWATCH, y)], color.stroke_width(3)))
                    .map_err(PlotError::drawing)?;
                x + LEGEND_SWATCH + LEGEND_GAP
            }
            EntryKind::Band => {
                area.draw(&Rectangle::new(
                    [(x, y - 6), (x + LEGEND_SWATCH, y + 6)],
                    RGBColor(120, 120, 120).mix(0.25).filled(),
                ))
                .map_err(PlotError::drawing)?;
                x + LEGEND_SWATCH + LEGEND_GAP
            }
            EntryKind::More | EntryKind::Header => x,
        };
        let style = match kind {
            EntryKind::Header | EntryKind::More => style.color(&RGBColor(90, 90, 90)),
            EntryKind::Group | EntryKind::Band => style.clone(),
        };
        area.draw(&Text::new(text.clone(), (text_x, y), style)).map_err(PlotError::drawing)?;
    }
    Ok(())
}
