//! The learner of [`crate::mlp`] for a group of [`LANES`] tasks at once, lane by lane: the
//! forward pass, the loss gradient and the exact Hessian-vector product, each task's
//! arithmetic exactly that of [`Mlp::loss_and_grad`] and [`Mlp::hvp`] (so every lane is
//! bitwise the one-task result). Dense products go through [`crate::lane_linalg`]; the loss,
//! a few numbers per point, runs per task through [`crate::loss`] itself.

use crate::config::Activation;
use crate::lane_linalg::{
    LANES, Lanes, add_row, col_sum_acc, extract, flat, flat_mut, gemm_nn, gemm_nn_acc, gemm_nt, gemm_nt_acc,
    gemm_tn, gemm_tn_acc, insert,
};
use crate::lane_pool::{give, take_dirty};
use crate::loss::{loss_forward_backward, loss_rop};
use crate::mlp::Mlp;
use crate::task::TargetsRef;

/// What the forward and backward passes keep for the Hessian-vector product, per lane
/// (the group form of [`crate::mlp::MlpCache`]).
#[derive(Debug, Clone)]
pub struct LaneCache {
    n: usize,
    /// `H_l` for `l = 1..L-1` (entry `l-1`), `[n, d_l]`.
    hidden: Vec<Vec<Lanes>>,
    /// Network output, `[n, d_L]`.
    out: Vec<Lanes>,
    /// Softmax of the output per task (cross-entropy only), `[LANES][n · d_L]`.
    probs: Vec<Vec<f32>>,
    /// `δ_l = dL/dZ_l` for `l = 0..L-1`.
    delta: Vec<Vec<Lanes>>,
    /// `dL/dH_l` for `l = 1..L-1` (entry `l-1`).
    dh: Vec<Vec<Lanes>>,
    /// One task's output and its gradient (the loss runs per task).
    task_out: Vec<f32>,
    task_dout: Vec<f32>,
}

/// Scratch space of the lane R-operator, reused across calls.
#[derive(Debug, Clone)]
pub struct LaneScratch {
    rz: Vec<Vec<Lanes>>,
    rh: Vec<Vec<Lanes>>,
    rdelta: Vec<Vec<Lanes>>,
    rdh: Vec<Lanes>,
    task_rout: Vec<f32>,
    task_rdout: Vec<f32>,
}

impl LaneCache {
    /// A cache for sets of `n` points of `mlp`.
    pub fn new(mlp: &Mlp, n: usize) -> Self {
        let w = &mlp.layout.widths;
        let l = w.len() - 1;
        let zeros = take_dirty;
        Self {
            n,
            hidden: (1..l).map(|i| zeros(n * w[i])).collect(),
            out: zeros(n * w[l]),
            probs: (0..LANES).map(|_| vec![0.0; n * w[l]]).collect(),
            delta: (0..l).map(|i| zeros(n * w[i + 1])).collect(),
            dh: (1..l).map(|i| zeros(n * w[i])).collect(),
            task_out: vec![0.0; n * w[l]],
            task_dout: vec![0.0; n * w[l]],
        }
    }

    /// Gives the buffers back to this thread's pool.
    pub fn recycle(self) {
        self.hidden.into_iter().chain(self.delta).chain(self.dh).for_each(give);
        give(self.out);
    }

    /// Number of points of the set.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The network output of the last forward pass, `[n, d_L]` per lane.
    pub fn out(&self) -> &[Lanes] {
        &self.out
    }
}

impl LaneScratch {
    /// Gives the buffers back to this thread's pool.
    pub fn recycle(self) {
        self.rz.into_iter().chain(self.rh).chain(self.rdelta).for_each(give);
        give(self.rdh);
    }

    /// Scratch for Hessian-vector products on sets of `n` points of `mlp`.
    pub fn new(mlp: &Mlp, n: usize) -> Self {
        let w = &mlp.layout.widths;
        let l = w.len() - 1;
        let zeros = take_dirty;
        Self {
            rz: (0..l).map(|i| zeros(n * w[i + 1])).collect(),
            rh: (1..l).map(|i| zeros(n * w[i])).collect(),
            rdelta: (0..l).map(|i| zeros(n * w[i + 1])).collect(),
            rdh: zeros(n * w.iter().copied().max().unwrap_or(0)),
            task_rout: vec![0.0; n * w[l]],
            task_rdout: vec![0.0; n * w[l]],
        }
    }
}

/// `z ← act(z)` lane by lane.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn activate(act: Activation, z: &mut [Lanes]) {
    let z = flat_mut(z);
    match act {
        Activation::Relu => z.iter_mut().for_each(|v| *v = Activation::Relu.apply(*v)),
        Activation::Tanh => z.iter_mut().for_each(|v| *v = Activation::Tanh.apply(*v)),
    }
}

/// `out = a ⊙ act'(h)` lane by lane (`a * d1(h)`, the one-task order).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn times_d1(act: Activation, out: &mut [Lanes], a: &[Lanes], h: &[Lanes]) {
    let (out, a, h) = (flat_mut(out), flat(a), flat(h));
    match act {
        Activation::Relu => {
            for ((o, &a), &h) in out.iter_mut().zip(a).zip(h) {
                *o = a * Activation::Relu.d1(h);
            }
        }
        Activation::Tanh => {
            for ((o, &a), &h) in out.iter_mut().zip(a).zip(h) {
                *o = a * Activation::Tanh.d1(h);
            }
        }
    }
}

/// Forward pass of `x[n, d_0]` per lane; the output is `cache.out()`.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
pub(crate) fn forward(mlp: &Mlp, cache: &mut LaneCache, theta: &[Lanes], x: &[Lanes]) {
    let n = cache.n;
    let w = &mlp.layout.widths;
    let last = w.len() - 2;
    for l in 0..=last {
        let (din, dout) = (w[l], w[l + 1]);
        let (before, after) = cache.hidden.split_at_mut(l);
        let input: &[Lanes] = if l == 0 { x } else { &before[l - 1] };
        let z: &mut [Lanes] = if l == last { &mut cache.out } else { &mut after[0] };
        gemm_nt(z, input, &theta[mlp.layout.weight(l)], n, din, dout);
        add_row(z, &theta[mlp.layout.bias(l)], n, dout);
        if l != last {
            activate(mlp.activation, z);
        }
    }
}

/// Forward pass, each lane's loss against its targets `ys[lane]`, and the gradient w.r.t.
/// theta per lane (written to `grad`, overwriting), as [`Mlp::loss_and_grad`].
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
pub(crate) fn loss_and_grad(
    mlp: &Mlp,
    grad: &mut [Lanes],
    cache: &mut LaneCache,
    theta: &[Lanes],
    x: &[Lanes],
    ys: &[TargetsRef<'_, f32>; LANES],
) -> [f32; LANES] {
    forward(mlp, cache, theta, x);
    let n = cache.n;
    let w = &mlp.layout.widths;
    let last = w.len() - 2;
    let d_l = w[last + 1];
    let mut losses = [0.0; LANES];
    for (lane, loss) in losses.iter_mut().enumerate() {
        extract(&mut cache.task_out, &cache.out, lane);
        *loss = loss_forward_backward(
            &mut cache.task_dout,
            &mut cache.probs[lane],
            mlp.loss,
            &cache.task_out,
            ys[lane],
            n,
            d_l,
        );
        insert(&mut cache.delta[last], &cache.task_dout, lane);
    }
    // Each weight and bias group of `grad` from +0.0 (the one-task code zeroes `grad` first;
    // the groups cover theta).
    for l in (0..=last).rev() {
        let (din, dout) = (w[l], w[l + 1]);
        let input: &[Lanes] = if l == 0 { x } else { &cache.hidden[l - 1] };
        gemm_tn(&mut grad[mlp.layout.weight(l)], &cache.delta[l], input, n, dout, din);
        grad[mlp.layout.bias(l)].fill(Lanes::default());
        col_sum_acc(&mut grad[mlp.layout.bias(l)], &cache.delta[l], n, dout);
        if l > 0 {
            let dh = &mut cache.dh[l - 1];
            gemm_nn(dh, &cache.delta[l], &theta[mlp.layout.weight(l)], n, dout, din);
            let (lo, _) = cache.delta.split_at_mut(l);
            times_d1(mlp.activation, &mut lo[l - 1], dh, &cache.hidden[l - 1]);
        }
    }
    losses
}

/// `hv = ∇²L(theta) · u` per lane, as [`Mlp::hvp`]; `cache` holds a [`loss_and_grad`] at the
/// same `theta` and `x`.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
pub(crate) fn hvp(
    mlp: &Mlp,
    hv: &mut [Lanes],
    scratch: &mut LaneScratch,
    cache: &LaneCache,
    theta: &[Lanes],
    x: &[Lanes],
    u: &[Lanes],
) {
    let n = cache.n;
    let w = &mlp.layout.widths;
    let last = w.len() - 2;
    let lay = &mlp.layout;
    let act = mlp.activation;
    for l in 0..=last {
        let (din, dout) = (w[l], w[l + 1]);
        let input: &[Lanes] = if l == 0 { x } else { &cache.hidden[l - 1] };
        let (rh_lo, rh_hi) = scratch.rh.split_at_mut(l);
        let rz = &mut scratch.rz[l];
        if l > 0 {
            gemm_nt(rz, &rh_lo[l - 1], &theta[lay.weight(l)], n, din, dout);
            gemm_nt_acc(rz, input, &u[lay.weight(l)], n, din, dout);
        } else {
            gemm_nt(rz, input, &u[lay.weight(l)], n, din, dout);
        }
        add_row(rz, &u[lay.bias(l)], n, dout);
        if l != last {
            // `act'(h) * z`, the one-task order.
            let h = flat(&cache.hidden[l]);
            for ((r, &z), &h) in flat_mut(&mut rh_hi[0]).iter_mut().zip(flat(rz)).zip(h) {
                *r = act.d1(h) * z;
            }
        }
    }
    let d_l = w[last + 1];
    for lane in 0..LANES {
        extract(&mut scratch.task_rout, &scratch.rz[last], lane);
        loss_rop(&mut scratch.task_rdout, mlp.loss, &cache.probs[lane], &scratch.task_rout, n, d_l);
        insert(&mut scratch.rdelta[last], &scratch.task_rdout, lane);
    }
    // Each group of `hv` from +0.0, as `grad` in `loss_and_grad`.
    for l in (0..=last).rev() {
        let (din, dout) = (w[l], w[l + 1]);
        let input: &[Lanes] = if l == 0 { x } else { &cache.hidden[l - 1] };
        let (rd_lo, rd_hi) = scratch.rdelta.split_at_mut(l);
        let rdelta = &rd_hi[0];
        gemm_tn(&mut hv[lay.weight(l)], rdelta, input, n, dout, din);
        if l > 0 {
            gemm_tn_acc(&mut hv[lay.weight(l)], &cache.delta[l], &scratch.rh[l - 1], n, dout, din);
        }
        hv[lay.bias(l)].fill(Lanes::default());
        col_sum_acc(&mut hv[lay.bias(l)], rdelta, n, dout);
        if l > 0 {
            let rdh = &mut scratch.rdh[..n * din];
            gemm_nn(rdh, rdelta, &theta[lay.weight(l)], n, dout, din);
            gemm_nn_acc(rdh, &cache.delta[l], &u[lay.weight(l)], n, dout, din);
            let h = &cache.hidden[l - 1];
            let prev = &mut rd_lo[l - 1];
            if act.is_piecewise_linear() {
                times_d1(act, prev, rdh, h);
            } else {
                let dh = &cache.dh[l - 1];
                let rz = &scratch.rz[l - 1];
                let (prev, rdh, h, dh, rz) = (flat_mut(prev), flat(rdh), flat(h), flat(dh), flat(rz));
                for i in 0..prev.len() {
                    prev[i] = rdh[i] * act.d1(h[i]) + dh[i] * act.d2(h[i]) * rz[i];
                }
            }
        }
    }
}

/// Lane `lane`'s query accuracy from `cache.out()` (classification only), as
/// [`Mlp::accuracy_of_output`].
pub fn accuracy_of_lane(mlp: &Mlp, cache: &LaneCache, y: TargetsRef<'_, f32>, lane: usize) -> Option<f32> {
    let TargetsRef::Labels(labels) = y else { return None };
    let d = *mlp.layout.widths.last().unwrap_or(&1);
    let correct = cache
        .out
        .chunks(d)
        .zip(labels)
        .filter(|&(row, &label)| {
            let best =
                row.iter().enumerate().fold(0, |b, (i, v)| if v.0[lane] > row[b].0[lane] { i } else { b });
            best == label as usize
        })
        .count();
    Some((correct as f64 / cache.n.max(1) as f64) as f32)
}
