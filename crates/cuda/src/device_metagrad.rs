//! The whole meta-gradient of a task batch (spec §3-4) on a device, through the [`Runtime`]
//! trait: [`device_meta_gradient`] computes what `metasched_engine::Engine::meta_gradient`
//! computes (`J`, each task's query loss, the rates used and the gradient of every tensor),
//! for every scheduler kind, activation, loss and order, with every task of the batch handled
//! by the same launches (grid.y or grid.x = B).
//!
//! The forward pass keeps, per inner step, the parameters `theta_t`, the support gradients
//! `g_t`, the learner workspaces (second order: the Hessian-vector products need them), the
//! scheduler features and the LSTM states; the backward pass runs the `v` recursion
//! (`sgd_update_backward`, the R-operator, `v -= hv`), then back-propagates every `dJ/da_t`
//! into phi (head, LSTM by BPTT, or the LSLR table), and finally sums the per-task gradients
//! in task order (`task_sum`), as the engine does. The host only launches, uploads the inputs
//! and downloads the results; the one arithmetic it does is `J = (Σ_b loss_b) / B`.
//!
//! The host path of a meta-step is fixed (`tests/host_path.rs` checks it on the emulator):
//! every buffer comes from the runtime's pool and goes back to it at the end
//! ([`Runtime::alloc_pooled`], so the second meta-step of a shape allocates nothing); the
//! parameters (theta replicated per task, phi, fixed rates) are one upload, the inputs four
//! more and the group offsets one (6 uploads); the rates of every step, the query losses and
//! the gradients are written into one result buffer on the device, which is downloaded once
//! at the end: one download and one host synchronisation per meta-step, none inside the
//! unroll. Buffers that kernels accumulate into (LSTM and head gradients, the BPTT carries,
//! the LSTM's initial state) are zeroed on the device (`zero`), the rest are written before
//! they are read.
//!
//! Two more entry points share the passes: [`device_meta_gradient_sum`] (a worker's part of a
//! meta-step: per-task gradients summed exactly in fixed point, as the CPU engine's part sums
//! are) and [`device_evaluate`] (the forward pass only, for evaluation).

use metasched_engine::{
    Config, Evaluation, FixedSum, MetaGradient, Params, SchedulerKind, Targets, TaskBatch,
};

use crate::error::{CudaError, Result};
use crate::kernels::{FEATURES, KernelId};
use crate::learner::{DeviceMlp, DeviceTargets, MlpWorkspace};
use crate::runtime::{Arg, DeviceBuffer, Runtime};

fn invalid(reason: impl Into<String>) -> CudaError {
    CudaError::InvalidArgument { kernel: "device_meta_gradient".into(), reason: reason.into() }
}

/// Targets of one set of the batch, on the device.
enum Targs<R: Runtime> {
    Values(R::Buffer<f32>),
    Labels(R::Buffer<u32>),
}

impl<R: Runtime> Targs<R> {
    fn upload(rt: &R, t: &Targets<f32>) -> Result<Self> {
        Ok(match t {
            Targets::Values(v) => Targs::Values(rt.upload_pooled(v)?),
            Targets::Labels(l) => Targs::Labels(rt.upload_pooled(l)?),
        })
    }

    fn recycle(self, rt: &R) {
        match self {
            Targs::Values(b) => rt.recycle(b),
            Targs::Labels(b) => rt.recycle(b),
        }
    }

    fn get(&self) -> DeviceTargets<'_, R> {
        match self {
            Targs::Values(b) => DeviceTargets::Values(b),
            Targs::Labels(b) => DeviceTargets::Labels(b),
        }
    }
}

/// Where the scheduler's phi tensors lie in the packed parameter buffer (`Unrolled::params`).
#[derive(Debug, Clone, Copy)]
struct LstmAt {
    w_ih: usize,
    w_hh: usize,
    b_ih: usize,
    b_hh: usize,
    head_w: usize,
    head_b: usize,
}

/// What the result buffer (`Unrolled::out`, downloaded once) holds after the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outputs {
    /// The mean gradient of every tensor, in [`Params::buffers`] order.
    Mean,
    /// Each task's gradient: theta `[B, P]`, then the per-task phi buffer ([`PerTask`]).
    PerTask,
    /// The query network output `[B, q, d_L]` (classification accuracy), or nothing.
    Evaluation,
}

/// The inner loop of every task of a batch, run forward on a device, with what the backward
/// pass needs (everything, or only what evaluation needs when `for_backward` is false).
struct Unrolled<R: Runtime> {
    mlp: DeviceMlp,
    p: usize,
    g: usize,
    b: usize,
    steps: usize,
    hidden: usize,
    lr_span: f32,
    second_order: bool,
    /// Packed parameters: `theta_0` `[B, P]` first (so the buffer is `theta_0`), then phi
    /// (LSTM tensors or the LSLR table), then the fixed rates `[T, B, G]`.
    params: R::Buffer<f32>,
    support_x: R::Buffer<f32>,
    query_x: R::Buffer<f32>,
    support_y: Targs<R>,
    query_y: Targs<R>,
    offsets: R::Buffer<i32>,
    lstm: Option<LstmAt>,
    lslr: Option<usize>,
    /// `theta_1 ..= theta_T` (`theta_0` is `params`).
    thetas: Vec<R::Buffer<f32>>,
    grads: Vec<R::Buffer<f32>>,
    workspaces: Vec<MlpWorkspace<R>>,
    /// Per step `t` at `t·B·G`: `sig [B, G]`; `xs` likewise `[B, F]`, `gates [B, 4H]`,
    /// `tanh_c [B, H]`; `hs`/`cs` hold `T + 1` states `[B, H]` (state 0 zero).
    sig: R::Buffer<f32>,
    xs: R::Buffer<f32>,
    hs: R::Buffer<f32>,
    cs: R::Buffer<f32>,
    gates: R::Buffer<f32>,
    tanh_c: R::Buffer<f32>,
    dummy: R::Buffer<f32>,
    /// The query workspace at `theta_T` (its output gives the accuracy).
    qws: MlpWorkspace<R>,
    /// `grad L_query(theta_T)` per task, unscaled, `[B, P]`.
    v: R::Buffer<f32>,
    /// The result buffer: query losses `[B]`, rates `[T, B, G]`, then [`Outputs`].
    out: R::Buffer<f32>,
}

impl<R: Runtime> Unrolled<R> {
    /// `H·B` (at least `B`): the size of one LSTM state.
    fn hb(&self) -> usize {
        self.b * self.hidden.max(1)
    }

    /// Where step `t`'s rates `[B, G]` start in `out`.
    fn rates_at(&self, t: usize) -> usize {
        self.b + t * self.b * self.g
    }

    /// Where the [`Outputs`] start in `out`.
    fn outputs_at(&self) -> usize {
        self.b + self.steps * self.b * self.g
    }

    /// Gives every buffer back to the runtime's pool.
    fn recycle(self, rt: &R) {
        for ws in self.workspaces {
            ws.recycle(rt);
        }
        self.qws.recycle(rt);
        for t in [self.support_y, self.query_y] {
            t.recycle(rt);
        }
        rt.recycle(self.offsets);
        let singles = [
            self.params,
            self.support_x,
            self.query_x,
            self.sig,
            self.xs,
            self.hs,
            self.cs,
            self.gates,
            self.tanh_c,
            self.dummy,
            self.v,
            self.out,
        ];
        for buf in self.thetas.into_iter().chain(self.grads).chain(singles) {
            rt.recycle(buf);
        }
    }
}

/// Per-task gradients of phi and the backward pass's scratch, in one zeroed buffer: the
/// LSTM's six tensors `[B, n]` each then the BPTT carries, or the LSLR table's rows `[B, G]`
/// per step. (Theta's per-task gradient, `[B, P]`, stays in `Unrolled::v`.)
struct PerTask<R: Runtime> {
    buf: R::Buffer<f32>,
    /// `(offset, n)` of each gradient tensor in `buf` (the LSTM's six, or one per step).
    tensors: Vec<(usize, usize)>,
    /// Elements of `buf` that are gradients (the rest is scratch).
    grads_len: usize,
    da: R::Buffer<f32>,
    uu: R::Buffer<f32>,
    hv: R::Buffer<f32>,
}

impl<R: Runtime> PerTask<R> {
    fn recycle(self, rt: &R) {
        for buf in [self.buf, self.da, self.uu, self.hv] {
            rt.recycle(buf);
        }
    }
}

/// `J`, per-task query losses, rates `[B, T, G]` and the mean meta-gradient of `batch`,
/// computed on `rt`. Checks the inputs as the engine does; phi tensors of kinds other than the
/// configured one get zero gradients.
pub fn device_meta_gradient<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<MetaGradient<f32>> {
    let mut u = unroll(rt, config, params, batch, true, Outputs::Mean)?;
    let (b, p, g) = (u.b, u.p, u.g);
    let scale = 1.0f32 / b as f32;
    rt.launch_default(KernelId::VectorScale, &[Arg::buf(&u.v), Arg::F32(scale), Arg::int(b * p)])?;
    let per_task = backward(rt, &mut u)?;
    let mut at = u.outputs_at();
    let mut sum_into = |buf: &R::Buffer<f32>, offset: usize, n: usize| -> Result<usize> {
        rt.launch_default(
            KernelId::TaskSum,
            &[Arg::buf_at(&u.out, at), Arg::buf_at(buf, offset), Arg::int(b), Arg::int(n)],
        )?;
        at += n;
        Ok(at - n)
    };
    let theta_at = sum_into(&u.v, 0, p)?;
    let phi_at: Vec<usize> =
        per_task.tensors.iter().map(|&(o, n)| sum_into(&per_task.buf, o, n)).collect::<Result<_>>()?;
    let out = rt.download(&u.out)?;
    let mut grad = params.zeros_like();
    grad.theta.copy_from_slice(&out[theta_at..theta_at + p]);
    if let (Some(gl), Some(_)) = (grad.lstm.as_mut(), u.lstm) {
        let dst = [&mut gl.w_ih, &mut gl.w_hh, &mut gl.b_ih, &mut gl.b_hh, &mut gl.head_w, &mut gl.head_b];
        for ((&at, &(_, n)), d) in phi_at.iter().zip(&per_task.tensors).zip(dst) {
            d.copy_from_slice(&out[at..at + n]);
        }
    }
    if let (Some(gz), Some(_)) = (grad.lslr.as_mut(), u.lslr) {
        for (t, &at) in phi_at.iter().enumerate() {
            gz[t * g..(t + 1) * g].copy_from_slice(&out[at..at + g]);
        }
    }
    let outer_loss = out[..b].to_vec();
    let lr = rates_by_task(&u, &out);
    let j = outer_loss.iter().copied().fold(0.0f32, |a, x| a + x) * scale;
    per_task.recycle(rt);
    u.recycle(rt);
    Ok(MetaGradient { j, outer_loss, lr, grad })
}

/// What a worker sends for its part of a meta-step, computed on a device: the exact
/// fixed-point sum of the per-task meta-gradients (each task's gradient rounded once, as the
/// CPU engine's `meta_gradient_sum` does, so a part's sum does not depend on how tasks were
/// split between workers), each task's query loss and the rates `[B, T, G]`.
#[derive(Debug, Clone)]
pub struct DeviceGradientSum {
    /// Sum over the batch of each task's meta-gradient (not divided by `B`).
    pub sum: FixedSum,
    /// Query loss of each task.
    pub outer_loss: Vec<f32>,
    /// Rates of each task, `[B, T, G]`.
    pub lr: Vec<f32>,
}

/// The per-task meta-gradients of `batch` on `rt`, summed exactly on the host in task order.
pub fn device_meta_gradient_sum<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<DeviceGradientSum> {
    let mut u = unroll(rt, config, params, batch, true, Outputs::PerTask)?;
    let (b, p, g) = (u.b, u.p, u.g);
    let per_task = backward(rt, &mut u)?;
    let theta_at = u.outputs_at();
    let phi_at = theta_at + b * p;
    rt.copy_device(&mut u.out, theta_at, &u.v, 0..b * p)?;
    if per_task.grads_len > 0 {
        rt.copy_device(&mut u.out, phi_at, &per_task.buf, 0..per_task.grads_len)?;
    }
    let out = rt.download(&u.out)?;
    let theta = &out[theta_at..theta_at + b * p];
    let phi = &out[phi_at..phi_at + per_task.grads_len];
    let mut sum = FixedSum::zeros(params.buffers().iter().map(|x| x.len()).sum());
    let mut task_grad = params.zeros_like();
    for task in 0..b {
        task_grad.theta.copy_from_slice(&theta[task * p..(task + 1) * p]);
        if let (Some(gl), Some(_)) = (task_grad.lstm.as_mut(), u.lstm) {
            let dst =
                [&mut gl.w_ih, &mut gl.w_hh, &mut gl.b_ih, &mut gl.b_hh, &mut gl.head_w, &mut gl.head_b];
            for (&(o, n), d) in per_task.tensors.iter().zip(dst) {
                d.copy_from_slice(&phi[o + task * n..o + (task + 1) * n]);
            }
        }
        if let (Some(gz), Some(_)) = (task_grad.lslr.as_mut(), u.lslr) {
            for (t, &(o, _)) in per_task.tensors.iter().enumerate() {
                gz[t * g..(t + 1) * g].copy_from_slice(&phi[o + task * g..o + (task + 1) * g]);
            }
        }
        sum.add_params(&task_grad);
    }
    let outer_loss = out[..b].to_vec();
    let lr = rates_by_task(&u, &out);
    per_task.recycle(rt);
    u.recycle(rt);
    Ok(DeviceGradientSum { sum, outer_loss, lr })
}

/// Query losses after the inner loop, the rates used and (classification) the query accuracy
/// of every task of `batch`, on `rt`: what `Engine::evaluate` computes, without any gradient.
/// The accuracy is the one value computed on the host (an argmax over the downloaded logits).
pub fn device_evaluate<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<Evaluation<f32>> {
    let mut u = unroll(rt, config, params, batch, false, Outputs::Evaluation)?;
    let logits_at = u.outputs_at();
    let logits_len = u.qws.out().len();
    if matches!(batch.query_y, Targets::Labels(_)) {
        rt.copy_device(&mut u.out, logits_at, u.qws.out(), 0..logits_len)?;
    }
    let out = rt.download(&u.out)?;
    let lr = rates_by_task(&u, &out);
    let accuracy = match &batch.query_y {
        Targets::Labels(labels) => {
            let logits = &out[logits_at..logits_at + logits_len];
            let classes = batch.d_out.max(1);
            let q = batch.q.max(1);
            let per_task = logits
                .chunks(q * classes)
                .zip(labels.chunks(q))
                .map(|(rows, labels)| {
                    let correct = rows
                        .chunks(classes)
                        .zip(labels)
                        .filter(|&(row, &label)| {
                            let best =
                                row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
                            best == label as usize
                        })
                        .count();
                    correct as f32 / q as f32
                })
                .collect();
            Some(per_task)
        }
        Targets::Values(_) => None,
    };
    let outer_loss = out[..u.b].to_vec();
    let mean = outer_loss.iter().copied().fold(0.0f32, |a, x| a + x) / batch.b.max(1) as f32;
    u.recycle(rt);
    Ok(Evaluation { mean, outer_loss, lr, accuracy })
}

/// Rates `[B, T, G]` from the downloaded result buffer (`[T, B, G]` there).
fn rates_by_task<R: Runtime>(u: &Unrolled<R>, out: &[f32]) -> Vec<f32> {
    let g = u.g;
    let mut lr = Vec::with_capacity(u.b * u.steps * g);
    for task in 0..u.b {
        for t in 0..u.steps {
            let at = u.rates_at(t) + task * g;
            lr.extend_from_slice(&out[at..at + g]);
        }
    }
    lr
}

/// Runs the inner loop of every task forward and the query loss and gradient at `theta_T`,
/// leaving the query losses and the rates in `out`, which is sized for `outputs`.
fn unroll<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
    for_backward: bool,
    outputs: Outputs,
) -> Result<Unrolled<R>> {
    config.validate().map_err(|e| invalid(e.to_string()))?;
    params.validate(config).map_err(|e| invalid(e.to_string()))?;
    batch.validate(config).map_err(|e| invalid(e.to_string()))?;

    let mlp = DeviceMlp::from_config(config);
    let layout = mlp.layout().clone();
    let (p, g) = (layout.len(), layout.groups());
    let (b, steps) = (batch.b, config.inner.steps);
    let s = &config.scheduler;
    let kind = s.kind;
    let hidden = if kind == SchedulerKind::Lstm { s.hidden } else { 0 };
    let lr_min = s.lr_min as f32;
    let lr_span = (s.lr_max - s.lr_min) as f32;
    let second_order = !config.inner.first_order && for_backward;
    let bg = b * g;

    // The parameters, packed into one upload: theta_0 per task, phi, the fixed rates.
    let mut packed = Vec::with_capacity(b * p);
    for _ in 0..b {
        packed.extend_from_slice(&params.theta);
    }
    let mut push = |v: &[f32]| {
        packed.extend_from_slice(v);
        packed.len() - v.len()
    };
    let lstm = match kind {
        SchedulerKind::Lstm => {
            let l = params.lstm.as_ref().ok_or_else(|| invalid("the lstm scheduler needs phi.lstm"))?;
            Some(LstmAt {
                w_ih: push(&l.w_ih),
                w_hh: push(&l.w_hh),
                b_ih: push(&l.b_ih),
                b_hh: push(&l.b_hh),
                head_w: push(&l.head_w),
                head_b: push(&l.head_b),
            })
        }
        _ => None,
    };
    let lslr = match kind {
        SchedulerKind::Lslr => {
            let z = params.lslr.as_ref().ok_or_else(|| invalid("the lslr scheduler needs phi.lslr.z"))?;
            Some(push(z))
        }
        _ => None,
    };
    let fixed_at = (kind == SchedulerKind::Fixed).then(|| push(&vec![s.lr_fixed as f32; steps * bg]));
    let params_buf = rt.upload_pooled(&packed)?;

    // Inputs.
    let support_x = rt.upload_pooled(&batch.support_x)?;
    let query_x = rt.upload_pooled(&batch.query_x)?;
    let support_y = Targs::upload(rt, &batch.support_y)?;
    let query_y = Targs::upload(rt, &batch.query_y)?;
    let offsets: Vec<i32> = layout.offsets.iter().map(|&o| o as i32).collect();
    let offsets = rt.upload_pooled(&offsets)?;

    // Forward state.
    let thetas: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc_pooled(b * p)).collect::<Result<_>>()?;
    let grads: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc_pooled(b * p)).collect::<Result<_>>()?;
    let workspaces: Vec<MlpWorkspace<R>> = (0..if second_order { steps } else { 1 })
        .map(|_| mlp.workspace_pooled(rt, b, batch.k))
        .collect::<Result<_>>()?;
    let hb = b * hidden.max(1);
    let sig = rt.alloc_pooled(steps * bg)?;
    let xs = rt.alloc_pooled(steps * b * FEATURES)?;
    let mut hs = rt.alloc_pooled((steps + 1) * hb)?;
    let mut cs = rt.alloc_pooled((steps + 1) * hb)?;
    let gates = rt.alloc_pooled(steps * 4 * hb)?;
    let tanh_c = rt.alloc_pooled(steps * hb)?;
    // A one-element placeholder for the head's unused pointers (LSLR: hidden = 0).
    let dummy = rt.alloc_pooled(1)?;
    let qws = mlp.workspace_pooled(rt, b, batch.q)?;
    let v = rt.alloc_pooled(b * p)?;
    let extra = match outputs {
        Outputs::Mean => params.buffers().iter().map(|x| x.len()).sum(),
        Outputs::PerTask => b * p + per_task_layout(b, g, steps, hidden, kind).1,
        Outputs::Evaluation => qws.out().len(),
    };
    let mut out = rt.alloc_pooled(b + steps * bg + extra)?;
    if lstm.is_some() {
        rt.zero(&mut hs, 0..hb)?;
        rt.zero(&mut cs, 0..hb)?;
    }
    if let Some(at) = fixed_at {
        rt.copy_device(&mut out, b, &params_buf, at..at + steps * bg)?;
    }
    let mut u = Unrolled {
        mlp,
        p,
        g,
        b,
        steps,
        hidden,
        lr_span,
        second_order,
        params: params_buf,
        support_x,
        query_x,
        support_y,
        query_y,
        offsets,
        lstm,
        lslr,
        thetas,
        grads,
        workspaces,
        sig,
        xs,
        hs,
        cs,
        gates,
        tanh_c,
        dummy,
        qws,
        v,
        out,
    };

    for t in 0..steps {
        let ws = &mut u.workspaces[if second_order { t } else { 0 }];
        let theta = if t == 0 { &u.params } else { &u.thetas[t - 1] };
        u.mlp.loss_and_grad(rt, ws, &u.grads[t], theta, &u.support_x, u.support_y.get())?;
        let rates_at = b + t * bg;
        rt.launch_default(
            KernelId::SchedulerFeatures,
            &[
                Arg::buf_at(&u.xs, t * b * FEATURES),
                Arg::buf(ws.loss()),
                Arg::buf(&u.grads[t]),
                Arg::int(b),
                Arg::int(p),
                Arg::int(t),
                Arg::int(steps),
            ],
        )?;
        match (&u.lstm, &u.lslr) {
            (Some(l), _) => {
                rt.launch_default(
                    KernelId::LstmCellForward,
                    &[
                        Arg::buf_at(&u.hs, (t + 1) * hb),
                        Arg::buf_at(&u.cs, (t + 1) * hb),
                        Arg::buf_at(&u.gates, t * 4 * hb),
                        Arg::buf_at(&u.tanh_c, t * hb),
                        Arg::buf_at(&u.params, l.w_ih),
                        Arg::buf_at(&u.params, l.w_hh),
                        Arg::buf_at(&u.params, l.b_ih),
                        Arg::buf_at(&u.params, l.b_hh),
                        Arg::buf_at(&u.xs, t * b * FEATURES),
                        Arg::buf_at(&u.hs, t * hb),
                        Arg::buf_at(&u.cs, t * hb),
                        Arg::int(b),
                        Arg::int(hidden),
                    ],
                )?;
                rt.launch_default(
                    KernelId::SchedulerHeadForward,
                    &[
                        Arg::buf_at(&u.sig, t * bg),
                        Arg::buf_at(&u.out, rates_at),
                        Arg::buf_at(&u.hs, (t + 1) * hb),
                        Arg::buf_at(&u.params, l.head_w),
                        Arg::buf_at(&u.params, l.head_b),
                        Arg::int(b),
                        Arg::int(hidden),
                        Arg::int(g),
                        Arg::F32(lr_min),
                        Arg::F32(lr_span),
                    ],
                )?;
            }
            (None, Some(z)) => rt.launch_default(
                KernelId::SchedulerHeadForward,
                &[
                    Arg::buf_at(&u.sig, t * bg),
                    Arg::buf_at(&u.out, rates_at),
                    Arg::buf(&u.dummy),
                    Arg::buf(&u.dummy),
                    Arg::buf_at(&u.params, z + t * g),
                    Arg::int(b),
                    Arg::int(0),
                    Arg::int(g),
                    Arg::F32(lr_min),
                    Arg::F32(lr_span),
                ],
            )?,
            (None, None) => {} // fixed: the rates were copied into `out`
        }
        rt.launch_default(
            KernelId::SgdUpdateForward,
            &[
                Arg::buf(&u.thetas[t]),
                Arg::buf(theta),
                Arg::buf(&u.grads[t]),
                Arg::buf_at(&u.out, rates_at),
                Arg::buf(&u.offsets),
                Arg::int(b),
                Arg::int(p),
                Arg::int(g),
            ],
        )?;
    }

    // Query loss and its gradient at theta_T (the caller scales it); the losses go to `out`.
    let theta_t = if steps == 0 { &u.params } else { &u.thetas[steps - 1] };
    u.mlp.loss_and_grad(rt, &mut u.qws, &u.v, theta_t, &u.query_x, u.query_y.get())?;
    rt.copy_device(&mut u.out, 0, u.qws.loss(), 0..b)?;
    Ok(u)
}

/// The per-task buffer of the backward pass: the `(offset, n)` of each gradient tensor
/// (per task `n`, `[B, n]` in the buffer), the elements the gradients take, and the whole
/// length (LSTM: plus the carries `dh_carry`, `dc_carry`, `dh_total` `[B, H]` and `dgates`
/// `[B, 4H]`).
fn per_task_layout(
    b: usize,
    g: usize,
    steps: usize,
    h: usize,
    kind: SchedulerKind,
) -> (Vec<(usize, usize)>, usize, usize) {
    let sizes: Vec<usize> = match kind {
        SchedulerKind::Lstm => vec![4 * h * FEATURES, 4 * h * h, 4 * h, 4 * h, g * h, g],
        SchedulerKind::Lslr => vec![g; steps],
        SchedulerKind::Fixed => Vec::new(),
    };
    let mut tensors = Vec::with_capacity(sizes.len());
    let mut at = 0;
    for n in sizes {
        tensors.push((at, n));
        at += b * n;
    }
    let scratch = if kind == SchedulerKind::Lstm { b * (3 * h + 4 * h) } else { 0 };
    (tensors, at, at + scratch)
}

/// The backward pass from `v_T` (already scaled): the `v` recursion with every `dJ/da_t`,
/// then phi's per-task gradients (head and LSTM by BPTT, or the LSLR table). Leaves `v_0`, the
/// per-task theta gradient, in `u.v`.
fn backward<R: Runtime>(rt: &R, u: &mut Unrolled<R>) -> Result<PerTask<R>> {
    let (b, p, g, steps, h, lr_span) = (u.b, u.p, u.g, u.steps, u.hidden, u.lr_span);
    let (hb, bg) = (u.hb(), b * g);
    let kind = match (&u.lstm, &u.lslr) {
        (Some(_), _) => SchedulerKind::Lstm,
        (None, Some(_)) => SchedulerKind::Lslr,
        (None, None) => SchedulerKind::Fixed,
    };
    let (tensors, grads_len, len) = per_task_layout(b, g, steps, h, kind);
    let mut buf = rt.alloc_pooled(len.max(1))?;
    if len > 0 {
        rt.zero(&mut buf, 0..len)?;
    }
    let da = rt.alloc_pooled(steps * bg)?;
    let uu = rt.alloc_pooled(b * p)?;
    let hv = rt.alloc_pooled(b * p)?;
    for t in (0..steps).rev() {
        rt.launch_default(
            KernelId::SgdUpdateBackward,
            &[
                Arg::buf_at(&da, t * bg),
                Arg::buf(&uu),
                Arg::buf(&u.v),
                Arg::buf(&u.grads[t]),
                Arg::buf_at(&u.out, u.rates_at(t)),
                Arg::buf(&u.offsets),
                Arg::int(b),
                Arg::int(p),
                Arg::int(g),
            ],
        )?;
        if u.second_order {
            let theta = if t == 0 { &u.params } else { &u.thetas[t - 1] };
            u.mlp.hvp(rt, &mut u.workspaces[t], &hv, theta, &u.support_x, &uu)?;
            rt.launch_default(
                KernelId::VectorAxpy,
                &[Arg::buf(&u.v), Arg::buf(&hv), Arg::F32(-1.0), Arg::int(b * p)],
            )?;
        }
    }

    let dummy = &u.dummy;
    match (&u.lstm, &u.lslr) {
        (Some(l), _) => {
            let [gw_ih, gw_hh, gb_ih, gb_hh, g_head_w, g_head_b] =
                [0, 1, 2, 3, 4, 5].map(|i| tensors.get(i).map_or(0, |&(o, _)| o));
            let (dh_carry, dc_carry, dh_total, dgates) =
                (grads_len, grads_len + hb, grads_len + 2 * hb, grads_len + 3 * hb);
            let at = |o: usize| Arg::buf_at(&buf, o);
            for t in (0..steps).rev() {
                rt.launch_default(
                    KernelId::SchedulerHeadBackward,
                    &[
                        at(dh_total),
                        at(g_head_w),
                        at(g_head_b),
                        Arg::buf_at(&da, t * bg),
                        Arg::buf_at(&u.sig, t * bg),
                        Arg::buf_at(&u.hs, (t + 1) * hb),
                        Arg::buf_at(&u.params, l.head_w),
                        at(dh_carry),
                        Arg::int(b),
                        Arg::int(h),
                        Arg::int(g),
                        Arg::F32(lr_span),
                    ],
                )?;
                rt.launch_default(
                    KernelId::LstmCellBackward,
                    &[
                        at(dh_carry),
                        at(dc_carry),
                        at(dgates),
                        at(gw_ih),
                        at(gw_hh),
                        at(gb_ih),
                        at(gb_hh),
                        Arg::buf_at(&u.params, l.w_ih),
                        Arg::buf_at(&u.params, l.w_hh),
                        Arg::buf_at(&u.xs, t * b * FEATURES),
                        Arg::buf_at(&u.hs, t * hb),
                        Arg::buf_at(&u.cs, t * hb),
                        Arg::buf_at(&u.gates, t * 4 * hb),
                        Arg::buf_at(&u.tanh_c, t * hb),
                        at(dh_total),
                        at(dc_carry),
                        Arg::int(b),
                        Arg::int(h),
                    ],
                )?;
            }
        }
        (None, Some(_)) => {
            for (t, &(o, _)) in tensors.iter().enumerate() {
                rt.launch_default(
                    KernelId::SchedulerHeadBackward,
                    &[
                        Arg::buf(dummy),
                        Arg::buf(dummy),
                        Arg::buf_at(&buf, o),
                        Arg::buf_at(&da, t * bg),
                        Arg::buf_at(&u.sig, t * bg),
                        Arg::buf(dummy),
                        Arg::buf(dummy),
                        Arg::buf(dummy),
                        Arg::int(b),
                        Arg::int(0),
                        Arg::int(g),
                        Arg::F32(lr_span),
                    ],
                )?;
            }
        }
        (None, None) => {}
    }
    Ok(PerTask { buf, tensors, grads_len, da, uu, hv })
}
