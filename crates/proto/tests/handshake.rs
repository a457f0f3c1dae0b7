//! The handshake over in-memory streams: success, wrong token, wrong version, messages out of
//! turn, silent and slow peers, and the token never on the wire.

mod common;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{caps, setup};
use metasched_proto::{
    HANDSHAKE_MAX_BYTES, MAX_FRAME_BYTES, NONCE_LEN, PROTOCOL_VERSION, ProtoError, RunSetup, Session,
    ToCoord, ToWorker, Token, coordinator_handshake, coordinator_proof, encode, nonce, read_msg, read_sealed,
    session_keys, worker_handshake, worker_proof, write_msg, write_sealed,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

const DEADLINE: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(200);

fn token(s: &str) -> Token {
    Token::new(s).expect("token")
}

/// A token for the tests where its value does not matter.
fn t() -> &'static Token {
    static T: OnceLock<Token> = OnceLock::new();
    T.get_or_init(|| token("t"))
}

/// The run the coordinator offers.
fn run() -> &'static RunSetup {
    static RUN: OnceLock<RunSetup> = OnceLock::new();
    RUN.get_or_init(setup)
}

/// A stream that records every byte written through it.
struct Tap {
    inner: DuplexStream,
    written: Arc<Mutex<Vec<u8>>>,
}

impl Tap {
    fn new(inner: DuplexStream) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let written = Arc::new(Mutex::new(Vec::new()));
        (Self { inner, written: written.clone() }, written)
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.written.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn both_sides_get_what_they_should() {
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let t = token("s3cret-shared-token");
    let run = setup();
    let (wr, cr) = tokio::join!(
        worker_handshake(&mut w, &t, caps(), DEADLINE),
        coordinator_handshake(&mut c, &t, &run, 17, DEADLINE),
    );
    let (id, got, mut worker) = wr.expect("worker side");
    assert_eq!((id, got), (17, run));
    let (got, mut coordinator) = cr.expect("coordinator side");
    assert_eq!(got, caps());

    // The connection goes on with sealed messages, both ways.
    write_sealed(&mut c, &mut coordinator.sealer, &ToWorker::Ping).await.expect("write");
    let ping = read_sealed::<_, ToWorker>(&mut w, &mut worker.opener, MAX_FRAME_BYTES).await;
    assert_eq!(ping.expect("read"), ToWorker::Ping);
    let beat = ToCoord::Heartbeat { seq: 4 };
    write_sealed(&mut w, &mut worker.sealer, &beat).await.expect("write");
    let got = read_sealed::<_, ToCoord>(&mut c, &mut coordinator.opener, MAX_FRAME_BYTES).await;
    assert_eq!(got.expect("read"), beat);

    // An unsealed frame after the handshake is refused as tampered.
    write_msg(&mut c, &ToWorker::Ping).await.expect("write");
    let err = read_sealed::<_, ToWorker>(&mut w, &mut worker.opener, MAX_FRAME_BYTES).await;
    assert!(matches!(err, Err(ProtoError::Tampered { seq: 2 })), "{err:?}");
}

#[tokio::test]
async fn works_over_real_tcp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = Token::random();
    let t2 = t.clone();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        coordinator_handshake(&mut s, &t2, run(), 3, DEADLINE).await
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (id, run, _) = worker_handshake(&mut s, &t, caps(), DEADLINE).await.expect("worker side");
    assert_eq!((id, run), (3, setup()));
    assert_eq!(server.await.expect("join").expect("coordinator side").0, caps());
}

#[tokio::test]
async fn a_wrong_token_fails_on_both_sides_with_a_clear_reason() {
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let (worker_token, coordinator_token) = (token("worker-token"), token("coordinator-token"));
    let (wr, cr) = tokio::join!(
        worker_handshake(&mut w, &worker_token, caps(), DEADLINE),
        coordinator_handshake(&mut c, &coordinator_token, run(), 1, DEADLINE),
    );
    let werr = wr.expect_err("worker must fail");
    assert!(matches!(werr, ProtoError::AuthFailed), "{werr:?}");
    assert!(werr.to_string().contains("wrong token?"), "{werr}");
    let cerr = cr.expect_err("coordinator must fail");
    assert!(matches!(cerr, ProtoError::AuthFailed), "{cerr:?}");
    assert!(cerr.to_string().contains("wrong token"), "{cerr}");
    // The coordinator told the worker too.
    let refusal = read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("refusal");
    assert_eq!(refusal, ToWorker::Refused { reason: "authentication failed".into() });
}

/// Plays a worker by hand up to the challenge; returns the worker nonce and the challenge.
async fn hello_by_hand(w: &mut DuplexStream, version: u32) -> ([u8; NONCE_LEN], ToWorker) {
    let nw = nonce();
    let hello = ToCoord::Hello { protocol_version: version, capabilities: caps(), nonce: nw };
    write_msg(w, &hello).await.expect("hello");
    (nw, read_msg::<_, ToWorker>(w, MAX_FRAME_BYTES).await.expect("answer"))
}

#[tokio::test]
async fn a_worker_with_a_bad_proof_is_refused() {
    let t = token("the-token");
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        let (_, challenge) = hello_by_hand(&mut w, PROTOCOL_VERSION).await;
        assert!(matches!(challenge, ToWorker::Challenge { .. }), "{challenge:?}");
        write_msg(&mut w, &ToCoord::Auth { proof: [0xab; NONCE_LEN] }).await.expect("auth");
        read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, &t, run(), 1, DEADLINE));
    assert!(matches!(cr, Err(ProtoError::AuthFailed)), "{cr:?}");
    assert_eq!(answer, ToWorker::Refused { reason: "authentication failed".into() });
}

#[tokio::test]
async fn the_coordinators_proof_cannot_be_reflected_as_the_workers() {
    let t = token("the-token");
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        let (_, challenge) = hello_by_hand(&mut w, PROTOCOL_VERSION).await;
        let ToWorker::Challenge { proof, .. } = challenge else {
            panic!("expected a challenge: {challenge:?}")
        };
        write_msg(&mut w, &ToCoord::Auth { proof }).await.expect("auth");
        read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, &t, run(), 1, DEADLINE));
    assert!(matches!(cr, Err(ProtoError::AuthFailed)), "{cr:?}");
    assert!(matches!(answer, ToWorker::Refused { .. }), "{answer:?}");
}

#[tokio::test]
async fn a_hand_made_worker_with_the_token_is_welcomed() {
    // Checks the proofs' definition against the handshake, independently of worker_handshake.
    let t = token("the-token");
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        let (nw, challenge) = hello_by_hand(&mut w, PROTOCOL_VERSION).await;
        let ToWorker::Challenge { nonce: nc, proof } = challenge else { panic!("{challenge:?}") };
        assert_eq!(proof, coordinator_proof(&t, &nw, &nc));
        assert_ne!(nc, nw);
        write_msg(&mut w, &ToCoord::Auth { proof: worker_proof(&t, &nw, &nc) }).await.expect("auth");
        // The welcome is sealed with the key of the coordinator's direction, counter 0.
        let mut mine = Session::worker(&session_keys(&t, &nw, &nc));
        read_sealed::<_, ToWorker>(&mut w, &mut mine.opener, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, &t, run(), 9, DEADLINE));
    assert_eq!(cr.expect("coordinator side").0, caps());
    assert_eq!(answer, ToWorker::Welcome { worker_id: 9, setup: setup() });
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_with_both_versions() {
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async { hello_by_hand(&mut w, 999).await.1 };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, t(), run(), 1, DEADLINE));
    match cr {
        Err(ProtoError::VersionMismatch { ours, theirs }) => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION, 999))
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
    assert_eq!(
        answer,
        ToWorker::Refused { reason: format!("protocol version 999, coordinator speaks {PROTOCOL_VERSION}") }
    );
}

#[tokio::test]
async fn a_future_hello_that_does_not_decode_is_still_a_version_mismatch() {
    // Variant 0 (Hello), version 99, then a shape this build does not know.
    let payload = encode(&(0u32, 99u32, "capabilities of the future", 12345u64)).expect("encode");
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&payload);
        w.write_all(&frame).await.expect("write");
        read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, t(), run(), 1, DEADLINE));
    assert!(matches!(cr, Err(ProtoError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 99 })), "{cr:?}");
    assert!(
        matches!(&answer, ToWorker::Refused { reason } if reason.contains("protocol version 99")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn the_worker_reports_the_coordinators_refusal() {
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let fake_coordinator = async {
        let hello = read_msg::<_, ToCoord>(&mut c, MAX_FRAME_BYTES).await.expect("hello");
        assert!(matches!(hello, ToCoord::Hello { protocol_version: PROTOCOL_VERSION, .. }));
        let reason = "protocol version 1, coordinator speaks 2".to_string();
        write_msg(&mut c, &ToWorker::Refused { reason }).await.expect("refuse");
    };
    let (wr, ()) = tokio::join!(worker_handshake(&mut w, t(), caps(), DEADLINE), fake_coordinator);
    match wr {
        Err(ProtoError::Refused(reason)) => assert_eq!(reason, "protocol version 1, coordinator speaks 2"),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_out_of_turn_is_unexpected_and_refused() {
    // A heartbeat instead of the hello.
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        write_msg(&mut w, &ToCoord::Heartbeat { seq: 1 }).await.expect("write");
        read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, t(), run(), 1, DEADLINE));
    match cr {
        Err(ProtoError::Unexpected { expected, got }) => {
            assert_eq!((expected, got.as_str()), ("Hello", "Heartbeat"))
        }
        other => panic!("expected Unexpected, got {other:?}"),
    }
    assert!(matches!(&answer, ToWorker::Refused { reason } if reason.contains("Heartbeat")), "{answer:?}");

    // A second hello instead of the proof.
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        hello_by_hand(&mut w, PROTOCOL_VERSION).await;
        hello_by_hand(&mut w, PROTOCOL_VERSION).await.1
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, t(), run(), 1, DEADLINE));
    assert!(matches!(&cr, Err(ProtoError::Unexpected { expected: "Auth", got }) if got == "Hello"), "{cr:?}");
    assert!(matches!(answer, ToWorker::Refused { .. }), "{answer:?}");

    // On the worker's side: a ping instead of the challenge.
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let fake_coordinator = async {
        read_msg::<_, ToCoord>(&mut c, MAX_FRAME_BYTES).await.expect("hello");
        write_msg(&mut c, &ToWorker::Ping).await.expect("ping");
    };
    let (wr, ()) = tokio::join!(worker_handshake(&mut w, t(), caps(), DEADLINE), fake_coordinator);
    assert!(
        matches!(&wr, Err(ProtoError::Unexpected { expected: "Challenge", got }) if got == "Ping"),
        "{wr:?}"
    );
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_refused() {
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        w.write_all(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).await.expect("write");
        read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, t(), run(), 1, DEADLINE));
    assert!(matches!(cr, Err(ProtoError::Decode(_))), "{cr:?}");
    assert!(matches!(answer, ToWorker::Refused { .. }), "{answer:?}");

    // Before authentication, frames are limited to HANDSHAKE_MAX_BYTES.
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let client = async {
        w.write_all(&((HANDSHAKE_MAX_BYTES + 1) as u32).to_le_bytes()).await.expect("write");
        read_msg::<_, ToWorker>(&mut w, MAX_FRAME_BYTES).await.expect("answer")
    };
    let (answer, cr) = tokio::join!(client, coordinator_handshake(&mut c, t(), run(), 1, DEADLINE));
    assert!(matches!(cr, Err(ProtoError::FrameTooLarge { max: HANDSHAKE_MAX_BYTES, .. })), "{cr:?}");
    assert!(matches!(answer, ToWorker::Refused { .. }), "{answer:?}");
}

#[tokio::test]
async fn a_silent_worker_times_out_within_the_deadline() {
    let (_w, mut c) = tokio::io::duplex(1 << 16);
    let start = Instant::now();
    let cr = coordinator_handshake(&mut c, t(), run(), 1, SHORT).await;
    let took = start.elapsed();
    assert!(matches!(cr, Err(ProtoError::Timeout(_))), "{cr:?}");
    assert!(took >= SHORT && took < SHORT * 5, "took {took:?}");
}

#[tokio::test]
async fn a_slowloris_worker_times_out_within_the_deadline() {
    // One byte every 50 ms of a valid hello: the deadline bounds the whole handshake, not
    // each read.
    let frame = metasched_proto::encode_frame(&ToCoord::Hello {
        protocol_version: PROTOCOL_VERSION,
        capabilities: caps(),
        nonce: [1; NONCE_LEN],
    })
    .expect("encode");
    let (mut w, mut c) = tokio::io::duplex(1 << 16);
    let dribble = async {
        for b in frame {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let start = Instant::now();
    let handshake = async {
        let r = coordinator_handshake(&mut c, t(), run(), 1, SHORT).await;
        (r, start.elapsed())
    };
    let ((cr, took), ()) = tokio::select! {
        r = handshake => (r, ()),
        () = async { dribble.await; std::future::pending::<()>().await } => unreachable!(),
    };
    assert!(matches!(cr, Err(ProtoError::Timeout(_))), "{cr:?}");
    assert!(took < SHORT * 5, "took {took:?}");
}

#[tokio::test]
async fn a_silent_coordinator_times_out_the_worker() {
    let (mut w, _c) = tokio::io::duplex(1 << 16);
    let start = Instant::now();
    let wr = worker_handshake(&mut w, t(), caps(), SHORT).await;
    assert!(matches!(wr, Err(ProtoError::Timeout(_))), "{wr:?}");
    assert!(start.elapsed() < SHORT * 5);
}

#[tokio::test]
async fn a_peer_that_hangs_up_is_closed() {
    let (w, mut c) = tokio::io::duplex(1 << 16);
    drop(w);
    let cr = coordinator_handshake(&mut c, t(), run(), 1, DEADLINE).await;
    assert!(matches!(cr, Err(ProtoError::Closed)), "{cr:?}");
}

#[tokio::test]
async fn the_token_never_crosses_the_wire() {
    for t in [token("correct horse battery staple 0123456789"), Token::random()] {
        // Success, then a wrong token on either side.
        for (wt, ct) in [(t.clone(), t.clone()), (t.clone(), token("other")), (token("other"), t.clone())] {
            let (w, c) = tokio::io::duplex(1 << 16);
            let (mut w, w_wrote) = Tap::new(w);
            let (mut c, c_wrote) = Tap::new(c);
            let (wr, cr) = tokio::join!(
                worker_handshake(&mut w, &wt, caps(), DEADLINE),
                coordinator_handshake(&mut c, &ct, run(), 1, DEADLINE),
            );
            assert_eq!(wr.is_ok(), cr.is_ok());
            let secret = t.expose().as_bytes();
            for (side, bytes) in [("worker", &w_wrote), ("coordinator", &c_wrote)] {
                let bytes = bytes.lock().expect("lock");
                assert!(bytes.len() > 2 * NONCE_LEN, "{side} wrote something");
                assert!(!contains(&bytes, secret), "the {side} sent the token");
                assert!(!contains(&bytes, &secret[..8]), "the {side} sent part of the token");
            }
            for e in [wr.err(), cr.err()].into_iter().flatten() {
                assert!(!e.to_string().contains(t.expose()), "{e}");
            }
        }
    }
}
