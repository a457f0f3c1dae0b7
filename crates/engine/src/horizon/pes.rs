//! Persistent evolution strategies (PES, Vicol et al. 2021) over the windows of long runs
//! (spec §8): an unbiased estimate of the gradient of the sum of the windows' objectives
//! without backpropagating through any step, from antithetic pairs of runs with phi ± ε whose
//! perturbations accumulate over the windows of the run (that sum is what removes the
//! truncation bias).

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::params::Params;
use crate::real::Real;
use crate::rng::CounterRng;

use super::objective::Objective;
use super::run_data::RunData;
use super::run_state::RunState;
use super::window::{WindowOutcome, advance};

/// One antithetic pair of a PES population: the run with `phi + ε` and the one with
/// `phi − ε` (same data, same init), and the perturbations `ξ = Σ ε` they accumulated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PesPair<T> {
    /// The `+` particle.
    pub plus: RunState<T>,
    /// The `−` particle.
    pub minus: RunState<T>,
    /// `ξ`, the sum of the `+` particle's perturbations, phi values in canonical order.
    pub xi: Vec<T>,
}

/// Number of phi values of `params` (everything but theta).
pub fn phi_len<T: Real>(params: &Params<T>) -> usize {
    params.buffers().iter().skip(1).map(|b| b.len()).sum()
}

impl<T: Real> PesPair<T> {
    /// A pair at step 0 from the learner `theta`, no perturbation accumulated.
    pub fn fresh(config: &Config, params: &Params<T>, theta: Vec<T>) -> Self {
        let run = RunState::fresh(config, theta);
        Self { plus: run.clone(), minus: run, xi: vec![T::zero(); phi_len(params)] }
    }

    /// Checks both particles, their common step and `ξ`'s length and values.
    pub fn validate(&self, config: &Config, params: &Params<T>) -> Result<()> {
        self.plus.validate(config)?;
        self.minus.validate(config)?;
        let bad = |reason: String| EngineError::InvalidTaskData { name: "state.xi".into(), reason };
        if self.plus.step != self.minus.step {
            return Err(bad(format!("particles at steps {} and {}", self.plus.step, self.minus.step)));
        }
        if self.xi.len() != phi_len(params) {
            return Err(bad(format!("holds {} values, expected {}", self.xi.len(), phi_len(params))));
        }
        if let Some(pos) = self.xi.iter().position(|x| !x.is_finite()) {
            return Err(bad(format!("non-finite value at index {pos}")));
        }
        Ok(())
    }
}

/// `params` with `sign · eps` added to every phi value.
fn perturbed<T: Real>(params: &Params<T>, eps: &[T], sign: T) -> Params<T> {
    let mut out = params.clone();
    let mut e = eps.iter();
    for b in out.buffers_mut().into_iter().skip(1) {
        for (x, &d) in b.iter_mut().zip(&mut e) {
            *x += sign * d;
        }
    }
    out
}

/// What a PES window produced: both particles' outcomes.
#[derive(Debug, Clone, PartialEq)]
pub struct PesOutcome<T> {
    /// The `+` particle's window.
    pub plus: WindowOutcome<T>,
    /// The `−` particle's window.
    pub minus: WindowOutcome<T>,
}

/// Advances both particles of `pair` by `steps` steps with a fresh `ε ~ N(0, σ² I)` from
/// `noise`, and accumulates `scale · ξ (J⁺ − J⁻) / (2σ²)` into `grad`'s phi tensors (`ξ`
/// including this window's `ε`).
#[allow(clippy::too_many_arguments)]
pub fn pes_window<T: Real>(
    grad: &mut Params<T>,
    config: &Config,
    params: &Params<T>,
    pair: &mut PesPair<T>,
    data: &dyn RunData<T>,
    steps: usize,
    objective: &Objective,
    sigma: f64,
    noise: &mut CounterRng,
    scale: T,
) -> Result<PesOutcome<T>> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(EngineError::InvalidConfig {
            field: "pes.sigma".into(),
            reason: format!("{sigma} is not > 0"),
        });
    }
    pair.validate(config, params)?;
    let eps: Vec<T> = (0..pair.xi.len()).map(|_| T::of(sigma * noise.normal())).collect();
    let plus = advance(
        config,
        &perturbed(params, &eps, T::one()),
        &mut pair.plus,
        data,
        steps,
        Some(objective),
        None,
        None,
    )?;
    let minus = advance(
        config,
        &perturbed(params, &eps, -T::one()),
        &mut pair.minus,
        data,
        steps,
        Some(objective),
        None,
        None,
    )?;
    for (x, &e) in pair.xi.iter_mut().zip(&eps) {
        *x += e;
    }
    let coef = scale * (plus.objective - minus.objective) / T::of(2.0 * sigma * sigma);
    let mut xi = pair.xi.iter();
    for b in grad.buffers_mut().into_iter().skip(1) {
        for (gv, &x) in b.iter_mut().zip(&mut xi) {
            *gv += coef * x;
        }
    }
    Ok(PesOutcome { plus, minus })
}
