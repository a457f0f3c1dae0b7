//! What every launch does on the host before it reaches a device — the arguments' values
//! (`runtime::arg_values`), the default launch shape and the contract check — allocates
//! nothing: the GPU runtime's launch path (`CudaRuntime::launch`) is these plus marshalling
//! on the stack and `cuLaunchKernel`. A counting global allocator (per thread) measures it.
// A global allocator is an `unsafe impl`; it only counts and forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use metasched_cuda::runtime::arg_values;
use metasched_cuda::{Arg, EmuRuntime, KernelId, Runtime};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to `System`; the counter is a const-initialised
// thread-local `Cell` (no allocation, no destructor), so counting cannot recurse.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// Checks `kernel` with `args` 100 times as a launch does; returns the allocations made.
fn allocations_of_checks(kernel: KernelId, args: &[Arg<'_, EmuRuntime>]) -> usize {
    let before = allocations();
    for _ in 0..100 {
        let (values, n) = arg_values(kernel, args).expect("argument count");
        let config = kernel.default_config(&values[..n]).expect("default config");
        kernel.check(&config, &values[..n]).expect("valid launch");
    }
    allocations() - before
}

#[test]
fn checking_a_launch_allocates_nothing() {
    let before = allocations();
    std::hint::black_box(Vec::<u8>::with_capacity(8));
    assert_eq!(allocations() - before, 1, "the counter sees an allocation");
    let rt = EmuRuntime::new();
    let (b, p, g, big) = (3usize, 61usize, 6usize, 4096usize);
    let f = |n: usize| rt.alloc::<f32>(n).expect("alloc");
    let (x, y, z, w) = (f(big), f(big), f(big), f(big));
    let offsets = rt.upload(&[0i32, 10, 20, 30, 40, 50, 61]).expect("upload");
    let sgd = [
        Arg::buf(&x),
        Arg::buf(&y),
        Arg::buf(&z),
        Arg::buf_at(&w, 7),
        Arg::buf(&offsets),
        Arg::int(b),
        Arg::int(p),
        Arg::int(g),
    ];
    assert_eq!(allocations_of_checks(KernelId::SgdUpdateForward, &sgd), 0, "sgd_update_forward");
    let sum = [Arg::buf(&x), Arg::buf(&y), Arg::int(b), Arg::int(p)];
    assert_eq!(allocations_of_checks(KernelId::TaskSum, &sum), 0, "task_sum");
    // The kernel with the most parameters (19): tasks, rows, din, dout, stride, w_off, b_off.
    let (rows, din, dout) = (5usize, 4usize, 6usize);
    let rop_backward = [
        Arg::buf(&x),
        Arg::buf(&y),
        Arg::buf(&z),
        Arg::buf(&w),
        Arg::buf(&x),
        Arg::buf(&y),
        Arg::buf(&z),
        Arg::buf(&w),
        Arg::buf(&x),
        Arg::buf(&y),
        Arg::int(b),
        Arg::int(rows),
        Arg::int(din),
        Arg::int(dout),
        Arg::int(din * dout + dout),
        Arg::int(0),
        Arg::int(din * dout),
        Arg::I32(2),
        Arg::flag(true),
    ];
    assert_eq!(allocations_of_checks(KernelId::LinearRopBackward, &rop_backward), 0, "linear_rop_backward");
}
