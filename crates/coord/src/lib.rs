//! The metasched coordinator: the `meta-coord` command line and meta-training.
//!
//! The coordinator owns theta, phi and the outer optimiser; each meta-step it hands every
//! worker the current parameters and a range of task indices, reduces their meta-gradients
//! (order-independently, so any number of workers gives the same bits) and updates.

pub mod cli;
pub mod commands;
pub mod device;
pub mod exit;
pub mod settings;
pub mod train;
