//! `lstm_cell.cu` on the emulator against `metasched_engine::lstm_cell`.
// The engine is called task by task, on slices of several batched arrays at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{ATOL, RTOL, assert_close, randn, runtimes};
use metasched_cuda::{Arg, EmuRuntime, KernelId, Runtime};
use metasched_engine::LstmParams;
use metasched_engine::lstm_cell::{lstm_cell_backward, lstm_cell_forward};

const F: usize = 3;

struct Case {
    tasks: usize,
    hidden: usize,
    p: LstmParams<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    c: Vec<f32>,
}

fn case(tasks: usize, hidden: usize, seed: u64) -> Case {
    let h4 = 4 * hidden;
    let s = 1.0 / (hidden as f32).sqrt();
    Case {
        tasks,
        hidden,
        p: LstmParams {
            w_ih: randn(seed, &[0], h4 * F, s),
            w_hh: randn(seed, &[1], h4 * hidden, s),
            b_ih: randn(seed, &[2], h4, 0.3),
            b_hh: randn(seed, &[3], h4, 0.3),
            head_w: Vec::new(),
            head_b: Vec::new(),
        },
        x: randn(seed, &[4], tasks * F, 2.0),
        h: randn(seed, &[5], tasks * hidden, 0.7),
        c: randn(seed, &[6], tasks * hidden, 1.0),
    }
}

/// Engine forward of every task: (h_new, c_new, gates, tanh_c), each concatenated over tasks.
fn engine_forward(k: &Case) -> [Vec<f32>; 4] {
    let hd = k.hidden;
    let mut out = [
        vec![0.0; k.tasks * hd],
        vec![0.0; k.tasks * hd],
        vec![0.0; k.tasks * 4 * hd],
        vec![0.0; k.tasks * hd],
    ];
    for b in 0..k.tasks {
        let [hn, cn, g, tc] = &mut out;
        let x: [f32; F] = k.x[b * F..(b + 1) * F].try_into().expect("F features");
        lstm_cell_forward(
            &mut hn[b * hd..(b + 1) * hd],
            &mut cn[b * hd..(b + 1) * hd],
            &mut g[b * 4 * hd..(b + 1) * 4 * hd],
            &mut tc[b * hd..(b + 1) * hd],
            &k.p,
            &x,
            &k.h[b * hd..(b + 1) * hd],
            &k.c[b * hd..(b + 1) * hd],
        );
    }
    out
}

fn device_forward(rt: &EmuRuntime, k: &Case) -> [Vec<f32>; 4] {
    let hd = k.hidden;
    let hn = rt.alloc::<f32>(k.tasks * hd).expect("alloc");
    let cn = rt.alloc::<f32>(k.tasks * hd).expect("alloc");
    let g = rt.alloc::<f32>(k.tasks * 4 * hd).expect("alloc");
    let tc = rt.alloc::<f32>(k.tasks * hd).expect("alloc");
    let up = |v: &[f32]| rt.upload(v).expect("upload");
    let (w_ih, w_hh, b_ih, b_hh) = (up(&k.p.w_ih), up(&k.p.w_hh), up(&k.p.b_ih), up(&k.p.b_hh));
    let (x, h, c) = (up(&k.x), up(&k.h), up(&k.c));
    rt.launch_default(
        KernelId::LstmCellForward,
        &[
            Arg::buf(&hn),
            Arg::buf(&cn),
            Arg::buf(&g),
            Arg::buf(&tc),
            Arg::buf(&w_ih),
            Arg::buf(&w_hh),
            Arg::buf(&b_ih),
            Arg::buf(&b_hh),
            Arg::buf(&x),
            Arg::buf(&h),
            Arg::buf(&c),
            Arg::int(k.tasks),
            Arg::int(hd),
        ],
    )
    .expect("launch");
    let d = |b| rt.download(b).expect("download");
    [d(&hn), d(&cn), d(&g), d(&tc)]
}

#[test]
fn forward_matches_engine() {
    // H = 20 (the default), 37 (a partial second warp), 300 (more units than threads).
    for (tasks, hidden) in [(5, 20), (3, 37), (2, 300)] {
        let k = case(tasks, hidden, 11 + hidden as u64);
        let want = engine_forward(&k);
        for rt in runtimes() {
            let got = device_forward(&rt, &k);
            for (name, (g, w)) in ["h_new", "c_new", "gates", "tanh_c"].iter().zip(got.iter().zip(&want)) {
                assert_close(
                    &format!("lstm forward {name} H={hidden} {:?}", rt.schedule()),
                    g,
                    w,
                    ATOL,
                    RTOL,
                );
            }
        }
    }
}

#[test]
fn backward_matches_engine_and_accumulates() {
    for (tasks, hidden) in [(5, 20), (3, 37), (2, 300)] {
        let k = case(tasks, hidden, 7 + hidden as u64);
        let hd = k.hidden;
        let h4 = 4 * hd;
        let [_, _, gates, tanh_c] = engine_forward(&k);
        let dh_new = randn(3, &[hd as u64, 7], tasks * hd, 1.0);
        let dc_new = randn(3, &[hd as u64, 8], tasks * hd, 1.0);
        // Gradient buffers start non-zero: the kernel must add to them.
        let g0 = |id: u64, n: usize| randn(5, &[hd as u64, id], n, 0.1);
        let (gw_ih0, gw_hh0, gb_ih0, gb_hh0) =
            (g0(1, tasks * h4 * F), g0(2, tasks * h4 * hd), g0(3, tasks * h4), g0(4, tasks * h4));
        // Engine, task by task, each with its own gradient accumulator.
        let mut want_dh = vec![0.0; tasks * hd];
        let mut want_dc = vec![0.0; tasks * hd];
        let mut want_dg = vec![0.0; tasks * h4];
        let (mut w_gwi, mut w_gwh, mut w_gbi, mut w_gbh) =
            (gw_ih0.clone(), gw_hh0.clone(), gb_ih0.clone(), gb_hh0.clone());
        for b in 0..tasks {
            let mut grad = LstmParams {
                w_ih: w_gwi[b * h4 * F..(b + 1) * h4 * F].to_vec(),
                w_hh: w_gwh[b * h4 * hd..(b + 1) * h4 * hd].to_vec(),
                b_ih: w_gbi[b * h4..(b + 1) * h4].to_vec(),
                b_hh: w_gbh[b * h4..(b + 1) * h4].to_vec(),
                head_w: Vec::new(),
                head_b: Vec::new(),
            };
            let x: [f32; F] = k.x[b * F..(b + 1) * F].try_into().expect("F features");
            lstm_cell_backward(
                &mut want_dh[b * hd..(b + 1) * hd],
                &mut want_dc[b * hd..(b + 1) * hd],
                &mut want_dg[b * h4..(b + 1) * h4],
                &mut grad,
                &k.p,
                &x,
                &k.h[b * hd..(b + 1) * hd],
                &k.c[b * hd..(b + 1) * hd],
                &gates[b * h4..(b + 1) * h4],
                &tanh_c[b * hd..(b + 1) * hd],
                &dh_new[b * hd..(b + 1) * hd],
                &dc_new[b * hd..(b + 1) * hd],
            );
            w_gwi[b * h4 * F..(b + 1) * h4 * F].copy_from_slice(&grad.w_ih);
            w_gwh[b * h4 * hd..(b + 1) * h4 * hd].copy_from_slice(&grad.w_hh);
            w_gbi[b * h4..(b + 1) * h4].copy_from_slice(&grad.b_ih);
            w_gbh[b * h4..(b + 1) * h4].copy_from_slice(&grad.b_hh);
        }
        for rt in runtimes() {
            let up = |v: &[f32]| rt.upload(v).expect("upload");
            let (dh, dc, dg) =
                (up(&vec![0.0; tasks * hd]), up(&vec![0.0; tasks * hd]), up(&vec![0.0; tasks * h4]));
            let (gwi, gwh, gbi, gbh) = (up(&gw_ih0), up(&gw_hh0), up(&gb_ih0), up(&gb_hh0));
            let (w_ih, w_hh, x, h, c) = (up(&k.p.w_ih), up(&k.p.w_hh), up(&k.x), up(&k.h), up(&k.c));
            let (g, tc, dhn, dcn) = (up(&gates), up(&tanh_c), up(&dh_new), up(&dc_new));
            rt.launch_default(
                KernelId::LstmCellBackward,
                &[
                    Arg::buf(&dh),
                    Arg::buf(&dc),
                    Arg::buf(&dg),
                    Arg::buf(&gwi),
                    Arg::buf(&gwh),
                    Arg::buf(&gbi),
                    Arg::buf(&gbh),
                    Arg::buf(&w_ih),
                    Arg::buf(&w_hh),
                    Arg::buf(&x),
                    Arg::buf(&h),
                    Arg::buf(&c),
                    Arg::buf(&g),
                    Arg::buf(&tc),
                    Arg::buf(&dhn),
                    Arg::buf(&dcn),
                    Arg::int(tasks),
                    Arg::int(hd),
                ],
            )
            .expect("launch");
            let d = |b| rt.download(b).expect("download");
            let s = format!("H={hd} {:?}", rt.schedule());
            assert_close(&format!("lstm backward dh {s}"), &d(&dh), &want_dh, ATOL, RTOL);
            assert_close(&format!("lstm backward dc {s}"), &d(&dc), &want_dc, ATOL, RTOL);
            assert_close(&format!("lstm backward dgates {s}"), &d(&dg), &want_dg, ATOL, RTOL);
            assert_close(&format!("lstm backward dW_ih {s}"), &d(&gwi), &w_gwi, ATOL, RTOL);
            assert_close(&format!("lstm backward dW_hh {s}"), &d(&gwh), &w_gwh, ATOL, RTOL);
            assert_close(&format!("lstm backward db_ih {s}"), &d(&gbi), &w_gbi, ATOL, RTOL);
            assert_close(&format!("lstm backward db_hh {s}"), &d(&gbh), &w_gbh, ATOL, RTOL);
        }
    }
}

#[test]
fn state_may_be_updated_in_place() {
    // h_new/c_new aliasing h/c (and dh/dc aliasing dh_new/dc_new) is part of the contract.
    let k = case(4, 20, 99);
    let want = engine_forward(&k);
    let rt = EmuRuntime::new();
    let up = |v: &[f32]| rt.upload(v).expect("upload");
    let (h, c) = (up(&k.h), up(&k.c));
    let (g, tc) = (rt.alloc::<f32>(4 * 80).expect("alloc"), rt.alloc::<f32>(4 * 20).expect("alloc"));
    let (w_ih, w_hh, b_ih, b_hh, x) = (up(&k.p.w_ih), up(&k.p.w_hh), up(&k.p.b_ih), up(&k.p.b_hh), up(&k.x));
    rt.launch_default(
        KernelId::LstmCellForward,
        &[
            Arg::buf(&h),
            Arg::buf(&c),
            Arg::buf(&g),
            Arg::buf(&tc),
            Arg::buf(&w_ih),
            Arg::buf(&w_hh),
            Arg::buf(&b_ih),
            Arg::buf(&b_hh),
            Arg::buf(&x),
            Arg::buf(&h),
            Arg::buf(&c),
            Arg::int(4),
            Arg::int(20),
        ],
    )
    .expect("launch");
    assert_close("lstm forward in place h", &rt.download(&h).expect("download"), &want[0], ATOL, RTOL);
    assert_close("lstm forward in place c", &rt.download(&c).expect("download"), &want[1], ATOL, RTOL);
}
