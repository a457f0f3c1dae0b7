//! Shared safetensors plumbing: reading a file into checked, typed tensors and writing named
//! tensors plus `__metadata__` atomically. Every reader and writer of the crate goes through
//! here, so dtype, endianness and error reporting are handled in one place.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use metasched_engine::EngineError;
use safetensors::tensor::View;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::atomic::write_atomic;
use crate::error::{FileKind, FormatError, IoOp, Result};

/// Float32 tensors by name, as `(shape, values)`.
pub type F32Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The values of one tensor handed to a writer, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TensorData<'a> {
    /// Stored as `F32`, little-endian.
    F32(&'a [f32]),
    /// Stored as `I64`, little-endian (class labels).
    I64(&'a [i64]),
}

impl TensorData<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::I64(_) => Dtype::I64,
        }
    }

    fn to_le_bytes(self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

/// One tensor to write: its name, row-major shape (`[]` for a scalar) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor<'a> {
    /// Tensor name in the file.
    pub name: String,
    /// Shape; the product of its entries must equal the number of values.
    pub shape: Vec<usize>,
    /// The values.
    pub data: TensorData<'a>,
}

impl<'a> NamedTensor<'a> {
    /// A float32 tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, data: &'a [f32]) -> Self {
        Self { name: name.into(), shape, data: TensorData::F32(data) }
    }

    /// An int64 tensor.
    pub fn i64(name: impl Into<String>, shape: Vec<usize>, data: &'a [i64]) -> Self {
        Self { name: name.into(), shape, data: TensorData::I64(data) }
    }
}

/// A tensor encoded for the safetensors serialiser.
struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Number of elements a shape holds, `None` on overflow.
pub(crate) fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Serialises tensors and metadata into safetensors bytes, checking that names are unique and
/// non-empty and that every data length matches its shape. `path` and `kind` only name the
/// file in errors. An empty `metadata` writes no `__metadata__` entry.
pub fn serialize_tensors(
    path: &Path,
    kind: FileKind,
    tensors: &[NamedTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let invalid = |reason: String| FormatError::InvalidOutput { kind, path: path.to_path_buf(), reason };
    let mut seen = std::collections::BTreeSet::new();
    let mut encoded = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.name.is_empty() || t.name == "__metadata__" {
            return Err(invalid(format!("invalid tensor name `{}`", t.name)));
        }
        if !seen.insert(t.name.as_str()) {
            return Err(invalid(format!("tensor `{}` given twice", t.name)));
        }
        if numel(&t.shape) != Some(t.data.len()) {
            return Err(invalid(format!(
                "tensor `{}` has shape {:?} but {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        encoded.push((
            t.name.clone(),
            Encoded { dtype: t.data.dtype(), shape: t.shape.clone(), bytes: t.data.to_le_bytes() },
        ));
    }
    let info: Option<HashMap<String, String>> =
        (!metadata.is_empty()).then(|| metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let serialize_err = |source| FormatError::Serialize { kind, path: path.to_path_buf(), source };
    let bytes = safetensors::serialize(encoded, info).map_err(serialize_err)?;
    canonical_header(bytes).map_err(serialize_err)
}

/// Rewrites the header of a serialised file with the `__metadata__` entries in sorted order.
///
/// The safetensors crate takes the metadata as a `HashMap` and writes it in that map's
/// (randomised) iteration order; sorting makes equal inputs give byte-identical files, so a
/// checkpoint's bytes are reproducible. The result is re-checked with the crate's own parser.
fn canonical_header(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, SafeTensorError> {
    let (n, _) = SafeTensors::read_metadata(&bytes)?;
    let header = bytes.get(8..8 + n).ok_or(SafeTensorError::InvalidHeaderLength)?;
    let mut value: serde_json::Value = serde_json::from_slice(header)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(SafeTensorError::InvalidHeaderLength);
    };
    let Some(serde_json::Value::Object(meta)) = obj.remove("__metadata__") else {
        return Ok(bytes);
    };
    let sorted: BTreeMap<String, serde_json::Value> = meta.into_iter().collect();
    let mut out = serde_json::Map::new();
    out.insert("__metadata__".to_string(), serde_json::Value::Object(sorted.into_iter().collect()));
    out.extend(std::mem::take(obj));
    let mut text = serde_json::to_vec(&serde_json::Value::Object(out))?;
    // The crate pads its header with spaces to a multiple of 8 so tensor data stays aligned.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut file = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    file.extend((text.len() as u64).to_le_bytes());
    file.extend(text);
    file.extend_from_slice(&bytes[8 + n..]);
    SafeTensors::read_metadata(&file)?;
    Ok(file)
}

/// Serialises tensors and metadata (see [`serialize_tensors`]) and writes them atomically to
/// `path` (see [`write_atomic`]): on failure an existing file at `path` is left as it was.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    kind: FileKind,
    tensors: &[NamedTensor<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = serialize_tensors(path, kind, tensors, metadata)?;
    write_atomic(path, &bytes).map_err(|source| FormatError::Io {
        kind,
        path: path.to_path_buf(),
        op: IoOp::Write,
        source,
    })
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<usize>,
}

/// A parsed safetensors file: its `__metadata__` and an index of its tensors, decoded on
/// demand with dtype checks. Every error it returns names the file (and the tensor).
#[derive(Debug, Clone)]
pub struct TensorFile {
    kind: FileKind,
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: BTreeMap<String, String>,
    entries: BTreeMap<String, Entry>,
}

impl TensorFile {
    /// Reads and parses the file at `path`; `kind` names it in errors.
    pub fn read(path: impl AsRef<Path>, kind: FileKind) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
            kind,
            path: path.to_path_buf(),
            op: IoOp::Read,
            source,
        })?;
        Self::from_bytes(path, kind, bytes)
    }

    /// Parses safetensors `bytes`; `path` and `kind` only name the file in errors.
    pub fn from_bytes(path: impl AsRef<Path>, kind: FileKind, bytes: Vec<u8>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let not_st = |source: SafeTensorError, len: usize, path: &Path| FormatError::NotSafetensors {
            kind,
            path: path.to_path_buf(),
            len,
            source,
        };
        let (n, meta) = match SafeTensors::read_metadata(&bytes) {
            Ok(x) => x,
            Err(e) => return Err(not_st(e, bytes.len(), &path)),
        };
        // Tensor offsets are relative to the end of the 8-byte length and the header.
        let base = 8usize.checked_add(n);
        let mut entries = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let (s, e) = info.data_offsets;
            let range = base
                .and_then(|b| Some(b.checked_add(s)?..b.checked_add(e)?))
                .filter(|r| r.start <= r.end && r.end <= bytes.len());
            let Some(range) = range else {
                return Err(not_st(SafeTensorError::InvalidOffset(name), bytes.len(), &path));
            };
            entries.insert(name, Entry { dtype: info.dtype, shape: info.shape.clone(), range });
        }
        let metadata = meta.metadata().as_ref().map(|m| m.clone().into_iter().collect()).unwrap_or_default();
        Ok(Self { kind, path, bytes, metadata, entries })
    }

    /// The kind of file, as named in errors.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// The file's path, as named in errors.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` map (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The stored dtype of a tensor.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// The shape of a tensor (`[]` for a scalar).
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The values of an `F32` tensor, row-major. Errors: the tensor is absent
    /// ([`EngineError::MissingTensor`]) or not `F32` ([`FormatError::WrongDtype`]).
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let bytes = self.typed(name, Dtype::F32)?;
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// The values of an `I64` tensor, row-major. Errors as for [`TensorFile::f32`].
    pub fn i64(&self, name: &str) -> Result<Vec<i64>> {
        let bytes = self.typed(name, Dtype::I64)?;
        Ok(bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    /// Every tensor as `(shape, values)`, requiring all of them to be `F32`.
    pub fn all_f32(&self) -> Result<F32Tensors> {
        self.entries.iter().map(|(name, e)| Ok((name.clone(), (e.shape.clone(), self.f32(name)?)))).collect()
    }

    /// The raw little-endian bytes of tensor `name`, checking its dtype.
    fn typed(&self, name: &str, expected: Dtype) -> Result<&[u8]> {
        let e = self.entries.get(name).ok_or_else(|| {
            self.engine(EngineError::MissingTensor {
                name: name.to_string(),
                why: format!("this {}", self.kind),
            })
        })?;
        if e.dtype != expected {
            return Err(FormatError::WrongDtype {
                kind: self.kind,
                path: self.path.clone(),
                tensor: name.to_string(),
                got: e.dtype,
                expected,
            });
        }
        // The range was checked against the buffer when the file was parsed.
        Ok(self.bytes.get(e.range.clone()).unwrap_or_default())
    }

    /// Wraps an engine error with this file.
    pub fn engine(&self, source: EngineError) -> FormatError {
        FormatError::Engine { kind: self.kind, path: self.path.clone(), source }
    }

    /// A [`FormatError::NonFinite`] for this file, if `values` holds NaN or an infinity.
    pub fn check_finite(&self, tensor: &str, values: &[f32]) -> Result<()> {
        match values.iter().position(|v| !v.is_finite()) {
            None => Ok(()),
            Some(index) => Err(FormatError::NonFinite {
                kind: self.kind,
                path: self.path.clone(),
                tensor: tensor.to_string(),
                index,
                value: values[index],
            }),
        }
    }
}
