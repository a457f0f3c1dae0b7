//! `meta-coord apply`: ordinary training with a learned scheduler against tuned baselines
//! (constant, cosine, step decay, hypergradient descent) on the same held-out runs, the
//! comparison a practitioner would ask for before using a learned schedule.
//!
//! - [`setup`]: the checkpoint, its settings and the flags that override them;
//! - [`baselines`]: every baseline as a rate rule;
//! - [`tuning`]: the baselines' grids, tuned on `Tune` runs only;
//! - [`runner`]: one training run of one method;
//! - [`table`]: the comparison table;
//! - [`plots`]: the rate and loss figures;
//! - [`trajectory`]: `--record-trajectory`, one learned run written out for replay.

pub mod baselines;
pub mod plots;
pub mod runner;
pub mod setup;
pub mod table;
pub mod trajectory;
pub mod tuning;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use metasched_engine::InnerOptimizer;
use metasched_tasks::train_mlp::RunStream;
use rayon::prelude::*;
use serde_json::json;

use crate::exit::BadInput;
use runner::{Method, RunResult, run_one};

/// `meta-coord apply`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// A train-mlp training checkpoint (`meta-coord train --task train-mlp`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Held-out test runs (run ids 0..N of the Test stream) every method is reported on.
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Tune runs (ids 0..M of the Tune stream) the baselines' hyper-parameters are chosen on.
    #[arg(long, default_value_t = 5)]
    pub tune_seeds: u64,
    /// Horizon H (default: the checkpoint's). The scheduler's progress feature is then t/H
    /// with this H.
    #[arg(long)]
    pub inner_steps: Option<usize>,
    /// Dataset (default: the checkpoint's); another one needs --layers.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Learner widths (default: the checkpoint's); more layers than trained map the extra
    /// hidden layers onto the rates of the checkpoint's last hidden layer.
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<usize>,
    /// Inner optimiser sgd, momentum or adam (default: the checkpoint's), constants from the
    /// checkpoint's train.config. The baselines use the same optimiser.
    #[arg(long)]
    pub inner_optimizer: Option<String>,
    /// Minibatch size (default: the checkpoint's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Validation loss every this many steps for the curves (default: H/50, at least 1).
    #[arg(long)]
    pub curve_every: Option<usize>,
    /// Output directory for apply.json, apply_lr.png, apply_loss.png (default: the
    /// checkpoint's directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// CPU threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Also write the learned scheduler's run on Test run --record-run to this safetensors
    /// file (spec §7.2): theta_0, the run's splits, every step's minibatch indices, rates and
    /// minibatch loss, and the validation curve (every --curve-every steps), for replaying it
    /// elsewhere (the PyTorch drop-in's parity test).
    #[arg(long)]
    pub record_trajectory: Option<PathBuf>,
    /// The Test run --record-trajectory records (one of the reported runs: below --seeds).
    #[arg(long, default_value_t = 0, requires = "record_trajectory")]
    pub record_run: u64,
}

/// The inner optimiser's name (for the HD row).
fn optimizer_name(o: &InnerOptimizer) -> &'static str {
    match o {
        InnerOptimizer::Sgd => "SGD",
        InnerOptimizer::Momentum { .. } => "Momentum",
        InnerOptimizer::Adam { .. } => "Adam",
    }
}

/// A baseline's tuned values as text.
fn tuned_text(b: &baselines::Baseline) -> String {
    match b {
        baselines::Baseline::Constant { rate } => format!("rate {rate:.3e}"),
        baselines::Baseline::Cosine { peak } | baselines::Baseline::StepDecay { peak } => {
            format!("peak {peak:.3e}")
        }
        baselines::Baseline::Hypergradient { alpha0, beta } => format!("α0 {alpha0:.3e}, β {beta:.1e}"),
    }
}

/// Runs `apply`.
pub fn run(args: &ApplyArgs) -> Result<()> {
    let started = Instant::now();
    if args.seeds == 0 {
        return Err(BadInput("--seeds: must be at least 1".into()).into());
    }
    if args.tune_seeds == 0 {
        return Err(BadInput("--tune-seeds: must be at least 1".into()).into());
    }
    if args.curve_every == Some(0) {
        return Err(BadInput("--curve-every: must be at least 1".into()).into());
    }
    if args.record_run >= args.seeds {
        return Err(BadInput(format!(
            "--record-run {}: must be one of the reported Test runs 0..{} (--seeds)",
            args.record_run, args.seeds
        ))
        .into());
    }
    let setup = setup::load(args)?;
    let horizon = setup.config.inner.steps;
    let curve_every = args.curve_every.unwrap_or((horizon / 50).max(1));
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None => args.checkpoint.parent().map(PathBuf::from).unwrap_or_default(),
    };
    std::fs::create_dir_all(if out_dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        &out_dir
    })
    .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .context("cannot start the thread pool")?;
    let grids = tuning::grids(&setup.config.inner.optimizer);
    let methods_n = 5u64;
    let bar =
        crate::train::progress::bar(tuning::tune_jobs(&grids, args.tune_seeds) + methods_n * args.seeds, 0);
    bar.set_message("tuning baselines on Tune runs");
    let tuned = pool.install(|| tuning::tune(&setup, args.tune_seeds, &bar))?;
    bar.set_message("test runs");
    let opt = optimizer_name(&setup.config.inner.optimizer);
    let mut methods = vec![Method::Learned];
    methods.extend(tuned.chosen.iter().map(|&b| Method::Baseline(b)));
    let mut names = vec![format!("learned ({})", setup.config.scheduler.kind.as_str())];
    let mut tuned_texts = vec![String::from("—")];
    for b in &tuned.chosen {
        names.push(b.name(opt));
        tuned_texts.push(tuned_text(b));
    }
    let jobs: Vec<(usize, u64)> =
        (0..methods.len()).flat_map(|m| (0..args.seeds).map(move |r| (m, r))).collect();
    let flat: Vec<RunResult> = pool.install(|| {
        jobs.par_iter()
            .map(|&(m, r)| {
                let res = run_one(&setup, &methods[m], RunStream::Test, r, Some(curve_every), true);
                bar.inc(1);
                res
            })
            .collect::<Result<_>>()
    })?;
    bar.finish_and_clear();
    let results: Vec<Vec<RunResult>> = flat.chunks(args.seeds as usize).map(|c| c.to_vec()).collect();
    let rows: Vec<(String, String)> = names.iter().cloned().zip(tuned_texts).collect();
    let table = table::build(&rows, &results);

    println!(
        "apply: {} on {} (H = {} steps, trained with H = {}; the progress feature t/H uses H = {}), \
         layers {:?} (trained {:?}), inner optimiser {}, batch {}, {} test runs, {} tune runs",
        args.checkpoint.display(),
        setup.dataset,
        horizon,
        setup.trained_horizon,
        horizon,
        setup.config.model.layers,
        setup.trained_layers,
        opt,
        setup.batch,
        args.seeds,
        args.tune_seeds
    );
    print!("{}", table::render(&table));

    if let Some(path) = &args.record_trajectory {
        // Row 0 is the learned scheduler.
        let learned = &results[0][args.record_run as usize];
        trajectory::write(path, &args.checkpoint, &setup, args.record_run, curve_every, learned)?;
        println!("wrote the learned run's trajectory on Test run {} to {}", args.record_run, path.display());
    }
    plots::plot_rates(&out_dir.join("apply_lr.png"), &names, &results, horizon, &setup.group_names)?;
    plots::plot_losses(&out_dir.join("apply_loss.png"), &names, &results, horizon)?;
    let report = json!({
        "checkpoint": args.checkpoint.display().to_string(),
        "dataset": setup.dataset,
        "horizon": horizon,
        "trained_horizon": setup.trained_horizon,
        "layers": setup.config.model.layers,
        "trained_layers": setup.trained_layers,
        "group_map": setup.group_map,
        "group_names": setup.group_names,
        "inner_optimizer": setup.config.inner.optimizer,
        "batch_size": setup.batch,
        "seed": setup.seed,
        "seeds": args.seeds,
        "tune_seeds": args.tune_seeds,
        "curve_every": curve_every,
        "tuning": tuned,
        "table": table,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    let path = out_dir.join("apply.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "wrote {}/{{apply.json, apply_lr.png, apply_loss.png}} in {:.1} s",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
