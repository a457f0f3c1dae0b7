//! The source that generates a run's tasks where they are computed ([`TaskSource`]), from
//! the specification sent to workers ([`TaskSpec`]).

use metasched_engine::{Config, TaskBatch};
use metasched_tasks::{Digits, FileTasks, OpenedDataset, Sinusoid};

use metasched_proto::{LongRuns, Split, TaskFamily, TaskSpec};

use crate::error::{ComputeError, Result};

/// A task family opened where jobs run, so that tasks are generated there from
/// `(seed, step, task index)` rather than sent.
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
    /// Whole training runs (`train-mlp`): no task batches, windows of runs instead.
    TrainMlp {
        /// The run's specification.
        spec: TaskSpec,
        /// How runs are made and estimated.
        runs: LongRuns,
        /// The dataset, opened once.
        data: OpenedDataset,
    },
}

impl TaskSource {
    /// Opens the family of `spec` for a learner shaped by `config` (checking the widths).
    pub fn open(spec: &TaskSpec, config: &Config) -> Result<Self> {
        let spec = spec.clone();
        let (d_in, d_out) = (config.d_in(), config.d_out());
        let need = |want_in: usize, want_out: usize, what: &str| {
            if d_in != want_in || d_out != want_out {
                Err(ComputeError::BadSpec(format!(
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
            TaskFamily::TrainMlp(runs) => {
                let data = OpenedDataset::open(&runs.data, config)?;
                Self::TrainMlp { runs: runs.clone(), data, spec }
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
            Self::TrainMlp { .. } => {
                return Err(ComputeError::BadSpec(
                    "train-mlp runs have no task batches (they are advanced by windows)".into(),
                ));
            }
        })
    }

    /// The specification this source was opened with.
    pub fn spec(&self) -> &TaskSpec {
        match self {
            Self::Sinusoid { spec, .. }
            | Self::Digits { spec, .. }
            | Self::Files { spec, .. }
            | Self::TrainMlp { spec, .. } => spec,
        }
    }
}
