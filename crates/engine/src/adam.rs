//! The outer optimiser: Adam with bias correction (PyTorch's formulation) and global-norm
//! gradient clipping, over a [`Params`] set.

use crate::params::Params;

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator floor.
    pub eps: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Adam's state: moments with the slots of the parameters, and the number of updates made.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// Hyper-parameters.
    pub config: AdamConfig,
    /// Number of updates applied so far.
    pub t: u64,
    /// First moments.
    pub m: Params<f32>,
    /// Second moments.
    pub v: Params<f32>,
}

/// Which parameters an update touches: theta only when the initialisation is meta-learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateMask {
    /// Update theta.
    pub theta: bool,
}

/// Global L2 norm of the gradients an update would apply (theta only when `mask.theta`).
pub fn grad_norm(grad: &Params<f32>, mask: UpdateMask) -> f64 {
    grad.buffers()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i > 0 || mask.theta)
        .flat_map(|(_, b)| b.iter())
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt()
}

/// Scales `grad` so its global norm is at most `max_norm` (0 disables); returns the norm
/// before clipping.
pub fn clip_grad_norm(grad: &mut Params<f32>, max_norm: f64, mask: UpdateMask) -> f64 {
    let norm = grad_norm(grad, mask);
    if max_norm > 0.0 && norm > max_norm {
        let s = (max_norm / (norm + 1e-12)) as f32;
        for b in grad.buffers_mut() {
            for g in b.iter_mut() {
                *g *= s;
            }
        }
    }
    norm
}

impl Adam {
    /// Fresh state for parameters shaped like `like`.
    pub fn new(config: AdamConfig, like: &Params<f32>) -> Self {
        Self { config, t: 0, m: like.zeros_like(), v: like.zeros_like() }
    }

    /// One update `p ← p − lr · m̂ / (√v̂ + eps)` of the parameters `mask` selects.
    pub fn step(&mut self, params: &mut Params<f32>, grad: &Params<f32>, mask: UpdateMask) {
        self.t += 1;
        let c = self.config;
        let bc1 = 1.0 - c.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - c.beta2.powi(self.t as i32)).sqrt();
        let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
        let step_size = (c.lr / bc1) as f32;
        let (bc2_sqrt, eps) = (bc2_sqrt as f32, c.eps as f32);
        let bufs = params
            .buffers_mut()
            .into_iter()
            .zip(grad.buffers())
            .zip(self.m.buffers_mut())
            .zip(self.v.buffers_mut());
        for (i, (((p, g), m), v)) in bufs.enumerate() {
            if i == 0 && !mask.theta {
                continue;
            }
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn first_step_moves_each_parameter_by_about_lr() {
        let config = Config::sinusoid_default();
        let mut p = Params::<f32>::zeros(&config);
        let mut g = p.zeros_like();
        for (i, x) in g.values_mut().enumerate() {
            *x = if i.is_multiple_of(2) { 0.3 } else { -2.0 };
        }
        let mut adam = Adam::new(AdamConfig { lr: 0.01, ..Default::default() }, &p);
        adam.step(&mut p, &g, UpdateMask { theta: true });
        for (x, gi) in p.values().zip(g.values()) {
            assert!((x + 0.01 * gi.signum()).abs() < 1e-6, "{x}");
        }
    }

    #[test]
    fn masked_theta_is_left_alone_and_clipping_bounds_the_norm() {
        let config = Config::sinusoid_default();
        let mut p = Params::<f32>::zeros(&config);
        let mut g = p.zeros_like();
        for x in g.values_mut() {
            *x = 1.0;
        }
        let mask = UpdateMask { theta: false };
        let before = clip_grad_norm(&mut g, 1.0, mask);
        assert!(before > 1.0);
        assert!((grad_norm(&g, mask) - 1.0).abs() < 1e-5);
        let mut adam = Adam::new(AdamConfig::default(), &p);
        adam.step(&mut p, &g, mask);
        assert!(p.theta.iter().all(|&x| x == 0.0));
        assert!(p.lstm.as_ref().expect("lstm").head_b.iter().all(|&x| x < 0.0));
    }
}
