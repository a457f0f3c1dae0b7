//! The metasched worker: given the model configuration, a task specification and the current
//! parameters, it generates tasks `first .. first + count` of a meta-step from
//! `(seed, step, task index)` — no task data crosses the wire — and returns their summed
//! meta-gradient (an order-independent [`metasched_engine::FixedSum`]) with each task's query
//! loss and rates. The coordinator reduces the parts in any order and gets bitwise the same
//! result for any number of workers.
//!
//! The in-process pool of `meta-coord train` runs [`Executor`]s on threads; the TCP
//! `meta-worker` runs the same executor behind a socket.

pub mod client;
pub mod error;
pub mod executor;
pub mod task_source;

pub use error::{Result, WorkerError};
pub use executor::Executor;
pub use metasched_proto::{EvalResult, Job, JobResult, StepResult};
pub use task_source::{Split, TaskFamily, TaskSource, TaskSpec};
