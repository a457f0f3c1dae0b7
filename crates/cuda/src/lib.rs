//! metasched's CUDA backend.
//!
//! The kernels are CUDA C++ sources in `kernels/` (one family per file, `extern "C"
//! __global__ <op>_<pass>_f32` entry points, each the twin of a function of
//! `metasched_engine` with the same argument order, outputs first). This crate
//!
//! - lists them ([`KernelId`], [`kernel_source`]) with their launch contracts (parameter
//!   types, buffer lengths, launch shapes: [`KernelId::check`], [`KernelId::default_config`])
//!   and costs, one module per kernel file ([`kernels::mlp`], ...);
//! - with the `checks` feature, checks every kernel against its CPU twin on any runtime
//!   ([`checks`]: what `meta-worker selftest` and the tests run; the coordinator does not
//!   need it);
//! - defines the device interface backends implement ([`Runtime`]: allocation, copies, typed
//!   launches);
//! - implements it on the CPU ([`EmuRuntime`]): the build script compiles the same kernel
//!   sources with g++ against `kernels/emu/cuda_emu.h` and a fiber-based runtime that runs
//!   every CUDA thread as a fiber and reports divergent barriers, warp collectives over
//!   exited lanes and deadlocks as errors, so CI executes every kernel without a GPU;
//! - drives the learner's kernels layer by layer ([`learner::DeviceMlp`]: forward, loss and
//!   gradient, Hessian-vector product, batched over tasks);
//! - computes the whole meta-gradient of a task batch on a device
//!   ([`device_metagrad::device_meta_gradient`], the twin of `Engine::meta_gradient`).
//!
//! - finds NVRTC and the CUDA driver without letting cudarc panic when they are missing
//!   ([`probe`]), and compiles the kernels to PTX with NVRTC, cached per file and
//!   architecture, with `ptxas` resource reports ([`compile`]).
//!
//! - implements [`Runtime`] on a real GPU through cudarc ([`CudaRuntime`], constructed only
//!   after the probe found the driver), and the `metasched_collective::Collective` all-reduce
//!   through NCCL ([`NcclCollective`]). Both need the `cuda` feature (on by default); without
//!   it they are stand-ins whose constructors return [`CudaError::FeatureDisabled`], so
//!   CPU-only builds need no CUDA bindings.

#[cfg(feature = "checks")]
pub mod checks;
pub mod compile;
pub mod counters;
#[cfg(not(feature = "cuda"))]
mod cuda_disabled;
#[cfg(feature = "cuda")]
pub mod cudarc_runtime;
pub mod device_metagrad;
pub mod emu;
pub mod emu_graph;
pub mod error;
mod ffi;
pub mod graph;
pub mod graph_step;
pub mod kernel_dir;
pub mod kernels;
pub mod learner;
pub mod nccl;
pub mod nccl_ffi;
pub mod pool;
pub mod probe;
pub mod runtime;

pub use counters::Counters;
#[cfg(not(feature = "cuda"))]
pub use cuda_disabled::{CudaBuffer, CudaRuntime};
#[cfg(feature = "cuda")]
pub use cudarc_runtime::{CudaBuffer, CudaGraphExec, CudaRuntime};
pub use device_metagrad::{
    DeviceGradientSum, device_evaluate, device_meta_gradient, device_meta_gradient_sum,
};
pub use emu::{EmuBuffer, EmuRuntime, Schedule};
pub use emu_graph::EmuGraph;
pub use error::{CudaError, Result};
pub use graph::{BufferId, Footprint, Identified};
pub use graph_step::{GraphStats, MetaStepGraphs, device_meta_gradient_sum_graphed};
pub use kernels::{
    ArgValue, BlockShape, Family, GridNeed, KernelId, Param, ParamType, Requirements, kernel_source,
};
pub use nccl::NcclCollective;
pub use pool::BufferPool;
pub use runtime::{Arg, DeviceBuffer, Dim3, Element, LaunchConfig, Runtime};
