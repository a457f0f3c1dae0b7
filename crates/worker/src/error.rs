//! Errors of a worker.

/// What a worker can fail with; each message is one line naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The engine refused the inputs.
    #[error(transparent)]
    Engine(#[from] metasched_engine::EngineError),
    /// The task family could not produce tasks.
    #[error(transparent)]
    Tasks(#[from] metasched_tasks::TaskError),
    /// A task specification that cannot be used.
    #[error("invalid task specification: {0}")]
    BadSpec(String),
    /// A kernel launch, copy or allocation failed on the device (emulated or real).
    #[error("device: {0}")]
    Device(#[from] metasched_cuda::CudaError),
    /// The requested device cannot be opened here (no driver, no such device); one line.
    #[error("{0}")]
    DeviceUnavailable(String),
    /// The collective (NCCL, or its TCP stand-in) failed or was aborted.
    #[error("collective: {0}")]
    Collective(#[from] metasched_collective::CollectiveError),
    /// A job that does not fit the worker's state (e.g. a stale parameter version).
    #[error("invalid job: {0}")]
    BadJob(String),
}

/// Result alias of the worker crate.
pub type Result<T> = std::result::Result<T, WorkerError>;
