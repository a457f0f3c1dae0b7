//! The run configuration stored in every checkpoint under `metasched.config` (spec §5).
//!
//! Field names and spellings are the contract with outside tools, so they follow the spec
//! exactly; unknown keys are ignored on read so later versions can add fields.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::inner_optimizer::InnerOptimizer;

/// Number of scheduler input features per inner step: `ln(loss)`, `ln(||g||)`, `t/T` (spec §3).
pub const FEATURES: usize = 3;

/// Nonlinearity between the learner's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, z)`, with derivative 0 at 0 as in PyTorch.
    Relu,
    /// `tanh(z)`.
    Tanh,
}

/// Loss of the learner on one set of points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean over all `K * d_L` entries of the squared error.
    Mse,
    /// Mean over points of `logsumexp(out) - out[label]`.
    CrossEntropy,
}

/// How the per-group learning-rate logits `z_t` are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// An LSTM cell reading the inner run's features, then a linear head (the default).
    Lstm,
    /// A learned table `z[t, group]` (MAML++'s per-step, per-layer rates).
    Lslr,
    /// No learned scheduler: every rate is `lr_fixed` (plain MAML).
    Fixed,
}

impl SchedulerKind {
    /// The spec's spelling, for messages and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lstm => "lstm",
            Self::Lslr => "lslr",
            Self::Fixed => "fixed",
        }
    }
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "lstm" => Ok(Self::Lstm),
            "lslr" => Ok(Self::Lslr),
            "fixed" => Ok(Self::Fixed),
            other => Err(format!("unknown scheduler kind `{other}` (expected lstm, lslr or fixed)")),
        }
    }
}

/// The learner network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Layer widths `[d_0, ..., d_L]`; at least an input and an output.
    pub layers: Vec<usize>,
    /// Nonlinearity between layers (none after the last).
    pub activation: Activation,
    /// Loss on support and query sets.
    pub loss: LossKind,
}

/// The inner loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InnerConfig {
    /// Number of inner SGD steps `T`.
    pub steps: usize,
    /// Drop the Hessian term of the meta-gradient (`v_t = v_{t+1}`).
    #[serde(default)]
    pub first_order: bool,
    /// Whether meta-training updates the shared initialisation theta (the gradient is always
    /// computed).
    #[serde(default = "default_true")]
    pub learn_init: bool,
    /// The inner optimiser (spec §3.1). Absent in a file means `sgd`, so files written
    /// before it existed read as they always did. (Always written: a skipped field would
    /// shift every later one in the positional binary encoding of the wire.)
    #[serde(default)]
    pub optimizer: InnerOptimizer,
}

fn default_true() -> bool {
    true
}

/// The learning-rate scheduler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// How the rate logits are produced.
    pub kind: SchedulerKind,
    /// LSTM hidden size `H` (used by `lstm` only).
    pub hidden: usize,
    /// Lower bound of every rate.
    pub lr_min: f64,
    /// Upper bound of every rate.
    pub lr_max: f64,
    /// The rate of the `fixed` kind.
    pub lr_fixed: f64,
}

/// The whole contract-level configuration (spec §5), as stored in `metasched.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// The learner.
    pub model: ModelConfig,
    /// The inner loop.
    pub inner: InnerConfig,
    /// The scheduler.
    pub scheduler: SchedulerConfig,
}

fn invalid(field: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidConfig { field: field.to_string(), reason: reason.into() }
}

impl Config {
    /// The default sinusoid problem of the project (spec example): 1-40-40-1 relu, mse, T = 5,
    /// LSTM with H = 20, rates in [0, 0.1].
    pub fn sinusoid_default() -> Self {
        Self {
            model: ModelConfig {
                layers: vec![1, 40, 40, 1],
                activation: Activation::Relu,
                loss: LossKind::Mse,
            },
            inner: InnerConfig {
                steps: 5,
                first_order: false,
                learn_init: true,
                optimizer: InnerOptimizer::Sgd,
            },
            scheduler: SchedulerConfig {
                kind: SchedulerKind::Lstm,
                hidden: 20,
                lr_min: 0.0,
                lr_max: 0.1,
                lr_fixed: 0.01,
            },
        }
    }

    /// Checks every field for values the algorithm cannot run with.
    pub fn validate(&self) -> Result<()> {
        let layers = &self.model.layers;
        if layers.len() < 2 {
            return Err(invalid("model.layers", "needs at least an input and an output width"));
        }
        if let Some(pos) = layers.iter().position(|&d| d == 0) {
            return Err(invalid("model.layers", format!("width {pos} is 0")));
        }
        if self.model.loss == LossKind::CrossEntropy && *layers.last().unwrap_or(&0) < 2 {
            return Err(invalid("model.layers", "cross_entropy needs an output width of at least 2"));
        }
        if self.inner.steps == 0 {
            return Err(invalid("inner.steps", "must be at least 1"));
        }
        self.inner.optimizer.validate()?;
        let s = &self.scheduler;
        if !(s.lr_min.is_finite() && s.lr_min >= 0.0) {
            return Err(invalid("scheduler.lr_min", format!("{} is not a finite value >= 0", s.lr_min)));
        }
        if !(s.lr_max.is_finite() && s.lr_max > s.lr_min) {
            return Err(invalid(
                "scheduler.lr_max",
                format!("{} must be finite and greater than lr_min = {}", s.lr_max, s.lr_min),
            ));
        }
        if !s.lr_fixed.is_finite() {
            return Err(invalid("scheduler.lr_fixed", "must be finite"));
        }
        if s.kind == SchedulerKind::Lstm && s.hidden == 0 {
            return Err(invalid("scheduler.hidden", "the lstm scheduler needs hidden >= 1"));
        }
        Ok(())
    }

    /// Number of linear layers `L`.
    pub fn n_linear(&self) -> usize {
        self.model.layers.len() - 1
    }

    /// Number of parameter groups `G = 2L` (one per tensor).
    pub fn groups(&self) -> usize {
        2 * self.n_linear()
    }

    /// Input width `d_0`.
    pub fn d_in(&self) -> usize {
        self.model.layers[0]
    }

    /// Output width `d_L`.
    pub fn d_out(&self) -> usize {
        *self.model.layers.last().unwrap_or(&0)
    }
}
