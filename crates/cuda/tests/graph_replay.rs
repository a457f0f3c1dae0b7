//! Graph capture and replay on the emulator (its twin of CUDA graphs): a worker's part of a
//! meta-step replayed from a captured graph gives bit for bit what the plain launches give,
//! meta-step after meta-step with new parameters and tasks; a warm replay is one graph launch
//! and no kernel launch; a new shape captures again; and a capture refuses what a CUDA graph
//! cannot hold, a replay what it was not captured with.

use metasched_cuda::{
    Arg, CudaError, DeviceGradientSum, EmuRuntime, KernelId, MetaStepGraphs, Runtime,
    device_meta_gradient_sum, device_meta_gradient_sum_graphed,
};
use metasched_engine::init::init_params;
use metasched_engine::{Config, LossKind, Params, SchedulerKind};
use metasched_tasks::random_batch;

/// The default sinusoid job, and variants: each scheduler kind, first order, classification.
fn shapes() -> Vec<Config> {
    let base = Config::sinusoid_default();
    let mut v = vec![base.clone()];
    for kind in [SchedulerKind::Lslr, SchedulerKind::Fixed] {
        let mut c = base.clone();
        c.scheduler.kind = kind;
        v.push(c);
    }
    let mut first = base.clone();
    first.inner.first_order = true;
    v.push(first);
    let mut ce = base;
    ce.model.layers = vec![3, 8, 4];
    ce.model.loss = LossKind::CrossEntropy;
    ce.scheduler.kind = SchedulerKind::Lslr;
    v.push(ce);
    v
}

fn params(c: &Config, seed: u64) -> Params<f32> {
    init_params(c, seed, 0.05).expect("valid config")
}

/// The bit patterns of everything a part sum returns.
fn bits(s: &DeviceGradientSum, like: &Params<f32>) -> Vec<u32> {
    let mut out: Vec<u32> = s.outer_loss.iter().chain(&s.lr).map(|x| x.to_bits()).collect();
    let g = s.sum.to_params(like, 1.0).expect("finite");
    for b in g.buffers() {
        out.extend(b.iter().map(|x| x.to_bits()));
    }
    out
}

#[test]
fn replayed_meta_steps_are_bitwise_the_plain_ones() {
    for c in shapes() {
        let (plain, graphed) = (EmuRuntime::new(), EmuRuntime::new().with_poisoned_pool(true));
        let mut graphs = MetaStepGraphs::default();
        for step in 0..3u64 {
            let p = params(&c, 10 + step);
            let batch = random_batch(&c, 3, 5, 6, 100 + step);
            let want = device_meta_gradient_sum(&plain, &c, &p, &batch).expect("plain");
            let got = device_meta_gradient_sum_graphed(&graphed, &mut graphs, &c, &p, &batch).expect("graph");
            assert!(
                bits(&got, &p) == bits(&want, &p),
                "{:?} first_order={} step {step}: replay differs",
                c.scheduler.kind,
                c.inner.first_order
            );
        }
        let s = graphs.stats();
        assert_eq!((s.captures, s.replays, s.stale), (1, 2, 0), "{s:?}");
    }
}

#[test]
fn a_warm_replay_is_one_graph_launch_and_no_kernel_launch() {
    let c = Config::sinusoid_default();
    let rt = EmuRuntime::new();
    let mut graphs = MetaStepGraphs::default();
    let batch = random_batch(&c, 4, 10, 10, 9);
    let mut per_step = Vec::new();
    for seed in 0..3 {
        let before = rt.counters();
        device_meta_gradient_sum_graphed(&rt, &mut graphs, &c, &params(&c, seed), &batch).expect("step");
        per_step.push(rt.counters().since(&before));
    }
    let (cold, warm) = (per_step[0], per_step[2]);
    // The first meta-step captures the 117 launches, 3 memsets and 3 device copies of the
    // sinusoid default (see docs/KERNELS.md) and replays them once.
    assert_eq!((cold.captures, cold.captured, cold.graph_launches, cold.launches), (1, 123, 1, 0), "{cold}");
    assert_eq!(per_step[1], warm, "every warm step alike");
    assert_eq!(
        (warm.launches, warm.graph_launches, warm.captures, warm.memsets, warm.device_copies),
        (0, 1, 0, 0, 0),
        "{warm}"
    );
    assert_eq!(
        (warm.allocs, warm.pool_hits, warm.uploads, warm.downloads, warm.syncs),
        (0, 0, 6, 1, 1),
        "{warm}"
    );
}

#[test]
fn a_new_shape_is_captured_and_an_evicted_one_captured_again() {
    let c = Config::sinusoid_default();
    let p = params(&c, 1);
    let (a, b) = (random_batch(&c, 3, 5, 6, 1), random_batch(&c, 2, 5, 6, 2));
    let rt = EmuRuntime::new();
    let mut two = MetaStepGraphs::with_capacity(2);
    let mut one = MetaStepGraphs::with_capacity(1);
    for batch in [&a, &b, &a, &b] {
        let want = device_meta_gradient_sum(&rt, &c, &p, batch).expect("plain");
        for graphs in [&mut two, &mut one] {
            let got = device_meta_gradient_sum_graphed(&rt, graphs, &c, &p, batch).expect("graph");
            assert!(bits(&got, &p) == bits(&want, &p), "shape B = {}", batch.b);
        }
    }
    assert_eq!((two.stats().captures, two.stats().replays, two.stats().evictions), (2, 2, 0));
    assert_eq!((one.stats().captures, one.stats().replays, one.stats().evictions), (4, 0, 3));
    // Another config is another key, even with the same shapes.
    let mut lr = c.clone();
    lr.scheduler.lr_max *= 2.0;
    device_meta_gradient_sum_graphed(&rt, &mut two, &lr, &p, &a).expect("other config");
    assert_eq!(two.stats().captures, 3);
    two.clear(&rt);
    assert_eq!(two.shapes(), 0);
}

#[test]
fn a_capture_runs_nothing_and_refuses_host_work() {
    let rt = EmuRuntime::new();
    let mut x = rt.upload(&[1.0f32, 2.0, 3.0]).expect("upload");
    let graph = rt
        .capture(|rt| {
            rt.launch_default(KernelId::VectorScale, &[Arg::buf(&x), Arg::F32(2.0), Arg::int(3)])?;
            rt.zero(&mut x, 0..1)
        })
        .expect("capture");
    assert_eq!(graph.len(), 2);
    assert_eq!(rt.download(&x).expect("download"), vec![1.0, 2.0, 3.0], "nothing ran during the capture");
    rt.replay(&graph, &[&x]).expect("replay");
    assert_eq!(rt.download(&x).expect("download"), vec![0.0, 4.0, 6.0]);
    rt.replay(&graph, &[&x]).expect("replay again");
    assert_eq!(rt.download(&x).expect("download"), vec![0.0, 8.0, 12.0]);

    // Another buffer (even of the same length) is not the one captured.
    let y = rt.upload(&[1.0f32, 2.0, 3.0]).expect("upload");
    let stale = rt.replay(&graph, &[&y]).expect_err("stale pointers");
    assert!(matches!(stale, CudaError::Graph(_)), "{stale}");
    assert_eq!(rt.download(&y).expect("download"), vec![1.0, 2.0, 3.0]);

    for (what, attempt) in [
        ("upload", &(|rt: &EmuRuntime| rt.upload(&[1.0f32]).map(drop)) as &dyn Fn(&EmuRuntime) -> _),
        ("download", &|rt: &EmuRuntime| rt.download(&y).map(drop)),
        ("sync", &|rt: &EmuRuntime| rt.synchronize()),
        ("alloc", &|rt: &EmuRuntime| rt.alloc_pooled::<f32>(7).map(drop)),
    ] {
        let e = rt.capture(|rt| attempt(rt)).expect_err(what);
        assert!(matches!(e, CudaError::Graph(_)), "{what}: {e}");
    }
    // A failed capture leaves the runtime running work again.
    rt.launch_default(KernelId::VectorScale, &[Arg::buf(&x), Arg::F32(0.5), Arg::int(3)]).expect("launch");
    assert_eq!(rt.download(&x).expect("download"), vec![0.0, 4.0, 6.0]);
}

#[test]
fn a_runtime_opened_with_step_graphs_replays_the_plain_entry_point() {
    let c = Config::sinusoid_default();
    let (plain, graphed) = (EmuRuntime::new(), EmuRuntime::new().with_step_graphs(true));
    for seed in 0..3 {
        let (p, batch) = (params(&c, seed), random_batch(&c, 3, 5, 6, seed));
        let before = graphed.counters();
        let got = device_meta_gradient_sum(&graphed, &c, &p, &batch).expect("graphed");
        let d = graphed.counters().since(&before);
        assert_eq!((d.launches, d.graph_launches, d.captures), (0, 1, u64::from(seed == 0)), "{d}");
        let want = device_meta_gradient_sum(&plain, &c, &p, &batch).expect("plain");
        assert!(bits(&got, &p) == bits(&want, &p), "step {seed}");
    }
}
