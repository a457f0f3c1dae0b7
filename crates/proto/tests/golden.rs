//! Golden bytes: the exact encoding of every message variant and of the frame format.
//!
//! Any change of these bytes changes the wire protocol. If it is deliberate, bump
//! `PROTOCOL_VERSION` and paste the new hex here; if it is not, a message shape, a type inside
//! a message, or the codec changed by accident.

mod common;

use common::{
    TO_COORD_VARIANTS, TO_WORKER_VARIANTS, to_coord_examples, to_coord_variant, to_worker_examples,
    to_worker_variant,
};
use metasched_proto::{MAX_FRAME_BYTES, ToCoord, ToWorker, decode, decode_frame, encode, encode_frame};

/// Expected payload hex of each `ToWorker` example, by name.
const TO_WORKER_GOLDEN: &[(&str, &str)] = &[
    (
        "challenge",
        "00\
         1111111111111111111111111111111111111111111111111111111111111111\
         000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    ),
    (
        "welcome",
        // variant 1, worker_id 7; config: layers [1, 40, 40, 1], relu, mse; inner: 5 steps,
        // first_order false, learn_init true, optimizer sgd (variant 0, protocol 3); scheduler:
        // lstm, hidden 20, lr_min 0.0, lr_max 0.1, lr_fixed 0.01 (f64); tasks: sinusoid, 10
        // shots, 10 query, 1 way, seed 7; threads 2; heartbeat_s 2.0.
        "01 07 04 01 28 28 01 00 00 05 00 01 00 00 14 0000000000000000 9a9999999999b93f \
         7b14ae47e17a843f 00 0a 0a 01 07 02 0000000000000040",
    ),
    ("refused", "02 15 61757468656e7469636174696f6e206661696c6564"),
    (
        "work_metagrad",
        // variant 3, job_id 42, Job::MetaGrad { 3, 3, 8, 4 }, Some(ParamsBlob { 3, [1, -2, 0.5] }).
        "03 2a 00 03 03 08 04 01 03 03 0000803f 000000c0 0000003f",
    ),
    (
        "work_eval",
        // variant 3, job_id 300 (varint fb + u16), Job::Eval { test, 1, 0, 16, 5, 20 }, None.
        "03 fb2c01 01 01 01 00 10 05 14 00",
    ),
    ("ping", "04"),
    ("stop", "05"),
    // variant 6, group 2, world 3.
    ("create_group", "06 02 03"),
    // variant 7, group 2, id [ab, cd], rank 1, world 3, timeout_s 0.5 (f64).
    ("join_group", "07 02 02 abcd 01 03 000000000000e03f"),
    ("leave_group", "08 02"),
    // variant 9, job_id 42, Job::MetaGrad { 3, 3, 8, 4 }, no params, group 2.
    ("group_work", "09 2a 00 03 03 08 04 00 02"),
];

/// Expected payload hex of each `ToCoord` example, by name.
const TO_COORD_GOLDEN: &[(&str, &str)] = &[
    ("window_done", "0a070303010200000000010000003f010000803e000000000000e03f"),
    (
        "hello",
        // variant 0, version 2, caps: cuda, 1 device, 4 cores, "0.1.0", "host-1234",
        // Some(nccl); nonce.
        "00 02 01 01 04 05 302e312e30 09 686f73742d31323334 01 00 \
         1111111111111111111111111111111111111111111111111111111111111111",
    ),
    ("auth", "01 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
    (
        "step_done",
        // variant 2, job_id 42; step 3, version 3, first 8; FixedSum: 3 zigzag-varint i128
        // (0.5, -1.25 and 3e-3 times 2^64: u128, u128, u64 markers), overflow false;
        // outer_loss [0.25, 0.125]; lr [0.01, 0.02]; compute_s 1.5.
        "02 2a 03 03 08 03 fe 00000000000000000100000000000000 \
         fe ffffffffffffff7f0200000000000000 fd 000000004c378901 00 \
         02 0000803e 0000003e 02 0ad7233c 0ad7a33c 000000000000f83f",
    ),
    (
        "eval_done",
        // variant 3, job_id 300; first 4, outer_loss [0.5], lr [0.05], accuracy [0.75], 0.25 s.
        "03 fb2c01 04 01 0000003f 01 cdcc4c3d 01 0000403f 000000000000d03f",
    ),
    ("failed", "04 05 19 7461736b20736f757263653a206e6f20737563682066696c65"),
    ("heartbeat", "05 fc70110100"),
    ("group_created", "06 02 02 abcd"),
    ("group_joined", "07 02"),
    ("group_failed", "08 02 07 6e6f204e43434c"),
    (
        "group_step_done",
        // variant 9, job_id 42, group 2, root true, then the step_done example's StepResult.
        "09 2a 02 01 03 03 08 03 fe 00000000000000000100000000000000 \
         fe ffffffffffffff7f0200000000000000 fd 000000004c378901 00 \
         02 0000803e 0000003e 02 0ad7233c 0ad7a33c 000000000000f83f",
    ),
];

/// Expected frames: 4-byte little-endian payload length, then the payload.
const PING_FRAME: &str = "01000000 04";
const HEARTBEAT_300_FRAME: &str = "04000000 05 fb2c01";

fn unhex(s: &str) -> Vec<u8> {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(compact).expect("golden hex literal")
}

fn golden<'a>(table: &'a [(&str, &str)], name: &str) -> &'a str {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, h)| *h)
        .unwrap_or_else(|| panic!("no golden bytes for {name}"))
}

#[test]
fn every_to_worker_message_encodes_to_its_golden_bytes() {
    let examples = to_worker_examples();
    assert_eq!(examples.len(), TO_WORKER_GOLDEN.len(), "one golden entry per example");
    let mut seen = [false; TO_WORKER_VARIANTS];
    for (name, msg) in examples {
        seen[to_worker_variant(&msg)] = true;
        let want = unhex(golden(TO_WORKER_GOLDEN, name));
        let got = encode(&msg).expect("encode");
        assert_eq!(hex::encode(&got), hex::encode(&want), "ToWorker example `{name}` changed on the wire");
        assert_eq!(decode::<ToWorker>(&want).expect("decode golden"), msg, "golden `{name}` decodes back");
    }
    assert!(seen.iter().all(|&s| s), "every ToWorker variant has golden bytes: {seen:?}");
}

#[test]
fn every_to_coord_message_encodes_to_its_golden_bytes() {
    let examples = to_coord_examples();
    assert_eq!(examples.len(), TO_COORD_GOLDEN.len(), "one golden entry per example");
    let mut seen = [false; TO_COORD_VARIANTS];
    for (name, msg) in examples {
        seen[to_coord_variant(&msg)] = true;
        let want = unhex(golden(TO_COORD_GOLDEN, name));
        let got = encode(&msg).expect("encode");
        assert_eq!(hex::encode(&got), hex::encode(&want), "ToCoord example `{name}` changed on the wire");
        assert_eq!(decode::<ToCoord>(&want).expect("decode golden"), msg, "golden `{name}` decodes back");
    }
    assert!(seen.iter().all(|&s| s), "every ToCoord variant has golden bytes: {seen:?}");
}

#[test]
fn frames_have_their_golden_bytes() {
    let ping = encode_frame(&ToWorker::Ping).expect("encode");
    assert_eq!(hex::encode(&ping), hex::encode(unhex(PING_FRAME)));
    let hb = encode_frame(&ToCoord::Heartbeat { seq: 300 }).expect("encode");
    assert_eq!(hex::encode(&hb), hex::encode(unhex(HEARTBEAT_300_FRAME)));

    let (msg, used) = decode_frame::<ToCoord>(&unhex(HEARTBEAT_300_FRAME), MAX_FRAME_BYTES).expect("decode");
    assert_eq!((msg, used), (ToCoord::Heartbeat { seq: 300 }, 8));
}

#[test]
fn every_example_frame_is_its_payload_behind_a_length_prefix() {
    for (name, msg) in to_worker_examples() {
        let payload = unhex(golden(TO_WORKER_GOLDEN, name));
        let frame = encode_frame(&msg).expect("encode");
        assert_eq!(frame[..4], (payload.len() as u32).to_le_bytes(), "{name}");
        assert_eq!(frame[4..], payload[..], "{name}");
    }
    for (name, msg) in to_coord_examples() {
        let payload = unhex(golden(TO_COORD_GOLDEN, name));
        let frame = encode_frame(&msg).expect("encode");
        assert_eq!(frame[..4], (payload.len() as u32).to_le_bytes(), "{name}");
        assert_eq!(frame[4..], payload[..], "{name}");
    }
}
