//! `kernels/sgd_update.cu`: the inner-loop update `theta' = theta − a[group] · g` and its
//! meta-backward step (`dJ/da[k] = −Σ_{i∈k} v g`, `u = a[group] v`) for every task. CPU
//! twins: the inner loop of `crates/engine/src/inner_loop.rs`. Contract, cost and check
//! together; the parameter lists come from the `.cu` signatures (`build.rs`).

use super::contract::{Contract, Requirements};
use super::cost::{Cost, Scalars};
use super::{DEFAULT_BLOCK, KernelId};
use crate::error::Result;
use crate::runtime::Dim3;

/// Absolute tolerance of `sgd_update_backward`'s check (its `dJ/da`): each value sums up to
/// 2,100 products `v·g` of unit scale by a block reduction (warp shuffles, then per-warp
/// partial sums) in another order than the engine's eight-lane `dot`. The rounding error
/// follows the size of the partial sums, not of the result (3.2e-5 on a value of 4 on the
/// emulator), so a `dJ/da` that cancels to near zero could miss the default absolute
/// tolerance through no fault of the kernel.
pub const SGD_DA_ATOL: f32 = 1e-4;

/// Buffer lengths and launch shape: grid (G, B), one block per group and task.
pub(crate) fn requirements(kernel: KernelId, mut c: Contract<'_>) -> Result<Requirements> {
    let b = c.size("tasks", 1)?;
    let np = c.size("params", 1)?;
    let g = c.size("groups", 1)?;
    let bp = c.fits("tasks·params", b * np)?;
    let bg = c.fits("tasks·groups", b * g)?;
    c.need("grad", bp)?;
    c.need("rates", bg)?;
    c.need("group_offsets", g + 1)?;
    if kernel == KernelId::SgdUpdateForward {
        c.need("theta_new", bp)?;
        c.need("theta", bp)?;
    } else {
        c.need("da", bg)?;
        c.need("u", bp)?;
        c.need("v", bp)?;
    }
    let grid = c.blocks(g, b)?;
    Ok(c.linear(Dim3::x(DEFAULT_BLOCK), grid, 0))
}

/// Bytes and FLOPs (the formulas at the top of `sgd_update.cu`).
pub(crate) fn cost(kernel: KernelId, s: &Scalars<'_>) -> Result<Cost> {
    let (b, p, g) = (s.get("tasks")?, s.get("params")?, s.get("groups")?);
    Ok(if kernel == KernelId::SgdUpdateForward {
        Cost::floats(3 * b * p + b * g + 2 * g, 2 * b * p)
    } else {
        Cost::floats(3 * b * p + 2 * b * g + 2 * g, 3 * b * p)
    })
}

#[cfg(feature = "checks")]
pub(crate) use check::check;

/// The check against the inner loop's update: three learners, three block sizes, in place.
#[cfg(feature = "checks")]
mod check {
    use metasched_engine::ThetaLayout;
    use metasched_engine::linalg::dot;

    use crate::checks::harness::{In, launch};
    use crate::checks::{Comparison, randn, uniform};
    use crate::error::{CudaError, Result};
    use crate::kernels::KernelId;
    use crate::runtime::Runtime;

    /// `(widths, tasks)`: the default learner, wide groups (more elements than a block), and
    /// a tiny one.
    fn shapes() -> [(Vec<usize>, usize); 3] {
        [(vec![1, 40, 40, 1], 4), (vec![5, 300, 7], 3), (vec![2, 3], 1)]
    }

    /// Block sizes each kernel runs with: the default, one not a multiple of 32 (a partial
    /// warp in the reduction), and the largest.
    const BLOCKS: [u32; 3] = [256, 45, 1024];

    struct Case {
        layout: ThetaLayout,
        tasks: usize,
        theta: Vec<f32>,
        grad: Vec<f32>,
        v: Vec<f32>,
        rates: Vec<f32>,
        offsets: Vec<i32>,
    }

    impl Case {
        /// The launch arguments: `lead` (the kernel's own outputs and inputs), then `grad,
        /// rates, group_offsets, tasks, params, groups`, which both kernels take.
        fn args<'a>(&'a self, lead: &[In<'a>]) -> Vec<In<'a>> {
            let mut v = lead.to_vec();
            v.extend([
                In::F(&self.grad),
                In::F(&self.rates),
                In::I(&self.offsets),
                In::Int(self.tasks),
                In::Int(self.layout.len()),
                In::Int(self.layout.groups()),
            ]);
            v
        }
    }

    fn case(widths: &[usize], tasks: usize, seed: u64) -> Result<Case> {
        let layout = ThetaLayout::from_widths(widths);
        let (p, g) = (layout.len(), layout.groups());
        let offsets = layout
            .offsets
            .iter()
            .map(|&o| i32::try_from(o))
            .collect::<std::result::Result<Vec<i32>, _>>()
            .map_err(|e| CudaError::Runtime(format!("group offset past int: {e}")))?;
        Ok(Case {
            theta: randn(seed, &[0], tasks * p, 0.5),
            grad: randn(seed, &[1], tasks * p, 1.0),
            v: randn(seed, &[2], tasks * p, 1.0),
            rates: uniform(seed, &[3], tasks * g, 0.0, 0.1),
            offsets,
            tasks,
            layout,
        })
    }

    /// `theta_new = theta − a[group] · grad`, per task (the kernel's argument order).
    fn forward_ref(theta_new: &mut [f32], k: &Case) {
        let (p, g) = (k.layout.len(), k.layout.groups());
        for b in 0..k.tasks {
            for (grp, &a) in k.rates[b * g..(b + 1) * g].iter().enumerate() {
                for i in k.layout.group(grp) {
                    theta_new[b * p + i] = k.theta[b * p + i] - a * k.grad[b * p + i];
                }
            }
        }
    }

    /// `da[k] = −Σ_{i∈k} v·grad`, `u = a[group] · v`, per task.
    fn backward_ref(da: &mut [f32], u: &mut [f32], k: &Case) {
        let (p, g) = (k.layout.len(), k.layout.groups());
        for b in 0..k.tasks {
            let (v, gr) = (&k.v[b * p..(b + 1) * p], &k.grad[b * p..(b + 1) * p]);
            for grp in 0..g {
                let r = k.layout.group(grp);
                da[b * g + grp] = -dot(&v[r.clone()], &gr[r.clone()]);
                for i in r {
                    u[b * p + i] = k.rates[b * g + grp] * v[i];
                }
            }
        }
    }

    /// Runs `kernel`'s check on `rt` into `cmp`.
    pub(crate) fn check<R: Runtime>(rt: &R, kernel: KernelId, cmp: &mut Comparison) -> Result<()> {
        match kernel {
            KernelId::SgdUpdateForward => forward(rt, cmp),
            _ => backward(rt, cmp),
        }
    }

    fn forward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for (widths, tasks) in shapes() {
            let k = case(&widths, tasks, widths.len() as u64)?;
            let p = k.layout.len();
            let mut want = vec![0.0; tasks * p];
            forward_ref(&mut want, &k);
            // Every block size into a separate output, then in place (theta_new aliasing
            // theta: part of the contract).
            for (block, in_place) in BLOCKS.map(|b| (b, false)).into_iter().chain([(45, true)]) {
                let junk = randn(79, &[u64::from(block)], tasks * p, 5.0);
                let out = launch(
                    rt,
                    KernelId::SgdUpdateForward,
                    Some(block),
                    &k.args(&[if in_place { In::Same(1) } else { In::F(&junk) }, In::F(&k.theta)]),
                )?;
                let case =
                    format!("{widths:?} B={tasks} block {block}{}", if in_place { " in place" } else { "" });
                out.compare(cmp, &case, &[("theta_new", &want)])?;
            }
        }
        Ok(())
    }

    fn backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for (widths, tasks) in shapes() {
            let k = case(&widths, tasks, 40 + widths.len() as u64)?;
            let (p, g) = (k.layout.len(), k.layout.groups());
            let (mut want_da, mut want_u) = (vec![0.0; tasks * g], vec![0.0; tasks * p]);
            backward_ref(&mut want_da, &mut want_u, &k);
            for block in BLOCKS {
                let (jda, ju) = (
                    randn(80, &[u64::from(block)], tasks * g, 5.0),
                    randn(81, &[u64::from(block)], tasks * p, 5.0),
                );
                let out = launch(
                    rt,
                    KernelId::SgdUpdateBackward,
                    Some(block),
                    &k.args(&[In::F(&jda), In::F(&ju), In::F(&k.v)]),
                )?;
                let case = format!("{widths:?} B={tasks} block {block}");
                out.compare(cmp, &case, &[("da", &want_da), ("u", &want_u), ("v (unchanged)", &k.v)])?;
            }
        }
        Ok(())
    }
}
