//! metasched's wire protocol between `meta-coord` and `meta-worker`.
//!
//! - [`message`] holds the messages ([`ToWorker`], [`ToCoord`]): the contract.
//! - [`codec`] turns messages into bytes and back (the only module that names the
//!   serialisation library, so it can be swapped in one file).
//! - [`frame`] reads and writes length-delimited frames over tokio streams, bounded before
//!   allocation.
//! - [`auth`] holds the shared [`Token`] and the HMAC-SHA256 challenge–response proofs.
//! - [`session`] seals every frame after the handshake with a per-direction MAC and counter.
//! - [`handshake`] runs the whole handshake of either side, under a deadline.
//! - [`version`] holds [`PROTOCOL_VERSION`] and [`MAX_FRAME_BYTES`].
//! - [`error`] holds [`ProtoError`].

pub mod auth;
pub mod codec;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod job;
pub mod message;
pub mod session;
pub mod task_spec;
pub mod version;

pub use auth::{
    SessionKeys, TOKEN_ENV, Token, coordinator_proof, nonce, session_keys, try_nonce,
    verify_coordinator_proof, verify_worker_proof, worker_proof,
};
pub use codec::{decode, encode};
pub use error::{ProtoError, Result};
pub use frame::{FRAME_HEADER_BYTES, decode_frame, encode_frame, read_frame, read_msg, write_msg};
pub use handshake::{HANDSHAKE_MAX_BYTES, coordinator_handshake, worker_handshake};
pub use job::{EvalResult, Job, JobResult, MemberJob, StepResult, WindowResult};
pub use message::{
    Capabilities, CollectiveKind, DeviceKind, NONCE_LEN, ParamsBlob, RunSetup, SETUP_FAILED_JOB, ToCoord,
    ToWorker,
};
pub use session::{Opener, Sealer, Session, TAG_BYTES, read_sealed, write_sealed};
pub use task_spec::{LongRuns, Split, TaskFamily, TaskSpec};
pub use version::{MAX_FRAME_BYTES, PROTOCOL_VERSION};
