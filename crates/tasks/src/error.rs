//! Errors of the task families. Every message is one line naming the data source (the
//! embedded digits data, a task directory or file) and what is wrong with it.

use std::path::PathBuf;

use metasched_formats::FormatError;

use crate::split::Split;

/// Result of the task families.
pub type Result<T> = std::result::Result<T, TaskError>;

/// Everything sampling or loading tasks can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The digits data (embedded or handed to [`crate::Digits::from_csv_gz`]) cannot be
    /// decompressed or parsed.
    #[error("digits data ({source_name}): {}{reason}", line_prefix(*line))]
    DigitsData {
        /// Where the data came from, e.g. `embedded data/digits.csv.gz`.
        source_name: String,
        /// 1-based line at fault, `None` when the file as a whole is at fault.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A sampling parameter is outside what the family supports.
    #[error("{family} tasks: `{name}` = {value}: {reason}")]
    BadParameter {
        /// Task family, e.g. `digits`.
        family: &'static str,
        /// Parameter name, e.g. `ways`.
        name: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// A class of a split holds fewer images than one task needs from it.
    #[error(
        "digits tasks: shots + query = {needed} images per class, but class {class} has only \
         {available} {split} images"
    )]
    PoolTooSmall {
        /// The split sampled from.
        split: Split,
        /// The smallest class of that split.
        class: usize,
        /// Images of that class in the split.
        available: usize,
        /// `shots + query`.
        needed: usize,
    },
    /// A task directory cannot be listed.
    #[error("task directory {}: cannot list: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A task directory holds no `*.safetensors` file.
    #[error("task directory {}: holds no *.safetensors file", dir.display())]
    NoTaskFiles {
        /// The directory.
        dir: PathBuf,
    },
    /// A task file is unreadable or invalid (the message names the file and the tensor).
    #[error(transparent)]
    File(#[from] FormatError),
    /// The files of a task directory disagree on their sizes.
    #[error(
        "task file {}: B, K, Q = {}, {}, {} but {} has {}, {}, {} (all files of a task \
         directory must have the same sizes)",
        path.display(), got.0, got.1, got.2, reference.display(), expected.0, expected.1, expected.2
    )]
    FileShape {
        /// The file at fault.
        path: PathBuf,
        /// Its `(B, K, Q)`.
        got: (usize, usize, usize),
        /// The first file of the directory, whose sizes the others must have.
        reference: PathBuf,
        /// That file's `(B, K, Q)`.
        expected: (usize, usize, usize),
    },
    /// A `train-mlp` dataset does not fit the learner configuration (spec §7.1): input or
    /// output width, or loss kind.
    #[error("train-mlp {dataset} dataset: config field `{field}`: {reason}")]
    ConfigMismatch {
        /// The dataset, e.g. `digits`.
        dataset: &'static str,
        /// The configuration field at fault, e.g. `model.layers`.
        field: &'static str,
        /// What the dataset needs.
        reason: String,
    },
    /// A `train-mlp` dataset file (spec §7.1) holds a tensor that is malformed or does not fit
    /// the others or the configuration.
    #[error("dataset file {}: tensor `{tensor}`: {reason}", path.display())]
    DatasetFile {
        /// The file.
        path: PathBuf,
        /// The tensor at fault, e.g. `val.labels`.
        tensor: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A range of tasks beyond what a task file holds.
    #[error("task file {}: {count} tasks from task {first} requested but it holds {available}", path.display())]
    TaskRange {
        /// The file.
        path: PathBuf,
        /// First task requested.
        first: u64,
        /// Number of tasks requested.
        count: usize,
        /// Tasks in the file (`B`).
        available: usize,
    },
}

impl TaskError {
    /// Whether the user can fix this (a parameter, a task directory or file) rather than it
    /// being an internal failure (the digits data compiled in cannot be read), so command-line
    /// front ends choose their exit code from the error itself.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::DigitsData { .. } => false,
            Self::File(e) => e.is_bad_input(),
            Self::BadParameter { .. }
            | Self::PoolTooSmall { .. }
            | Self::Dir { .. }
            | Self::NoTaskFiles { .. }
            | Self::FileShape { .. }
            | Self::ConfigMismatch { .. }
            | Self::DatasetFile { .. }
            | Self::TaskRange { .. } => true,
        }
    }
}

fn line_prefix(line: Option<usize>) -> String {
    match line {
        Some(l) => format!("line {l}: "),
        None => String::new(),
    }
}
