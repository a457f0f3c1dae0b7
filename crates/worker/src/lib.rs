//! The metasched worker: given the model configuration, a task specification and the current
//! parameters, it generates tasks `first .. first + count` of a meta-step from
//! `(seed, step, task index)` — no task data crosses the wire — and returns their summed
//! meta-gradient (an order-independent [`metasched_engine::FixedSum`]) with each task's query
//! loss and rates. The coordinator reduces the parts in any order and gets bitwise the same
//! result for any number of workers.
//!
//! The in-process pool of `meta-coord train` runs [`Executor`]s on threads; the TCP
//! `meta-worker` runs the same executor behind a socket.
//!
//! - [`compute`]: where jobs run — the CPU engine, the CUDA kernels on the CPU emulator, or a
//!   GPU through cudarc (opened after a driver probe), shared with `meta-coord --device`.
//! - [`group`]: device workers' reduction groups — NCCL on GPUs, a TCP all-reduce
//!   (`metasched_collective::tcp`) as its stand-in on emulated devices — driven by the
//!   coordinator's protocol.

pub mod client;
pub mod compute;
pub mod error;
pub mod executor;
pub mod group;
pub mod task_source;

pub use compute::{Compute, Device, PartSum};
pub use error::{Result, WorkerError};
pub use executor::Executor;
pub use metasched_proto::{EvalResult, Job, JobResult, StepResult};
pub use task_source::{Split, TaskFamily, TaskSource, TaskSpec};
