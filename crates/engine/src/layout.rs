//! Where each learner tensor lives inside the flat parameter vector theta (spec §2).

use crate::config::Config;

/// Offsets and shapes of the learner's tensors in the flat theta vector: group `2l` is
/// `layers.l.weight` (`[d_{l+1}, d_l]`), group `2l+1` is `layers.l.bias` (`[d_{l+1}]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThetaLayout {
    /// Layer widths `[d_0, ..., d_L]`.
    pub widths: Vec<usize>,
    /// Start of each group in theta, plus a final entry equal to the total length.
    pub offsets: Vec<usize>,
}

impl ThetaLayout {
    /// The layout of a configuration's learner.
    pub fn new(config: &Config) -> Self {
        Self::from_widths(&config.model.layers)
    }

    /// The layout of an MLP with the given widths.
    pub fn from_widths(widths: &[usize]) -> Self {
        let mut offsets = vec![0];
        let mut at = 0;
        for w in widths.windows(2) {
            at += w[0] * w[1];
            offsets.push(at);
            at += w[1];
            offsets.push(at);
        }
        Self { widths: widths.to_vec(), offsets }
    }

    /// Number of linear layers `L`.
    pub fn n_linear(&self) -> usize {
        self.widths.len() - 1
    }

    /// Number of groups `G`.
    pub fn groups(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Total number of learner parameters.
    pub fn len(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Whether the learner has no parameters (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index range of group `k` in theta.
    pub fn group(&self, k: usize) -> std::ops::Range<usize> {
        self.offsets[k]..self.offsets[k + 1]
    }

    /// Range of `layers.l.weight`.
    pub fn weight(&self, l: usize) -> std::ops::Range<usize> {
        self.group(2 * l)
    }

    /// Range of `layers.l.bias`.
    pub fn bias(&self, l: usize) -> std::ops::Range<usize> {
        self.group(2 * l + 1)
    }

    /// Checkpoint name and shape of group `k` (without the `theta.` prefix).
    pub fn group_tensor(&self, k: usize) -> (String, Vec<usize>) {
        let l = k / 2;
        if k.is_multiple_of(2) {
            (format!("layers.{l}.weight"), vec![self.widths[l + 1], self.widths[l]])
        } else {
            (format!("layers.{l}.bias"), vec![self.widths[l + 1]])
        }
    }
}
