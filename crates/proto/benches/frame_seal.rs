//! What sealing costs per frame: a `StepDone` carrying the gradient sum of learners of 1.8k
//! (the default), 67k (1-256-256-1) and 1M parameters, framed plain (`encode_frame` +
//! `decode`) and sealed (`Sealer::seal` + `Opener::open`: HMAC-SHA256 over the whole frame).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use metasched_engine::FixedSum;
use metasched_proto::{
    FRAME_HEADER_BYTES, Session, StepResult, ToCoord, Token, decode, encode_frame, session_keys,
};

fn step_done(n: usize) -> ToCoord {
    let mut sum = FixedSum::zeros(n);
    sum.add_f32(0, &(0..n).map(|i| (i as f32 * 0.37).sin() * 1e-2).collect::<Vec<_>>());
    ToCoord::StepDone {
        job_id: 1,
        result: StepResult {
            step: 0,
            version: 1,
            first: 0,
            sum,
            outer_loss: vec![0.5; 25],
            lr: vec![0.01; 25 * 5 * 6],
            compute_s: 0.1,
        },
    }
}

fn frame_seal(c: &mut Criterion) {
    let token = Token::new("bench").expect("token");
    let keys = session_keys(&token, &[1; 32], &[2; 32]);
    let mut group = c.benchmark_group("frame");
    for n in [1_761usize, 66_817, 1_000_000] {
        let msg = step_done(n);
        let plain = encode_frame(&msg).expect("encode");
        group.throughput(Throughput::Bytes(plain.len() as u64));
        group.bench_with_input(BenchmarkId::new("plain", n), &msg, |b, msg| {
            b.iter(|| {
                let frame = encode_frame(msg).expect("encode");
                decode::<ToCoord>(&frame[FRAME_HEADER_BYTES..]).expect("decode")
            })
        });
        let (mut tx, mut rx) = (Session::worker(&keys), Session::coordinator(&keys));
        group.bench_with_input(BenchmarkId::new("sealed", n), &msg, |b, msg| {
            b.iter(|| {
                let frame = tx.sealer.seal(msg).expect("seal");
                rx.opener.open::<ToCoord>(&frame[FRAME_HEADER_BYTES..]).expect("open")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, frame_seal);
criterion_main!(benches);
