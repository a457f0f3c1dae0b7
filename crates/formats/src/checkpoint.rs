//! Checkpoints (spec §5): theta and phi as float32 safetensors in PyTorch's tensor names, the
//! run configuration as JSON under the `__metadata__` key `metasched.config`.

use std::collections::BTreeMap;
use std::path::Path;

use metasched_engine::{Config, EngineError, Params, Slot, ThetaLayout};
use serde_json::Value;

use crate::config_json::{merge_config, parse_config};
use crate::error::{FileKind, FormatError, Result};
use crate::tensor_io::{F32Tensors, NamedTensor, TensorData, TensorFile, numel, write_safetensors};

/// The `__metadata__` key holding the configuration JSON.
pub const CONFIG_KEY: &str = "metasched.config";

/// Name prefix of the outer optimiser's state tensors, carried through unchanged.
pub const OPTIM_PREFIX: &str = "optim.";

/// Name prefix of the persistent state of long runs (spec §8: learner, optimiser and LSTM
/// state of every member of the population), carried through unchanged.
pub const STATE_PREFIX: &str = "state.";

/// Whether `name` is an extra tensor a checkpoint carries besides theta and phi.
fn is_extra(name: &str) -> bool {
    name.starts_with(OPTIM_PREFIX) || name.starts_with(STATE_PREFIX)
}

/// One checkpoint: the configuration, the learned parameters and whatever else the file
/// carries that this version passes through without interpreting.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The run configuration (the contract-level part of `metasched.config`).
    pub config: Config,
    /// theta and phi.
    pub params: Params<f32>,
    /// The whole `metasched.config` JSON object, so keys unknown to this version (a `train`
    /// section, a step counter, ...) survive a read-write round trip. On write, its `model`,
    /// `inner` and `scheduler` fields are overwritten from [`Checkpoint::config`].
    pub config_json: Value,
    /// Every other `__metadata__` key.
    pub extra_metadata: BTreeMap<String, String>,
    /// Tensors named `optim.*` (outer optimiser state) and `state.*` (long runs' persistent
    /// state), as `(shape, values)`.
    pub extra_tensors: F32Tensors,
}

impl Checkpoint {
    /// A checkpoint holding just `config` and `params`.
    pub fn new(config: Config, params: Params<f32>) -> Self {
        let config_json = serde_json::to_value(&config).unwrap_or_else(|_| Value::Object(Default::default()));
        Self { config, params, config_json, extra_metadata: BTreeMap::new(), extra_tensors: BTreeMap::new() }
    }

    /// The theta and phi tensors present, in canonical order (spec §5), as
    /// `(name, shape, values)`.
    ///
    /// # Panics
    ///
    /// If `params.theta` is shorter than the learner of `config` needs (never for a checkpoint
    /// that was read, or built from `Params::zeros(&config)`).
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, &[f32])> {
        self.params
            .present_slots(&self.config)
            .into_iter()
            .filter_map(|s| Some((s.name, s.shape, self.params.slot(&self.config, s.slot)?)))
            .collect()
    }

    /// The `metasched.config` JSON text written for this checkpoint: [`Checkpoint::config_json`]
    /// with the contract sections taken from [`Checkpoint::config`].
    pub fn config_json_text(&self) -> std::result::Result<String, serde_json::Error> {
        serde_json::to_string(&merge_config(&self.config_json, &self.config)?)
    }
}

/// Reads and checks a checkpoint: a safetensors file whose `metasched.config` parses and
/// validates, whose `theta.*`/`phi.*` tensors are float32, finite and exactly those the config
/// implies (shapes included), and whose only other tensors are finite float32 `optim.*`.
pub fn read_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let file = TensorFile::read(path.as_ref(), FileKind::Checkpoint)?;
    checkpoint_from_file(&file)
}

/// As [`read_checkpoint`], from bytes already in memory; `path` only names the file in errors.
pub fn parse_checkpoint(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Checkpoint> {
    let file = TensorFile::from_bytes(path, FileKind::Checkpoint, bytes)?;
    checkpoint_from_file(&file)
}

fn checkpoint_from_file(file: &TensorFile) -> Result<Checkpoint> {
    let mut extra_metadata = file.metadata().clone();
    let text = extra_metadata.remove(CONFIG_KEY).ok_or_else(|| FormatError::MissingMetadata {
        kind: FileKind::Checkpoint,
        path: file.path().to_path_buf(),
        key: CONFIG_KEY.to_string(),
    })?;
    let (config, config_json) = parse_config(file.path(), FileKind::Checkpoint, &text)?;

    let mut named = Vec::new();
    let mut extra_tensors = BTreeMap::new();
    for name in file.names() {
        if name.starts_with("theta.") || name.starts_with("phi.") {
            let shape = file.shape(name).unwrap_or_default();
            named.push((name, shape, file.f32(name)?));
        } else if is_extra(name) {
            let values = file.f32(name)?;
            file.check_finite(name, &values)?;
            let shape = file.shape(name).unwrap_or_default().to_vec();
            extra_tensors.insert(name.to_string(), (shape, values));
        } else {
            return Err(file.engine(EngineError::UnknownTensor { name: name.to_string() }));
        }
    }
    let params = Params::<f32>::from_named(&config, named).map_err(|e| file.engine(e))?;
    let ckpt = Checkpoint { config, params, config_json, extra_metadata, extra_tensors };
    for (name, _, values) in ckpt.tensors() {
        file.check_finite(&name, values)?;
    }
    Ok(ckpt)
}

/// Writes a checkpoint atomically: the theta/phi tensors present (canonical names), the
/// `optim.*` extra tensors, the extra metadata and `metasched.config` (see
/// [`Checkpoint::config_json_text`]; it wins over an `extra_metadata` entry of that name).
///
/// Refuses, with [`FormatError::InvalidOutput`] and nothing written, a checkpoint that could
/// not be read back: invalid config, parameters that do not fit it, non-finite values, extra
/// tensors not named `optim.*`.
pub fn write_checkpoint(path: impl AsRef<Path>, ckpt: &Checkpoint) -> Result<()> {
    let path = path.as_ref();
    let invalid = |reason: String| FormatError::InvalidOutput {
        kind: FileKind::Checkpoint,
        path: path.to_path_buf(),
        reason,
    };
    let config = &ckpt.config;
    config.validate().map_err(|e| invalid(e.to_string()))?;
    let want = ThetaLayout::new(config).len();
    if ckpt.params.theta.len() != want {
        return Err(invalid(format!(
            "theta holds {} values, model.layers {:?} needs {want}",
            ckpt.params.theta.len(),
            config.model.layers
        )));
    }
    for slot in Slot::required(config) {
        if ckpt.params.slot(config, slot).is_none() {
            let kind = config.scheduler.kind.as_str();
            return Err(invalid(format!(
                "tensor `{}` missing (scheduler kind `{kind}`)",
                slot.spec(config).name
            )));
        }
    }
    if ckpt.params.lstm.is_some() && config.scheduler.hidden == 0 {
        return Err(invalid("LSTM parameters present but scheduler.hidden is 0".to_string()));
    }
    let text = ckpt.config_json_text().map_err(|e| invalid(format!("cannot encode the config: {e}")))?;

    let mut tensors = Vec::new();
    for (name, shape, values) in ckpt.tensors() {
        if numel(&shape) != Some(values.len()) {
            return Err(invalid(format!(
                "tensor `{name}` holds {} values, expected shape {shape:?}",
                values.len()
            )));
        }
        tensors.push(NamedTensor::f32(name, shape, values));
    }
    for (name, (shape, values)) in &ckpt.extra_tensors {
        if !is_extra(name) {
            return Err(invalid(format!(
                "extra tensor `{name}` is not named `{OPTIM_PREFIX}*` or `{STATE_PREFIX}*`"
            )));
        }
        tensors.push(NamedTensor::f32(name.clone(), shape.clone(), values));
    }
    for t in &tensors {
        let TensorData::F32(v) = t.data else { continue };
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(invalid(format!("tensor `{}`: non-finite value {} at flat index {i}", t.name, v[i])));
        }
    }

    let mut metadata = ckpt.extra_metadata.clone();
    metadata.insert(CONFIG_KEY.to_string(), text);
    write_safetensors(path, FileKind::Checkpoint, &tensors, &metadata)
}
