//! The handshake of either side, over any tokio stream (a `TcpStream` in production, a
//! `tokio::io::duplex` in tests), bounded by one deadline for the whole exchange so that a
//! client that is silent, or sends one byte a minute, is dropped.
//!
//! ```text
//! worker                                   coordinator
//!   Hello { version, capabilities, nw } ──▶  refuses another version
//!                                       ◀──  Challenge { nc, coordinator_proof(nw, nc) }
//!   checks the coordinator's proof
//!   Auth { worker_proof(nw, nc) }       ──▶  checks the worker's proof
//!                                       ◀──  sealed Welcome { worker_id, setup } | Refused { reason }
//! ```
//!
//! From the welcome on, every frame is sealed with the connection's session keys
//! ([`crate::session`]): both sides return their [`Session`] halves.
//!
//! Every refusal the coordinator decides is also sent to the worker as
//! [`ToWorker::Refused`], best effort, so both logs say why. Until the handshake succeeds,
//! frames are limited to [`HANDSHAKE_MAX_BYTES`], so an unauthenticated peer cannot make
//! either side buffer a large frame.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use crate::auth::{
    Token, coordinator_proof, session_keys, try_nonce, verify_coordinator_proof, verify_worker_proof,
    worker_proof,
};
use crate::codec;
use crate::error::{ProtoError, Result};
use crate::frame::{read_frame, write_msg};
use crate::message::{Capabilities, NONCE_LEN, RunSetup, ToCoord, ToWorker};
use crate::session::{Session, TAG_BYTES, write_sealed};
use crate::version::PROTOCOL_VERSION;

/// Largest frame either side accepts during the handshake (64 KiB): the handshake's
/// messages are a few hundred bytes.
pub const HANDSHAKE_MAX_BYTES: usize = 64 << 10;

/// Writes `msg` before `until`, or [`ProtoError::Timeout`] naming `what`.
async fn send<S, T>(stream: &mut S, msg: &T, until: Instant, what: &'static str) -> Result<()>
where
    S: AsyncWrite + Unpin + ?Sized,
    T: Serialize + ?Sized,
{
    timeout_at(until, write_msg(stream, msg)).await.map_err(|_| ProtoError::Timeout(what))?
}

/// Reads one frame's payload before `until`, or [`ProtoError::Timeout`] naming `what`.
async fn recv_payload<S>(stream: &mut S, until: Instant, what: &'static str) -> Result<Vec<u8>>
where
    S: AsyncRead + Unpin + ?Sized,
{
    timeout_at(until, read_frame(stream, HANDSHAKE_MAX_BYTES)).await.map_err(|_| ProtoError::Timeout(what))?
}

/// Reads and decodes one message before `until`.
async fn recv<S, T>(stream: &mut S, until: Instant, what: &'static str) -> Result<T>
where
    S: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    codec::decode(&recv_payload(stream, until, what).await?)
}

/// Tells the worker why it is refused, best effort (it may be gone, or too slow to read: the
/// error that caused the refusal matters more than this write's).
async fn refuse<S>(stream: &mut S, until: Instant, reason: String)
where
    S: AsyncWrite + Unpin + ?Sized,
{
    let _ = send(stream, &ToWorker::Refused { reason }, until, "sending a refusal").await;
}

/// Refuses the worker with `err` as the reason, and returns `err`, when the worker can be
/// told something useful (it misbehaved); otherwise (the connection failed, or timed out)
/// just returns `err`.
async fn fail<S>(stream: &mut S, until: Instant, err: ProtoError) -> ProtoError
where
    S: AsyncWrite + Unpin + ?Sized,
{
    if matches!(err, ProtoError::Decode(_) | ProtoError::FrameTooLarge { .. } | ProtoError::Unexpected { .. })
    {
        refuse(stream, until, err.to_string()).await;
    }
    err
}

/// The worker's side of the handshake: announces `capabilities`, checks that the coordinator
/// holds `token`, proves it holds it too, and returns the id the coordinator gave it, the
/// run's setup (from the sealed welcome) and the session's halves for every later frame.
/// Everything must be done within `deadline`.
///
/// Errors: [`ProtoError::AuthFailed`] if the coordinator's proof is wrong (the
/// worker then sends a deliberately invalid proof instead of its own, which reveals nothing
/// to an unauthenticated peer and makes the coordinator log the failure too);
/// [`ProtoError::Refused`] with the coordinator's reason; [`ProtoError::Unexpected`] for a
/// message out of turn; [`ProtoError::Tampered`] for a welcome that fails its seal;
/// [`ProtoError::Timeout`] past the deadline; the framing's errors.
pub async fn worker_handshake<S>(
    stream: &mut S,
    token: &Token,
    capabilities: Capabilities,
    deadline: Duration,
) -> Result<(u32, RunSetup, Session)>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let until = Instant::now() + deadline;
    let worker_nonce = try_nonce()?;
    let hello = ToCoord::Hello { protocol_version: PROTOCOL_VERSION, capabilities, nonce: worker_nonce };
    send(stream, &hello, until, "the coordinator to accept the hello").await?;

    let (coord_nonce, proof) = match recv(stream, until, "the coordinator's challenge").await? {
        ToWorker::Challenge { nonce, proof } => (nonce, proof),
        ToWorker::Refused { reason } => return Err(ProtoError::Refused(reason)),
        other => return Err(ProtoError::Unexpected { expected: "Challenge", got: other.kind().into() }),
    };
    if !verify_coordinator_proof(token, &worker_nonce, &coord_nonce, &proof) {
        let decoy = ToCoord::Auth { proof: [0; NONCE_LEN] };
        let _ = send(stream, &decoy, until, "the coordinator to accept the proof").await;
        return Err(ProtoError::AuthFailed);
    }
    let auth = ToCoord::Auth { proof: worker_proof(token, &worker_nonce, &coord_nonce) };
    send(stream, &auth, until, "the coordinator to accept the proof").await?;

    let mut session = Session::worker(&session_keys(token, &worker_nonce, &coord_nonce));
    let until_welcome = timeout_at(until, read_frame(stream, HANDSHAKE_MAX_BYTES + TAG_BYTES));
    let body = until_welcome.await.map_err(|_| ProtoError::Timeout("the coordinator's welcome"))??;
    match session.opener.open::<ToWorker>(&body) {
        Ok(ToWorker::Welcome { worker_id, setup }) => Ok((worker_id, setup, session)),
        Ok(other) => Err(ProtoError::Unexpected { expected: "Welcome", got: other.kind().into() }),
        // A refusal is the one message the coordinator sends unsealed at this point.
        Err(sealed_err) => match codec::decode::<ToWorker>(&body) {
            Ok(ToWorker::Refused { reason }) => Err(ProtoError::Refused(reason)),
            _ => Err(sealed_err),
        },
    }
}

/// Reads the worker's hello. A hello of another protocol version that does not decode as a
/// whole is still recognised by its leading variant index and version, so the worker gets a
/// version refusal rather than a decoding one.
async fn read_hello<S>(stream: &mut S, until: Instant) -> Result<ToCoord>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let payload = recv_payload(stream, until, "the worker's hello").await?;
    codec::decode::<ToCoord>(&payload).map_err(|err| match codec::decode_prefix::<(u32, u32)>(&payload) {
        Ok(((0, theirs), _)) if theirs != PROTOCOL_VERSION => {
            ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs }
        }
        _ => err,
    })
}

/// The coordinator's side of the handshake: reads the worker's hello, refuses another
/// protocol version, proves it holds `token`, checks the worker's proof, and welcomes the
/// worker as `worker_id` into the run `setup` with a sealed welcome. Returns the worker's
/// capabilities and the session's halves for every later frame. Everything must be done
/// within `deadline`.
///
/// Errors, each also sent to the worker as [`ToWorker::Refused`] (best effort):
/// [`ProtoError::VersionMismatch`], [`ProtoError::AuthFailed`], [`ProtoError::Unexpected`] for
/// a message out of turn, [`ProtoError::Decode`] / [`ProtoError::FrameTooLarge`] for garbage.
/// Not sent: [`ProtoError::Timeout`] past the deadline and the connection's own failures.
pub async fn coordinator_handshake<S>(
    stream: &mut S,
    token: &Token,
    setup: &RunSetup,
    worker_id: u32,
    deadline: Duration,
) -> Result<(Capabilities, Session)>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let until = Instant::now() + deadline;
    let hello = match read_hello(stream, until).await {
        Ok(m) => m,
        Err(ProtoError::VersionMismatch { ours, theirs }) => {
            refuse(stream, until, format!("protocol version {theirs}, coordinator speaks {ours}")).await;
            return Err(ProtoError::VersionMismatch { ours, theirs });
        }
        Err(e) => return Err(fail(stream, until, e).await),
    };
    let (capabilities, worker_nonce) = match hello {
        ToCoord::Hello { protocol_version, capabilities, nonce } => {
            if protocol_version != PROTOCOL_VERSION {
                let reason =
                    format!("protocol version {protocol_version}, coordinator speaks {PROTOCOL_VERSION}");
                refuse(stream, until, reason).await;
                return Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: protocol_version });
            }
            (capabilities, nonce)
        }
        other => {
            let err = ProtoError::Unexpected { expected: "Hello", got: other.kind().into() };
            return Err(fail(stream, until, err).await);
        }
    };

    let coord_nonce = try_nonce()?;
    let challenge = ToWorker::Challenge {
        nonce: coord_nonce,
        proof: coordinator_proof(token, &worker_nonce, &coord_nonce),
    };
    send(stream, &challenge, until, "the worker to accept the challenge").await?;

    match recv(stream, until, "the worker's proof").await {
        Ok(ToCoord::Auth { proof }) => {
            if !verify_worker_proof(token, &worker_nonce, &coord_nonce, &proof) {
                refuse(stream, until, "authentication failed".into()).await;
                return Err(ProtoError::AuthFailed);
            }
        }
        Ok(other) => {
            let err = ProtoError::Unexpected { expected: "Auth", got: other.kind().into() };
            return Err(fail(stream, until, err).await);
        }
        Err(e) => return Err(fail(stream, until, e).await),
    }

    let mut session = Session::coordinator(&session_keys(token, &worker_nonce, &coord_nonce));
    let welcome = ToWorker::Welcome { worker_id, setup: setup.clone() };
    timeout_at(until, write_sealed(stream, &mut session.sealer, &welcome))
        .await
        .map_err(|_| ProtoError::Timeout("the worker to accept the welcome"))??;
    Ok((capabilities, session))
}
