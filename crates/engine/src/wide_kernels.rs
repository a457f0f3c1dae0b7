//! AVX-512F + FMA f32 kernels for the one-task learner's GEMM-sized products when the "row"
//! operand is short (issue 13: the wide learner, 10 points against a 256×256 layer).
//!
//! `matrixmultiply` (what [`crate::linalg`] used for these products before) packs both
//! operands on every call; with only ten rows, packing the 256×256 weight costs about as much
//! as the product itself (21% of a wide meta-step against 37% in its kernel). These kernels
//! read the operands where they lie: the short operand stays in L1, the weight streams once,
//! accumulators stay in registers and edge blocks use masked loads and stores.
//!
//! Every output element is summed in an order fixed by the shapes alone (no threading here,
//! no dependence on alignment), so results are deterministic and independent of thread
//! counts. They use fused multiply-adds, so they differ in the last bits from the
//! fixed-order loops of [`crate::linalg`]; [`crate::linalg`] only sends products whose weight
//! matrix has at least [`crate::linalg::GEMM_CRATE_MIN`] elements here, so the bits of every
//! smaller learner (default, digits) are untouched.
//!
//! Each entry point returns `false` (and does nothing) when the CPU lacks AVX-512F or FMA;
//! the caller then falls back to `matrixmultiply`.
// The kernels load and store through raw pointers after checking bounds once, and run only
// after checking the CPU's features.
#![allow(unsafe_code)]
// Fixed-size block loops index several arrays by the same counter on purpose: constant
// ranges are what the register allocator keeps in registers.
#![allow(clippy::needless_range_loop)]

use std::sync::OnceLock;

/// Whether this CPU runs these kernels (AVX-512F and FMA), detected once.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `out[n×m] += a[n×k] · b[m×k]ᵀ` (a layer's forward pass, `H Wᵀ`); `false` (nothing done)
/// without AVX-512F + FMA. Blocks of up to 4 rows × 4 columns, each output a 16-lane dot
/// product over `k`, the 16 lanes of 16 outputs reduced together by one shuffle tree.
pub fn nt_acc(out: &mut [f32], a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> bool {
    if !available() {
        return false;
    }
    assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= m * k);
    if n == 0 || m == 0 || k == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and FMA are present (checked above); the extents are asserted above.
    unsafe {
        avx512::nt(out.as_mut_ptr(), a.as_ptr(), b.as_ptr(), n, k, m);
    }
    true
}

/// `out[n×m] += a[n×k] · b[k×m]` (back-propagation to a layer's input, `δ W`); `false`
/// (nothing done) without AVX-512F + FMA. Blocks of up to 12 rows × 32 columns of
/// accumulators; each step of `p` loads one 32-wide piece of `b`'s row `p` and broadcasts
/// `a[i, p]`.
pub fn nn_acc(out: &mut [f32], a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> bool {
    if !available() {
        return false;
    }
    assert!(out.len() >= n * m && a.len() >= n * k && b.len() >= k * m);
    if n == 0 || m == 0 || k == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and FMA are present (checked above); the extents are asserted above.
    unsafe {
        avx512::nn(out.as_mut_ptr(), a.as_ptr(), b.as_ptr(), n, k, m);
    }
    true
}

/// `out[m×k] += a[n×m]ᵀ · b[n×k]` (a layer's weight gradient, `δᵀ H`); `false` (nothing
/// done) without AVX-512F + FMA. For each 32-wide column block, up to 10 rows of `b` stay in
/// registers while 4 rows of `out` at a time are loaded, updated by broadcasts of `a`'s
/// column and stored: `out` is read and written once per 10 rows of `a`.
pub fn tn_acc(out: &mut [f32], a: &[f32], b: &[f32], n: usize, m: usize, k: usize) -> bool {
    if !available() {
        return false;
    }
    assert!(out.len() >= m * k && a.len() >= n * m && b.len() >= n * k);
    if n == 0 || m == 0 || k == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and FMA are present (checked above); the extents are asserted above.
    unsafe {
        avx512::tn::<true>(out.as_mut_ptr(), a.as_ptr(), b.as_ptr(), n, m, k);
    }
    true
}

/// `out[m×k] = a[n×m]ᵀ · b[n×k]` (overwriting: what [`tn_acc`] gives on a zeroed `out`, bit
/// for bit, without the pass that zeroes it); `false` (nothing done) without AVX-512F + FMA.
pub fn tn_set(out: &mut [f32], a: &[f32], b: &[f32], n: usize, m: usize, k: usize) -> bool {
    if !available() {
        return false;
    }
    assert!(out.len() >= m * k && a.len() >= n * m && b.len() >= n * k);
    if n == 0 {
        out[..m * k].fill(0.0);
        return true;
    }
    if m == 0 || k == 0 {
        return true;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and FMA are present (checked above); the extents are asserted above.
    unsafe {
        avx512::tn::<false>(out.as_mut_ptr(), a.as_ptr(), b.as_ptr(), n, m, k);
    }
    true
}

/// `out[m×k] −= Σ_q a_qᵀ · b_q` over the pairs `(a_q[n×m], b_q[n×k])` (at most two: one
/// reverse step's Hessian-vector product of a wide layer, `δᵀ H + R{δ}ᵀ R{H}`, taken from the
/// adjoint in place instead of written to a vector and subtracted by another pass); `false`
/// (nothing done) without AVX-512F + FMA. Each output sums its terms from zero, pair by pair
/// and row by row in order, by fused multiply-adds, and is then subtracted once. Blocks of 8
/// rows × 32 columns of accumulators; the rows of `out` are walked in order, so `out` streams
/// through once while the `b_q` (2 × `n` rows) stay in L1.
pub fn tn_sub(out: &mut [f32], pairs: &[(&[f32], &[f32])], n: usize, m: usize, k: usize) -> bool {
    if !available() {
        return false;
    }
    assert!(pairs.len() <= 2, "tn_sub takes at most two pairs");
    assert!(out.len() >= m * k && pairs.iter().all(|(a, b)| a.len() >= n * m && b.len() >= n * k));
    if n == 0 || m == 0 || k == 0 || pairs.is_empty() {
        return true;
    }
    let mut ptrs = [(std::ptr::null::<f32>(), std::ptr::null::<f32>()); 2];
    for (p, (a, b)) in ptrs.iter_mut().zip(pairs) {
        *p = (a.as_ptr(), b.as_ptr());
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F and FMA are present (checked above); the extents are asserted above.
    unsafe {
        avx512::tn_sub(out.as_mut_ptr(), &ptrs[..pairs.len()], n, m, k);
    }
    true
}

/// `n` split into `ceil(n / max)` nearly equal blocks `(start, len)`: 10 rows are one block
/// of 10 (or 4 + 3 + 3 for `max` 4), 13 are 7 + 6 rather than 12 + 1, so that every block
/// keeps enough independent accumulators to hide the FMA latency.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn blocks(n: usize, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let count = n.div_ceil(max);
    let (base, extra) = (n / count.max(1), n % count.max(1));
    (0..count).scan(0, move |start, b| {
        let len = base + usize::from(b < extra);
        let s = *start;
        *start += len;
        Some((s, len))
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::blocks;

    /// The first `rem` of 16 lanes (all of them for `rem >= 16`).
    #[inline]
    fn mask(rem: usize) -> __mmask16 {
        if rem >= 16 { 0xFFFF } else { (1u16 << rem) - 1 }
    }

    /// Lane `l` of the result is the sum of the 16 lanes of `v[(l % 4) · 4 + l / 4]`, each
    /// summed by the same fixed tree: halves of 256 bits, then of 128, 64 and 32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn hsum16(v: [__m512; 16]) -> __m512 {
        let mut s = [_mm512_setzero_ps(); 8];
        for q in 0..8 {
            let (a, b) = (v[2 * q], v[2 * q + 1]);
            s[q] = _mm512_add_ps(_mm512_shuffle_f32x4::<0x44>(a, b), _mm512_shuffle_f32x4::<0xEE>(a, b));
        }
        let mut t = [_mm512_setzero_ps(); 4];
        for q in 0..4 {
            let (a, b) = (s[2 * q], s[2 * q + 1]);
            t[q] = _mm512_add_ps(_mm512_shuffle_f32x4::<0x88>(a, b), _mm512_shuffle_f32x4::<0xDD>(a, b));
        }
        let mut u = [_mm512_setzero_ps(); 2];
        for q in 0..2 {
            let (a, b) = (t[2 * q], t[2 * q + 1]);
            u[q] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        }
        _mm512_add_ps(_mm512_shuffle_ps::<0x44>(u[0], u[1]), _mm512_shuffle_ps::<0xEE>(u[0], u[1]))
    }

    /// Rows `i0 .. i0 + R` × columns `j0 .. j0 + nc` (`nc <= 4`) of `nt`.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nt_block<const R: usize>(
        out: *mut f32,
        a: *const f32,
        b: *const f32,
        k: usize,
        m: usize,
        i0: usize,
        j0: usize,
        nc: usize,
    ) {
        // SAFETY (whole body): rows `i0 + i < n`, columns `j0 + min(j, nc - 1) < m`, and the
        // offsets along `k` stay below `k` (the tail is a masked load).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            // Missing columns (nc < 4) repeat the last one; their sums are dropped.
            let mut brow = [b; 4];
            for j in 0..4 {
                brow[j] = b.add((j0 + j.min(nc - 1)) * k);
            }
            let mut arow = [a; R];
            for i in 0..R {
                arow[i] = a.add((i0 + i) * k);
            }
            let full = k / 16;
            for c in 0..full {
                let off = c * 16;
                let mut bv = [_mm512_setzero_ps(); 4];
                for j in 0..4 {
                    bv[j] = _mm512_loadu_ps(brow[j].add(off));
                }
                for i in 0..R {
                    let av = _mm512_loadu_ps(arow[i].add(off));
                    for j in 0..4 {
                        acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
                    }
                }
            }
            if !k.is_multiple_of(16) {
                let (off, mk) = (full * 16, mask(k % 16));
                let mut bv = [_mm512_setzero_ps(); 4];
                for j in 0..4 {
                    bv[j] = _mm512_maskz_loadu_ps(mk, brow[j].add(off));
                }
                for i in 0..R {
                    let av = _mm512_maskz_loadu_ps(mk, arow[i].add(off));
                    for j in 0..4 {
                        acc[i][j] = _mm512_fmadd_ps(av, bv[j], acc[i][j]);
                    }
                }
            }
            let mut v = [_mm512_setzero_ps(); 16];
            for i in 0..R {
                for j in 0..4 {
                    v[i + 4 * j] = acc[i][j];
                }
            }
            let mut sums = [0f32; 16];
            _mm512_storeu_ps(sums.as_mut_ptr(), hsum16(v));
            for i in 0..R {
                let o = out.add((i0 + i) * m + j0);
                for j in 0..nc {
                    *o.add(j) += sums[4 * i + j];
                }
            }
        }
    }

    /// `out[n×m] += a[n×k] · b[m×k]ᵀ`; the caller checks the CPU and the extents.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn nt(out: *mut f32, a: *const f32, b: *const f32, n: usize, k: usize, m: usize) {
        let mut j0 = 0;
        while j0 < m {
            let nc = (m - j0).min(4);
            for (i0, r) in blocks(n, 4) {
                // SAFETY: the block lies inside `n × m`; `a` and `b` rows inside their extents.
                unsafe {
                    match r {
                        4 => nt_block::<4>(out, a, b, k, m, i0, j0, nc),
                        3 => nt_block::<3>(out, a, b, k, m, i0, j0, nc),
                        2 => nt_block::<2>(out, a, b, k, m, i0, j0, nc),
                        _ => nt_block::<1>(out, a, b, k, m, i0, j0, nc),
                    }
                }
            }
            j0 += 4;
        }
    }

    /// Rows `i0 .. i0 + R` × the 32 columns from `j0` (lanes masked by `m0`, `m1`) of `nn`.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nn_block<const R: usize>(
        out: *mut f32,
        a: *const f32,
        b: *const f32,
        k: usize,
        m: usize,
        i0: usize,
        j0: usize,
        (m0, m1): (__mmask16, __mmask16),
    ) {
        // SAFETY (whole body): rows `i0 + i < n`, `p < k`; lanes outside `m` are masked off
        // (their addresses are formed with `wrapping_add` and never touched).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for i in 0..R {
                let o = out.add((i0 + i) * m + j0);
                acc[i][0] = _mm512_maskz_loadu_ps(m0, o);
                acc[i][1] = _mm512_maskz_loadu_ps(m1, o.wrapping_add(16));
            }
            let mut arow = [a; R];
            for i in 0..R {
                arow[i] = a.add((i0 + i) * k);
            }
            for p in 0..k {
                let bp = b.add(p * m + j0);
                let b0 = _mm512_maskz_loadu_ps(m0, bp);
                let b1 = _mm512_maskz_loadu_ps(m1, bp.wrapping_add(16));
                for i in 0..R {
                    let s = _mm512_set1_ps(*arow[i].add(p));
                    acc[i][0] = _mm512_fmadd_ps(s, b0, acc[i][0]);
                    acc[i][1] = _mm512_fmadd_ps(s, b1, acc[i][1]);
                }
            }
            for i in 0..R {
                let o = out.add((i0 + i) * m + j0);
                _mm512_mask_storeu_ps(o, m0, acc[i][0]);
                _mm512_mask_storeu_ps(o.wrapping_add(16), m1, acc[i][1]);
            }
        }
    }

    /// `out[n×m] += a[n×k] · b[k×m]`; the caller checks the CPU and the extents.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn nn(out: *mut f32, a: *const f32, b: *const f32, n: usize, k: usize, m: usize) {
        let mut j0 = 0;
        while j0 < m {
            let masks = (mask(m - j0), mask((m - j0).saturating_sub(16)));
            for (i0, r) in blocks(n, 12) {
                // SAFETY: the block lies inside `n × m` (lanes past `m` masked off).
                unsafe {
                    match r {
                        12 => nn_block::<12>(out, a, b, k, m, i0, j0, masks),
                        11 => nn_block::<11>(out, a, b, k, m, i0, j0, masks),
                        10 => nn_block::<10>(out, a, b, k, m, i0, j0, masks),
                        9 => nn_block::<9>(out, a, b, k, m, i0, j0, masks),
                        8 => nn_block::<8>(out, a, b, k, m, i0, j0, masks),
                        7 => nn_block::<7>(out, a, b, k, m, i0, j0, masks),
                        6 => nn_block::<6>(out, a, b, k, m, i0, j0, masks),
                        5 => nn_block::<5>(out, a, b, k, m, i0, j0, masks),
                        4 => nn_block::<4>(out, a, b, k, m, i0, j0, masks),
                        3 => nn_block::<3>(out, a, b, k, m, i0, j0, masks),
                        2 => nn_block::<2>(out, a, b, k, m, i0, j0, masks),
                        _ => nn_block::<1>(out, a, b, k, m, i0, j0, masks),
                    }
                }
            }
            j0 += 32;
        }
    }

    /// Rows `i .. i + I` of `out` for the `R` rows of `b` held in `bv` (`tn_block`).
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tn_rows<const R: usize, const I: usize, const ACC: bool>(
        out: *mut f32,
        a: *const f32,
        bv: &[[__m512; 2]; R],
        m: usize,
        k: usize,
        r0: usize,
        i: usize,
        j0: usize,
        (m0, m1): (__mmask16, __mmask16),
    ) {
        // SAFETY (whole body): `i + I <= m`, `r0 + R <= n`; lanes past `k` are masked off.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; I];
            if ACC {
                for ii in 0..I {
                    let o = out.add((i + ii) * k + j0);
                    acc[ii][0] = _mm512_maskz_loadu_ps(m0, o);
                    acc[ii][1] = _mm512_maskz_loadu_ps(m1, o.wrapping_add(16));
                }
            }
            for r in 0..R {
                let ar = a.add((r0 + r) * m + i);
                for ii in 0..I {
                    let s = _mm512_set1_ps(*ar.add(ii));
                    acc[ii][0] = _mm512_fmadd_ps(s, bv[r][0], acc[ii][0]);
                    acc[ii][1] = _mm512_fmadd_ps(s, bv[r][1], acc[ii][1]);
                }
            }
            for ii in 0..I {
                let o = out.add((i + ii) * k + j0);
                _mm512_mask_storeu_ps(o, m0, acc[ii][0]);
                _mm512_mask_storeu_ps(o.wrapping_add(16), m1, acc[ii][1]);
            }
        }
    }

    /// Rows `r0 .. r0 + R` of `a` and `b`, the 32 columns of `out` from `j0`, all rows of `out`.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tn_block<const R: usize, const ACC: bool>(
        out: *mut f32,
        a: *const f32,
        b: *const f32,
        m: usize,
        k: usize,
        r0: usize,
        j0: usize,
        masks: (__mmask16, __mmask16),
    ) {
        // SAFETY (whole body): `r0 + R <= n`; lanes past `k` are masked off; `tn_rows` is
        // called for rows below `m` only.
        unsafe {
            let mut bv = [[_mm512_setzero_ps(); 2]; R];
            for r in 0..R {
                let bp = b.add((r0 + r) * k + j0);
                bv[r][0] = _mm512_maskz_loadu_ps(masks.0, bp);
                bv[r][1] = _mm512_maskz_loadu_ps(masks.1, bp.wrapping_add(16));
            }
            let mut i = 0;
            while i + 4 <= m {
                tn_rows::<R, 4, ACC>(out, a, &bv, m, k, r0, i, j0, masks);
                i += 4;
            }
            while i < m {
                tn_rows::<R, 1, ACC>(out, a, &bv, m, k, r0, i, j0, masks);
                i += 1;
            }
        }
    }

    /// `out[m×k] += a[n×m]ᵀ · b[n×k]` (`ACC`) or `=` (not `ACC`: the first row chunk starts
    /// from zero instead of `out`); the caller checks the CPU and the extents.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn tn<const ACC: bool>(
        out: *mut f32,
        a: *const f32,
        b: *const f32,
        n: usize,
        m: usize,
        k: usize,
    ) {
        let mut j0 = 0;
        while j0 < k {
            let masks = (mask(k - j0), mask((k - j0).saturating_sub(16)));
            // Row chunks in increasing order: each output's sum runs over `r` in order.
            for (r0, r) in blocks(n, 10) {
                // SAFETY: the chunk lies inside `n`, the columns inside `k` (masked).
                unsafe {
                    if ACC || r0 > 0 {
                        tn_chunk::<true>(out, a, b, m, k, r0, r, j0, masks);
                    } else {
                        tn_chunk::<false>(out, a, b, m, k, r0, r, j0, masks);
                    }
                }
            }
            j0 += 32;
        }
    }

    /// Rows `i .. i + I` × the 32 columns from `j0` of [`super::tn_sub`].
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tn_sub_rows<const I: usize>(
        out: *mut f32,
        pairs: &[(*const f32, *const f32)],
        n: usize,
        m: usize,
        k: usize,
        i: usize,
        j0: usize,
        (m0, m1): (__mmask16, __mmask16),
    ) {
        // SAFETY (whole body): `i + I <= m`, rows `r < n`; lanes past `k` are masked off
        // (their addresses are formed with `wrapping_add` and never touched).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; I];
            for &(a, b) in pairs {
                for r in 0..n {
                    let bp = b.add(r * k + j0);
                    let b0 = _mm512_maskz_loadu_ps(m0, bp);
                    let b1 = _mm512_maskz_loadu_ps(m1, bp.wrapping_add(16));
                    let ar = a.add(r * m + i);
                    for ii in 0..I {
                        let s = _mm512_set1_ps(*ar.add(ii));
                        acc[ii][0] = _mm512_fmadd_ps(s, b0, acc[ii][0]);
                        acc[ii][1] = _mm512_fmadd_ps(s, b1, acc[ii][1]);
                    }
                }
            }
            for ii in 0..I {
                let o = out.add((i + ii) * k + j0);
                let x0 = _mm512_maskz_loadu_ps(m0, o);
                let x1 = _mm512_maskz_loadu_ps(m1, o.wrapping_add(16));
                _mm512_mask_storeu_ps(o, m0, _mm512_sub_ps(x0, acc[ii][0]));
                _mm512_mask_storeu_ps(o.wrapping_add(16), m1, _mm512_sub_ps(x1, acc[ii][1]));
            }
        }
    }

    /// `out[m×k] −= Σ_q a_qᵀ · b_q`; the caller checks the CPU, the extents and that `pairs`
    /// is not empty.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn tn_sub(
        out: *mut f32,
        pairs: &[(*const f32, *const f32)],
        n: usize,
        m: usize,
        k: usize,
    ) {
        let mut i = 0;
        while i < m {
            let rows = if i + 8 <= m { 8 } else { 1 };
            let mut j0 = 0;
            while j0 < k {
                let masks = (mask(k - j0), mask((k - j0).saturating_sub(16)));
                // SAFETY: rows `i .. i + rows` lie inside `m`, the columns inside `k` (masked).
                unsafe {
                    if rows == 8 {
                        tn_sub_rows::<8>(out, pairs, n, m, k, i, j0, masks);
                    } else {
                        tn_sub_rows::<1>(out, pairs, n, m, k, i, j0, masks);
                    }
                }
                j0 += 32;
            }
            i += rows;
        }
    }

    /// `tn_block` for a chunk of `r <= 10` rows.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tn_chunk<const ACC: bool>(
        out: *mut f32,
        a: *const f32,
        b: *const f32,
        m: usize,
        k: usize,
        r0: usize,
        r: usize,
        j0: usize,
        masks: (__mmask16, __mmask16),
    ) {
        // SAFETY: as `tn_block`, for the caller's chunk.
        unsafe {
            match r {
                10 => tn_block::<10, ACC>(out, a, b, m, k, r0, j0, masks),
                9 => tn_block::<9, ACC>(out, a, b, m, k, r0, j0, masks),
                8 => tn_block::<8, ACC>(out, a, b, m, k, r0, j0, masks),
                7 => tn_block::<7, ACC>(out, a, b, m, k, r0, j0, masks),
                6 => tn_block::<6, ACC>(out, a, b, m, k, r0, j0, masks),
                5 => tn_block::<5, ACC>(out, a, b, m, k, r0, j0, masks),
                4 => tn_block::<4, ACC>(out, a, b, m, k, r0, j0, masks),
                3 => tn_block::<3, ACC>(out, a, b, m, k, r0, j0, masks),
                2 => tn_block::<2, ACC>(out, a, b, m, k, r0, j0, masks),
                _ => tn_block::<1, ACC>(out, a, b, m, k, r0, j0, masks),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs, and an `out` that already holds values (the kernels accumulate).
    fn data(len: usize, seed: f64) -> Vec<f32> {
        (0..len).map(|i| ((i as f64 + 1.0) * seed).sin() as f32).collect()
    }

    /// Checks `got[i] ≈ out0[i] + Σ_p x_p y_p` computed in f64, per element, relative to
    /// `|out0[i]| + Σ_p |x_p y_p|` (what f32 rounding scales with): tolerance 1e-5.
    fn check(name: &str, got: &[f32], out0: &[f32], terms: impl Fn(usize) -> Vec<(f32, f32)>) {
        for (i, (&g, &o)) in got.iter().zip(out0).enumerate() {
            let t = terms(i);
            let want = o as f64 + t.iter().map(|&(x, y)| x as f64 * y as f64).sum::<f64>();
            let scale = (o as f64).abs() + t.iter().map(|&(x, y)| (x as f64 * y as f64).abs()).sum::<f64>();
            let err = (g as f64 - want).abs() / scale.max(f64::MIN_POSITIVE);
            assert!(err < 1e-5, "{name}: element {i}: {g} against {want} (relative {err:.2e})");
        }
    }

    const NS: [usize; 4] = [1, 3, 10, 13];
    const KM: [usize; 4] = [1, 17, 256, 300];

    #[test]
    fn blocks_cover_rows_evenly() {
        for (n, max) in [(10, 12), (13, 12), (10, 4), (1, 4), (25, 12), (0, 4)] {
            let b: Vec<_> = blocks(n, max).collect();
            assert_eq!(b.iter().map(|x| x.1).sum::<usize>(), n);
            assert!(b.iter().all(|x| x.1 <= max && x.1 + 1 >= b[0].1));
            assert!(b.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        }
    }

    /// Every `(n, k, m)` of [`NS`] × [`KM`] × [`KM`].
    fn each_shape(mut f: impl FnMut(usize, usize, usize)) {
        for n in NS {
            for k in KM {
                for m in KM {
                    f(n, k, m);
                }
            }
        }
    }

    #[test]
    fn nt_matches_f64() {
        if !available() {
            eprintln!("no AVX-512F + FMA: wide kernels not tested");
            return;
        }
        each_shape(|n, k, m| {
            let (a, b, out0) = (data(n * k, 0.37), data(m * k, 0.91), data(n * m, 0.13));
            let mut out = out0.clone();
            assert!(nt_acc(&mut out, &a, &b, n, k, m));
            check(&format!("nt {n}×{k}×{m}"), &out, &out0, |i| {
                let (r, j) = (i / m, i % m);
                (0..k).map(|p| (a[r * k + p], b[j * k + p])).collect()
            });
        });
    }

    #[test]
    fn nn_matches_f64() {
        if !available() {
            return;
        }
        each_shape(|n, k, m| {
            let (a, b, out0) = (data(n * k, 0.37), data(k * m, 0.91), data(n * m, 0.13));
            let mut out = out0.clone();
            assert!(nn_acc(&mut out, &a, &b, n, k, m));
            check(&format!("nn {n}×{k}×{m}"), &out, &out0, |i| {
                let (r, j) = (i / m, i % m);
                (0..k).map(|p| (a[r * k + p], b[p * m + j])).collect()
            });
        });
    }

    #[test]
    fn tn_matches_f64() {
        if !available() {
            return;
        }
        each_shape(|n, m, k| {
            let (a, b, out0) = (data(n * m, 0.37), data(n * k, 0.91), data(m * k, 0.13));
            let mut out = out0.clone();
            assert!(tn_acc(&mut out, &a, &b, n, m, k));
            check(&format!("tn {n}×{m}×{k}"), &out, &out0, |i| {
                let (r, j) = (i / k, i % k);
                (0..n).map(|q| (a[q * m + r], b[q * k + j])).collect()
            });
        });
    }

    #[test]
    fn tn_set_is_tn_acc_on_zeros_bit_for_bit() {
        if !available() {
            return;
        }
        for n in NS {
            for (m, k) in [(17, 300), (256, 256), (1, 17)] {
                let (a, b) = (data(n * m, 0.37), data(n * k, 0.91));
                let mut want = vec![0.0f32; m * k];
                assert!(tn_acc(&mut want, &a, &b, n, m, k));
                let mut got = data(m * k, 0.5);
                assert!(tn_set(&mut got, &a, &b, n, m, k));
                assert!(got.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits()), "tn_set {n}×{m}×{k}");
            }
        }
    }

    #[test]
    fn tn_sub_matches_f64() {
        if !available() {
            return;
        }
        for n in NS {
            for (m, k) in [(1, 17), (17, 300), (256, 256), (13, 1), (9, 40)] {
                let (a1, b1, a2, b2) =
                    (data(n * m, 0.37), data(n * k, 0.91), data(n * m, 0.23), data(n * k, 0.71));
                let out0 = data(m * k, 0.13);
                for two in [false, true] {
                    let mut out = out0.clone();
                    let pairs: Vec<(&[f32], &[f32])> =
                        if two { vec![(&a1, &b1), (&a2, &b2)] } else { vec![(&a1, &b1)] };
                    assert!(tn_sub(&mut out, &pairs, n, m, k));
                    check(&format!("tn_sub {n}×{m}×{k} two={two}"), &out, &out0, |i| {
                        let (r, j) = (i / k, i % k);
                        let mut t: Vec<(f32, f32)> =
                            (0..n).map(|q| (-a1[q * m + r], b1[q * k + j])).collect();
                        if two {
                            t.extend((0..n).map(|q| (-a2[q * m + r], b2[q * k + j])));
                        }
                        t
                    });
                }
            }
        }
    }

    #[test]
    fn kernels_leave_memory_past_the_output_alone() {
        if !available() {
            return;
        }
        let (n, k, m) = (3, 17, 19);
        let (a, b) = (data(n * k.max(m), 0.3), data(k * m, 0.7));
        for which in 0..4 {
            let len = if which >= 2 { m * k } else { n * m };
            let mut out = vec![1.0f32; len + 40];
            let (o, tail) = out.split_at_mut(len);
            match which {
                0 => assert!(nt_acc(o, &a, &b, n, k, m)),
                1 => assert!(nn_acc(o, &a, &b, n, k, m)),
                2 => assert!(tn_acc(o, &a[..n * m], &b[..n * k], n, m, k)),
                _ => assert!(tn_sub(o, &[(&a[..n * m], &b[..n * k])], n, m, k)),
            }
            assert!(tail.iter().all(|&x| x == 1.0), "kernel {which} wrote past its output");
        }
    }
}
