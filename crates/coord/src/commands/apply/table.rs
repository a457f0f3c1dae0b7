//! The comparison table of `apply`: per method the final training loss, validation loss and
//! accuracy (mean ± 95% CI over the test runs), the steps it takes to reach the best
//! baseline's final validation loss, and whether the learned schedule wins.

use serde::Serialize;

use super::runner::RunResult;
use crate::stats::mean_ci95;

/// One seed's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SeedFinal {
    /// Test run index.
    pub run: u64,
    /// Final loss on the whole training split.
    pub train_loss: f32,
    /// Final validation loss.
    pub val_loss: f32,
    /// Final validation accuracy (classification).
    pub accuracy: Option<f32>,
    /// First measured step whose validation loss is at or below the best baseline's mean
    /// final validation loss (`None`: never).
    pub steps_to_best: Option<usize>,
}

/// One method's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Method name.
    pub method: String,
    /// Its tuned hyper-parameters, as text.
    pub tuned: String,
    /// Final training loss: mean and 95% half-width.
    pub train_loss: (f64, f64),
    /// Final validation loss: mean and 95% half-width.
    pub val_loss: (f64, f64),
    /// Final validation accuracy: mean and 95% half-width (classification).
    pub accuracy: Option<(f64, f64)>,
    /// Median over seeds (the lower median for an even count, a never counting as
    /// infinitely late) of [`SeedFinal::steps_to_best`]; `None` when that median is never.
    pub steps_to_best: Option<usize>,
    /// Learned row only: `yes` (lower mean, 95% CIs disjoint from the best baseline's),
    /// `tie` (CIs overlap) or `no` (higher, disjoint).
    pub wins: Option<String>,
    /// Every seed's figures.
    pub per_seed: Vec<SeedFinal>,
}

/// The table and what it was measured against.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// Rows: the learned scheduler first, then the baselines.
    pub rows: Vec<Row>,
    /// The baseline of lowest mean final validation loss.
    pub best_baseline: String,
    /// Its mean final validation loss: the target of `steps_to_best`.
    pub target_val_loss: f64,
}

fn finite_or_inf(x: f64) -> f64 {
    if x.is_finite() { x } else { f64::INFINITY }
}

/// `yes`, `tie` or `no` for a mean and half-width against the best baseline's.
/// A diverged (non-finite) learned mean is `no` against a finite best baseline.
pub fn verdict(learned: (f64, f64), best: (f64, f64)) -> &'static str {
    match (learned.0.is_finite(), best.0.is_finite()) {
        (false, true) => return "no",
        (true, false) => return "yes",
        (false, false) => return "tie",
        (true, true) => {}
    }
    let ci = |c: f64| if c.is_finite() { c } else { f64::INFINITY };
    let (lm, bm) = (finite_or_inf(learned.0), finite_or_inf(best.0));
    let overlap = !(lm + ci(learned.1) < bm - ci(best.1) || bm + ci(best.1) < lm - ci(learned.1));
    if overlap || lm == bm {
        "tie"
    } else if lm < bm {
        "yes"
    } else {
        "no"
    }
}

/// Builds the table from `methods` (name, tuned hyper-parameters; the learned scheduler
/// first) and their results on the same test runs `0..n` (`results[m][run]`).
pub fn build(methods: &[(String, String)], results: &[Vec<RunResult>]) -> Table {
    let summary = |f: &dyn Fn(&RunResult) -> f32, m: usize| -> (f64, f64) {
        let v: Vec<f32> = results[m].iter().map(f).collect();
        mean_ci95(&v)
    };
    let vals: Vec<(f64, f64)> = (0..methods.len()).map(|m| summary(&|r| r.final_val, m)).collect();
    let mut best = 1;
    for m in 1..methods.len() {
        if finite_or_inf(vals[m].0) < finite_or_inf(vals[best].0) {
            best = m;
        }
    }
    let target = vals[best].0;
    let rows = methods
        .iter()
        .enumerate()
        .map(|(m, (name, tuned))| {
            let per_seed: Vec<SeedFinal> = results[m]
                .iter()
                .enumerate()
                .map(|(run, r)| SeedFinal {
                    run: run as u64,
                    train_loss: r.final_train,
                    val_loss: r.final_val,
                    accuracy: r.accuracy,
                    steps_to_best: r.curve.iter().find(|&&(_, l)| f64::from(l) <= target).map(|&(t, _)| t),
                })
                .collect();
            let mut steps: Vec<usize> =
                per_seed.iter().map(|s| s.steps_to_best.unwrap_or(usize::MAX)).collect();
            steps.sort_unstable();
            let median = steps.get(steps.len().saturating_sub(1) / 2).copied().filter(|&s| s != usize::MAX);
            let acc: Vec<f32> = results[m].iter().filter_map(|r| r.accuracy).collect();
            Row {
                method: name.clone(),
                tuned: tuned.clone(),
                train_loss: summary(&|r| r.final_train, m),
                val_loss: vals[m],
                accuracy: (!acc.is_empty()).then(|| mean_ci95(&acc)),
                steps_to_best: median,
                wins: (m == 0).then(|| verdict(vals[0], vals[best]).to_string()),
                per_seed,
            }
        })
        .collect();
    Table { rows, best_baseline: methods[best].0.clone(), target_val_loss: target }
}

/// `mean ± ci` with four significant decimals.
fn pm((m, c): (f64, f64)) -> String {
    format!("{m:.4} ± {c:.4}")
}

/// The table as Markdown (what `apply` prints and RESULTS.md quotes).
pub fn render(table: &Table) -> String {
    let mut s = String::from(
        "| method | tuned | final train loss | final val loss | val accuracy | steps to best baseline | wins? |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for r in &table.rows {
        let acc =
            r.accuracy.map_or("—".to_string(), |(m, c)| format!("{:.2}% ± {:.2}%", 100.0 * m, 100.0 * c));
        let steps = r.steps_to_best.map_or("—".to_string(), |t| t.to_string());
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.method,
            r.tuned,
            pm(r.train_loss),
            pm(r.val_loss),
            acc,
            steps,
            r.wins.as_deref().unwrap_or("")
        ));
    }
    s.push_str(&format!(
        "\nbest baseline: {} (mean final validation loss {:.4}); steps: median over seeds of the first \
         measured step at or below it\n",
        table.best_baseline, table.target_val_loss
    ));
    s
}
