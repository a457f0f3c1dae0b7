//! The wide learner's products (one task, 10 points, a 256×256 layer: issue 13) by the
//! engine's fixed-order loops (`linalg::gemm_*_acc`) and by the GEMM crate the one-task
//! learner handed them to first (`matrixmultiply`, `linalg::crate_*_acc`) and by the engine's
//! own AVX-512F + FMA kernels that `linalg::nt_acc`, `nn_acc`, `tn_acc` now use for f32
//! (`wide_kernels`, no packing).
//!
//! `cargo bench --bench wide_products -- [--reps N]`: per product, minimum and median µs over
//! N repetitions of 20 calls, rounds interleaved, and GFLOP/s of the minimum (one thread).

use std::time::Instant;

use metasched::engine::linalg::{
    crate_nn_acc, crate_nt_acc, crate_tn_acc, gemm_nn_acc, gemm_nt_acc, gemm_tn_acc,
};
use metasched::engine::wide_kernels;

fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..20 {
        f();
    }
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..20 {
                f();
            }
            t.elapsed().as_secs_f64() / 20.0
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut reps = 30;
    while let Some(a) = args.next() {
        if a == "--reps" {
            reps = args.next().and_then(|v| v.parse().ok()).unwrap_or(reps);
        }
    }
    let (n, k, m) = (10usize, 256usize, 256usize);
    let x: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.91).cos()).collect();
    let d: Vec<f32> = (0..n * m).map(|i| (i as f32 * 0.13).sin()).collect();
    let mut o = vec![0f32; n * m];
    // Copies whose first value lies on a 64-byte line, as the engine's one-task buffers do
    // (`task_pool::Aligned`): unaligned rows make every vector load straddle two lines.
    fn aligned(v: &[f32]) -> (Vec<f32>, usize) {
        let mut b = vec![0f32; v.len() + 16];
        let off = b.as_ptr().align_offset(64).min(16);
        b[off..off + v.len()].copy_from_slice(v);
        (b, off)
    }
    let ((xa, xo), (wa, wo), (da, dof)) = (aligned(&x), aligned(&w), aligned(&d));
    let (xal, wal, dal) = (&xa[xo..xo + x.len()], &wa[wo..wo + w.len()], &da[dof..dof + d.len()]);
    let (mut oa, oo) = aligned(&o);
    let (mut oga, ogo) = aligned(&vec![0f32; m * k]);
    println!("inputs' offset from a 64-byte line: {} bytes (the aligned rows: 0)", x.as_ptr() as usize % 64);
    let mut og = vec![0f32; m * k];
    let gflop = 2.0 * (n * k * m) as f64 / 1e9;
    println!("wide_kernels available (AVX-512F + FMA): {}", wide_kernels::available());
    for round in 0..3 {
        let rows: [(&str, (f64, f64)); 12] = [
            ("nt loops (forward H·Wᵀ)", time(reps, || gemm_nt_acc(&mut o, &x, &w, n, k, m))),
            ("nt matrixmultiply", time(reps, || _ = crate_nt_acc(&mut o, &x, &w, n, k, m))),
            ("nt wide_kernels", time(reps, || _ = wide_kernels::nt_acc(&mut o, &x, &w, n, k, m))),
            ("nt wide_kernels aligned", {
                let oal = &mut oa[oo..oo + n * m];
                time(reps, || _ = wide_kernels::nt_acc(oal, xal, wal, n, k, m))
            }),
            ("nn loops (δ·W)", time(reps, || gemm_nn_acc(&mut o, &d, &w, n, m, k))),
            ("nn matrixmultiply", time(reps, || _ = crate_nn_acc(&mut o, &d, &w, n, m, k))),
            ("nn wide_kernels", time(reps, || _ = wide_kernels::nn_acc(&mut o, &d, &w, n, m, k))),
            ("nn wide_kernels aligned", {
                let oal = &mut oa[oo..oo + n * m];
                time(reps, || _ = wide_kernels::nn_acc(oal, dal, wal, n, m, k))
            }),
            ("tn loops (δᵀ·H)", time(reps, || gemm_tn_acc(&mut og, &d, &x, n, m, k))),
            ("tn matrixmultiply", time(reps, || _ = crate_tn_acc(&mut og, &d, &x, n, m, k))),
            ("tn wide_kernels", time(reps, || _ = wide_kernels::tn_acc(&mut og, &d, &x, n, m, k))),
            ("tn wide_kernels aligned", {
                let ogal = &mut oga[ogo..ogo + m * k];
                time(reps, || _ = wide_kernels::tn_acc(ogal, dal, xal, n, m, k))
            }),
        ];
        for (name, (min, med)) in rows {
            println!(
                "round {round} {name:28} min {:7.1} us  median {:7.1} us  {:5.1} GFLOP/s",
                min * 1e6,
                med * 1e6,
                gflop / min
            );
        }
    }
    println!("checksum {}", o[3] + og[7] + oa[oo + 3] + oga[ogo + 7]);
}
