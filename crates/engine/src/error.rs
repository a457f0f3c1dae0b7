//! Errors of the engine: invalid configurations and inputs that do not fit them.

/// Everything the engine can refuse. Each variant names the field or tensor at fault so a
/// command-line front end can print one clear line.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A configuration field holds a value the algorithm cannot run with.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig {
        /// Dotted path of the field, e.g. `scheduler.lr_max`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor does not have the shape the configuration implies.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Tensor name in checkpoint spelling.
        name: String,
        /// Shape found.
        got: Vec<usize>,
        /// Shape the config requires.
        expected: Vec<usize>,
    },
    /// A tensor the scheduler kind needs is absent.
    #[error("missing tensor `{name}` (required by {why})")]
    MissingTensor {
        /// Tensor name in checkpoint spelling.
        name: String,
        /// What requires it.
        why: String,
    },
    /// A tensor name that no configuration defines.
    #[error("unknown tensor `{name}`")]
    UnknownTensor {
        /// Tensor name in checkpoint spelling.
        name: String,
    },
    /// Task data that cannot be used (empty sets, non-finite values, labels out of range).
    #[error("invalid task data `{name}`: {reason}")]
    InvalidTaskData {
        /// Tensor name in task-file spelling, e.g. `support.x`.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The worker thread pool could not be built.
    #[error("cannot start the thread pool: {0}")]
    ThreadPool(String),
}

impl EngineError {
    /// Whether the user can fix this (a configuration or tensor that does not fit) rather than
    /// it being an internal failure (no thread pool), so command-line front ends choose their
    /// exit code from the error itself.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::ThreadPool(_))
    }
}

/// Result alias of the engine crate.
pub type Result<T> = std::result::Result<T, EngineError>;
