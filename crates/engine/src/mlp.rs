//! The learner: an MLP's forward pass, gradient, and exact Hessian-vector product
//! (Pearlmutter's R-operator: a forward pass of directional derivatives followed by the
//! directional derivative of back-propagation), all on one set of `n` points (spec §2).

use crate::config::{Activation, Config, LossKind};
use crate::layout::ThetaLayout;
use crate::linalg::{add_row, col_sum_acc, nn_acc, nt_acc, tn_acc, tn_to};
use crate::loss::{loss_forward_backward, loss_rop, loss_value};
use crate::real::Real;
use crate::task::TargetsRef;
use crate::task_pool::Aligned;

mod sgd_reverse;
pub use sgd_reverse::SgdReverseScratch;

/// The learner's architecture; stateless apart from its shape.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Where each tensor lives in theta.
    pub layout: ThetaLayout,
    /// Nonlinearity between layers.
    pub activation: Activation,
    /// Loss on a set.
    pub loss: LossKind,
}

/// What the forward and backward passes keep for the Hessian-vector product at the same
/// parameters: activations, back-propagated errors and the output softmax.
#[derive(Debug, Clone)]
pub struct MlpCache<T> {
    n: usize,
    /// `H_l` for `l = 1..L-1` (entry `l-1`), `[n, d_l]`.
    hidden: Vec<Aligned<T>>,
    /// Network output `Z_{L-1}`, `[n, d_L]`.
    out: Aligned<T>,
    /// Softmax of the output (cross-entropy only).
    probs: Aligned<T>,
    /// `δ_l = dL/dZ_l` for `l = 0..L-1`.
    delta: Vec<Aligned<T>>,
    /// `dL/dH_l` for `l = 1..L-1` (entry `l-1`).
    dh: Vec<Aligned<T>>,
}

/// Scratch space of the R-operator, reused across calls.
#[derive(Debug, Clone)]
pub struct HvpScratch<T> {
    /// `R{Z_l}`, `l = 0..L-1`.
    rz: Vec<Aligned<T>>,
    /// `R{H_l}` for `l = 1..L-1` (entry `l-1`).
    rh: Vec<Aligned<T>>,
    /// `R{δ_l}`, `l = 0..L-1`.
    rdelta: Vec<Aligned<T>>,
    /// `R{dL/dH_l}`, one buffer reused per layer.
    rdh: Aligned<T>,
}

impl Mlp {
    /// The learner of a configuration.
    pub fn new(config: &Config) -> Self {
        Self {
            layout: ThetaLayout::new(config),
            activation: config.model.activation,
            loss: config.model.loss,
        }
    }

    fn width(&self, l: usize) -> usize {
        self.layout.widths[l]
    }

    fn n_linear(&self) -> usize {
        self.layout.n_linear()
    }

    /// A cache for sets of `n` points.
    pub fn cache<T: Real>(&self, n: usize) -> MlpCache<T> {
        self.cache_with(n, Aligned::zeroed)
    }

    /// [`Mlp::cache`] from this thread's free list ([`task_pool`]), holding whatever its last
    /// user left: [`Mlp::forward`], [`Mlp::loss_and_grad`] and [`Mlp::hvp`] write every value
    /// before reading it. Give it back with [`MlpCache::recycle`].
    pub fn cache_reused<T: Real>(&self, n: usize) -> MlpCache<T> {
        self.cache_with(n, Aligned::take_dirty)
    }

    fn cache_with<T: Real>(&self, n: usize, alloc: impl Fn(usize) -> Aligned<T>) -> MlpCache<T> {
        let l = self.n_linear();
        let w = &self.layout.widths;
        MlpCache {
            n,
            hidden: (1..l).map(|i| alloc(n * w[i])).collect(),
            out: alloc(n * w[l]),
            probs: alloc(n * w[l]),
            delta: (0..l).map(|i| alloc(n * w[i + 1])).collect(),
            dh: (1..l).map(|i| alloc(n * w[i])).collect(),
        }
    }

    /// Scratch for Hessian-vector products on sets of `n` points.
    pub fn hvp_scratch<T: Real>(&self, n: usize) -> HvpScratch<T> {
        self.hvp_scratch_with(n, Aligned::zeroed)
    }

    /// [`Mlp::hvp_scratch`] from this thread's free list, holding whatever its last user left
    /// ([`Mlp::hvp`] writes every value before reading it). Give it back with
    /// [`HvpScratch::recycle`].
    pub fn hvp_scratch_reused<T: Real>(&self, n: usize) -> HvpScratch<T> {
        self.hvp_scratch_with(n, Aligned::take_dirty)
    }

    fn hvp_scratch_with<T: Real>(&self, n: usize, alloc: impl Fn(usize) -> Aligned<T>) -> HvpScratch<T> {
        let l = self.n_linear();
        let w = &self.layout.widths;
        HvpScratch {
            rz: (0..l).map(|i| alloc(n * w[i + 1])).collect(),
            rh: (1..l).map(|i| alloc(n * w[i])).collect(),
            rdelta: (0..l).map(|i| alloc(n * w[i + 1])).collect(),
            rdh: alloc(n * w.iter().copied().max().unwrap_or(0)),
        }
    }

    /// Forward pass of `x[n, d_0]`; the output is `cache.out()`.
    pub fn forward<T: Real>(&self, cache: &mut MlpCache<T>, theta: &[T], x: &[T]) {
        let n = cache.n;
        let last = self.n_linear() - 1;
        for l in 0..=last {
            let (din, dout) = (self.width(l), self.width(l + 1));
            let (before, after) = cache.hidden.split_at_mut(l);
            let input: &[T] = if l == 0 { x } else { &before[l - 1] };
            let z: &mut [T] = if l == last { &mut cache.out } else { &mut after[0] };
            z.fill(T::zero());
            nt_acc(z, input, &theta[self.layout.weight(l)], n, din, dout);
            add_row(z, &theta[self.layout.bias(l)], n, dout);
            if l != last {
                for v in z.iter_mut() {
                    *v = self.activation.apply(*v);
                }
            }
        }
    }

    /// Loss of the current output (after [`Mlp::forward`]) against `y`, without gradient.
    pub fn loss_of_output<T: Real>(&self, cache: &MlpCache<T>, y: TargetsRef<'_, T>) -> T {
        loss_value(self.loss, &cache.out, y, cache.n, self.width(self.n_linear()))
    }

    /// Fraction of points whose largest output is their label (classification only; `None`
    /// for regression targets), after [`Mlp::forward`].
    pub fn accuracy_of_output<T: Real>(&self, cache: &MlpCache<T>, y: TargetsRef<'_, T>) -> Option<T> {
        let TargetsRef::Labels(labels) = y else { return None };
        let d = self.width(self.n_linear());
        let correct = cache
            .out
            .chunks(d)
            .zip(labels)
            .filter(|&(row, &label)| {
                let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
                best == label as usize
            })
            .count();
        Some(T::of(correct as f64 / cache.n.max(1) as f64))
    }

    /// Forward pass, loss and its gradient w.r.t. theta (written to `grad`, overwriting).
    /// Leaves in `cache` everything [`Mlp::hvp`] needs at the same theta.
    pub fn loss_and_grad<T: Real>(
        &self,
        grad: &mut [T],
        cache: &mut MlpCache<T>,
        theta: &[T],
        x: &[T],
        y: TargetsRef<'_, T>,
    ) -> T {
        self.forward(cache, theta, x);
        let n = cache.n;
        let last = self.n_linear() - 1;
        let d_l = self.width(last + 1);
        let loss =
            loss_forward_backward(&mut cache.delta[last], &mut cache.probs, self.loss, &cache.out, y, n, d_l);
        // Every value of `grad` is written: each layer's weight and bias (which tile theta).
        for l in (0..=last).rev() {
            let (din, dout) = (self.width(l), self.width(l + 1));
            let input: &[T] = if l == 0 { x } else { &cache.hidden[l - 1] };
            tn_to(&mut grad[self.layout.weight(l)], &cache.delta[l], input, n, dout, din);
            let gb = &mut grad[self.layout.bias(l)];
            gb.fill(T::zero());
            col_sum_acc(gb, &cache.delta[l], n, dout);
            if l > 0 {
                let dh = &mut cache.dh[l - 1];
                dh.fill(T::zero());
                nn_acc(dh, &cache.delta[l], &theta[self.layout.weight(l)], n, dout, din);
                for ((d, &g), &h) in cache.delta[l - 1].iter_mut().zip(dh.iter()).zip(&cache.hidden[l - 1]) {
                    *d = g * self.activation.d1(h);
                }
            }
        }
        loss
    }

    /// `hv = ∇²L(theta) · u`, exactly, by the R-operator. `cache` must hold the state of a
    /// [`Mlp::loss_and_grad`] call at the same `theta` and `x`.
    pub fn hvp<T: Real>(
        &self,
        hv: &mut [T],
        scratch: &mut HvpScratch<T>,
        cache: &MlpCache<T>,
        theta: &[T],
        x: &[T],
        u: &[T],
    ) {
        let n = cache.n;
        let last = self.n_linear() - 1;
        let lay = &self.layout;
        // R-forward: R{Z_l} = R{H_l} W_lᵀ + H_l U_lᵀ + Ub_l;  R{H_{l+1}} = act'(Z_l) ⊙ R{Z_l}.
        for l in 0..=last {
            let (din, dout) = (self.width(l), self.width(l + 1));
            let input: &[T] = if l == 0 { x } else { &cache.hidden[l - 1] };
            let (rh_lo, rh_hi) = scratch.rh.split_at_mut(l);
            let rz = &mut scratch.rz[l];
            rz.fill(T::zero());
            if l > 0 {
                nt_acc(rz, &rh_lo[l - 1], &theta[lay.weight(l)], n, din, dout);
            }
            nt_acc(rz, input, &u[lay.weight(l)], n, din, dout);
            add_row(rz, &u[lay.bias(l)], n, dout);
            if l != last {
                let h = &cache.hidden[l];
                for ((r, &z), &h) in rh_hi[0].iter_mut().zip(rz.iter()).zip(h) {
                    *r = self.activation.d1(h) * z;
                }
            }
        }
        let d_l = self.width(last + 1);
        loss_rop(&mut scratch.rdelta[last], self.loss, &cache.probs, &scratch.rz[last], n, d_l);
        // R-backward. Every value of `hv` is written: each layer's weight and bias.
        for l in (0..=last).rev() {
            let (din, dout) = (self.width(l), self.width(l + 1));
            let input: &[T] = if l == 0 { x } else { &cache.hidden[l - 1] };
            let (rd_lo, rd_hi) = scratch.rdelta.split_at_mut(l);
            let rdelta = &rd_hi[0];
            tn_to(&mut hv[lay.weight(l)], rdelta, input, n, dout, din);
            if l > 0 {
                tn_acc(&mut hv[lay.weight(l)], &cache.delta[l], &scratch.rh[l - 1], n, dout, din);
            }
            let hb = &mut hv[lay.bias(l)];
            hb.fill(T::zero());
            col_sum_acc(hb, rdelta, n, dout);
            if l > 0 {
                let rdh = &mut scratch.rdh[..n * din];
                rdh.fill(T::zero());
                nn_acc(rdh, rdelta, &theta[lay.weight(l)], n, dout, din);
                nn_acc(rdh, &cache.delta[l], &u[lay.weight(l)], n, dout, din);
                self.r_delta_below(&mut rd_lo[l - 1], rdh, cache, l, &scratch.rz[l - 1]);
            }
        }
    }
}

impl Mlp {
    /// `R{δ_{l-1}} = R{dL/dH_l} ⊙ act'(H_l)`, plus `dL/dH_l ⊙ act''(H_l) ⊙ R{Z_{l-1}}` for a
    /// curved activation: the R-operator's step down through the nonlinearity below layer
    /// `l` (shared by [`Mlp::hvp`] and [`Mlp::sgd_reverse_step`]).
    #[inline]
    fn r_delta_below<T: Real>(&self, prev: &mut [T], rdh: &[T], cache: &MlpCache<T>, l: usize, rz: &[T]) {
        let h = &cache.hidden[l - 1];
        if self.activation.is_piecewise_linear() {
            for ((p, &r), &h) in prev.iter_mut().zip(rdh).zip(h.iter()) {
                *p = r * self.activation.d1(h);
            }
        } else {
            let dh = &cache.dh[l - 1];
            for i in 0..rdh.len() {
                prev[i] = rdh[i] * self.activation.d1(h[i]) + dh[i] * self.activation.d2(h[i]) * rz[i];
            }
        }
    }
}

impl<T: Real> MlpCache<T> {
    /// The network output of the last forward pass, `[n, d_L]`.
    pub fn out(&self) -> &[T] {
        &self.out
    }

    /// Gives the buffers to this thread's free list ([`task_pool`]).
    pub fn recycle(self) {
        let Self { n: _, hidden, out, probs, delta, dh } = self;
        hidden.into_iter().chain([out, probs]).chain(delta).chain(dh).for_each(Aligned::give);
    }
}

impl<T: Real> HvpScratch<T> {
    /// Gives the buffers to this thread's free list ([`task_pool`]).
    pub fn recycle(self) {
        let Self { rz, rh, rdelta, rdh } = self;
        rz.into_iter().chain(rh).chain(rdelta).chain([rdh]).for_each(Aligned::give);
    }
}
