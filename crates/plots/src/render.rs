//! Shared rendering machinery: the embedded font, atomic PNG output, downsampling, tick
//! formatting and colours.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{PlotError, Result};
use crate::{HEIGHT, WIDTH};

/// DejaVu Sans (Bitstream Vera licence, see `fonts/LICENSE-DejaVu.txt`).
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

/// The family name the embedded font is registered under. Plotters' own defaults (legend,
/// tick labels) also use `"sans-serif"`, so registering under that name covers them too.
pub(crate) const FONT: &str = "sans-serif";

/// Font sizes in pixels.
pub(crate) const TITLE_SIZE: u32 = 22;
pub(crate) const AXIS_DESC_SIZE: u32 = 16;
pub(crate) const TICK_SIZE: u32 = 13;
pub(crate) const LEGEND_SIZE: u32 = 14;

/// At most this many points are drawn per line; longer series are downsampled.
pub(crate) const MAX_DRAWN_POINTS: usize = 2000;

/// The area every plot draws on.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Registers the embedded font with plotters (once per process).
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// Renders a [`WIDTH`] × [`HEIGHT`] PNG with `draw` (on a white background) and writes it to
/// `path` atomically: encode to a hidden temporary `.png` in the same directory, fsync, rename.
/// The temporary file is removed on any error.
pub(crate) fn write_png_atomically(path: &Path, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
    ensure_font()?;
    let file_name = path
        .file_name()
        .ok_or_else(|| PlotError::InvalidInput(format!("{} does not name a file", path.display())))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(PlotError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "output directory does not exist"),
        ));
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // The `.png` extension matters: plotters picks the encoder from it.
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}-{}.tmp.png",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = render_and_rename(&tmp, path, draw);
    if result.is_err() {
        // The backend may have flushed a partial image when it was dropped.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn render_and_rename(tmp: &Path, path: &Path, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
    {
        let root = BitMapBackend::new(tmp, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(PlotError::drawing)?;
        draw(&root)?;
        // Encodes the in-memory bitmap as PNG into `tmp`.
        root.present().map_err(PlotError::drawing)?;
    }
    fs::File::open(tmp).and_then(|f| f.sync_all()).map_err(|e| PlotError::io(tmp, e))?;
    fs::rename(tmp, path).map_err(|e| PlotError::io(path, e))
}

/// Draws `msg` centred in `area` (used for "no data" notes).
pub(crate) fn draw_note(area: &Area<'_>, msg: &str) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from((FONT, 18).into_font())
        .color(&RGBColor(120, 120, 120))
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(msg.to_string(), (w as i32 / 2, h as i32 / 2), style)).map_err(PlotError::drawing)
}

/// Splits `0..n` into maximal runs of indices where `f` returns `Some`.
pub(crate) fn runs<T>(n: usize, mut f: impl FnMut(usize) -> Option<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for i in 0..n {
        match f(i) {
            Some(v) => cur.push(v),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Reduces `pts` (ordered by x) to at most about `max_points` points by keeping, for each of
/// `max_points / 2` consecutive buckets, its minimum and maximum in x order (plus the first
/// and last points), so spikes stay visible.
pub(crate) fn minmax_downsample<X: Copy>(pts: &[(X, f64)], max_points: usize) -> Vec<(X, f64)> {
    let n = pts.len();
    if n <= max_points.max(4) {
        return pts.to_vec();
    }
    let buckets = (max_points / 2).max(2);
    let mut out = Vec::with_capacity(2 * buckets + 2);
    out.push(pts[0]);
    for b in 0..buckets {
        let lo = 1 + b * (n - 2) / buckets;
        let hi = 1 + (b + 1) * (n - 2) / buckets;
        if lo >= hi {
            continue;
        }
        let (mut imin, mut imax) = (lo, lo);
        for i in lo..hi {
            if pts[i].1 < pts[imin].1 {
                imin = i;
            }
            if pts[i].1 > pts[imax].1 {
                imax = i;
            }
        }
        out.push(pts[imin.min(imax)]);
        if imin != imax {
            out.push(pts[imin.max(imax)]);
        }
    }
    out.push(pts[n - 1]);
    out
}

/// Like [`minmax_downsample`] for bands `(x, low, high)`: each bucket keeps the lowest low and
/// the highest high, at the bucket's first x.
pub(crate) fn envelope_downsample(pts: &[(f64, f64, f64)], max_points: usize) -> Vec<(f64, f64, f64)> {
    let n = pts.len();
    if n <= max_points.max(4) {
        return pts.to_vec();
    }
    let buckets = max_points.max(2);
    let mut out = Vec::with_capacity(buckets + 1);
    for b in 0..buckets {
        let lo = b * n / buckets;
        let hi = (b + 1) * n / buckets;
        if lo >= hi {
            continue;
        }
        let low = pts[lo..hi].iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let high = pts[lo..hi].iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
        out.push((pts[lo].0, low, high));
    }
    if let (Some(last), Some(kept)) = (pts.last(), out.last())
        && kept.0 != last.0
    {
        out.push(*last);
    }
    out
}

/// `(lo, hi)` padded by `frac` of the span on each side; a zero span is widened around the
/// value so the axis is never degenerate.
pub(crate) fn padded_linear(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 0.0 && span.is_finite() {
        (lo - frac * span, hi + frac * span)
    } else {
        let pad = if lo != 0.0 { 0.1 * lo.abs() } else { 1e-3 };
        (lo - pad, hi + pad)
    }
}

/// Formats a linear-axis tick; `step` is roughly the distance between ticks.
pub(crate) fn fmt_linear(v: f64, step: f64, max_abs: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if (1e-3..1e5).contains(&max_abs) || max_abs == 0.0 {
        let decimals =
            if step > 0.0 && step.is_finite() { (-step.log10().floor()).clamp(0.0, 8.0) as usize } else { 3 };
        trim_zeros(format!("{v:.decimals$}"))
    } else {
        let sig = if step > 0.0 && step.is_finite() && max_abs > 0.0 {
            (max_abs.log10().floor() - step.log10().floor()).clamp(0.0, 4.0) as usize
        } else {
            2
        };
        format!("{v:.sig$e}")
    }
}

/// Drops trailing zeros after a decimal point ("0.0140" -> "0.014", "2.0" -> "2").
fn trim_zeros(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Formats a log-axis tick with the fewest significant digits (up to 6) that represent it,
/// in scientific notation outside [0.001, 100000): "0.5", "2", "0.513", "1e-5", "2.5e7".
pub(crate) fn fmt_log(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return String::new();
    }
    let sci = !(1e-3..1e5).contains(&v);
    let mut s = String::new();
    for sig in 1..=6usize {
        s = if sci {
            format!("{v:.prec$e}", prec = sig - 1)
        } else {
            let decimals = (sig as i32 - 1 - v.log10().floor() as i32).max(0) as usize;
            format!("{v:.decimals$}")
        };
        if s.parse::<f64>().is_ok_and(|p| (p - v).abs() <= 1e-9 * v) {
            break;
        }
    }
    s
}

/// Tick values for a log axis over `[lo, hi]` (`0 < lo < hi`): (labelled, grid-only).
///
/// Plotters' own log ticks start at the first power of ten inside the range, so a range within
/// one decade (e.g. 0.28..0.65, typical late in training) would get no label at all; this
/// picks 1/2/5 or 1..9 mantissas, every k-th decade for wide ranges, or evenly spaced "nice"
/// values for very narrow ranges.
pub(crate) fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return (Vec::new(), Vec::new());
    }
    let (a, b) = (lo.log10(), hi.log10());
    let span = b - a;
    let (d0, d1) = (a.floor() as i32, b.ceil() as i32);
    let in_range = |v: f64| v >= lo * (1.0 - 1e-12) && v <= hi * (1.0 + 1e-12);
    let decade_values = |stride: i32, mantissas: &[f64]| -> Vec<f64> {
        (d0..=d1)
            .filter(|d| d.rem_euclid(stride) == 0)
            .flat_map(|d| mantissas.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|v| in_range(*v))
            .collect()
    };
    const ALL: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let (bold, light) = if span > 10.0 {
        let stride = (span / 8.0).ceil() as i32;
        (decade_values(stride, &[1.0]), decade_values(1, &[1.0]))
    } else if span > 3.5 {
        (decade_values(1, &[1.0]), decade_values(1, &ALL))
    } else if span > 1.0 {
        (decade_values(1, &[1.0, 2.0, 5.0]), decade_values(1, &ALL))
    } else {
        (decade_values(1, &ALL), Vec::new())
    };
    if bold.len() >= 3 {
        return (bold, light);
    }
    // Very narrow range: evenly spaced nice values.
    let step = nice_step((hi - lo) / 6.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    let linear = (first..=last).take(50).map(|k| k as f64 * step).filter(|v| *v > 0.0).collect();
    (linear, Vec::new())
}

/// The smallest 1, 2 or 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-12))
        .unwrap_or(10.0 * mag)
}

/// Colour of series `i` out of `n`: the tab10 palette for up to 10 series, evenly spaced
/// hues (alternating lightness) beyond that.
pub(crate) fn series_color(i: usize, n: usize) -> RGBColor {
    const TAB10: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    if n <= TAB10.len() {
        return TAB10[i % TAB10.len()];
    }
    let h = i as f64 / n as f64;
    let l = if i.is_multiple_of(2) { 0.40 } else { 0.55 };
    hsl_to_rgb(h, 0.75, l)
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> RGBColor {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = (h.fract() * 6.0).max(0.0);
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    let to8 = |v: f64| ((v + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    RGBColor(to8(r), to8(g), to8(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_keeps_extremes_and_ends() {
        let pts: Vec<(u64, f64)> = (0..100_000u64).map(|i| (i, (i % 97) as f64)).collect();
        let mut spiky = pts.clone();
        spiky[54_321].1 = 1e6;
        let d = minmax_downsample(&spiky, 500);
        assert!(d.len() <= 503);
        assert_eq!(d[0], spiky[0]);
        assert_eq!(*d.last().expect("non-empty"), spiky[99_999]);
        assert!(d.iter().any(|p| p.1 == 1e6));
        assert!(d.windows(2).all(|w| w[0].0 < w[1].0));
        let small = minmax_downsample(&pts[..10], 500);
        assert_eq!(small.len(), 10);
    }

    #[test]
    fn envelope_keeps_extremes() {
        let pts: Vec<(f64, f64, f64)> = (0..10_000).map(|i| (i as f64, -1.0, 1.0)).collect();
        let mut p = pts.clone();
        p[777].1 = -50.0;
        p[4242].2 = 50.0;
        let d = envelope_downsample(&p, 100);
        assert!(d.len() <= 101);
        assert!(d.iter().any(|q| q.1 == -50.0));
        assert!(d.iter().any(|q| q.2 == 50.0));
        assert_eq!(d.last().map(|q| q.0), Some(9999.0));
    }

    #[test]
    fn runs_split_on_none() {
        let v = [1.0, f64::NAN, 2.0, 3.0, f64::NAN, f64::NAN, 4.0];
        let r = runs(v.len(), |i| v[i].is_finite().then_some(v[i]));
        assert_eq!(r, vec![vec![1.0], vec![2.0, 3.0], vec![4.0]]);
        assert!(runs(3, |_| None::<f64>).is_empty());
    }

    #[test]
    fn tick_formats() {
        assert_eq!(fmt_log(0.5), "0.5");
        assert_eq!(fmt_log(1.0), "1");
        assert_eq!(fmt_log(100.0), "100");
        assert_eq!(fmt_log(0.002), "0.002");
        assert_eq!(fmt_log(1e-5), "1e-5");
        assert_eq!(fmt_log(2.5e7), "2.5e7");
        assert_eq!(fmt_linear(0.0012, 0.0002, 0.002), "0.0012");
        assert_eq!(fmt_linear(0.0140, 0.0005, 0.015), "0.014");
        assert_eq!(fmt_linear(0.5, 0.1, 1.0), "0.5");
        assert_eq!(fmt_linear(2e-4, 1e-5, 3e-4), "2.0e-4");
        assert_eq!(fmt_log(0.513), "0.513");
        assert_eq!(fmt_log(0.30000000000000004), "0.3");
        assert_eq!(padded_linear(1.0, 1.0, 0.05), (0.9, 1.1));
    }

    #[test]
    fn log_ticks_cover_every_range() {
        let labels = |lo: f64, hi: f64| log_ticks(lo, hi).0.iter().map(|v| fmt_log(*v)).collect::<Vec<_>>();
        assert_eq!(labels(0.28, 0.65), ["0.3", "0.4", "0.5", "0.6"]);
        assert_eq!(labels(0.045, 3.1), ["0.05", "0.1", "0.2", "0.5", "1", "2"]);
        assert_eq!(labels(0.5, 0.6), ["0.5", "0.52", "0.54", "0.56", "0.58", "0.6"]);
        assert_eq!(labels(1e-6, 1e2), ["1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1", "1", "10", "100"]);
        let wide = log_ticks(1e-80, 1e20).0;
        assert!((3..=12).contains(&wide.len()), "{wide:?}");
        assert!(log_ticks(1.0, 1.0).0.is_empty());
        assert!(log_ticks(0.0, 1.0).0.is_empty());
        for (lo, hi) in [(0.9999, 1.0001), (1e-300, 1e-299), (7.0, 7.0000001), (1e300, 1.7e308)] {
            let (bold, _) = log_ticks(lo, hi);
            assert!(!bold.is_empty() && bold.len() <= 50, "{lo} {hi} {bold:?}");
            assert!(bold.iter().all(|v| *v >= lo * 0.999 && *v <= hi * 1.001));
        }
    }
}
