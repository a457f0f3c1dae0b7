//! What a captured graph promises about memory: the [`BufferId`] of every buffer its
//! operations read or write ([`Footprint`]). A graph bakes in raw device pointers, so a replay
//! is only valid while those very buffers are alive and are the ones the caller means;
//! [`crate::Runtime::replay`] takes the buffers by reference and refuses (with
//! [`CudaError::Graph`]) a graph whose footprint is not among them, on every backend.

use crate::error::{CudaError, Result};

/// The identity of a device allocation: its base address and size in bytes. Two live
/// buffers never share one; a freed buffer's address may come back for a new allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId {
    /// Base address (a host address on the emulator, a device address on a GPU).
    pub addr: u64,
    /// Size in bytes.
    pub bytes: u64,
}

pub(crate) mod sealed {
    /// Only this crate's buffers are [`super::Identified`]: the emulator's replay trusts the
    /// identities it is handed to be live buffers it may write.
    pub trait Sealed {}
}

/// A device buffer of any element type, as a replay sees it: only its identity. Every
/// backend's buffers implement it (and nothing else may), so `&[&dyn Identified]` can hold
/// buffers of `f32`, `i32` and `u32` at once.
pub trait Identified: sealed::Sealed {
    /// This buffer's identity.
    fn id(&self) -> BufferId;
}

/// The buffers a captured graph uses, sorted and deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    ids: Vec<BufferId>,
}

impl Footprint {
    /// Adds `id` (during a capture; duplicates are removed by [`Footprint::seal`]).
    pub fn add(&mut self, id: BufferId) {
        self.ids.push(id);
    }

    /// Sorts and deduplicates, once the capture ends.
    pub fn seal(&mut self) {
        self.ids.sort_unstable();
        self.ids.dedup();
    }

    /// How many distinct buffers the graph uses.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the graph uses no buffer.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ok when every buffer of the footprint is one of `bound` (same address, same size);
    /// else a [`CudaError::Graph`] naming how many are missing.
    pub fn check(&self, bound: &[&dyn Identified]) -> Result<()> {
        let mut have: Vec<BufferId> = bound.iter().map(|b| b.id()).collect();
        have.sort_unstable();
        let missing = self.ids.iter().filter(|id| have.binary_search(id).is_err()).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(CudaError::Graph(format!(
                "{missing} of the {} buffers the graph was captured with are not among the {} \
                 handed to the replay (stale pointers): recapture",
                self.ids.len(),
                bound.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(BufferId);
    impl sealed::Sealed for Fake {}
    impl Identified for Fake {
        fn id(&self) -> BufferId {
            self.0
        }
    }

    #[test]
    fn a_footprint_accepts_its_own_buffers_and_refuses_others() {
        let (a, b, c) = (
            Fake(BufferId { addr: 64, bytes: 16 }),
            Fake(BufferId { addr: 128, bytes: 16 }),
            Fake(BufferId { addr: 128, bytes: 32 }),
        );
        let mut f = Footprint::default();
        for id in [a.0, b.0, a.0] {
            f.add(id);
        }
        f.seal();
        assert_eq!(f.len(), 2);
        assert!(f.check(&[&b, &a]).is_ok());
        assert!(f.check(&[&a, &b, &c]).is_ok());
        // Same address, other size: another allocation.
        let e = f.check(&[&a, &c]).expect_err("b is missing");
        assert!(e.to_string().contains("1 of the 2"), "{e}");
    }
}
