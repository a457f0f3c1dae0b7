//! Long training runs (`train-mlp`, spec §7-8): windows of a persistent run, their exact
//! (truncated) meta-gradients, PES, and rematerialisation.

pub mod run_data;

pub use run_data::{Batch, RunData};
