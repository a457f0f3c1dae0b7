//! The learner's dense products for a group of tasks laid out lane by lane (issue 13).
//!
//! A [`Lanes`] value holds one scalar of each of [`LANES`] tasks: a tensor of a task group is
//! a slice of them, element by element, so one vector instruction advances every task of the
//! group by the same scalar operation. Each task's arithmetic, and its order, is exactly that
//! of [`crate::linalg`] (the same products, the same partial sums of [`crate::linalg::dot`],
//! no fused multiply-add), so every lane's result is bitwise the one-task engine's, whatever
//! the group a task lands in. The per-task matrices of the default learner are tiny (10×40 by
//! 40×40): across tasks, the vectors are always full and no horizontal sums are needed.
//!
//! The products have an AVX-512 version (one register per [`Lanes`], accumulators in
//! registers, `core::arch` intrinsics), picked at run time, and a portable one.
// The AVX-512 kernels load and store through raw pointers after checking bounds once, and are
// called after checking the CPU's features.
#![allow(unsafe_code)]
// Block and lane loops index several arrays by the same counter on purpose: fixed-size loops
// over constant ranges are what the register allocator and the vectoriser handle best.
#![allow(clippy::needless_range_loop)]

/// Tasks per group: one AVX-512 register of f32 (two AVX2 registers).
pub const LANES: usize = 16;

/// One scalar of each task of a group; 64 bytes, one cache line, aligned as one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C, align(64))]
pub struct Lanes(pub [f32; LANES]);

impl Lanes {
    /// Every lane `x`.
    #[inline(always)]
    pub fn splat(x: f32) -> Self {
        Self([x; LANES])
    }

    /// Lane-wise `f(self, other)`.
    #[inline(always)]
    pub fn zip(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f(self.0[l], other.0[l]);
        }
        Self(out)
    }

    /// Lane-wise `f(self)`.
    #[inline(always)]
    pub fn map(self, f: impl Fn(f32) -> f32) -> Self {
        let mut out = [0.0; LANES];
        for l in 0..LANES {
            out[l] = f(self.0[l]);
        }
        Self(out)
    }
}

/// `acc + a · b`, lane by lane (a product rounded, then a sum: no fused multiply-add).
#[inline(always)]
fn mac(acc: Lanes, a: Lanes, b: Lanes) -> Lanes {
    let mut out = acc.0;
    for l in 0..LANES {
        out[l] += a.0[l] * b.0[l];
    }
    Lanes(out)
}

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    let mut out = a.0;
    for l in 0..LANES {
        out[l] += b.0[l];
    }
    Lanes(out)
}

/// Strides of a general product `out[i, j] += Σ_p a[i, p] · b[p, j]` over lanes.
#[derive(Clone, Copy)]
pub(crate) struct Strides {
    out_i: usize,
    out_j: usize,
    a_i: usize,
    a_p: usize,
    b_p: usize,
    b_j: usize,
}

/// One `IB × JB` block of [`seq_product`]: accumulators in registers, `p` in order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn seq_block<const IB: usize, const JB: usize>(
    out: &mut [Lanes],
    a: &[Lanes],
    b: &[Lanes],
    s: Strides,
    i0: usize,
    j0: usize,
    np: usize,
) {
    let mut acc = [[Lanes::default(); JB]; IB];
    for ii in 0..IB {
        for jj in 0..JB {
            acc[ii][jj] = out[(i0 + ii) * s.out_i + (j0 + jj) * s.out_j];
        }
    }
    for p in 0..np {
        let mut av = [Lanes::default(); IB];
        for ii in 0..IB {
            av[ii] = a[(i0 + ii) * s.a_i + p * s.a_p];
        }
        let mut bv = [Lanes::default(); JB];
        for jj in 0..JB {
            bv[jj] = b[p * s.b_p + (j0 + jj) * s.b_j];
        }
        for ii in 0..IB {
            for jj in 0..JB {
                acc[ii][jj] = mac(acc[ii][jj], av[ii], bv[jj]);
            }
        }
    }
    for ii in 0..IB {
        for jj in 0..JB {
            out[(i0 + ii) * s.out_i + (j0 + jj) * s.out_j] = acc[ii][jj];
        }
    }
}

/// `out[i, j] += Σ_p a[i, p] · b[p, j]` for `i < ni`, `j < nj`, summing `p = 0, 1, ...` in
/// order into the running value of `out` (the order of `gemm_nn_acc`, `gemm_tn_acc` and of
/// `gemm_nt_acc`'s narrow branch).
#[inline(always)]
fn seq_product(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], s: Strides, ni: usize, nj: usize, np: usize) {
    let mut j0 = 0;
    while j0 < nj {
        let jb = if nj - j0 >= 4 { 4 } else { 1 };
        let mut i0 = 0;
        while i0 < ni {
            let ib = (ni - i0).min(4);
            match (ib, jb) {
                (4, 4) => seq_block::<4, 4>(out, a, b, s, i0, j0, np),
                (3, 4) => seq_block::<3, 4>(out, a, b, s, i0, j0, np),
                (2, 4) => seq_block::<2, 4>(out, a, b, s, i0, j0, np),
                (1, 4) => seq_block::<1, 4>(out, a, b, s, i0, j0, np),
                (4, _) => seq_block::<4, 1>(out, a, b, s, i0, j0, np),
                (3, _) => seq_block::<3, 1>(out, a, b, s, i0, j0, np),
                (2, _) => seq_block::<2, 1>(out, a, b, s, i0, j0, np),
                _ => seq_block::<1, 1>(out, a, b, s, i0, j0, np),
            }
            i0 += ib;
        }
        j0 += jb;
    }
}

/// Rows `r0 .. r0 + RB` of [`gemm_nt_acc`]'s wide branch, column `j`: `out[r, j] += dot(a_r,
/// b_j)` with [`crate::linalg::dot`]'s eight partial sums, tail and summation tree.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dot_block<const RB: usize>(
    out: &mut [Lanes],
    a: &[Lanes],
    b: &[Lanes],
    r0: usize,
    j: usize,
    k: usize,
    m: usize,
) {
    let chunks = k / 8;
    let mut acc = [[Lanes::default(); 8]; RB];
    let bj = &b[j * k..(j + 1) * k];
    for c in 0..chunks {
        let mut bv = [Lanes::default(); 8];
        bv.copy_from_slice(&bj[c * 8..c * 8 + 8]);
        for rr in 0..RB {
            let ar = &a[(r0 + rr) * k + c * 8..(r0 + rr) * k + c * 8 + 8];
            for q in 0..8 {
                acc[rr][q] = mac(acc[rr][q], ar[q], bv[q]);
            }
        }
    }
    for rr in 0..RB {
        let ar = &a[(r0 + rr) * k..(r0 + rr + 1) * k];
        let mut tail = Lanes::default();
        for i in chunks * 8..k {
            tail = mac(tail, ar[i], bj[i]);
        }
        let x = &acc[rr];
        let dot =
            add(add(add(add(x[0], x[4]), add(x[1], x[5])), add(add(x[2], x[6]), add(x[3], x[7]))), tail);
        let o = &mut out[(r0 + rr) * m + j];
        *o = add(*o, dot);
    }
}

/// `out[n×m] += a[n×k] · b[m×k]ᵀ` per lane, exactly as [`crate::linalg::gemm_nt_acc`].
pub fn gemm_nt_acc(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize) {
    nt(out, a, b, n, k, m, false);
}

/// `out[n×m] = a[n×k] · b[m×k]ᵀ` per lane: exactly `out` zeroed, then [`gemm_nt_acc`] (every
/// sum starts from +0.0), without a separate pass over `out`.
pub fn gemm_nt(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize) {
    nt(out, a, b, n, k, m, true);
}

fn nt(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize, zero: bool) {
    assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= m * k);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked above); the bounds are asserted above.
        unsafe {
            if zero {
                avx512::gemm_nt_acc::<true>(out, a, b, n, k, m)
            } else {
                avx512::gemm_nt_acc::<false>(out, a, b, n, k, m)
            }
        };
        return;
    }
    if zero {
        out[..n * m].fill(Lanes::default());
    }
    gemm_nt_acc_portable(out, a, b, n, k, m);
}

/// `out[n×m] += a[n×k] · b[k×m]` per lane, exactly as [`crate::linalg::gemm_nn_acc`].
pub fn gemm_nn_acc(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize) {
    nn(out, a, b, n, k, m, false);
}

/// `out[n×m] = a[n×k] · b[k×m]` per lane: exactly `out` zeroed, then [`gemm_nn_acc`].
pub fn gemm_nn(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize) {
    nn(out, a, b, n, k, m, true);
}

fn nn(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize, zero: bool) {
    assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= k * m);
    let s = Strides { out_i: m, out_j: 1, a_i: k, a_p: 1, b_p: m, b_j: 1 };
    seq(out, a, b, s, n, m, k, zero);
}

/// `out[m×k] += a[n×m]ᵀ · b[n×k]` per lane, exactly as [`crate::linalg::gemm_tn_acc`].
pub fn gemm_tn_acc(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, m: usize, k: usize) {
    tn(out, a, b, n, m, k, false);
}

/// `out[m×k] = a[n×m]ᵀ · b[n×k]` per lane: exactly `out` zeroed, then [`gemm_tn_acc`].
pub fn gemm_tn(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, m: usize, k: usize) {
    tn(out, a, b, n, m, k, true);
}

fn tn(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, m: usize, k: usize, zero: bool) {
    assert!(out.len() >= m * k && a.len() >= n * m && b.len() >= n * k);
    let s = Strides { out_i: k, out_j: 1, a_i: 1, a_p: m, b_p: k, b_j: 1 };
    seq(out, a, b, s, m, k, n, zero);
}

/// [`seq_product`] over the extents of a caller that asserted them; from +0.0 if `zero`.
#[allow(clippy::too_many_arguments)]
fn seq(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], s: Strides, ni: usize, nj: usize, np: usize, zero: bool) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F; every index below `ni, nj, np` is in bounds (the
        // callers assert the extents).
        unsafe {
            if zero {
                avx512::seq_product::<true>(out, a, b, s, ni, nj, np)
            } else {
                avx512::seq_product::<false>(out, a, b, s, ni, nj, np)
            }
        };
        return;
    }
    if zero {
        for i in 0..ni {
            for j in 0..nj {
                out[i * s.out_i + j * s.out_j] = Lanes::default();
            }
        }
    }
    seq_product(out, a, b, s, ni, nj, np);
}

/// Whether this CPU runs the AVX-512 kernels (one 512-bit register per [`Lanes`]).
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn gemm_nt_acc_portable(out: &mut [Lanes], a: &[Lanes], b: &[Lanes], n: usize, k: usize, m: usize) {
    assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= m * k);
    if k < 8 {
        let s = Strides { out_i: m, out_j: 1, a_i: k, a_p: 1, b_p: 1, b_j: k };
        seq_product(out, a, b, s, n, m, k);
        return;
    }
    for j in 0..m {
        let mut r0 = 0;
        while r0 < n {
            if n - r0 >= 2 {
                dot_block::<2>(out, a, b, r0, j, k, m);
                r0 += 2;
            } else {
                dot_block::<1>(out, a, b, r0, j, k, m);
                r0 += 1;
            }
        }
    }
}

/// Adds `b` to every row of `out[n×m]` per lane ([`crate::linalg::add_row`]).
#[inline(always)]
pub fn add_row(out: &mut [Lanes], b: &[Lanes], n: usize, m: usize) {
    let b = flat(&b[..m]);
    for r in 0..n {
        for (o, &b) in flat_mut(&mut out[r * m..(r + 1) * m]).iter_mut().zip(b) {
            *o += b;
        }
    }
}

/// `out[m] += Σ_rows a[n×m]` per lane, rows in order ([`crate::linalg::col_sum_acc`]).
#[inline(always)]
pub fn col_sum_acc(out: &mut [Lanes], a: &[Lanes], n: usize, m: usize) {
    let out = flat_mut(&mut out[..m]);
    for r in 0..n {
        for (o, &x) in out.iter_mut().zip(flat(&a[r * m..(r + 1) * m])) {
            *o += x;
        }
    }
}

/// The scalars of a group tensor, element after element (lane 0..16 of element 0, then of
/// element 1, ...): element-wise work on it is plain contiguous work.
#[inline(always)]
pub fn flat(x: &[Lanes]) -> &[f32] {
    // SAFETY: `Lanes` is `repr(C)` over `[f32; LANES]`, 64 bytes with no padding, so a slice
    // of them is `LANES · len` initialised, aligned f32 values.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len() * LANES) }
}

/// [`flat`], mutable.
#[inline(always)]
pub fn flat_mut(x: &mut [Lanes]) -> &mut [f32] {
    // SAFETY: as `flat`; the borrow is exclusive.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len() * LANES) }
}

/// `out[i] = x[i] − a · y[i]` per lane (an sgd step of one parameter group; `a` its rates).
pub fn sub_scaled(out: &mut [Lanes], x: &[Lanes], a: Lanes, y: &[Lanes]) {
    assert!(x.len() >= out.len() && y.len() >= out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; lengths asserted.
        unsafe { avx512::sub_scaled(out, x, a, y) };
        return;
    }
    for ((o, x), y) in out.iter_mut().zip(x).zip(y) {
        *o = x.zip(a.zip(*y, |a, y| a * y), |x, p| x - p);
    }
}

/// `out[i] = a · x[i]` per lane.
pub fn scaled(out: &mut [Lanes], a: Lanes, x: &[Lanes]) {
    assert!(x.len() >= out.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; lengths asserted.
        unsafe { avx512::scaled(out, a, x) };
        return;
    }
    for (o, x) in out.iter_mut().zip(x) {
        *o = a.zip(*x, |a, x| a * x);
    }
}

/// `Σ x·x` per lane, in order from `init` (`init + x_0² + x_1² + ...`).
pub fn sum_of_squares(init: f32, x: &[Lanes]) -> Lanes {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked.
        return unsafe { avx512::sum_of_squares(init, x) };
    }
    x.iter().fold(Lanes::splat(init), |acc, x| acc.zip(*x, |a, x| a + x * x))
}

/// [`crate::linalg::dot`] per lane: eight partial sums, a tail, the same summation tree.
pub fn dot(a: &[Lanes], b: &[Lanes]) -> Lanes {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; `n` is within both.
        return unsafe { avx512::dot(&a[..n], &b[..n]) };
    }
    let mut acc = [Lanes::default(); 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for q in 0..8 {
            acc[q] = mac(acc[q], a[c * 8 + q], b[c * 8 + q]);
        }
    }
    let mut tail = Lanes::default();
    for i in chunks * 8..n {
        tail = mac(tail, a[i], b[i]);
    }
    add(
        add(add(add(acc[0], acc[4]), add(acc[1], acc[5])), add(add(acc[2], acc[6]), add(acc[3], acc[7]))),
        tail,
    )
}

/// Writes lane `lane` of `src` into `dst` (one task's tensor out of a group's).
#[inline(always)]
pub fn extract(dst: &mut [f32], src: &[Lanes], lane: usize) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.0[lane];
    }
}

/// Writes `src` into lane `lane` of `dst` (one task's tensor into a group's).
#[inline(always)]
pub fn insert(dst: &mut [Lanes], src: &[f32], lane: usize) {
    for (d, &s) in dst.iter_mut().zip(src) {
        d.0[lane] = s;
    }
}

/// Lane `l` of `src` into `dst[l]`, for every `l < dst.len()` (the group's real tasks): each
/// task's tensor out of a group's, bitwise [`extract`] per lane. With AVX-512, 16 elements at a
/// time by an in-register 16×16 transpose (one pass over `src`, no gathers).
pub fn extract_all(dst: &mut [&mut [f32]], src: &[Lanes]) {
    lanes_out::<false>(dst, src);
}

/// `dst[l][i] += src[i].0[l]` for every `l < dst.len()`: bitwise [`extract`] followed by an
/// element-wise `+=` per lane, in one pass.
pub fn add_extracted_all(dst: &mut [&mut [f32]], src: &[Lanes]) {
    lanes_out::<true>(dst, src);
}

fn lanes_out<const ADD: bool>(dst: &mut [&mut [f32]], src: &[Lanes]) {
    assert!(dst.len() <= LANES, "at most {LANES} lanes");
    for d in dst.iter() {
        assert!(d.len() >= src.len(), "each destination holds the whole tensor");
    }
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: AVX-512F checked; every destination holds `src.len()` values (asserted).
        done = unsafe { avx512::lanes_out::<ADD>(dst, src) };
    }
    for (l, d) in dst.iter_mut().enumerate() {
        for (d, s) in d[done..src.len()].iter_mut().zip(&src[done..]) {
            if ADD {
                *d += s.0[l];
            } else {
                *d = s.0[l];
            }
        }
    }
}

/// Whether every value of `x` is +0.0 (bit pattern zero), in whole registers.
pub fn all_zero_bits(x: &[f32]) -> bool {
    x.chunks(LANES).all(|c| c.iter().fold(0u32, |a, v| a | v.to_bits()) == 0)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Lanes, Strides};

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn ld(p: *const Lanes) -> __m512 {
        // SAFETY: the caller passes an in-bounds, 64-byte aligned `Lanes`.
        unsafe { _mm512_load_ps(p as *const f32) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn st(p: *mut Lanes, v: __m512) {
        // SAFETY: as `ld`.
        unsafe { _mm512_store_ps(p as *mut f32, v) }
    }

    /// `acc + a · b`: a rounded product, then a sum (never a fused multiply-add).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn mac(acc: __m512, a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(acc, _mm512_mul_ps(a, b))
    }

    /// One `IB × JB` block of `seq_product`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn seq_block<const IB: usize, const JB: usize, const Z: bool>(
        out: *mut Lanes,
        a: *const Lanes,
        b: *const Lanes,
        s: Strides,
        i0: usize,
        j0: usize,
        np: usize,
    ) {
        // SAFETY (whole body): the caller keeps every index inside the asserted extents.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); JB]; IB];
            for ii in 0..IB {
                for jj in 0..JB {
                    if !Z {
                        acc[ii][jj] = ld(out.add((i0 + ii) * s.out_i + (j0 + jj) * s.out_j));
                    }
                }
            }
            for p in 0..np {
                let mut bv = [_mm512_setzero_ps(); JB];
                for jj in 0..JB {
                    bv[jj] = ld(b.add(p * s.b_p + (j0 + jj) * s.b_j));
                }
                for ii in 0..IB {
                    let av = ld(a.add((i0 + ii) * s.a_i + p * s.a_p));
                    for jj in 0..JB {
                        acc[ii][jj] = mac(acc[ii][jj], av, bv[jj]);
                    }
                }
            }
            for ii in 0..IB {
                for jj in 0..JB {
                    st(out.add((i0 + ii) * s.out_i + (j0 + jj) * s.out_j), acc[ii][jj]);
                }
            }
        }
    }

    /// `out[i, j] += Σ_p a[i, p] · b[p, j]`, `p` in order (see the portable `seq_product`).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn seq_product<const Z: bool>(
        out: &mut [Lanes],
        a: &[Lanes],
        b: &[Lanes],
        s: Strides,
        ni: usize,
        nj: usize,
        np: usize,
    ) {
        let (o, a, b) = (out.as_mut_ptr(), a.as_ptr(), b.as_ptr());
        let mut j0 = 0;
        while j0 < nj {
            let jb = if nj - j0 >= 4 { 4 } else { 1 };
            let mut i0 = 0;
            while i0 < ni {
                let ib = (ni - i0).min(5);
                // SAFETY: blocks stay inside `ni × nj`, `p < np`.
                unsafe {
                    match (ib, jb) {
                        (5, 4) => seq_block::<5, 4, Z>(o, a, b, s, i0, j0, np),
                        (4, 4) => seq_block::<4, 4, Z>(o, a, b, s, i0, j0, np),
                        (3, 4) => seq_block::<3, 4, Z>(o, a, b, s, i0, j0, np),
                        (2, 4) => seq_block::<2, 4, Z>(o, a, b, s, i0, j0, np),
                        (1, 4) => seq_block::<1, 4, Z>(o, a, b, s, i0, j0, np),
                        (5, _) => seq_block::<5, 1, Z>(o, a, b, s, i0, j0, np),
                        (4, _) => seq_block::<4, 1, Z>(o, a, b, s, i0, j0, np),
                        (3, _) => seq_block::<3, 1, Z>(o, a, b, s, i0, j0, np),
                        (2, _) => seq_block::<2, 1, Z>(o, a, b, s, i0, j0, np),
                        _ => seq_block::<1, 1, Z>(o, a, b, s, i0, j0, np),
                    }
                }
                i0 += ib;
            }
            j0 += jb;
        }
    }

    /// Rows `r0 .. r0 + RB`, column `j` of `gemm_nt_acc`'s wide branch (see `dot_block`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn dot_block<const RB: usize, const Z: bool>(
        out: *mut Lanes,
        a: *const Lanes,
        b: *const Lanes,
        r0: usize,
        j: usize,
        k: usize,
        m: usize,
    ) {
        // SAFETY (whole body): `r0 + RB <= n`, `j < m`, offsets below `k`.
        unsafe {
            let chunks = k / 8;
            let mut acc = [[_mm512_setzero_ps(); 8]; RB];
            let bj = b.add(j * k);
            for c in 0..chunks {
                let mut bv = [_mm512_setzero_ps(); 8];
                for q in 0..8 {
                    bv[q] = ld(bj.add(c * 8 + q));
                }
                for rr in 0..RB {
                    let ar = a.add((r0 + rr) * k + c * 8);
                    for q in 0..8 {
                        acc[rr][q] = mac(acc[rr][q], ld(ar.add(q)), bv[q]);
                    }
                }
            }
            for rr in 0..RB {
                let ar = a.add((r0 + rr) * k);
                let mut tail = _mm512_setzero_ps();
                for i in chunks * 8..k {
                    tail = mac(tail, ld(ar.add(i)), ld(bj.add(i)));
                }
                let x = &acc[rr];
                let dot = _mm512_add_ps(
                    _mm512_add_ps(
                        _mm512_add_ps(_mm512_add_ps(x[0], x[4]), _mm512_add_ps(x[1], x[5])),
                        _mm512_add_ps(_mm512_add_ps(x[2], x[6]), _mm512_add_ps(x[3], x[7])),
                    ),
                    tail,
                );
                let o = out.add((r0 + rr) * m + j);
                let init = if Z { _mm512_setzero_ps() } else { ld(o) };
                st(o, _mm512_add_ps(init, dot));
            }
        }
    }

    /// `out = x − a · y`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sub_scaled(out: &mut [Lanes], x: &[Lanes], a: Lanes, y: &[Lanes]) {
        // SAFETY: `i < out.len() <= x.len(), y.len()` (asserted by the caller).
        unsafe {
            let av = ld(&a);
            for i in 0..out.len() {
                st(
                    &mut out[i],
                    _mm512_sub_ps(ld(x.as_ptr().add(i)), _mm512_mul_ps(av, ld(y.as_ptr().add(i)))),
                );
            }
        }
    }

    /// `out = a · x`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scaled(out: &mut [Lanes], a: Lanes, x: &[Lanes]) {
        // SAFETY: `i < out.len() <= x.len()` (asserted by the caller).
        unsafe {
            let av = ld(&a);
            for i in 0..out.len() {
                st(&mut out[i], _mm512_mul_ps(av, ld(x.as_ptr().add(i))));
            }
        }
    }

    /// `init + Σ x·x`, in order.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_of_squares(init: f32, x: &[Lanes]) -> Lanes {
        // SAFETY: in-bounds references.
        unsafe {
            let mut acc = _mm512_set1_ps(init);
            for v in x {
                let v = ld(v);
                acc = mac(acc, v, v);
            }
            let mut out = Lanes::default();
            st(&mut out, acc);
            out
        }
    }

    /// `linalg::dot` per lane; `a` and `b` have the same length.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dot(a: &[Lanes], b: &[Lanes]) -> Lanes {
        // SAFETY: indices below `a.len() == b.len()`.
        unsafe {
            let n = a.len();
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let mut acc = [_mm512_setzero_ps(); 8];
            let chunks = n / 8;
            for c in 0..chunks {
                for q in 0..8 {
                    acc[q] = mac(acc[q], ld(pa.add(c * 8 + q)), ld(pb.add(c * 8 + q)));
                }
            }
            let mut tail = _mm512_setzero_ps();
            for i in chunks * 8..n {
                tail = mac(tail, ld(pa.add(i)), ld(pb.add(i)));
            }
            let x = &acc;
            let d = _mm512_add_ps(
                _mm512_add_ps(
                    _mm512_add_ps(_mm512_add_ps(x[0], x[4]), _mm512_add_ps(x[1], x[5])),
                    _mm512_add_ps(_mm512_add_ps(x[2], x[6]), _mm512_add_ps(x[3], x[7])),
                ),
                tail,
            );
            let mut out = Lanes::default();
            st(&mut out, d);
            out
        }
    }

    /// The 16 rows of `r` transposed in place (row `i` becomes column `i`).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            let b = 4 * q;
            let pd = _mm512_castps_pd;
            u[b] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[b]), pd(t[b + 2])));
            u[b + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[b]), pd(t[b + 2])));
            u[b + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t[b + 1]), pd(t[b + 3])));
            u[b + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t[b + 1]), pd(t[b + 3])));
        }
        let mut v = [_mm512_setzero_ps(); 16];
        for h in 0..2 {
            let b = 8 * h;
            for i in 0..4 {
                v[b + i] = _mm512_shuffle_f32x4::<0x88>(u[b + i], u[b + 4 + i]);
                v[b + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(u[b + i], u[b + 4 + i]);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(v[i], v[8 + i]);
            r[8 + i] = _mm512_shuffle_f32x4::<0xdd>(v[i], v[8 + i]);
        }
    }

    /// `lanes_out` on whole blocks of 16 elements; returns how many elements it did.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lanes_out<const ADD: bool>(dst: &mut [&mut [f32]], src: &[Lanes]) -> usize {
        let blocks = src.len() / 16;
        for b in 0..blocks {
            let mut r = [_mm512_setzero_ps(); 16];
            for (i, r) in r.iter_mut().enumerate() {
                // SAFETY: `b * 16 + i < src.len()`.
                *r = unsafe { ld(src.as_ptr().add(b * 16 + i)) };
            }
            transpose16(&mut r);
            for (l, d) in dst.iter_mut().enumerate() {
                // SAFETY: `d` holds at least `src.len()` values (asserted by the caller).
                unsafe {
                    let p = d.as_mut_ptr().add(b * 16);
                    let x = if ADD { _mm512_add_ps(_mm512_loadu_ps(p), r[l]) } else { r[l] };
                    _mm512_storeu_ps(p, x);
                }
            }
        }
        blocks * 16
    }

    /// `gemm_nt_acc` (see the portable version for the order).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm_nt_acc<const Z: bool>(
        out: &mut [Lanes],
        a: &[Lanes],
        b: &[Lanes],
        n: usize,
        k: usize,
        m: usize,
    ) {
        if k < 8 {
            let s = Strides { out_i: m, out_j: 1, a_i: k, a_p: 1, b_p: 1, b_j: k };
            // SAFETY: as the caller's.
            unsafe { seq_product::<Z>(out, a, b, s, n, m, k) };
            return;
        }
        let (o, a, b) = (out.as_mut_ptr(), a.as_ptr(), b.as_ptr());
        for j in 0..m {
            let mut r0 = 0;
            while r0 < n {
                // SAFETY: `r0 + 2 <= n` or `r0 + 1 <= n`, `j < m`.
                unsafe {
                    if n - r0 >= 2 {
                        dot_block::<2, Z>(o, a, b, r0, j, k, m);
                        r0 += 2;
                    } else {
                        dot_block::<1, Z>(o, a, b, r0, j, k, m);
                        r0 += 1;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg;

    fn data(len: usize, seed: f32) -> Vec<f32> {
        (0..len).map(|i| ((i as f32 + seed) * 0.37).sin() * 1.3).collect()
    }

    fn group(per_task: &[Vec<f32>]) -> Vec<Lanes> {
        let mut out = vec![Lanes::default(); per_task[0].len()];
        for (l, t) in per_task.iter().enumerate() {
            insert(&mut out, t, l);
        }
        out
    }

    /// Every lane is bitwise the one-task product, for wide, narrow and ragged shapes.
    #[test]
    fn lanes_are_bitwise_the_one_task_products() {
        for (n, k, m) in
            [(10, 40, 40), (10, 1, 40), (3, 11, 5), (7, 17, 25), (5, 8, 1), (10, 40, 1), (1, 3, 2)]
        {
            let a: Vec<Vec<f32>> = (0..LANES).map(|l| data(n * k, l as f32)).collect();
            let bt: Vec<Vec<f32>> = (0..LANES).map(|l| data(m * k, 100.0 + l as f32)).collect();
            let b2: Vec<Vec<f32>> = (0..LANES).map(|l| data(n * m, 200.0 + l as f32)).collect();
            let init: Vec<Vec<f32>> = (0..LANES).map(|l| data(n * m, 300.0 + l as f32)).collect();
            let init_t: Vec<Vec<f32>> = (0..LANES).map(|l| data(m * k, 400.0 + l as f32)).collect();
            let (ga, gbt, gb2) = (group(&a), group(&bt), group(&b2));
            let mut nt = group(&init);
            gemm_nt_acc(&mut nt, &ga, &gbt, n, k, m);
            // a[n×k]·b[k×m] with b = bt viewed as [k×m]
            let mut nn = group(&init);
            gemm_nn_acc(&mut nn, &ga, &gbt, n, k, m);
            let mut tn = group(&init_t);
            gemm_tn_acc(&mut tn, &gb2, &ga, n, m, k);
            // The portable versions (the AVX-512 ones run above where the CPU has it).
            let mut nt_p = group(&init);
            gemm_nt_acc_portable(&mut nt_p, &ga, &gbt, n, k, m);
            assert_eq!(nt_p, nt, "portable nt {n} {k} {m}");
            let mut nn_p = group(&init);
            seq_product(
                &mut nn_p,
                &ga,
                &gbt,
                Strides { out_i: m, out_j: 1, a_i: k, a_p: 1, b_p: m, b_j: 1 },
                n,
                m,
                k,
            );
            assert_eq!(nn_p, nn, "portable nn {n} {k} {m}");
            for l in 0..LANES {
                let mut want = init[l].clone();
                linalg::gemm_nt_acc(&mut want, &a[l], &bt[l], n, k, m);
                let mut got = vec![0.0; n * m];
                extract(&mut got, &nt, l);
                assert_eq!(bits(&got), bits(&want), "nt {n} {k} {m}");
                let mut want = init[l].clone();
                linalg::gemm_nn_acc(&mut want, &a[l], &bt[l], n, k, m);
                extract(&mut got, &nn, l);
                assert_eq!(bits(&got), bits(&want), "nn {n} {k} {m}");
                let mut want = init_t[l].clone();
                linalg::gemm_tn_acc(&mut want, &b2[l], &a[l], n, m, k);
                let mut got = vec![0.0; m * k];
                extract(&mut got, &tn, l);
                assert_eq!(bits(&got), bits(&want), "tn {n} {k} {m}");
            }
        }
    }

    /// The transposing extraction is bitwise the lane-by-lane one, with and without `+=`.
    #[test]
    fn extract_all_is_extract_per_lane() {
        for len in [0, 1, 15, 16, 17, 40, 1761] {
            let per_task: Vec<Vec<f32>> = (0..LANES).map(|l| data(len, 7.0 * l as f32)).collect();
            let src = if len == 0 { Vec::new() } else { group(&per_task) };
            for nt in [1, 9, 13, 16] {
                let mut out: Vec<Vec<f32>> = (0..nt).map(|l| data(len, 500.0 + l as f32)).collect();
                let before = out.clone();
                let mut refs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[..]).collect();
                add_extracted_all(&mut refs, &src);
                for l in 0..nt {
                    let want: Vec<f32> = before[l].iter().zip(&per_task[l]).map(|(a, b)| a + b).collect();
                    assert_eq!(bits(&out[l]), bits(&want), "add len {len} lane {l}");
                }
                let mut refs: Vec<&mut [f32]> = out.iter_mut().map(|v| &mut v[..]).collect();
                extract_all(&mut refs, &src);
                for l in 0..nt {
                    assert_eq!(bits(&out[l]), bits(&per_task[l]), "extract len {len} lane {l}");
                }
            }
        }
        assert!(all_zero_bits(&[0.0; 40]));
        assert!(!all_zero_bits(&[0.0, -0.0]));
        let mut x = vec![0.0f32; 33];
        x[32] = 1e-45;
        assert!(!all_zero_bits(&x));
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }
}
