//! Which tasks a run trains on, as sent to workers ([`TaskSpec`]), and the worker-side source
//! that generates them ([`TaskSource`]).

use std::path::PathBuf;
use std::str::FromStr;

use metasched_engine::{Config, TaskBatch};
use metasched_tasks::{Digits, FileTasks, Sinusoid};
use serde::{Deserialize, Serialize};

use crate::error::{Result, WorkerError};

pub use metasched_tasks::Split;

/// A task family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskFamily {
    /// MAML's sinusoid regression.
    Sinusoid,
    /// N-way K-shot classification of the 8×8 handwritten digits.
    Digits,
    /// A directory of task-batch files, used in order.
    File {
        /// The directory.
        dir: PathBuf,
    },
}

impl FromStr for TaskFamily {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "sinusoid" => Ok(Self::Sinusoid),
            "digits" => Ok(Self::Digits),
            _ => match s.strip_prefix("file:") {
                Some(dir) if !dir.is_empty() => Ok(Self::File { dir: PathBuf::from(dir) }),
                _ => Err(format!("unknown task family `{s}` (expected sinusoid, digits or file:PATH)")),
            },
        }
    }
}

/// Everything a worker needs to generate any task of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Task family.
    pub family: TaskFamily,
    /// Support points per task (per class for digits).
    pub shots: usize,
    /// Query points per task (per class for digits).
    pub query: usize,
    /// Classes per task (digits).
    pub ways: usize,
    /// Seed of every task.
    pub seed: u64,
}

/// A task family opened on a worker.
#[derive(Debug)]
pub enum TaskSource {
    /// Sinusoid tasks.
    Sinusoid {
        /// The run's specification.
        spec: TaskSpec,
        /// The family.
        family: Sinusoid,
    },
    /// Digits tasks.
    Digits {
        /// The run's specification.
        spec: TaskSpec,
        /// The embedded data set.
        data: &'static Digits,
    },
    /// Tasks read from files.
    Files {
        /// The run's specification.
        spec: TaskSpec,
        /// The files.
        files: FileTasks,
    },
}

impl TaskSource {
    /// Opens the family of `spec` for a learner shaped by `config` (checking the widths).
    pub fn open(spec: &TaskSpec, config: &Config) -> Result<Self> {
        let spec = spec.clone();
        let (d_in, d_out) = (config.d_in(), config.d_out());
        let need = |want_in: usize, want_out: usize, what: &str| {
            if d_in != want_in || d_out != want_out {
                Err(WorkerError::BadSpec(format!(
                    "{what} tasks need a learner of widths {want_in} → … → {want_out}, the model has {d_in} → … → {d_out}"
                )))
            } else {
                Ok(())
            }
        };
        Ok(match &spec.family {
            TaskFamily::Sinusoid => {
                need(1, 1, "sinusoid")?;
                Self::Sinusoid { spec, family: Sinusoid::default() }
            }
            TaskFamily::Digits => {
                need(64, spec.ways, "digits")?;
                Self::Digits { data: Digits::load()?, spec }
            }
            TaskFamily::File { dir } => {
                let files = FileTasks::open(dir, config)?;
                Self::Files { spec, files }
            }
        })
    }

    /// Training tasks `first .. first + count` of meta-step `step`.
    pub fn sample(&self, split: Split, step: u64, first: usize, count: usize) -> Result<TaskBatch<f32>> {
        let s = self.spec();
        self.sample_with(split, step, first, count, s.shots, s.query)
    }

    /// Tasks of `split` with explicit support and query sizes (evaluation may differ from
    /// training). File tasks have no split and fixed sizes: they are used as they are.
    pub fn sample_with(
        &self,
        split: Split,
        step: u64,
        first: usize,
        count: usize,
        shots: usize,
        query: usize,
    ) -> Result<TaskBatch<f32>> {
        Ok(match self {
            Self::Sinusoid { spec, family } => {
                family.sample_split(split, spec.seed, step, first as u64, count, shots, query)
            }
            Self::Digits { spec, data } => {
                data.sample(split, spec.seed, step, first as u64, count, spec.ways, shots, query)?
            }
            Self::Files { files, .. } => files.sample(step, first as u64, count)?,
        })
    }

    /// The specification this source was opened with.
    pub fn spec(&self) -> &TaskSpec {
        match self {
            Self::Sinusoid { spec, .. } | Self::Digits { spec, .. } | Self::Files { spec, .. } => spec,
        }
    }
}
