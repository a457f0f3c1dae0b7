//! What each kernel launch moves and computes, as a function of its own arguments: the
//! bytes-moved and FLOP formulas stated at the top of each `kernels/*.cu` file (each family's
//! `cost` in its module, e.g. [`super::mlp`]), so `docs/KERNELS.md`, the `cuda_kernels` bench
//! and anyone judging a measured time use the same numbers.
//!
//! Bytes count each array the kernel must read or write once (DRAM traffic with perfect
//! caching: the weights every block re-reads count once), FLOPs count multiply-adds as two and
//! transcendentals as one. The floor of a launch on a device is
//! `max(bytes / bandwidth, FLOPs / peak)`; [`H100_BYTES_PER_S`] and [`H100_FLOPS_PER_S`] are
//! the round figures `docs/KERNELS.md` uses.

use super::{ArgValue, Family, KernelId, loss, lstm_cell, mlp, scheduler, sgd_update};
use crate::error::{CudaError, Result};
use crate::runtime::{Arg, Runtime};

/// HBM bandwidth of an H100 SXM, rounded: about 3 TB/s.
pub const H100_BYTES_PER_S: f64 = 3.0e12;
/// Dense fp32 (non-tensor-core) peak of an H100 SXM, rounded: about 60 TFLOP/s.
pub const H100_FLOPS_PER_S: f64 = 60.0e12;

/// Bytes moved and floating-point operations of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Bytes read plus bytes written, each array once.
    pub bytes: u64,
    /// Floating-point operations (a multiply-add is two).
    pub flops: u64,
}

impl Cost {
    /// The cost of a launch that moves `floats` 4-byte values and does `flops` operations.
    pub(crate) fn floats(floats: u64, flops: u64) -> Cost {
        Cost { bytes: 4 * floats, flops }
    }

    /// The least time the launch can take on a device of the given bandwidth (bytes/s) and
    /// arithmetic peak (FLOP/s), seconds.
    pub fn floor_s(self, bytes_per_s: f64, flops_per_s: f64) -> f64 {
        (self.bytes as f64 / bytes_per_s).max(self.flops as f64 / flops_per_s)
    }

    /// [`Cost::floor_s`] on an H100 ([`H100_BYTES_PER_S`], [`H100_FLOPS_PER_S`]).
    pub fn h100_floor_s(self) -> f64 {
        self.floor_s(H100_BYTES_PER_S, H100_FLOPS_PER_S)
    }

    /// Achieved bandwidth, GB/s, if a launch took `seconds`.
    pub fn gb_per_s(self, seconds: f64) -> f64 {
        self.bytes as f64 / seconds / 1e9
    }

    /// Achieved arithmetic rate, GFLOP/s, if a launch took `seconds`.
    pub fn gflop_per_s(self, seconds: f64) -> f64 {
        self.flops as f64 / seconds / 1e9
    }
}

/// Reads a kernel's scalar arguments by parameter name (for the families' `cost`).
pub(crate) struct Scalars<'a> {
    kernel: KernelId,
    args: &'a [ArgValue],
}

impl Scalars<'_> {
    /// The non-negative integer argument `name`.
    pub(crate) fn get(&self, name: &str) -> Result<u64> {
        let bad = |reason: String| CudaError::InvalidArgument {
            kernel: self.kernel.entry_point().to_string(),
            reason,
        };
        let i = self
            .kernel
            .params()
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| bad(format!("no parameter `{name}` (cost table out of date)")))?;
        let v = match self.args.get(i) {
            Some(ArgValue::I32(v)) => i64::from(*v),
            Some(ArgValue::U32(v)) => i64::from(*v),
            other => return Err(bad(format!("`{name}` is not an integer argument: {other:?}"))),
        };
        u64::try_from(v).map_err(|_| bad(format!("`{name}` = {v} is negative")))
    }
}

/// Bytes and FLOPs of launching `kernel` with `args` (the formulas at the top of its `.cu`
/// file). The arguments are validated first ([`KernelId::requirements`]).
pub fn cost(kernel: KernelId, args: &[ArgValue]) -> Result<Cost> {
    kernel.requirements(args)?;
    let s = Scalars { kernel, args };
    match kernel.family() {
        Family::LstmCell => lstm_cell::cost(kernel, &s),
        Family::SgdUpdate => sgd_update::cost(kernel, &s),
        Family::Mlp => mlp::cost(kernel, &s),
        Family::Loss => loss::cost(kernel, &s),
        Family::Scheduler => scheduler::cost(kernel, &s),
    }
}

/// [`cost`] of a launch as a [`Runtime`] receives it.
pub fn launch_cost<R: Runtime + ?Sized>(kernel: KernelId, args: &[Arg<'_, R>]) -> Result<Cost> {
    let values: Vec<ArgValue> = args.iter().map(Arg::value).collect();
    cost(kernel, &values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(len: usize) -> ArgValue {
        ArgValue::Buffer { ty: crate::ParamType::PtrF32, len: Some(len) }
    }

    fn ints(v: &[i32]) -> impl Iterator<Item = ArgValue> + '_ {
        v.iter().map(|&x| ArgValue::I32(x))
    }

    /// The default problem of docs/KERNELS.md: B = 25, learner 1-40-40-1 (P = 1,761 in G = 6
    /// groups), K = 10 points, H = 20.
    #[test]
    fn default_size_costs_match_the_kernel_sources() {
        const BIG: usize = 1 << 22;
        let mut lstm = vec![buf(BIG); 11];
        lstm.extend(ints(&[25, 20]));
        let fwd = cost(KernelId::LstmCellForward, &lstm).expect("valid");
        assert_eq!(fwd, Cost { bytes: 4 * (25 * 43 + 25 * 180 + 80 * 25), flops: 25 * (160 * 24 + 200) });
        assert!((fwd.h100_floor_s() - 30_300.0 / 3e12).abs() < 1e-15, "≈ 10 ns: {fwd:?}");

        let mut sgd = vec![buf(BIG); 4];
        sgd.push(ArgValue::Buffer { ty: crate::ParamType::PtrI32, len: Some(7) });
        sgd.extend(ints(&[25, 1761, 6]));
        let s = cost(KernelId::SgdUpdateForward, &sgd).expect("valid");
        assert_eq!(s, Cost { bytes: 528_948, flops: 88_050 }, "≈ 0.53 MB, 0.09 M");

        // Layer 40 -> 40 of 10 points: weights at 80, bias at 1680 of 1761.
        let mut lin = vec![buf(BIG); 3];
        lin.extend(ints(&[25, 10, 40, 40, 1761, 80, 1680, 1]));
        let l = cost(KernelId::LinearForward, &lin).expect("valid");
        assert_eq!(l, Cost { bytes: 244_000, flops: 810_000 }, "≈ 0.24 MB, 0.8 M");
        let mut back = vec![buf(BIG); 6];
        back.extend(ints(&[25, 10, 40, 40, 1761, 80, 1680, 1, 1]));
        assert_eq!(cost(KernelId::LinearBackward, &back).expect("valid").flops, 1_630_000, "≈ 1.6 M");
        assert!(cost(KernelId::LinearBackward, &back[..back.len() - 1]).is_err(), "arguments are validated");
    }

    #[test]
    fn every_kernel_has_a_cost_growing_with_the_batch() {
        // Launch arguments from the registry's own parameter lists: every size 3, flags 1,
        // offsets 0 (so a 3x3 layer fits a parameter stride of 12).
        let args = |k: KernelId, tasks: i32| -> Vec<ArgValue> {
            k.params()
                .iter()
                .map(|p| match (p.ty, p.name) {
                    (crate::ParamType::F32, _) => ArgValue::F32(0.5),
                    (_, "tasks") => ArgValue::I32(tasks),
                    (_, "param_stride") => ArgValue::I32(12),
                    (_, "w_off" | "b_off" | "step") => ArgValue::I32(0),
                    (_, "act" | "want_dinput" | "has_rh_in" | "has_prev") => ArgValue::I32(1),
                    (crate::ParamType::I32 | crate::ParamType::U32, _) => ArgValue::I32(3),
                    (ty, _) => ArgValue::Buffer { ty, len: Some(1 << 16) },
                })
                .collect()
        };
        for k in KernelId::ALL {
            let (one, two) = (cost(k, &args(k, 1)), cost(k, &args(k, 2)));
            let (one, two) = (one.expect("valid"), two.expect("valid"));
            assert!(one.bytes > 0 && one.flops > 0, "{k:?}: {one:?}");
            if matches!(
                k,
                KernelId::ActivationForward
                    | KernelId::ActivationBackward
                    | KernelId::VectorAxpy
                    | KernelId::VectorScale
            ) {
                assert_eq!(one, two, "{k:?} has no task count");
            } else {
                assert!(two.bytes > one.bytes && two.flops > one.flops, "{k:?}: {one:?} vs {two:?}");
            }
        }
    }
}
