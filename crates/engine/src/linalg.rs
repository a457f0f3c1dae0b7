//! The three small dense products the learner needs, written so the compiler vectorises them.
//!
//! All matrices are row-major slices. Each function *accumulates* into `out` (callers clear it
//! first when they need a plain product), which lets the R-operator sum two products without a
//! temporary. The innermost loops run over contiguous memory so they compile to SIMD axpys;
//! summation order is fixed, so results are deterministic.
//!
//! Each product is compiled several times (`multiversion`): for AVX-512, AVX2 and the
//! baseline, picked at run time, so one binary is fast on every x86-64 machine without
//! `target-cpu=native`. No fused multiply-add is used and every sum has a fixed order, so all
//! versions give bitwise identical results (what lets runs on different machines agree).
// The dispatch code that `multiversion` generates uses `unsafe` to call the clone the CPU
// supports; it checks the CPU features first.
#![allow(unsafe_code)]

use multiversion::multiversion;

use crate::real::Real;
use crate::wide_kernels;

/// `out[n×m] += a[n×k] · b[m×k]ᵀ` (a layer's forward pass, `H Wᵀ`). Dot products for wide
/// inputs; for narrow ones (`k < 8`, e.g. a 1-d input layer) a pass per `p` over the row.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn gemm_nt_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, k: usize, m: usize) {
    debug_assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= m * k);
    for r in 0..n {
        let ar = &a[r * k..(r + 1) * k];
        let or = &mut out[r * m..(r + 1) * m];
        if k == 1 {
            // `b` is one column: the same terms as below, over contiguous memory.
            for (o, &bj) in or.iter_mut().zip(&b[..m]) {
                *o += ar[0] * bj;
            }
        } else if k < 8 {
            for (p, &s) in ar.iter().enumerate() {
                for (j, o) in or.iter_mut().enumerate() {
                    *o += s * b[j * k + p];
                }
            }
        } else {
            for (j, o) in or.iter_mut().enumerate() {
                *o += dot(ar, &b[j * k..(j + 1) * k]);
            }
        }
    }
}

/// Rows and columns of `out` that [`gemm_nn_acc`] and [`gemm_tn_acc`] keep in registers while
/// they run over the summed index: every output still sums its terms one by one in the order
/// of the index, so the blocking changes no bit.
const BLOCK_ROWS: usize = 4;
const BLOCK_COLS: usize = 32;

/// `out[i, j] += Σ_p a(i, p) · b[p·ldb + j]` for the `R × C` block of `out` at row stride
/// `ldo`, terms in the order `p = 0, 1, ...` (a rounded product, then a sum).
#[inline(always)]
fn block_acc<T: Real, const R: usize, const C: usize>(
    out: &mut [T],
    ldo: usize,
    a: impl Fn(usize, usize) -> T,
    b: &[T],
    ldb: usize,
    np: usize,
) {
    let mut acc = [[T::zero(); C]; R];
    for (i, acc) in acc.iter_mut().enumerate() {
        acc.copy_from_slice(&out[i * ldo..i * ldo + C]);
    }
    for p in 0..np {
        let bp = &b[p * ldb..p * ldb + C];
        for (i, acc) in acc.iter_mut().enumerate() {
            let s = a(i, p);
            for q in 0..C {
                acc[q] += s * bp[q];
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        out[i * ldo..i * ldo + C].copy_from_slice(acc);
    }
}

/// `out[n×m] += a[n×k] · b[k×m]` (back-propagation to a layer's input, `δ W`): blocks of
/// [`BLOCK_ROWS`] × [`BLOCK_COLS`] outputs in registers over `p`, the rest by rows.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn gemm_nn_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, k: usize, m: usize) {
    debug_assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= k * m);
    let (rows, cols) = (n - n % BLOCK_ROWS, m - m % BLOCK_COLS);
    for r0 in (0..rows).step_by(BLOCK_ROWS) {
        for j0 in (0..cols).step_by(BLOCK_COLS) {
            block_acc::<T, BLOCK_ROWS, BLOCK_COLS>(
                &mut out[r0 * m + j0..],
                m,
                |i, p| a[(r0 + i) * k + p],
                &b[j0..],
                m,
                k,
            );
        }
    }
    for r in 0..n {
        let j0 = if r < rows { cols } else { 0 };
        let or = &mut out[r * m + j0..(r + 1) * m];
        for (p, &s) in a[r * k..(r + 1) * k].iter().enumerate() {
            axpy(or, s, &b[p * m + j0..(p + 1) * m]);
        }
    }
}

/// `out[m×k] += a[n×m]ᵀ · b[n×k]` (a layer's weight gradient, `δᵀ H`): for wide inputs blocks
/// of [`BLOCK_ROWS`] × [`BLOCK_COLS`] outputs in registers over the `n` rows, the rest row by
/// row; for narrow ones (`k < 8`) a pass per column over all of `out`'s rows.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn gemm_tn_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, m: usize, k: usize) {
    debug_assert!(out.len() >= m * k && a.len() >= n * m && b.len() >= n * k);
    if k == 1 {
        // `out` is one column: the same terms as below, over contiguous memory.
        for r in 0..n {
            let s = b[r];
            for (o, &x) in out[..m].iter_mut().zip(&a[r * m..(r + 1) * m]) {
                *o += x * s;
            }
        }
        return;
    }
    if k < 8 {
        for r in 0..n {
            let ar = &a[r * m..(r + 1) * m];
            for (c, &s) in b[r * k..(r + 1) * k].iter().enumerate() {
                for (i, &x) in ar.iter().enumerate() {
                    out[i * k + c] += x * s;
                }
            }
        }
        return;
    }
    let (rows, cols) = (m - m % BLOCK_ROWS, k - k % BLOCK_COLS);
    for i0 in (0..rows).step_by(BLOCK_ROWS) {
        for c0 in (0..cols).step_by(BLOCK_COLS) {
            block_acc::<T, BLOCK_ROWS, BLOCK_COLS>(
                &mut out[i0 * k + c0..],
                k,
                |i, r| a[r * m + i0 + i],
                &b[c0..],
                k,
                n,
            );
        }
    }
    for r in 0..n {
        let ar = &a[r * m..(r + 1) * m];
        let br = &b[r * k..(r + 1) * k];
        for (i, &s) in ar.iter().enumerate() {
            let c0 = if i < rows { cols } else { 0 };
            axpy(&mut out[i * k + c0..(i + 1) * k], s, &br[c0..]);
        }
    }
}

/// Smallest weight matrix (`k·m` elements) whose products [`nt_acc`], [`nn_acc`] and [`tn_acc`]
/// hand to [`crate::wide_kernels`] (f32 on CPUs with AVX-512F + FMA: no packing) or to
/// `matrixmultiply` (a packing, register-blocked GEMM; f64, other CPUs) instead of the
/// fixed-order loops above: 2^15, so the wide learner's 256×256 layer (1-256-256-1) goes to the crate and every
/// other shape the engine runs (40×40 default, 128×128 digits, the LSTM's products) keeps its
/// bits. Measured at 10×256×256 (docs/PERFORMANCE.md, 2026-12-03): 1.4-2.9× the loops' speed.
/// Both run single-threaded and sum each output in a fixed order for a given CPU, so
/// results stay independent of thread and worker counts; they may differ in the last bits
/// from the loops (FMA, another order) and between CPUs with and without FMA.
pub const GEMM_CRATE_MIN: usize = 1 << 15;

/// `c[m×n] += a[m×k] · b[k×n]` by `matrixmultiply`, with `a` and `b` given by (row, column)
/// strides and `c` row-major; `false` (nothing done) when `T` is neither f32 nor f64.
#[allow(clippy::too_many_arguments)]
fn crate_gemm<T: Real>(
    c: &mut [T],
    a: &[T],
    (rsa, csa): (usize, usize),
    b: &[T],
    (rsb, csb): (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    use std::any::TypeId;
    if m == 0 || n == 0 {
        return true;
    }
    // Every index the crate reads or writes lies in the slices (the largest is the last one).
    assert!(c.len() >= m * n);
    assert!(k == 0 || ((m - 1) * rsa + (k - 1) * csa < a.len() && (k - 1) * rsb + (n - 1) * csb < b.len()));
    let s = |x: usize| x as isize;
    if TypeId::of::<T>() == TypeId::of::<f32>() {
        // SAFETY: `T` is `f32` (same `TypeId`), so the casts keep the element type; the
        // assertions above keep every element the strides address inside `a`, `b` and `c`;
        // `c` is a unique borrow, so it aliases neither input.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr().cast::<f32>(),
                s(rsa),
                s(csa),
                b.as_ptr().cast::<f32>(),
                s(rsb),
                s(csb),
                1.0,
                c.as_mut_ptr().cast::<f32>(),
                s(n),
                1,
            );
        }
        true
    } else if TypeId::of::<T>() == TypeId::of::<f64>() {
        // SAFETY: as above, with `T` = `f64`.
        unsafe {
            matrixmultiply::dgemm(
                m,
                k,
                n,
                1.0,
                a.as_ptr().cast::<f64>(),
                s(rsa),
                s(csa),
                b.as_ptr().cast::<f64>(),
                s(rsb),
                s(csb),
                1.0,
                c.as_mut_ptr().cast::<f64>(),
                s(n),
                1,
            );
        }
        true
    } else {
        false
    }
}

/// [`gemm_nt_acc`] by `matrixmultiply` whatever the size; `false` (nothing done) for `T`
/// neither f32 nor f64. The fallback of [`nt_acc`], public for benchmarks.
pub fn crate_nt_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, k: usize, m: usize) -> bool {
    crate_gemm(out, a, (k, 1), b, (1, k), n, k, m)
}

/// [`gemm_nn_acc`] by `matrixmultiply` (see [`crate_nt_acc`]).
pub fn crate_nn_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, k: usize, m: usize) -> bool {
    crate_gemm(out, a, (k, 1), b, (m, 1), n, k, m)
}

/// [`gemm_tn_acc`] by `matrixmultiply` (see [`crate_nt_acc`]).
pub fn crate_tn_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, m: usize, k: usize) -> bool {
    crate_gemm(out, a, (1, m), b, (k, 1), m, n, k)
}

/// `(out, a, b)` as f32 slices when `T` is `f32`.
#[allow(clippy::type_complexity)]
fn as_f32<'a, T: Real>(
    out: &'a mut [T],
    a: &'a [T],
    b: &'a [T],
) -> Option<(&'a mut [f32], &'a [f32], &'a [f32])> {
    Some((f32_view_mut(out)?, f32_view(a)?, f32_view(b)?))
}

/// [`gemm_nt_acc`]; when `b` has at least [`GEMM_CRATE_MIN`] elements, by
/// [`crate::wide_kernels`] (f32 on AVX-512F + FMA) or else `matrixmultiply`.
pub fn nt_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, k: usize, m: usize) {
    if k * m < GEMM_CRATE_MIN {
        return gemm_nt_acc(out, a, b, n, k, m);
    }
    if let Some((o, a, b)) = as_f32(out, a, b)
        && wide_kernels::nt_acc(o, a, b, n, k, m)
    {
        return;
    }
    if !crate_nt_acc(out, a, b, n, k, m) {
        gemm_nt_acc(out, a, b, n, k, m);
    }
}

/// [`gemm_nn_acc`]; when `b` has at least [`GEMM_CRATE_MIN`] elements, by
/// [`crate::wide_kernels`] (f32 on AVX-512F + FMA) or else `matrixmultiply`.
pub fn nn_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, k: usize, m: usize) {
    if k * m < GEMM_CRATE_MIN {
        return gemm_nn_acc(out, a, b, n, k, m);
    }
    if let Some((o, a, b)) = as_f32(out, a, b)
        && wide_kernels::nn_acc(o, a, b, n, k, m)
    {
        return;
    }
    if !crate_nn_acc(out, a, b, n, k, m) {
        gemm_nn_acc(out, a, b, n, k, m);
    }
}

/// [`gemm_tn_acc`]; when `out` has at least [`GEMM_CRATE_MIN`] elements, by
/// [`crate::wide_kernels`] (f32 on AVX-512F + FMA) or else `matrixmultiply`.
pub fn tn_acc<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, m: usize, k: usize) {
    if m * k < GEMM_CRATE_MIN {
        return gemm_tn_acc(out, a, b, n, m, k);
    }
    if let Some((o, a, b)) = as_f32(out, a, b)
        && wide_kernels::tn_acc(o, a, b, n, m, k)
    {
        return;
    }
    if !crate_tn_acc(out, a, b, n, m, k) {
        gemm_tn_acc(out, a, b, n, m, k);
    }
}

/// `out[m×k] = a[n×m]ᵀ · b[n×k]`: bit for bit [`tn_acc`] on a zeroed `out`, without the pass
/// that zeroes it where [`crate::wide_kernels`] runs the product (the wide learner's
/// gradients: a 256 KB memset per product).
pub fn tn_to<T: Real>(out: &mut [T], a: &[T], b: &[T], n: usize, m: usize, k: usize) {
    if m * k >= GEMM_CRATE_MIN
        && let Some((o, a, b)) = as_f32(out, a, b)
        && wide_kernels::tn_set(o, a, b, n, m, k)
    {
        return;
    }
    out[..m * k].fill(T::zero());
    tn_acc(out, a, b, n, m, k);
}

/// `out[m×k] −= Σ_q a_qᵀ · b_q` over the pairs `(a_q[n×m], b_q[n×k])`: a Hessian-vector
/// product's weight block taken from an adjoint in place (the plain-SGD reverse step,
/// [`crate::mlp::Mlp::sgd_reverse_step`]). Where [`crate::wide_kernels`] runs (f32 with
/// AVX-512F and FMA, at least [`GEMM_CRATE_MIN`] outputs, at most two pairs) in one pass over
/// `out`; otherwise the sum is formed by [`tn_to`] and [`tn_acc`] in a buffer and subtracted.
pub fn tn_sub<T: Real>(out: &mut [T], pairs: &[(&[T], &[T])], n: usize, m: usize, k: usize) {
    if pairs.is_empty() {
        return;
    }
    if m * k >= GEMM_CRATE_MIN && pairs.len() <= 2 {
        let mut f = [(&[][..], &[][..]); 2];
        let mut all = true;
        for (f, &(a, b)) in f.iter_mut().zip(pairs) {
            match (f32_view(a), f32_view(b)) {
                (Some(a), Some(b)) => *f = (a, b),
                _ => all = false,
            }
        }
        if all
            && let Some(o) = f32_view_mut(out)
            && wide_kernels::tn_sub(o, &f[..pairs.len()], n, m, k)
        {
            return;
        }
    }
    let mut sum = crate::task_pool::take_dirty(m * k);
    for (q, &(a, b)) in pairs.iter().enumerate() {
        if q == 0 {
            tn_to(&mut sum, a, b, n, m, k);
        } else {
            tn_acc(&mut sum, a, b, n, m, k);
        }
    }
    for (o, &s) in out[..m * k].iter_mut().zip(&sum) {
        *o -= s;
    }
    crate::task_pool::give(sum);
}

/// `x` as an f32 slice when `T` is `f32`.
fn f32_view<T: Real>(x: &[T]) -> Option<&[f32]> {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return None;
    }
    // SAFETY: `T` is `f32` (same `TypeId`): same size, alignment and validity.
    Some(unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
}

/// `x` as a mutable f32 slice when `T` is `f32`.
fn f32_view_mut<T: Real>(x: &mut [T]) -> Option<&mut [f32]> {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<f32>() {
        return None;
    }
    // SAFETY: as [`f32_view`]; the borrow is the caller's unique one.
    Some(unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<f32>(), x.len()) })
}

/// `y += s · x`.
#[inline]
pub fn axpy<T: Real>(y: &mut [T], s: T, x: &[T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += s * x;
    }
}

/// `Σ a·b` with eight independent partial sums (vectorisable, fixed order). Always inlined, so
/// that each `multiversion` clone calling it (here and in `inner_passes`) vectorises it for
/// its own target.
#[inline(always)]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let mut acc = [T::zero(); 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let (ac, bc) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += ac[l] * bc[l];
        }
    }
    let mut tail = T::zero();
    for i in chunks * 8..n {
        tail += a[i] * b[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Adds `b` to every row of `out[n×m]` (a layer's bias).
pub fn add_row<T: Real>(out: &mut [T], b: &[T], n: usize, m: usize) {
    for r in 0..n {
        for (o, &b) in out[r * m..(r + 1) * m].iter_mut().zip(b) {
            *o += b;
        }
    }
}

/// `out[m] += Σ_rows a[n×m]` (a layer's bias gradient).
pub fn col_sum_acc<T: Real>(out: &mut [T], a: &[T], n: usize, m: usize) {
    for r in 0..n {
        for (o, &x) in out[..m].iter_mut().zip(&a[r * m..(r + 1) * m]) {
            *o += x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * m];
        for r in 0..n {
            for j in 0..m {
                for p in 0..k {
                    c[r * m + j] += a[r * k + p] * b[p * m + j];
                }
            }
        }
        c
    }

    fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
        let mut t = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = a[i * c + j];
            }
        }
        t
    }

    #[test]
    fn products_match_naive() {
        for (n, k, m) in
            [(3, 11, 5), (4, 40, 40), (2, 17, 25), (10, 1, 40), (10, 40, 1), (10, 256, 256), (3, 300, 129)]
        {
            check_products(n, k, m);
        }
    }

    fn check_products(n: usize, k: usize, m: usize) {
        let a: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * m).map(|i| (i as f64 * 0.91).cos()).collect();
        let want = naive(&a, &b, n, k, m);
        let mut nn = vec![0.0; n * m];
        gemm_nn_acc(&mut nn, &a, &b, n, k, m);
        let mut nt = vec![0.0; n * m];
        gemm_nt_acc(&mut nt, &a, &transpose(&b, k, m), n, k, m);
        let mut tn = vec![0.0; n * m];
        gemm_tn_acc(&mut tn, &transpose(&a, n, k), &b, k, n, m);
        let mut nn2 = vec![0.0; n * m];
        nn_acc(&mut nn2, &a, &b, n, k, m);
        let mut nt2 = vec![0.0; n * m];
        nt_acc(&mut nt2, &a, &transpose(&b, k, m), n, k, m);
        let mut tn2 = vec![0.0; n * m];
        tn_acc(&mut tn2, &transpose(&a, n, k), &b, k, n, m);
        let tol = 1e-12 * k as f64;
        for i in 0..n * m {
            assert!((nn2[i] - want[i]).abs() < tol, "nn_acc {i}");
            assert!((nt2[i] - want[i]).abs() < tol, "nt_acc {i}");
            assert!((tn2[i] - want[i]).abs() < tol, "tn_acc {i}");
            assert!((nn[i] - want[i]).abs() < 1e-12, "nn {i}");
            assert!((nt[i] - want[i]).abs() < 1e-12, "nt {i}");
            assert!((tn[i] - want[i]).abs() < 1e-12, "tn {i}");
        }
    }
}
