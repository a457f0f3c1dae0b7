//! What `apply` runs: the checkpoint's learned scheduler and the learner, data and inner
//! optimiser it was trained with, each overridable by a flag to test generalisation. A
//! scheduler trained on other layer counts gets its head rows remapped onto the new groups
//! ([`group_map`]), so one learned schedule can be applied to deeper or shallower learners.

use std::path::Path;

use anyhow::{Context, Result};
use metasched_engine::{Config, InnerOptimizer, LossKind, Params, SchedulerKind};
use metasched_formats::read_checkpoint;
use metasched_tasks::train_mlp::{OpenedDataset, TrainMlpData};
use serde_json::Value;

use super::ApplyArgs;
use crate::exit::BadInput;

/// Everything the runs of `apply` share.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The learner, horizon, inner optimiser and scheduler every run uses.
    pub config: Config,
    /// The learned scheduler, its head remapped to `config`'s groups.
    pub params: Params<f32>,
    /// The dataset, opened for `config`.
    pub data: OpenedDataset,
    /// The dataset's spelling.
    pub dataset: String,
    /// The user seed of the runs (the checkpoint's `train.config.seed`).
    pub seed: u64,
    /// Minibatch size.
    pub batch: usize,
    /// The horizon the scheduler was trained for.
    pub trained_horizon: usize,
    /// The layers the scheduler was trained for.
    pub trained_layers: Vec<usize>,
    /// For each group of `config`, the checkpoint's group whose head row sets its rate.
    pub group_map: Vec<usize>,
    /// Group (tensor) names of `config`'s learner.
    pub group_names: Vec<String>,
}

fn bad(msg: String) -> anyhow::Error {
    BadInput(msg).into()
}

/// The checkpoint's group that sets the rate of group `k` of a learner of `new_layers`
/// linear layers, the scheduler having been trained with `old_layers`: the output layer takes
/// the output layer's rates; hidden layer `l` takes hidden layer `l` when the checkpoint has
/// one, else the checkpoint's last hidden layer (deeper learners); weights map to weights,
/// biases to biases. Equal layer counts give the identity.
pub fn group_map(old_layers: usize, new_layers: usize) -> Vec<usize> {
    (0..2 * new_layers)
        .map(|k| {
            let (l, part) = (k / 2, k % 2);
            let old =
                if l + 1 == new_layers || old_layers < 2 { old_layers - 1 } else { l.min(old_layers - 2) };
            2 * old + part
        })
        .collect()
}

/// Group names in spec order: `layers.{l}.weight`, `layers.{l}.bias`, ...
pub fn group_names(layers: usize) -> Vec<String> {
    (0..layers).flat_map(|l| [format!("layers.{l}.weight"), format!("layers.{l}.bias")]).collect()
}

/// A field of the checkpoint's `train.config`.
fn field<'a>(train: &'a Value, name: &str, origin: &str) -> Result<&'a Value> {
    train.get(name).ok_or_else(|| bad(format!("{origin}: `train.config.{name}` missing")))
}

fn as_u64(v: &Value, name: &str, origin: &str) -> Result<u64> {
    v.as_u64().ok_or_else(|| bad(format!("{origin}: `train.config.{name}` is not a non-negative integer")))
}

fn as_f64(train: &Value, name: &str, origin: &str) -> Result<f64> {
    field(train, name, origin)?
        .as_f64()
        .ok_or_else(|| bad(format!("{origin}: `train.config.{name}` is not a number")))
}

/// The inner optimiser `--inner-optimizer NAME` means, with the constants of the checkpoint's
/// `train.config`.
fn inner_optimizer(name: &str, train: &Value, origin: &str) -> Result<InnerOptimizer> {
    Ok(match name {
        "sgd" => InnerOptimizer::Sgd,
        "momentum" => InnerOptimizer::Momentum { mu: as_f64(train, "momentum", origin)? },
        "adam" => InnerOptimizer::Adam {
            beta1: as_f64(train, "adam_beta1", origin)?,
            beta2: as_f64(train, "adam_beta2", origin)?,
            eps: as_f64(train, "adam_eps", origin)?,
        },
        other => {
            return Err(bad(format!(
                "--inner-optimizer: unknown `{other}` (expected sgd, momentum or adam)"
            )));
        }
    })
}

/// Reads the checkpoint, settles every setting (flags over the checkpoint's `train.config`)
/// and opens the data. Every error is bad input.
pub fn load(args: &ApplyArgs) -> Result<Setup> {
    let path = &args.checkpoint;
    let origin = format!("checkpoint {}", path.display());
    if !Path::new(path).is_file() {
        return Err(bad(format!("{origin}: no such file")));
    }
    let ckpt = read_checkpoint(path).with_context(|| origin.clone())?;
    let train =
        ckpt.config_json.get("train").and_then(|t| t.get("config")).ok_or_else(|| {
            bad(format!("{origin}: no `train.config`: not a train-mlp training checkpoint"))
        })?;
    let task = field(train, "task", &origin)?.as_str().unwrap_or("");
    if task != "train-mlp" {
        return Err(bad(format!("{origin}: trained on task `{task}`, apply needs a train-mlp checkpoint")));
    }
    let mut config = ckpt.config.clone();
    let trained_horizon = config.inner.steps;
    let trained_layers = config.model.layers.clone();
    let ckpt_dataset = field(train, "dataset", &origin)?
        .as_str()
        .ok_or_else(|| bad(format!("{origin}: `train.config.dataset` is not a string")))?
        .to_string();
    let dataset = args.dataset.clone().unwrap_or(ckpt_dataset.clone());
    let data: TrainMlpData = dataset.parse().map_err(|e| bad(format!("--dataset: {e}")))?;
    let batch = match args.batch_size {
        Some(b) => b,
        None => as_u64(field(train, "batch_size", &origin)?, "batch_size", &origin)? as usize,
    };
    let seed = as_u64(field(train, "seed", &origin)?, "seed", &origin)?;
    if let Some(h) = args.inner_steps {
        if h == 0 {
            return Err(bad("--inner-steps: must be at least 1".into()));
        }
        config.inner.steps = h;
    }
    if let Some(name) = &args.inner_optimizer {
        config.inner.optimizer = inner_optimizer(name, train, &origin)?;
    }
    if dataset != ckpt_dataset {
        match data {
            TrainMlpData::Digits { .. } => config.model.loss = LossKind::CrossEntropy,
            TrainMlpData::Sinusoid { .. } => config.model.loss = LossKind::Mse,
            TrainMlpData::File { .. } => {}
        }
        if args.layers.is_empty() {
            return Err(bad(format!(
                "--dataset {dataset} differs from the checkpoint's ({ckpt_dataset}): give --layers for it"
            )));
        }
    }
    if !args.layers.is_empty() {
        if args.layers.len() < 2 || args.layers.contains(&0) {
            return Err(bad("--layers: at least two widths, none zero".into()));
        }
        config.model.layers = args.layers.clone();
    }
    let old_l = trained_layers.len() - 1;
    let new_l = config.model.layers.len() - 1;
    let map = group_map(old_l, new_l);
    let mut params = Params::<f32>::zeros(&config);
    match config.scheduler.kind {
        SchedulerKind::Lstm => {
            let (Some(old), Some(new)) = (ckpt.params.lstm.as_ref(), params.lstm.as_mut()) else {
                return Err(bad(format!("{origin}: lstm scheduler without its tensors")));
            };
            let h = config.scheduler.hidden;
            let (head_w, head_b) = (old.head_w.clone(), old.head_b.clone());
            *new = old.clone();
            new.head_w = map.iter().flat_map(|&o| head_w[o * h..(o + 1) * h].to_vec()).collect();
            new.head_b = map.iter().map(|&o| head_b[o]).collect();
        }
        SchedulerKind::Lslr => {
            if config.inner.steps != trained_horizon || new_l != old_l {
                return Err(bad("an lslr scheduler is a table of its trained horizon and groups: \
                     --inner-steps and the layer count cannot change"
                    .into()));
            }
            params.lslr = ckpt.params.lslr.clone();
        }
        SchedulerKind::Fixed => {}
    }
    config.validate().map_err(|e| bad(format!("settings: {e}")))?;
    params.validate(&config).map_err(|e| bad(format!("{origin}: {e}")))?;
    let opened = OpenedDataset::open(&data, &config).with_context(|| format!("dataset {dataset}"))?;
    Ok(Setup {
        group_names: group_names(new_l),
        config,
        params,
        data: opened,
        dataset,
        seed,
        batch,
        trained_horizon,
        trained_layers,
        group_map: map,
    })
}
