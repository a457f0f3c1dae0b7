//! The protocol's error type.

/// What can go wrong on the wire. Every message is one line, fit for a log.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection cleanly, between two frames.
    #[error("connection closed by the peer")]
    Closed,
    /// The connection ended inside a frame (in its length prefix or its payload).
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// A frame's declared (or, when writing, actual) length exceeds the maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The declared or actual payload length.
        len: u64,
        /// The maximum allowed.
        max: usize,
    },
    /// A payload is not a valid message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The worker speaks another protocol version.
    #[error("protocol version mismatch: we speak {ours}, the peer speaks {theirs}")]
    VersionMismatch {
        /// Our [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The peer's version.
        theirs: u32,
    },
    /// The peer's proof does not match our token: on the coordinator, the worker's; on the
    /// worker, the coordinator's. Retrying cannot help.
    #[error("authentication failed, the peer holds another token: wrong token?")]
    AuthFailed,
    /// The coordinator refused us, with its reason.
    #[error("refused by the coordinator: {0}")]
    Refused(String),
    /// The peer sent a message that is not valid at this point of the protocol.
    #[error("unexpected message: expected {expected}, got {got}")]
    Unexpected {
        /// What the protocol expected.
        expected: &'static str,
        /// What arrived (the message's kind).
        got: String,
    },
    /// The deadline passed while waiting for the named step.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A post-handshake frame failed its integrity check: flipped, truncated, rewritten,
    /// replayed, dropped or reordered on the way. The connection is dropped.
    #[error("frame {seq} failed its integrity check (tampered, replayed, reordered or lost on the way)")]
    Tampered {
        /// The receiver's count of frames accepted before it.
        seq: u64,
    },
    /// A token could not be loaded or is unusable.
    #[error("bad token: {0}")]
    BadToken(String),
}

impl ProtoError {
    /// Whether the user can fix this: only an unusable token is the user's input; everything
    /// else is a failure of a peer or of the network. Command-line front ends choose their exit
    /// code from this rather than matching on the variants.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::BadToken(_))
    }
}

/// Result of the protocol's operations.
pub type Result<T> = std::result::Result<T, ProtoError>;
