//! Every message variant survives encoding, framing and a real (in-memory) stream.

mod common;

use common::{to_coord_examples, to_worker_examples};
use metasched_engine::FixedSum;
use metasched_proto::{
    Job, MAX_FRAME_BYTES, ParamsBlob, StepResult, ToCoord, ToWorker, decode, decode_frame, encode,
    encode_frame, read_msg, write_msg,
};

#[test]
fn every_variant_round_trips_through_the_codec() {
    for (name, msg) in to_worker_examples() {
        let back: ToWorker = decode(&encode(&msg).expect("encode")).expect("decode");
        assert_eq!(back, msg, "{name}");
    }
    for (name, msg) in to_coord_examples() {
        let back: ToCoord = decode(&encode(&msg).expect("encode")).expect("decode");
        assert_eq!(back, msg, "{name}");
    }
}

#[test]
fn every_variant_round_trips_through_frames() {
    for (name, msg) in to_worker_examples() {
        let frame = encode_frame(&msg).expect("encode");
        let (back, used) = decode_frame::<ToWorker>(&frame, MAX_FRAME_BYTES).expect("decode");
        assert_eq!((back, used), (msg, frame.len()), "{name}");
    }
    for (name, msg) in to_coord_examples() {
        let frame = encode_frame(&msg).expect("encode");
        let (back, used) = decode_frame::<ToCoord>(&frame, MAX_FRAME_BYTES).expect("decode");
        assert_eq!((back, used), (msg, frame.len()), "{name}");
    }
}

#[tokio::test]
async fn every_variant_round_trips_through_a_stream_in_order() {
    let (mut a, mut b) = tokio::io::duplex(1 << 20);
    for (_, msg) in to_worker_examples() {
        write_msg(&mut a, &msg).await.expect("write");
    }
    for (_, msg) in to_coord_examples() {
        write_msg(&mut b, &msg).await.expect("write");
    }
    for (name, msg) in to_worker_examples() {
        assert_eq!(read_msg::<_, ToWorker>(&mut b, MAX_FRAME_BYTES).await.expect("read"), msg, "{name}");
    }
    for (name, msg) in to_coord_examples() {
        assert_eq!(read_msg::<_, ToCoord>(&mut a, MAX_FRAME_BYTES).await.expect("read"), msg, "{name}");
    }
}

#[test]
fn extreme_values_round_trip() {
    // Overflowed sums, huge and negative fixed-point values, non-finite floats, empty vectors.
    let mut sum = FixedSum::zeros(4);
    sum.add_f32(0, &[1.0e11, -1.0e11, f32::MIN_POSITIVE, f32::NAN]);
    assert!(sum.overflowed());
    let msg = ToCoord::StepDone {
        job_id: u64::MAX,
        result: StepResult {
            step: u64::MAX,
            version: 0,
            first: usize::MAX,
            sum,
            outer_loss: vec![f32::INFINITY, -0.0],
            lr: Vec::new(),
            compute_s: f64::MAX,
        },
    };
    let back: ToCoord = decode(&encode(&msg).expect("encode")).expect("decode");
    assert_eq!(back, msg);

    let big = ToWorker::Work {
        job_id: 0,
        job: Job::MetaGrad { step: 0, version: 1, first: 0, count: 1 },
        params: Some(ParamsBlob { version: 1, values: (0..300_000).map(|i| i as f32 * 0.5).collect() }),
    };
    let frame = encode_frame(&big).expect("encode");
    assert!(frame.len() > 1 << 20, "a multi-megabyte message exercises the largest decode limit");
    let (back, _) = decode_frame::<ToWorker>(&frame, MAX_FRAME_BYTES).expect("decode");
    assert_eq!(back, big);
}

#[test]
fn nan_payloads_keep_their_bits() {
    let msg = ToCoord::EvalDone {
        job_id: 1,
        result: metasched_proto::EvalResult {
            first: 0,
            outer_loss: vec![f32::from_bits(0x7fc0_0001)],
            lr: vec![],
            accuracy: vec![],
            compute_s: f64::NAN,
        },
    };
    let back: ToCoord = decode(&encode(&msg).expect("encode")).expect("decode");
    let ToCoord::EvalDone { result, .. } = back else { panic!("variant") };
    assert_eq!(result.outer_loss[0].to_bits(), 0x7fc0_0001);
    assert!(result.compute_s.is_nan());
}

/// A `StepDone` carrying the gradient sum of a learner of `n` parameters whose fixed-point
/// values are all small (1 byte each on the wire) or all large (17 bytes each).
fn step_done_of(n: usize, small: bool) -> ToCoord {
    let mut sum = FixedSum::zeros(n);
    let value = if small { 0.0 } else { 0.75 };
    sum.add_f32(0, &vec![value; n]);
    ToCoord::StepDone {
        job_id: 3,
        result: StepResult {
            step: 0,
            version: 1,
            first: 0,
            sum,
            outer_loss: vec![0.5; 27],
            lr: vec![0.01; 27 * 5 * 6],
            compute_s: 0.1,
        },
    }
}

/// Regression: the decoder's limit once came from the encoded size while bincode charges 16
/// bytes per `i128` however few bytes it takes on the wire, so the `StepDone` of any learner
/// a little wider than the default (1-60-60-1, or 27 tasks of the default) was refused as
/// `LimitExceeded` and distributed training re-dispatched the part forever.
#[test]
fn gradient_sums_of_every_size_round_trip() {
    for n in [1_761, 3_900, 4_500, 66_817, 103_681, 1_000_000] {
        for small in [true, false] {
            let msg = step_done_of(n, small);
            let frame = encode_frame(&msg).expect("encode");
            let (back, used) = decode_frame::<ToCoord>(&frame, MAX_FRAME_BYTES).unwrap_or_else(|e| {
                panic!("{n} parameters (small values: {small}), {} bytes: {e}", frame.len())
            });
            assert_eq!((back, used), (msg, frame.len()), "{n} parameters (small values: {small})");
        }
    }
}

/// Every inner optimiser crosses the wire inside the run's setup (bincode cannot read the
/// tagged map checkpoints use, so the binary spelling is an ordinary enum).
#[test]
fn run_setups_with_every_inner_optimizer_round_trip() {
    use metasched_engine::InnerOptimizer;
    for optimizer in [
        InnerOptimizer::Sgd,
        InnerOptimizer::Momentum { mu: 0.9 },
        InnerOptimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
    ] {
        let mut setup = common::setup();
        setup.config.inner.optimizer = optimizer;
        let msg = ToWorker::Welcome { worker_id: 3, setup };
        let back: ToWorker = decode(&encode(&msg).expect("encode")).expect("decode");
        assert_eq!(back, msg, "{optimizer:?}");
    }
}
