//! The long-run estimators `tbptt` and `pes` held against the truth (spec §8): the exact
//! gradient of `Σ_k J_k`, the sum of the objective's windows, through the whole run from step 0
//! (`window_meta_gradient` over `H` steps with `--remat`). Phi is fixed (the scheduler the
//! coordinator starts from); an estimate is the sum over a fresh run's `K = H / W` window
//! estimates. Over `--runs` runs (PES: one noise stream per run) it prints
//!
//! - `cos mean`: cosine of the mean estimate with the mean truth of the same runs;
//! - `cos each`: the mean over runs of the cosine of one estimate with its run's truth;
//! - `bias`: `||mean(est) − mean(truth)|| / ||mean(truth)||`, with `± se`, its standard error
//!   from the spread of `est_r − truth_r` (a bias well under `2 se` is not resolved);
//! - `norm`: `||mean(est)|| / ||mean(truth)||`;
//! - `var`: variance per estimate, `Σ_r ||est_r − mean(est)||² / (R − 1)`, over `||mean(truth)||²`;
//! - seconds per estimate (the truth's on the `full` row).
//!
//! PES differentiates through the scheduler's input features, which the exact gradient holds
//! constant (spec §8): with `lstm` PES targets another gradient; `lslr` reads no features.
//!
//! `cargo bench --bench estimators -- [--horizons 100,1000] [--windows 10,50] [--runs 64]
//! [--optimizers sgd,adam] [--schedulers lstm,lslr] [--sigma 0.01] [--hidden 16] [--batch 16]`

#[path = "horizon_common/mod.rs"]
mod common;

use common::{
    cosine, dataset, digits_config, dist, full, initial_params, mean, norm, pes, run_data, spread, tbptt,
    timed,
};

fn main() {
    let (mut horizons, mut windows, mut runs) = (vec![100, 1000], vec![10, 50], 64u64);
    let (mut opts, mut scheds) = ("sgd,adam".to_string(), "lstm,lslr".to_string());
    let (mut sigma, mut hidden, mut batch) = (0.01f64, 16usize, 16usize);
    for (k, v) in common::args() {
        match k.as_str() {
            "horizons" => horizons = common::list(&v),
            "windows" => windows = common::list(&v),
            "runs" => runs = v.parse().expect("--runs"),
            "optimizers" => opts = v,
            "schedulers" => scheds = v,
            "sigma" => sigma = v.parse().expect("--sigma"),
            "hidden" => hidden = v.parse().expect("--hidden"),
            "batch" => batch = v.parse().expect("--batch"),
            other => panic!("unknown option --{other}"),
        }
    }
    println!(
        "# estimators: digits 64-{hidden}-10, b = {batch}, float32, {runs} runs per row, pes sigma = {sigma}, objective end"
    );
    println!(
        "{:>5} {:>5} {:>5} {:>3} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "sched", "opt", "H", "W", "est", "cos mean", "cos each", "bias", "± se", "norm", "var", "s/est"
    );
    let started = std::time::Instant::now();
    for sched in scheds.split(',') {
        for opt in opts.split(',') {
            for &h in &horizons {
                let config = digits_config(hidden, h, opt, sched);
                let params = initial_params(&config, opt);
                let data = dataset(&config);
                for &w in &windows {
                    let (mut truth, mut tt) = (Vec::new(), 0.0);
                    let mut est: [(Vec<Vec<f64>>, f64); 2] = [(Vec::new(), 0.0), (Vec::new(), 0.0)];
                    for r in 0..runs {
                        let run = run_data::<f32>(&data, &config, r, batch);
                        let (g, s) = timed(|| full(&config, &params, &run, run.learner_init(), w, true));
                        truth.push(g);
                        tt += s;
                        let (g, s) = timed(|| tbptt(&config, &params, &run, run.learner_init(), w));
                        est[0].0.push(g);
                        est[0].1 += s;
                        let (g, s) =
                            timed(|| pes(&config, &params, &run, run.learner_init(), w, sigma, 5000 + r));
                        est[1].0.push(g);
                        est[1].1 += s;
                    }
                    let t_mean = mean(&truth);
                    let t_norm = norm(&t_mean);
                    let n = runs as f64;
                    println!(
                        "{sched:>5} {opt:>5} {h:>5} {w:>3} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10.3e} {:>9.4}",
                        "full",
                        "1",
                        "1",
                        "0",
                        "-",
                        "1",
                        spread(&truth) / (t_norm * t_norm),
                        tt / n
                    );
                    for (name, (es, secs)) in ["tbptt", "pes"].iter().zip(&est) {
                        let e_mean = mean(es);
                        let diffs: Vec<Vec<f64>> = es
                            .iter()
                            .zip(&truth)
                            .map(|(e, t)| e.iter().zip(t).map(|(a, b)| a - b).collect())
                            .collect();
                        let se = (spread(&diffs) / n).sqrt() / t_norm;
                        let each = es.iter().zip(&truth).map(|(e, t)| cosine(e, t)).sum::<f64>() / n;
                        println!(
                            "{sched:>5} {opt:>5} {h:>5} {w:>3} {name:>6} {:>9.4} {:>9.4} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>9.4}",
                            cosine(&e_mean, &t_mean),
                            each,
                            dist(&e_mean, &t_mean) / t_norm,
                            se,
                            norm(&e_mean) / t_norm,
                            spread(es) / (t_norm * t_norm),
                            secs / n
                        );
                    }
                }
            }
        }
    }
    println!("# total {:.1} s", started.elapsed().as_secs_f64());
}
