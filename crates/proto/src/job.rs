//! The units of work a coordinator hands to a worker, and what comes back.

use metasched_engine::FixedSum;
use metasched_engine::horizon::Member;
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
    /// One window of members `first ..` of a long-run population at meta-step `step`
    /// (`train-mlp`, spec §8), at parameter version `version`.
    Window {
        /// Meta-step (the PES noise is a function of seed, run and step).
        step: u64,
        /// Parameter version the coordinator expects the worker to hold.
        version: u64,
        /// Index of the first member.
        first: usize,
        /// The members, in index order.
        members: Vec<MemberJob>,
    },
}

/// One member of a long-run population as the coordinator hands it out (spec §8): the
/// coordinator keeps every member's state, so a worker that dies loses nothing — the job is
/// sent again with the same state and comes back with the same bits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberJob {
    /// The member's slot in the population.
    pub slot: u64,
    /// Its run identity in the `train` stream (a new one each time the slot restarts).
    pub run: u64,
    /// Steps to advance with no gradient before the window (a new population's stagger).
    pub burn_in: usize,
    /// Its state; `None`: a fresh run (the worker initialises it from the run's seed).
    pub state: Option<Member<f32>>,
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

/// The result of a [`Job::Window`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    /// Meta-step.
    pub step: u64,
    /// Parameter version used.
    pub version: u64,
    /// First member index.
    pub first: usize,
    /// Sum over the members of their gradient estimates (not yet divided by `N`).
    pub sum: FixedSum,
    /// Each member after its window, in index order.
    pub members: Vec<Member<f32>>,
    /// Each member's window objective.
    pub objective: Vec<f32>,
    /// Each member's mean rate per group over its window, `[count, G]`.
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
    /// A window of a long-run population.
    Window(WindowResult),
}
