//! `apply --record-trajectory FILE`: the learned scheduler's run on one Test run written out
//! (spec §7.2), everything a reimplementation (the PyTorch drop-in) needs to replay it step by
//! step and compare: the learner's `theta_0`, the run's splits, the minibatch indices of every
//! step, and what `apply` measured (rates, minibatch losses, validation curve).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use metasched_engine::horizon::RunData;
use metasched_engine::mlp::Mlp;
use metasched_engine::{SetRef, TargetsRef};
use metasched_formats::{FileKind, NamedTensor, write_safetensors};
use metasched_tasks::train_mlp::{RunStream, TrainRun};
use serde_json::json;

use super::runner::RunResult;
use super::setup::Setup;

/// Metadata key holding the trajectory's description (JSON).
pub const TRAJECTORY_KEY: &str = "metasched.trajectory";

/// Owned targets of one split.
enum Targets {
    /// `[n, d_L]` values.
    Values(Vec<f32>),
    /// `[n]` class labels.
    Labels(Vec<i64>),
}

/// Owned tensors of one split: its inputs `[n, d_0]` and targets.
struct SplitTensors {
    n: usize,
    d_in: usize,
    d_out: usize,
    x: Vec<f32>,
    y: Targets,
}

impl SplitTensors {
    fn of(set: &SetRef<'_, f32>, d_in: usize, d_out: usize) -> Self {
        let y = match set.y {
            TargetsRef::Values(v) => Targets::Values(v.to_vec()),
            TargetsRef::Labels(l) => Targets::Labels(l.iter().map(|&c| i64::from(c)).collect()),
        };
        Self { n: set.n, d_in, d_out, x: set.x.to_vec(), y }
    }

    /// `{prefix}.x` and `{prefix}.y` or `{prefix}.labels`.
    fn push<'a>(&'a self, prefix: &str, out: &mut Vec<NamedTensor<'a>>) {
        out.push(NamedTensor::f32(format!("{prefix}.x"), vec![self.n, self.d_in], &self.x));
        out.push(match &self.y {
            Targets::Values(v) => NamedTensor::f32(format!("{prefix}.y"), vec![self.n, self.d_out], v),
            Targets::Labels(l) => NamedTensor::i64(format!("{prefix}.labels"), vec![self.n], l),
        });
    }
}

/// Writes the trajectory of `result`, the learned scheduler's run on Test run `run`, to
/// `path`: the run is reopened for its `theta_0`, splits and minibatch indices (pure
/// functions of the run, so the same ones `result` was computed on).
pub fn write(
    path: &Path,
    checkpoint: &Path,
    setup: &Setup,
    run: u64,
    curve_every: usize,
    result: &RunResult,
) -> Result<()> {
    let config = &setup.config;
    let horizon = config.inner.steps;
    let groups = config.groups();
    let data = TrainRun::<f32>::open(&setup.data, config, setup.seed, RunStream::Test, run, setup.batch)?;
    let layers = &config.model.layers;
    let (d_in, d_out) = (layers[0], layers[layers.len() - 1]);
    let theta0 = data.learner_init();
    let mlp = Mlp::new(config);
    let shapes: Vec<Vec<usize>> = layers.windows(2).flat_map(|w| [vec![w[1], w[0]], vec![w[1]]]).collect();
    let mut indices = Vec::with_capacity(horizon * setup.batch);
    for t in 0..horizon {
        indices.extend(data.batch_indices(t).into_iter().map(|i| i as i64));
    }
    let train = SplitTensors::of(&data.train_set(), d_in, d_out);
    let val = SplitTensors::of(&data.validation(), d_in, d_out);
    let val_step: Vec<i64> = result.curve.iter().map(|&(t, _)| t as i64).collect();
    let val_loss: Vec<f32> = result.curve.iter().map(|&(_, l)| l).collect();
    let final_train = [result.final_train];

    let mut tensors = Vec::new();
    for (k, name) in setup.group_names.iter().enumerate() {
        tensors.push(NamedTensor::f32(
            format!("theta.{name}"),
            shapes[k].clone(),
            &theta0[mlp.layout.group(k)],
        ));
    }
    tensors.push(NamedTensor::i64("batch.indices", vec![horizon, setup.batch], &indices));
    train.push("train", &mut tensors);
    val.push("val", &mut tensors);
    tensors.push(NamedTensor::f32("lr", vec![horizon, groups], &result.lr));
    tensors.push(NamedTensor::f32("train_loss", vec![horizon], &result.train_loss));
    tensors.push(NamedTensor::i64("val_step", vec![val_step.len()], &val_step));
    tensors.push(NamedTensor::f32("val_loss", vec![val_loss.len()], &val_loss));
    tensors.push(NamedTensor::f32("final_train_loss", vec![], &final_train));

    let about = json!({
        "checkpoint": checkpoint.display().to_string(),
        "dataset": setup.dataset,
        "seed": setup.seed,
        "stream": RunStream::Test.as_str(),
        "run": run,
        "run_seed": data.run_seed().to_string(),
        "horizon": horizon,
        "batch_size": setup.batch,
        "n_train": data.n_train(),
        "n_val": data.n_val(),
        "curve_every": curve_every,
        "layers": layers,
        "activation": config.model.activation,
        "loss": config.model.loss,
        "inner_optimizer": config.inner.optimizer,
        "scheduler": config.scheduler.kind.as_str(),
        "group_names": setup.group_names,
        "group_map": setup.group_map,
    });
    let mut meta = BTreeMap::new();
    meta.insert(TRAJECTORY_KEY.to_string(), about.to_string());
    meta.insert("metasched.command".to_string(), "apply".to_string());
    meta.insert("metasched.version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    crate::commands::ensure_parent(path)?;
    write_safetensors(path, FileKind::Output, &tensors, &meta)
        .with_context(|| format!("cannot write the trajectory {}", path.display()))?;
    Ok(())
}
