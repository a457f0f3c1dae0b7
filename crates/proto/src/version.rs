//! The protocol's version and size bound.

/// Version of the wire protocol, sent in [`crate::ToCoord::Hello`].
///
/// The coordinator refuses a worker that speaks another version: the messages carry no
/// field names or type tags (see [`crate::codec`]), so two builds with different message
/// shapes would misread each other instead of failing cleanly. Bump it on every change of a
/// message's shape, of the codec's encoding or of the framing (the golden-bytes tests in
/// `tests/golden.rs` fail on any such change, as a reminder).
pub const PROTOCOL_VERSION: u32 = 4;

/// Largest frame payload, in bytes, that either side writes or accepts (64 MiB).
///
/// The biggest legitimate messages are [`crate::ToWorker::Work`] with a full
/// [`crate::ParamsBlob`] and [`crate::ToCoord::StepDone`] with a gradient sum: a few bytes per
/// parameter, so 64 MiB leaves room for models of several million parameters. The bound is
/// what makes a hostile or corrupt length prefix harmless: a declared length above it is
/// refused before anything is allocated, and the decoder never preallocates beyond it.
pub const MAX_FRAME_BYTES: usize = 64 << 20;
