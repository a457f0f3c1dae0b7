//! The metasched worker: serves a coordinator's jobs over TCP. The computing itself — task
//! generation from `(seed, step, task index)`, the device, the summed meta-gradient — is
//! [`metasched_compute::Executor`], the same one `meta-coord` runs in its standalone mode; this
//! crate adds what only a separate worker process needs.
//!
//! - [`client`]: connect, authenticate, serve jobs and send heartbeats.
//! - [`group`]: device workers' reduction groups — NCCL on GPUs, a TCP all-reduce
//!   (`metasched_collective::tcp`) as its stand-in on emulated devices — driven by the
//!   coordinator's protocol.

pub mod client;
pub mod error;
pub mod group;

pub use error::{Result, WorkerError};
