//! Where a long run's meta-objective is measured (spec §8): the validation loss at the end of
//! every window of `W` steps, or its mean over every step of the window.

use serde::{Deserialize, Serialize};

/// How a window's validation losses make its objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectiveMode {
    /// `L_val(theta)` at the window's last step.
    End,
    /// The mean of `L_val(theta_t)` over the window's steps `t0+1 ..= t0+n`.
    Mean,
}

impl std::str::FromStr for ObjectiveMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "end" => Ok(Self::End),
            "mean" => Ok(Self::Mean),
            other => Err(format!("unknown objective `{other}` (expected end or mean)")),
        }
    }
}

/// The objective's windows: `W` steps each, aligned to step 0, the last one cut at `H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Objective {
    /// Window length `W`.
    pub window: usize,
    /// End or mean.
    pub mode: ObjectiveMode,
    /// The horizon `H`.
    pub horizon: usize,
}

impl Objective {
    /// Number of windows `K = ⌈H / W⌉`.
    pub fn windows(&self) -> usize {
        self.horizon.div_ceil(self.window)
    }

    /// The weight of `L_val(theta_t)` (`1 <= t <= H`) in its window's objective, if any.
    pub fn weight(&self, t: usize) -> Option<f64> {
        if t == 0 || t > self.horizon {
            return None;
        }
        let start = (t - 1) / self.window * self.window;
        let end = (start + self.window).min(self.horizon);
        match self.mode {
            ObjectiveMode::End => (t == end).then_some(1.0),
            ObjectiveMode::Mean => Some(1.0 / (end - start) as f64),
        }
    }

    /// The objective of validation losses `(t, L_val(theta_t))` measured at this objective's
    /// points, summed in step order (so that however a window was cut into segments, the
    /// value is the same bits).
    pub fn value<T: crate::real::Real>(&self, val_loss: &[(usize, T)]) -> T {
        val_loss.iter().fold(T::zero(), |acc, &(t, l)| acc + T::of(self.weight(t).unwrap_or(0.0)) * l)
    }

    /// The length of the window starting at `t0` (a multiple of `W`).
    pub fn window_len(&self, t0: usize) -> usize {
        self.window.min(self.horizon.saturating_sub(t0))
    }
}
