//! Tuning the baselines' hyper-parameters on `RunStream::Tune` runs only (disjoint from the
//! `Test` runs a comparison reports, spec §7.1), by mean final validation loss, on declared
//! grids: what a careful practitioner would do before comparing against a learned schedule.

use anyhow::Result;
use indicatif::ProgressBar;
use metasched_engine::InnerOptimizer;
use metasched_tasks::train_mlp::RunStream;
use rayon::prelude::*;
use serde::Serialize;

use super::baselines::Baseline;
use super::runner::{Method, run_one};
use super::setup::Setup;

/// Points of every rate grid.
pub const RATE_POINTS: usize = 12;

/// The declared grids of an inner optimiser.
#[derive(Debug, Clone, Serialize)]
pub struct Grids {
    /// Rates tried for the constant rate and the cosine and step-decay peaks (log-spaced).
    pub rates: Vec<f64>,
    /// Hypergradient rates `β` tried (with `α_0` = the tuned constant).
    pub betas: Vec<f64>,
}

/// `n` log-spaced values from `lo` to `hi`, both included.
pub fn log_grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let (a, b) = (lo.ln(), hi.ln());
    (0..n).map(|i| (a + (b - a) * i as f64 / (n - 1).max(1) as f64).exp()).collect()
}

/// The grids of `optimizer`: rates 1e-4..3 for sgd and momentum, 1e-5..1e-1 for adam (12
/// log-spaced points); `β` 1e-5..1e-1 for SGD-HD, 1e-7..1e-3 for Adam-HD (5 decades).
pub fn grids(optimizer: &InnerOptimizer) -> Grids {
    match optimizer {
        InnerOptimizer::Adam { .. } => {
            Grids { rates: log_grid(1e-5, 1e-1, RATE_POINTS), betas: log_grid(1e-7, 1e-3, 5) }
        }
        _ => Grids { rates: log_grid(1e-4, 3.0, RATE_POINTS), betas: log_grid(1e-5, 1e-1, 5) },
    }
}

/// One candidate's score.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// The candidate.
    pub baseline: Baseline,
    /// Mean final validation loss over the tuning runs (non-finite: diverged).
    pub mean_val: f64,
}

/// The tuned baselines and every score behind them.
#[derive(Debug, Clone, Serialize)]
pub struct Tuned {
    /// The grids.
    pub grids: Grids,
    /// The chosen constant, cosine, step-decay and hypergradient baselines, in that order.
    pub chosen: Vec<Baseline>,
    /// Every candidate's score.
    pub scores: Vec<Score>,
}

/// Mean final validation loss of each candidate over tune runs `0..tune_seeds`, in parallel.
fn score(setup: &Setup, candidates: &[Baseline], tune_seeds: u64, bar: &ProgressBar) -> Result<Vec<Score>> {
    let jobs: Vec<(usize, u64)> =
        (0..candidates.len()).flat_map(|c| (0..tune_seeds).map(move |r| (c, r))).collect();
    let vals: Vec<f32> = jobs
        .par_iter()
        .map(|&(c, r)| {
            let res = run_one(setup, &Method::Baseline(candidates[c]), RunStream::Tune, r, None, false);
            bar.inc(1);
            res.map(|r| r.final_val)
        })
        .collect::<Result<_>>()?;
    Ok(candidates
        .iter()
        .enumerate()
        .map(|(c, &baseline)| {
            let v = &vals[c * tune_seeds as usize..(c + 1) * tune_seeds as usize];
            Score { baseline, mean_val: v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64 }
        })
        .collect())
}

/// The candidate of lowest mean (a non-finite mean ranks last; ties: the first).
fn best(scores: &[Score]) -> Baseline {
    let key = |s: &Score| if s.mean_val.is_finite() { s.mean_val } else { f64::INFINITY };
    let mut b = &scores[0];
    for s in scores {
        if key(s) < key(b) {
            b = s;
        }
    }
    b.baseline
}

/// Number of tuning runs [`tune`] does: for the progress bar.
pub fn tune_jobs(grids: &Grids, tune_seeds: u64) -> u64 {
    (3 * grids.rates.len() + grids.betas.len()) as u64 * tune_seeds
}

/// Tunes the constant rate, the cosine peak and the step-decay peak, each separately on the
/// rate grid, then hypergradient descent's `β` with `α_0` = the tuned constant.
pub fn tune(setup: &Setup, tune_seeds: u64, bar: &ProgressBar) -> Result<Tuned> {
    let grids = grids(&setup.config.inner.optimizer);
    let mut scores = Vec::new();
    let mut chosen = Vec::new();
    let families: [fn(f64) -> Baseline; 3] = [
        |rate| Baseline::Constant { rate },
        |peak| Baseline::Cosine { peak },
        |peak| Baseline::StepDecay { peak },
    ];
    for make in families {
        let candidates: Vec<Baseline> = grids.rates.iter().map(|&r| make(r)).collect();
        let s = score(setup, &candidates, tune_seeds, bar)?;
        chosen.push(best(&s));
        scores.extend(s);
    }
    let alpha0 = match chosen[0] {
        Baseline::Constant { rate } => rate,
        _ => grids.rates[0],
    };
    let candidates: Vec<Baseline> =
        grids.betas.iter().map(|&beta| Baseline::Hypergradient { alpha0, beta }).collect();
    let s = score(setup, &candidates, tune_seeds, bar)?;
    chosen.push(best(&s));
    scores.extend(s);
    Ok(Tuned { grids, chosen, scores })
}
