//! Task families of metasched. Every sampled task is a pure function of
//! `(seed, split, step, task index)` through a counter-based generator, so any worker can
//! produce any task and no task data needs to cross the network.
//!
//! - [`Sinusoid`]: MAML's sinusoid regression;
//! - [`Digits`]: N-way K-shot classification on the real 8×8 handwritten digits, embedded in
//!   the binary, with a fixed meta-train / meta-test split of the images;
//! - [`FileTasks`]: the `file:PATH` family, a directory of task-batch files used in order;
//! - [`train_mlp`]: long training runs of a fresh learner on a dataset (`train-mlp`, spec
//!   §7.1): [`TrainMlpData`], [`OpenedDataset`], [`TrainRun`];
//! - [`random_batch`]: random problems of any shape, for gradient checks and benchmarks.

pub mod digits;
pub mod error;
pub mod files;
pub mod random;
pub mod sinusoid;
pub mod split;
pub mod train_mlp;

pub use digits::{CLASSES, Digits, PIXELS};
pub use error::{Result, TaskError};
pub use files::{DEFAULT_CACHE_BYTES, FileTasks, slice_batch};
pub use random::random_batch;
pub use sinusoid::{Sinusoid, sample_sinusoid};
pub use split::Split;
pub use train_mlp::{FileDataset, OpenedDataset, RunContent, RunStream, TrainMlpData, TrainRun, run_seed};
