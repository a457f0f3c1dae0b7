//! Sealed frames after the handshake: any one-bit flip, truncation, replay, reordering,
//! drop, reflection or transplant from another connection is refused; nothing tampered
//! decodes.

use metasched_engine::FixedSum;
use metasched_proto::{
    MAX_FRAME_BYTES, ProtoError, Session, StepResult, TAG_BYTES, ToCoord, ToWorker, Token, read_frame,
    session_keys,
};

fn keys(worker_nonce: u8) -> metasched_proto::SessionKeys {
    let token = Token::new("the token").expect("token");
    session_keys(&token, &[worker_nonce; 32], &[7; 32])
}

fn step_done(n: usize) -> ToCoord {
    let mut sum = FixedSum::zeros(n);
    sum.add_f32(0, &(0..n).map(|i| i as f32 * 1e-3 - 0.2).collect::<Vec<_>>());
    ToCoord::StepDone {
        job_id: 11,
        result: StepResult {
            step: 2,
            version: 3,
            first: 4,
            sum,
            outer_loss: vec![0.25; 3],
            lr: vec![0.01; 15],
            compute_s: 0.5,
        },
    }
}

/// The body (`payload || tag`) of a frame as the reader returns it.
fn body_of(frame: &[u8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut r = frame;
        read_frame(&mut r, MAX_FRAME_BYTES + TAG_BYTES).await
    })
    .expect("a whole frame")
}

/// What the coordinator's opener makes of `frame`: the message, or why it was refused.
fn open_frame(frame: &[u8], opener: &mut metasched_proto::Opener) -> Result<ToCoord, ProtoError> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    rt.block_on(async {
        let mut r = frame;
        metasched_proto::read_sealed::<_, ToCoord>(&mut r, opener, MAX_FRAME_BYTES).await
    })
}

#[test]
fn every_single_bit_flip_is_refused() {
    let msg = step_done(40);
    let mut worker = Session::worker(&keys(1));
    let frame = worker.sealer.seal(&msg).expect("seal");
    let coordinator = Session::coordinator(&keys(1));
    assert_eq!(open_frame(&frame, &mut coordinator.opener.clone()).expect("intact"), msg);
    for bit in 0..frame.len() * 8 {
        let mut bad = frame.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let got = open_frame(&bad, &mut coordinator.opener.clone());
        assert!(got.is_err(), "bit {bit} flipped was accepted as {got:?}");
        if bit >= 32 {
            assert!(matches!(got, Err(ProtoError::Tampered { seq: 0 })), "bit {bit}: {got:?}");
        }
    }
}

#[test]
fn replayed_reordered_dropped_reflected_and_transplanted_frames_are_refused() {
    let mut worker = Session::worker(&keys(1));
    let frames: Vec<Vec<u8>> =
        (0..3u64).map(|seq| worker.sealer.seal(&ToCoord::Heartbeat { seq }).expect("seal")).collect();
    let bodies: Vec<Vec<u8>> = frames.iter().map(|f| body_of(f)).collect();

    // In order: accepted.
    let mut c = Session::coordinator(&keys(1));
    for (seq, body) in bodies.iter().enumerate() {
        assert_eq!(c.opener.open::<ToCoord>(body).expect("in order"), ToCoord::Heartbeat { seq: seq as u64 });
    }
    // Replayed.
    let mut c = Session::coordinator(&keys(1));
    c.opener.open::<ToCoord>(&bodies[0]).expect("first");
    assert!(matches!(c.opener.open::<ToCoord>(&bodies[0]), Err(ProtoError::Tampered { seq: 1 })));
    // Reordered.
    let mut c = Session::coordinator(&keys(1));
    assert!(matches!(c.opener.open::<ToCoord>(&bodies[1]), Err(ProtoError::Tampered { seq: 0 })));
    // Dropped: the frame after a lost one.
    let mut c = Session::coordinator(&keys(1));
    c.opener.open::<ToCoord>(&bodies[0]).expect("first");
    assert!(matches!(c.opener.open::<ToCoord>(&bodies[2]), Err(ProtoError::Tampered { seq: 1 })));
    // Reflected: the worker's own frame fed back to the worker.
    let mut w = Session::worker(&keys(1));
    assert!(matches!(w.opener.open::<ToWorker>(&bodies[0]), Err(ProtoError::Tampered { seq: 0 })));
    // Transplanted from another connection (other nonces).
    let mut other = Session::coordinator(&keys(2));
    assert!(matches!(other.opener.open::<ToCoord>(&bodies[0]), Err(ProtoError::Tampered { seq: 0 })));
    // Truncated bodies, down to shorter than a tag.
    let mut c = Session::coordinator(&keys(1));
    for cut in [1, TAG_BYTES, bodies[0].len() - 1] {
        let short = &bodies[0][..bodies[0].len() - cut];
        assert!(matches!(c.opener.open::<ToCoord>(short), Err(ProtoError::Tampered { seq: 0 })), "cut {cut}");
    }
    // A refused frame does not advance the counter: the genuine one still opens.
    assert_eq!(c.opener.open::<ToCoord>(&bodies[0]).expect("genuine"), ToCoord::Heartbeat { seq: 0 });
}

#[test]
fn large_frames_round_trip_and_respect_the_maximum() {
    let msg = step_done(200_000);
    let mut worker = Session::worker(&keys(3));
    let frame = worker.sealer.seal(&msg).expect("seal");
    let mut c = Session::coordinator(&keys(3));
    assert_eq!(open_frame(&frame, &mut c.opener).expect("open"), msg);
    assert_eq!((worker.sealer.sent(), c.opener.received()), (1, 1));

    let huge = ToWorker::Refused { reason: "x".repeat(MAX_FRAME_BYTES - 10) };
    assert!(matches!(worker.sealer.seal(&huge), Err(ProtoError::FrameTooLarge { .. })));
}
