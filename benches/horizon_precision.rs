//! f32 against f64 for each long-run estimator (spec §8): the same runs (same data, learner
//! init, scheduler phi and, for PES, the same noise draws) estimated once in float32 and once
//! in float64, `||g32 − g64|| / ||g64||` on the phi gradient, set against the estimator's own
//! noise: the relative spread of its estimates over runs (and, for PES, noise draws),
//! `rms_r ||g_r − ḡ|| / rms_r ||g_r||`, in float64. An estimate is the sum over the run's windows
//! (`tbptt`, `pes`) or the exact gradient of the whole run (`full`), objective every `W` steps.
//!
//! `cargo bench --bench horizon_precision -- [--horizon 1000] [--windows 10,50,200]
//! [--runs 8] [--optimizers sgd,adam] [--sigma 0.01] [--hidden 32] [--batch 32] [--lr-init R]`
//! (`--lr-init`: the scheduler's initial rate instead of sgd 0.1 / adam 0.001, a stress test).

#[path = "horizon_common/mod.rs"]
mod common;

use common::{dataset, digits_config, dist, full, initial_params, norm, pes, run_data, spread, tbptt, timed};
use metasched::engine::{Config, Params, Real};
use metasched::tasks::OpenedDataset;

/// One estimate of run `r` in precision `T`.
#[allow(clippy::too_many_arguments)]
fn estimate<T: Real>(
    est: &str,
    config: &Config,
    params: &Params<f32>,
    data: &OpenedDataset,
    r: u64,
    batch: usize,
    w: usize,
    sigma: f64,
) -> (Vec<f64>, f64) {
    let params = params.cast::<T>();
    let run = run_data::<T>(data, config, r, batch);
    let theta = run.learner_init();
    timed(|| match est {
        "tbptt" => tbptt(config, &params, &run, theta, w),
        "full" => full(config, &params, &run, theta, w, false),
        "pes" => pes(config, &params, &run, theta, w, sigma, 1000 + r),
        other => panic!("unknown estimator {other}"),
    })
}

fn main() {
    let (mut horizon, mut windows, mut runs) = (1000usize, vec![10, 50, 200], 8u64);
    let (mut opts, mut sigma, mut hidden, mut batch) = ("sgd,adam".to_string(), 0.01f64, 32usize, 32usize);
    let mut lr_init: Option<f64> = None;
    for (k, v) in common::args() {
        match k.as_str() {
            "horizon" => horizon = v.parse().expect("--horizon"),
            "windows" => windows = common::list(&v),
            "runs" => runs = v.parse().expect("--runs"),
            "optimizers" => opts = v,
            "sigma" => sigma = v.parse().expect("--sigma"),
            "hidden" => hidden = v.parse().expect("--hidden"),
            "batch" => batch = v.parse().expect("--batch"),
            "lr-init" => lr_init = Some(v.parse().expect("--lr-init")),
            other => panic!("unknown option --{other}"),
        }
    }
    println!(
        "# horizon_precision: digits 64-{hidden}-10, b = {batch}, H = {horizon}, lstm scheduler, {runs} runs, pes sigma = {sigma}, lr_init = {}",
        lr_init.map_or("default (sgd 0.1 of max 1.0, adam 0.001 of max 0.01)".to_string(), |l| l.to_string())
    );
    println!(
        "{:>5} {:>6} {:>4} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "opt", "est", "W", "f32 err mean", "f32 err max", "noise (f64)", "err / noise", "s f32", "s f64"
    );
    for opt in opts.split(',') {
        let config = digits_config(hidden, horizon, opt, "lstm");
        let params = match lr_init {
            Some(lr) => common::initial_params_at(&config, lr),
            None => initial_params(&config, opt),
        };
        let data = dataset(&config);
        for &w in &windows {
            for est in ["tbptt", "full", "pes"] {
                let (mut errs, mut g64s, mut t32, mut t64) = (Vec::new(), Vec::new(), 0.0, 0.0);
                for r in 0..runs {
                    let (g32, s32) = estimate::<f32>(est, &config, &params, &data, r, batch, w, sigma);
                    let (g64, s64) = estimate::<f64>(est, &config, &params, &data, r, batch, w, sigma);
                    errs.push(dist(&g32, &g64) / norm(&g64));
                    g64s.push(g64);
                    (t32, t64) = (t32 + s32, t64 + s64);
                }
                let rms = (g64s.iter().map(|g| norm(g).powi(2)).sum::<f64>() / g64s.len() as f64).sqrt();
                let noise = spread(&g64s).sqrt() / rms;
                let err_mean = errs.iter().sum::<f64>() / errs.len() as f64;
                let err_max = errs.iter().copied().fold(0.0, f64::max);
                println!(
                    "{opt:>5} {est:>6} {w:>4} {err_mean:>12.3e} {err_max:>12.3e} {noise:>12.3e} {:>12.3e} {:>8.3} {:>8.3}",
                    err_max / noise,
                    t32 / runs as f64,
                    t64 / runs as f64
                );
            }
        }
    }
}
