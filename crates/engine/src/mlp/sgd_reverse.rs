//! One reverse step of plain SGD at second order (spec §4) for learners with a wide layer,
//! without the theta-sized vectors `u`, `hv` and the reads of `g_t` (issue 13).
//!
//! With plain SGD, the vector the Hessian of step `t` multiplies is the adjoint scaled group
//! by group, `u = a_t ⊙ v` (spec §4: `u_k = a_{t,k} v_k`). So every product of the
//! R-operator with a weight block of `u` is `a` times the same product with `v` (the scale
//! goes on the small operand), and a weight group's `⟨v_W, g_W⟩ = ⟨v_W, δᵀ H⟩ = ⟨δ, H V_Wᵀ⟩`
//! reuses the product `H V_Wᵀ` the R-forward needs anyway. The Hessian-vector product's
//! weight blocks are taken from `v` in place ([`crate::linalg::tn_sub`]). For the wide
//! learner (256×256) a reverse step then walks its big weight block five times (two reads of
//! `W`, three passes over `V`) instead of twelve, and the trace of `g_t` is not read.
//!
//! Same mathematics as [`Mlp::hvp`] plus the generic step in `inner_loop`, in another order
//! of rounding; `inner_loop`'s tests hold the two to 1e-12 in f64.

// The dispatch code that `multiversion` generates uses `unsafe` to call the clone the CPU
// supports; it checks the CPU features first.
#![allow(unsafe_code)]

use multiversion::multiversion;

use super::{HvpScratch, Mlp, MlpCache};
use crate::linalg::{dot, nn_acc, nt_acc, tn_sub};
use crate::loss::loss_rop;
use crate::real::Real;
use crate::task_pool::Aligned;

/// Scratch of [`Mlp::sgd_reverse_step`], reused across steps and tasks.
#[derive(Debug)]
pub struct SgdReverseScratch<T> {
    /// The R-operator's buffers.
    hvp: HvpScratch<T>,
    /// `P_l = H_l V_lᵀ`, `[n, d_{l+1}]`, per layer.
    p: Vec<Aligned<T>>,
    /// `a · δ_l` or a bias block's column sums: `[n, max d]`.
    small: Aligned<T>,
}

impl<T: Real> SgdReverseScratch<T> {
    /// Gives the buffers to this thread's free list ([`crate::task_pool`]).
    pub fn recycle(self) {
        let Self { hvp, p, small } = self;
        hvp.recycle();
        p.into_iter().chain([small]).for_each(Aligned::give);
    }
}

impl Mlp {
    /// [`SgdReverseScratch`] for sets of `n` points from this thread's free list (every value
    /// is written before it is read).
    pub fn sgd_reverse_scratch<T: Real>(&self, n: usize) -> SgdReverseScratch<T> {
        let w = &self.layout.widths;
        SgdReverseScratch {
            hvp: self.hvp_scratch_reused(n),
            p: (0..self.n_linear()).map(|l| Aligned::take_dirty(n * w[l + 1])).collect(),
            small: Aligned::take_dirty(n * w.iter().copied().max().unwrap_or(0)),
        }
    }

    /// One plain-SGD reverse step at `theta_t`: `da[k] = −⟨v_k, g_k⟩` for every group `k`
    /// (`bias_g` holds `g_t`'s bias blocks, layer by layer), then `v ← v − ∇²L(theta_t) · (a ⊙ v)`
    /// in place, with `a` the step's per-group `rates`. `cache` holds the state of
    /// [`Mlp::loss_and_grad`] at `theta_t` on the support set `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn sgd_reverse_step<T: Real>(
        &self,
        v: &mut [T],
        da: &mut [T],
        scratch: &mut SgdReverseScratch<T>,
        cache: &MlpCache<T>,
        theta: &[T],
        bias_g: &[T],
        x: &[T],
        rates: &[T],
    ) {
        sgd_reverse_step(self, v, da, scratch, cache, (theta, bias_g, x, rates));
    }
}

/// [`Mlp::sgd_reverse_step`], compiled for AVX-512, AVX2 and the baseline (`multiversion`,
/// picked at run time): its element-wise passes over `[n, d]` blocks ran as SSE code (4% of
/// a wide meta-step). Same operations in the same order in every version.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
#[allow(clippy::too_many_arguments)]
fn sgd_reverse_step<T: Real>(
    mlp: &Mlp,
    v: &mut [T],
    da: &mut [T],
    scratch: &mut SgdReverseScratch<T>,
    cache: &MlpCache<T>,
    (theta, bias_g, x, rates): (&[T], &[T], &[T], &[T]),
) {
    let n = cache.n;
    let last = mlp.n_linear() - 1;
    let lay = &mlp.layout;
    let SgdReverseScratch { hvp: s, p, small } = scratch;
    let mut bias_at = 0;
    // R-forward: R{Z_l} = R{H_l} W_lᵀ + a_W P_l + a_b 1 v_bᵀ with P_l = H_l V_lᵀ, whose
    // inner product with δ_l is ⟨v_W, g_W⟩.
    for l in 0..=last {
        let (din, dout) = (mlp.width(l), mlp.width(l + 1));
        let (aw, ab) = (rates[2 * l], rates[2 * l + 1]);
        let input: &[T] = if l == 0 { x } else { &cache.hidden[l - 1] };
        let pl = &mut p[l][..n * dout];
        pl.fill(T::zero());
        nt_acc(pl, input, &v[lay.weight(l)], n, din, dout);
        da[2 * l] = -dot(&cache.delta[l][..n * dout], pl);
        let vb = &v[lay.bias(l)];
        da[2 * l + 1] = -dot(vb, &bias_g[bias_at..bias_at + dout]);
        bias_at += dout;
        let (rh_lo, rh_hi) = s.rh.split_at_mut(l);
        let rz = &mut s.rz[l];
        rz.fill(T::zero());
        if l > 0 {
            nt_acc(rz, &rh_lo[l - 1], &theta[lay.weight(l)], n, din, dout);
        }
        for (rrow, prow) in rz.chunks_mut(dout).zip(pl.chunks(dout)) {
            for ((r, &q), &b) in rrow.iter_mut().zip(prow).zip(vb) {
                *r += aw * q + ab * b;
            }
        }
        if l != last {
            let h = &cache.hidden[l];
            for ((r, &z), &h) in rh_hi[0].iter_mut().zip(rz.iter()).zip(h) {
                *r = mlp.activation.d1(h) * z;
            }
        }
    }
    let d_l = mlp.width(last + 1);
    loss_rop(&mut s.rdelta[last], mlp.loss, &cache.probs, &s.rz[last], n, d_l);
    // R-backward, each layer's products with V_l before V_l is updated.
    for l in (0..=last).rev() {
        let (din, dout) = (mlp.width(l), mlp.width(l + 1));
        let aw = rates[2 * l];
        let input: &[T] = if l == 0 { x } else { &cache.hidden[l - 1] };
        let (rd_lo, rd_hi) = s.rdelta.split_at_mut(l);
        let rdelta = &rd_hi[0];
        if l > 0 {
            let rdh = &mut s.rdh[..n * din];
            rdh.fill(T::zero());
            nn_acc(rdh, rdelta, &theta[lay.weight(l)], n, dout, din);
            let scaled = &mut small[..n * dout];
            for (o, &d) in scaled.iter_mut().zip(&cache.delta[l][..n * dout]) {
                *o = aw * d;
            }
            nn_acc(rdh, scaled, &v[lay.weight(l)], n, dout, din);
            mlp.r_delta_below(&mut rd_lo[l - 1], rdh, cache, l, &s.rz[l - 1]);
            let pairs = [(&rdelta[..], input), (&cache.delta[l][..], &s.rh[l - 1][..])];
            tn_sub(&mut v[lay.weight(l)], &pairs, n, dout, din);
        } else {
            tn_sub(&mut v[lay.weight(l)], &[(&rdelta[..], input)], n, dout, din);
        }
        let colsum = &mut small[..dout];
        colsum.fill(T::zero());
        for row in rdelta.chunks(dout) {
            for (c, &r) in colsum.iter_mut().zip(row) {
                *c += r;
            }
        }
        for (vb, &c) in v[lay.bias(l)].iter_mut().zip(colsum.iter()) {
            *vb -= c;
        }
    }
}
