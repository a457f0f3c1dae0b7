//! `loss.cu` on the emulator against `metasched_engine::loss`, under every thread schedule:
//! the shared checks of [`metasched_cuda::checks`] (mse and cross-entropy, forward,
//! backward and R-operator, three shapes), and what they do not cover: an out-of-range label.

mod common;

use common::check_under_every_schedule;
use metasched_cuda::{Arg, KernelId, Runtime};

#[test]
fn mse_forward_backward_matches_engine() {
    check_under_every_schedule(KernelId::MseForwardBackward);
}

#[test]
fn mse_rop_matches_engine() {
    check_under_every_schedule(KernelId::MseRop);
}

#[test]
fn cross_entropy_forward_backward_matches_engine() {
    check_under_every_schedule(KernelId::CrossEntropyForwardBackward);
}

#[test]
fn cross_entropy_rop_matches_engine() {
    check_under_every_schedule(KernelId::CrossEntropyRop);
}

#[test]
fn cross_entropy_label_out_of_range_gives_nan_not_a_wild_read() {
    let rt = metasched_cuda::EmuRuntime::new();
    let out = rt.upload(&[0.5f32, -0.5, 1.0, 2.0]).expect("upload");
    let lab = rt.upload(&[1u32, 7]).expect("upload");
    let loss = rt.alloc::<f32>(1).expect("alloc");
    let (dout, probs) = (rt.alloc::<f32>(4).expect("alloc"), rt.alloc::<f32>(4).expect("alloc"));
    rt.launch_default(
        KernelId::CrossEntropyForwardBackward,
        &[
            Arg::buf(&loss),
            Arg::buf(&dout),
            Arg::buf(&probs),
            Arg::buf(&out),
            Arg::buf(&lab),
            Arg::int(1),
            Arg::int(2),
            Arg::int(2),
        ],
    )
    .expect("launch");
    assert!(rt.download(&loss).expect("dl")[0].is_nan());
}
