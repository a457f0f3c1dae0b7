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
//! Two more entry points share the passes: [`device_meta_gradient_sum`] (a worker's part of a
//! meta-step: per-task gradients summed exactly in fixed point, as the CPU engine's part sums
//! are) and [`device_evaluate`] (the forward pass only, for evaluation).

use metasched_engine::{
    Config, Evaluation, FixedSum, MetaGradient, Params, SchedulerKind, Targets, TaskBatch,
};

use crate::error::{CudaError, Result};
use crate::kernels::{FEATURES, KernelId};
use crate::learner::{DeviceMlp, DeviceTargets, MlpWorkspace};
use crate::runtime::{Arg, Runtime};

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
            Targets::Values(v) => Targs::Values(rt.upload(v)?),
            Targets::Labels(l) => Targs::Labels(rt.upload(l)?),
        })
    }

    fn get(&self) -> DeviceTargets<'_, R> {
        match self {
            Targs::Values(b) => DeviceTargets::Values(b),
            Targs::Labels(b) => DeviceTargets::Labels(b),
        }
    }
}

/// The scheduler's phi tensors on the device.
struct DeviceLstm<R: Runtime> {
    w_ih: R::Buffer<f32>,
    w_hh: R::Buffer<f32>,
    b_ih: R::Buffer<f32>,
    b_hh: R::Buffer<f32>,
    head_w: R::Buffer<f32>,
    head_b: R::Buffer<f32>,
}

/// Sums a per-task buffer `[B, n]` over tasks in task order and downloads the result.
fn task_sum<R: Runtime>(rt: &R, per_task: &R::Buffer<f32>, tasks: usize, n: usize) -> Result<Vec<f32>> {
    let out = rt.alloc::<f32>(n)?;
    rt.launch_default(
        KernelId::TaskSum,
        &[Arg::buf(&out), Arg::buf(per_task), Arg::int(tasks), Arg::int(n)],
    )?;
    rt.download(&out)
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
    support_x: R::Buffer<f32>,
    offsets: R::Buffer<i32>,
    lstm: Option<DeviceLstm<R>>,
    lslr: Option<R::Buffer<f32>>,
    thetas: Vec<R::Buffer<f32>>,
    grads: Vec<R::Buffer<f32>>,
    workspaces: Vec<MlpWorkspace<R>>,
    rates: Vec<R::Buffer<f32>>,
    sig: Vec<R::Buffer<f32>>,
    xs: Vec<R::Buffer<f32>>,
    hs: Vec<R::Buffer<f32>>,
    cs: Vec<R::Buffer<f32>>,
    gates: Vec<R::Buffer<f32>>,
    tanh_c: Vec<R::Buffer<f32>>,
    dummy: R::Buffer<f32>,
    /// The query workspace at `theta_T` (its output gives the accuracy).
    qws: MlpWorkspace<R>,
    /// `grad L_query(theta_T)` per task, unscaled, `[B, P]`.
    v: R::Buffer<f32>,
    outer_loss: Vec<f32>,
}

/// Per-task gradients of phi on the device (theta's, `[B, P]`, stay in `Unrolled::v`): the LSTM's tensors `[B, n]` each, or
/// the LSLR table's rows `[B, G]` per step.
struct PerTaskGrads<R: Runtime> {
    lstm: Option<[(R::Buffer<f32>, usize); 6]>,
    lslr: Vec<R::Buffer<f32>>,
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
    let mut u = unroll(rt, config, params, batch, true)?;
    let (b, p, g) = (u.b, u.p, u.g);
    let scale = 1.0f32 / b as f32;
    rt.launch_default(KernelId::VectorScale, &[Arg::buf(&u.v), Arg::F32(scale), Arg::int(b * p)])?;
    let per_task = backward(rt, &mut u)?;
    let mut grad = params.zeros_like();
    grad.theta = task_sum(rt, &u.v, b, p)?;
    if let (Some(bufs), Some(gl)) = (&per_task.lstm, grad.lstm.as_mut()) {
        let dst = [&mut gl.w_ih, &mut gl.w_hh, &mut gl.b_ih, &mut gl.b_hh, &mut gl.head_w, &mut gl.head_b];
        for ((buf, n), d) in bufs.iter().zip(dst) {
            *d = task_sum(rt, buf, b, *n)?;
        }
    }
    if let Some(gz) = grad.lslr.as_mut() {
        for (t, buf) in per_task.lslr.iter().enumerate() {
            gz[t * g..(t + 1) * g].copy_from_slice(&task_sum(rt, buf, b, g)?);
        }
    }
    let lr = rates_by_task(rt, &u)?;
    let j = u.outer_loss.iter().copied().fold(0.0f32, |a, x| a + x) * scale;
    Ok(MetaGradient { j, outer_loss: u.outer_loss, lr, grad })
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
    let mut u = unroll(rt, config, params, batch, true)?;
    let (b, g) = (u.b, u.g);
    let per_task = backward(rt, &mut u)?;
    let theta = rt.download(&u.v)?;
    let lstm: Vec<(Vec<f32>, usize)> = match &per_task.lstm {
        Some(bufs) => bufs.iter().map(|(buf, n)| Ok((rt.download(buf)?, *n))).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let lslr: Vec<Vec<f32>> = per_task.lslr.iter().map(|buf| rt.download(buf)).collect::<Result<_>>()?;
    let mut sum = FixedSum::zeros(params.buffers().iter().map(|x| x.len()).sum());
    let mut task_grad = params.zeros_like();
    for task in 0..b {
        task_grad.theta.copy_from_slice(&theta[task * u.p..(task + 1) * u.p]);
        if let Some(gl) = task_grad.lstm.as_mut() {
            let dst =
                [&mut gl.w_ih, &mut gl.w_hh, &mut gl.b_ih, &mut gl.b_hh, &mut gl.head_w, &mut gl.head_b];
            for ((src, n), d) in lstm.iter().zip(dst) {
                d.copy_from_slice(&src[task * n..(task + 1) * n]);
            }
        }
        if let Some(gz) = task_grad.lslr.as_mut() {
            for (t, src) in lslr.iter().enumerate() {
                gz[t * g..(t + 1) * g].copy_from_slice(&src[task * g..(task + 1) * g]);
            }
        }
        sum.add_params(&task_grad);
    }
    let lr = rates_by_task(rt, &u)?;
    Ok(DeviceGradientSum { sum, outer_loss: u.outer_loss, lr })
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
    let u = unroll(rt, config, params, batch, false)?;
    let lr = rates_by_task(rt, &u)?;
    let accuracy = match &batch.query_y {
        Targets::Labels(labels) => {
            let logits = rt.download(u.qws.out())?;
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
    let mean = u.outer_loss.iter().copied().fold(0.0f32, |a, x| a + x) / batch.b.max(1) as f32;
    Ok(Evaluation { mean, outer_loss: u.outer_loss, lr, accuracy })
}

/// Rates `[B, T, G]` from the per-step `[B, G]` buffers.
fn rates_by_task<R: Runtime>(rt: &R, u: &Unrolled<R>) -> Result<Vec<f32>> {
    let per_step: Vec<Vec<f32>> = u.rates.iter().map(|r| rt.download(r)).collect::<Result<_>>()?;
    let g = u.g;
    let mut lr = Vec::with_capacity(u.b * u.steps * g);
    for task in 0..u.b {
        for step in &per_step {
            lr.extend_from_slice(&step[task * g..(task + 1) * g]);
        }
    }
    Ok(lr)
}

/// Runs the inner loop of every task forward and the query loss and gradient at `theta_T`.
fn unroll<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
    for_backward: bool,
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

    // Inputs.
    let support_x = rt.upload(&batch.support_x)?;
    let query_x = rt.upload(&batch.query_x)?;
    let support_y = Targs::upload(rt, &batch.support_y)?;
    let query_y = Targs::upload(rt, &batch.query_y)?;
    let offsets: Vec<i32> = layout.offsets.iter().map(|&o| o as i32).collect();
    let offsets = rt.upload(&offsets)?;
    let mut theta0 = Vec::with_capacity(b * p);
    for _ in 0..b {
        theta0.extend_from_slice(&params.theta);
    }
    let lstm = match kind {
        SchedulerKind::Lstm => {
            let l = params.lstm.as_ref().ok_or_else(|| invalid("the lstm scheduler needs phi.lstm"))?;
            Some(DeviceLstm::<R> {
                w_ih: rt.upload(&l.w_ih)?,
                w_hh: rt.upload(&l.w_hh)?,
                b_ih: rt.upload(&l.b_ih)?,
                b_hh: rt.upload(&l.b_hh)?,
                head_w: rt.upload(&l.head_w)?,
                head_b: rt.upload(&l.head_b)?,
            })
        }
        _ => None,
    };
    let lslr = match kind {
        SchedulerKind::Lslr => {
            let z = params.lslr.as_ref().ok_or_else(|| invalid("the lslr scheduler needs phi.lslr.z"))?;
            Some(rt.upload(z)?)
        }
        _ => None,
    };

    // Forward state, per step.
    let mut thetas = Vec::with_capacity(steps + 1);
    thetas.push(rt.upload(&theta0)?);
    let grads: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(b * p)).collect::<Result<_>>()?;
    let mut workspaces: Vec<MlpWorkspace<R>> = (0..if second_order { steps } else { 1 })
        .map(|_| mlp.workspace(rt, b, batch.k))
        .collect::<Result<_>>()?;
    let fixed_rates = vec![s.lr_fixed as f32; b * g];
    let rates: Vec<R::Buffer<f32>> = (0..steps)
        .map(|_| if kind == SchedulerKind::Fixed { rt.upload(&fixed_rates) } else { rt.alloc::<f32>(b * g) })
        .collect::<Result<_>>()?;
    let sig: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(b * g)).collect::<Result<_>>()?;
    let xs: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(b * FEATURES)).collect::<Result<_>>()?;
    let hb = b * hidden.max(1);
    let hs: Vec<R::Buffer<f32>> = (0..=steps).map(|_| rt.alloc::<f32>(hb)).collect::<Result<_>>()?;
    let cs: Vec<R::Buffer<f32>> = (0..=steps).map(|_| rt.alloc::<f32>(hb)).collect::<Result<_>>()?;
    let gates: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(4 * hb)).collect::<Result<_>>()?;
    let tanh_c: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(hb)).collect::<Result<_>>()?;
    // A one-element placeholder for the head's unused pointers (LSLR: hidden = 0).
    let dummy = rt.alloc::<f32>(1)?;

    for t in 0..steps {
        let ws = &mut workspaces[if second_order { t } else { 0 }];
        mlp.loss_and_grad(rt, ws, &grads[t], &thetas[t], &support_x, support_y.get())?;
        rt.launch_default(
            KernelId::SchedulerFeatures,
            &[
                Arg::buf(&xs[t]),
                Arg::buf(ws.loss()),
                Arg::buf(&grads[t]),
                Arg::int(b),
                Arg::int(p),
                Arg::int(t),
                Arg::int(steps),
            ],
        )?;
        match (&lstm, &lslr) {
            (Some(l), _) => {
                rt.launch_default(
                    KernelId::LstmCellForward,
                    &[
                        Arg::buf(&hs[t + 1]),
                        Arg::buf(&cs[t + 1]),
                        Arg::buf(&gates[t]),
                        Arg::buf(&tanh_c[t]),
                        Arg::buf(&l.w_ih),
                        Arg::buf(&l.w_hh),
                        Arg::buf(&l.b_ih),
                        Arg::buf(&l.b_hh),
                        Arg::buf(&xs[t]),
                        Arg::buf(&hs[t]),
                        Arg::buf(&cs[t]),
                        Arg::int(b),
                        Arg::int(hidden),
                    ],
                )?;
                rt.launch_default(
                    KernelId::SchedulerHeadForward,
                    &[
                        Arg::buf(&sig[t]),
                        Arg::buf(&rates[t]),
                        Arg::buf(&hs[t + 1]),
                        Arg::buf(&l.head_w),
                        Arg::buf(&l.head_b),
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
                    Arg::buf(&sig[t]),
                    Arg::buf(&rates[t]),
                    Arg::buf(&dummy),
                    Arg::buf(&dummy),
                    Arg::buf_at(z, t * g),
                    Arg::int(b),
                    Arg::int(0),
                    Arg::int(g),
                    Arg::F32(lr_min),
                    Arg::F32(lr_span),
                ],
            )?,
            (None, None) => {} // fixed: the rates were uploaded
        }
        let next = rt.alloc::<f32>(b * p)?;
        rt.launch_default(
            KernelId::SgdUpdateForward,
            &[
                Arg::buf(&next),
                Arg::buf(&thetas[t]),
                Arg::buf(&grads[t]),
                Arg::buf(&rates[t]),
                Arg::buf(&offsets),
                Arg::int(b),
                Arg::int(p),
                Arg::int(g),
            ],
        )?;
        thetas.push(next);
    }

    // Query loss and its gradient at theta_T (the caller scales it).
    let mut qws = mlp.workspace(rt, b, batch.q)?;
    let v = rt.alloc::<f32>(b * p)?;
    mlp.loss_and_grad(rt, &mut qws, &v, &thetas[steps], &query_x, query_y.get())?;
    let outer_loss = rt.download(qws.loss())?;
    Ok(Unrolled {
        mlp,
        p,
        g,
        b,
        steps,
        hidden,
        lr_span,
        second_order,
        support_x,
        offsets,
        lstm,
        lslr,
        thetas,
        grads,
        workspaces,
        rates,
        sig,
        xs,
        hs,
        cs,
        gates,
        tanh_c,
        dummy,
        qws,
        v,
        outer_loss,
    })
}

/// The backward pass from `v_T` (already scaled): the `v` recursion with every `dJ/da_t`,
/// then phi's per-task gradients (head and LSTM by BPTT, or the LSLR table). Leaves `v_0`, the
/// per-task theta gradient, in `u.v`.
fn backward<R: Runtime>(rt: &R, u: &mut Unrolled<R>) -> Result<PerTaskGrads<R>> {
    let (b, p, g, steps, hidden, lr_span) = (u.b, u.p, u.g, u.steps, u.hidden, u.lr_span);
    let da: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(b * g)).collect::<Result<_>>()?;
    let uu = rt.alloc::<f32>(b * p)?;
    let hv = rt.alloc::<f32>(b * p)?;
    for t in (0..steps).rev() {
        rt.launch_default(
            KernelId::SgdUpdateBackward,
            &[
                Arg::buf(&da[t]),
                Arg::buf(&uu),
                Arg::buf(&u.v),
                Arg::buf(&u.grads[t]),
                Arg::buf(&u.rates[t]),
                Arg::buf(&u.offsets),
                Arg::int(b),
                Arg::int(p),
                Arg::int(g),
            ],
        )?;
        if u.second_order {
            u.mlp.hvp(rt, &mut u.workspaces[t], &hv, &u.thetas[t], &u.support_x, &uu)?;
            rt.launch_default(
                KernelId::VectorAxpy,
                &[Arg::buf(&u.v), Arg::buf(&hv), Arg::F32(-1.0), Arg::int(b * p)],
            )?;
        }
    }

    let dummy = &u.dummy;
    let mut out = PerTaskGrads { lstm: None, lslr: Vec::new() };
    match (&u.lstm, &u.lslr) {
        (Some(l), _) => {
            let h = hidden;
            let per_task = |n: usize| rt.alloc::<f32>(b * n);
            let (gw_ih, gw_hh) = (per_task(4 * h * FEATURES)?, per_task(4 * h * h)?);
            let (gb_ih, gb_hh) = (per_task(4 * h)?, per_task(4 * h)?);
            let (g_head_w, g_head_b) = (per_task(g * h)?, per_task(g)?);
            let (dh_carry, dc_carry, dh_total) = (per_task(h)?, per_task(h)?, per_task(h)?);
            let dgates = per_task(4 * h)?;
            for t in (0..steps).rev() {
                rt.launch_default(
                    KernelId::SchedulerHeadBackward,
                    &[
                        Arg::buf(&dh_total),
                        Arg::buf(&g_head_w),
                        Arg::buf(&g_head_b),
                        Arg::buf(&da[t]),
                        Arg::buf(&u.sig[t]),
                        Arg::buf(&u.hs[t + 1]),
                        Arg::buf(&l.head_w),
                        Arg::buf(&dh_carry),
                        Arg::int(b),
                        Arg::int(h),
                        Arg::int(g),
                        Arg::F32(lr_span),
                    ],
                )?;
                rt.launch_default(
                    KernelId::LstmCellBackward,
                    &[
                        Arg::buf(&dh_carry),
                        Arg::buf(&dc_carry),
                        Arg::buf(&dgates),
                        Arg::buf(&gw_ih),
                        Arg::buf(&gw_hh),
                        Arg::buf(&gb_ih),
                        Arg::buf(&gb_hh),
                        Arg::buf(&l.w_ih),
                        Arg::buf(&l.w_hh),
                        Arg::buf(&u.xs[t]),
                        Arg::buf(&u.hs[t]),
                        Arg::buf(&u.cs[t]),
                        Arg::buf(&u.gates[t]),
                        Arg::buf(&u.tanh_c[t]),
                        Arg::buf(&dh_total),
                        Arg::buf(&dc_carry),
                        Arg::int(b),
                        Arg::int(h),
                    ],
                )?;
            }
            out.lstm = Some([
                (gw_ih, 4 * h * FEATURES),
                (gw_hh, 4 * h * h),
                (gb_ih, 4 * h),
                (gb_hh, 4 * h),
                (g_head_w, g * h),
                (g_head_b, g),
            ]);
        }
        (None, Some(_)) => {
            for (da_t, sig_t) in da.iter().zip(&u.sig) {
                let per_task = rt.alloc::<f32>(b * g)?;
                rt.launch_default(
                    KernelId::SchedulerHeadBackward,
                    &[
                        Arg::buf(dummy),
                        Arg::buf(dummy),
                        Arg::buf(&per_task),
                        Arg::buf(da_t),
                        Arg::buf(sig_t),
                        Arg::buf(dummy),
                        Arg::buf(dummy),
                        Arg::buf(dummy),
                        Arg::int(b),
                        Arg::int(0),
                        Arg::int(g),
                        Arg::F32(lr_span),
                    ],
                )?;
                out.lslr.push(per_task);
            }
        }
        (None, None) => {}
    }
    Ok(out)
}
