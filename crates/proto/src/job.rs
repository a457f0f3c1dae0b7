//! The units of work a coordinator hands to a worker, and what comes back.

use metasched_engine::FixedSum;
use serde::{Deserialize, Serialize};

use crate::task_spec::Split;

/// One piece of work over a contiguous range of task indices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Job {
    /// The meta-gradient of tasks `first .. first + count` of training meta-step `step`,
    /// at parameter version `version`.
    MetaGrad {
        /// Meta-step (tasks are a function of seed, step and index).
        step: u64,
        /// Parameter version the coordinator expects the worker to hold.
        version: u64,
        /// First task index.
        first: usize,
        /// Number of tasks.
        count: usize,
    },
    /// Query losses after the inner loop on tasks `first .. first + count` of evaluation
    /// stream `stream` of `split`, with `shots` support and `query` query points.
    Eval {
        /// Which images / task stream.
        split: Split,
        /// Evaluation stream (plays the role of the step).
        stream: u64,
        /// First task index.
        first: usize,
        /// Number of tasks.
        count: usize,
        /// Support points per task (per class for classification).
        shots: usize,
        /// Query points per task (per class for classification).
        query: usize,
    },
}

/// The result of a [`Job::MetaGrad`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// Meta-step.
    pub step: u64,
    /// Parameter version used.
    pub version: u64,
    /// First task index.
    pub first: usize,
    /// Sum over the range of each task's meta-gradient (not yet divided by B).
    pub sum: FixedSum,
    /// Query loss of each task, in index order.
    pub outer_loss: Vec<f32>,
    /// Rates used by each task, `[count, T, G]`.
    pub lr: Vec<f32>,
    /// Seconds spent computing.
    pub compute_s: f64,
}

/// The result of a [`Job::Eval`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// First task index.
    pub first: usize,
    /// Query loss of each task.
    pub outer_loss: Vec<f32>,
    /// Rates used by each task, `[count, T, G]`.
    pub lr: Vec<f32>,
    /// Query accuracy of each task (empty for regression).
    pub accuracy: Vec<f32>,
    /// Seconds spent computing.
    pub compute_s: f64,
}

/// What a worker sends back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobResult {
    /// A meta-gradient part.
    Step(StepResult),
    /// An evaluation part.
    Eval(EvalResult),
}
