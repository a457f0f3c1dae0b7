//! Which tasks a run trains on, as the coordinator tells its workers: a family and sizes;
//! every task is then a function of (seed, step, task index), so no task data is sent.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
