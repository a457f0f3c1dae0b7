//! [`EmuRuntime`]: the [`Runtime`] that executes the CUDA kernels on the CPU through the
//! emulator in `kernels/emu/` (each CUDA thread a fiber, blocks spread over a few OS
//! threads). Device memory is host memory; launches are synchronous.

use std::cell::Cell;

use crate::error::{CudaError, Result};
use crate::ffi::CheckedLaunch;
use crate::kernels::KernelId;
use crate::runtime::{Arg, DeviceBuffer, Element, LaunchConfig, Runtime};

/// In which order the emulator resumes the threads of a block at every step (and hands
/// blocks to its workers). Correct kernels give the same results under every order; a
/// kernel that depends on one (a missing barrier, a race on shared memory) shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Schedule {
    /// Threads 0, 1, ..., n−1.
    #[default]
    Forward,
    /// Threads n−1, ..., 0.
    Reverse,
    /// A fresh pseudo-random permutation every round, from `seed`.
    Shuffled {
        /// Seed of the permutations.
        seed: u64,
    },
}

/// A device buffer of the emulator: host memory the kernels read and write in place.
///
/// The elements live in `Cell`s, so the emulator may write them while the buffer is borrowed
/// shared (as a launch argument); the type is not `Sync`, so no other thread can read them
/// meanwhile.
pub struct EmuBuffer<T> {
    cells: Box<[Cell<T>]>,
}

impl<T> std::fmt::Debug for EmuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmuBuffer<{}>[{}]", std::any::type_name::<T>(), self.cells.len())
    }
}

impl<T: Element> EmuBuffer<T> {
    fn zeroed(len: usize) -> Self {
        Self { cells: (0..len).map(|_| Cell::new(T::default())).collect() }
    }

    /// Pointer to the first element, for the emulator (`Cell<T>` has `T`'s layout).
    pub(crate) fn base_ptr(&self) -> *mut T {
        self.cells.as_ptr().cast::<T>().cast_mut()
    }

    pub(crate) fn cells_len(&self) -> usize {
        self.cells.len()
    }
}

impl<T: Element> DeviceBuffer<T> for EmuBuffer<T> {
    fn len(&self) -> usize {
        self.cells.len()
    }
}

/// The CPU emulator as a [`Runtime`].
#[derive(Debug, Clone, Default)]
pub struct EmuRuntime {
    schedule: Schedule,
    workers: u32,
    stack_bytes: u64,
}

impl EmuRuntime {
    /// An emulator with the default schedule ([`Schedule::Forward`]), automatic worker count
    /// and 64 KiB fiber stacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same emulator with another thread schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The same emulator running blocks on `workers` OS threads (0: automatic, 2 to 8).
    pub fn with_workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// The same emulator with fiber stacks of `bytes` (0: 64 KiB).
    pub fn with_stack_bytes(mut self, bytes: u64) -> Self {
        self.stack_bytes = bytes;
        self
    }

    /// The thread schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Worker threads per launch (0: automatic).
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Bytes of stack per fiber (0: default).
    pub fn stack_bytes(&self) -> u64 {
        self.stack_bytes
    }

    /// Entry points compiled into the emulator (the kernels of `kernels/*.cu`, plus the test
    /// fixtures in test binaries).
    pub fn registered_kernels() -> Vec<String> {
        crate::ffi::registered_kernels()
    }

    /// The emulator's parameter signature (one [`crate::ParamType::code`] letter per
    /// parameter) of a registered kernel.
    pub fn registered_signature(name: &str) -> Option<String> {
        crate::ffi::registered_signature(name)
    }
}

fn same_len(buffer: usize, host: usize) -> Result<()> {
    if buffer == host { Ok(()) } else { Err(CudaError::LengthMismatch { buffer, host }) }
}

impl Runtime for EmuRuntime {
    type Buffer<T: Element> = EmuBuffer<T>;

    fn device_name(&self) -> String {
        format!("CPU emulator ({:?} schedule)", self.schedule)
    }

    fn alloc<T: Element>(&self, len: usize) -> Result<EmuBuffer<T>> {
        Ok(EmuBuffer::zeroed(len))
    }

    fn copy_in<T: Element>(&self, dst: &mut EmuBuffer<T>, src: &[T]) -> Result<()> {
        same_len(dst.cells.len(), src.len())?;
        for (c, &v) in dst.cells.iter().zip(src) {
            c.set(v);
        }
        Ok(())
    }

    fn copy_out<T: Element>(&self, src: &EmuBuffer<T>, dst: &mut [T]) -> Result<()> {
        same_len(src.cells.len(), dst.len())?;
        for (d, c) in dst.iter_mut().zip(src.cells.iter()) {
            *d = c.get();
        }
        Ok(())
    }

    fn launch(&self, kernel: KernelId, config: &LaunchConfig, args: &[Arg<'_, Self>]) -> Result<()> {
        CheckedLaunch::new(kernel, config, args)?.run(self)
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
