//! The error type of this crate.

use std::path::PathBuf;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The input data is inconsistent (for example `rates.len() != steps * group_names.len()`),
    /// or the output path cannot name a file.
    #[error("invalid plot input: {0}")]
    InvalidInput(String),
    /// The font embedded in this crate could not be parsed or registered with plotters.
    #[error("the embedded font could not be registered with plotters")]
    Font,
    /// Plotters failed while rendering or encoding the image.
    #[error("drawing failed: {0}")]
    Drawing(String),
    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was about.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl PlotError {
    /// Wraps any plotters error (they all implement `Display`) as [`PlotError::Drawing`].
    pub(crate) fn drawing(err: impl std::fmt::Display) -> Self {
        Self::Drawing(err.to_string())
    }

    /// Builds a [`PlotError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}

/// Result type of this crate.
pub type Result<T, E = PlotError> = std::result::Result<T, E>;
