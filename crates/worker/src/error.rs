//! Errors of a worker's reduction group (computing errors are [`metasched_compute::ComputeError`]).

/// What a worker's collective can fail with; each message is one line naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A kernel launch, copy or allocation failed on the device (emulated or real), or the
    /// collective's transport failed.
    #[error("device: {0}")]
    Device(#[from] metasched_cuda::CudaError),
    /// The collective (NCCL, or its TCP stand-in) failed or was aborted.
    #[error("collective: {0}")]
    Collective(#[from] metasched_collective::CollectiveError),
}

/// Result alias of the worker crate.
pub type Result<T> = std::result::Result<T, WorkerError>;
