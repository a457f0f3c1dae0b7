//! Output files of `meta-coord metagrad` and `eval` (spec §6): plain float32 tensors such as
//! `J` (a scalar, shape `[]`), `outer_loss`, `lr` and `grad.*`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{FileKind, Result};
use crate::tensor_io::{NamedTensor, TensorFile, write_safetensors};

/// One float32 tensor of an output file: `(name, shape, values)`.
pub type OutputTensor = (String, Vec<usize>, Vec<f32>);

/// Writes float32 tensors `(name, shape, values)` and `metadata` atomically to `path`. A shape
/// of `[]` holds one value (a scalar such as `J`).
pub fn write_tensors(
    path: impl AsRef<Path>,
    tensors: &[OutputTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let named: Vec<NamedTensor<'_>> = tensors
        .iter()
        .map(|(name, shape, values)| NamedTensor::f32(name.clone(), shape.clone(), values))
        .collect();
    write_safetensors(path, FileKind::Output, &named, metadata)
}

/// Reads an output file (or any safetensors file) for inspection; decode its tensors with
/// [`TensorFile::f32`] or [`TensorFile::all_f32`].
pub fn read_tensors(path: impl AsRef<Path>) -> Result<TensorFile> {
    TensorFile::read(path, FileKind::Output)
}
