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
use crate::graph::Identified;
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
    /// A buffer from the pool for targets shaped as `t`.
    fn alloc(rt: &R, t: &Targets<f32>) -> Result<Self> {
        Ok(match t {
            Targets::Values(v) => Targs::Values(rt.alloc_pooled(v.len())?),
            Targets::Labels(l) => Targs::Labels(rt.alloc_pooled(l.len())?),
        })
    }

    /// Copies `t` in (one upload); `t` must be shaped as the buffer was allocated.
    fn copy_in(&mut self, rt: &R, t: &Targets<f32>) -> Result<()> {
        match (self, t) {
            (Targs::Values(b), Targets::Values(v)) => rt.copy_in(b, v),
            (Targs::Labels(b), Targets::Labels(l)) => rt.copy_in(b, l),
            _ => Err(invalid("targets of another kind than the buffers were allocated for")),
        }
    }

    fn id(&self) -> &dyn Identified {
        match self {
            Targs::Values(b) => b,
            Targs::Labels(b) => b,
        }
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
    lr_min: f32,
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
    /// Where the fixed rates `[T, B, G]` lie in `params` (fixed scheduler).
    fixed_at: Option<usize>,
    /// The layout's group offsets, uploaded into `offsets` with the inputs.
    offsets_host: Vec<i32>,
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

    /// The scheduler kind the unroll runs.
    fn kind(&self) -> SchedulerKind {
        match (&self.lstm, &self.lslr) {
            (Some(_), _) => SchedulerKind::Lstm,
            (None, Some(_)) => SchedulerKind::Lslr,
            (None, None) => SchedulerKind::Fixed,
        }
    }

    /// Every buffer, for a graph replay's check ([`Runtime::replay`]).
    fn bound(&self) -> Vec<&dyn Identified> {
        let singles: [&dyn Identified; 13] = [
            &self.params,
            &self.support_x,
            &self.query_x,
            self.support_y.id(),
            self.query_y.id(),
            &self.offsets,
            &self.sig,
            &self.xs,
            &self.hs,
            &self.cs,
            &self.gates,
            &self.tanh_c,
            &self.dummy,
        ];
        let mut all: Vec<&dyn Identified> = singles.into_iter().collect();
        all.extend([&self.v as &dyn Identified, &self.out]);
        all.extend(self.thetas.iter().chain(&self.grads).map(|b| b as &dyn Identified));
        for ws in self.workspaces.iter().chain([&self.qws]) {
            all.extend(ws.buffers().map(|b| b as &dyn Identified));
        }
        all
    }

    /// Copies the parameters (packed by [`pack`]) and the inputs of `batch` in: 6 uploads.
    fn upload(&mut self, rt: &R, packed: &[f32], batch: &TaskBatch<f32>) -> Result<()> {
        rt.copy_in(&mut self.params, packed)?;
        rt.copy_in(&mut self.support_x, &batch.support_x)?;
        rt.copy_in(&mut self.query_x, &batch.query_x)?;
        self.support_y.copy_in(rt, &batch.support_y)?;
        self.query_y.copy_in(rt, &batch.query_y)?;
        rt.copy_in(&mut self.offsets, &self.offsets_host)
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
    /// Elements of `buf` in use (zeroed at the start of the backward pass).
    len: usize,
    da: R::Buffer<f32>,
    uu: R::Buffer<f32>,
    hv: R::Buffer<f32>,
}

impl<R: Runtime> PerTask<R> {
    /// The per-task buffer and the backward pass's scratch for `u`, from the pool.
    fn alloc(rt: &R, u: &Unrolled<R>) -> Result<Self> {
        let (b, p, bg) = (u.b, u.p, u.b * u.g);
        let (tensors, grads_len, len) = per_task_layout(b, u.g, u.steps, u.hidden, u.kind());
        Ok(PerTask {
            buf: rt.alloc_pooled(len.max(1))?,
            tensors,
            grads_len,
            len,
            da: rt.alloc_pooled(u.steps * bg)?,
            uu: rt.alloc_pooled(b * p)?,
            hv: rt.alloc_pooled(b * p)?,
        })
    }

    fn bound(&self) -> [&dyn Identified; 4] {
        [&self.buf, &self.da, &self.uu, &self.hv]
    }

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
    let mut per_task = PerTask::alloc(rt, &u)?;
    backward(rt, &mut u, &mut per_task)?;
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
/// On a runtime opened with its own meta-step graphs ([`Runtime::step_graphs`]) the launches
/// are replayed from a captured graph (bitwise the same results).
pub fn device_meta_gradient_sum<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<DeviceGradientSum> {
    if let Some(graphs) = rt.step_graphs() {
        let mut graphs = graphs.lock().map_err(|_| CudaError::Graph("meta-step graphs poisoned".into()))?;
        return crate::graph_step::device_meta_gradient_sum_graphed(rt, &mut graphs, config, params, batch);
    }
    plain_sum(rt, config, params, batch)
}

/// [`device_meta_gradient_sum`] with plain launches.
pub(crate) fn plain_sum<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<DeviceGradientSum> {
    let mut step = SumStep::alloc(rt, config, params, batch)?;
    let result = step.upload(rt, batch).and_then(|()| step.record(rt)).and_then(|()| step.finish(rt, params));
    step.recycle(rt);
    result
}

/// The buffers of a worker's part of a meta-step ([`device_meta_gradient_sum`]): the unroll's
/// and the backward pass's. Allocated once per shape; [`crate::graph_step`] keeps them, with
/// the graph captured on them, from one meta-step to the next.
pub(crate) struct SumStep<R: Runtime> {
    u: Unrolled<R>,
    per_task: PerTask<R>,
    /// The parameters packed for upload, from the last [`SumStep::alloc`] or [`SumStep::upload`].
    packed: Vec<f32>,
}

impl<R: Runtime> SumStep<R> {
    /// Checks the inputs and allocates every buffer (from the pool) for `batch`'s shape.
    pub(crate) fn alloc(
        rt: &R,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
    ) -> Result<Self> {
        let (u, packed) = Unrolled::alloc(rt, config, params, batch, true, Outputs::PerTask)?;
        let per_task = PerTask::alloc(rt, &u)?;
        Ok(Self { u, per_task, packed })
    }

    /// Packs `params` again for the next upload (a later meta-step of the same shape).
    pub(crate) fn repack(&mut self, config: &Config, params: &Params<f32>) -> Result<()> {
        params.validate(config).map_err(|e| invalid(e.to_string()))?;
        self.packed = pack(config, params, self.u.b, self.u.p, self.u.g)?.data;
        Ok(())
    }

    /// Copies the packed parameters and `batch`'s inputs in (6 uploads).
    pub(crate) fn upload(&mut self, rt: &R, batch: &TaskBatch<f32>) -> Result<()> {
        let packed = std::mem::take(&mut self.packed);
        let r = self.u.upload(rt, &packed, batch);
        self.packed = packed;
        r
    }

    /// Everything between the uploads and the download, all on the device: zero fills, the
    /// forward and backward launches, and the copies of the per-task gradients into the
    /// result buffer. What a graph captures.
    pub(crate) fn record(&mut self, rt: &R) -> Result<()> {
        let (u, per_task) = (&mut self.u, &mut self.per_task);
        forward(rt, u)?;
        backward(rt, u, per_task)?;
        let bp = u.b * u.p;
        let theta_at = u.outputs_at();
        rt.copy_device(&mut u.out, theta_at, &u.v, 0..bp)?;
        if per_task.grads_len > 0 {
            rt.copy_device(&mut u.out, theta_at + bp, &per_task.buf, 0..per_task.grads_len)?;
        }
        Ok(())
    }

    /// Every buffer [`SumStep::record`] touches, for [`Runtime::replay`].
    pub(crate) fn bound(&self) -> Vec<&dyn Identified> {
        let mut all = self.u.bound();
        all.extend(self.per_task.bound());
        all
    }

    /// Downloads the result buffer (the one download and host wait) and sums the per-task
    /// gradients exactly, in task order.
    pub(crate) fn finish(&self, rt: &R, params: &Params<f32>) -> Result<DeviceGradientSum> {
        let (u, per_task) = (&self.u, &self.per_task);
        let (b, p, g) = (u.b, u.p, u.g);
        let theta_at = u.outputs_at();
        let phi_at = theta_at + b * p;
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
        let lr = rates_by_task(u, &out);
        Ok(DeviceGradientSum { sum, outer_loss, lr })
    }

    /// Replaces `v` by a fresh buffer (tests: the arena's buffers changing under a graph).
    #[cfg(test)]
    pub(crate) fn replace_v(&mut self, rt: &R) -> Result<()> {
        let fresh = rt.alloc(self.u.v.len())?;
        let old = std::mem::replace(&mut self.u.v, fresh);
        rt.recycle(old);
        Ok(())
    }

    /// Gives every buffer back to the runtime's pool.
    pub(crate) fn recycle(self, rt: &R) {
        self.per_task.recycle(rt);
        self.u.recycle(rt);
    }
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

/// The parameters packed into one upload: theta_0 per task, phi, the fixed rates; and where
/// each part lies.
struct Packed {
    data: Vec<f32>,
    lstm: Option<LstmAt>,
    lslr: Option<usize>,
    fixed_at: Option<usize>,
}

/// Packs `params` for `b` tasks (`p` parameters, `g` groups; `params` validated).
fn pack(config: &Config, params: &Params<f32>, b: usize, p: usize, g: usize) -> Result<Packed> {
    let s = &config.scheduler;
    let steps = config.inner.steps;
    let mut data = Vec::with_capacity(b * p);
    for _ in 0..b {
        data.extend_from_slice(&params.theta);
    }
    let mut push = |v: &[f32]| {
        data.extend_from_slice(v);
        data.len() - v.len()
    };
    let lstm = match s.kind {
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
    let lslr = match s.kind {
        SchedulerKind::Lslr => {
            let z = params.lslr.as_ref().ok_or_else(|| invalid("the lslr scheduler needs phi.lslr.z"))?;
            Some(push(z))
        }
        _ => None,
    };
    let fixed_at = (s.kind == SchedulerKind::Fixed).then(|| push(&vec![s.lr_fixed as f32; steps * b * g]));
    Ok(Packed { data, lstm, lslr, fixed_at })
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
    let (mut u, packed) = Unrolled::alloc(rt, config, params, batch, for_backward, outputs)?;
    u.upload(rt, &packed, batch)?;
    forward(rt, &mut u)?;
    Ok(u)
}

impl<R: Runtime> Unrolled<R> {
    /// Checks the inputs, packs the parameters, and allocates (from the pool) every buffer of
    /// the unroll of `batch`; nothing is uploaded yet ([`Unrolled::upload`]).
    fn alloc(
        rt: &R,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
        for_backward: bool,
        outputs: Outputs,
    ) -> Result<(Self, Vec<f32>)> {
        config.validate().map_err(|e| invalid(e.to_string()))?;
        params.validate(config).map_err(|e| invalid(e.to_string()))?;
        batch.validate(config).map_err(|e| invalid(e.to_string()))?;

        let mlp = DeviceMlp::from_config(config);
        let layout = mlp.layout().clone();
        let (p, g) = (layout.len(), layout.groups());
        let (b, steps) = (batch.b, config.inner.steps);
        let s = &config.scheduler;
        let hidden = if s.kind == SchedulerKind::Lstm { s.hidden } else { 0 };
        let bg = b * g;
        let packed = pack(config, params, b, p, g)?;
        let hb = b * hidden.max(1);
        let second_order = !config.inner.first_order && for_backward;
        let qws = mlp.workspace_pooled(rt, b, batch.q)?;
        let extra = match outputs {
            Outputs::Mean => params.buffers().iter().map(|x| x.len()).sum(),
            Outputs::PerTask => b * p + per_task_layout(b, g, steps, hidden, s.kind).1,
            Outputs::Evaluation => qws.out().len(),
        };
        let u = Unrolled {
            p,
            g,
            b,
            steps,
            hidden,
            lr_min: s.lr_min as f32,
            lr_span: (s.lr_max - s.lr_min) as f32,
            second_order,
            params: rt.alloc_pooled(packed.data.len())?,
            support_x: rt.alloc_pooled(batch.support_x.len())?,
            query_x: rt.alloc_pooled(batch.query_x.len())?,
            support_y: Targs::alloc(rt, &batch.support_y)?,
            query_y: Targs::alloc(rt, &batch.query_y)?,
            offsets: rt.alloc_pooled(layout.offsets.len())?,
            offsets_host: layout.offsets.iter().map(|&o| o as i32).collect(),
            lstm: packed.lstm,
            lslr: packed.lslr,
            fixed_at: packed.fixed_at,
            thetas: (0..steps).map(|_| rt.alloc_pooled(b * p)).collect::<Result<_>>()?,
            grads: (0..steps).map(|_| rt.alloc_pooled(b * p)).collect::<Result<_>>()?,
            workspaces: (0..if second_order { steps } else { 1 })
                .map(|_| mlp.workspace_pooled(rt, b, batch.k))
                .collect::<Result<_>>()?,
            sig: rt.alloc_pooled(steps * bg)?,
            xs: rt.alloc_pooled(steps * b * FEATURES)?,
            hs: rt.alloc_pooled((steps + 1) * hb)?,
            cs: rt.alloc_pooled((steps + 1) * hb)?,
            gates: rt.alloc_pooled(steps * 4 * hb)?,
            tanh_c: rt.alloc_pooled(steps * hb)?,
            // A one-element placeholder for the head's unused pointers (LSLR: hidden = 0).
            dummy: rt.alloc_pooled(1)?,
            v: rt.alloc_pooled(b * p)?,
            out: rt.alloc_pooled(b + steps * bg + extra)?,
            qws,
            mlp,
        };
        Ok((u, packed.data))
    }
}

/// The forward pass of an unroll whose inputs are uploaded: zero fills and device copies,
/// then the launches of every inner step, the query loss and its gradient (no upload, no
/// download, no wait: a graph can capture it).
fn forward<R: Runtime>(rt: &R, u: &mut Unrolled<R>) -> Result<()> {
    let (b, p, g, steps, hidden) = (u.b, u.p, u.g, u.steps, u.hidden);
    let (hb, bg) = (u.hb(), b * g);
    let (second_order, lr_min, lr_span) = (u.second_order, u.lr_min, u.lr_span);
    if u.lstm.is_some() {
        rt.zero(&mut u.hs, 0..hb)?;
        rt.zero(&mut u.cs, 0..hb)?;
    }
    if let Some(at) = u.fixed_at {
        rt.copy_device(&mut u.out, b, &u.params, at..at + steps * bg)?;
    }
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
    Ok(())
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
fn backward<R: Runtime>(rt: &R, u: &mut Unrolled<R>, pt: &mut PerTask<R>) -> Result<()> {
    let (b, p, g, steps, h, lr_span) = (u.b, u.p, u.g, u.steps, u.hidden, u.lr_span);
    let (hb, bg) = (u.hb(), b * g);
    if pt.len > 0 {
        rt.zero(&mut pt.buf, 0..pt.len)?;
    }
    let PerTask { buf, tensors, grads_len, da, uu, hv, .. } = pt;
    let (buf, grads_len, da, uu, hv) = (&*buf, *grads_len, &*da, &*uu, &*hv);
    for t in (0..steps).rev() {
        rt.launch_default(
            KernelId::SgdUpdateBackward,
            &[
                Arg::buf_at(da, t * bg),
                Arg::buf(uu),
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
            u.mlp.hvp(rt, &mut u.workspaces[t], hv, theta, &u.support_x, uu)?;
            rt.launch_default(
                KernelId::VectorAxpy,
                &[Arg::buf(&u.v), Arg::buf(hv), Arg::F32(-1.0), Arg::int(b * p)],
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
            let at = |o: usize| Arg::buf_at(buf, o);
            for t in (0..steps).rev() {
                rt.launch_default(
                    KernelId::SchedulerHeadBackward,
                    &[
                        at(dh_total),
                        at(g_head_w),
                        at(g_head_b),
                        Arg::buf_at(da, t * bg),
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
                        Arg::buf_at(buf, o),
                        Arg::buf_at(da, t * bg),
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
    Ok(())
}
