//! One check per kernel (feature `checks`): each entry of [`KernelId::ALL`] run on small
//! random inputs on any [`Runtime`] and compared elementwise with its CPU twin in
//! `metasched_engine`, with the worst deviation reported.
//!
//! The emulator's tests (`crates/cuda/tests/`, once per thread schedule), `meta-worker
//! selftest --device emu|cuda:N` and the GPU tests all run these same checks, so a kernel is
//! held to one definition of "correct" everywhere; the coordinator needs none of it, hence
//! the feature. A check passes when every compared value satisfies
//! `|got − want| ≤ atol + rtol·|want|` (NaN never passes) with the tolerance of
//! [`tolerance`]; inputs come from [`randn`] and friends, so every run sees the same data.
//!
//! Each kernel's check (its inputs, its CPU reference with the kernel's argument order,
//! outputs first, and what it compares) lives beside its contract and cost in its family's
//! module (`crate::kernels::mlp`, ...); the alloc/upload/launch/download sequence they share
//! is written once, in [`harness`]. Outputs that a kernel only writes are pre-filled with
//! other values, and gradient buffers that a kernel accumulates into start non-zero, so a
//! kernel that skips an element, writes outside its range or overwrites instead of adding
//! fails.

mod comparison;
pub(crate) mod harness;
mod inputs;
mod meta_gradient;

pub use comparison::{ATOL, Check, Comparison, REL_FLOOR, RTOL, Tolerance};
pub use inputs::{labels, randn, uniform};
pub use meta_gradient::meta_gradient_tensors;

use crate::kernels::{Family, KernelId, loss, lstm_cell, mlp, scheduler, sgd_update};
use crate::runtime::Runtime;

pub use crate::kernels::sgd_update::SGD_DA_ATOL;

/// The tolerance of `kernel`'s check: [`Tolerance::DEFAULT`] except `sgd_update_backward`
/// (atol [`SGD_DA_ATOL`], see there).
pub fn tolerance(kernel: KernelId) -> Tolerance {
    match kernel {
        KernelId::SgdUpdateBackward => Tolerance { atol: SGD_DA_ATOL, rtol: RTOL },
        _ => Tolerance::DEFAULT,
    }
}

/// Runs the check of `kernel` on `rt`: launches it on the check's inputs (several shapes, and
/// for some kernels several activations, flags or block sizes) and compares every output with
/// the CPU twin. A launch or setup error makes a failing check, never a panic.
pub fn check<R: Runtime>(rt: &R, kernel: KernelId) -> Check {
    let tol = tolerance(kernel);
    let mut cmp = Comparison::new(kernel.name(), tol);
    let ran = match kernel.family() {
        Family::LstmCell => lstm_cell::check(rt, kernel, &mut cmp),
        Family::SgdUpdate => sgd_update::check(rt, kernel, &mut cmp),
        Family::Mlp => mlp::check(rt, kernel, &mut cmp),
        Family::Loss => loss::check(rt, kernel, &mut cmp),
        Family::Scheduler => scheduler::check(rt, kernel, &mut cmp),
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

#[cfg(test)]
mod tests;
