//! [`CudaRuntime`] on a real GPU against the emulator and the CPU engine: a kernel launch
//! (`sgd_update_forward_f32`, with a buffer offset) and the whole meta-gradient on the default
//! sinusoid shape and a cross-entropy shape (which launch every kernel family): every tensor of
//! `checks::meta_gradient_tensors` (J, losses, rates, theta's and every phi gradient); and the
//! host path's counters of a warm meta-step (no allocation, one host sync). Needs a GPU:
//! run with `cargo test -p metasched-cuda --test cuda_runtime -- --ignored`.

mod common;

use common::{ATOL, RTOL, assert_close, randn, uniform};
use metasched_cuda::checks::meta_gradient_tensors;
use metasched_cuda::{Arg, CudaRuntime, EmuRuntime, KernelId, Runtime, device_meta_gradient};
use metasched_engine::init::init_params;
use metasched_engine::{
    Activation, Config, Engine, InnerConfig, LossKind, ModelConfig, SchedulerConfig, SchedulerKind,
};
use metasched_tasks::random_batch;

fn gpu() -> CudaRuntime {
    CudaRuntime::new(0).unwrap_or_else(|e| panic!("this test needs a GPU (cuda:0): {e}"))
}

fn sgd_forward<R: Runtime>(rt: &R, tasks: usize, widths: &[usize]) -> Vec<f32> {
    let layout = metasched_engine::ThetaLayout::from_widths(widths);
    let (p, g) = (layout.len(), layout.groups());
    let theta = randn(1, &[0], tasks * p, 0.5);
    let grad = randn(1, &[1], tasks * p, 1.0);
    let rates = uniform(1, &[2], tasks * g, 0.0, 0.1);
    let offsets: Vec<i32> = layout.offsets.iter().map(|&o| o as i32).collect();
    let out = rt.alloc::<f32>(tasks * p + 3).expect("alloc");
    let (t, gr, r, o) = (
        rt.upload(&theta).expect("upload"),
        rt.upload(&grad).expect("upload"),
        rt.upload(&rates).expect("upload"),
        rt.upload(&offsets).expect("upload"),
    );
    let args = [
        Arg::buf_at(&out, 3),
        Arg::buf(&t),
        Arg::buf(&gr),
        Arg::buf(&r),
        Arg::buf(&o),
        Arg::int(tasks),
        Arg::int(p),
        Arg::int(g),
    ];
    rt.launch_default(KernelId::SgdUpdateForward, &args).expect("launch");
    rt.download(&out).expect("download")
}

#[test]
#[ignore = "needs a GPU"]
fn cuda_runtime_matches_emulator() {
    let rt = gpu();
    eprintln!("device: {}", rt.device_name());
    let emu = EmuRuntime::new();
    assert_close(
        "sgd forward",
        &sgd_forward(&rt, 3, &[5, 300, 7]),
        &sgd_forward(&emu, 3, &[5, 300, 7]),
        ATOL,
        RTOL,
    );

    let ce = Config {
        model: ModelConfig {
            layers: vec![3, 6, 4],
            activation: Activation::Relu,
            loss: LossKind::CrossEntropy,
        },
        inner: InnerConfig { steps: 3, first_order: false, learn_init: true, optimizer: Default::default() },
        scheduler: SchedulerConfig {
            kind: SchedulerKind::Lslr,
            hidden: 5,
            lr_min: 0.01,
            lr_max: 0.5,
            lr_fixed: 0.2,
        },
    };
    for (label, config, b) in [
        ("sinusoid", Config::sinusoid_default(), random_batch(&Config::sinusoid_default(), 4, 10, 10, 5)),
        ("cross-entropy", ce.clone(), random_batch(&ce, 3, 4, 5, 11)),
    ] {
        let params = init_params(&config, 3, 0.05).expect("params");
        let cpu = Engine::new(1).expect("engine").meta_gradient(&config, &params, &b).expect("cpu");
        let dev = device_meta_gradient(&rt, &config, &params, &b).expect("gpu meta-gradient");
        let em = device_meta_gradient(&emu, &config, &params, &b).expect("emulator meta-gradient");
        // Every tensor, the scheduler's (phi) gradients included: the shared list of
        // `checks::meta_gradient_tensors`, the one `meta-worker selftest` compares.
        let got = meta_gradient_tensors(&dev);
        for (what, want) in [("engine", &cpu), ("emulator", &em)] {
            let want = meta_gradient_tensors(want);
            let names = |v: &[(String, Vec<f32>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&got), names(&want), "{label}: the same tensors on both sides");
            assert!(
                names(&got).iter().any(|n| n.starts_with("grad.phi.")),
                "{label}: phi gradients compared"
            );
            for ((name, g), (_, w)) in got.iter().zip(&want) {
                assert_close(&format!("{label} {name} vs {what}"), g, w, ATOL, RTOL);
            }
        }
    }
}

#[test]
fn cuda_runtime_construction_agrees_with_the_probe() {
    // Without a driver (or device 0) construction is a typed error, not cudarc's panic; with
    // one it succeeds. Either way the assertion runs.
    match metasched_cuda::probe::cuda_devices() {
        Err(_) | Ok(0) => assert!(CudaRuntime::new(0).is_err(), "no device 0, yet the runtime was built"),
        Ok(_) => assert!(CudaRuntime::new(0).is_ok(), "device 0 exists, yet the runtime failed"),
    }
}

/// The host path on a real GPU: after a warm-up meta-step, the next one of the same shape takes
/// every buffer from the pool (no `cuMemAlloc`), waits for the device once and gives bitwise
/// the results of the first run with the same inputs (pooled buffers are reused correctly).
#[test]
#[ignore = "needs a GPU"]
fn a_warm_gpu_meta_step_allocates_nothing_and_waits_once() {
    let rt = gpu();
    let c = Config::sinusoid_default();
    let p = init_params(&c, 3, 0.05).expect("params");
    let batch = random_batch(&c, 8, 10, 10, 4);
    let first = device_meta_gradient(&rt, &c, &p, &batch).expect("first meta-step");
    let before = rt.counters();
    let second = device_meta_gradient(&rt, &c, &p, &batch).expect("second meta-step");
    let d = rt.counters().since(&before);
    eprintln!("warm meta-step on {}: {d}", rt.device_name());
    assert_eq!((d.allocs, d.downloads, d.syncs, d.uploads), (0, 1, 1, 6), "{d}");
    let bits = |m: &metasched_engine::MetaGradient<f32>| {
        meta_gradient_tensors(m)
            .into_iter()
            .flat_map(|(_, v)| v.into_iter().map(f32::to_bits))
            .collect::<Vec<_>>()
    };
    assert!(bits(&first) == bits(&second), "the warm meta-step differs from the first");
}
