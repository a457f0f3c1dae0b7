//! Tamper-evident frames after the handshake.
//!
//! Both sides derive two keys from the token and the handshake's two fresh nonces
//! ([`crate::auth::session_keys`]), one per direction. Every later frame carries a 16-byte
//! tag: `HMAC-SHA256(direction key, seq || length prefix || payload)` truncated to 128 bits,
//! where `seq` counts the frames sent in that direction (0 for the coordinator's welcome).
//! `seq` is not sent: each side counts, so a frame that was flipped, truncated, rewritten,
//! replayed (from this or any earlier session: the nonces are fresh), dropped or reordered
//! fails its check at the receiver, which drops the connection ([`ProtoError::Tampered`]).
//!
//! ```text
//! frame = len: u32 LE (payload + 16) | payload (one codec message) | tag: 16 bytes
//! ```
//!
//! This is integrity and authenticity, not secrecy: parameters and gradients travel in clear
//! (they are the run's own numbers; use a private network or a tunnel if they are secret).

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::auth::SessionKeys;
use crate::codec;
use crate::error::{ProtoError, Result};
use crate::frame::{FRAME_HEADER_BYTES, read_frame};
use crate::version::MAX_FRAME_BYTES;

/// Bytes of the tag at the end of every post-handshake frame.
pub const TAG_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The keyed MAC of one direction with its frame counter.
#[derive(Clone)]
struct Direction {
    keyed: HmacSha256,
    seq: u64,
}

impl std::fmt::Debug for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Direction {{ seq: {} }}", self.seq)
    }
}

impl Direction {
    fn new(key: &[u8; 32]) -> Self {
        let keyed = match <HmacSha256 as Mac>::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        Self { keyed, seq: 0 }
    }

    /// The full MAC of the next frame (header and payload) under this direction's counter.
    fn mac(&self, header: &[u8; FRAME_HEADER_BYTES], payload: &[u8]) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(&self.seq.to_le_bytes());
        m.update(header);
        m.update(payload);
        m
    }
}

/// The sending half: seals each message into a tagged frame.
#[derive(Debug, Clone)]
pub struct Sealer(Direction);

/// The receiving half: checks each frame's tag before decoding it.
#[derive(Debug, Clone)]
pub struct Opener(Direction);

/// One side's two halves, split so that a reader task and a writer task can each own one.
#[derive(Debug, Clone)]
pub struct Session {
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what this side receives.
    pub opener: Opener,
}

impl Session {
    /// The coordinator's halves: it sends to the worker and receives from it.
    pub fn coordinator(keys: &SessionKeys) -> Self {
        Self {
            sealer: Sealer(Direction::new(&keys.to_worker)),
            opener: Opener(Direction::new(&keys.to_coordinator)),
        }
    }

    /// The worker's halves.
    pub fn worker(keys: &SessionKeys) -> Self {
        Self {
            sealer: Sealer(Direction::new(&keys.to_coordinator)),
            opener: Opener(Direction::new(&keys.to_worker)),
        }
    }
}

impl Sealer {
    /// `msg` as one sealed frame (length prefix, payload, tag); advances the counter. A frame
    /// above [`MAX_FRAME_BYTES`] (tag included) is a [`ProtoError::FrameTooLarge`].
    pub fn seal<T: Serialize + ?Sized>(&mut self, msg: &T) -> Result<Vec<u8>> {
        let mut out = vec![0u8; FRAME_HEADER_BYTES];
        let len = codec::encode_into(msg, &mut out)? + TAG_BYTES;
        let declared = match u32::try_from(len) {
            Ok(l) if len <= MAX_FRAME_BYTES => l,
            _ => return Err(ProtoError::FrameTooLarge { len: len as u64, max: MAX_FRAME_BYTES }),
        };
        let header = declared.to_le_bytes();
        out[..FRAME_HEADER_BYTES].copy_from_slice(&header);
        let tag = self.0.mac(&header, &out[FRAME_HEADER_BYTES..]).finalize().into_bytes();
        out.extend_from_slice(&tag[..TAG_BYTES]);
        self.0.seq += 1;
        Ok(out)
    }

    /// Frames sealed so far.
    pub fn sent(&self) -> u64 {
        self.0.seq
    }
}

impl Opener {
    /// Checks the tag of a frame's body (`payload || tag`, as [`read_frame`] returns it) and
    /// decodes the payload; advances the counter only on success. A wrong tag is
    /// [`ProtoError::Tampered`]: the connection must be dropped.
    pub fn open<T: DeserializeOwned>(&mut self, body: &[u8]) -> Result<T> {
        let Some(split) = body.len().checked_sub(TAG_BYTES) else {
            return Err(ProtoError::Tampered { seq: self.0.seq });
        };
        let (payload, tag) = body.split_at(split);
        let header = (body.len() as u32).to_le_bytes();
        if self.0.mac(&header, payload).verify_truncated_left(tag).is_err() {
            return Err(ProtoError::Tampered { seq: self.0.seq });
        }
        self.0.seq += 1;
        codec::decode(payload)
    }

    /// Frames opened so far.
    pub fn received(&self) -> u64 {
        self.0.seq
    }
}

/// Seals `msg` and writes it with one `write_all`, then flushes (not cancel-safe, like
/// [`crate::write_msg`]).
pub async fn write_sealed<W, T>(w: &mut W, sealer: &mut Sealer, msg: &T) -> Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let frame = sealer.seal(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one sealed frame (payload at most `max_bytes`, tag not counted), checks it and
/// decodes it (not cancel-safe, like [`crate::read_msg`]).
pub async fn read_sealed<R, T>(r: &mut R, opener: &mut Opener, max_bytes: usize) -> Result<T>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let body = read_frame(r, max_bytes.saturating_add(TAG_BYTES)).await?;
    opener.open(&body)
}
