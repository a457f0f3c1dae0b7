//! Framing: bounds, truncation, garbage, trailing bytes and clean closes.

use std::time::Duration;

use metasched_proto::{
    MAX_FRAME_BYTES, ProtoError, ToCoord, ToWorker, decode, decode_frame, encode, encode_frame, read_frame,
    read_msg, write_msg,
};
use tokio::io::AsyncWriteExt;

fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn a_huge_declared_length_is_refused_before_reading_the_payload() {
    // Only the prefix arrives, and the reader stays open: a read that tried to allocate or to
    // wait for 4 GiB would hang here, so the error must come from the prefix alone.
    let (mut tx, mut rx) = tokio::io::duplex(64);
    tx.write_all(&u32::MAX.to_le_bytes()).await.expect("write");
    let res = tokio::time::timeout(Duration::from_secs(5), read_msg::<_, ToWorker>(&mut rx, MAX_FRAME_BYTES))
        .await
        .expect("answers at once");
    match res {
        Err(ProtoError::FrameTooLarge { len, max }) => {
            assert_eq!(len, u64::from(u32::MAX));
            assert_eq!(max, MAX_FRAME_BYTES);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    drop(tx);
}

#[tokio::test]
async fn the_callers_maximum_applies_and_cannot_exceed_the_protocols() {
    let frame = encode_frame(&ToCoord::Failed { job_id: 1, message: "x".repeat(100) }).expect("encode");
    let mut r = &frame[..];
    match read_msg::<_, ToCoord>(&mut r, 50).await {
        Err(ProtoError::FrameTooLarge { len, max: 50 }) => assert_eq!(len as usize, frame.len() - 4),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    // Exactly at the limit is fine.
    let mut r = &frame[..];
    read_msg::<_, ToCoord>(&mut r, frame.len() - 4).await.expect("at the limit");
    // A caller asking for more than MAX_FRAME_BYTES still gets MAX_FRAME_BYTES.
    let hostile = ((MAX_FRAME_BYTES + 1) as u32).to_le_bytes();
    let mut r = &hostile[..];
    match read_msg::<_, ToCoord>(&mut r, usize::MAX).await {
        Err(ProtoError::FrameTooLarge { max, .. }) => assert_eq!(max, MAX_FRAME_BYTES),
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert!(matches!(
        decode_frame::<ToCoord>(&hostile, usize::MAX),
        Err(ProtoError::FrameTooLarge { max: MAX_FRAME_BYTES, .. })
    ));
}

#[tokio::test]
async fn a_frame_cut_anywhere_is_truncated_and_a_close_between_frames_is_closed() {
    let frame = encode_frame(&ToCoord::Heartbeat { seq: 70_000 }).expect("encode");
    // Nothing at all: a clean close.
    let mut empty: &[u8] = &[];
    assert!(matches!(read_msg::<_, ToCoord>(&mut empty, MAX_FRAME_BYTES).await, Err(ProtoError::Closed)));
    assert!(matches!(decode_frame::<ToCoord>(&[], MAX_FRAME_BYTES), Err(ProtoError::Closed)));
    // Every cut inside the frame, in the prefix or in the payload.
    for cut in 1..frame.len() {
        let mut r = &frame[..cut];
        let res = read_msg::<_, ToCoord>(&mut r, MAX_FRAME_BYTES).await;
        assert!(matches!(res, Err(ProtoError::Truncated)), "cut at {cut}: {res:?}");
        let res = decode_frame::<ToCoord>(&frame[..cut], MAX_FRAME_BYTES);
        assert!(matches!(res, Err(ProtoError::Truncated)), "cut at {cut}: {res:?}");
    }
}

#[tokio::test]
async fn a_peer_closing_after_whole_frames_reads_them_then_closed() {
    let (mut a, mut b) = tokio::io::duplex(1024);
    write_msg(&mut a, &ToWorker::Ping).await.expect("write");
    write_msg(&mut a, &ToWorker::Stop).await.expect("write");
    drop(a);
    assert_eq!(read_msg::<_, ToWorker>(&mut b, MAX_FRAME_BYTES).await.expect("ping"), ToWorker::Ping);
    assert_eq!(read_msg::<_, ToWorker>(&mut b, MAX_FRAME_BYTES).await.expect("stop"), ToWorker::Stop);
    assert!(matches!(read_msg::<_, ToWorker>(&mut b, MAX_FRAME_BYTES).await, Err(ProtoError::Closed)));
}

#[tokio::test]
async fn a_peer_closing_inside_a_frame_is_truncated() {
    let frame = encode_frame(&ToWorker::Refused { reason: "bye".into() }).expect("encode");
    let (mut a, mut b) = tokio::io::duplex(1024);
    a.write_all(&frame[..frame.len() - 1]).await.expect("write");
    drop(a);
    assert!(matches!(read_msg::<_, ToWorker>(&mut b, MAX_FRAME_BYTES).await, Err(ProtoError::Truncated)));
}

#[tokio::test]
async fn a_garbage_payload_is_a_decode_error() {
    for garbage in [&[0xff_u8, 0xff, 0xff][..], &[0x09], &[], &[0x02, 0x05, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]] {
        let frame = frame_of(garbage);
        let mut r = &frame[..];
        let res = read_msg::<_, ToWorker>(&mut r, MAX_FRAME_BYTES).await;
        assert!(matches!(res, Err(ProtoError::Decode(_))), "{garbage:?}: {res:?}");
        let res = decode_frame::<ToCoord>(&frame, MAX_FRAME_BYTES);
        assert!(matches!(res, Err(ProtoError::Decode(_))), "{garbage:?}: {res:?}");
    }
}

#[tokio::test]
async fn trailing_bytes_inside_a_payload_are_rejected() {
    let mut payload = encode(&ToCoord::Heartbeat { seq: 1 }).expect("encode");
    payload.push(0);
    let err = decode::<ToCoord>(&payload).expect_err("trailing byte");
    assert!(matches!(&err, ProtoError::Decode(m) if m.contains("trailing")), "{err}");
    let frame = frame_of(&payload);
    assert!(matches!(decode_frame::<ToCoord>(&frame, MAX_FRAME_BYTES), Err(ProtoError::Decode(_))));
    let mut r = &frame[..];
    assert!(matches!(read_msg::<_, ToCoord>(&mut r, MAX_FRAME_BYTES).await, Err(ProtoError::Decode(_))));
}

#[test]
fn bytes_after_a_whole_frame_are_the_next_frame() {
    let mut two = encode_frame(&ToWorker::Ping).expect("encode");
    two.extend(encode_frame(&ToWorker::Stop).expect("encode"));
    let (first, used) = decode_frame::<ToWorker>(&two, MAX_FRAME_BYTES).expect("first");
    assert_eq!((first, used), (ToWorker::Ping, 5));
    let (second, used2) = decode_frame::<ToWorker>(&two[used..], MAX_FRAME_BYTES).expect("second");
    assert_eq!((second, used2), (ToWorker::Stop, 5));
}

#[test]
fn a_hostile_string_length_is_refused() {
    // Refused { reason } declaring a string of 60 MiB (varint u32), then nothing.
    let mut payload = vec![0x02, 0xfc];
    payload.extend_from_slice(&(60u32 << 20).to_le_bytes());
    assert!(matches!(decode::<ToWorker>(&payload), Err(ProtoError::Decode(_))));
    // Declaring more than usize can hold.
    let mut payload = vec![0x02, 0xfd];
    payload.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(decode::<ToWorker>(&payload), Err(ProtoError::Decode(_))));
}

#[tokio::test]
async fn read_frame_returns_the_raw_payload() {
    let frame = frame_of(b"hello");
    let mut r = &frame[..];
    assert_eq!(read_frame(&mut r, 16).await.expect("read"), b"hello");
    let frame = frame_of(b"");
    let mut r = &frame[..];
    assert_eq!(read_frame(&mut r, 16).await.expect("read"), b"");
}

#[test]
fn messages_above_the_maximum_are_not_written() {
    let huge = ToWorker::Refused { reason: "x".repeat(MAX_FRAME_BYTES) };
    match encode_frame(&huge) {
        Err(ProtoError::FrameTooLarge { len, max }) => {
            assert!(len as usize > MAX_FRAME_BYTES);
            assert_eq!(max, MAX_FRAME_BYTES);
        }
        other => panic!("expected FrameTooLarge, got {:?}", other.map(|f| f.len())),
    }
}
