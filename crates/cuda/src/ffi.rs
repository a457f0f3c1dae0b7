//! The boundary to the C++ emulator (`kernels/emu/emu_api.h`): raw declarations, and the
//! launch path that hands it pointers into [`EmuBuffer`]s.
//!
//! This is the one module of the crate allowed to use `unsafe`: calling C functions and
//! letting C++ write through pointers into Rust-owned memory cannot be expressed in safe
//! Rust. Every `unsafe` block is one FFI call (or the read of a string the emulator
//! returned), with the reasons it is sound next to it; the invariant they rely on is that a
//! [`CheckedLaunch`] can only be built after [`KernelId::check`] has verified every buffer
//! argument against the kernel's contract.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};

use crate::emu::{EmuBuffer, EmuRuntime, Schedule};
use crate::error::{CudaError, Result};
use crate::kernels::KernelId;
use crate::runtime::{Arg, Dim3, LaunchConfig};

#[repr(C)]
#[derive(Clone, Copy)]
struct EmuDim3 {
    x: u32,
    y: u32,
    z: u32,
}

#[repr(C)]
struct EmuOptions {
    order: u32,
    workers: u32,
    seed: u64,
    stack_bytes: u64,
}

unsafe extern "C" {
    fn emu_launch(
        kernel_name: *const c_char,
        grid: EmuDim3,
        block: EmuDim3,
        shared_bytes: usize,
        args: *mut *mut c_void,
        nargs: usize,
        signature: *const c_char,
        options: *const EmuOptions,
        err_buf: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn emu_kernel_count() -> usize;
    fn emu_kernel_name(i: usize) -> *const c_char;
    fn emu_kernel_signature(kernel_name: *const c_char) -> *const c_char;
}

const ERR_LEN: usize = 4096;

/// Owned storage for one argument value; `emu_launch` receives a pointer to each.
enum Slot {
    F32(f32),
    I32(i32),
    U32(u32),
    Ptr(*mut c_void),
}

impl Slot {
    fn code(&self, ptr_code: char) -> char {
        match self {
            Slot::F32(_) => 'f',
            Slot::I32(_) => 'i',
            Slot::U32(_) => 'u',
            Slot::Ptr(_) => ptr_code,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut c_void {
        match self {
            Slot::F32(v) => (v as *mut f32).cast(),
            Slot::I32(v) => (v as *mut i32).cast(),
            Slot::U32(v) => (v as *mut u32).cast(),
            Slot::Ptr(p) => (p as *mut *mut c_void).cast(),
        }
    }
}

fn slots<'a>(args: &[Arg<'a, EmuRuntime>]) -> (Vec<Slot>, String) {
    let mut sig = String::with_capacity(args.len());
    let slots = args
        .iter()
        .map(|a| {
            let (slot, ptr_code) = match *a {
                Arg::F32(v) => (Slot::F32(v), 'F'),
                Arg::I32(v) => (Slot::I32(v), 'I'),
                Arg::U32(v) => (Slot::U32(v), 'U'),
                Arg::BufF32(b, o) => (Slot::Ptr(element_ptr(b, o)), 'F'),
                Arg::BufI32(b, o) => (Slot::Ptr(element_ptr(b, o)), 'I'),
                Arg::BufU32(b, o) => (Slot::Ptr(element_ptr(b, o)), 'U'),
            };
            sig.push(slot.code(ptr_code));
            slot
        })
        .collect();
    (slots, sig)
}

/// Pointer to element `offset` of `buf` (or one past its end), computed without `unsafe`
/// (`wrapping_add`); launches only get here after the offset was checked against the length.
fn element_ptr<T: crate::runtime::Element>(buf: &EmuBuffer<T>, offset: usize) -> *mut c_void {
    buf.base_ptr().wrapping_add(offset.min(buf.cells_len())).cast()
}

/// A launch whose arguments have passed [`KernelId::check`]; only [`CheckedLaunch::new`]
/// builds one.
pub(crate) struct CheckedLaunch<'r, 'a> {
    name: &'static str,
    config: LaunchConfig,
    args: &'r [Arg<'a, EmuRuntime>],
}

impl<'r, 'a> CheckedLaunch<'r, 'a> {
    /// Validates `args` and `config` against `kernel`'s contract.
    pub(crate) fn new(
        kernel: KernelId,
        config: &LaunchConfig,
        args: &'r [Arg<'a, EmuRuntime>],
    ) -> Result<Self> {
        let (values, n) = crate::runtime::arg_values(kernel, args)?;
        kernel.check(config, &values[..n])?;
        Ok(Self { name: kernel.entry_point(), config: *config, args })
    }

    /// Runs the launch to completion on `rt`'s emulator.
    pub(crate) fn run(self, rt: &EmuRuntime) -> Result<()> {
        let name = CString::new(self.name).map_err(|e| CudaError::UnknownKernel(e.to_string()))?;
        // SAFETY: the arguments were checked against the kernel's contract in `new`: every
        // buffer holds at least the elements the kernel reads or writes for the scalar
        // arguments passed, and the launch shape is one the kernel supports. The buffers are
        // borrowed for the duration of this call, their storage is `Cell`s (writes through a
        // shared reference are allowed) and `EmuBuffer` is not `Sync`, so no other thread
        // touches them while the emulator runs.
        unsafe { launch_raw(rt, &name, &self.config, self.args) }
    }

    /// The launch as a graph records it ([`crate::emu_graph`]): name, shape, and every
    /// argument by value, buffer arguments as exposed addresses.
    pub(crate) fn record(self) -> Result<RecordedLaunch> {
        let name = CString::new(self.name).map_err(|e| CudaError::UnknownKernel(e.to_string()))?;
        let (storage, sig) = slots(self.args);
        let sig = CString::new(sig).map_err(|e| CudaError::Signature(e.to_string()))?;
        let values = storage
            .into_iter()
            .map(|s| match s {
                Slot::F32(v) => Recorded::F32(v),
                Slot::I32(v) => Recorded::I32(v),
                Slot::U32(v) => Recorded::U32(v),
                Slot::Ptr(p) => Recorded::Ptr(p.expose_provenance()),
            })
            .collect();
        Ok(RecordedLaunch { name, config: self.config, values, sig })
    }
}

/// One argument of a recorded launch (an address instead of a pointer, so that a graph is
/// `Send` like the runtime).
enum Recorded {
    F32(f32),
    I32(i32),
    U32(u32),
    Ptr(usize),
}

/// A checked launch kept for replay by an emulator graph.
pub(crate) struct RecordedLaunch {
    name: CString,
    config: LaunchConfig,
    values: Vec<Recorded>,
    sig: CString,
}

impl RecordedLaunch {
    /// Runs the recorded launch on `rt`'s emulator.
    ///
    /// # Safety
    /// The buffers the recorded addresses point into must still be alive (the caller checked
    /// the graph's footprint against buffers it borrows) and not in use elsewhere.
    pub(crate) unsafe fn run(&self, rt: &EmuRuntime) -> Result<()> {
        let storage = self
            .values
            .iter()
            .map(|v| match *v {
                Recorded::F32(x) => Slot::F32(x),
                Recorded::I32(x) => Slot::I32(x),
                Recorded::U32(x) => Slot::U32(x),
                Recorded::Ptr(a) => Slot::Ptr(std::ptr::with_exposed_provenance_mut(a)),
            })
            .collect();
        // SAFETY: the arguments were checked against the kernel's contract when recorded, and
        // the caller guarantees the buffers are still those (alive, same lengths).
        unsafe { launch_slots(rt, &self.name, &self.config, storage, &self.sig) }
    }
}

/// # Safety
/// Every pointer argument must be valid for all reads and writes the kernel does for the
/// given scalar arguments and launch shape.
unsafe fn launch_raw(
    rt: &EmuRuntime,
    name: &CStr,
    config: &LaunchConfig,
    args: &[Arg<'_, EmuRuntime>],
) -> Result<()> {
    let (storage, sig) = slots(args);
    let sig = CString::new(sig).map_err(|e| CudaError::Signature(e.to_string()))?;
    // SAFETY: this function's contract.
    unsafe { launch_slots(rt, name, config, storage, &sig) }
}

/// # Safety
/// As [`launch_raw`]: every pointer in `storage` must be valid for all reads and writes the
/// kernel does.
unsafe fn launch_slots(
    rt: &EmuRuntime,
    name: &CStr,
    config: &LaunchConfig,
    mut storage: Vec<Slot>,
    sig: &CStr,
) -> Result<()> {
    let mut ptrs: Vec<*mut c_void> = storage.iter_mut().map(Slot::as_mut_ptr).collect();
    let (order, seed) = match rt.schedule() {
        Schedule::Forward => (0, 0),
        Schedule::Reverse => (1, 0),
        Schedule::Shuffled { seed } => (2, seed),
    };
    let options = EmuOptions { order, workers: rt.workers(), seed, stack_bytes: rt.stack_bytes() };
    let dim = |d: Dim3| EmuDim3 { x: d.x, y: d.y, z: d.z };
    let mut err = vec![0 as c_char; ERR_LEN];
    // SAFETY: all pointers passed are valid for the call: `name` and `sig` are NUL-terminated
    // strings, `ptrs` holds one pointer per argument into `storage` (alive until the end of
    // this function), `options` and `err` (with its true length) are live locals. The buffer
    // pointers inside the argument values are valid for the kernel by this function's
    // contract. `emu_launch` is reentrant and returns only when the launch has finished.
    let code = unsafe {
        emu_launch(
            name.as_ptr(),
            dim(config.grid),
            dim(config.block),
            config.shared_bytes,
            ptrs.as_mut_ptr(),
            ptrs.len(),
            sig.as_ptr(),
            &options,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    drop(storage);
    if code == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = err.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    let msg = String::from_utf8_lossy(&bytes).into_owned();
    Err(match code {
        1 => CudaError::UnknownKernel(msg),
        2 => CudaError::Signature(msg),
        3 => CudaError::InvalidLaunch { kernel: name.to_string_lossy().into_owned(), reason: msg },
        4 => CudaError::DivergentBarrier(msg),
        5 => CudaError::ExitedLane(msg),
        6 => CudaError::Deadlock(msg),
        7 => CudaError::SharedMemory(msg),
        8 => CudaError::WarpUsage(msg),
        9 => CudaError::Trap(msg),
        _ => CudaError::Runtime(msg),
    })
}

impl EmuRuntime {
    /// Launches any kernel registered in the emulator by entry-point name (including the test
    /// fixtures of `kernels/fixtures/`, linked into this crate's test binaries), checking only
    /// the argument types against the kernel's C signature.
    ///
    /// # Safety
    /// No contract is checked: every buffer must be long enough for all elements the kernel
    /// reads or writes with these scalar arguments and this launch shape.
    pub unsafe fn launch_unchecked(
        &self,
        name: &str,
        config: &LaunchConfig,
        args: &[Arg<'_, Self>],
    ) -> Result<()> {
        for a in args {
            if matches!(a.value(), crate::kernels::ArgValue::Buffer { len: None, .. }) {
                return Err(CudaError::InvalidArgument {
                    kernel: name.to_string(),
                    reason: "buffer offset past the end".to_string(),
                });
            }
        }
        let name = CString::new(name).map_err(|e| CudaError::UnknownKernel(e.to_string()))?;
        // SAFETY: the caller guarantees the buffers are long enough (this function's contract).
        unsafe { launch_raw(self, &name, config, args) }
    }
}

/// Entry points registered in the emulator, in registry order.
pub(crate) fn registered_kernels() -> Vec<String> {
    // SAFETY: `emu_kernel_count` takes no arguments and only reads the registry.
    let n = unsafe { emu_kernel_count() };
    (0..n)
        .filter_map(|i| {
            // SAFETY: `i < emu_kernel_count()`; the result is null or a NUL-terminated string
            // with static lifetime (the registry is never freed).
            let p = unsafe { emu_kernel_name(i) };
            // SAFETY: checked non-null; static NUL-terminated string as above.
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        })
        .collect()
}

/// The emulator's parameter signature of a registered kernel.
pub(crate) fn registered_signature(name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    // SAFETY: `name` is a live NUL-terminated string; the result is null or a static
    // NUL-terminated string owned by the registry.
    let p = unsafe { emu_kernel_signature(name.as_ptr()) };
    // SAFETY: checked non-null; static NUL-terminated string as above.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}
