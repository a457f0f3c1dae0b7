//! `metrics.jsonl`: one JSON object per logged step, appended as training goes; on resume the
//! lines past the checkpoint's step are dropped so every step appears once.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::stats::LrStats;

/// File name of the metrics log inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Evaluation summary attached to a metrics line.
#[derive(Debug, Clone, Serialize)]
pub struct EvalLine {
    /// Mean query loss.
    pub mean: f64,
    /// Half-width of the 95% confidence interval.
    pub ci95: f64,
    /// Number of tasks.
    pub tasks: usize,
    /// Mean query accuracy (classification only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Half-width of the accuracy's 95% confidence interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_ci95: Option<f64>,
}

/// One metrics line.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsLine {
    /// Completed meta-steps.
    pub step: u64,
    /// Mean query loss of the step's tasks.
    pub meta_loss: f64,
    /// Global norm of the meta-gradient before clipping (null when skipped).
    pub grad_norm: Option<f64>,
    /// Rates per group.
    pub lr: Vec<LrStats>,
    /// Steps skipped so far (non-finite meta-gradient).
    pub skipped: u64,
    /// Seconds since this process started training.
    pub wall_time: f64,
    /// Meta-steps per second over the last logging interval.
    pub steps_per_s: f64,
    /// Who computed each part of the last step and for how long.
    pub parts: Vec<super::pool::PartStats>,
    /// Seconds the last step waited for its slowest part after the first one arrived.
    pub straggler_wait_s: f64,
    /// Parts re-dispatched so far (dead, hung or failing workers).
    pub redispatched: u64,
    /// Meta-steps so far whose gradient the workers reduced among themselves (a group over
    /// NCCL or its TCP stand-in) rather than the coordinator.
    pub group_reduced: u64,
    /// Evaluation on held-out tasks, when one ran at this step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalLine>,
}

/// Appends metrics lines to a run directory's log.
pub struct MetricsWriter {
    file: File,
    path: PathBuf,
}

impl MetricsWriter {
    /// Opens the log of `dir`, keeping only lines with `step <= keep_up_to` (all of them for
    /// a fresh run, where the file does not exist yet).
    pub fn open(dir: &Path, keep_up_to: u64) -> anyhow::Result<Self> {
        let path = dir.join(METRICS_FILE);
        if path.exists() {
            let kept: Vec<String> = BufReader::new(File::open(&path)?)
                .lines()
                .map_while(Result::ok)
                .filter(|l| step_of(l).is_some_and(|s| s <= keep_up_to))
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            metasched_formats::write_atomic(&path, text.as_bytes())
                .with_context(|| format!("cannot rewrite {}", path.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file, path })
    }

    /// Appends one line.
    pub fn write(&mut self, line: &MetricsLine) -> anyhow::Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

fn step_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?.get("step")?.as_u64()
}

/// `(step, meta_loss)` points of a log.
pub type TrainSeries = Vec<(u64, f64)>;
/// `(step, eval mean, eval ci95)` points of a log.
pub type EvalSeries = Vec<(u64, f64, f64)>;

/// The training and evaluation series of a run's log, for plots.
pub fn read_series(dir: &Path) -> anyhow::Result<(TrainSeries, EvalSeries)> {
    let path = dir.join(METRICS_FILE);
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for line in
        BufReader::new(File::open(&path).with_context(|| format!("cannot read {}", path.display()))?).lines()
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line?) else { continue };
        let Some(step) = v.get("step").and_then(|s| s.as_u64()) else { continue };
        if let Some(l) = v.get("meta_loss").and_then(|x| x.as_f64()) {
            train.push((step, l));
        }
        if let Some(e) = v.get("eval")
            && let (Some(m), Some(c)) =
                (e.get("mean").and_then(|x| x.as_f64()), e.get("ci95").and_then(|x| x.as_f64()))
        {
            eval.push((step, m, c));
        }
    }
    Ok((train, eval))
}
