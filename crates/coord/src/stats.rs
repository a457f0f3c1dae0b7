//! Summary statistics of per-task values — means, 95% confidence intervals, rate summaries —
//! in one place, so `train`'s logs, its final report and `eval` compute each figure the same
//! way. A leaf module: plain numbers in, plain numbers out.

use serde::Serialize;

/// Mean in f64 of f32 values (NaN when empty), summed in order: the one definition every
/// reported mean uses.
pub fn mean(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

/// Mean and the half-width of its 95% normal confidence interval.
pub fn mean_ci95(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = mean(v);
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}

/// Per-group min/mean/max of rates `[n, T, G]`.
pub fn lr_stats(lr: &[f32], groups: &[String]) -> Vec<LrStats> {
    let g = groups.len();
    groups
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let vals = lr.iter().skip(k).step_by(g.max(1));
            let (mut min, mut max, mut sum, mut n) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64, 0usize);
            for &v in vals {
                min = min.min(v);
                max = max.max(v);
                sum += v as f64;
                n += 1;
            }
            LrStats { group: name.clone(), min, mean: (sum / n.max(1) as f64) as f32, max }
        })
        .collect()
}

/// Mean accuracy and its 95% half-width, when there is any.
pub fn accuracy_summary(acc: &[f32]) -> (Option<f64>, Option<f64>) {
    if acc.is_empty() {
        (None, None)
    } else {
        let (m, c) = mean_ci95(acc);
        (Some(m), Some(c))
    }
}

/// Mean, min and max over tasks of rates `[n, T, G]`, as `[T, G]` arrays.
pub fn rate_profile(lr: &[f32], steps: usize, groups: usize) -> (Vec<f32>, Vec<(f32, f32)>) {
    let per = steps * groups;
    let n = lr.len() / per.max(1);
    let mut mean = vec![0.0f64; per];
    let mut band = vec![(f32::INFINITY, f32::NEG_INFINITY); per];
    for task in lr.chunks(per) {
        for (i, &v) in task.iter().enumerate() {
            mean[i] += v as f64;
            band[i] = (band[i].0.min(v), band[i].1.max(v));
        }
    }
    (mean.iter().map(|&m| (m / n.max(1) as f64) as f32).collect(), band)
}

/// Rate statistics of one parameter group over the tasks and inner steps of a meta-step.
#[derive(Debug, Clone, Serialize)]
pub struct LrStats {
    /// Group (tensor) name.
    pub group: String,
    /// Smallest rate.
    pub min: f32,
    /// Mean rate.
    pub mean: f32,
    /// Largest rate.
    pub max: f32,
}
