//! One ordinary training run (no meta-gradient) of a method on one run of a stream: the
//! learned scheduler or a baseline, through the engine's `advance` in a single call over the
//! whole horizon, so every method sees the same minibatches, initialisation and optimiser.

use anyhow::Result;
use metasched_engine::horizon::{Objective, ObjectiveMode, RateRule, RunState, advance};
use metasched_engine::mlp::Mlp;
use metasched_tasks::train_mlp::{RunStream, TrainRun};
use serde::Serialize;

use super::baselines::Baseline;
use super::setup::Setup;

/// What sets the rates of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Method {
    /// The checkpoint's learned scheduler.
    Learned,
    /// A hand-made schedule.
    Baseline(Baseline),
}

/// What one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Loss on the run's whole training split at `theta_H`.
    pub final_train: f32,
    /// Validation loss at `theta_H`.
    pub final_val: f32,
    /// Validation accuracy at `theta_H` (classification only).
    pub accuracy: Option<f32>,
    /// `(t, L_val(theta_t))` every `curve_every` steps and at `H`.
    pub curve: Vec<(usize, f32)>,
    /// Rates used, `[H, G]` (empty unless asked for).
    #[serde(skip)]
    pub lr: Vec<f32>,
    /// Minibatch loss of each step, `[H]` (empty unless the rates were asked for).
    #[serde(skip)]
    pub train_loss: Vec<f32>,
}

/// Runs `method` on run `run` of `stream` for the whole horizon, measuring the validation
/// loss every `curve_every` steps (`None`: only at the end); keeps the rates and minibatch
/// losses when `keep_lr`.
pub fn run_one(
    setup: &Setup,
    method: &Method,
    stream: RunStream,
    run: u64,
    curve_every: Option<usize>,
    keep_lr: bool,
) -> Result<RunResult> {
    let config = &setup.config;
    let horizon = config.inner.steps;
    let data = TrainRun::<f32>::open(&setup.data, config, setup.seed, stream, run, setup.batch)?;
    let mut state = RunState::fresh(config, data.learner_init());
    let objective = Objective {
        window: curve_every.unwrap_or(horizon).clamp(1, horizon),
        mode: ObjectiveMode::End,
        horizon,
    };
    let mut rule: Option<Box<dyn RateRule<f32> + Send>> = match method {
        Method::Learned => None,
        Method::Baseline(b) => Some(b.rule(horizon)),
    };
    let rule_ref: Option<&mut dyn RateRule<f32>> = match rule.as_mut() {
        Some(r) => Some(r.as_mut()),
        None => None,
    };
    let out = advance(config, &setup.params, &mut state, &data, horizon, Some(&objective), rule_ref, None)?;
    let (final_train, _) = loss_and_accuracy(setup, &state.theta, &data, true);
    let (final_val, accuracy) = loss_and_accuracy(setup, &state.theta, &data, false);
    Ok(RunResult {
        final_train,
        final_val,
        accuracy,
        curve: out.val_loss,
        lr: if keep_lr { out.lr } else { Vec::new() },
        train_loss: if keep_lr { out.train_loss } else { Vec::new() },
    })
}

/// Loss and accuracy of `theta` on the run's training split (`train`) or held-out split.
fn loss_and_accuracy(setup: &Setup, theta: &[f32], data: &TrainRun<f32>, train: bool) -> (f32, Option<f32>) {
    use metasched_engine::horizon::RunData;
    let mlp = Mlp::new(&setup.config);
    let set = if train { data.train_set() } else { data.validation() };
    let mut cache = mlp.cache(set.n);
    mlp.forward(&mut cache, theta, set.x);
    (mlp.loss_of_output(&cache, set.y), mlp.accuracy_of_output(&cache, set.y))
}
