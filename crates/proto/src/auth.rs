//! Shared-secret authentication: each side proves it holds the run's [`Token`] with an
//! HMAC-SHA256 over both sides' fresh nonces, so the token never crosses the wire and a
//! recorded handshake cannot be replayed.
//!
//! The two proofs use different labels (`metasched/v1/coordinator` and
//! `metasched/v1/worker`), so a proof one side produced can never be reflected back as the
//! other side's. The input of each MAC is `label || worker_nonce || coordinator_nonce`; the
//! nonces have a fixed length, so the concatenation is unambiguous.

use std::fmt;
use std::io::Read;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{ProtoError, Result};
use crate::message::NONCE_LEN;

/// Environment variable [`Token::from_env`] reads.
pub const TOKEN_ENV: &str = "METASCHED_TOKEN";

/// Longest token file accepted (a token is a short secret; anything longer is a wrong path).
const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// Label of the coordinator's proof.
const COORDINATOR_LABEL: &[u8] = b"metasched/v1/coordinator";
/// Label of the worker's proof.
const WORKER_LABEL: &[u8] = b"metasched/v1/worker";
/// Label of the session secret both sides derive after the proofs.
const SESSION_LABEL: &[u8] = b"metasched/v3/session";
/// Labels of the two direction keys derived from the session secret.
const TO_COORDINATOR_LABEL: &[u8] = b"metasched/v3/to-coordinator";
const TO_WORKER_LABEL: &[u8] = b"metasched/v3/to-worker";

type HmacSha256 = Hmac<Sha256>;

/// The shared secret of a run (UTF-8 text). Its `Debug` prints `Token(..)`, never the secret,
/// and its bytes are overwritten when it is dropped (best effort: copies the allocator made
/// on growth are not tracked).
#[derive(Clone)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// `s` without its trailing `\n` and `\r` characters.
fn trim_newlines(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

impl Token {
    /// A token of exactly this text; an empty one is a [`ProtoError::BadToken`].
    pub fn new(secret: impl Into<String>) -> Result<Token> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(ProtoError::BadToken("the token is empty".into()));
        }
        Ok(Token(secret))
    }

    /// Reads a token file: its text without trailing newlines (`\n`, `\r\n`). An unreadable,
    /// empty, non-UTF-8 or implausibly long (over 64 KiB) file is a [`ProtoError::BadToken`]
    /// naming it.
    pub fn from_file(path: &Path) -> Result<Token> {
        let bad = |why: String| ProtoError::BadToken(format!("{}: {why}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open the token file: {e}")))?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| bad(format!("cannot read the token file: {e}")))?;
        if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(bad(format!("the token file is longer than {MAX_TOKEN_FILE_BYTES} bytes")));
        }
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                e.into_bytes().fill(0);
                return Err(bad("the token file is not UTF-8 text".into()));
            }
        };
        // Built at once so that the trimmed copy is erased on drop like any token.
        let token = Token(trim_newlines(&text).to_string());
        let mut text = text.into_bytes();
        text.fill(0);
        std::hint::black_box(&text);
        if token.0.is_empty() {
            return Err(bad("the token file is empty".into()));
        }
        Ok(token)
    }

    /// The token in [`TOKEN_ENV`] (`METASCHED_TOKEN`), without trailing newlines: `None` when
    /// the variable is not set; a [`ProtoError::BadToken`] when it is set but empty or not
    /// UTF-8.
    pub fn from_env() -> Result<Option<Token>> {
        let Some(value) = std::env::var_os(TOKEN_ENV) else {
            return Ok(None);
        };
        let value = value
            .into_string()
            .map_err(|_| ProtoError::BadToken(format!("{TOKEN_ENV} is not valid UTF-8")))?;
        let token = Token(trim_newlines(&value).to_string());
        if token.0.is_empty() {
            return Err(ProtoError::BadToken(format!("{TOKEN_ENV} is set but empty")));
        }
        Ok(Some(token))
    }

    /// The token of a command line: from `file` when one is given (it wins over the
    /// environment), else from [`TOKEN_ENV`]; `None` when neither is set.
    pub fn resolve(file: Option<&Path>) -> Result<Option<Token>> {
        match file {
            Some(path) => Token::from_file(path).map(Some),
            None => Token::from_env(),
        }
    }

    /// A fresh token: 32 random bytes, hex-encoded (64 ASCII characters, so it can be handed
    /// to local workers through [`TOKEN_ENV`]).
    ///
    /// # Panics
    ///
    /// If the operating system's random generator fails (see [`Token::try_random`]).
    pub fn random() -> Token {
        Token(hex::encode(nonce()))
    }

    /// [`Token::random`], with a failure of the operating system's random generator as an
    /// error.
    pub fn try_random() -> Result<Token> {
        Ok(Token(hex::encode(try_nonce()?)))
    }

    /// The secret, to hand the token to a process the coordinator spawns (through
    /// [`TOKEN_ENV`] or a token file). Every call is a place the secret leaves this type: never
    /// log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A fresh nonce from the operating system's random generator.
///
/// # Panics
///
/// If that generator fails, which on supported systems does not happen once the system has
/// booted (see [`try_nonce`] for the fallible form).
pub fn nonce() -> [u8; NONCE_LEN] {
    match try_nonce() {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

/// A fresh nonce from the operating system's random generator, or an [`ProtoError::Io`] if it
/// fails.
pub fn try_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)
        .map_err(|e| ProtoError::Io(std::io::Error::other(format!("the OS random generator failed: {e}"))))?;
    Ok(n)
}

/// The keyed MAC over `label || worker_nonce || coord_nonce`.
fn mac(
    token: &Token,
    label: &[u8],
    worker_nonce: &[u8; NONCE_LEN],
    coord_nonce: &[u8; NONCE_LEN],
) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed), so this cannot fail.
    let mut m = match <HmacSha256 as Mac>::new_from_slice(token.0.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    m.update(label);
    m.update(worker_nonce);
    m.update(coord_nonce);
    m
}

/// The coordinator's proof: `HMAC-SHA256(token, "metasched/v1/coordinator" || worker_nonce ||
/// coord_nonce)`.
pub fn coordinator_proof(
    token: &Token,
    worker_nonce: &[u8; NONCE_LEN],
    coord_nonce: &[u8; NONCE_LEN],
) -> [u8; NONCE_LEN] {
    mac(token, COORDINATOR_LABEL, worker_nonce, coord_nonce).finalize().into_bytes().into()
}

/// The worker's proof: `HMAC-SHA256(token, "metasched/v1/worker" || worker_nonce ||
/// coord_nonce)`.
pub fn worker_proof(
    token: &Token,
    worker_nonce: &[u8; NONCE_LEN],
    coord_nonce: &[u8; NONCE_LEN],
) -> [u8; NONCE_LEN] {
    mac(token, WORKER_LABEL, worker_nonce, coord_nonce).finalize().into_bytes().into()
}

/// Whether `proof` is the coordinator's proof for these nonces under `token` (compared in
/// constant time).
pub fn verify_coordinator_proof(
    token: &Token,
    worker_nonce: &[u8; NONCE_LEN],
    coord_nonce: &[u8; NONCE_LEN],
    proof: &[u8],
) -> bool {
    mac(token, COORDINATOR_LABEL, worker_nonce, coord_nonce).verify_slice(proof).is_ok()
}

/// Whether `proof` is the worker's proof for these nonces under `token` (compared in constant
/// time).
pub fn verify_worker_proof(
    token: &Token,
    worker_nonce: &[u8; NONCE_LEN],
    coord_nonce: &[u8; NONCE_LEN],
    proof: &[u8],
) -> bool {
    mac(token, WORKER_LABEL, worker_nonce, coord_nonce).verify_slice(proof).is_ok()
}

/// The two keys of a connection's frames after the handshake (one per direction, so a frame
/// cannot be reflected back to its sender). Its `Debug` prints nothing secret and its bytes
/// are overwritten when dropped.
pub struct SessionKeys {
    /// Key of the frames the worker sends.
    pub to_coordinator: [u8; 32],
    /// Key of the frames the coordinator sends.
    pub to_worker: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.to_coordinator.fill(0);
        self.to_worker.fill(0);
        std::hint::black_box(&self.to_coordinator);
        std::hint::black_box(&self.to_worker);
    }
}

/// The session keys of a connection: `s = HMAC(token, "metasched/v3/session" || worker_nonce
/// || coord_nonce)`, then `HMAC(s, "metasched/v3/to-coordinator")` and `HMAC(s,
/// "metasched/v3/to-worker")`. Fresh nonces make every connection's keys new, so frames of one
/// connection are worthless on another.
pub fn session_keys(
    token: &Token,
    worker_nonce: &[u8; NONCE_LEN],
    coord_nonce: &[u8; NONCE_LEN],
) -> SessionKeys {
    let secret: [u8; 32] =
        mac(token, SESSION_LABEL, worker_nonce, coord_nonce).finalize().into_bytes().into();
    let derive = |label: &[u8]| -> [u8; 32] {
        let mut m = match <HmacSha256 as Mac>::new_from_slice(&secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        m.update(label);
        m.finalize().into_bytes().into()
    };
    SessionKeys { to_coordinator: derive(TO_COORDINATOR_LABEL), to_worker: derive(TO_WORKER_LABEL) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_trailing_newlines() {
        assert_eq!(trim_newlines("abc\r\n\n"), "abc");
        assert_eq!(trim_newlines("a\nbc "), "a\nbc ");
        assert_eq!(trim_newlines("\n\r\n"), "");
        assert_eq!(trim_newlines(""), "");
    }
}
