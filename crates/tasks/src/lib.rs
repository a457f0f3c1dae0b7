//! Task families of metasched. Every task is a pure function of `(seed, step, task index)`
//! through a counter-based generator, so any worker can produce any task and no task data
//! needs to cross the network.

pub mod random;
pub mod sinusoid;

pub use random::random_batch;
pub use sinusoid::{Sinusoid, sample_sinusoid};
