//! How a training run ended: what `train` returns and `main` turns into an exit code.

/// How a training run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// All steps done; the final evaluation's mean query loss and 95% half-width.
    Finished {
        /// Mean query loss on the final evaluation tasks.
        mean: f64,
        /// Half-width of its 95% confidence interval.
        ci95: f64,
    },
    /// Stopped by a signal after saving a checkpoint at this step.
    Interrupted {
        /// The step saved.
        step: u64,
    },
}
