//! Messages to bytes and back: the one module that names the serialisation library.
//!
//! The encoding is bincode 2's *standard* configuration through serde: little-endian,
//! variable-length integers (values below 251 take one byte; larger ones a marker byte
//! `251`/`252`/`253`/`254` then 2/4/8/16 bytes; signed integers are zigzag-mapped first),
//! lengths of sequences and strings as such integers, enum variants by their index as a
//! variable-length `u32`, `Option` as a `0`/`1` byte, floats as their 4 or 8 IEEE bytes,
//! byte arrays (the nonces) as their raw bytes, and no field names, so message shapes are
//! the contract (hence [`crate::PROTOCOL_VERSION`] and the golden-bytes tests). Variable-length
//! integers keep the gradient sums small: their `i128` fixed-point values mostly fit in 8 bytes
//! instead of 16.
//!
//! bincode is unmaintained upstream (RUSTSEC-2025-0141); replacing it means rewriting this file
//! (to produce the same bytes, or with a bump of the protocol version).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProtoError, Result};
use crate::version::MAX_FRAME_BYTES;

/// The encoding: little-endian, variable-length integers, and a decode limit of `LIMIT` bytes
/// on what declared string lengths may claim in total before anything is allocated.
fn config<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_variable_int_encoding().with_limit::<LIMIT>()
}

/// [`decode_prefix`] under a fixed limit.
fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<(T, usize)> {
    bincode::serde::decode_from_slice::<T, _>(bytes, config::<LIMIT>())
        .map_err(|e| ProtoError::Decode(e.to_string()))
}

/// Encodes `msg` (see the module documentation for the encoding).
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(msg, config::<MAX_FRAME_BYTES>())
        .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Encodes `msg` at the end of `out` (so a frame header can precede it without a copy) and
/// returns the number of bytes appended; on error `out` may hold a partial encoding.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, out: &mut Vec<u8>) -> Result<usize> {
    bincode::serde::encode_into_std_write(msg, out, config::<MAX_FRAME_BYTES>())
        .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Decodes a whole message from `bytes`: bytes left after the message, a declared string
/// length beyond what `bytes` could hold (see [`decode_prefix`]), or any malformed input is a
/// [`ProtoError::Decode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (msg, used) = decode_prefix::<T>(bytes)?;
    if used != bytes.len() {
        return Err(ProtoError::Decode(format!(
            "{} trailing bytes after a message of {used} bytes",
            bytes.len() - used
        )));
    }
    Ok(msg)
}

/// What bincode charges against the decode limit, at most, per byte of input: a `u128`/`i128`
/// is charged 16 bytes however short its variable-length encoding (1 byte for values below
/// 251), every other type at most 8 bytes for its shortest 1-byte form.
const WORST_CHARGE_PER_BYTE: usize = 16;

/// The decode limit for inputs of up to `bytes` bytes: what the largest legitimate message of
/// that size can be charged.
const fn limit_for(bytes: usize) -> usize {
    bytes * WORST_CHARGE_PER_BYTE
}

/// Decodes a value from the start of `bytes` and returns it with the number of bytes it
/// took; bytes after it are left alone (used to read the leading fields of a message that does
/// not decode as a whole).
///
/// The limit bounds what declared lengths can make the decoder allocate before the bytes that
/// would fill it have been seen. bincode charges each value's in-memory size against it (16
/// bytes for an `i128` that takes 1 byte on the wire), so the limit is
/// [`WORST_CHARGE_PER_BYTE`] times the next of 64 KiB, 1 MiB, 8 MiB and [`MAX_FRAME_BYTES`] at
/// or above `bytes.len()`: every legitimate message decodes, and a hostile string length in a
/// short message is refused before its buffer is allocated unless it claims at most 16 times
/// the tier (1 MiB for a message under 64 KiB). Sequences of numbers are preallocated by serde
/// at most 1 MiB ahead of the elements actually read.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize)> {
    const SMALL: usize = 64 << 10;
    const MEDIUM: usize = 1 << 20;
    const LARGE: usize = 8 << 20;
    match bytes.len() {
        n if n <= SMALL => decode_limited::<T, { limit_for(SMALL) }>(bytes),
        n if n <= MEDIUM => decode_limited::<T, { limit_for(MEDIUM) }>(bytes),
        n if n <= LARGE => decode_limited::<T, { limit_for(LARGE) }>(bytes),
        _ => decode_limited::<T, { limit_for(MAX_FRAME_BYTES) }>(bytes),
    }
}
