//! The one-task inner loop's element-wise passes over theta-sized vectors (issue 13), each
//! compiled for AVX-512, AVX2 and the baseline (`multiversion`, picked at run time) and
//! fused where they walk the same vectors. For the wide learner (66,817 parameters, 256 KB
//! per vector) they were, in baseline SSE code and one pass per operation, a sixth of a
//! meta-step.
//!
//! Every value is computed by the same operations in the same order as the separate loops
//! they replace (no fused multiply-add; dot products keep [`crate::linalg::dot`]'s eight
//! partial sums and tree), so results are bitwise those of before for every learner.
// The dispatch code that `multiversion` generates uses `unsafe` to call the clone the CPU
// supports; it checks the CPU features first.
#![allow(unsafe_code)]
// Fixed-size lane loops index several arrays by the same counter on purpose.
#![allow(clippy::needless_range_loop)]

use multiversion::multiversion;

use crate::real::Real;

/// `out = theta − a · d` (one group's inner step).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn sgd_step<T: Real>(out: &mut [T], theta: &[T], d: &[T], a: T) {
    for ((o, &th), &di) in out.iter_mut().zip(theta).zip(d) {
        *o = th - a * di;
    }
}

/// Partial sums of [`sum_of_squares`]: four 16-lane registers of f32 under AVX-512.
const SQUARE_SUMS: usize = 64;

/// `Σ x²` for the features of learners too large for task groups: [`SQUARE_SUMS`] partial
/// sums in a fixed order, combined by halving. The eight partial sums of
/// [`crate::linalg::dot`] were one chain of dependent additions per 8 values, a quarter of
/// what the cache delivers (6% of a wide meta-step).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn sum_of_squares<T: Real>(x: &[T]) -> T {
    let mut acc = [T::zero(); SQUARE_SUMS];
    let mut chunks = x.chunks_exact(SQUARE_SUMS);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let mut tail = T::zero();
    for &v in chunks.remainder() {
        tail += v * v;
    }
    let mut w = SQUARE_SUMS;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0] + tail
}

/// One group of one reverse step (spec §4), in one pass: `v −= hv` when `hv` is given (the
/// Hessian term of the step after), then `u = a · v` when `u` is given, and the result is
/// `dot(v, d)` (the updated `v`) in [`crate::linalg::dot`]'s order. `hv`, `d`, `u` hold at
/// least `v.len()` values.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn reverse_group<T: Real>(v: &mut [T], hv: Option<&[T]>, d: &[T], u: Option<&mut [T]>, a: T) -> T {
    match (hv, u) {
        (Some(h), Some(u)) => reverse_group_with::<T, true, true>(v, h, d, u, a),
        (Some(h), None) => reverse_group_with::<T, true, false>(v, h, d, &mut [], a),
        (None, Some(u)) => reverse_group_with::<T, false, true>(v, &[], d, u, a),
        (None, None) => reverse_group_with::<T, false, false>(v, &[], d, &mut [], a),
    }
}

/// [`reverse_group`] with `hv` (`HV`) and `u` (`U`) present or not.
#[inline(always)]
fn reverse_group_with<T: Real, const HV: bool, const U: bool>(
    v: &mut [T],
    hv: &[T],
    d: &[T],
    u: &mut [T],
    a: T,
) -> T {
    let n = v.len();
    let mut acc = [T::zero(); 8];
    let chunks = n / 8;
    for c in 0..chunks {
        let r = c * 8..c * 8 + 8;
        let (vs, ds) = (&mut v[r.clone()], &d[r.clone()]);
        let mut x = [T::zero(); 8];
        x.copy_from_slice(vs);
        if HV {
            for (x, &h) in x.iter_mut().zip(&hv[r.clone()]) {
                *x -= h;
            }
            vs.copy_from_slice(&x);
        }
        if U {
            for (u, &x) in u[r].iter_mut().zip(&x) {
                *u = a * x;
            }
        }
        for l in 0..8 {
            acc[l] += x[l] * ds[l];
        }
    }
    let mut tail = T::zero();
    for i in chunks * 8..n {
        let mut x = v[i];
        if HV {
            x -= hv[i];
            v[i] = x;
        }
        if U {
            u[i] = a * x;
        }
        tail += x * d[i];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `grad += v − hv` (the last reverse step's Hessian term and the gradient of theta_0), or
/// `grad += v` without `hv`; with `accumulate` false, `grad = v − hv` (or `v`): a task's
/// gradient written into a reused buffer without zeroing it first.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx2+avx", "x86_64+avx2+avx"))]
pub fn add_final<T: Real>(grad: &mut [T], v: &[T], hv: Option<&[T]>, accumulate: bool) {
    match (hv, accumulate) {
        (Some(h), true) => {
            for ((g, &vi), &hi) in grad.iter_mut().zip(v).zip(h) {
                *g += vi - hi;
            }
        }
        (None, true) => {
            for (g, &vi) in grad.iter_mut().zip(v) {
                *g += vi;
            }
        }
        (Some(h), false) => {
            for ((g, &vi), &hi) in grad.iter_mut().zip(v).zip(h) {
                *g = vi - hi;
            }
        }
        (None, false) => grad.copy_from_slice(&v[..grad.len()]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_reverse_step_is_bitwise_the_separate_passes() {
        for n in [0, 5, 8, 37, 1000, 66_817] {
            let v0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let h: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos() * 0.1).collect();
            let d: Vec<f32> = (0..n).map(|i| (i as f32 * 0.53).sin()).collect();
            let a = 0.3f32;
            for (with_h, with_u) in [(true, true), (true, false), (false, true), (false, false)] {
                let mut want_v = v0.clone();
                if with_h {
                    for (x, &y) in want_v.iter_mut().zip(&h) {
                        *x -= y;
                    }
                }
                let want_u: Vec<f32> = want_v.iter().map(|&x| a * x).collect();
                let want_dot = crate::linalg::dot(&want_v, &d);
                let sq: f64 = d.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
                assert!((f64::from(sum_of_squares(&d)) - sq).abs() <= 1e-6 * sq, "sum of squares n={n}");
                let (mut v, mut u) = (v0.clone(), vec![0.0; n]);
                let got =
                    reverse_group(&mut v, with_h.then_some(&h[..]), &d, with_u.then_some(&mut u[..]), a);
                assert_eq!(got.to_bits(), want_dot.to_bits(), "dot n={n}");
                assert_eq!(v, want_v);
                if with_u {
                    assert_eq!(u, want_u);
                }
            }
        }
    }
}
