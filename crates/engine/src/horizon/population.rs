//! A population of long runs advanced one window each, in parallel (spec §8): what a worker
//! computes for one part of a long-horizon meta-step. Each member is computed by one thread
//! from start to end and the gradients are summed in fixed point, so the result is the same
//! bits whatever the thread count or the split of the population into parts.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::Result;
use crate::fixed_sum::FixedSum;
use crate::metagrad::Engine;
use crate::params::Params;
use crate::rng::CounterRng;

use super::objective::Objective;
use super::pes::{PesPair, pes_window};
use super::run_data::RunData;
use super::run_state::RunState;
use super::window::{WindowOutcome, advance, window_meta_gradient};

/// How the meta-gradient of a window is estimated (spec §8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Estimator {
    /// The exact gradient through the whole run (every window is the whole run).
    Full,
    /// The exact gradient through the window only.
    Tbptt,
    /// Persistent evolution strategies with antithetic pairs, perturbation scale `sigma`.
    Pes {
        /// `σ` of the perturbations `ε ~ N(0, σ² I)`.
        sigma: f64,
    },
}

impl Estimator {
    /// The spelling of `--estimator`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Tbptt => "tbptt",
            Self::Pes { .. } => "pes",
        }
    }
}

/// One member of a population: a run (`full`, `tbptt`) or an antithetic pair (`pes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Member<T> {
    /// A run.
    Run(RunState<T>),
    /// A PES pair.
    Pair(PesPair<T>),
}

impl<T: crate::real::Real> Member<T> {
    /// The global step the member's next window starts at.
    pub fn step(&self) -> usize {
        match self {
            Self::Run(r) => r.step,
            Self::Pair(p) => p.plus.step,
        }
    }

    /// A member at step 0 with the learner `theta`, of the kind `estimator` needs.
    pub fn fresh(config: &Config, params: &Params<T>, estimator: Estimator, theta: Vec<T>) -> Self {
        match estimator {
            Estimator::Pes { .. } => Self::Pair(PesPair::fresh(config, params, theta)),
            Estimator::Full | Estimator::Tbptt => Self::Run(RunState::fresh(config, theta)),
        }
    }

    /// Checks the member against `config` and `estimator` (a member read from a file or from
    /// a worker's answer is outside data).
    pub fn validate(&self, config: &Config, params: &Params<T>, estimator: Estimator) -> Result<()> {
        match (self, estimator) {
            (Self::Run(r), Estimator::Full | Estimator::Tbptt) => r.validate(config),
            (Self::Pair(p), Estimator::Pes { .. }) => p.validate(config, params),
            _ => Err(crate::error::EngineError::InvalidTaskData {
                name: "state".into(),
                reason: format!("a member of the wrong kind for the `{}` estimator", estimator.as_str()),
            }),
        }
    }
}

/// One member's work: its data, its state, the steps to advance without gradient first (a
/// new population's stagger) and the stream its PES noise comes from.
pub struct WindowItem<'a> {
    /// The member's run data.
    pub data: Box<dyn RunData<f32> + Send + 'a>,
    /// Its state (advanced in place).
    pub member: Member<f32>,
    /// Steps to advance with no gradient before the window.
    pub burn_in: usize,
    /// The PES noise of this window.
    pub noise: CounterRng,
}

/// What one member's window produced.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberOutcome {
    /// The member after the window.
    pub member: Member<f32>,
    /// The window's objective (for a pair, the mean of its two runs').
    pub objective: f32,
    /// The window (of the `+` run, for a pair).
    pub window: WindowOutcome<f32>,
}

/// Everything a population step needs besides the members.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    /// How gradients are estimated.
    pub estimator: Estimator,
    /// The objective's windows (for `full`, one window of `H`).
    pub objective: Objective,
    /// Rematerialise the backward pass (`full`, `tbptt`).
    pub remat: bool,
}

fn one(
    config: &Config,
    params: &Params<f32>,
    spec: &WindowSpec,
    item: WindowItem<'_>,
    grad: &mut Params<f32>,
) -> Result<MemberOutcome> {
    let WindowItem { data, mut member, burn_in, mut noise } = item;
    let data: &dyn RunData<f32> = &*data;
    if burn_in > 0 {
        match &mut member {
            Member::Run(r) => {
                advance(config, params, r, data, burn_in, None, None, None)?;
            }
            Member::Pair(p) => {
                advance(config, params, &mut p.plus, data, burn_in, None, None, None)?;
                advance(config, params, &mut p.minus, data, burn_in, None, None, None)?;
            }
        }
    }
    let steps = spec.objective.window_len(member.step());
    let (objective, window) = match (&mut member, spec.estimator) {
        (Member::Run(r), _) => {
            let w =
                window_meta_gradient(grad, config, params, r, data, steps, &spec.objective, spec.remat, 1.0)?;
            (w.objective, w)
        }
        (Member::Pair(p), Estimator::Pes { sigma }) => {
            let o =
                pes_window(grad, config, params, p, data, steps, &spec.objective, sigma, &mut noise, 1.0)?;
            (0.5 * (o.plus.objective + o.minus.objective), o.plus)
        }
        (Member::Pair(_), _) => {
            return Err(crate::error::EngineError::InvalidTaskData {
                name: "state".into(),
                reason: "a PES pair given to a gradient estimator".into(),
            });
        }
    };
    Ok(MemberOutcome { member, objective, window })
}

impl Engine {
    /// Advances every member of `items` by one window and returns the fixed-point sum of
    /// their (unscaled) gradient estimates and each member's outcome in item order.
    pub fn window_sum(
        &self,
        config: &Config,
        params: &Params<f32>,
        items: Vec<WindowItem<'_>>,
        spec: &WindowSpec,
    ) -> Result<(FixedSum, Vec<MemberOutcome>)> {
        config.validate()?;
        params.validate(config)?;
        let len: usize = params.buffers().iter().map(|b| b.len()).sum();
        let results: Vec<Result<(Params<f32>, MemberOutcome)>> = self.install(|| {
            items
                .into_par_iter()
                .map(|item| {
                    let mut g = params.zeros_like();
                    one(config, params, spec, item, &mut g).map(|o| (g, o))
                })
                .collect()
        });
        let mut sum = FixedSum::zeros(len);
        let mut outcomes = Vec::with_capacity(results.len());
        for r in results {
            let (g, o) = r?;
            sum.add_params(&g);
            outcomes.push(o);
        }
        Ok((sum, outcomes))
    }
}

/// How one whole run ended (evaluation of a scheduler on held-out runs).
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// `L_val(theta_H)`.
    pub val_loss: f32,
    /// Accuracy on the held-out set at `theta_H` (classification only).
    pub val_accuracy: Option<f32>,
    /// Rates of every step, `[H, G]`.
    pub lr: Vec<f32>,
    /// Minibatch loss of every step, `[H]`.
    pub train_loss: Vec<f32>,
}

/// Runs one whole run from `theta` with the learned scheduler and reports how it ended.
pub fn complete_run(
    config: &Config,
    params: &Params<f32>,
    data: &dyn RunData<f32>,
    theta: Vec<f32>,
) -> Result<RunReport> {
    let horizon = config.inner.steps;
    let objective = Objective { window: horizon, mode: super::objective::ObjectiveMode::End, horizon };
    let mut state = RunState::fresh(config, theta);
    let out = advance(config, params, &mut state, data, horizon, Some(&objective), None, None)?;
    let mlp = crate::mlp::Mlp::new(config);
    let val = data.validation();
    let mut cache = mlp.cache(val.n);
    mlp.forward(&mut cache, &state.theta, val.x);
    Ok(RunReport {
        val_loss: out.objective,
        val_accuracy: mlp.accuracy_of_output(&cache, val.y),
        lr: out.lr,
        train_loss: out.train_loss,
    })
}

impl Engine {
    /// [`complete_run`] of every `(data, theta)` in parallel, reports in item order.
    pub fn complete_runs(
        &self,
        config: &Config,
        params: &Params<f32>,
        items: Vec<(Box<dyn RunData<f32> + Send + '_>, Vec<f32>)>,
    ) -> Result<Vec<RunReport>> {
        config.validate()?;
        params.validate(config)?;
        self.install(|| {
            items.into_par_iter().map(|(data, theta)| complete_run(config, params, &*data, theta)).collect()
        })
    }
}
