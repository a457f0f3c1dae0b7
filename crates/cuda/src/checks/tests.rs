//! The checks checked: every kernel passes on the emulator, the comparison reports the worst
//! value, and a sabotaged emulator (launches skipped, inputs corrupted) fails every check.

use super::*;
use crate::emu::{EmuBuffer, EmuRuntime, Schedule};
use crate::error::Result;
use crate::runtime::{Arg, Element, LaunchConfig};

#[test]
fn every_kernel_has_one_passing_check_on_the_emulator() {
    let checks = all_kernel_checks(&EmuRuntime::new());
    assert_eq!(checks.len(), KernelId::ALL.len());
    for (k, c) in KernelId::ALL.iter().zip(&checks) {
        assert_eq!(c.name, k.name(), "one row per kernel, in KernelId::ALL order");
        assert!(
            c.pass,
            "{}: {} (worst {} = {} vs {})",
            c.name,
            c.note,
            c.worst_element(),
            c.worst_got,
            c.worst_want
        );
        assert!(c.values > 0 && c.worst_index.is_some(), "{}: nothing compared", c.name);
        assert!(c.worst_used <= 1.0 && c.worst_abs.is_finite(), "{c:?}");
        eprintln!(
            "{:<36} {:>8} values  worst abs {:.3e} rel {:.3e} ({:.3} of tolerance) at {}",
            c.name,
            c.values,
            c.worst_abs,
            c.worst_rel,
            c.worst_used,
            c.worst_element()
        );
    }
}

#[test]
fn scheduler_kernels_pass_under_every_schedule() {
    // The other families run under these schedules in their test files (crates/cuda/tests/).
    for schedule in [Schedule::Reverse, Schedule::Shuffled { seed: 0x5eed }] {
        let rt = EmuRuntime::new().with_schedule(schedule).with_workers(1);
        for c in family_checks(&rt, "scheduler.cu") {
            assert!(c.pass, "{} under {schedule:?}: {}", c.name, c.note);
        }
    }
}

#[test]
fn comparison_reports_the_worst_value_and_fails_past_the_tolerance() {
    let mut c = Comparison::new("t", Tolerance::DEFAULT);
    c.add("a", &[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
    let ok = c.clone().finish();
    assert!(ok.pass && ok.worst_abs == 0.0 && ok.values == 3);
    c.add("b", &[0.0, 10.002], &[0.0, 10.0]); // 2e-3 > 1e-5 + 1e-4·10
    let bad = c.finish();
    assert!(!bad.pass, "{bad:?}");
    assert_eq!((bad.worst_at.as_str(), bad.worst_index), ("b", Some(1)));
    assert!((bad.worst_abs - 2e-3).abs() < 1e-5 && bad.worst_used > 1.0, "{bad:?}");
    assert!(bad.note.starts_with("b[1]"), "{}", bad.note);

    let mut c = Comparison::new("nan", Tolerance::DEFAULT);
    c.add("x", &[f32::NAN], &[0.0]);
    let nan = c.finish();
    assert!(!nan.pass && nan.worst_abs.is_nan());

    let mut c = Comparison::new("len", Tolerance::DEFAULT);
    c.add("x", &[0.0], &[0.0, 0.0]);
    assert!(!c.finish().pass);
    assert!(!Check::failed("e", Tolerance::DEFAULT, "boom").pass);
}

/// How [`Sabotaged`] breaks the emulator.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Launches are validated, then not run.
    SkipLaunches,
    /// The first value of the n-th uploaded `f32` array is increased by n (different
    /// amounts, so that corrupting two operands alike cannot cancel out).
    CorruptUploads,
}

/// The emulator with a fault: every check must notice it.
struct Sabotaged {
    inner: EmuRuntime,
    fault: Fault,
    uploads: std::cell::Cell<u32>,
}

impl Runtime for Sabotaged {
    type Buffer<T: Element> = EmuBuffer<T>;
    type Graph = ();

    fn device_name(&self) -> String {
        format!("sabotaged emulator ({:?})", self.fault)
    }

    fn alloc<T: Element>(&self, len: usize) -> Result<EmuBuffer<T>> {
        self.inner.alloc(len)
    }

    fn copy_in<T: Element>(&self, dst: &mut EmuBuffer<T>, src: &[T]) -> Result<()> {
        let mut data = src.to_vec();
        if let Fault::CorruptUploads = self.fault
            && let Some(v) = (&mut data as &mut dyn std::any::Any).downcast_mut::<Vec<f32>>()
            && let Some(first) = v.first_mut()
        {
            self.uploads.set(self.uploads.get() + 1);
            *first += self.uploads.get() as f32;
        }
        self.inner.copy_in(dst, &data)
    }

    fn copy_out<T: Element>(&self, src: &EmuBuffer<T>, dst: &mut [T]) -> Result<()> {
        self.inner.copy_out(src, dst)
    }

    fn launch(&self, kernel: KernelId, config: &LaunchConfig, args: &[Arg<'_, Self>]) -> Result<()> {
        let values: Vec<_> = args.iter().map(Arg::value).collect();
        kernel.check(config, &values)?;
        if let Fault::SkipLaunches = self.fault {
            return Ok(());
        }
        let args: Vec<Arg<'_, EmuRuntime>> = args
            .iter()
            .map(|a| match *a {
                Arg::F32(v) => Arg::F32(v),
                Arg::I32(v) => Arg::I32(v),
                Arg::U32(v) => Arg::U32(v),
                Arg::BufF32(b, o) => Arg::BufF32(b, o),
                Arg::BufI32(b, o) => Arg::BufI32(b, o),
                Arg::BufU32(b, o) => Arg::BufU32(b, o),
            })
            .collect();
        self.inner.launch(kernel, config, &args)
    }

    fn copy_device<T: Element>(
        &self,
        dst: &mut EmuBuffer<T>,
        dst_offset: usize,
        src: &EmuBuffer<T>,
        src_range: std::ops::Range<usize>,
    ) -> Result<()> {
        self.inner.copy_device(dst, dst_offset, src, src_range)
    }

    fn zero<T: Element>(&self, buf: &mut EmuBuffer<T>, range: std::ops::Range<usize>) -> Result<()> {
        self.inner.zero(buf, range)
    }

    fn counters(&self) -> crate::Counters {
        self.inner.counters()
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

#[test]
fn every_check_fails_when_the_kernel_does_not_run_or_sees_other_inputs() {
    for fault in [Fault::SkipLaunches, Fault::CorruptUploads] {
        let rt = Sabotaged { inner: EmuRuntime::new(), fault, uploads: Default::default() };
        for c in all_kernel_checks(&rt) {
            assert!(!c.pass, "{} passed on {}", c.name, rt.device_name());
            assert!(c.worst_used > 1.0 && !c.note.is_empty(), "{c:?}");
        }
    }
}
