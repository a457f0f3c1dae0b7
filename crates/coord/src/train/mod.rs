//! `meta-coord train`: meta-training on one machine with in-process workers.

pub mod config;
pub mod local_pool;
pub mod metrics;
pub mod outcome;
pub mod pool;
pub mod population;
pub mod progress;
pub mod remote_pool;
pub mod report;
pub mod signals;
pub mod spawn;
pub mod state;
pub mod trainer;
pub mod transport;

pub use config::{TrainArgs, TrainConfig};
pub use outcome::Outcome;
pub use trainer::run;
