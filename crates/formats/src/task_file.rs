//! Task files (spec §6): a batch of `B` tasks, each a support set of `K` points and a query
//! set of `Q` points, as `[B, K, d_0]`-shaped float32 tensors plus float32 targets (`mse`) or
//! int64 labels (`cross_entropy`).

use std::collections::BTreeMap;
use std::path::Path;

use metasched_engine::{Config, EngineError, LossKind, Targets, TaskBatch};

use crate::error::{FileKind, FormatError, Result};
use crate::tensor_io::{NamedTensor, TensorFile, numel, write_safetensors};

/// The optional `__metadata__` key describing a task file (`B`, `K`, `Q`, widths); written for
/// people inspecting the file, ignored on read.
pub const TASKS_KEY: &str = "metasched.tasks";

/// Every tensor name a task file may hold, whatever the loss.
const KNOWN: [&str; 6] = ["support.x", "support.y", "support.labels", "query.x", "query.y", "query.labels"];

/// Reads a task batch for a model of configuration `config`, checking every tensor: names,
/// dtypes, ranks, that `B` agrees between all tensors, `K` within the support set and `Q`
/// within the query set, input and output widths against `config`, finite values, labels in
/// `0..d_L`, and finally the engine's own [`TaskBatch::validate`] (non-empty sets, ...).
pub fn read_task_batch(path: impl AsRef<Path>, config: &Config) -> Result<TaskBatch<f32>> {
    let file = TensorFile::read(path.as_ref(), FileKind::TaskFile)?;
    task_batch_from_file(&file, config)
}

/// As [`read_task_batch`], from bytes already in memory; `path` only names the file in errors.
pub fn parse_task_batch(path: impl AsRef<Path>, bytes: Vec<u8>, config: &Config) -> Result<TaskBatch<f32>> {
    let file = TensorFile::from_bytes(path, FileKind::TaskFile, bytes)?;
    task_batch_from_file(&file, config)
}

fn bad(name: &str, reason: String) -> EngineError {
    EngineError::InvalidTaskData { name: name.to_string(), reason }
}

/// Checks the shape of tensor `name` against `expected`, whose `None` entries are free; returns
/// the shape found. `dims` spells the expected shape for messages, e.g. `[B, K, d_0]`.
fn check_shape(file: &TensorFile, name: &str, expected: &[Option<usize>], dims: &str) -> Result<Vec<usize>> {
    let shape = file.shape(name).unwrap_or_default().to_vec();
    if shape.len() != expected.len() {
        return Err(file.engine(bad(
            name,
            format!("shape {shape:?} has rank {}, expected rank {} {dims}", shape.len(), expected.len()),
        )));
    }
    if shape.iter().zip(expected).any(|(&got, want)| want.is_some_and(|w| w != got)) {
        let want: Vec<usize> = shape.iter().zip(expected).map(|(&got, want)| want.unwrap_or(got)).collect();
        return Err(file.engine(EngineError::ShapeMismatch {
            name: name.to_string(),
            got: shape,
            expected: want,
        }));
    }
    Ok(shape)
}

fn floats(file: &TensorFile, name: &str) -> Result<Vec<f32>> {
    let v = file.f32(name)?;
    file.check_finite(name, &v)?;
    Ok(v)
}

fn labels(file: &TensorFile, name: &str, classes: usize) -> Result<Vec<u32>> {
    let raw = file.i64(name)?;
    let mut out = Vec::with_capacity(raw.len());
    for (index, &value) in raw.iter().enumerate() {
        match u32::try_from(value) {
            Ok(l) if l != u32::MAX && (l as usize) < classes => out.push(l),
            _ => {
                return Err(FormatError::BadLabel {
                    kind: FileKind::TaskFile,
                    path: file.path().to_path_buf(),
                    tensor: name.to_string(),
                    index,
                    value,
                    classes,
                });
            }
        }
    }
    Ok(out)
}

fn task_batch_from_file(file: &TensorFile, config: &Config) -> Result<TaskBatch<f32>> {
    let loss = config.model.loss;
    let target = match loss {
        LossKind::Mse => "y",
        LossKind::CrossEntropy => "labels",
    };
    let loss_name = match loss {
        LossKind::Mse => "mse",
        LossKind::CrossEntropy => "cross_entropy",
    };
    for name in file.names() {
        if !KNOWN.contains(&name) {
            return Err(file.engine(EngineError::UnknownTensor { name: name.to_string() }));
        }
        let (set, t) = name.split_once('.').unwrap_or((name, ""));
        if t != "x" && t != target {
            return Err(file.engine(bad(
                name,
                format!("loss {loss_name} stores its targets in `{set}.{target}`, not `{name}`"),
            )));
        }
    }
    let (sx, qx) = ("support.x".to_string(), "query.x".to_string());
    let (sy, qy) = (format!("support.{target}"), format!("query.{target}"));
    for name in [&sx, &sy, &qx, &qy] {
        if !file.contains(name) {
            return Err(file.engine(EngineError::MissingTensor {
                name: name.clone(),
                why: format!("a task file for loss {loss_name}"),
            }));
        }
    }

    let (d_in, d_out) = (config.d_in(), config.d_out());
    let s = check_shape(file, &sx, &[None, None, Some(d_in)], "[B, K, d_0]")?;
    let (b, k) = (s[0], s[1]);
    let q = check_shape(file, &qx, &[Some(b), None, Some(d_in)], "[B, Q, d_0]")?[1];
    let support_x = floats(file, &sx)?;
    let query_x = floats(file, &qx)?;
    let (support_y, query_y) = match loss {
        LossKind::Mse => {
            check_shape(file, &sy, &[Some(b), Some(k), Some(d_out)], "[B, K, d_L]")?;
            check_shape(file, &qy, &[Some(b), Some(q), Some(d_out)], "[B, Q, d_L]")?;
            (Targets::Values(floats(file, &sy)?), Targets::Values(floats(file, &qy)?))
        }
        LossKind::CrossEntropy => {
            check_shape(file, &sy, &[Some(b), Some(k)], "[B, K]")?;
            check_shape(file, &qy, &[Some(b), Some(q)], "[B, Q]")?;
            (Targets::Labels(labels(file, &sy, d_out)?), Targets::Labels(labels(file, &qy, d_out)?))
        }
    };
    let batch = TaskBatch { b, k, q, d_in, d_out, support_x, support_y, query_x, query_y };
    batch.validate(config).map_err(|e| file.engine(e))?;
    Ok(batch)
}

/// Writes a task batch atomically (labels as int64), with a `metasched.tasks` metadata entry
/// describing its sizes. Refuses, with [`FormatError::InvalidOutput`], a batch whose data
/// lengths do not match its sizes or whose support and query targets are of different kinds.
pub fn write_task_batch(path: impl AsRef<Path>, batch: &TaskBatch<f32>) -> Result<()> {
    let path = path.as_ref();
    let invalid = |reason: String| FormatError::InvalidOutput {
        kind: FileKind::TaskFile,
        path: path.to_path_buf(),
        reason,
    };
    let TaskBatch { b, k, q, d_in, d_out, .. } = *batch;
    let labels = |l: &[u32]| l.iter().map(|&x| i64::from(x)).collect::<Vec<i64>>();
    let (sl, ql);
    let mut tensors = vec![
        NamedTensor::f32("support.x", vec![b, k, d_in], &batch.support_x),
        NamedTensor::f32("query.x", vec![b, q, d_in], &batch.query_x),
    ];
    let targets = match (&batch.support_y, &batch.query_y) {
        (Targets::Values(s), Targets::Values(q_)) => {
            tensors.push(NamedTensor::f32("support.y", vec![b, k, d_out], s));
            tensors.push(NamedTensor::f32("query.y", vec![b, q, d_out], q_));
            "values"
        }
        (Targets::Labels(s), Targets::Labels(q_)) => {
            sl = labels(s);
            ql = labels(q_);
            tensors.push(NamedTensor::i64("support.labels", vec![b, k], &sl));
            tensors.push(NamedTensor::i64("query.labels", vec![b, q], &ql));
            "labels"
        }
        _ => return Err(invalid("support and query targets are of different kinds".to_string())),
    };
    for t in &tensors {
        if numel(&t.shape) != Some(t.data.len()) {
            return Err(invalid(format!(
                "tensor `{}` holds {} values, expected shape {:?}",
                t.name,
                t.data.len(),
                t.shape
            )));
        }
    }
    let info = serde_json::json!({"b": b, "k": k, "q": q, "d_in": d_in, "d_out": d_out, "targets": targets});
    let metadata = BTreeMap::from([(TASKS_KEY.to_string(), info.to_string())]);
    write_safetensors(path, FileKind::TaskFile, &tensors, &metadata)
}
