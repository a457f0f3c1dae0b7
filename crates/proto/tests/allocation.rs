//! Hostile lengths do not make the reader allocate: the largest single allocation while
//! reading hostile input is measured with a counting global allocator.
//!
//! This test binary holds one test only, so that no other test allocates concurrently while
//! the measurement is on.

// The counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use metasched_proto::{MAX_FRAME_BYTES, ProtoError, ToWorker, decode, read_msg};

struct Counting;

static MEASURING: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if MEASURING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if MEASURING.load(Ordering::Relaxed) {
            LARGEST.fetch_max(new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::SeqCst);
    MEASURING.store(true, Ordering::SeqCst);
    let out = f();
    MEASURING.store(false, Ordering::SeqCst);
    (out, LARGEST.load(Ordering::SeqCst))
}

const ONE_MIB: usize = 1 << 20;

#[test]
fn hostile_lengths_allocate_almost_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");

    // A prefix of 4 GiB - 1: refused from the prefix alone.
    let prefix = u32::MAX.to_le_bytes();
    let (res, largest) = largest_allocation(|| {
        rt.block_on(async {
            let mut r = &prefix[..];
            read_msg::<_, ToWorker>(&mut r, MAX_FRAME_BYTES).await
        })
    });
    assert!(matches!(res, Err(ProtoError::FrameTooLarge { .. })), "{res:?}");
    assert!(largest < ONE_MIB, "allocated {largest} bytes for a refused prefix");

    // A prefix just under the maximum (accepted), then only 10 bytes: the buffer grows with
    // what arrives, it is not sized by the prefix.
    let mut input = ((MAX_FRAME_BYTES - 1) as u32).to_le_bytes().to_vec();
    input.extend_from_slice(&[0; 10]);
    let (res, largest) = largest_allocation(|| {
        rt.block_on(async {
            let mut r = &input[..];
            read_msg::<_, ToWorker>(&mut r, MAX_FRAME_BYTES).await
        })
    });
    assert!(matches!(res, Err(ProtoError::Truncated)), "{res:?}");
    assert!(largest < ONE_MIB, "allocated {largest} bytes for a 10-byte payload");

    // A short payload declaring a 60 MiB string.
    let mut payload = vec![0x02, 0xfc];
    payload.extend_from_slice(&(60u32 << 20).to_le_bytes());
    let (res, largest) = largest_allocation(|| decode::<ToWorker>(&payload));
    assert!(matches!(res, Err(ProtoError::Decode(_))), "{res:?}");
    assert!(largest < ONE_MIB, "allocated {largest} bytes for a hostile string length");

    // A short payload declaring a billion parameters: serde preallocates at most 1 MiB.
    // Work { job_id 0, MetaGrad { 0, 0, 0, 1 }, Some(ParamsBlob { version 0, values: 2^30 × f32 }) }
    let mut payload = vec![0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0xfc];
    payload.extend_from_slice(&(1u32 << 30).to_le_bytes());
    payload.extend_from_slice(&1.0f32.to_le_bytes());
    let (res, largest) = largest_allocation(|| decode::<ToWorker>(&payload));
    assert!(matches!(res, Err(ProtoError::Decode(_))), "{res:?}");
    assert!(largest <= ONE_MIB, "allocated {largest} bytes for a hostile sequence length");
}
