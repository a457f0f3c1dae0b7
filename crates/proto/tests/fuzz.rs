//! Property tests: the frame decoder takes any bytes without panicking, and no length prefix
//! makes it allocate or wait beyond the maximum.

use metasched_proto::{
    MAX_FRAME_BYTES, ProtoError, ToCoord, ToWorker, decode, decode_frame, encode_frame, read_msg,
};
use proptest::prelude::*;

/// Frames whose payload is arbitrary bytes (so the decoder gets past the prefix).
fn framed_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512).prop_map(|p| {
        let mut f = (p.len() as u32).to_le_bytes().to_vec();
        f.extend(p);
        f
    })
}

/// Valid frames with a few bytes flipped.
fn mutated_frames() -> impl Strategy<Value = Vec<u8>> {
    let msgs = prop_oneof![
        Just(ToCoord::Heartbeat { seq: 300 }),
        Just(ToCoord::Failed { job_id: 9, message: "boom".into() }),
        Just(ToCoord::Auth { proof: [7; 32] }),
    ];
    (msgs, proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)).prop_map(
        |(m, flips)| {
            let mut f = encode_frame(&m).expect("encode");
            for (i, b) in flips {
                let at = i.index(f.len());
                f[at] ^= b;
            }
            f
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_decode_or_error_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok((_, used)) = decode_frame::<ToWorker>(&bytes, MAX_FRAME_BYTES) {
            prop_assert!(used <= bytes.len());
        }
        if let Ok((_, used)) = decode_frame::<ToCoord>(&bytes, MAX_FRAME_BYTES) {
            prop_assert!(used <= bytes.len());
        }
        let _ = decode::<ToWorker>(&bytes);
        let _ = decode::<ToCoord>(&bytes);
    }

    #[test]
    fn arbitrary_payloads_decode_or_error_never_panic(frame in framed_bytes()) {
        for msg in [decode_frame::<ToWorker>(&frame, MAX_FRAME_BYTES).map(|(_, n)| n),
                    decode_frame::<ToCoord>(&frame, MAX_FRAME_BYTES).map(|(_, n)| n)] {
            match msg {
                Ok(used) => prop_assert_eq!(used, frame.len()),
                Err(e) => prop_assert!(matches!(e, ProtoError::Decode(_)), "{}", e),
            }
        }
    }

    #[test]
    fn mutated_frames_decode_or_error_never_panic(frame in mutated_frames()) {
        let _ = decode_frame::<ToCoord>(&frame, MAX_FRAME_BYTES);
        let _ = decode_frame::<ToWorker>(&frame, MAX_FRAME_BYTES);
    }

    #[test]
    fn any_length_prefix_above_the_maximum_errors(len in (MAX_FRAME_BYTES as u32 + 1)..=u32::MAX, max in 0usize..=MAX_FRAME_BYTES) {
        // The payload never arrives: only the prefix decides.
        let prefix = len.to_le_bytes();
        let res = decode_frame::<ToCoord>(&prefix, MAX_FRAME_BYTES);
        prop_assert!(matches!(res, Err(ProtoError::FrameTooLarge { .. })), "{:?}", res);
        let res = decode_frame::<ToCoord>(&prefix, max);
        prop_assert!(matches!(res, Err(ProtoError::FrameTooLarge { .. })), "{:?}", res);
    }

    #[test]
    fn any_length_prefix_is_bounded_by_the_callers_maximum(len in any::<u32>(), max in 0usize..4096) {
        let prefix = len.to_le_bytes();
        let res = decode_frame::<ToWorker>(&prefix, max);
        if len as usize > max {
            prop_assert!(matches!(res, Err(ProtoError::FrameTooLarge { .. })), "{:?}", res);
        } else if len == 0 {
            prop_assert!(matches!(res, Err(ProtoError::Decode(_))), "{:?}", res);
        } else {
            prop_assert!(matches!(res, Err(ProtoError::Truncated)), "{:?}", res);
        }
    }

    #[test]
    fn the_stream_reader_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let frames = rt.block_on(async {
            let mut r = &bytes[..];
            // Read frames until an error: the reader must stop with one, never panic.
            let mut frames = 0;
            while read_msg::<_, ToCoord>(&mut r, MAX_FRAME_BYTES).await.is_ok() {
                frames += 1;
            }
            frames
        });
        // Every message takes at least a 4-byte prefix and a 1-byte payload.
        prop_assert!(frames * 5 <= bytes.len());
    }
}
