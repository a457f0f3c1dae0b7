//! The metasched coordinator: the `meta-coord` command line and meta-training.
//!
//! The coordinator owns theta, phi and the outer optimiser; each meta-step it hands every
//! worker the current parameters and a range of task indices, reduces their meta-gradients
//! (order-independently, so any number of workers gives the same bits) and updates.
//!
//! Workers are `meta-worker` processes over TCP, or — the standalone mode — threads of this
//! process running the same [`metasched_compute::Executor`]; the coordinator opens a device
//! (GPU or emulator) only when the user asks for it (`--device`, see [`device`]).

pub mod cli;
pub mod commands;
pub mod device;
pub mod exit;
pub mod resources;
pub mod settings;
pub mod stats;
pub mod train;
