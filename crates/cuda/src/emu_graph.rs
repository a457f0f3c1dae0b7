//! [`EmuGraph`]: the emulator's twin of a CUDA graph. While [`crate::EmuRuntime::capture`]
//! runs, launches, zero fills and device copies are recorded here, with the raw pointers and
//! scalar arguments they had, instead of run; [`EmuGraph::run`] replays them in order, as
//! `cuGraphLaunch` does, so CI exercises the capture/replay path (and its failure modes:
//! stale buffers, uploads inside a capture) without a GPU.
//!
//! Replaying raw pointers needs `unsafe`. It is sound because a graph only runs after its
//! [`Footprint`] (every buffer any recorded operation touches) was found among the buffers the
//! caller borrows for the replay, and each recorded pointer range was checked against its
//! buffer's length when it was recorded ([`crate::KernelId::check`], `check_range`).
#![allow(unsafe_code)]

use crate::emu::EmuRuntime;
use crate::error::Result;
use crate::ffi::RecordedLaunch;
use crate::graph::{Footprint, Identified};

/// One recorded operation; addresses are exposed host addresses of emulator buffers.
pub(crate) enum Op {
    /// A kernel launch, arguments included.
    Launch(RecordedLaunch),
    /// `bytes` zero bytes at `at`.
    Zero { at: usize, bytes: usize },
    /// `bytes` bytes from `src` to `dst` (the ranges may be in the same buffer).
    Copy { dst: usize, src: usize, bytes: usize },
}

/// A captured sequence of emulator operations and the buffers they use.
pub struct EmuGraph {
    ops: Vec<Op>,
    footprint: Footprint,
}

impl std::fmt::Debug for EmuGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmuGraph({} operations on {} buffers)", self.ops.len(), self.footprint.len())
    }
}

impl EmuGraph {
    pub(crate) fn new(ops: Vec<Op>, mut footprint: Footprint) -> Self {
        footprint.seal();
        Self { ops, footprint }
    }

    /// How many operations (launches, zero fills, copies) the graph holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the graph holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The buffers the graph uses.
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// Runs every operation in order on `rt`, after checking that `bound` (borrowed, so
    /// alive) holds every buffer of the footprint.
    pub(crate) fn run(&self, rt: &EmuRuntime, bound: &[&dyn Identified]) -> Result<()> {
        self.footprint.check(bound)?;
        for op in &self.ops {
            match op {
                // SAFETY: the recorded pointers lie in buffers of the footprint (checked at
                // capture against the kernel's contract), which `bound` keeps alive; the
                // emulator is the only user of that memory during the call (`EmuBuffer` is
                // not `Sync`, and the caller's borrows are shared).
                Op::Launch(l) => unsafe { l.run(rt)? },
                // SAFETY: `at..at + bytes` was checked inside one footprint buffer when it was
                // recorded; all-zero bytes are a valid f32, i32 and u32.
                Op::Zero { at, bytes } => unsafe {
                    std::ptr::write_bytes(std::ptr::with_exposed_provenance_mut::<u8>(*at), 0, *bytes)
                },
                // SAFETY: both ranges were checked inside footprint buffers when recorded;
                // `copy` allows overlap.
                Op::Copy { dst, src, bytes } => unsafe {
                    std::ptr::copy(
                        std::ptr::with_exposed_provenance::<u8>(*src),
                        std::ptr::with_exposed_provenance_mut::<u8>(*dst),
                        *bytes,
                    )
                },
            }
        }
        Ok(())
    }
}
