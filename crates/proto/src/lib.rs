//! metasched's wire protocol between `meta-coord` and `meta-worker`.

pub mod message;

pub use message::{Capabilities, DeviceKind, NONCE_LEN, ParamsBlob, RunSetup, ToCoord, ToWorker};
