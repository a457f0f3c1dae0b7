//! Helpers shared by the kernel tests: random inputs, the emulator schedules every test runs
//! under, and the closeness check.
#![allow(dead_code)]

use metasched_cuda::{EmuRuntime, KernelId, Schedule, checks};

/// Absolute tolerance of the kernel-vs-engine comparisons.
pub const ATOL: f32 = 1e-5;
/// Relative tolerance of the kernel-vs-engine comparisons.
pub const RTOL: f32 = 1e-4;

/// The emulator under every schedule a test runs in: threads resumed in order, in reverse
/// order, and in a seeded random order (with one worker, so the block order is the only
/// other thing that changes).
pub fn runtimes() -> Vec<EmuRuntime> {
    vec![
        EmuRuntime::new().with_schedule(Schedule::Forward),
        EmuRuntime::new().with_schedule(Schedule::Reverse),
        EmuRuntime::new().with_schedule(Schedule::Shuffled { seed: 0x5eed }).with_workers(1),
    ]
}

/// Random inputs from counter-based streams, the same generators the shared kernel checks use.
#[allow(unused_imports)] // each test binary uses a different subset
pub use metasched_cuda::checks::{labels, randn, uniform};

/// Largest deviation found by [`assert_close`].
#[derive(Debug, Clone, Copy)]
pub struct Worst {
    /// Largest `|got − want|`.
    pub abs: f32,
    /// Largest `|got − want| / |want|` among elements with `|want| > 1e-3`.
    pub rel: f32,
    /// Largest `|got − want| / (atol + rtol·|want|)`: the fraction of the tolerance used.
    pub used: f32,
}

/// Asserts `|got − want| ≤ atol + rtol·|want|` elementwise (NaN never passes), printing the
/// worst element on failure; prints and returns the largest deviations on success.
pub fn assert_close(label: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Worst {
    assert_eq!(got.len(), want.len(), "{label}: lengths differ");
    let mut worst_i = None;
    let mut worst_ratio = 0.0f32;
    let mut abs = 0.0f32;
    let mut rel = 0.0f32;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        let ratio = if d.is_nan() { f32::INFINITY } else { d / (atol + rtol * w.abs()) };
        if ratio > worst_ratio || worst_i.is_none() {
            worst_ratio = ratio;
            worst_i = Some(i);
        }
        if d.is_finite() {
            abs = abs.max(d);
            if w.abs() > 1e-3 {
                rel = rel.max(d / w.abs());
            }
        }
    }
    if let Some(i) = worst_i {
        assert!(
            worst_ratio <= 1.0,
            "{label}: element {i} of {}: got {} want {} (|diff| {:e} > atol {atol:e} + rtol {rtol:e}·|want|)",
            got.len(),
            got[i],
            want[i],
            (got[i] - want[i]).abs()
        );
    }
    let w = Worst { abs, rel, used: worst_ratio };
    eprintln!(
        "worst-error {label}: abs {:.3e} rel {:.3e} tolerance-used {:.3} over {} values",
        w.abs,
        w.rel,
        w.used,
        got.len()
    );
    w
}

/// Runs the shared check of `kernel` ([`metasched_cuda::checks`]) on the emulator under
/// every thread schedule; fails with the worst element on a deviation.
pub fn check_under_every_schedule(kernel: KernelId) {
    for rt in runtimes() {
        let c = checks::check(&rt, kernel);
        eprintln!(
            "worst-error {} {:?}: abs {:.3e} rel {:.3e} tolerance-used {:.3} over {} values at {}",
            c.name,
            rt.schedule(),
            c.worst_abs,
            c.worst_rel,
            c.worst_used,
            c.values,
            c.worst_element()
        );
        assert!(c.pass, "{} under {:?}: {}", c.name, rt.schedule(), c.note);
    }
}
