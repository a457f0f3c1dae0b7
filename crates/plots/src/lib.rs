//! PNG plots of metasched training runs.
//!
//! * [`plot_lr_schedule`]: the learned learning rate of every parameter group (layer tensor)
//!   over the inner steps, optionally with a (min, max) band.
//! * [`plot_meta_loss`]: the meta-loss over meta-training on a log scale, with a moving
//!   average and optional periodic-evaluation points with 95% confidence intervals.
//!
//! Rendering is pure Rust: plotters' bitmap backend, PNG encoding through plotters'
//! `bitmap_encoder` feature (the `image`/`png` crates, no system libraries) and text through
//! plotters' `ab_glyph` feature with the DejaVu Sans font embedded in the binary (see
//! `fonts/LICENSE-DejaVu.txt`), so no system fonts or fontconfig are needed.
//!
//! Every plot is [`WIDTH`] × [`HEIGHT`] pixels and is written atomically: the image is
//! rendered in memory, encoded to a hidden temporary file in the destination directory, synced
//! and renamed over `path`. On error the temporary file is removed and `path` is untouched.
//!
//! Degenerate input never panics: empty series produce an empty, labelled chart with a
//! "no data" note; non-finite values (and non-positive ones on the log axis) are skipped;
//! long series are downsampled for drawing (min/max per bucket, so spikes stay visible).
//! Only inconsistent input (mismatched slice lengths) is an error ([`PlotError::InvalidInput`]).

mod error;
mod lr_schedule;
mod meta_loss;
mod render;

pub use error::{PlotError, Result};
pub use lr_schedule::{plot_lr_schedule, plot_step_series};
pub use meta_loss::plot_meta_loss;

/// Width in pixels of every plot written by this crate.
pub const WIDTH: u32 = 900;
/// Height in pixels of every plot written by this crate.
pub const HEIGHT: u32 = 600;
