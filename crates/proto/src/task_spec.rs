//! Which tasks a run trains on, as the coordinator tells its workers: a family and sizes;
//! every task is then a function of (seed, step, task index), so no task data is sent.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use metasched_engine::horizon::{Estimator, Objective, ObjectiveMode, WindowSpec};
pub use metasched_tasks::Split;
use metasched_tasks::TrainMlpData;

/// A task family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Whole training runs of a fresh learner (spec §7-8), advanced a window per meta-step.
    TrainMlp(LongRuns),
}

/// How the runs of a `train-mlp` family are made and their gradients estimated: everything a
/// worker needs besides the members' states, which travel with each job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LongRuns {
    /// Where the runs' data comes from.
    pub data: TrainMlpData,
    /// Minibatch size `b`.
    pub batch: usize,
    /// The gradient estimator.
    pub estimator: Estimator,
    /// The objective's windows (`W`, end or mean, the horizon `H`).
    pub window: usize,
    /// End of window or mean over it.
    pub objective: ObjectiveMode,
    /// Rematerialise the backward pass (changes no bit, only memory and time).
    pub remat: bool,
}

impl LongRuns {
    /// The objective of runs of horizon `horizon` (for `full`, one window of `H`).
    pub fn objective(&self, horizon: usize) -> Objective {
        let window = if self.estimator == Estimator::Full { horizon } else { self.window };
        Objective { window, mode: self.objective, horizon }
    }

    /// What the engine needs to advance a population.
    pub fn window_spec(&self, horizon: usize) -> WindowSpec {
        WindowSpec { estimator: self.estimator, objective: self.objective(horizon), remat: self.remat }
    }
}

impl FromStr for TaskFamily {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "sinusoid" => Ok(Self::Sinusoid),
            "digits" => Ok(Self::Digits),
            "train-mlp" => Err("train-mlp runs are described by their own settings (--dataset, --estimator, ...), not by a name alone".into()),
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
