//! `kernels/scheduler.cu`: the scheduler glue of a meta-step on the device — input features,
//! the rate head forward and backward, the task sum of per-task gradients, and two vector
//! updates. CPU twins: the scheduler code of the engine (`inner_loop.rs`, `SchedulerTrace`,
//! `Engine::meta_gradient_range`; see the top of `scheduler.cu`). Contract, cost and check
//! together; the parameter lists come from the `.cu` signatures (`build.rs`).

use super::contract::{Contract, GridNeed, Requirements};
use super::cost::{Cost, Scalars};
use super::{DEFAULT_BLOCK, FEATURES, KernelId};
use crate::error::Result;
use crate::runtime::Dim3;

/// Buffer lengths and launch shape: features and the head one block per task, the task sum
/// and vector updates one thread per element.
pub(crate) fn requirements(kernel: KernelId, mut c: Contract<'_>) -> Result<Requirements> {
    let block = Dim3::x(DEFAULT_BLOCK);
    Ok(match kernel {
        KernelId::SchedulerFeatures => {
            let b = c.size("tasks", 1)?;
            let np = c.size("params", 1)?;
            c.size("step", 0)?;
            c.size("steps", 1)?;
            c.need("x", c.fits("tasks·features", b * FEATURES as u64)?)?;
            c.need("loss", b)?;
            c.need("grad", c.fits("tasks·params", b * np)?)?;
            let grid = c.blocks(b, 1)?;
            c.linear(block, grid, 0)
        }
        KernelId::SchedulerHeadForward | KernelId::SchedulerHeadBackward => {
            let b = c.size("tasks", 1)?;
            let h = c.size("hidden", 0)?;
            let g = c.size("groups", 1)?;
            let (bg, bh) = (c.fits("tasks·groups", b * g)?, c.fits("tasks·hidden", b * h)?);
            c.need("h", bh)?;
            c.need("head_w", c.fits("groups·hidden", g * h)?)?;
            c.need("sig", bg)?;
            let (wide, shared) = if kernel == KernelId::SchedulerHeadForward {
                c.need("rates", bg)?;
                c.need("head_b", g)?;
                (g, 0)
            } else {
                c.need("gb", bg)?;
                c.need("da", bg)?;
                c.need("gw", c.fits("tasks·groups·hidden", bg * h)?)?;
                c.need("dh", bh)?;
                c.need("dh_carry", bh)?;
                (g.max(h), g as usize * 4)
            };
            let threads = (wide.div_ceil(32) * 32).min(u64::from(DEFAULT_BLOCK)) as u32;
            let grid = c.blocks(b, 1)?;
            c.linear(Dim3::x(threads), grid, shared)
        }
        KernelId::TaskSum => {
            let b = c.size("tasks", 1)?;
            let n = c.size("count", 1)?;
            c.need("out", n)?;
            c.need("per_task", c.fits("tasks·count", b * n)?)?;
            c.linear(block, GridNeed::Threads(n), 0)
        }
        _ => {
            let n = c.size("count", 1)?;
            c.need("y", n)?;
            if kernel == KernelId::VectorAxpy {
                c.need("x", n)?;
            }
            c.linear(block, GridNeed::Threads(n), 0)
        }
    })
}

/// Bytes and FLOPs (the formulas at the top of `scheduler.cu`).
pub(crate) fn cost(kernel: KernelId, s: &Scalars<'_>) -> Result<Cost> {
    Ok(match kernel {
        KernelId::SchedulerFeatures => {
            let (b, p) = (s.get("tasks")?, s.get("params")?);
            Cost::floats(b * p + b + 3 * b, 2 * b * p)
        }
        KernelId::SchedulerHeadForward => {
            let (b, h, g) = (s.get("tasks")?, s.get("hidden")?, s.get("groups")?);
            Cost::floats(b * h + g * h + g + 2 * b * g, 2 * b * g * h + 4 * b * g)
        }
        KernelId::SchedulerHeadBackward => {
            let (b, h, g) = (s.get("tasks")?, s.get("hidden")?, s.get("groups")?);
            Cost::floats(
                2 * b * g + b * h + g * h + 2 * b * g * h + 2 * b * g + 2 * b * h,
                4 * b * g + 4 * b * g * h,
            )
        }
        KernelId::TaskSum => {
            let (b, n) = (s.get("tasks")?, s.get("count")?);
            Cost::floats((b + 1) * n, b * n)
        }
        KernelId::VectorAxpy => {
            let n = s.get("count")?;
            Cost::floats(3 * n, 2 * n)
        }
        _ => {
            let n = s.get("count")?;
            Cost::floats(2 * n, n)
        }
    })
}

#[cfg(feature = "checks")]
pub(crate) use check::check;

/// The checks against the engine's scheduler arithmetic.
#[cfg(feature = "checks")]
mod check {
    use metasched_engine::config::FEATURES;
    use metasched_engine::linalg::{axpy, dot};
    use metasched_engine::lstm_cell::sigmoid;

    use crate::checks::harness::{In, launch};
    use crate::checks::{Comparison, randn, uniform};
    use crate::error::Result;
    use crate::kernels::KernelId;
    use crate::runtime::Runtime;

    /// `(tasks, hidden, groups)`: the default LSTM scheduler (H = 20, G = 6), more groups
    /// than a warp, more groups than threads, and the LSLR table (H = 0: `z = head_b`).
    const HEAD_SHAPES: [(usize, usize, usize); 4] = [(5, 20, 6), (3, 37, 40), (2, 30, 300), (4, 0, 6)];
    const LR_MIN: f32 = 0.01;
    const LR_SPAN: f32 = 0.49;

    /// Runs `kernel`'s check on `rt` into `cmp`.
    pub(crate) fn check<R: Runtime>(rt: &R, kernel: KernelId, cmp: &mut Comparison) -> Result<()> {
        match kernel {
            KernelId::SchedulerFeatures => features(rt, cmp),
            KernelId::SchedulerHeadForward => head_forward(rt, cmp),
            KernelId::SchedulerHeadBackward => head_backward(rt, cmp),
            KernelId::TaskSum => task_sum(rt, cmp),
            KernelId::VectorAxpy => vector_axpy(rt, cmp),
            _ => vector_scale(rt, cmp),
        }
    }

    /// The engine's scheduler features of one step (`features` in
    /// crates/engine/src/inner_loop.rs, which is private there, restated with the same
    /// expression): `x = [ln(loss + 1e-8), ln(‖g‖₂ + 1e-8), t / T]` per task.
    fn features_ref(x: &mut Vec<f32>, loss: &[f32], grad: &[f32], params: usize, t: usize, steps: usize) {
        let eps = 1e-8f32;
        for (b, &l) in loss.iter().enumerate() {
            let norm = grad[b * params..(b + 1) * params].iter().map(|&g| g * g).sum::<f32>().sqrt();
            let f: [f32; FEATURES] = [(l + eps).ln(), (norm + eps).ln(), t as f32 / steps as f32];
            x.extend(f);
        }
    }

    fn features<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        // (tasks, params, step, steps): the default learner, a tiny one, more params than a
        // block.
        for (tasks, p, step, steps) in [(4usize, 1761usize, 2usize, 5usize), (3, 7, 0, 1), (2, 3000, 4, 5)] {
            let loss = uniform(41, &[p as u64], tasks, 0.01, 3.0);
            let grad = randn(42, &[p as u64], tasks * p, 0.3);
            let mut want = Vec::with_capacity(tasks * FEATURES);
            features_ref(&mut want, &loss, &grad, p, step, steps);
            let junk = randn(43, &[p as u64], tasks * FEATURES, 5.0);
            let args = [
                In::F(&junk),
                In::F(&loss),
                In::F(&grad),
                In::Int(tasks),
                In::Int(p),
                In::Int(step),
                In::Int(steps),
            ];
            let run = launch(rt, KernelId::SchedulerFeatures, None, &args)?;
            run.compare(cmp, &format!("B={tasks} P={p} t={step}/{steps}"), &[("x", &want)])?;
        }
        Ok(())
    }

    /// Scheduler-head data of one shape: `h [B, H]`, `head_w [G, H]`, `head_b [G]`. With
    /// H = 0 the `h` and `head_w` arrays hold one unused value (a device buffer is never
    /// empty).
    struct HeadCase {
        tasks: usize,
        hidden: usize,
        groups: usize,
        h: Vec<f32>,
        head_w: Vec<f32>,
        head_b: Vec<f32>,
    }

    fn head_cases(seed: u64) -> impl Iterator<Item = HeadCase> {
        HEAD_SHAPES.into_iter().map(move |(tasks, hidden, groups)| {
            let ids = [hidden as u64, groups as u64];
            let s = 1.0 / (hidden.max(1) as f32).sqrt();
            HeadCase {
                tasks,
                hidden,
                groups,
                h: uniform(seed, &[ids[0], ids[1], 0], (tasks * hidden).max(1), -1.0, 1.0),
                head_w: randn(seed, &[ids[0], ids[1], 1], (groups * hidden).max(1), s),
                head_b: randn(seed, &[ids[0], ids[1], 2], groups, 1.0),
            }
        })
    }

    /// `SchedulerTrace::step` per task: `z = head_b + head_w·h` (LSTM) or the table entry
    /// (LSLR, H = 0), `sig = σ(z)`, `rates = lr_min + span·sig`.
    fn head_forward_ref(sig: &mut [f32], rates: &mut [f32], k: &HeadCase) {
        let (hd, g) = (k.hidden, k.groups);
        for b in 0..k.tasks {
            for j in 0..g {
                let z = if hd == 0 {
                    k.head_b[j]
                } else {
                    k.head_b[j] + dot(&k.head_w[j * hd..(j + 1) * hd], &k.h[b * hd..(b + 1) * hd])
                };
                sig[b * g + j] = sigmoid(z);
                rates[b * g + j] = LR_MIN + LR_SPAN * sig[b * g + j];
            }
        }
    }

    fn head_forward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in head_cases(51) {
            let (hd, g) = (k.hidden, k.groups);
            let (mut want_sig, mut want_rates) = (vec![0.0; k.tasks * g], vec![0.0; k.tasks * g]);
            head_forward_ref(&mut want_sig, &mut want_rates, &k);
            let (js, jr) =
                (randn(52, &[g as u64], k.tasks * g, 5.0), randn(53, &[g as u64], k.tasks * g, 5.0));
            let args = [
                In::F(&js),
                In::F(&jr),
                In::F(&k.h),
                In::F(&k.head_w),
                In::F(&k.head_b),
                In::Int(k.tasks),
                In::Int(hd),
                In::Int(g),
                In::F32(LR_MIN),
                In::F32(LR_SPAN),
            ];
            let run = launch(rt, KernelId::SchedulerHeadForward, None, &args)?;
            run.compare(
                cmp,
                &format!("B={} H={hd} G={g}", k.tasks),
                &[("sig", &want_sig), ("rates", &want_rates)],
            )?;
        }
        Ok(())
    }

    /// `SchedulerTrace::backward`, one step per task: `dz`, the head's gradients added to
    /// `gw`, `gb`, and `dh = dh_carry + Σ_j dz_j head_w_j` (over j in order).
    fn head_backward_ref(
        dh: &mut [f32],
        gw: &mut [f32],
        gb: &mut [f32],
        da: &[f32],
        sig: &[f32],
        k: &HeadCase,
    ) {
        let (hd, g) = (k.hidden, k.groups);
        for b in 0..k.tasks {
            for j in 0..g {
                let s = sig[b * g + j];
                let dz = da[b * g + j] * LR_SPAN * s * (1.0 - s);
                gb[b * g + j] += dz;
                if hd > 0 {
                    let row = (b * g + j) * hd;
                    axpy(&mut gw[row..row + hd], dz, &k.h[b * hd..(b + 1) * hd]);
                    axpy(&mut dh[b * hd..(b + 1) * hd], dz, &k.head_w[j * hd..(j + 1) * hd]);
                }
            }
        }
    }

    fn head_backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in head_cases(61) {
            let (tasks, hd, g) = (k.tasks, k.hidden, k.groups);
            let ids = [hd as u64, g as u64];
            let da = randn(62, &ids, tasks * g, 1.0);
            let sig = uniform(63, &ids, tasks * g, 0.01, 0.99);
            let dh_carry = randn(64, &ids, (tasks * hd).max(1), 1.0);
            // The head gradients start non-zero: the kernel must add to them.
            let gw0 = randn(65, &ids, (tasks * g * hd).max(1), 0.1);
            let gb0 = randn(66, &ids, tasks * g, 0.1);
            let (mut want_dh, mut want_gw, mut want_gb) = (dh_carry.clone(), gw0.clone(), gb0.clone());
            head_backward_ref(&mut want_dh, &mut want_gw, &mut want_gb, &da, &sig, &k);
            let junk = randn(67, &ids, (tasks * hd).max(1), 5.0);
            let args = [
                In::F(&junk),
                In::F(&gw0),
                In::F(&gb0),
                In::F(&da),
                In::F(&sig),
                In::F(&k.h),
                In::F(&k.head_w),
                In::F(&dh_carry),
                In::Int(tasks),
                In::Int(hd),
                In::Int(g),
                In::F32(LR_SPAN),
            ];
            let run = launch(rt, KernelId::SchedulerHeadBackward, None, &args)?;
            let case = format!("B={tasks} H={hd} G={g}");
            if hd > 0 {
                run.compare(cmp, &case, &[("gb", &want_gb), ("gw", &want_gw), ("dh", &want_dh)])?;
            } else {
                run.compare(cmp, &case, &[("gb", &want_gb), ("gw (not written)", &gw0)])?;
            }
        }
        Ok(())
    }

    /// `Engine::meta_gradient_range`: a zero sum, then each task's array added in task order.
    fn task_sum_ref(out: &mut [f32], per_task: &[f32]) {
        for task in per_task.chunks_exact(out.len()) {
            for (o, &v) in out.iter_mut().zip(task) {
                *o += v;
            }
        }
    }

    fn task_sum<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        // (tasks, count): the default batch and learner, a few values, one task.
        for (tasks, count) in [(25usize, 1761usize), (3, 7), (1, 300)] {
            let per_task = randn(71, &[tasks as u64, count as u64], tasks * count, 1.0);
            let mut want = vec![0.0f32; count];
            task_sum_ref(&mut want, &per_task);
            let junk = randn(72, &[count as u64], count, 5.0);
            let args = [In::F(&junk), In::F(&per_task), In::Int(tasks), In::Int(count)];
            let run = launch(rt, KernelId::TaskSum, None, &args)?;
            run.compare(cmp, &format!("B={tasks} count={count}"), &[("out", &want)])?;
        }
        Ok(())
    }

    fn vector_axpy<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        // `v -= hv` of task_meta_gradient (alpha = −1), and another alpha.
        for (count, alpha) in [(1761usize, -1.0f32), (1000, 0.37), (7, -2.5)] {
            let y0 = randn(73, &[count as u64], count, 1.0);
            let x = randn(74, &[count as u64], count, 1.0);
            let mut want = y0.clone();
            axpy(&mut want, alpha, &x);
            let run = launch(
                rt,
                KernelId::VectorAxpy,
                None,
                &[In::F(&y0), In::F(&x), In::F32(alpha), In::Int(count)],
            )?;
            run.compare(cmp, &format!("count={count} alpha={alpha}"), &[("y", &want)])?;
        }
        Ok(())
    }

    fn vector_scale<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        // `v *= 1/B` of task_meta_gradient, and a negative scale.
        for (count, alpha) in [(1761usize, 1.0f32 / 25.0), (1000, -2.5), (7, 0.5)] {
            let y0 = randn(75, &[count as u64], count, 1.0);
            let want: Vec<f32> = y0.iter().map(|&v| v * alpha).collect();
            let run = launch(rt, KernelId::VectorScale, None, &[In::F(&y0), In::F32(alpha), In::Int(count)])?;
            run.compare(cmp, &format!("count={count} alpha={alpha}"), &[("y", &want)])?;
        }
        Ok(())
    }
}
