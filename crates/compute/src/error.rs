//! Errors of computing on a device: the engine, the task families, the device itself.

/// What computing a part of a meta-step can fail with; each message is one line naming the
/// cause.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The engine refused the inputs.
    #[error(transparent)]
    Engine(#[from] metasched_engine::EngineError),
    /// The task family could not produce tasks.
    #[error(transparent)]
    Tasks(#[from] metasched_tasks::TaskError),
    /// A task specification that cannot be used with the model.
    #[error("invalid task specification: {0}")]
    BadSpec(String),
    /// A kernel launch, copy or allocation failed on the device (emulated or real).
    #[error("device: {0}")]
    Device(#[from] metasched_cuda::CudaError),
    /// The requested device cannot be opened here (no driver, no such device); one line.
    #[error("{0}")]
    DeviceUnavailable(String),
    /// The device cannot run this configuration (e.g. an inner optimiser the CUDA kernels do
    /// not implement); one line saying which device would.
    #[error("{0}")]
    Unsupported(String),
}

impl ComputeError {
    /// Whether the user can fix this (a bad input, a device this machine lacks) rather than it
    /// being an internal failure, so command-line front ends choose their exit code from the
    /// error itself instead of matching on this crate's variants.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Engine(e) => e.is_bad_input(),
            Self::Tasks(e) => e.is_bad_input(),
            Self::BadSpec(_) | Self::DeviceUnavailable(_) | Self::Unsupported(_) => true,
            Self::Device(_) => false,
        }
    }
}

/// Result alias of the compute crate.
pub type Result<T> = std::result::Result<T, ComputeError>;
