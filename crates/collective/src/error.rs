//! Errors of a collective, whatever carries it.

/// Why an all-reduce, a join or an id could not be made. Device backends (NCCL) report their
/// failures as [`CollectiveError::Backend`], so callers handle one error type for every
/// collective.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectiveError {
    /// Members passed vectors of different lengths to one all-reduce.
    #[error("all_reduce_sum_i64: members passed different lengths ({0})")]
    LengthMismatch(String),
    /// The TCP collective failed: a lost or refused peer, a deadline, a malformed id.
    #[error("tcp collective: {0}")]
    Tcp(String),
    /// No collective to use: the group is closed or failed, or the device cannot carry the
    /// requested kind.
    #[error("{0}")]
    Unavailable(String),
    /// A device backend (NCCL) failed; `backend` names it.
    #[error("{backend}: {reason}")]
    Backend {
        /// The implementation, e.g. `NCCL`.
        backend: &'static str,
        /// What failed, with the backend's own message.
        reason: String,
    },
}

/// Result of a collective operation.
pub type Result<T, E = CollectiveError> = std::result::Result<T, E>;
