//! Rates from outside the learned scheduler: the hand-made schedules a learned one is held
//! against (constant, cosine, step decay, hypergradient descent), run through the very same
//! training loop so that every method sees the same data, init and optimiser.

use crate::config::FEATURES;
use crate::real::Real;

/// A schedule that sets the rates of step `t` from what the run shows it.
pub trait RateRule<T: Real> {
    /// Writes the rates of global step `t` (one per group) into `out`. `x` are the step's
    /// scheduler features (spec §3), `g` its gradient and `prev_d` the previous step's
    /// update direction (`None` at a run's first step): what hypergradient descent needs.
    fn rates(&mut self, t: usize, x: &[T; FEATURES], g: &[T], prev_d: Option<&[T]>, out: &mut [T]);
}
