//! The `train-mlp` task family (spec §7): each task is one ordinary training run of a freshly
//! initialised learner for `H` steps on minibatches of a dataset's training split, its
//! meta-objective the loss on a held-out split. This module is the data side (spec §7.1):
//!
//! - [`TrainMlpData`]: which dataset (embedded digits, random sinusoids, a user file), the
//!   description that crosses the wire;
//! - [`OpenedDataset`]: that dataset loaded and checked once per process;
//! - [`TrainRun`]: one run's data, a [`RunData`](metasched_engine::horizon::RunData) whose
//!   minibatch of step `t` is a pure function of `(seed, stream, run, t)`;
//! - [`run_seed`] / [`RunStream`]: run identities, disjoint between meta-training, baseline
//!   tuning and held-out test runs;
//! - [`EpochPermutation`]: the stateless per-epoch shuffle of the training split.

pub mod dataset;
pub mod digits_runs;
pub mod file_dataset;
pub mod permutation;
pub mod run;
pub mod sinusoid_runs;
pub mod stream;

pub use dataset::{DEFAULT_TRAIN_POINTS, DEFAULT_VAL_POINTS, OpenedDataset, TrainMlpData};
pub use digits_runs::{DIGITS_VAL_PERCENT, DIGITS_VAL_SEED};
pub use file_dataset::{DATASET_TENSORS, FILE_SPLIT_SEED, FILE_VAL_PERCENT, FileDataset};
pub use permutation::{EpochPermutation, ROUNDS, for_each_batch_index};
pub use run::{RunContent, TrainRun};
pub use stream::{CONTENT_STREAM, PERMUTATION_STREAM, RunStream, TRAIN_MLP_TAG, run_seed};
