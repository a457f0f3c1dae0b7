//! The two figures of `apply`: each method's rates over the run (mean over test runs; the
//! learned scheduler one curve per group) and each method's validation loss curve (mean and
//! min-max band over test runs). Both reuse the plots crate's per-series line chart.

use std::path::Path;

use anyhow::{Context, Result};

use super::runner::RunResult;

/// Mean over runs of rates `[H, G]`: `[H, G]`.
fn mean_rates(runs: &[RunResult], horizon: usize, groups: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; horizon * groups];
    for r in runs {
        for (a, &v) in m.iter_mut().zip(&r.lr) {
            *a += f64::from(v) / runs.len() as f64;
        }
    }
    m
}

/// Writes `apply_lr.png`: `names[m]` and `results[m]` per method, the learned scheduler
/// (index 0) drawn per group (`group_names`), every baseline as one curve (its rate is the
/// same for all groups).
pub fn plot_rates(
    path: &Path,
    names: &[String],
    results: &[Vec<RunResult>],
    horizon: usize,
    group_names: &[String],
) -> Result<()> {
    let g = group_names.len();
    let mut series: Vec<String> = group_names.iter().map(|n| format!("learned {n}")).collect();
    series.extend(names.iter().skip(1).cloned());
    let learned = mean_rates(&results[0], horizon, g);
    let base: Vec<Vec<f64>> = results.iter().skip(1).map(|r| mean_rates(r, horizon, g)).collect();
    let s = series.len();
    let mut rates = vec![0.0f32; horizon * s];
    for t in 0..horizon {
        for k in 0..g {
            rates[t * s + k] = learned[t * g + k] as f32;
        }
        for (b, m) in base.iter().enumerate() {
            rates[t * s + g + b] = m[t * g] as f32;
        }
    }
    let title = format!("apply: rates (mean over {} test runs)", results[0].len());
    metasched_plots::plot_lr_schedule(path, &title, &rates, horizon, &series, None)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `apply_loss.png`: each method's validation loss, held from one measurement to the
/// next over the steps, mean over test runs with the min-max band.
pub fn plot_losses(path: &Path, names: &[String], results: &[Vec<RunResult>], horizon: usize) -> Result<()> {
    let s = names.len();
    let mut mean = vec![0.0f32; horizon * s];
    let mut band = vec![(f32::INFINITY, f32::NEG_INFINITY); horizon * s];
    for (m, runs) in results.iter().enumerate() {
        for r in runs {
            let mut i = 0;
            for t in 0..horizon {
                while i + 1 < r.curve.len() && r.curve[i].0 < t + 1 {
                    i += 1;
                }
                let v = r.curve.get(i).map_or(f32::NAN, |&(_, l)| l);
                mean[t * s + m] += v / runs.len() as f32;
                let b = &mut band[t * s + m];
                *b = (b.0.min(v), b.1.max(v));
            }
        }
    }
    let title = format!("apply: validation loss (mean, min-max band over {} test runs)", results[0].len());
    metasched_plots::plot_step_series(path, &title, "validation loss", &mean, horizon, names, Some(&band))
        .with_context(|| format!("cannot write {}", path.display()))
}
