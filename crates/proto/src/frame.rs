//! Length-delimited frames: a 4-byte little-endian payload length, then the payload (one
//! message encoded by [`crate::codec`]).
//!
//! Reading checks the declared length against the maximum before allocating anything, and
//! then grows the buffer only as bytes actually arrive, so a hostile length prefix costs
//! nothing. A connection that ends exactly between two frames is [`ProtoError::Closed`]; one
//! that ends inside a frame is [`ProtoError::Truncated`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec;
use crate::error::{ProtoError, Result};
use crate::version::MAX_FRAME_BYTES;

/// Size of a frame's length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Initial buffer of a payload being read; it grows with the bytes that arrive.
const INITIAL_CAPACITY: usize = 64 << 10;

/// The limit that applies: the caller's, never above [`MAX_FRAME_BYTES`].
fn effective_max(max_bytes: usize) -> usize {
    max_bytes.min(MAX_FRAME_BYTES)
}

/// Checks a declared payload length against `max` (already effective).
fn checked_len(declared: u32, max: usize) -> Result<usize> {
    match usize::try_from(declared) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(ProtoError::FrameTooLarge { len: u64::from(declared), max }),
    }
}

/// Encodes `msg` as one frame (length prefix and payload). A payload above
/// [`MAX_FRAME_BYTES`] is a [`ProtoError::FrameTooLarge`]: the peer would refuse it.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>> {
    let mut out = vec![0u8; FRAME_HEADER_BYTES];
    let len = codec::encode_into(msg, &mut out)?;
    let declared = match u32::try_from(len) {
        Ok(l) if len <= MAX_FRAME_BYTES => l,
        _ => return Err(ProtoError::FrameTooLarge { len: len as u64, max: MAX_FRAME_BYTES }),
    };
    out[..FRAME_HEADER_BYTES].copy_from_slice(&declared.to_le_bytes());
    Ok(out)
}

/// Decodes the frame at the start of `bytes` (payload at most `max_bytes`, and never above
/// [`MAX_FRAME_BYTES`]) and returns the message with the number of bytes the frame took;
/// bytes after the frame are left alone (they would be the next frame).
///
/// Empty input is [`ProtoError::Closed`] (no frame at all), a partial frame
/// [`ProtoError::Truncated`], and a payload that is not exactly one message
/// [`ProtoError::Decode`]. Meant for tests and fuzzing; connections use [`read_msg`].
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max_bytes: usize) -> Result<(T, usize)> {
    let Some(header) = bytes.first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(if bytes.is_empty() { ProtoError::Closed } else { ProtoError::Truncated });
    };
    let len = checked_len(u32::from_le_bytes(*header), effective_max(max_bytes))?;
    let end = FRAME_HEADER_BYTES + len;
    let payload = bytes.get(FRAME_HEADER_BYTES..end).ok_or(ProtoError::Truncated)?;
    Ok((codec::decode(payload)?, end))
}

/// Encodes `msg` as one frame, writes it with a single `write_all` (so the header does not go
/// out as a packet of its own) and flushes.
///
/// Not cancel-safe: a write abandoned half-way leaves a partial frame on the stream, after
/// which the connection must be dropped.
pub async fn write_msg<W, T>(w: &mut W, msg: &T) -> Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    let frame = encode_frame(msg)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame's payload, at most `max_bytes` long (and never above [`MAX_FRAME_BYTES`]),
/// without decoding it.
///
/// A declared length above the maximum is a [`ProtoError::FrameTooLarge`] before any
/// allocation, and the buffer then grows only with the bytes received. End of stream before the
/// first byte of the frame is [`ProtoError::Closed`]; after it, [`ProtoError::Truncated`].
///
/// Not cancel-safe: a read abandoned half-way loses the frame's bytes already consumed.
pub async fn read_frame<R>(r: &mut R, max_bytes: usize) -> Result<Vec<u8>>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < FRAME_HEADER_BYTES {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            return Err(if filled == 0 { ProtoError::Closed } else { ProtoError::Truncated });
        }
        filled += n;
    }
    let len = checked_len(u32::from_le_bytes(header), effective_max(max_bytes))?;
    let mut payload = Vec::with_capacity(len.min(INITIAL_CAPACITY));
    let got = (&mut *r).take(len as u64).read_to_end(&mut payload).await?;
    if got < len {
        return Err(ProtoError::Truncated);
    }
    Ok(payload)
}

/// Reads and decodes one message (see [`read_frame`] for the limits and end-of-stream
/// errors; a payload that is not exactly one `T` is a [`ProtoError::Decode`]).
///
/// Not cancel-safe: wrap whole connections, not single reads, in `select!`s and timeouts.
pub async fn read_msg<R, T>(r: &mut R, max_bytes: usize) -> Result<T>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    let payload = read_frame(r, max_bytes).await?;
    codec::decode(&payload)
}
