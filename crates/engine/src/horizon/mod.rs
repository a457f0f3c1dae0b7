//! Long training runs (`train-mlp`, spec §7-8): windows of a persistent run, their exact
//! (truncated) meta-gradients, PES, and rematerialisation.

pub mod objective;
pub mod pes;
pub mod population;
pub mod rate_rule;
pub mod run_data;
pub mod run_state;
mod segment;
pub mod window;

pub use objective::{Objective, ObjectiveMode};
pub use pes::{PesOutcome, PesPair, pes_window, phi_len};
pub use population::{Estimator, Member, MemberOutcome, RunReport, WindowItem, WindowSpec, complete_run};
pub use rate_rule::RateRule;
pub use run_data::{Batch, RunData};
pub use run_state::RunState;
pub use window::{WindowOutcome, advance, window_meta_gradient};
