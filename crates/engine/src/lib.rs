//! The CPU numerical engine of metasched (spec `docs/SPEC.md` §2-4).
//!
//! It runs the inner SGD loop of a learner whose per-group learning rates come from a
//! scheduler, and computes the exact meta-gradient through the whole unroll by hand-written
//! reverse mode, with exact Hessian-vector products (Pearlmutter's R-operator). It is generic
//! over the float type so the same code runs in f32 (production) and f64 (reference checks),
//! and it is the reference every other backend is tested against.

pub mod config;
pub mod error;
pub mod layout;
pub mod params;
pub mod real;
pub mod task;

pub use config::{
    Activation, Config, FEATURES, InnerConfig, LossKind, ModelConfig, SchedulerConfig, SchedulerKind,
};
pub use error::{EngineError, Result};
pub use layout::ThetaLayout;
pub use params::{LstmParams, Params, Slot, SlotSpec};
pub use real::Real;
pub use task::{SetRef, Targets, TargetsRef, TaskBatch, TaskRef};

pub mod activation;
pub mod adam;
pub mod fixed_sum;
pub mod horizon;
pub mod init;
pub mod inner_loop;
pub mod inner_optimizer;
pub mod inner_passes;
pub mod lane_linalg;
pub mod lane_mlp;
pub mod lane_pool;
pub mod lane_scheduler;
pub mod linalg;
pub mod loss;
pub mod lstm_cell;
pub mod metagrad;
pub mod mlp;
pub mod rng;
pub mod scheduler;
pub mod task_group;
pub mod task_pool;
mod theta_trace;
pub mod wide_kernels;

pub use adam::{Adam, AdamConfig, UpdateMask, clip_grad_norm, grad_norm};
pub use fixed_sum::FixedSum;
pub use inner_loop::{TaskOutcome, evaluate_task, run_task, task_meta_gradient};
pub use inner_optimizer::InnerOptimizer;
pub use metagrad::{Engine, Evaluation, MetaGradient};
