//! One check per kernel: each entry of [`KernelId::ALL`] run on small random inputs on any
//! [`Runtime`] and compared elementwise with its CPU twin in `metasched_engine`, with the
//! worst deviation reported.
//!
//! The emulator's tests (`crates/cuda/tests/`, once per thread schedule), `meta-worker
//! selftest --device emu|cuda:N` and the GPU tests all run these same checks, so a kernel is
//! held to one definition of "correct" everywhere. A check passes when every compared value
//! satisfies `|got − want| ≤ atol + rtol·|want|` (NaN never passes) with the tolerance of
//! [`tolerance`]; inputs come from [`CounterRng`] streams, so every run sees the same data.
//!
//! Outputs that a kernel only writes are pre-filled with other values where the contract says
//! "written", and gradient buffers that a kernel accumulates into start non-zero, so a kernel
//! that skips an element, writes outside its range or overwrites instead of adding fails.

use metasched_engine::config::FEATURES;
use metasched_engine::linalg::{add_row, axpy, col_sum_acc, dot, gemm_nn_acc, gemm_nt_acc, gemm_tn_acc};
use metasched_engine::loss::{loss_forward_backward, loss_rop};
use metasched_engine::lstm_cell::{lstm_cell_backward, lstm_cell_forward, sigmoid};
use metasched_engine::rng::CounterRng;
use metasched_engine::{Activation, LossKind, LstmParams, TargetsRef, ThetaLayout};

use crate::error::{CudaError, Result};
use crate::kernels::KernelId;
use crate::learner::act_code;
use crate::runtime::{Arg, Dim3, Runtime};

/// Default absolute tolerance of a comparison (the one every kernel test has used).
pub const ATOL: f32 = 1e-5;
/// Default relative tolerance of a comparison.
pub const RTOL: f32 = 1e-4;
/// Absolute tolerance of `sgd_update_backward` (its `dJ/da`): each value sums up to 2,100
/// products `v·g` of unit scale by a block reduction (warp shuffles, then per-warp partial
/// sums) in another order than the engine's eight-lane `dot`. The rounding error follows the
/// size of the partial sums, not of the result (3.2e-5 on a value of 4 on the emulator), so a
/// `dJ/da` that cancels to near zero could miss [`ATOL`] through no fault of the kernel.
pub const SGD_DA_ATOL: f32 = 1e-4;
/// `worst_rel` only counts elements whose reference magnitude exceeds this (relative error
/// of values near zero says nothing).
pub const REL_FLOOR: f32 = 1e-3;

/// How close a device value must be to its CPU twin: `|got − want| ≤ atol + rtol·|want|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub atol: f32,
    /// Relative part, times `|want|`.
    pub rtol: f32,
}

impl Tolerance {
    /// [`ATOL`] and [`RTOL`].
    pub const DEFAULT: Tolerance = Tolerance { atol: ATOL, rtol: RTOL };

    /// The largest deviation allowed from `want`.
    pub fn allowed(self, want: f32) -> f32 {
        self.atol + self.rtol * want.abs()
    }
}

/// The tolerance of `kernel`'s check: [`Tolerance::DEFAULT`] except `sgd_update_backward`
/// (atol [`SGD_DA_ATOL`], see there).
pub fn tolerance(kernel: KernelId) -> Tolerance {
    match kernel {
        KernelId::SgdUpdateBackward => Tolerance { atol: SGD_DA_ATOL, rtol: RTOL },
        _ => Tolerance::DEFAULT,
    }
}

/// The outcome of one check: a row of `meta-worker selftest`'s table, an assertion of the
/// kernel tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was checked: the kernel's [`KernelId::name`] for a kernel check.
    pub name: String,
    /// The tolerance applied.
    pub tolerance: Tolerance,
    /// Number of values compared.
    pub values: usize,
    /// Largest `|got − want|` (NaN if a value was NaN or the check could not run).
    pub worst_abs: f32,
    /// Largest `|got − want| / |want|` over values with `|want| >` [`REL_FLOOR`].
    pub worst_rel: f32,
    /// Largest `|got − want| / (atol + rtol·|want|)`: the fraction of the tolerance the
    /// worst value used (above 1 fails; infinite for NaN).
    pub worst_used: f32,
    /// Index of that worst value in its output, if any value was compared.
    pub worst_index: Option<usize>,
    /// The output and case the worst value belongs to, e.g. `dW_hh B=3 H=37`.
    pub worst_at: String,
    /// The device's value there.
    pub worst_got: f32,
    /// The CPU twin's value there.
    pub worst_want: f32,
    /// Whether every value was within tolerance (and the check ran).
    pub pass: bool,
    /// Why it failed: the launch error, or the failing value; empty when it passed.
    pub note: String,
}

impl Check {
    /// A check that could not run (launch, allocation or setup error): fails.
    pub fn failed(name: &str, tolerance: Tolerance, why: impl std::fmt::Display) -> Check {
        let mut c = Comparison::new(name, tolerance).finish();
        c.worst_abs = f32::NAN;
        c.worst_rel = f32::NAN;
        c.worst_used = f32::INFINITY;
        c.pass = false;
        c.note = why.to_string();
        c
    }

    /// `output[index] case` of the worst value (e.g. `gates[1970] B=2 H=300`), or `-` when
    /// nothing was compared.
    pub fn worst_element(&self) -> String {
        let Some(i) = self.worst_index else { return "-".to_string() };
        match self.worst_at.split_once(' ') {
            Some((output, case)) => format!("{output}[{i}] {case}"),
            None => format!("{}[{i}]", self.worst_at),
        }
    }
}

/// Accumulates the elementwise comparison of several outputs into one [`Check`]. Used by the
/// kernel checks and by `meta-worker selftest`'s whole-meta-gradient rows, so both judge and
/// report deviations the same way.
#[derive(Debug, Clone)]
pub struct Comparison {
    check: Check,
}

impl Comparison {
    /// An empty comparison named `name` (it passes until a value fails).
    pub fn new(name: &str, tolerance: Tolerance) -> Self {
        Self {
            check: Check {
                name: name.to_string(),
                tolerance,
                values: 0,
                worst_abs: 0.0,
                worst_rel: 0.0,
                worst_used: 0.0,
                worst_index: None,
                worst_at: String::new(),
                worst_got: 0.0,
                worst_want: 0.0,
                pass: true,
                note: String::new(),
            },
        }
    }

    /// Compares `got` with `want` elementwise; `output` names them in the report.
    pub fn add(&mut self, output: &str, got: &[f32], want: &[f32]) {
        let c = &mut self.check;
        if got.len() != want.len() {
            c.pass = false;
            c.worst_abs = f32::NAN;
            c.worst_used = f32::INFINITY;
            if c.note.is_empty() {
                c.note = format!("{output}: {} values, the CPU twin has {}", got.len(), want.len());
            }
            return;
        }
        c.values += got.len();
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let d = (g - w).abs();
            let used = if d.is_nan() { f32::INFINITY } else { d / c.tolerance.allowed(w) };
            if d.is_nan() {
                c.worst_abs = f32::NAN;
            } else if !c.worst_abs.is_nan() {
                c.worst_abs = c.worst_abs.max(d);
            }
            if w.abs() > REL_FLOOR && !d.is_nan() {
                c.worst_rel = c.worst_rel.max(d / w.abs());
            }
            if used > c.worst_used || c.worst_index.is_none() {
                c.worst_used = used;
                c.worst_index = Some(i);
                c.worst_at = output.to_string();
                c.worst_got = g;
                c.worst_want = w;
            }
            if used > 1.0 && c.pass {
                c.pass = false;
                c.note = format!(
                    "{output}[{i}]: got {g} want {w} (|diff| {d:e} > {:e} + {:e}·|want|)",
                    c.tolerance.atol, c.tolerance.rtol
                );
            }
        }
    }

    /// The result.
    pub fn finish(self) -> Check {
        self.check
    }
}

/// Runs the check of `kernel` on `rt`: launches it on the check's inputs (several shapes, and
/// for some kernels several activations, flags or block sizes) and compares every output with
/// the CPU twin. A launch or setup error makes a failing check, never a panic.
pub fn check<R: Runtime>(rt: &R, kernel: KernelId) -> Check {
    let tol = tolerance(kernel);
    let mut cmp = Comparison::new(kernel.name(), tol);
    let ran = match kernel {
        KernelId::LstmCellForward => lstm_cell_forward_check(rt, &mut cmp),
        KernelId::LstmCellBackward => lstm_cell_backward_check(rt, &mut cmp),
        KernelId::SgdUpdateForward => sgd_update_forward_check(rt, &mut cmp),
        KernelId::SgdUpdateBackward => sgd_update_backward_check(rt, &mut cmp),
        KernelId::LinearForward => linear_forward_check(rt, &mut cmp),
        KernelId::LinearBackward => linear_backward_check(rt, &mut cmp),
        KernelId::LinearRop => linear_rop_check(rt, &mut cmp),
        KernelId::LinearRopBackward => linear_rop_backward_check(rt, &mut cmp),
        KernelId::ActivationForward => activation_forward_check(rt, &mut cmp),
        KernelId::ActivationBackward => activation_backward_check(rt, &mut cmp),
        KernelId::MseForwardBackward => mse_forward_backward_check(rt, &mut cmp),
        KernelId::CrossEntropyForwardBackward => cross_entropy_forward_backward_check(rt, &mut cmp),
        KernelId::MseRop => mse_rop_check(rt, &mut cmp),
        KernelId::CrossEntropyRop => cross_entropy_rop_check(rt, &mut cmp),
        KernelId::SchedulerFeatures => scheduler_features_check(rt, &mut cmp),
        KernelId::SchedulerHeadForward => scheduler_head_forward_check(rt, &mut cmp),
        KernelId::SchedulerHeadBackward => scheduler_head_backward_check(rt, &mut cmp),
        KernelId::TaskSum => task_sum_check(rt, &mut cmp),
        KernelId::VectorAxpy => vector_axpy_check(rt, &mut cmp),
        KernelId::VectorScale => vector_scale_check(rt, &mut cmp),
    };
    match ran {
        Ok(()) => cmp.finish(),
        Err(e) => Check::failed(kernel.name(), tol, e),
    }
}

/// The check of every kernel, in [`KernelId::ALL`] order (one row each).
pub fn all_kernel_checks<R: Runtime>(rt: &R) -> Vec<Check> {
    KernelId::ALL.into_iter().map(|k| check(rt, k)).collect()
}

/// The checks of the kernels defined in one source file (`"lstm_cell.cu"`, ...; see
/// [`KernelId::source_file`]), for the per-family tests.
pub fn family_checks<R: Runtime>(rt: &R, source_file: &str) -> Vec<Check> {
    KernelId::ALL.into_iter().filter(|k| k.source_file() == source_file).map(|k| check(rt, k)).collect()
}

// ---------------------------------------------------------------------------------------------
// Inputs.

/// `n` normal samples times `scale`, from stream `(seed, ids)`.
pub fn randn(seed: u64, ids: &[u64], n: usize, scale: f32) -> Vec<f32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.normal() as f32 * scale).collect()
}

/// `n` uniform samples in `[lo, hi)`.
pub fn uniform(seed: u64, ids: &[u64], n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.uniform_in(f64::from(lo), f64::from(hi)) as f32).collect()
}

/// `n` labels in `0..classes`.
pub fn labels(seed: u64, ids: &[u64], n: usize, classes: usize) -> Vec<u32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.below(classes as u64) as u32).collect()
}

/// An activation code of the kernels (`0` none, `1` relu, `2` tanh) and its engine twin
/// (`None`: the identity, which the engine has no name for).
#[derive(Debug, Clone, Copy)]
struct Act(Option<Activation>);

impl Act {
    const NONE: Act = Act(None);
    const RELU: Act = Act(Some(Activation::Relu));
    const TANH: Act = Act(Some(Activation::Tanh));

    fn code(self) -> i32 {
        self.0.map_or(0, act_code)
    }

    fn apply(self, z: f32) -> f32 {
        self.0.map_or(z, |a| a.apply(z))
    }

    fn d1(self, h: f32) -> f32 {
        self.0.map_or(1.0, |a| a.d1(h))
    }

    fn d2(self, h: f32) -> f32 {
        self.0.map_or(0.0, |a| a.d2(h))
    }

    fn label(self) -> &'static str {
        match self.0 {
            None => "none",
            Some(Activation::Relu) => "relu",
            Some(Activation::Tanh) => "tanh",
        }
    }
}

/// A launch configuration: the kernel's default one with another block size.
fn with_block<R: Runtime>(
    kernel: KernelId,
    args: &[Arg<'_, R>],
    block: u32,
) -> Result<crate::runtime::LaunchConfig> {
    let values: Vec<_> = args.iter().map(Arg::value).collect();
    let mut config = kernel.default_config(&values)?;
    config.block = Dim3::x(block);
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// lstm_cell.cu: twins lstm_cell_forward / lstm_cell_backward (crates/engine/src/lstm_cell.rs).

/// `(tasks, hidden)`: the default H = 20, a partial second warp (37), and more units than
/// threads (300).
const LSTM_SHAPES: [(usize, usize); 3] = [(5, 20), (3, 37), (2, 300)];

struct LstmCase {
    tasks: usize,
    hidden: usize,
    p: LstmParams<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
}

fn lstm_case(tasks: usize, hidden: usize, seed: u64) -> LstmCase {
    let h4 = 4 * hidden;
    let s = 1.0 / (hidden as f32).sqrt();
    LstmCase {
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

/// The engine's forward step of every task: `[h_new, c_new, gates, tanh_c]`, each
/// concatenated over tasks.
fn lstm_engine_forward(k: &LstmCase) -> [Vec<f32>; 4] {
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

fn lstm_cell_forward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for (tasks, hidden) in LSTM_SHAPES {
        let k = lstm_case(tasks, hidden, 11 + hidden as u64);
        let want = lstm_engine_forward(&k);
        let hd = k.hidden;
        let (w_ih, w_hh, b_ih, b_hh) =
            (rt.upload(&k.p.w_ih)?, rt.upload(&k.p.w_hh)?, rt.upload(&k.p.b_ih)?, rt.upload(&k.p.b_hh)?);
        let x = rt.upload(&k.x)?;
        // Separate state buffers, then the state updated in place (h_new, c_new aliasing h, c:
        // part of the contract).
        for in_place in [false, true] {
            // Outputs start as garbage: the kernel must write every element.
            let junk = |id: u64, n: usize| rt.upload(&randn(77, &[id], n, 5.0));
            let (g, tc) = (junk(2, tasks * 4 * hd)?, junk(3, tasks * hd)?);
            let (h, c) = (rt.upload(&k.h)?, rt.upload(&k.c)?);
            let (hn_own, cn_own) = (junk(0, tasks * hd)?, junk(1, tasks * hd)?);
            let (hn, cn) = if in_place { (&h, &c) } else { (&hn_own, &cn_own) };
            rt.launch_default(
                KernelId::LstmCellForward,
                &[
                    Arg::buf(hn),
                    Arg::buf(cn),
                    Arg::buf(&g),
                    Arg::buf(&tc),
                    Arg::buf(&w_ih),
                    Arg::buf(&w_hh),
                    Arg::buf(&b_ih),
                    Arg::buf(&b_hh),
                    Arg::buf(&x),
                    Arg::buf(&h),
                    Arg::buf(&c),
                    Arg::int(tasks),
                    Arg::int(hd),
                ],
            )?;
            let case = format!("B={tasks} H={hd}{}", if in_place { " in place" } else { "" });
            for (name, (buf, w)) in
                ["h_new", "c_new", "gates", "tanh_c"].iter().zip([hn, cn, &g, &tc].iter().zip(&want))
            {
                cmp.add(&format!("{name} {case}"), &rt.download(*buf)?, w);
            }
        }
    }
    Ok(())
}

fn lstm_cell_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for (tasks, hidden) in LSTM_SHAPES {
        let k = lstm_case(tasks, hidden, 7 + hidden as u64);
        let hd = k.hidden;
        let h4 = 4 * hd;
        let [_, _, gates, tanh_c] = lstm_engine_forward(&k);
        let dh_new = randn(3, &[hd as u64, 7], tasks * hd, 1.0);
        let dc_new = randn(3, &[hd as u64, 8], tasks * hd, 1.0);
        // The gradient buffers start non-zero: the kernel must add to them.
        let g0 = |id: u64, n: usize| randn(5, &[hd as u64, id], n, 0.1);
        let (gw_ih0, gw_hh0, gb_ih0, gb_hh0) =
            (g0(1, tasks * h4 * FEATURES), g0(2, tasks * h4 * hd), g0(3, tasks * h4), g0(4, tasks * h4));
        let mut want_dh = vec![0.0; tasks * hd];
        let mut want_dc = vec![0.0; tasks * hd];
        let mut want_dg = vec![0.0; tasks * h4];
        let (mut w_gwi, mut w_gwh, mut w_gbi, mut w_gbh) =
            (gw_ih0.clone(), gw_hh0.clone(), gb_ih0.clone(), gb_hh0.clone());
        for b in 0..tasks {
            // Each task accumulates into its own slice of the per-task gradients.
            let mut grad = LstmParams {
                w_ih: w_gwi[b * h4 * FEATURES..(b + 1) * h4 * FEATURES].to_vec(),
                w_hh: w_gwh[b * h4 * hd..(b + 1) * h4 * hd].to_vec(),
                b_ih: w_gbi[b * h4..(b + 1) * h4].to_vec(),
                b_hh: w_gbh[b * h4..(b + 1) * h4].to_vec(),
                head_w: Vec::new(),
                head_b: Vec::new(),
            };
            lstm_cell_backward(
                &mut want_dh[b * hd..(b + 1) * hd],
                &mut want_dc[b * hd..(b + 1) * hd],
                &mut want_dg[b * h4..(b + 1) * h4],
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
            w_gwi[b * h4 * FEATURES..(b + 1) * h4 * FEATURES].copy_from_slice(&grad.w_ih);
            w_gwh[b * h4 * hd..(b + 1) * h4 * hd].copy_from_slice(&grad.w_hh);
            w_gbi[b * h4..(b + 1) * h4].copy_from_slice(&grad.b_ih);
            w_gbh[b * h4..(b + 1) * h4].copy_from_slice(&grad.b_hh);
        }
        let (w_ih, w_hh) = (rt.upload(&k.p.w_ih)?, rt.upload(&k.p.w_hh)?);
        let (x, h, c) = (rt.upload(&k.x)?, rt.upload(&k.h)?, rt.upload(&k.c)?);
        let (g, tc) = (rt.upload(&gates)?, rt.upload(&tanh_c)?);
        // Separate buffers, then dh, dc aliasing dh_new, dc_new (part of the contract).
        for in_place in [false, true] {
            let junk = |id: u64, n: usize| rt.upload(&randn(78, &[id], n, 5.0));
            let (dh_own, dc_own, dg) = (junk(0, tasks * hd)?, junk(1, tasks * hd)?, junk(2, tasks * h4)?);
            let (gwi, gwh, gbi, gbh) =
                (rt.upload(&gw_ih0)?, rt.upload(&gw_hh0)?, rt.upload(&gb_ih0)?, rt.upload(&gb_hh0)?);
            let (dhn, dcn) = (rt.upload(&dh_new)?, rt.upload(&dc_new)?);
            let (dh, dc) = if in_place { (&dhn, &dcn) } else { (&dh_own, &dc_own) };
            rt.launch_default(
                KernelId::LstmCellBackward,
                &[
                    Arg::buf(dh),
                    Arg::buf(dc),
                    Arg::buf(&dg),
                    Arg::buf(&gwi),
                    Arg::buf(&gwh),
                    Arg::buf(&gbi),
                    Arg::buf(&gbh),
                    Arg::buf(&w_ih),
                    Arg::buf(&w_hh),
                    Arg::buf(&x),
                    Arg::buf(&h),
                    Arg::buf(&c),
                    Arg::buf(&g),
                    Arg::buf(&tc),
                    Arg::buf(&dhn),
                    Arg::buf(&dcn),
                    Arg::int(tasks),
                    Arg::int(hd),
                ],
            )?;
            let case = format!("B={tasks} H={hd}{}", if in_place { " in place" } else { "" });
            for (name, buf, want) in [
                ("dh", dh, &want_dh),
                ("dc", dc, &want_dc),
                ("dgates", &dg, &want_dg),
                ("dW_ih", &gwi, &w_gwi),
                ("dW_hh", &gwh, &w_gwh),
                ("db_ih", &gbi, &w_gbi),
                ("db_hh", &gbh, &w_gbh),
            ] {
                cmp.add(&format!("{name} {case}"), &rt.download(buf)?, want);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// sgd_update.cu: twins are the inner-loop update and meta-backward step of
// crates/engine/src/inner_loop.rs (`theta' = theta − a[group] g`, `dJ/da[k] = −Σ_{i∈k} v g`,
// `u = a[group] v`).

/// `(widths, tasks)`: the default learner, wide groups (more elements than a block), and a
/// tiny one.
fn sgd_shapes() -> [(Vec<usize>, usize); 3] {
    [(vec![1, 40, 40, 1], 4), (vec![5, 300, 7], 3), (vec![2, 3], 1)]
}

/// Block sizes each sgd kernel runs with: the default, one not a multiple of 32 (a partial
/// warp in the reduction), and the largest.
const SGD_BLOCKS: [u32; 3] = [256, 45, 1024];

struct SgdCase {
    layout: ThetaLayout,
    tasks: usize,
    theta: Vec<f32>,
    grad: Vec<f32>,
    v: Vec<f32>,
    rates: Vec<f32>,
    offsets: Vec<i32>,
}

fn sgd_case(widths: &[usize], tasks: usize, seed: u64) -> Result<SgdCase> {
    let layout = ThetaLayout::from_widths(widths);
    let (p, g) = (layout.len(), layout.groups());
    let offsets = layout
        .offsets
        .iter()
        .map(|&o| i32::try_from(o))
        .collect::<std::result::Result<Vec<i32>, _>>()
        .map_err(|e| CudaError::Runtime(format!("group offset past int: {e}")))?;
    Ok(SgdCase {
        theta: randn(seed, &[0], tasks * p, 0.5),
        grad: randn(seed, &[1], tasks * p, 1.0),
        v: randn(seed, &[2], tasks * p, 1.0),
        rates: uniform(seed, &[3], tasks * g, 0.0, 0.1),
        offsets,
        tasks,
        layout,
    })
}

fn sgd_update_forward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for (widths, tasks) in sgd_shapes() {
        let k = sgd_case(&widths, tasks, widths.len() as u64)?;
        let (p, g) = (k.layout.len(), k.layout.groups());
        let mut want = vec![0.0; tasks * p];
        for b in 0..k.tasks {
            for (grp, &a) in k.rates[b * g..(b + 1) * g].iter().enumerate() {
                for i in k.layout.group(grp) {
                    want[b * p + i] = k.theta[b * p + i] - a * k.grad[b * p + i];
                }
            }
        }
        let (grad, rates, offs) = (rt.upload(&k.grad)?, rt.upload(&k.rates)?, rt.upload(&k.offsets)?);
        // Every block size into a separate output, then in place (theta_new aliasing theta:
        // part of the contract).
        for (block, in_place) in SGD_BLOCKS.map(|b| (b, false)).into_iter().chain([(45, true)]) {
            let theta = rt.upload(&k.theta)?;
            let own = rt.upload(&randn(79, &[u64::from(block)], tasks * p, 5.0))?;
            let out = if in_place { &theta } else { &own };
            let args = [
                Arg::buf(out),
                Arg::buf(&theta),
                Arg::buf(&grad),
                Arg::buf(&rates),
                Arg::buf(&offs),
                Arg::int(tasks),
                Arg::int(p),
                Arg::int(g),
            ];
            let config = with_block(KernelId::SgdUpdateForward, &args, block)?;
            rt.launch(KernelId::SgdUpdateForward, &config, &args)?;
            let case =
                format!("{widths:?} B={tasks} block {block}{}", if in_place { " in place" } else { "" });
            cmp.add(&format!("theta_new {case}"), &rt.download(out)?, &want);
        }
    }
    Ok(())
}

fn sgd_update_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for (widths, tasks) in sgd_shapes() {
        let k = sgd_case(&widths, tasks, 40 + widths.len() as u64)?;
        let (p, g) = (k.layout.len(), k.layout.groups());
        let mut want_da = vec![0.0; tasks * g];
        let mut want_u = vec![0.0; tasks * p];
        for b in 0..tasks {
            let (v, gr) = (&k.v[b * p..(b + 1) * p], &k.grad[b * p..(b + 1) * p]);
            for grp in 0..g {
                let r = k.layout.group(grp);
                want_da[b * g + grp] = -dot(&v[r.clone()], &gr[r.clone()]);
                for i in r {
                    want_u[b * p + i] = k.rates[b * g + grp] * v[i];
                }
            }
        }
        let (v, grad, rates, offs) =
            (rt.upload(&k.v)?, rt.upload(&k.grad)?, rt.upload(&k.rates)?, rt.upload(&k.offsets)?);
        for block in SGD_BLOCKS {
            let da = rt.upload(&randn(80, &[u64::from(block)], tasks * g, 5.0))?;
            let u = rt.upload(&randn(81, &[u64::from(block)], tasks * p, 5.0))?;
            let args = [
                Arg::buf(&da),
                Arg::buf(&u),
                Arg::buf(&v),
                Arg::buf(&grad),
                Arg::buf(&rates),
                Arg::buf(&offs),
                Arg::int(tasks),
                Arg::int(p),
                Arg::int(g),
            ];
            let config = with_block(KernelId::SgdUpdateBackward, &args, block)?;
            rt.launch(KernelId::SgdUpdateBackward, &config, &args)?;
            let case = format!("{widths:?} B={tasks} block {block}");
            cmp.add(&format!("da {case}"), &rt.download(&da)?, &want_da);
            cmp.add(&format!("u {case}"), &rt.download(&u)?, &want_u);
            cmp.add(&format!("v (unchanged) {case}"), &rt.download(&v)?, &k.v);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// mlp.cu: twins are the dense products and activations of Mlp::forward, Mlp::loss_and_grad
// and Mlp::hvp (crates/engine/src/mlp.rs), one layer at a time.

/// `(tasks, rows, din, dout)`: a 1-wide input (another engine path), sizes that are not
/// multiples of the 16-wide tiles, several tiles in every direction.
const LINEAR_SHAPES: [(usize, usize, usize, usize); 4] =
    [(3, 10, 1, 40), (2, 37, 40, 40), (2, 5, 33, 17), (1, 50, 7, 3)];

/// Width of the layer in front of the checked one: the checked layer is layer 1 of
/// `[FRONT, din, dout]`, so its weights start at a non-zero offset inside a larger per-task
/// parameter vector whose other entries the kernels must leave alone.
const FRONT: usize = 3;

/// One dense layer's data for every task: per-task parameters and direction `[B, P]` (fan-in
/// scaled), its input `in` (an activation output), and random `[B, n, din]` / `[B, n, dout]`
/// arrays for the other operands.
struct Layer {
    tasks: usize,
    rows: usize,
    din: usize,
    dout: usize,
    layout: ThetaLayout,
    theta: Vec<f32>,
    u: Vec<f32>,
    /// Pre-activation of the input, `[B, n, din]`.
    z_in: Vec<f32>,
    /// Random `[B, n, din]` operands (R{H}, dL/dH, R{Z} of the input side).
    side_in: [Vec<f32>; 3],
    /// Random `[B, n, dout]` operands (δ, R{δ}, pre-activations of the output side).
    side_out: [Vec<f32>; 3],
    /// Garbage `[B, P]`, `[B, n, din]` and `[B, n, dout]` that outputs start as.
    junk_params: Vec<f32>,
    junk_in: Vec<f32>,
    junk_out: [Vec<f32>; 2],
}

impl Layer {
    fn new(tasks: usize, rows: usize, din: usize, dout: usize, seed: u64) -> Self {
        let layout = ThetaLayout::from_widths(&[FRONT, din, dout]);
        let p = layout.len();
        let scaled = |id: u64| {
            let mut t = randn(seed, &[id], tasks * p, 1.0);
            for b in 0..tasks {
                for l in 0..layout.n_linear() {
                    let s = 1.0 / (layout.widths[l] as f32).sqrt();
                    for i in layout.weight(l).chain(layout.bias(l)) {
                        t[b * p + i] *= s;
                    }
                }
            }
            t
        };
        let (xin, xout) = (tasks * rows * din, tasks * rows * dout);
        Self {
            theta: scaled(0),
            u: scaled(1),
            z_in: randn(seed, &[2], xin, 1.0),
            side_in: [randn(seed, &[3], xin, 1.0), randn(seed, &[4], xin, 1.0), randn(seed, &[5], xin, 1.0)],
            side_out: [
                randn(seed, &[6], xout, 1.0),
                randn(seed, &[7], xout, 1.0),
                randn(seed, &[8], xout, 1.0),
            ],
            junk_params: randn(seed, &[9], tasks * p, 5.0),
            junk_in: randn(seed, &[10], xin, 5.0),
            junk_out: [randn(seed, &[11], xout, 5.0), randn(seed, &[12], xout, 5.0)],
            tasks,
            rows,
            din,
            dout,
            layout,
        }
    }

    fn p(&self) -> usize {
        self.layout.len()
    }

    /// The input `H = act(z_in)` (for `Act::NONE` the input of the first layer).
    fn input(&self, act: Act) -> Vec<f32> {
        self.z_in.iter().map(|&z| act.apply(z)).collect()
    }

    fn case(&self) -> String {
        format!("B={} n={} {}->{}", self.tasks, self.rows, self.din, self.dout)
    }

    /// Task `b`'s slices: `[B, n, din]`-shaped, `[B, n, dout]`-shaped, `[B, P]`-shaped ranges.
    fn xin(&self, b: usize) -> std::ops::Range<usize> {
        let m = self.rows * self.din;
        b * m..(b + 1) * m
    }

    fn xout(&self, b: usize) -> std::ops::Range<usize> {
        let m = self.rows * self.dout;
        b * m..(b + 1) * m
    }

    fn params(&self, b: usize) -> std::ops::Range<usize> {
        let p = self.p();
        b * p..(b + 1) * p
    }

    /// The seven scalar arguments shared by the layer kernels.
    fn scalars<'a, R: Runtime>(&self, act: Act) -> [Arg<'a, R>; 8] {
        [
            Arg::int(self.tasks),
            Arg::int(self.rows),
            Arg::int(self.din),
            Arg::int(self.dout),
            Arg::int(self.p()),
            Arg::int(self.layout.weight(1).start),
            Arg::int(self.layout.bias(1).start),
            Arg::I32(act.code()),
        ]
    }
}

fn layers() -> impl Iterator<Item = Layer> {
    LINEAR_SHAPES.into_iter().map(|(b, n, din, dout)| Layer::new(b, n, din, dout, (n + din) as u64))
}

fn linear_forward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in layers() {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let x = k.input(Act::TANH);
        for act in [Act::NONE, Act::RELU, Act::TANH] {
            let mut want = vec![0.0; k.tasks * n * dout];
            for b in 0..k.tasks {
                let th = &k.theta[k.params(b)];
                let o = &mut want[k.xout(b)];
                gemm_nt_acc(o, &x[k.xin(b)], &th[k.layout.weight(1)], n, din, dout);
                add_row(o, &th[k.layout.bias(1)], n, dout);
                for v in o.iter_mut() {
                    *v = act.apply(*v);
                }
            }
            let (tb, xb) = (rt.upload(&k.theta)?, rt.upload(&x)?);
            let out = rt.upload(&k.junk_out[0])?;
            let mut args = vec![Arg::buf(&out), Arg::buf(&xb), Arg::buf(&tb)];
            args.extend(k.scalars(act));
            rt.launch_default(KernelId::LinearForward, &args)?;
            cmp.add(&format!("out {} {}", k.case(), act.label()), &rt.download(&out)?, &want);
        }
    }
    Ok(())
}

fn linear_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in layers() {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let delta = &k.side_out[0];
        for act in [Act::RELU, Act::TANH] {
            let h_in = k.input(act);
            // grad starts as garbage: the layer's weight and bias are written, the rest kept.
            let mut want_grad = k.junk_params.clone();
            let mut want_dh = vec![0.0; k.tasks * n * din];
            for b in 0..k.tasks {
                let g = &mut want_grad[k.params(b)];
                g[k.layout.weight(1)].fill(0.0);
                g[k.layout.bias(1)].fill(0.0);
                gemm_tn_acc(&mut g[k.layout.weight(1)], &delta[k.xout(b)], &h_in[k.xin(b)], n, dout, din);
                col_sum_acc(&mut g[k.layout.bias(1)], &delta[k.xout(b)], n, dout);
                let th = &k.theta[k.params(b)];
                gemm_nn_acc(&mut want_dh[k.xin(b)], &delta[k.xout(b)], &th[k.layout.weight(1)], n, dout, din);
            }
            let want_dprev: Vec<f32> = want_dh.iter().zip(&h_in).map(|(&g, &h)| g * act.d1(h)).collect();
            for want_dinput in [true, false] {
                let (tb, hb, db) = (rt.upload(&k.theta)?, rt.upload(&h_in)?, rt.upload(delta)?);
                let grad = rt.upload(&k.junk_params)?;
                let (dh, dprev) = (rt.upload(&k.junk_in)?, rt.upload(&k.junk_in)?);
                let mut args = vec![
                    Arg::buf(&grad),
                    Arg::buf(&dh),
                    Arg::buf(&dprev),
                    Arg::buf(&db),
                    Arg::buf(&hb),
                    Arg::buf(&tb),
                ];
                args.extend(k.scalars(act));
                args.push(Arg::flag(want_dinput));
                rt.launch_default(KernelId::LinearBackward, &args)?;
                let case = format!("{} {} want_dinput={want_dinput}", k.case(), act.label());
                cmp.add(&format!("grad {case}"), &rt.download(&grad)?, &want_grad);
                if want_dinput {
                    cmp.add(&format!("dh {case}"), &rt.download(&dh)?, &want_dh);
                    cmp.add(&format!("delta_prev {case}"), &rt.download(&dprev)?, &want_dprev);
                } else {
                    cmp.add(&format!("dh (not written) {case}"), &rt.download(&dh)?, &k.junk_in);
                }
            }
        }
    }
    Ok(())
}

fn linear_rop_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in layers() {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let rh_in = &k.side_in[0];
        for act in [Act::NONE, Act::RELU, Act::TANH] {
            let input = k.input(Act::TANH);
            let h_out: Vec<f32> = k.side_out[2].iter().map(|&z| act.apply(z)).collect();
            for has_rh_in in [true, false] {
                let mut want_rz = vec![0.0; k.tasks * n * dout];
                for b in 0..k.tasks {
                    let (th, u) = (&k.theta[k.params(b)], &k.u[k.params(b)]);
                    let rz = &mut want_rz[k.xout(b)];
                    if has_rh_in {
                        gemm_nt_acc(rz, &rh_in[k.xin(b)], &th[k.layout.weight(1)], n, din, dout);
                    }
                    gemm_nt_acc(rz, &input[k.xin(b)], &u[k.layout.weight(1)], n, din, dout);
                    add_row(rz, &u[k.layout.bias(1)], n, dout);
                }
                let want_rh: Vec<f32> = if act.0.is_some() {
                    want_rz.iter().zip(&h_out).map(|(&r, &h)| act.d1(h) * r).collect()
                } else {
                    k.junk_out[1].clone() // not written without an activation
                };
                let up = |v: &[f32]| rt.upload(v);
                let (rz, rh_out) = (up(&k.junk_out[0])?, up(&k.junk_out[1])?);
                let (rhb, inb, hob, tb, ub) =
                    (up(rh_in)?, up(&input)?, up(&h_out)?, up(&k.theta)?, up(&k.u)?);
                let mut args = vec![
                    Arg::buf(&rz),
                    Arg::buf(&rh_out),
                    Arg::buf(&rhb),
                    Arg::buf(&inb),
                    Arg::buf(&hob),
                    Arg::buf(&tb),
                    Arg::buf(&ub),
                ];
                args.extend(k.scalars(act));
                args.push(Arg::flag(has_rh_in));
                rt.launch_default(KernelId::LinearRop, &args)?;
                let case = format!("{} {} has_rh_in={has_rh_in}", k.case(), act.label());
                cmp.add(&format!("rz {case}"), &rt.download(&rz)?, &want_rz);
                cmp.add(&format!("rh_out {case}"), &rt.download(&rh_out)?, &want_rh);
            }
        }
    }
    Ok(())
}

fn linear_rop_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in layers() {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let [rdelta, delta, _] = &k.side_out;
        let [rh_in, dh_in, rz_prev] = &k.side_in;
        for act in [Act::RELU, Act::TANH] {
            // `in` is H_l = act(Z_{l−1}), the activation the kernel differentiates.
            let input = k.input(act);
            for has_prev in [true, false] {
                let mut want_hv = k.junk_params.clone();
                let mut want_rprev = vec![0.0; k.tasks * n * din];
                for b in 0..k.tasks {
                    let (th, u) = (&k.theta[k.params(b)], &k.u[k.params(b)]);
                    let hv = &mut want_hv[k.params(b)];
                    hv[k.layout.weight(1)].fill(0.0);
                    hv[k.layout.bias(1)].fill(0.0);
                    let (xi, xo) = (k.xin(b), k.xout(b));
                    gemm_tn_acc(
                        &mut hv[k.layout.weight(1)],
                        &rdelta[xo.clone()],
                        &input[xi.clone()],
                        n,
                        dout,
                        din,
                    );
                    if has_prev {
                        gemm_tn_acc(
                            &mut hv[k.layout.weight(1)],
                            &delta[xo.clone()],
                            &rh_in[xi.clone()],
                            n,
                            dout,
                            din,
                        );
                    }
                    col_sum_acc(&mut hv[k.layout.bias(1)], &rdelta[xo.clone()], n, dout);
                    let mut rdh = vec![0.0; n * din];
                    gemm_nn_acc(&mut rdh, &rdelta[xo.clone()], &th[k.layout.weight(1)], n, dout, din);
                    gemm_nn_acc(&mut rdh, &delta[xo], &u[k.layout.weight(1)], n, dout, din);
                    for (i, e) in xi.enumerate() {
                        let h = input[e];
                        want_rprev[e] = rdh[i] * act.d1(h) + dh_in[e] * act.d2(h) * rz_prev[e];
                    }
                }
                if !has_prev {
                    want_rprev.clone_from(&k.junk_in); // not written
                }
                let up = |v: &[f32]| rt.upload(v);
                let (hv, rprev) = (up(&k.junk_params)?, up(&k.junk_in)?);
                let (rdb, db, inb, rhb, dhb, rzb) =
                    (up(rdelta)?, up(delta)?, up(&input)?, up(rh_in)?, up(dh_in)?, up(rz_prev)?);
                let (tb, ub) = (up(&k.theta)?, up(&k.u)?);
                let mut args = vec![
                    Arg::buf(&hv),
                    Arg::buf(&rprev),
                    Arg::buf(&rdb),
                    Arg::buf(&db),
                    Arg::buf(&inb),
                    Arg::buf(&rhb),
                    Arg::buf(&dhb),
                    Arg::buf(&rzb),
                    Arg::buf(&tb),
                    Arg::buf(&ub),
                ];
                args.extend(k.scalars(act));
                args.push(Arg::flag(has_prev));
                rt.launch_default(KernelId::LinearRopBackward, &args)?;
                let case = format!("{} {} has_prev={has_prev}", k.case(), act.label());
                cmp.add(&format!("hv {case}"), &rt.download(&hv)?, &want_hv);
                cmp.add(&format!("rdelta_prev {case}"), &rt.download(&rprev)?, &want_rprev);
            }
        }
    }
    Ok(())
}

/// Element counts of the elementwise kernels: several blocks with a partial last one, less
/// than a warp, a single value.
const ELEMENTWISE_COUNTS: [usize; 3] = [1000, 37, 1];

fn activation_forward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for count in ELEMENTWISE_COUNTS {
        let z = randn(21, &[count as u64], count, 1.5);
        for act in [Act::NONE, Act::RELU, Act::TANH] {
            let want: Vec<f32> = z.iter().map(|&v| act.apply(v)).collect();
            let (out, zb) = (rt.upload(&randn(22, &[count as u64], count, 5.0))?, rt.upload(&z)?);
            rt.launch_default(
                KernelId::ActivationForward,
                &[Arg::buf(&out), Arg::buf(&zb), Arg::int(count), Arg::I32(act.code())],
            )?;
            cmp.add(&format!("out count={count} {}", act.label()), &rt.download(&out)?, &want);
        }
    }
    Ok(())
}

fn activation_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for count in ELEMENTWISE_COUNTS {
        let z = randn(23, &[count as u64], count, 1.5);
        let dh = randn(24, &[count as u64], count, 1.0);
        for act in [Act::NONE, Act::RELU, Act::TANH] {
            let h: Vec<f32> = z.iter().map(|&v| act.apply(v)).collect();
            let want: Vec<f32> = dh.iter().zip(&h).map(|(&g, &h)| g * act.d1(h)).collect();
            let delta = rt.upload(&randn(25, &[count as u64], count, 5.0))?;
            let (dhb, hb) = (rt.upload(&dh)?, rt.upload(&h)?);
            rt.launch_default(
                KernelId::ActivationBackward,
                &[Arg::buf(&delta), Arg::buf(&dhb), Arg::buf(&hb), Arg::int(count), Arg::I32(act.code())],
            )?;
            cmp.add(&format!("delta count={count} {}", act.label()), &rt.download(&delta)?, &want);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// loss.cu: twins loss_forward_backward and loss_rop (crates/engine/src/loss.rs).

/// `(tasks, rows, cols)`: the sinusoid's output, a few classes, many rows per task (several
/// rows per thread of the block).
const LOSS_SHAPES: [(usize, usize, usize); 3] = [(4, 10, 1), (3, 25, 5), (2, 700, 10)];

fn mse_forward_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for (tasks, n, d) in LOSS_SHAPES {
        let m = n * d;
        let out = randn(1, &[n as u64, 0], tasks * m, 1.0);
        let y = randn(1, &[n as u64, 1], tasks * m, 1.0);
        let mut want_loss = vec![0.0; tasks];
        let mut want_dout = vec![0.0; tasks * m];
        let mut probs = vec![0.0; m];
        for (b, loss) in want_loss.iter_mut().enumerate() {
            let s = b * m..(b + 1) * m;
            *loss = loss_forward_backward(
                &mut want_dout[s.clone()],
                &mut probs,
                LossKind::Mse,
                &out[s.clone()],
                TargetsRef::Values(&y[s]),
                n,
                d,
            );
        }
        let (o, t) = (rt.upload(&out)?, rt.upload(&y)?);
        let loss = rt.upload(&randn(26, &[n as u64], tasks, 5.0))?;
        let dout = rt.upload(&randn(27, &[n as u64], tasks * m, 5.0))?;
        rt.launch_default(
            KernelId::MseForwardBackward,
            &[
                Arg::buf(&loss),
                Arg::buf(&dout),
                Arg::buf(&o),
                Arg::buf(&t),
                Arg::int(tasks),
                Arg::int(n),
                Arg::int(d),
            ],
        )?;
        let case = format!("B={tasks} n={n} d={d}");
        cmp.add(&format!("loss {case}"), &rt.download(&loss)?, &want_loss);
        cmp.add(&format!("dout {case}"), &rt.download(&dout)?, &want_dout);
    }
    Ok(())
}

fn mse_rop_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for (tasks, n, d) in LOSS_SHAPES {
        let m = n * d;
        let rout = randn(1, &[n as u64, 2], tasks * m, 1.0);
        let probs = vec![0.0; m]; // unused by the mse R-operator
        let mut want = vec![0.0; tasks * m];
        for b in 0..tasks {
            let s = b * m..(b + 1) * m;
            loss_rop(&mut want[s.clone()], LossKind::Mse, &probs, &rout[s], n, d);
        }
        let ro = rt.upload(&rout)?;
        let rdout = rt.upload(&randn(28, &[n as u64], tasks * m, 5.0))?;
        rt.launch_default(
            KernelId::MseRop,
            &[Arg::buf(&rdout), Arg::buf(&ro), Arg::int(tasks), Arg::int(n), Arg::int(d)],
        )?;
        cmp.add(&format!("rdout B={tasks} n={n} d={d}"), &rt.download(&rdout)?, &want);
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
    LOSS_SHAPES.into_iter().map(|(tasks, n, d)| {
        let d = d.max(2);
        let m = n * d;
        let out = randn(2, &[n as u64, 0], tasks * m, 3.0);
        let lab = labels(2, &[n as u64, 1], tasks * n, d);
        let mut loss = vec![0.0; tasks];
        let mut dout = vec![0.0; tasks * m];
        let mut probs = vec![0.0; tasks * m];
        for b in 0..tasks {
            let s = b * m..(b + 1) * m;
            loss[b] = loss_forward_backward(
                &mut dout[s.clone()],
                &mut probs[s.clone()],
                LossKind::CrossEntropy,
                &out[s],
                TargetsRef::Labels(&lab[b * n..(b + 1) * n]),
                n,
                d,
            );
        }
        CrossEntropyCase { tasks, n, d, out, labels: lab, loss, dout, probs }
    })
}

fn cross_entropy_forward_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in cross_entropy_cases() {
        let (tasks, n, d) = (k.tasks, k.n, k.d);
        let (o, l) = (rt.upload(&k.out)?, rt.upload(&k.labels)?);
        let loss = rt.upload(&randn(29, &[n as u64], tasks, 5.0))?;
        let dout = rt.upload(&randn(30, &[n as u64], tasks * n * d, 5.0))?;
        let probs = rt.upload(&randn(31, &[n as u64], tasks * n * d, 5.0))?;
        rt.launch_default(
            KernelId::CrossEntropyForwardBackward,
            &[
                Arg::buf(&loss),
                Arg::buf(&dout),
                Arg::buf(&probs),
                Arg::buf(&o),
                Arg::buf(&l),
                Arg::int(tasks),
                Arg::int(n),
                Arg::int(d),
            ],
        )?;
        let case = format!("B={tasks} n={n} d={d}");
        cmp.add(&format!("loss {case}"), &rt.download(&loss)?, &k.loss);
        cmp.add(&format!("dout {case}"), &rt.download(&dout)?, &k.dout);
        cmp.add(&format!("probs {case}"), &rt.download(&probs)?, &k.probs);
    }
    Ok(())
}

fn cross_entropy_rop_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in cross_entropy_cases() {
        let (tasks, n, d) = (k.tasks, k.n, k.d);
        let m = n * d;
        let rout = randn(2, &[n as u64, 2], tasks * m, 1.0);
        let mut want = vec![0.0; tasks * m];
        for b in 0..tasks {
            let s = b * m..(b + 1) * m;
            loss_rop(&mut want[s.clone()], LossKind::CrossEntropy, &k.probs[s.clone()], &rout[s], n, d);
        }
        // The softmax input is the engine's, so this check does not depend on the forward
        // kernel.
        let (pb, ro) = (rt.upload(&k.probs)?, rt.upload(&rout)?);
        let rdout = rt.upload(&randn(32, &[n as u64], tasks * m, 5.0))?;
        rt.launch_default(
            KernelId::CrossEntropyRop,
            &[Arg::buf(&rdout), Arg::buf(&pb), Arg::buf(&ro), Arg::int(tasks), Arg::int(n), Arg::int(d)],
        )?;
        cmp.add(&format!("rdout B={tasks} n={n} d={d}"), &rt.download(&rdout)?, &want);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// scheduler.cu: twins are the scheduler glue of the engine (see the top of scheduler.cu).

/// The engine's scheduler features of one step (`features` in
/// crates/engine/src/inner_loop.rs, which is private there, restated with the same
/// expression): `[ln(loss + 1e-8), ln(‖g‖₂ + 1e-8), t / T]`.
fn engine_features(loss: f32, grad: &[f32], t: usize, steps: usize) -> [f32; FEATURES] {
    let eps = 1e-8f32;
    let norm = grad.iter().map(|&g| g * g).sum::<f32>().sqrt();
    [(loss + eps).ln(), (norm + eps).ln(), t as f32 / steps as f32]
}

fn scheduler_features_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    // (tasks, params, step, steps): the default learner, a tiny one, more params than a block.
    for (tasks, p, step, steps) in [(4usize, 1761usize, 2usize, 5usize), (3, 7, 0, 1), (2, 3000, 4, 5)] {
        let loss = uniform(41, &[p as u64], tasks, 0.01, 3.0);
        let grad = randn(42, &[p as u64], tasks * p, 0.3);
        let mut want = Vec::with_capacity(tasks * FEATURES);
        for b in 0..tasks {
            want.extend(engine_features(loss[b], &grad[b * p..(b + 1) * p], step, steps));
        }
        let x = rt.upload(&randn(43, &[p as u64], tasks * FEATURES, 5.0))?;
        let (lb, gb) = (rt.upload(&loss)?, rt.upload(&grad)?);
        rt.launch_default(
            KernelId::SchedulerFeatures,
            &[
                Arg::buf(&x),
                Arg::buf(&lb),
                Arg::buf(&gb),
                Arg::int(tasks),
                Arg::int(p),
                Arg::int(step),
                Arg::int(steps),
            ],
        )?;
        cmp.add(&format!("x B={tasks} P={p} t={step}/{steps}"), &rt.download(&x)?, &want);
    }
    Ok(())
}

/// `(tasks, hidden, groups)`: the default LSTM scheduler (H = 20, G = 6), more groups than a
/// warp, more groups than threads, and the LSLR table (H = 0: `z = head_b`).
const HEAD_SHAPES: [(usize, usize, usize); 4] = [(5, 20, 6), (3, 37, 40), (2, 30, 300), (4, 0, 6)];
const LR_MIN: f32 = 0.01;
const LR_SPAN: f32 = 0.49;

/// Scheduler-head data of one shape: `h [B, H]`, `head_w [G, H]`, `head_b [G]`. With H = 0
/// the `h` and `head_w` arrays hold one unused value (a device buffer is never empty).
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

fn scheduler_head_forward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in head_cases(51) {
        let (hd, g) = (k.hidden, k.groups);
        let mut want_sig = vec![0.0; k.tasks * g];
        let mut want_rates = vec![0.0; k.tasks * g];
        for b in 0..k.tasks {
            for j in 0..g {
                // SchedulerTrace::step: z = head_b + head_w·h (LSTM), z = table entry (LSLR).
                let z = if hd == 0 {
                    k.head_b[j]
                } else {
                    k.head_b[j] + dot(&k.head_w[j * hd..(j + 1) * hd], &k.h[b * hd..(b + 1) * hd])
                };
                want_sig[b * g + j] = sigmoid(z);
                want_rates[b * g + j] = LR_MIN + LR_SPAN * want_sig[b * g + j];
            }
        }
        let sig = rt.upload(&randn(52, &[g as u64], k.tasks * g, 5.0))?;
        let rates = rt.upload(&randn(53, &[g as u64], k.tasks * g, 5.0))?;
        let (h, w, bias) = (rt.upload(&k.h)?, rt.upload(&k.head_w)?, rt.upload(&k.head_b)?);
        rt.launch_default(
            KernelId::SchedulerHeadForward,
            &[
                Arg::buf(&sig),
                Arg::buf(&rates),
                Arg::buf(&h),
                Arg::buf(&w),
                Arg::buf(&bias),
                Arg::int(k.tasks),
                Arg::int(hd),
                Arg::int(g),
                Arg::F32(LR_MIN),
                Arg::F32(LR_SPAN),
            ],
        )?;
        let case = format!("B={} H={hd} G={g}", k.tasks);
        cmp.add(&format!("sig {case}"), &rt.download(&sig)?, &want_sig);
        cmp.add(&format!("rates {case}"), &rt.download(&rates)?, &want_rates);
    }
    Ok(())
}

fn scheduler_head_backward_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    for k in head_cases(61) {
        let (tasks, hd, g) = (k.tasks, k.hidden, k.groups);
        let ids = [hd as u64, g as u64];
        let da = randn(62, &ids, tasks * g, 1.0);
        let sig = uniform(63, &ids, tasks * g, 0.01, 0.99);
        let dh_carry = randn(64, &ids, (tasks * hd).max(1), 1.0);
        // The head gradients start non-zero: the kernel must add to them.
        let gw0 = randn(65, &ids, (tasks * g * hd).max(1), 0.1);
        let gb0 = randn(66, &ids, tasks * g, 0.1);
        let (mut want_gw, mut want_gb) = (gw0.clone(), gb0.clone());
        let mut want_dh = dh_carry.clone();
        for b in 0..tasks {
            // SchedulerTrace::backward, one step: dz, the head's gradients, dJ/dh (over k in
            // order, starting from the carried dJ/dh).
            for j in 0..g {
                let s = sig[b * g + j];
                let dz = da[b * g + j] * LR_SPAN * s * (1.0 - s);
                want_gb[b * g + j] += dz;
                if hd > 0 {
                    let row = (b * g + j) * hd;
                    axpy(&mut want_gw[row..row + hd], dz, &k.h[b * hd..(b + 1) * hd]);
                    axpy(&mut want_dh[b * hd..(b + 1) * hd], dz, &k.head_w[j * hd..(j + 1) * hd]);
                }
            }
        }
        let dh = rt.upload(&randn(67, &ids, (tasks * hd).max(1), 5.0))?;
        let (gw, gb) = (rt.upload(&gw0)?, rt.upload(&gb0)?);
        let (dab, sb, hb, wb, cb) = (
            rt.upload(&da)?,
            rt.upload(&sig)?,
            rt.upload(&k.h)?,
            rt.upload(&k.head_w)?,
            rt.upload(&dh_carry)?,
        );
        rt.launch_default(
            KernelId::SchedulerHeadBackward,
            &[
                Arg::buf(&dh),
                Arg::buf(&gw),
                Arg::buf(&gb),
                Arg::buf(&dab),
                Arg::buf(&sb),
                Arg::buf(&hb),
                Arg::buf(&wb),
                Arg::buf(&cb),
                Arg::int(tasks),
                Arg::int(hd),
                Arg::int(g),
                Arg::F32(LR_SPAN),
            ],
        )?;
        let case = format!("B={tasks} H={hd} G={g}");
        cmp.add(&format!("gb {case}"), &rt.download(&gb)?, &want_gb);
        if hd > 0 {
            cmp.add(&format!("gw {case}"), &rt.download(&gw)?, &want_gw);
            cmp.add(&format!("dh {case}"), &rt.download(&dh)?, &want_dh);
        } else {
            cmp.add(&format!("gw (not written) {case}"), &rt.download(&gw)?, &gw0);
        }
    }
    Ok(())
}

fn task_sum_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    // (tasks, count): the default batch and learner, a few values, one task.
    for (tasks, count) in [(25usize, 1761usize), (3, 7), (1, 300)] {
        let per_task = randn(71, &[tasks as u64, count as u64], tasks * count, 1.0);
        // Engine::meta_gradient_range: a zero gradient, then grad.add_assign per task in
        // task order.
        let mut want = vec![0.0f32; count];
        for b in 0..tasks {
            for (o, &v) in want.iter_mut().zip(&per_task[b * count..(b + 1) * count]) {
                *o += v;
            }
        }
        let out = rt.upload(&randn(72, &[count as u64], count, 5.0))?;
        let pt = rt.upload(&per_task)?;
        rt.launch_default(
            KernelId::TaskSum,
            &[Arg::buf(&out), Arg::buf(&pt), Arg::int(tasks), Arg::int(count)],
        )?;
        cmp.add(&format!("out B={tasks} count={count}"), &rt.download(&out)?, &want);
    }
    Ok(())
}

fn vector_axpy_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    // `v -= hv` of task_meta_gradient (alpha = −1), and another alpha.
    for (count, alpha) in [(1761usize, -1.0f32), (1000, 0.37), (7, -2.5)] {
        let y0 = randn(73, &[count as u64], count, 1.0);
        let x = randn(74, &[count as u64], count, 1.0);
        let mut want = y0.clone();
        axpy(&mut want, alpha, &x);
        let (y, xb) = (rt.upload(&y0)?, rt.upload(&x)?);
        rt.launch_default(
            KernelId::VectorAxpy,
            &[Arg::buf(&y), Arg::buf(&xb), Arg::F32(alpha), Arg::int(count)],
        )?;
        cmp.add(&format!("y count={count} alpha={alpha}"), &rt.download(&y)?, &want);
    }
    Ok(())
}

fn vector_scale_check<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
    // `v *= 1/B` of task_meta_gradient, and a negative scale.
    for (count, alpha) in [(1761usize, 1.0f32 / 25.0), (1000, -2.5), (7, 0.5)] {
        let y0 = randn(75, &[count as u64], count, 1.0);
        let want: Vec<f32> = y0.iter().map(|&v| v * alpha).collect();
        let y = rt.upload(&y0)?;
        rt.launch_default(KernelId::VectorScale, &[Arg::buf(&y), Arg::F32(alpha), Arg::int(count)])?;
        cmp.add(&format!("y count={count} alpha={alpha}"), &rt.download(&y)?, &want);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emu::{EmuBuffer, EmuRuntime, Schedule};
    use crate::runtime::{Element, LaunchConfig};

    #[test]
    fn every_kernel_has_one_passing_check_on_the_emulator() {
        let checks = all_kernel_checks(&EmuRuntime::new());
        assert_eq!(checks.len(), KernelId::ALL.len());
        for (k, c) in KernelId::ALL.iter().zip(&checks) {
            assert_eq!(c.name, k.name(), "one row per kernel, in KernelId::ALL order");
            assert!(
                c.pass,
                "{}: {} (worst {} = {} vs {})",
                c.name,
                c.note,
                c.worst_element(),
                c.worst_got,
                c.worst_want
            );
            assert!(c.values > 0 && c.worst_index.is_some(), "{}: nothing compared", c.name);
            assert!(c.worst_used <= 1.0 && c.worst_abs.is_finite(), "{c:?}");
            eprintln!(
                "{:<36} {:>8} values  worst abs {:.3e} rel {:.3e} ({:.3} of tolerance) at {}",
                c.name,
                c.values,
                c.worst_abs,
                c.worst_rel,
                c.worst_used,
                c.worst_element()
            );
        }
    }

    #[test]
    fn scheduler_kernels_pass_under_every_schedule() {
        // The other families run under these schedules in their test files (crates/cuda/tests/).
        for schedule in [Schedule::Reverse, Schedule::Shuffled { seed: 0x5eed }] {
            let rt = EmuRuntime::new().with_schedule(schedule).with_workers(1);
            for c in family_checks(&rt, "scheduler.cu") {
                assert!(c.pass, "{} under {schedule:?}: {}", c.name, c.note);
            }
        }
    }

    #[test]
    fn comparison_reports_the_worst_value_and_fails_past_the_tolerance() {
        let mut c = Comparison::new("t", Tolerance::DEFAULT);
        c.add("a", &[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        let ok = c.clone().finish();
        assert!(ok.pass && ok.worst_abs == 0.0 && ok.values == 3);
        c.add("b", &[0.0, 10.002], &[0.0, 10.0]); // 2e-3 > 1e-5 + 1e-4·10
        let bad = c.finish();
        assert!(!bad.pass, "{bad:?}");
        assert_eq!((bad.worst_at.as_str(), bad.worst_index), ("b", Some(1)));
        assert!((bad.worst_abs - 2e-3).abs() < 1e-5 && bad.worst_used > 1.0, "{bad:?}");
        assert!(bad.note.starts_with("b[1]"), "{}", bad.note);

        let mut c = Comparison::new("nan", Tolerance::DEFAULT);
        c.add("x", &[f32::NAN], &[0.0]);
        let nan = c.finish();
        assert!(!nan.pass && nan.worst_abs.is_nan());

        let mut c = Comparison::new("len", Tolerance::DEFAULT);
        c.add("x", &[0.0], &[0.0, 0.0]);
        assert!(!c.finish().pass);
        assert!(!Check::failed("e", Tolerance::DEFAULT, "boom").pass);
    }

    /// How [`Sabotaged`] breaks the emulator.
    #[derive(Debug, Clone, Copy)]
    enum Fault {
        /// Launches are validated, then not run.
        SkipLaunches,
        /// The first value of the n-th uploaded `f32` array is increased by n (different
        /// amounts, so that corrupting two operands alike cannot cancel out).
        CorruptUploads,
    }

    /// The emulator with a fault: every check must notice it.
    struct Sabotaged {
        inner: EmuRuntime,
        fault: Fault,
        uploads: std::cell::Cell<u32>,
    }

    impl Runtime for Sabotaged {
        type Buffer<T: Element> = EmuBuffer<T>;

        fn device_name(&self) -> String {
            format!("sabotaged emulator ({:?})", self.fault)
        }

        fn alloc<T: Element>(&self, len: usize) -> Result<EmuBuffer<T>> {
            self.inner.alloc(len)
        }

        fn copy_in<T: Element>(&self, dst: &mut EmuBuffer<T>, src: &[T]) -> Result<()> {
            let mut data = src.to_vec();
            if let Fault::CorruptUploads = self.fault
                && let Some(v) = (&mut data as &mut dyn std::any::Any).downcast_mut::<Vec<f32>>()
                && let Some(first) = v.first_mut()
            {
                self.uploads.set(self.uploads.get() + 1);
                *first += self.uploads.get() as f32;
            }
            self.inner.copy_in(dst, &data)
        }

        fn copy_out<T: Element>(&self, src: &EmuBuffer<T>, dst: &mut [T]) -> Result<()> {
            self.inner.copy_out(src, dst)
        }

        fn launch(&self, kernel: KernelId, config: &LaunchConfig, args: &[Arg<'_, Self>]) -> Result<()> {
            let values: Vec<_> = args.iter().map(Arg::value).collect();
            kernel.check(config, &values)?;
            if let Fault::SkipLaunches = self.fault {
                return Ok(());
            }
            let args: Vec<Arg<'_, EmuRuntime>> = args
                .iter()
                .map(|a| match *a {
                    Arg::F32(v) => Arg::F32(v),
                    Arg::I32(v) => Arg::I32(v),
                    Arg::U32(v) => Arg::U32(v),
                    Arg::BufF32(b, o) => Arg::BufF32(b, o),
                    Arg::BufI32(b, o) => Arg::BufI32(b, o),
                    Arg::BufU32(b, o) => Arg::BufU32(b, o),
                })
                .collect();
            self.inner.launch(kernel, config, &args)
        }

        fn synchronize(&self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_check_fails_when_the_kernel_does_not_run_or_sees_other_inputs() {
        for fault in [Fault::SkipLaunches, Fault::CorruptUploads] {
            let rt = Sabotaged { inner: EmuRuntime::new(), fault, uploads: Default::default() };
            for c in all_kernel_checks(&rt) {
                assert!(!c.pass, "{} passed on {}", c.name, rt.device_name());
                assert!(c.worst_used > 1.0 && !c.note.is_empty(), "{c:?}");
            }
        }
    }
}
