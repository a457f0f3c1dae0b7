//! `kernels/loss.cu`: the learner's losses (mse, cross-entropy), their gradient with respect
//! to the network output and the R-operator of that gradient, batched over tasks. CPU twins:
//! `loss_forward_backward` and `loss_rop` of `crates/engine/src/loss.rs`. Contract, cost and
//! check together; the parameter lists come from the `.cu` signatures (`build.rs`).

use super::contract::{Contract, GridNeed, Requirements};
use super::cost::{Cost, Scalars};
use super::{DEFAULT_BLOCK, KernelId};
use crate::error::Result;
use crate::runtime::Dim3;

/// Buffer lengths and launch shape: the forward-backward kernels one block per task, the
/// R-operators one thread per element (mse) or row (cross-entropy).
pub(crate) fn requirements(kernel: KernelId, mut c: Contract<'_>) -> Result<Requirements> {
    let b = c.size("tasks", 1)?;
    let n = c.size("rows", 1)?;
    let d = c.size("cols", 1)?;
    let all = c.fits("tasks·rows·cols", b * n * d)?;
    let block = Dim3::x(DEFAULT_BLOCK);
    Ok(match kernel {
        KernelId::MseForwardBackward => {
            c.need("loss", b)?;
            for name in ["dout", "out", "y"] {
                c.need(name, all)?;
            }
            let grid = c.blocks(b, 1)?;
            c.linear(block, grid, 0)
        }
        KernelId::CrossEntropyForwardBackward => {
            c.need("loss", b)?;
            for name in ["dout", "probs", "out"] {
                c.need(name, all)?;
            }
            c.need("labels", b * n)?;
            let grid = c.blocks(b, 1)?;
            c.linear(block, grid, 0)
        }
        KernelId::MseRop => {
            c.need("rdout", all)?;
            c.need("rout", all)?;
            c.linear(block, GridNeed::Threads(all), 0)
        }
        _ => {
            for name in ["rdout", "probs", "rout"] {
                c.need(name, all)?;
            }
            c.linear(block, GridNeed::Threads(b * n), 0)
        }
    })
}

/// Bytes and FLOPs (the formulas at the top of `loss.cu`).
pub(crate) fn cost(kernel: KernelId, s: &Scalars<'_>) -> Result<Cost> {
    let (b, n, d) = (s.get("tasks")?, s.get("rows")?, s.get("cols")?);
    Ok(match kernel {
        KernelId::MseForwardBackward => Cost::floats(3 * b * n * d + b, 5 * b * n * d),
        KernelId::CrossEntropyForwardBackward => Cost::floats(3 * b * n * d + b * n + b, 7 * b * n * d),
        KernelId::MseRop => Cost::floats(2 * b * n * d, b * n * d),
        _ => Cost::floats(3 * b * n * d, 5 * b * n * d),
    })
}

#[cfg(feature = "checks")]
pub(crate) use check::check;

/// The checks against the engine's losses: three shapes, every output.
#[cfg(feature = "checks")]
mod check {
    use metasched_engine::loss::{loss_forward_backward, loss_rop};
    use metasched_engine::{LossKind, TargetsRef};

    use crate::checks::harness::{In, launch};
    use crate::checks::{Comparison, labels, randn};
    use crate::error::Result;
    use crate::kernels::KernelId;
    use crate::runtime::Runtime;

    /// `(tasks, rows, cols)`: the sinusoid's output, a few classes, many rows per task
    /// (several rows per thread of the block).
    const SHAPES: [(usize, usize, usize); 3] = [(4, 10, 1), (3, 25, 5), (2, 700, 10)];

    /// Runs `kernel`'s check on `rt` into `cmp`.
    pub(crate) fn check<R: Runtime>(rt: &R, kernel: KernelId, cmp: &mut Comparison) -> Result<()> {
        match kernel {
            KernelId::MseForwardBackward => mse_forward_backward(rt, cmp),
            KernelId::CrossEntropyForwardBackward => cross_entropy_forward_backward(rt, cmp),
            KernelId::MseRop => mse_rop(rt, cmp),
            _ => cross_entropy_rop(rt, cmp),
        }
    }

    /// The engine's mse and its gradient for every task (the kernel's argument order).
    fn mse_forward_backward_ref(
        loss: &mut [f32],
        dout: &mut [f32],
        out: &[f32],
        y: &[f32],
        n: usize,
        d: usize,
    ) {
        let m = n * d;
        let mut probs = vec![0.0; m]; // unused by mse
        for (b, l) in loss.iter_mut().enumerate() {
            let s = b * m..(b + 1) * m;
            let t = TargetsRef::Values(&y[s.clone()]);
            *l = loss_forward_backward(&mut dout[s.clone()], &mut probs, LossKind::Mse, &out[s], t, n, d);
        }
    }

    /// The engine's cross-entropy, its gradient and softmax for every task.
    fn cross_entropy_forward_backward_ref(
        loss: &mut [f32],
        dout: &mut [f32],
        probs: &mut [f32],
        out: &[f32],
        labels: &[u32],
        n: usize,
        d: usize,
    ) {
        let m = n * d;
        for (b, l) in loss.iter_mut().enumerate() {
            let s = b * m..(b + 1) * m;
            let t = TargetsRef::Labels(&labels[b * n..(b + 1) * n]);
            *l = loss_forward_backward(
                &mut dout[s.clone()],
                &mut probs[s.clone()],
                LossKind::CrossEntropy,
                &out[s],
                t,
                n,
                d,
            );
        }
    }

    /// The engine's R-operator for every task (`probs`: the softmax per task, unused by mse).
    fn rop_ref(rdout: &mut [f32], kind: LossKind, probs: &[f32], rout: &[f32], n: usize, d: usize) {
        let m = n * d;
        for b in 0..rdout.len() / m {
            let s = b * m..(b + 1) * m;
            let p = if kind == LossKind::Mse { &probs[..m] } else { &probs[s.clone()] };
            loss_rop(&mut rdout[s.clone()], kind, p, &rout[s], n, d);
        }
    }

    fn mse_forward_backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for (tasks, n, d) in SHAPES {
            let m = n * d;
            let out = randn(1, &[n as u64, 0], tasks * m, 1.0);
            let y = randn(1, &[n as u64, 1], tasks * m, 1.0);
            let (mut want_loss, mut want_dout) = (vec![0.0; tasks], vec![0.0; tasks * m]);
            mse_forward_backward_ref(&mut want_loss, &mut want_dout, &out, &y, n, d);
            let (jl, jd) = (randn(26, &[n as u64], tasks, 5.0), randn(27, &[n as u64], tasks * m, 5.0));
            let args =
                [In::F(&jl), In::F(&jd), In::F(&out), In::F(&y), In::Int(tasks), In::Int(n), In::Int(d)];
            let run = launch(rt, KernelId::MseForwardBackward, None, &args)?;
            run.compare(
                cmp,
                &format!("B={tasks} n={n} d={d}"),
                &[("loss", &want_loss), ("dout", &want_dout)],
            )?;
        }
        Ok(())
    }

    fn mse_rop<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for (tasks, n, d) in SHAPES {
            let m = n * d;
            let rout = randn(1, &[n as u64, 2], tasks * m, 1.0);
            let mut want = vec![0.0; tasks * m];
            rop_ref(&mut want, LossKind::Mse, &vec![0.0; m], &rout, n, d);
            let junk = randn(28, &[n as u64], tasks * m, 5.0);
            let args = [In::F(&junk), In::F(&rout), In::Int(tasks), In::Int(n), In::Int(d)];
            let run = launch(rt, KernelId::MseRop, None, &args)?;
            run.compare(cmp, &format!("B={tasks} n={n} d={d}"), &[("rdout", &want)])?;
        }
        Ok(())
    }

    /// Cross-entropy data of one shape: logits, labels, and the engine's loss, gradient and
    /// softmax.
    struct CrossEntropyCase {
        tasks: usize,
        n: usize,
        d: usize,
        out: Vec<f32>,
        labels: Vec<u32>,
        loss: Vec<f32>,
        dout: Vec<f32>,
        probs: Vec<f32>,
    }

    fn cross_entropy_cases() -> impl Iterator<Item = CrossEntropyCase> {
        SHAPES.into_iter().map(|(tasks, n, d)| {
            let d = d.max(2);
            let m = n * d;
            let out = randn(2, &[n as u64, 0], tasks * m, 3.0);
            let labels = labels(2, &[n as u64, 1], tasks * n, d);
            let (mut loss, mut dout, mut probs) =
                (vec![0.0; tasks], vec![0.0; tasks * m], vec![0.0; tasks * m]);
            cross_entropy_forward_backward_ref(&mut loss, &mut dout, &mut probs, &out, &labels, n, d);
            CrossEntropyCase { tasks, n, d, out, labels, loss, dout, probs }
        })
    }

    fn cross_entropy_forward_backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in cross_entropy_cases() {
            let (tasks, n, d) = (k.tasks, k.n, k.d);
            let jl = randn(29, &[n as u64], tasks, 5.0);
            let (jd, jp) =
                (randn(30, &[n as u64], tasks * n * d, 5.0), randn(31, &[n as u64], tasks * n * d, 5.0));
            let args = [
                In::F(&jl),
                In::F(&jd),
                In::F(&jp),
                In::F(&k.out),
                In::U(&k.labels),
                In::Int(tasks),
                In::Int(n),
                In::Int(d),
            ];
            let run = launch(rt, KernelId::CrossEntropyForwardBackward, None, &args)?;
            let outputs: [(&str, &[f32]); 3] = [("loss", &k.loss), ("dout", &k.dout), ("probs", &k.probs)];
            run.compare(cmp, &format!("B={tasks} n={n} d={d}"), &outputs)?;
        }
        Ok(())
    }

    fn cross_entropy_rop<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in cross_entropy_cases() {
            let (tasks, n, d) = (k.tasks, k.n, k.d);
            let m = n * d;
            let rout = randn(2, &[n as u64, 2], tasks * m, 1.0);
            let mut want = vec![0.0; tasks * m];
            rop_ref(&mut want, LossKind::CrossEntropy, &k.probs, &rout, n, d);
            // The softmax input is the engine's, so this check does not depend on the forward
            // kernel.
            let junk = randn(32, &[n as u64], tasks * m, 5.0);
            let args = [In::F(&junk), In::F(&k.probs), In::F(&rout), In::Int(tasks), In::Int(n), In::Int(d)];
            let run = launch(rt, KernelId::CrossEntropyRop, None, &args)?;
            run.compare(cmp, &format!("B={tasks} n={n} d={d}"), &[("rdout", &want)])?;
        }
        Ok(())
    }
}
