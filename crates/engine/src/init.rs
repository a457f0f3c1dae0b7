//! Fresh parameters for `meta-coord init`: PyTorch's default initialisation of `nn.Linear`
//! and `nn.LSTM`, with the scheduler's output biased to a chosen initial rate.

use crate::config::{Config, SchedulerKind};
use crate::error::{EngineError, Result};
use crate::layout::ThetaLayout;
use crate::params::{LstmParams, Params};
use crate::rng::CounterRng;

/// Scale of the scheduler head's weights relative to PyTorch's default, so the initial rates
/// sit within about 1% of `lr_init` while the LSTM still receives gradient.
pub const HEAD_WEIGHT_SCALE: f64 = 0.1;

fn uniform(rng: &mut CounterRng, n: usize, bound: f64) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_in(-bound, bound) as f32).collect()
}

/// The logit `z` with `lr_min + (lr_max - lr_min)·σ(z) = lr_init`.
pub fn rate_logit(config: &Config, lr_init: f64) -> Result<f64> {
    let s = &config.scheduler;
    if !(lr_init > s.lr_min && lr_init < s.lr_max) {
        return Err(EngineError::InvalidConfig {
            field: "lr_init".into(),
            reason: format!(
                "{lr_init} must lie strictly between lr_min = {} and lr_max = {}",
                s.lr_min, s.lr_max
            ),
        });
    }
    let p = (lr_init - s.lr_min) / (s.lr_max - s.lr_min);
    Ok((p / (1.0 - p)).ln())
}

/// A freshly initialised learner, PyTorch's `nn.Linear` default (`U(±1/√fan_in)` for weights
/// and biases): how `init_params` starts theta, and how every `train-mlp` run starts its
/// learner from its own seed (spec §7).
pub fn init_theta(config: &Config, seed: u64) -> Vec<f32> {
    let layout = ThetaLayout::new(config);
    let mut theta = Vec::with_capacity(layout.len());
    for l in 0..layout.n_linear() {
        let (fan_in, fan_out) = (layout.widths[l], layout.widths[l + 1]);
        let bound = 1.0 / (fan_in as f64).sqrt();
        let mut rng = CounterRng::new(seed, &[0, l as u64]);
        theta.extend(uniform(&mut rng, fan_out * fan_in, bound));
        theta.extend(uniform(&mut rng, fan_out, bound));
    }
    theta
}

/// New parameters for `config`: learner layers `U(±1/√fan_in)` (weights and biases, as
/// `nn.Linear`), LSTM tensors `U(±1/√H)` (as `nn.LSTM`), head weight `U(±0.1/√H)` and head bias
/// (or every LSLR entry) at the logit of `lr_init`. `lr_init` is ignored by `fixed`.
pub fn init_params(config: &Config, seed: u64, lr_init: f64) -> Result<Params<f32>> {
    config.validate()?;
    let theta = init_theta(config, seed);
    let mut params = Params { theta, lstm: None, lslr: None };
    let g = config.groups();
    match config.scheduler.kind {
        SchedulerKind::Fixed => {}
        SchedulerKind::Lslr => {
            let z = rate_logit(config, lr_init)? as f32;
            params.lslr = Some(vec![z; config.inner.steps * g]);
        }
        SchedulerKind::Lstm => {
            let z = rate_logit(config, lr_init)? as f32;
            let h = config.scheduler.hidden;
            let bound = 1.0 / (h as f64).sqrt();
            let mut rng = CounterRng::new(seed, &[1]);
            let f = crate::config::FEATURES;
            params.lstm = Some(LstmParams {
                w_ih: uniform(&mut rng, 4 * h * f, bound),
                w_hh: uniform(&mut rng, 4 * h * h, bound),
                b_ih: uniform(&mut rng, 4 * h, bound),
                b_hh: uniform(&mut rng, 4 * h, bound),
                head_w: uniform(&mut rng, g * h, HEAD_WEIGHT_SCALE * bound),
                head_b: vec![z; g],
            });
        }
    }
    Ok(params)
}
