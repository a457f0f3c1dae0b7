//! `kernels/lstm_cell.cu`: one LSTM step of the scheduler for every task, and its backward
//! step. CPU twins: `lstm_cell_forward` / `lstm_cell_backward` of
//! `crates/engine/src/lstm_cell.rs`. The contract (buffer lengths, launch shape), the cost
//! formula and the check against the twin sit together here; the parameter lists come from
//! the `.cu` signatures (`build.rs`).

use super::contract::{Contract, Requirements};
use super::cost::{Cost, Scalars};
use super::{DEFAULT_BLOCK, FEATURES, KernelId};
use crate::error::Result;
use crate::runtime::Dim3;

/// Buffer lengths and launch shape: grid (B), a block of `H` threads rounded up to warps (at
/// most 256), `(H + 4)` floats of shared memory forward, `(5H + 4)` backward.
pub(crate) fn requirements(kernel: KernelId, mut c: Contract<'_>) -> Result<Requirements> {
    let b = c.size("tasks", 1)?;
    let h = c.size("hidden", 1)?;
    let f = FEATURES as u64;
    let (bh, b4h) = (c.fits("tasks·hidden", b * h)?, c.fits("tasks·4·hidden", b * 4 * h)?);
    c.need("w_ih", 4 * h * f)?;
    c.need("w_hh", 4 * h * h)?;
    c.need("x", b * f)?;
    c.need("h", bh)?;
    c.need("c", bh)?;
    let shared = if kernel == KernelId::LstmCellForward {
        for n in ["h_new", "c_new", "tanh_c"] {
            c.need(n, bh)?;
        }
        c.need("gates", b4h)?;
        c.need("b_ih", 4 * h)?;
        c.need("b_hh", 4 * h)?;
        (h + 4) * 4
    } else {
        for n in ["dh", "dc", "tanh_c", "dh_new", "dc_new"] {
            c.need(n, bh)?;
        }
        for n in ["dgates", "gates", "gb_ih", "gb_hh"] {
            c.need(n, b4h)?;
        }
        c.need("gw_ih", b4h * f)?;
        c.need("gw_hh", c.fits("tasks·4·hidden²", b4h * h)?)?;
        (5 * h + 4) * 4
    };
    let block = (h.div_ceil(32) * 32).min(u64::from(DEFAULT_BLOCK)) as u32;
    let grid = c.blocks(b, 1)?;
    Ok(c.linear(Dim3::x(block), grid, shared as usize))
}

/// Bytes and FLOPs (the formulas at the top of `lstm_cell.cu`): per-task traffic plus the
/// shared weights read once.
pub(crate) fn cost(kernel: KernelId, s: &Scalars<'_>) -> Result<Cost> {
    let f = FEATURES as u64;
    let (b, h) = (s.get("tasks")?, s.get("hidden")?);
    Ok(if kernel == KernelId::LstmCellForward {
        Cost::floats(b * (f + 2 * h) + b * 9 * h + 4 * h * (f + h + 2), b * (8 * h * (f + h + 1) + 10 * h))
    } else {
        Cost::floats(
            b * (f + 9 * h) + b * 6 * h + 2 * b * 4 * h * (f + h + 2) + 4 * h * h,
            b * (16 * h * h + 8 * h * f + 30 * h),
        )
    })
}

#[cfg(feature = "checks")]
pub(crate) use check::check;

/// The check against the engine's LSTM step: three hidden sizes, separate and in-place state.
#[cfg(feature = "checks")]
mod check {
    use metasched_engine::LstmParams;
    use metasched_engine::lstm_cell::{lstm_cell_backward, lstm_cell_forward};

    use crate::checks::harness::{In, launch};
    use crate::checks::{Comparison, randn};
    use crate::error::Result;
    use crate::kernels::{FEATURES, KernelId};
    use crate::runtime::Runtime;

    /// `(tasks, hidden)`: the default H = 20, a partial second warp (37), and more units than
    /// threads (300).
    const SHAPES: [(usize, usize); 3] = [(5, 20), (3, 37), (2, 300)];

    /// One step's inputs for every task.
    struct Case {
        tasks: usize,
        hidden: usize,
        p: LstmParams<f32>,
        x: Vec<f32>,
        h: Vec<f32>,
        c: Vec<f32>,
    }

    fn case(tasks: usize, hidden: usize, seed: u64) -> Case {
        let h4 = 4 * hidden;
        let s = 1.0 / (hidden as f32).sqrt();
        Case {
            tasks,
            hidden,
            p: LstmParams {
                w_ih: randn(seed, &[0], h4 * FEATURES, s),
                w_hh: randn(seed, &[1], h4 * hidden, s),
                b_ih: randn(seed, &[2], h4, 0.3),
                b_hh: randn(seed, &[3], h4, 0.3),
                head_w: Vec::new(),
                head_b: Vec::new(),
            },
            x: randn(seed, &[4], tasks * FEATURES, 2.0),
            h: randn(seed, &[5], tasks * hidden, 0.7),
            c: randn(seed, &[6], tasks * hidden, 1.0),
        }
    }

    fn features_of(x: &[f32], b: usize) -> [f32; FEATURES] {
        let mut f = [0.0; FEATURES];
        f.copy_from_slice(&x[b * FEATURES..(b + 1) * FEATURES]);
        f
    }

    /// The engine's forward step of every task, the kernel's argument order: `[h_new, c_new,
    /// gates, tanh_c]`, each concatenated over tasks.
    fn forward_ref(k: &Case) -> [Vec<f32>; 4] {
        let hd = k.hidden;
        let mut out = [
            vec![0.0; k.tasks * hd],
            vec![0.0; k.tasks * hd],
            vec![0.0; k.tasks * 4 * hd],
            vec![0.0; k.tasks * hd],
        ];
        let [hn, cn, g, tc] = &mut out;
        for b in 0..k.tasks {
            lstm_cell_forward(
                &mut hn[b * hd..(b + 1) * hd],
                &mut cn[b * hd..(b + 1) * hd],
                &mut g[b * 4 * hd..(b + 1) * 4 * hd],
                &mut tc[b * hd..(b + 1) * hd],
                &k.p,
                &features_of(&k.x, b),
                &k.h[b * hd..(b + 1) * hd],
                &k.c[b * hd..(b + 1) * hd],
            );
        }
        out
    }

    /// The engine's backward step of every task, the kernel's argument order: `[dh, dc,
    /// dgates, gw_ih, gw_hh, gb_ih, gb_hh]`, the four gradients accumulated onto `g0`.
    fn backward_ref(
        k: &Case,
        gates: &[f32],
        tanh_c: &[f32],
        dh_new: &[f32],
        dc_new: &[f32],
        g0: &[Vec<f32>; 4],
    ) -> [Vec<f32>; 7] {
        let (tasks, hd) = (k.tasks, k.hidden);
        let h4 = 4 * hd;
        let [gwi0, gwh0, gbi0, gbh0] = g0;
        let mut out = [
            vec![0.0; tasks * hd],
            vec![0.0; tasks * hd],
            vec![0.0; tasks * h4],
            gwi0.clone(),
            gwh0.clone(),
            gbi0.clone(),
            gbh0.clone(),
        ];
        let [dh, dc, dg, gwi, gwh, gbi, gbh] = &mut out;
        for b in 0..tasks {
            // Each task accumulates into its own slice of the per-task gradients.
            let mut grad = LstmParams {
                w_ih: gwi[b * h4 * FEATURES..(b + 1) * h4 * FEATURES].to_vec(),
                w_hh: gwh[b * h4 * hd..(b + 1) * h4 * hd].to_vec(),
                b_ih: gbi[b * h4..(b + 1) * h4].to_vec(),
                b_hh: gbh[b * h4..(b + 1) * h4].to_vec(),
                head_w: Vec::new(),
                head_b: Vec::new(),
            };
            lstm_cell_backward(
                &mut dh[b * hd..(b + 1) * hd],
                &mut dc[b * hd..(b + 1) * hd],
                &mut dg[b * h4..(b + 1) * h4],
                &mut grad,
                &k.p,
                &features_of(&k.x, b),
                &k.h[b * hd..(b + 1) * hd],
                &k.c[b * hd..(b + 1) * hd],
                &gates[b * h4..(b + 1) * h4],
                &tanh_c[b * hd..(b + 1) * hd],
                &dh_new[b * hd..(b + 1) * hd],
                &dc_new[b * hd..(b + 1) * hd],
            );
            gwi[b * h4 * FEATURES..(b + 1) * h4 * FEATURES].copy_from_slice(&grad.w_ih);
            gwh[b * h4 * hd..(b + 1) * h4 * hd].copy_from_slice(&grad.w_hh);
            gbi[b * h4..(b + 1) * h4].copy_from_slice(&grad.b_ih);
            gbh[b * h4..(b + 1) * h4].copy_from_slice(&grad.b_hh);
        }
        out
    }

    /// Runs `kernel`'s check on `rt` into `cmp`.
    pub(crate) fn check<R: Runtime>(rt: &R, kernel: KernelId, cmp: &mut Comparison) -> Result<()> {
        match kernel {
            KernelId::LstmCellForward => forward(rt, cmp),
            _ => backward(rt, cmp),
        }
    }

    fn forward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for (tasks, hd) in SHAPES {
            let k = case(tasks, hd, 11 + hd as u64);
            let [hn, cn, g, tc] = forward_ref(&k);
            // Outputs start as garbage (the kernel must write every element); then the state
            // updated in place (h_new, c_new aliasing h, c: part of the contract).
            let junk = |id: u64, n: usize| randn(77, &[id], n, 5.0);
            let (jh, jc, jg, jt) =
                (junk(0, tasks * hd), junk(1, tasks * hd), junk(2, tasks * 4 * hd), junk(3, tasks * hd));
            for in_place in [false, true] {
                let (h_new, c_new) =
                    if in_place { (In::Same(9), In::Same(10)) } else { (In::F(&jh), In::F(&jc)) };
                let out = launch(
                    rt,
                    KernelId::LstmCellForward,
                    None,
                    &[
                        h_new,
                        c_new,
                        In::F(&jg),
                        In::F(&jt),
                        In::F(&k.p.w_ih),
                        In::F(&k.p.w_hh),
                        In::F(&k.p.b_ih),
                        In::F(&k.p.b_hh),
                        In::F(&k.x),
                        In::F(&k.h),
                        In::F(&k.c),
                        In::Int(tasks),
                        In::Int(hd),
                    ],
                )?;
                let case = format!("B={tasks} H={hd}{}", if in_place { " in place" } else { "" });
                out.compare(cmp, &case, &[("h_new", &hn), ("c_new", &cn), ("gates", &g), ("tanh_c", &tc)])?;
            }
        }
        Ok(())
    }

    fn backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for (tasks, hd) in SHAPES {
            let k = case(tasks, hd, 7 + hd as u64);
            let h4 = 4 * hd;
            let [_, _, gates, tanh_c] = forward_ref(&k);
            let dh_new = randn(3, &[hd as u64, 7], tasks * hd, 1.0);
            let dc_new = randn(3, &[hd as u64, 8], tasks * hd, 1.0);
            // The gradient buffers start non-zero: the kernel must add to them.
            let g0 = |id: u64, n: usize| randn(5, &[hd as u64, id], n, 0.1);
            let g0 =
                [g0(1, tasks * h4 * FEATURES), g0(2, tasks * h4 * hd), g0(3, tasks * h4), g0(4, tasks * h4)];
            let want = backward_ref(&k, &gates, &tanh_c, &dh_new, &dc_new, &g0);
            let junk = |id: u64, n: usize| randn(78, &[id], n, 5.0);
            let (jh, jc, jg) = (junk(0, tasks * hd), junk(1, tasks * hd), junk(2, tasks * h4));
            // Separate buffers, then dh, dc aliasing dh_new, dc_new (part of the contract).
            for in_place in [false, true] {
                let (dh, dc) = if in_place { (In::Same(14), In::Same(15)) } else { (In::F(&jh), In::F(&jc)) };
                let out = launch(
                    rt,
                    KernelId::LstmCellBackward,
                    None,
                    &[
                        dh,
                        dc,
                        In::F(&jg),
                        In::F(&g0[0]),
                        In::F(&g0[1]),
                        In::F(&g0[2]),
                        In::F(&g0[3]),
                        In::F(&k.p.w_ih),
                        In::F(&k.p.w_hh),
                        In::F(&k.x),
                        In::F(&k.h),
                        In::F(&k.c),
                        In::F(&gates),
                        In::F(&tanh_c),
                        In::F(&dh_new),
                        In::F(&dc_new),
                        In::Int(tasks),
                        In::Int(hd),
                    ],
                )?;
                let case = format!("B={tasks} H={hd}{}", if in_place { " in place" } else { "" });
                let names = ["dh", "dc", "dgates", "gw_ih", "gw_hh", "gb_ih", "gb_hh"];
                let outputs: Vec<(&str, &[f32])> =
                    names.iter().zip(&want).map(|(n, w)| (*n, w.as_slice())).collect();
                out.compare(cmp, &case, &outputs)?;
            }
        }
        Ok(())
    }
}
