//! An order-independent sum of float gradients: each value is rounded once to a fixed-point
//! integer with 64 fractional bits and summed in `i128`, which is associative. However the
//! tasks of a meta-batch are split across workers and threads, the reduced gradient is
//! bitwise the same, which is what makes 1-worker and N-worker runs give identical
//! checkpoints.
//!
//! Resolution is `2^-64` (about `5e-20`) in absolute terms; values of magnitude `2^40`
//! (about `1e12`) or more, and non-finite values, mark the sum as overflowed, which training
//! treats like a non-finite gradient (the step is skipped).

use serde::{Deserialize, Serialize};

/// Fractional bits of the fixed-point representation.
pub const FRAC_BITS: i32 = 64;
/// Largest accepted magnitude is below `2^MAX_EXP`, leaving `2^23` summands of headroom.
pub const MAX_EXP: i32 = 40;

/// A vector of fixed-point sums.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixedSum {
    acc: Vec<i128>,
    overflow: bool,
}

/// `x` as a fixed-point integer (`round(x · 2^64)`, ties away from zero), or `None` if it is
/// non-finite or too large. Works on the bits, so it is exact and fast.
#[inline]
pub fn to_fixed(x: f32) -> Option<i128> {
    let bits = x.to_bits();
    let biased = ((bits >> 23) & 0xff) as i32;
    if biased == 0xff {
        return None;
    }
    let frac = (bits & 0x7f_ffff) as i128;
    let (mant, exp) = if biased == 0 { (frac, -126 - 23) } else { (frac | 0x80_0000, biased - 127 - 23) };
    if mant != 0 && exp + 23 >= MAX_EXP {
        return None;
    }
    let shift = exp + FRAC_BITS;
    let mag = if shift >= 0 {
        mant << shift
    } else if shift < -25 {
        0
    } else {
        let s = -shift;
        (mant + (1 << (s - 1))) >> s
    };
    Some(if bits >> 31 == 1 { -mag } else { mag })
}

impl FixedSum {
    /// A zero sum of `len` values.
    pub fn zeros(len: usize) -> Self {
        Self { acc: vec![0; len], overflow: false }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.acc.len()
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.acc.is_empty()
    }

    /// Whether a non-finite or too large value was added.
    pub fn overflowed(&self) -> bool {
        self.overflow
    }

    /// Adds `xs` element-wise, starting at element `offset`.
    pub fn add_f32(&mut self, offset: usize, xs: &[f32]) {
        for (a, &x) in self.acc[offset..offset + xs.len()].iter_mut().zip(xs) {
            match to_fixed(x) {
                Some(v) => *a += v,
                None => self.overflow = true,
            }
        }
    }

    /// Adds every buffer of a parameter set, in canonical order.
    pub fn add_params(&mut self, p: &crate::Params<f32>) {
        let mut at = 0;
        for b in p.buffers() {
            self.add_f32(at, b);
            at += b.len();
        }
    }

    /// Adds another sum of the same length (exact, so in any order). A length mismatch or an
    /// `i128` overflow (impossible for sums of real gradients: see
    /// [`FixedSum::is_plausible_sum_of`]) marks the sum as overflowed instead of wrapping.
    pub fn merge(&mut self, other: &FixedSum) {
        let mut wrapped = false;
        for (a, &b) in self.acc.iter_mut().zip(&other.acc) {
            let (v, o) = a.overflowing_add(b);
            *a = v;
            wrapped |= o;
        }
        self.overflow |= wrapped || other.overflow || self.acc.len() != other.acc.len();
    }

    /// Whether every value could be the sum of `tasks` values of [`to_fixed`] (each below
    /// `2^(MAX_EXP + FRAC_BITS)` in magnitude): a sum received from outside that is not came
    /// from a broken or hostile peer, and is refused before it is merged.
    pub fn is_plausible_sum_of(&self, tasks: usize) -> bool {
        let bound = (tasks as u128).saturating_mul(1u128 << (MAX_EXP + FRAC_BITS));
        self.acc.iter().all(|a| a.unsigned_abs() < bound.max(1))
    }

    /// The sums times `scale` (e.g. `1/B`), rounded once to f32 via f64, or `None` after an
    /// overflow.
    pub fn to_f32(&self, scale: f64) -> Option<Vec<f32>> {
        if self.overflow {
            return None;
        }
        let unit = scale / 2f64.powi(FRAC_BITS);
        Some(self.acc.iter().map(|&a| (a as f64 * unit) as f32).collect())
    }

    /// Writes the scaled sums into a parameter set with the slots the sum was built from.
    pub fn to_params(&self, like: &crate::Params<f32>, scale: f64) -> Option<crate::Params<f32>> {
        let flat = self.to_f32(scale)?;
        let mut out = like.zeros_like();
        let mut at = 0;
        for b in out.buffers_mut() {
            b.copy_from_slice(flat.get(at..at + b.len())?);
            at += b.len();
        }
        (at == flat.len()).then_some(out)
    }
}

/// `i64` limbs per value in [`FixedSum::to_limbs`].
pub const LIMBS: usize = 3;
/// Bits of the two low (unsigned) limbs.
const LIMB_BITS: u32 = 44;

impl FixedSum {
    /// The sums as `i64` limbs that an integer all-reduce (NCCL `ncclInt64` sum, or any
    /// wrapping `i64` sum) adds exactly: each value `a` becomes `a mod 2^44`,
    /// `(a >> 44) mod 2^44` and `a >> 88` (signed), and one last limb counts overflowed
    /// members. Sums of up to `2^19` members cannot overflow a limb, so
    /// [`FixedSum::from_limbs`] of the reduced limbs is bitwise the [`FixedSum::merge`] of
    /// the members' sums.
    pub fn to_limbs(&self) -> Vec<i64> {
        let mask = (1i128 << LIMB_BITS) - 1;
        let mut out = Vec::with_capacity(LIMBS * self.acc.len() + 1);
        for &a in &self.acc {
            out.extend([(a & mask) as i64, ((a >> LIMB_BITS) & mask) as i64, (a >> (2 * LIMB_BITS)) as i64]);
        }
        out.push(i64::from(self.overflow));
        out
    }

    /// Rebuilds a sum from (reduced) limbs of [`FixedSum::to_limbs`]; `None` when the length
    /// is not `3·n + 1`.
    pub fn from_limbs(limbs: &[i64]) -> Option<Self> {
        let (overflow, values) = limbs.split_last()?;
        if values.len() % LIMBS != 0 {
            return None;
        }
        let acc = values
            .chunks_exact(LIMBS)
            .map(|l| {
                i128::from(l[0])
                    .wrapping_add(i128::from(l[1]).wrapping_shl(LIMB_BITS))
                    .wrapping_add(i128::from(l[2]).wrapping_shl(2 * LIMB_BITS))
            })
            .collect();
        Some(Self { acc, overflow: *overflow != 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limbs_summed_as_i64_give_the_merged_sum_bitwise() {
        let members: Vec<FixedSum> = (0..5)
            .map(|m| {
                let mut s = FixedSum::zeros(6);
                let m = m as f32;
                s.add_f32(
                    0,
                    &[1.0e11 * (m - 2.0), -3.5e-19, 0.1 * m, -7.25e10, 1.0e-3 * m, -(2f32.powi(39))],
                );
                s
            })
            .collect();
        let mut merged = FixedSum::zeros(6);
        let mut limbs = vec![0i64; LIMBS * 6 + 1];
        for m in &members {
            merged.merge(m);
            for (a, b) in limbs.iter_mut().zip(m.to_limbs()) {
                *a = a.wrapping_add(b);
            }
        }
        assert_eq!(FixedSum::from_limbs(&limbs), Some(merged.clone()));
        let mut bad = FixedSum::zeros(6);
        bad.add_f32(0, &[f32::NAN]);
        let mut with_bad = limbs.clone();
        for (a, b) in with_bad.iter_mut().zip(bad.to_limbs()) {
            *a = a.wrapping_add(b);
        }
        assert!(FixedSum::from_limbs(&with_bad).is_some_and(|s| s.overflowed()));
        assert_eq!(FixedSum::from_limbs(&limbs[1..]), None);
        assert_eq!(FixedSum::from_limbs(&[]), None);
    }

    #[test]
    fn conversion_is_exact_where_representable() {
        for x in [0.0f32, 1.0, -1.0, 0.5, 3.25, -1e-3, 1e6, 123456.79, -7.0e-12] {
            let f = to_fixed(x).expect("finite");
            let back = f as f64 / 2f64.powi(FRAC_BITS);
            assert!((back - x as f64).abs() <= 2f64.powi(-FRAC_BITS), "{x} -> {back}");
        }
        assert_eq!(to_fixed(f32::NAN), None);
        assert_eq!(to_fixed(f32::INFINITY), None);
        assert_eq!(to_fixed(2f32.powi(41)), None);
        assert_eq!(to_fixed(f32::MIN_POSITIVE), Some(0));
        assert_eq!(to_fixed(-0.0), Some(0));
    }

    #[test]
    fn sums_do_not_depend_on_grouping() {
        let mut rng = crate::rng::CounterRng::new(1, &[]);
        let vals: Vec<Vec<f32>> = (0..25)
            .map(|_| (0..50).map(|_| (rng.normal() * 10f64.powf(rng.uniform_in(-9.0, 3.0))) as f32).collect())
            .collect();
        let sum_of = |groups: &[std::ops::Range<usize>]| {
            let mut total = FixedSum::zeros(50);
            for g in groups.iter().rev() {
                let mut part = FixedSum::zeros(50);
                for v in &vals[g.clone()] {
                    part.add_f32(0, v);
                }
                total.merge(&part);
            }
            total.to_f32(1.0 / 25.0).expect("finite")
        };
        let whole = std::iter::once(0..25).collect::<Vec<_>>();
        let one = sum_of(&whole);
        let three = sum_of(&[0..9, 9..17, 17..25]);
        let each: Vec<_> = (0..25).map(|i| i..i + 1).collect();
        assert_eq!(one, three);
        assert_eq!(one, sum_of(&each));
        // And it is close to the f64 sum.
        for j in 0..50 {
            let exact: f64 = vals.iter().map(|v| v[j] as f64).sum::<f64>() / 25.0;
            assert!((one[j] as f64 - exact).abs() <= 1e-6 * exact.abs() + 1e-18, "{j}");
        }
    }

    #[test]
    fn implausible_and_wrapping_sums_are_caught() {
        let mut s = FixedSum::zeros(3);
        let big = 2f32.powi(MAX_EXP) * 0.999;
        s.add_f32(0, &[big, -big, 0.0]);
        assert!(!s.overflowed());
        assert!(s.is_plausible_sum_of(1));
        s.merge(&s.clone());
        assert!(!s.is_plausible_sum_of(1), "two tasks' worth of magnitude from one task");
        assert!(s.is_plausible_sum_of(2));
        let hostile = FixedSum { acc: vec![i128::MAX, 0, 0], overflow: false };
        assert!(!hostile.is_plausible_sum_of(1_000_000));
        let mut total = hostile.clone();
        total.merge(&hostile);
        assert!(total.overflowed(), "an i128 overflow poisons the sum instead of wrapping");
        assert!(FixedSum::zeros(2).is_plausible_sum_of(0));
    }

    #[test]
    fn overflow_poisons_the_sum() {
        let mut s = FixedSum::zeros(2);
        s.add_f32(0, &[1.0, f32::NAN]);
        assert!(s.overflowed());
        assert_eq!(s.to_f32(1.0), None);
    }
}
