//! Errors of the file formats: each names the file, and the tensor or config field at fault,
//! and displays as one line so a command-line front end can print it as is.

use std::fmt;
use std::path::PathBuf;

use metasched_engine::EngineError;
use safetensors::{Dtype, SafeTensorError};

/// Which kind of file an error is about; the first word(s) of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A checkpoint (spec §5).
    Checkpoint,
    /// A task batch (spec §6).
    TaskFile,
    /// An output file of `metagrad` / `eval`, or any other tensor file.
    Output,
    /// A user dataset of the `train-mlp` family (spec §7.1).
    Dataset,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Checkpoint => "checkpoint",
            Self::TaskFile => "task file",
            Self::Output => "output file",
            Self::Dataset => "dataset file",
        })
    }
}

/// Whether an I/O failure happened while reading an input or writing an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Reading a file given as input.
    Read,
    /// Writing (atomically) a file given as output.
    Write,
}

impl fmt::Display for IoOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Read => "cannot read",
            Self::Write => "cannot write",
        })
    }
}

/// Everything reading or writing a metasched file can fail with.
///
/// The `Display` form is one line that starts with the file kind and path, e.g.
/// ``checkpoint ckpt.safetensors: tensor `theta.layers.0.weight` has shape [40, 2], expected [40, 1]``.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read or written.
    #[error("{kind} {path}: {op}: {source}")]
    Io {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Reading or writing.
        op: IoOp,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes are not a safetensors file (empty, truncated, garbage header, bad offsets).
    #[error("{kind} {path}: not a safetensors file ({len} bytes): {source}")]
    NotSafetensors {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Size of the file in bytes.
        len: usize,
        /// The safetensors crate's diagnosis.
        source: SafeTensorError,
    },
    /// A required `__metadata__` key is absent.
    #[error("{kind} {path}: no `{key}` key in the safetensors `__metadata__`")]
    MissingMetadata {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// The key, e.g. `metasched.config`.
        key: String,
    },
    /// The `metasched.config` JSON cannot be parsed or holds values the algorithm cannot run
    /// with.
    #[error("{kind} {path}: config {}: {reason}", config_at(field))]
    BadConfig {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Dotted path of the field at fault (e.g. `scheduler.kind`), `None` when the JSON as
        /// a whole is malformed.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is stored with a dtype other than the one the format requires.
    #[error("{kind} {path}: tensor `{tensor}`: dtype {got}, expected {expected}")]
    WrongDtype {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Dtype found.
        got: Dtype,
        /// Dtype required.
        expected: Dtype,
    },
    /// The tensors do not fit the configuration or the format: wrong shape, missing or
    /// unknown tensor, unusable task data (the engine's diagnosis, with the file).
    #[error("{kind} {path}: {source}")]
    Engine {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the tensor.
        source: EngineError,
    },
    /// A float tensor holds NaN or an infinity.
    #[error("{kind} {path}: tensor `{tensor}`: non-finite value {value} at flat index {index}")]
    NonFinite {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Row-major index of the first offending value.
        index: usize,
        /// The value (NaN, inf or -inf).
        value: f32,
    },
    /// A class label is negative or not below the number of classes.
    #[error("{kind} {path}: tensor `{tensor}`: label {value} at flat index {index} is not in 0..{classes}")]
    BadLabel {
        /// Kind of file.
        kind: FileKind,
        /// The file.
        path: PathBuf,
        /// Tensor name.
        tensor: String,
        /// Row-major index of the first offending label.
        index: usize,
        /// The label found.
        value: i64,
        /// Number of classes `d_L` of the model.
        classes: usize,
    },
    /// The safetensors crate refused to serialise the tensors (e.g. a header over 100 MB).
    #[error("{kind} {path}: cannot serialise: {source}")]
    Serialize {
        /// Kind of file.
        kind: FileKind,
        /// The file that was to be written.
        path: PathBuf,
        /// The safetensors crate's error.
        source: SafeTensorError,
    },
    /// The values handed to a writer are inconsistent (a data length that does not match its
    /// shape, a duplicate name, parameters that do not fit their config): a caller's bug,
    /// nothing is written.
    #[error("{kind} {path}: refusing to write: {reason}")]
    InvalidOutput {
        /// Kind of file.
        kind: FileKind,
        /// The file that was to be written.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
}

fn config_at(field: &Option<String>) -> String {
    match field {
        Some(f) => format!("field `{f}`"),
        None => "`metasched.config`".to_string(),
    }
}

impl FormatError {
    /// True when the error is caused by an input file: missing or unreadable, or content that
    /// is not a valid file of its kind. False when an output could not be produced (write
    /// failure, serialisation failure, inconsistent values handed to a writer).
    ///
    /// A command-line front end maps `true` to its "bad input" exit code.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Io { op, .. } => *op == IoOp::Read,
            Self::Engine { source, .. } => source.is_bad_input(),
            Self::NotSafetensors { .. }
            | Self::MissingMetadata { .. }
            | Self::BadConfig { .. }
            | Self::WrongDtype { .. }
            | Self::NonFinite { .. }
            | Self::BadLabel { .. } => true,
            Self::Serialize { .. } | Self::InvalidOutput { .. } => false,
        }
    }

    /// The path of the file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::NotSafetensors { path, .. }
            | Self::MissingMetadata { path, .. }
            | Self::BadConfig { path, .. }
            | Self::WrongDtype { path, .. }
            | Self::Engine { path, .. }
            | Self::NonFinite { path, .. }
            | Self::BadLabel { path, .. }
            | Self::Serialize { path, .. }
            | Self::InvalidOutput { path, .. } => path,
        }
    }
}

/// Result alias of the formats crate.
pub type Result<T> = std::result::Result<T, FormatError>;
