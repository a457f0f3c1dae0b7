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

use metasched_engine::{Config, MetaGradient, Params, SchedulerKind, Targets, TaskBatch};

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

/// `J`, per-task query losses, rates `[B, T, G]` and the mean meta-gradient of `batch`,
/// computed on `rt`. Checks the inputs as the engine does; phi tensors of kinds other than the
/// configured one get zero gradients.
pub fn device_meta_gradient<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<MetaGradient<f32>> {
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
    let second_order = !config.inner.first_order;
    let scale = 1.0f32 / b as f32;

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

    // Query loss and v_T = (1/B) grad L_query(theta_T).
    let mut qws = mlp.workspace(rt, b, batch.q)?;
    let v = rt.alloc::<f32>(b * p)?;
    mlp.loss_and_grad(rt, &mut qws, &v, &thetas[steps], &query_x, query_y.get())?;
    let outer_loss = rt.download(qws.loss())?;
    rt.launch_default(KernelId::VectorScale, &[Arg::buf(&v), Arg::F32(scale), Arg::int(b * p)])?;

    // The v recursion, t = T-1 .. 0, with dJ/da_t of every step.
    let da: Vec<R::Buffer<f32>> = (0..steps).map(|_| rt.alloc::<f32>(b * g)).collect::<Result<_>>()?;
    let u = rt.alloc::<f32>(b * p)?;
    let hv = rt.alloc::<f32>(b * p)?;
    for t in (0..steps).rev() {
        rt.launch_default(
            KernelId::SgdUpdateBackward,
            &[
                Arg::buf(&da[t]),
                Arg::buf(&u),
                Arg::buf(&v),
                Arg::buf(&grads[t]),
                Arg::buf(&rates[t]),
                Arg::buf(&offsets),
                Arg::int(b),
                Arg::int(p),
                Arg::int(g),
            ],
        )?;
        if second_order {
            mlp.hvp(rt, &mut workspaces[t], &hv, &thetas[t], &support_x, &u)?;
            rt.launch_default(
                KernelId::VectorAxpy,
                &[Arg::buf(&v), Arg::buf(&hv), Arg::F32(-1.0), Arg::int(b * p)],
            )?;
        }
    }

    // Gradients: theta from v_0, phi from every dJ/da_t.
    let mut grad = params.zeros_like();
    grad.theta = task_sum(rt, &v, b, p)?;
    match (&lstm, &lslr) {
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
                        Arg::buf(&sig[t]),
                        Arg::buf(&hs[t + 1]),
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
                        Arg::buf(&xs[t]),
                        Arg::buf(&hs[t]),
                        Arg::buf(&cs[t]),
                        Arg::buf(&gates[t]),
                        Arg::buf(&tanh_c[t]),
                        Arg::buf(&dh_total),
                        Arg::buf(&dc_carry),
                        Arg::int(b),
                        Arg::int(h),
                    ],
                )?;
            }
            let gl = grad.lstm.as_mut().ok_or_else(|| invalid("gradient lacks the lstm slots"))?;
            gl.w_ih = task_sum(rt, &gw_ih, b, 4 * h * FEATURES)?;
            gl.w_hh = task_sum(rt, &gw_hh, b, 4 * h * h)?;
            gl.b_ih = task_sum(rt, &gb_ih, b, 4 * h)?;
            gl.b_hh = task_sum(rt, &gb_hh, b, 4 * h)?;
            gl.head_w = task_sum(rt, &g_head_w, b, g * h)?;
            gl.head_b = task_sum(rt, &g_head_b, b, g)?;
        }
        (None, Some(_)) => {
            let gz = grad.lslr.as_mut().ok_or_else(|| invalid("gradient lacks the lslr slot"))?;
            for t in 0..steps {
                let per_task = rt.alloc::<f32>(b * g)?;
                rt.launch_default(
                    KernelId::SchedulerHeadBackward,
                    &[
                        Arg::buf(&dummy),
                        Arg::buf(&dummy),
                        Arg::buf(&per_task),
                        Arg::buf(&da[t]),
                        Arg::buf(&sig[t]),
                        Arg::buf(&dummy),
                        Arg::buf(&dummy),
                        Arg::buf(&dummy),
                        Arg::int(b),
                        Arg::int(0),
                        Arg::int(g),
                        Arg::F32(lr_span),
                    ],
                )?;
                gz[t * g..(t + 1) * g].copy_from_slice(&task_sum(rt, &per_task, b, g)?);
            }
        }
        (None, None) => {}
    }

    // Rates [B, T, G] from the per-step [B, G] buffers.
    let per_step: Vec<Vec<f32>> = rates.iter().map(|r| rt.download(r)).collect::<Result<_>>()?;
    let mut lr = Vec::with_capacity(b * steps * g);
    for task in 0..b {
        for step in &per_step {
            lr.extend_from_slice(&step[task * g..(task + 1) * g]);
        }
    }
    let j = outer_loss.iter().copied().fold(0.0f32, |a, x| a + x) * scale;
    Ok(MetaGradient { j, outer_loss, lr, grad })
}
