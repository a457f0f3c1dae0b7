//! `meta-worker selftest`: kernels and the whole device meta-gradient against their CPU twins
//! on a [`Runtime`], with a table of the worst deviations.

use metasched_cuda::compare::meta_gradient_tensors;
use metasched_cuda::learner::act_code;
use metasched_cuda::{Arg, KernelId, Runtime, device_meta_gradient};
use metasched_engine::init::init_params;
use metasched_engine::linalg::{add_row, gemm_nt_acc};
use metasched_engine::loss::{loss_forward_backward, loss_rop};
use metasched_engine::rng::CounterRng;
use metasched_engine::{
    Activation, Config, Engine, InnerConfig, LossKind, ModelConfig, SchedulerConfig, SchedulerKind, Targets,
    TargetsRef, TaskBatch, ThetaLayout,
};

/// Absolute tolerance: `|dev − cpu| ≤ ATOL + RTOL·|cpu|` elementwise.
pub const ATOL: f32 = 1e-5;
/// Relative tolerance.
pub const RTOL: f32 = 1e-4;

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub check: String,
    pub abs: f32,
    pub rel: f32,
    pub pass: bool,
    pub note: String,
}

fn randn(seed: u64, ids: &[u64], n: usize, scale: f32) -> Vec<f32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.normal() as f32 * scale).collect()
}

fn uniform(seed: u64, ids: &[u64], n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.uniform_in(f64::from(lo), f64::from(hi)) as f32).collect()
}

fn labels(seed: u64, ids: &[u64], n: usize, classes: usize) -> Vec<u32> {
    let mut r = CounterRng::new(seed, ids);
    (0..n).map(|_| r.below(classes as u64) as u32).collect()
}

/// Compares elementwise, accumulating the worst deviations into `row` (NaN never passes).
fn compare(row: &mut Row, got: &[f32], want: &[f32]) {
    if got.len() != want.len() {
        row.pass = false;
        row.note = format!("lengths differ: {} vs {}", got.len(), want.len());
        return;
    }
    for (&g, &w) in got.iter().zip(want) {
        let d = (g - w).abs();
        if d.is_nan() || d > ATOL + RTOL * w.abs() {
            row.pass = false;
        }
        if d.is_nan() {
            row.abs = f32::NAN;
            continue;
        }
        row.abs = row.abs.max(d);
        if w.abs() > 1e-3 {
            row.rel = row.rel.max(d / w.abs());
        }
    }
}

fn row(check: &str) -> Row {
    Row { check: check.to_string(), abs: 0.0, rel: 0.0, pass: true, note: String::new() }
}

fn failed(check: &str, e: impl std::fmt::Display) -> Row {
    Row { check: check.to_string(), abs: f32::NAN, rel: f32::NAN, pass: false, note: e.to_string() }
}

/// `sgd_update.cu` (forward) against the engine's inner-loop update.
fn sgd_forward<R: Runtime>(rt: &R) -> Row {
    let name = "sgd_update_forward";
    let run = || -> Result<Row, metasched_cuda::CudaError> {
        let mut r = row(name);
        for (widths, tasks) in [(vec![1usize, 40, 40, 1], 4usize), (vec![5, 300, 7], 3)] {
            let layout = ThetaLayout::from_widths(&widths);
            let (p, g) = (layout.len(), layout.groups());
            let seed = widths.len() as u64;
            let theta = randn(seed, &[0], tasks * p, 0.5);
            let grad = randn(seed, &[1], tasks * p, 1.0);
            let rates = uniform(seed, &[3], tasks * g, 0.0, 0.1);
            let mut want = vec![0.0; tasks * p];
            for b in 0..tasks {
                for (grp, &a) in rates[b * g..(b + 1) * g].iter().enumerate() {
                    for i in layout.group(grp) {
                        want[b * p + i] = theta[b * p + i] - a * grad[b * p + i];
                    }
                }
            }
            let offsets: Vec<i32> = layout.offsets.iter().map(|&o| o as i32).collect();
            let out = rt.alloc::<f32>(tasks * p)?;
            let (dt, dg, dr, doff) =
                (rt.upload(&theta)?, rt.upload(&grad)?, rt.upload(&rates)?, rt.upload(&offsets)?);
            let args = [
                Arg::buf(&out),
                Arg::buf(&dt),
                Arg::buf(&dg),
                Arg::buf(&dr),
                Arg::buf(&doff),
                Arg::int(tasks),
                Arg::int(p),
                Arg::int(g),
            ];
            rt.launch_default(KernelId::SgdUpdateForward, &args)?;
            compare(&mut r, &rt.download(&out)?, &want);
        }
        Ok(r)
    };
    run().unwrap_or_else(|e| failed(name, e))
}

/// `loss.cu` (MSE forward/backward and R-op) against `metasched_engine::loss`.
// The engine is called task by task, on slices of several batched arrays at once.
#[allow(clippy::needless_range_loop)]
fn mse_loss<R: Runtime>(rt: &R) -> Row {
    let name = "loss_mse_forward_backward_rop";
    let run = || -> Result<Row, metasched_cuda::CudaError> {
        let mut r = row(name);
        for (tasks, n, d) in [(4usize, 10usize, 1usize), (3, 25, 5)] {
            let m = n * d;
            let out = randn(1, &[n as u64, 0], tasks * m, 1.0);
            let y = randn(1, &[n as u64, 1], tasks * m, 1.0);
            let rout = randn(1, &[n as u64, 2], tasks * m, 1.0);
            let mut want_loss = vec![0.0; tasks];
            let mut want_dout = vec![0.0; tasks * m];
            let mut want_rdout = vec![0.0; tasks * m];
            let mut probs = vec![0.0; m];
            for b in 0..tasks {
                let s = b * m..(b + 1) * m;
                want_loss[b] = loss_forward_backward(
                    &mut want_dout[s.clone()],
                    &mut probs,
                    LossKind::Mse,
                    &out[s.clone()],
                    TargetsRef::Values(&y[s.clone()]),
                    n,
                    d,
                );
                loss_rop(&mut want_rdout[s.clone()], LossKind::Mse, &probs, &rout[s], n, d);
            }
            let (o, t, ro) = (rt.upload(&out)?, rt.upload(&y)?, rt.upload(&rout)?);
            let loss = rt.alloc::<f32>(tasks)?;
            let (dout, rdout) = (rt.alloc::<f32>(tasks * m)?, rt.alloc::<f32>(tasks * m)?);
            let (bb, nn, dd) = (Arg::int(tasks), Arg::int(n), Arg::int(d));
            rt.launch_default(
                KernelId::MseForwardBackward,
                &[Arg::buf(&loss), Arg::buf(&dout), Arg::buf(&o), Arg::buf(&t), bb, nn, dd],
            )?;
            rt.launch_default(KernelId::MseRop, &[Arg::buf(&rdout), Arg::buf(&ro), bb, nn, dd])?;
            compare(&mut r, &rt.download(&loss)?, &want_loss);
            compare(&mut r, &rt.download(&dout)?, &want_dout);
            compare(&mut r, &rt.download(&rdout)?, &want_rdout);
        }
        Ok(r)
    };
    run().unwrap_or_else(|e| failed(name, e))
}

/// `mlp.cu` (one dense layer with its activation, forward) against the engine's products.
fn linear_forward<R: Runtime>(rt: &R) -> Row {
    let name = "mlp_linear_forward";
    let run = || -> Result<Row, metasched_cuda::CudaError> {
        let mut r = row(name);
        for (tasks, n, din, dout) in [(2usize, 37usize, 40usize, 40usize), (3, 10, 1, 17)] {
            let layout = ThetaLayout::from_widths(&[din, dout]);
            let p = layout.len();
            let theta = randn(3, &[0], tasks * p, 1.0 / (din as f32).sqrt());
            let x = randn(4, &[n as u64], tasks * n * din, 1.0);
            for act in [Activation::Relu, Activation::Tanh] {
                let mut want = vec![0.0; tasks * n * dout];
                for (b, o) in want.chunks_mut(n * dout).enumerate() {
                    let th = &theta[b * p..(b + 1) * p];
                    gemm_nt_acc(o, &x[b * n * din..(b + 1) * n * din], &th[layout.weight(0)], n, din, dout);
                    add_row(o, &th[layout.bias(0)], n, dout);
                    for v in o.iter_mut() {
                        *v = act.apply(*v);
                    }
                }
                let (tb, xb) = (rt.upload(&theta)?, rt.upload(&x)?);
                let out = rt.alloc::<f32>(tasks * n * dout)?;
                let args = [
                    Arg::buf(&out),
                    Arg::buf(&xb),
                    Arg::buf(&tb),
                    Arg::int(tasks),
                    Arg::int(n),
                    Arg::int(din),
                    Arg::int(dout),
                    Arg::int(p),
                    Arg::int(layout.weight(0).start),
                    Arg::int(layout.bias(0).start),
                    Arg::I32(act_code(act)),
                ];
                rt.launch_default(KernelId::LinearForward, &args)?;
                compare(&mut r, &rt.download(&out)?, &want);
            }
        }
        Ok(r)
    };
    run().unwrap_or_else(|e| failed(name, e))
}

fn batch(config: &Config, b: usize, k: usize, q: usize, seed: u64) -> TaskBatch<f32> {
    let (d_in, d_out) = (config.d_in(), config.d_out());
    let targets = |ids: u64, n: usize| match config.model.loss {
        LossKind::Mse => Targets::Values(randn(seed, &[ids], b * n * d_out, 1.0)),
        LossKind::CrossEntropy => Targets::Labels(labels(seed, &[ids], b * n, d_out)),
    };
    TaskBatch {
        b,
        k,
        q,
        d_in,
        d_out,
        support_x: uniform(seed, &[1], b * k * d_in, -2.0, 2.0),
        support_y: targets(2, k),
        query_x: uniform(seed, &[3], b * q * d_in, -2.0, 2.0),
        query_y: targets(4, q),
    }
}

/// The whole meta-gradient on `rt` against `Engine::meta_gradient`, one row per tensor.
fn metagrad<R: Runtime>(rt: &R, label: &str, config: &Config, batch: &TaskBatch<f32>) -> Vec<Row> {
    let name = format!("metagrad {label}");
    let params = match init_params(config, 3, 0.05) {
        Ok(p) => p,
        Err(e) => return vec![failed(&name, e)],
    };
    let cpu = match Engine::new(1).and_then(|e| e.meta_gradient(config, &params, batch)) {
        Ok(m) => m,
        Err(e) => return vec![failed(&format!("{name} (cpu engine)"), e)],
    };
    let dev = match device_meta_gradient(rt, config, &params, batch) {
        Ok(m) => m,
        Err(e) => return vec![failed(&name, e)],
    };
    let (want, got) = (meta_gradient_tensors(&cpu), meta_gradient_tensors(&dev));
    if want.len() != got.len() {
        return vec![failed(&name, "tensor sets differ")];
    }
    want.iter()
        .zip(&got)
        .map(|((n, w), (_, g))| {
            let mut r = row(&format!("{name} {n}"));
            compare(&mut r, g, w);
            r
        })
        .collect()
}

/// Runs every check on `rt`.
pub fn run<R: Runtime>(rt: &R) -> Vec<Row> {
    let mut rows = vec![sgd_forward(rt), mse_loss(rt), linear_forward(rt)];
    let sinusoid = Config::sinusoid_default();
    rows.extend(metagrad(rt, "sinusoid", &sinusoid, &batch(&sinusoid, 2, 10, 10, 5)));
    let ce = Config {
        model: ModelConfig {
            layers: vec![3, 6, 4],
            activation: Activation::Tanh,
            loss: LossKind::CrossEntropy,
        },
        inner: InnerConfig { steps: 3, first_order: false, learn_init: true },
        scheduler: SchedulerConfig {
            kind: SchedulerKind::Lslr,
            hidden: 5,
            lr_min: 0.01,
            lr_max: 0.5,
            lr_fixed: 0.2,
        },
    };
    rows.extend(metagrad(rt, "cross-entropy", &ce, &batch(&ce, 3, 4, 5, 11)));
    rows
}

/// Prints the table to stdout; true when every row passed.
pub fn print(device: &str, rows: &[Row]) -> bool {
    println!("selftest on {device} (pass: |dev - cpu| <= {ATOL:e} + {RTOL:e}*|cpu| elementwise)");
    println!("{:<48} {:>12} {:>12} {:>6}", "check", "worst_abs", "worst_rel", "result");
    for r in rows {
        println!(
            "{:<48} {:>12.3e} {:>12.3e} {:>6}{}",
            r.check,
            r.abs,
            r.rel,
            if r.pass { "pass" } else { "FAIL" },
            if r.note.is_empty() { String::new() } else { format!("  ({})", r.note) }
        );
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} check(s), {failed} failed", rows.len());
    failed == 0
}
