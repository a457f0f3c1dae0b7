//! The data of one long training run (`train-mlp`, spec §7): a minibatch per step, filled on
//! demand so that a run of 10,000 steps never holds all its minibatches at once, and the
//! held-out set its validation loss (the meta-objective) is measured on.

use crate::real::Real;
use crate::task::{SetRef, Targets, TargetsRef};

/// An owned set of `n` points (one minibatch, or a whole split), refilled in place step after
/// step so the hot loop does not allocate.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    /// Number of points.
    pub n: usize,
    /// Inputs, `[n, d_0]`.
    pub x: Vec<T>,
    /// Targets: `[n, d_L]` values (mse) or `[n]` labels (cross-entropy).
    pub y: Targets<T>,
}

impl<T: Real> Batch<T> {
    /// An empty set to be filled: class labels when `labels`, else regression values.
    pub fn empty(labels: bool) -> Self {
        let y = if labels { Targets::Labels(Vec::new()) } else { Targets::Values(Vec::new()) };
        Self { n: 0, x: Vec::new(), y }
    }

    /// The set as the engine's borrowed view.
    pub fn as_set(&self) -> SetRef<'_, T> {
        SetRef {
            n: self.n,
            x: &self.x,
            y: match &self.y {
                Targets::Values(v) => TargetsRef::Values(v),
                Targets::Labels(l) => TargetsRef::Labels(l),
            },
        }
    }
}

/// Where one training run's data comes from. Everything is a pure function of the run's
/// identity and the step, so any worker regenerates the same minibatch bits, a retried window
/// sees the same data, and the `--remat` backward pass can refill a minibatch it dropped.
pub trait RunData<T: Real>: Sync {
    /// Fills `out` with the minibatch of global step `t` (`0 <= t < H`).
    fn fill_batch(&self, t: usize, out: &mut Batch<T>);
    /// The held-out set the validation loss (the meta-objective) is measured on.
    fn validation(&self) -> SetRef<'_, T>;
    /// The run's whole training split (the final training loss a report quotes).
    fn train_set(&self) -> SetRef<'_, T>;
}
