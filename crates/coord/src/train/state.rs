//! The state of a training run and its checkpoint: theta and phi as spec §5 tensors, Adam's
//! moments as `optim.adam.m.NAME` / `optim.adam.v.NAME`, and the step counters and the whole
//! [`TrainConfig`] under the `train` key of `metasched.config`. Everything that influences
//! the rest of the run is in the file, so a resumed run is bitwise the uninterrupted one.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use metasched_engine::{Adam, AdamConfig, Config, Params};
use metasched_formats::{Checkpoint, read_checkpoint, write_checkpoint};
use serde::{Deserialize, Serialize};

use metasched_proto::TaskFamily;

use super::config::{TrainArgs, TrainConfig};
use super::population::{Population, PopulationMeta};
use crate::exit::BadInput;

/// File name of the resolved run configuration inside a run directory.
pub const RUN_TOML: &str = "run.toml";
/// File name of the checkpoint inside a run directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
const M_PREFIX: &str = "optim.adam.m.";
/// Key of the population's metadata under `train` in `metasched.config`.
const POPULATION_KEY: &str = "population";
const V_PREFIX: &str = "optim.adam.v.";

/// Counters and settings stored under `train` in `metasched.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMeta {
    /// Completed meta-steps.
    pub step: u64,
    /// Steps skipped because the meta-gradient was not finite.
    pub skipped: u64,
    /// Adam updates applied.
    pub adam_t: u64,
    /// The run's settings.
    pub config: TrainConfig,
}

/// Everything a run carries from one step to the next.
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Model configuration (spec §5).
    pub model: Config,
    /// theta and phi.
    pub params: Params<f32>,
    /// Outer optimiser.
    pub adam: Adam,
    /// Counters and settings.
    pub meta: TrainMeta,
    /// The long runs of a `train-mlp` run (spec §8), `None` for few-shot tasks.
    pub population: Option<Population>,
}

/// The checkpoint path of a run directory.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

impl TrainState {
    /// A fresh run.
    pub fn new(config: TrainConfig) -> anyhow::Result<Self> {
        let model = config.model_config()?;
        let t = &config.trajectory;
        let params = metasched_engine::init::init_params(&model, t.outer.seed, t.scheduler.lr_init)?;
        let adam = Adam::new(AdamConfig { lr: t.outer.meta_lr, ..Default::default() }, &params);
        let population = match config.family()? {
            TaskFamily::TrainMlp(runs) => {
                Some(Population::new(t.outer.meta_batch, &runs.objective(model.inner.steps)))
            }
            _ => None,
        };
        Ok(Self {
            model,
            params,
            adam,
            meta: TrainMeta { step: 0, skipped: 0, adam_t: 0, config },
            population,
        })
    }

    /// Writes the checkpoint atomically into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut ckpt = Checkpoint::new(self.model.clone(), self.params.clone());
        let meta =
            TrainMeta { adam_t: self.adam.t, config: self.meta.config.for_checkpoint(), ..self.meta.clone() };
        let mut train = serde_json::to_value(&meta)?;
        if let Some(pop) = &self.population {
            let (pmeta, tensors) = pop.to_checkpoint();
            if let Some(obj) = train.as_object_mut() {
                obj.insert(POPULATION_KEY.into(), serde_json::to_value(&pmeta)?);
            }
            ckpt.extra_tensors.extend(tensors);
        }
        if let Some(obj) = ckpt.config_json.as_object_mut() {
            obj.insert("train".into(), train);
        }
        for (prefix, moments) in [(M_PREFIX, &self.adam.m), (V_PREFIX, &self.adam.v)] {
            for spec in moments.present_slots(&self.model) {
                let values = moments.slot(&self.model, spec.slot).unwrap_or(&[]).to_vec();
                ckpt.extra_tensors.insert(format!("{prefix}{}", spec.name), (spec.shape, values));
            }
        }
        write_checkpoint(checkpoint_path(dir), &ckpt).context("cannot write the checkpoint")
    }

    /// Reads the checkpoint of run directory `dir` and settles the resumed run's settings
    /// with `args`: the trajectory is the checkpoint's, the runtime settings come from the
    /// directory's `run.toml` (when it is there), then from the flags (see
    /// [`TrainArgs::resume`]).
    pub fn load(dir: &Path, args: &TrainArgs) -> anyhow::Result<Self> {
        let mut state = Self::load_checkpoint(dir)?;
        let run_toml = dir.join(RUN_TOML);
        let run_toml = run_toml.exists().then_some(run_toml.as_path());
        state.meta.config = args.resume(&state.meta.config, run_toml)?;
        Ok(state)
    }

    fn load_checkpoint(dir: &Path) -> anyhow::Result<Self> {
        let path = checkpoint_path(dir);
        if !path.exists() {
            return Err(BadInput(format!("{}: no checkpoint to resume from", path.display())).into());
        }
        let ckpt = read_checkpoint(&path)?;
        // Temporary files of a checkpoint write that a SIGKILL interrupted.
        metasched_formats::remove_stale_temps(dir, CHECKPOINT_FILE);
        let train = ckpt.config_json.get("train").cloned().ok_or_else(|| {
            BadInput(format!(
                "checkpoint {}: config field `train` missing: not a training checkpoint",
                path.display()
            ))
        })?;
        if let Some(keys) = train.get("config").and_then(|c| c.as_object()).map(|c| c.keys()) {
            super::config::check_keys(
                keys,
                &format!("checkpoint {}: config field `train.config`", path.display()),
            )?;
        }
        let pmeta: Option<PopulationMeta> = match train.get(POPULATION_KEY) {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                BadInput(format!("checkpoint {}: config field `train.{POPULATION_KEY}`: {e}", path.display()))
            })?),
            None => None,
        };
        let meta: TrainMeta = serde_json::from_value(train)
            .map_err(|e| BadInput(format!("checkpoint {}: config field `train`: {e}", path.display())))?;
        meta.config
            .validate()
            .with_context(|| format!("checkpoint {}: config field `train.config`", path.display()))?;
        let model = meta.config.model_config()?;
        if model != ckpt.config {
            return Err(BadInput(format!(
                "checkpoint {}: the model in `train.config` does not match the checkpoint's model",
                path.display()
            ))
            .into());
        }
        let moments = |prefix: &str| -> anyhow::Result<Params<f32>> {
            let named: Vec<(String, Vec<usize>, Vec<f32>)> = ckpt
                .extra_tensors
                .iter()
                .filter_map(|(n, (s, v))| {
                    n.strip_prefix(prefix).map(|n| (n.to_string(), s.clone(), v.clone()))
                })
                .collect();
            Params::from_named(&model, named.iter().map(|(n, s, v)| (n.as_str(), s.as_slice(), v.clone())))
                .map_err(|e| {
                    anyhow!(BadInput(format!("checkpoint {}: Adam state `{prefix}*`: {e}", path.display())))
                })
        };
        let adam = Adam {
            config: AdamConfig { lr: meta.config.trajectory.outer.meta_lr, ..Default::default() },
            t: meta.adam_t,
            m: moments(M_PREFIX)?,
            v: moments(V_PREFIX)?,
        };
        if let Some(v) = adam.v.values().find(|v| v.is_nan() || **v < 0.0) {
            return Err(BadInput(format!(
                "checkpoint {}: Adam state `{V_PREFIX}*` holds {v}: a second moment must be >= 0",
                path.display()
            ))
            .into());
        }
        if adam.m.present_slots(&model) != ckpt.params.present_slots(&model) {
            return Err(BadInput(format!(
                "checkpoint {}: Adam state does not cover every parameter",
                path.display()
            ))
            .into());
        }
        let origin = format!("checkpoint {}", path.display());
        let population = match (meta.config.family()?, pmeta) {
            (TaskFamily::TrainMlp(runs), Some(p)) => {
                let pop =
                    Population::from_checkpoint(&p, &ckpt.extra_tensors, &model, runs.estimator, &origin)?;
                if pop.slots.len() != meta.config.trajectory.outer.meta_batch {
                    return Err(BadInput(format!(
                        "{origin}: `train.{POPULATION_KEY}` holds {} members, the run has --meta-batch {}",
                        pop.slots.len(),
                        meta.config.trajectory.outer.meta_batch
                    ))
                    .into());
                }
                Some(pop)
            }
            (TaskFamily::TrainMlp(_), None) => {
                return Err(BadInput(format!(
                    "{origin}: a train-mlp run without `train.{POPULATION_KEY}`: its runs' state is lost"
                ))
                .into());
            }
            (_, _) => None,
        };
        Ok(Self { model, params: ckpt.params, adam, meta, population })
    }
}
