//! The end of a run: the final evaluation on fresh held-out tasks (mean ± 95% CI), written to
//! `eval.json`, and the PNG plots of the run directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use metasched_proto::Split;
use serde::Serialize;

use super::metrics::read_series;
use super::outcome::Outcome;
use super::pool::{EvalSpec, WorkerPool};
use super::state::TrainState;
use crate::stats::{accuracy_summary, mean_ci95, rate_profile};

/// Evaluation stream of the final evaluation (periodic evaluations use stream 0).
pub const FINAL_EVAL_STREAM: u64 = 1;

/// What `eval.json` holds.
#[derive(Debug, Serialize)]
pub struct FinalEval {
    /// Completed meta-steps of the evaluated checkpoint.
    pub step: u64,
    /// Number of test tasks.
    pub tasks: usize,
    /// Support points per task (per class for classification).
    pub shots: usize,
    /// Query points per task (per class for classification).
    pub query: usize,
    /// Mean query loss.
    pub mean: f64,
    /// Half-width of the 95% confidence interval of the mean.
    pub ci95: f64,
    /// Mean query accuracy (classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Half-width of the accuracy's 95% confidence interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_ci95: Option<f64>,
    /// Mean rate per inner step and group, `[T][G]`.
    pub lr_mean: Vec<Vec<f32>>,
    /// Group names.
    pub groups: Vec<String>,
    /// Long runs: the same held-out runs with the scheduler as initialised (every rate about
    /// `lr_init`), and the paired difference learned − initial of the final validation loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus_initial: Option<VersusInitial>,
}

/// The learned scheduler against the one it started from, on the same held-out runs.
#[derive(Debug, Serialize)]
pub struct VersusInitial {
    /// Mean final validation loss with the initial scheduler.
    pub initial_mean: f64,
    /// Its 95% half-width.
    pub initial_ci95: f64,
    /// Mean over runs of (learned − initial).
    pub difference: f64,
    /// Its 95% half-width (paired: the runs are the same).
    pub difference_ci95: f64,
}

/// Runs the final evaluation, writes `eval.json` and the plots, prints the result.
pub fn finish(
    state: &TrainState,
    pool: &mut dyn WorkerPool,
    dir: &Path,
    groups: &[String],
) -> anyhow::Result<Outcome> {
    let cfg = &state.meta.config;
    let spec = EvalSpec {
        split: Split::Test,
        stream: FINAL_EVAL_STREAM,
        tasks: cfg.run.final_eval_tasks,
        shots: cfg.trajectory.task.shots,
        query: cfg.eval_query(),
    };
    let out = pool.evaluate(&Arc::new(state.params.clone()), spec)?;
    let (mean, ci95) = mean_ci95(&out.outer_loss);
    let (accuracy, accuracy_ci95) = accuracy_summary(&out.accuracy);
    let (steps, g) = (state.model.inner.steps, state.model.groups());
    let (lr_mean, band) = rate_profile(&out.lr, steps, g);
    let long = state.population.is_some();
    let versus_initial = if long {
        let t = &cfg.trajectory;
        let initial = metasched_engine::init::init_params(&state.model, t.outer.seed, t.scheduler.lr_init)?;
        let before = pool.evaluate(&Arc::new(initial), spec)?;
        let (initial_mean, initial_ci95) = mean_ci95(&before.outer_loss);
        let diff: Vec<f32> = out.outer_loss.iter().zip(&before.outer_loss).map(|(a, b)| a - b).collect();
        let (difference, difference_ci95) = mean_ci95(&diff);
        Some(VersusInitial { initial_mean, initial_ci95, difference, difference_ci95 })
    } else {
        None
    };
    let report = FinalEval {
        step: state.meta.step,
        tasks: spec.tasks,
        shots: spec.shots,
        query: spec.query,
        mean,
        ci95,
        accuracy,
        accuracy_ci95,
        lr_mean: lr_mean.chunks(g).map(|c| c.to_vec()).collect(),
        groups: groups.to_vec(),
        versus_initial,
    };
    let json = serde_json::to_string_pretty(&report)?;
    metasched_formats::write_atomic(dir.join("eval.json"), json.as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("eval.json").display()))?;
    if let Some(v) = &report.versus_initial {
        println!(
            "final evaluation: validation loss {mean:.4} ± {ci95:.4} (95% CI) at the end of {} held-out runs of {steps} steps",
            spec.tasks
        );
        if let (Some(a), Some(c)) = (accuracy, accuracy_ci95) {
            println!("final evaluation: validation accuracy {:.2}% ± {:.2}% (95% CI)", 100.0 * a, 100.0 * c);
        }
        println!(
            "initial scheduler on the same runs: {:.4} ± {:.4}; learned − initial: {:+.4} ± {:.4} (paired 95% CI)",
            v.initial_mean, v.initial_ci95, v.difference, v.difference_ci95
        );
    } else {
        println!(
            "final evaluation: mean query loss {mean:.4} ± {ci95:.4} (95% CI) on {} fresh test tasks ({}-shot, {} query points)",
            spec.tasks, spec.shots, spec.query
        );
        if let (Some(a), Some(c)) = (accuracy, accuracy_ci95) {
            println!("final evaluation: query accuracy {:.2}% ± {:.2}% (95% CI)", 100.0 * a, 100.0 * c);
        }
    }
    let what = if long { "held-out runs" } else { "test tasks" };
    let title = format!("learned learning rates, mean over {} {what}", spec.tasks);
    if let Err(e) = metasched_plots::plot_lr_schedule(
        &dir.join("lr_schedule.png"),
        &title,
        &lr_mean,
        steps,
        groups,
        Some(&band),
    ) {
        tracing::warn!("cannot draw lr_schedule.png: {e}");
    }
    match read_series(dir) {
        Ok((train, eval)) => {
            if let Err(e) = metasched_plots::plot_meta_loss(
                &dir.join("meta_loss.png"),
                "meta-loss over training",
                &train,
                &eval,
            ) {
                tracing::warn!("cannot draw meta_loss.png: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot read the metrics for meta_loss.png: {e}"),
    }
    println!(
        "wrote {}/{{checkpoint.safetensors, metrics.jsonl, eval.json, lr_schedule.png, meta_loss.png}}",
        dir.display()
    );
    Ok(Outcome::Finished { mean, ci95 })
}
