//! `sgd_update.cu` on the emulator against the engine's inner-loop update and meta-backward
//! step (`inner_loop.rs`: `theta_{t+1} = theta_t − a_t[group] g_t`,
//! `dJ/da_t[k] = −Σ_{i∈k} v g`, `u = a_t[group] v`).
// The engine is called task by task, on slices of several batched arrays at once.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{ATOL, RTOL, assert_close, randn, runtimes, uniform};
use metasched_cuda::{Arg, Dim3, KernelId, LaunchConfig, Runtime};
use metasched_engine::ThetaLayout;
use metasched_engine::linalg::dot;

struct Case {
    layout: ThetaLayout,
    theta: Vec<f32>,
    grad: Vec<f32>,
    v: Vec<f32>,
    rates: Vec<f32>,
}

fn case(widths: &[usize], tasks: usize, seed: u64) -> Case {
    let layout = ThetaLayout::from_widths(widths);
    let (p, g) = (layout.len(), layout.groups());
    Case {
        theta: randn(seed, &[0], tasks * p, 0.5),
        grad: randn(seed, &[1], tasks * p, 1.0),
        v: randn(seed, &[2], tasks * p, 1.0),
        rates: uniform(seed, &[3], tasks * g, 0.0, 0.1),
        layout,
    }
}

fn offsets(layout: &ThetaLayout) -> Vec<i32> {
    layout.offsets.iter().map(|&o| o as i32).collect()
}

#[test]
fn forward_matches_engine_update() {
    for (widths, tasks) in [(vec![1, 40, 40, 1], 4), (vec![5, 300, 7], 3), (vec![2, 3], 1)] {
        let k = case(&widths, tasks, widths.len() as u64);
        let (p, g) = (k.layout.len(), k.layout.groups());
        let mut want = vec![0.0; tasks * p];
        for b in 0..tasks {
            for (grp, &a) in k.rates[b * g..(b + 1) * g].iter().enumerate() {
                for i in k.layout.group(grp) {
                    want[b * p + i] = k.theta[b * p + i] - a * k.grad[b * p + i];
                }
            }
        }
        for rt in runtimes() {
            let out = rt.alloc::<f32>(tasks * p).expect("alloc");
            let (theta, grad, rates) = (
                rt.upload(&k.theta).expect("upload"),
                rt.upload(&k.grad).expect("upload"),
                rt.upload(&k.rates).expect("upload"),
            );
            let offs = rt.upload(&offsets(&k.layout)).expect("upload");
            let args = [
                Arg::buf(&out),
                Arg::buf(&theta),
                Arg::buf(&grad),
                Arg::buf(&rates),
                Arg::buf(&offs),
                Arg::int(tasks),
                Arg::int(p),
                Arg::int(g),
            ];
            rt.launch_default(KernelId::SgdUpdateForward, &args).expect("launch");
            let label = format!("sgd forward {widths:?} {:?}", rt.schedule());
            assert_close(&label, &rt.download(&out).expect("download"), &want, ATOL, RTOL);
            // In place, with a block that is not a multiple of 32.
            let cfg =
                LaunchConfig { grid: Dim3::xy(g as u32, tasks as u32), block: Dim3::x(45), shared_bytes: 0 };
            let args = [
                Arg::buf(&theta),
                Arg::buf(&theta),
                Arg::buf(&grad),
                Arg::buf(&rates),
                Arg::buf(&offs),
                Arg::int(tasks),
                Arg::int(p),
                Arg::int(g),
            ];
            rt.launch(KernelId::SgdUpdateForward, &cfg, &args).expect("launch");
            assert_close(
                &format!("{label} in place"),
                &rt.download(&theta).expect("download"),
                &want,
                ATOL,
                RTOL,
            );
        }
    }
}

#[test]
fn backward_matches_engine_meta_step() {
    for (widths, tasks) in [(vec![1, 40, 40, 1], 4), (vec![5, 300, 7], 3), (vec![2, 3], 1)] {
        let k = case(&widths, tasks, 40 + widths.len() as u64);
        let (p, g) = (k.layout.len(), k.layout.groups());
        let mut want_da = vec![0.0; tasks * g];
        let mut want_u = vec![0.0; tasks * p];
        for b in 0..tasks {
            let (v, gr) = (&k.v[b * p..(b + 1) * p], &k.grad[b * p..(b + 1) * p]);
            for grp in 0..g {
                let r = k.layout.group(grp);
                want_da[b * g + grp] = -dot(&v[r.clone()], &gr[r.clone()]);
                for i in r {
                    want_u[b * p + i] = k.rates[b * g + grp] * v[i];
                }
            }
        }
        for rt in runtimes() {
            for block in [256u32, 45, 1024] {
                let (da, u) =
                    (rt.alloc::<f32>(tasks * g).expect("alloc"), rt.alloc::<f32>(tasks * p).expect("alloc"));
                let up = |x: &[f32]| rt.upload(x).expect("upload");
                let (v, grad, rates) = (up(&k.v), up(&k.grad), up(&k.rates));
                let offs = rt.upload(&offsets(&k.layout)).expect("upload");
                let cfg = LaunchConfig {
                    grid: Dim3::xy(g as u32, tasks as u32),
                    block: Dim3::x(block),
                    shared_bytes: 0,
                };
                let args = [
                    Arg::buf(&da),
                    Arg::buf(&u),
                    Arg::buf(&v),
                    Arg::buf(&grad),
                    Arg::buf(&rates),
                    Arg::buf(&offs),
                    Arg::int(tasks),
                    Arg::int(p),
                    Arg::int(g),
                ];
                rt.launch(KernelId::SgdUpdateBackward, &cfg, &args).expect("launch");
                let label = format!("sgd backward {widths:?} block {block} {:?}", rt.schedule());
                // dJ/da sums up to 12,000 products in another order than the engine's dot.
                assert_close(
                    &format!("{label} da"),
                    &rt.download(&da).expect("download"),
                    &want_da,
                    1e-4,
                    RTOL,
                );
                assert_close(&format!("{label} u"), &rt.download(&u).expect("download"), &want_u, ATOL, RTOL);
                assert_eq!(rt.download(&v).expect("download"), k.v, "v is left unchanged");
            }
        }
    }
}
