//! The interface every collective implements.

use crate::error::Result;

/// One member of a group that sums vectors across its members. Object-safe, so a worker can
/// hold whichever backend its device offers as a `Box<dyn Collective>`.
pub trait Collective {
    /// This member's index in `0..world_size()`.
    fn rank(&self) -> usize;

    /// Members in the group.
    fn world_size(&self) -> usize;

    /// Replaces `data` with the elementwise sum (wrapping, so exact and order-independent) of
    /// every member's `data`. Every member must call it with the same length.
    fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> Result<()>;
}
