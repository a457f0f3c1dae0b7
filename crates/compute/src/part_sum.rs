//! What one part of a meta-step computes: the exact sum of its tasks' meta-gradients.

use metasched_engine::FixedSum;

/// A worker's part of a meta-step: the exact sum of its tasks' meta-gradients, with each
/// task's query loss and rates `[count, T, G]`. Exact (fixed point) so that parts reduce to
/// the same bits in any order and for any split.
#[derive(Debug, Clone)]
pub struct PartSum {
    /// Sum of the per-task meta-gradients (not divided by `B`).
    pub sum: FixedSum,
    /// Query loss of each task.
    pub outer_loss: Vec<f32>,
    /// Rates of each task.
    pub lr: Vec<f32>,
}
