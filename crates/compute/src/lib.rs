//! Computing a part of a meta-step on a device: given the model configuration, a task
//! specification and the current parameters, an [`Executor`] generates tasks
//! `first .. first + count` of a meta-step from `(seed, step, task index)` — no task data
//! crosses the wire — and returns their summed meta-gradient (an order-independent
//! [`metasched_engine::FixedSum`]) with each task's query loss and rates.
//!
//! Why a crate of its own: the TCP `meta-worker` runs this executor behind a socket, and
//! `meta-coord` runs the very same executor in-process in its standalone mode (`train
//! --device`, `metagrad`/`eval --device`). Keeping it here lets the coordinator compute without
//! depending on the worker binary's crate (its client loop, reduction groups and self-test).
//! The wire types a job is described by ([`metasched_proto::Job`], `StepResult`, `TaskSpec`,
//! …) belong to `metasched-proto`.
//!
//! - [`Device`]: the device a command line names; [`Compute`]: that device opened — the CPU
//!   engine, the CUDA kernels on the CPU emulator, or a GPU through cudarc (after a driver
//!   probe).
//! - [`TaskSource`]: a task family opened for a run; [`Executor`]: runs jobs on both.

pub mod compute;
pub mod device;
pub mod error;
pub mod executor;
pub mod part_sum;
pub mod task_source;

pub use compute::Compute;
pub use device::Device;
pub use error::{ComputeError, Result};
pub use executor::Executor;
/// Where `cuda:N` devices take their kernels from (`--kernels DIR`; default
/// `$METASCHED_KERNELS_DIR`, else NVRTC at run time).
pub use metasched_cuda::kernel_dir::set_kernels_dir;
pub use part_sum::PartSum;
pub use task_source::TaskSource;
