//! `loss.cu` on the emulator against `metasched_engine::loss`.
// The engine is called task by task, on slices of several batched arrays at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{ATOL, RTOL, assert_close, labels, randn, runtimes};
use metasched_cuda::{Arg, KernelId, Runtime};
use metasched_engine::LossKind;
use metasched_engine::TargetsRef;
use metasched_engine::loss::{loss_forward_backward, loss_rop};

const SHAPES: [(usize, usize, usize); 3] = [(4, 10, 1), (3, 25, 5), (2, 700, 10)];

#[test]
fn mse_matches_engine() {
    for (tasks, n, d) in SHAPES {
        let m = n * d;
        let out = randn(1, &[n as u64, 0], tasks * m, 1.0);
        let y = randn(1, &[n as u64, 1], tasks * m, 1.0);
        let rout = randn(1, &[n as u64, 2], tasks * m, 1.0);
        let mut want_loss = vec![0.0; tasks];
        let mut want_dout = vec![0.0; tasks * m];
        let mut want_rdout = vec![0.0; tasks * m];
        let mut probs = vec![0.0; m];
        for b in 0..tasks {
            let s = b * m..(b + 1) * m;
            want_loss[b] = loss_forward_backward(
                &mut want_dout[s.clone()],
                &mut probs,
                LossKind::Mse,
                &out[s.clone()],
                TargetsRef::Values(&y[s.clone()]),
                n,
                d,
            );
            loss_rop(&mut want_rdout[s.clone()], LossKind::Mse, &probs, &rout[s], n, d);
        }
        for rt in runtimes() {
            let up = |v: &[f32]| rt.upload(v).expect("upload");
            let (o, t, ro) = (up(&out), up(&y), up(&rout));
            let loss = rt.alloc::<f32>(tasks).expect("alloc");
            let (dout, rdout) =
                (rt.alloc::<f32>(tasks * m).expect("alloc"), rt.alloc::<f32>(tasks * m).expect("alloc"));
            let (bb, nn, dd) = (Arg::int(tasks), Arg::int(n), Arg::int(d));
            rt.launch_default(
                KernelId::MseForwardBackward,
                &[Arg::buf(&loss), Arg::buf(&dout), Arg::buf(&o), Arg::buf(&t), bb, nn, dd],
            )
            .expect("launch");
            rt.launch_default(KernelId::MseRop, &[Arg::buf(&rdout), Arg::buf(&ro), bb, nn, dd])
                .expect("launch");
            let label = format!("mse n={n} d={d} {:?}", rt.schedule());
            assert_close(&format!("{label} loss"), &rt.download(&loss).expect("dl"), &want_loss, ATOL, RTOL);
            assert_close(&format!("{label} dout"), &rt.download(&dout).expect("dl"), &want_dout, ATOL, RTOL);
            assert_close(
                &format!("{label} rdout"),
                &rt.download(&rdout).expect("dl"),
                &want_rdout,
                ATOL,
                RTOL,
            );
        }
    }
}

#[test]
fn cross_entropy_matches_engine() {
    for (tasks, n, d) in SHAPES {
        let d = d.max(2);
        let m = n * d;
        let out = randn(2, &[n as u64, 0], tasks * m, 3.0);
        let lab = labels(2, &[n as u64, 1], tasks * n, d);
        let rout = randn(2, &[n as u64, 2], tasks * m, 1.0);
        let mut want_loss = vec![0.0; tasks];
        let mut want_dout = vec![0.0; tasks * m];
        let mut want_probs = vec![0.0; tasks * m];
        let mut want_rdout = vec![0.0; tasks * m];
        for b in 0..tasks {
            let s = b * m..(b + 1) * m;
            want_loss[b] = loss_forward_backward(
                &mut want_dout[s.clone()],
                &mut want_probs[s.clone()],
                LossKind::CrossEntropy,
                &out[s.clone()],
                TargetsRef::Labels(&lab[b * n..(b + 1) * n]),
                n,
                d,
            );
            loss_rop(
                &mut want_rdout[s.clone()],
                LossKind::CrossEntropy,
                &want_probs[s.clone()],
                &rout[s],
                n,
                d,
            );
        }
        for rt in runtimes() {
            let up = |v: &[f32]| rt.upload(v).expect("upload");
            let (o, ro, probs_in) = (up(&out), up(&rout), up(&want_probs));
            let l = rt.upload(&lab).expect("upload");
            let loss = rt.alloc::<f32>(tasks).expect("alloc");
            let alloc = || rt.alloc::<f32>(tasks * m).expect("alloc");
            let (dout, probs, rdout) = (alloc(), alloc(), alloc());
            let (bb, nn, dd) = (Arg::int(tasks), Arg::int(n), Arg::int(d));
            rt.launch_default(
                KernelId::CrossEntropyForwardBackward,
                &[Arg::buf(&loss), Arg::buf(&dout), Arg::buf(&probs), Arg::buf(&o), Arg::buf(&l), bb, nn, dd],
            )
            .expect("launch");
            // The R-operator from the engine's softmax, so its check is independent of the above.
            rt.launch_default(
                KernelId::CrossEntropyRop,
                &[Arg::buf(&rdout), Arg::buf(&probs_in), Arg::buf(&ro), bb, nn, dd],
            )
            .expect("launch");
            let label = format!("cross_entropy n={n} d={d} {:?}", rt.schedule());
            assert_close(&format!("{label} loss"), &rt.download(&loss).expect("dl"), &want_loss, ATOL, RTOL);
            assert_close(&format!("{label} dout"), &rt.download(&dout).expect("dl"), &want_dout, ATOL, RTOL);
            assert_close(
                &format!("{label} probs"),
                &rt.download(&probs).expect("dl"),
                &want_probs,
                ATOL,
                RTOL,
            );
            assert_close(
                &format!("{label} rdout"),
                &rt.download(&rdout).expect("dl"),
                &want_rdout,
                ATOL,
                RTOL,
            );
        }
    }
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
