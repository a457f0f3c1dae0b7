//! The emulator itself: its error reports on deliberately broken kernels
//! (`kernels/fixtures/`), its semantics of warp collectives and shared memory, the launch
//! validation, and the registry's agreement with the kernel sources and [`KernelId`].
// The fixtures have no launch contract, so they go through `EmuRuntime::launch_unchecked`;
// each call passes buffers at least as long as the fixture touches (said at each call).
#![allow(unsafe_code)]

mod common;

use common::runtimes;
use metasched_cuda::{
    Arg, CudaError, Dim3, EmuBuffer, EmuRuntime, KernelId, LaunchConfig, Runtime, Schedule, kernel_source,
};

fn cfg(grid: u32, block: u32, shared_bytes: usize) -> LaunchConfig {
    LaunchConfig { grid: Dim3::x(grid), block: Dim3::x(block), shared_bytes }
}

fn run(
    rt: &EmuRuntime,
    name: &str,
    config: LaunchConfig,
    args: &[Arg<'_, EmuRuntime>],
) -> Result<(), CudaError> {
    // SAFETY: callers pass buffers covering every element the fixture writes (noted at each
    // call site).
    unsafe { rt.launch_unchecked(name, &config, args) }
}

fn floats(rt: &EmuRuntime, n: usize) -> EmuBuffer<f32> {
    rt.alloc::<f32>(n).expect("alloc")
}

#[test]
fn barrier_in_divergent_branch_is_reported() {
    for rt in runtimes() {
        let out = floats(&rt, 4 * 32);
        // Writes out[block·32 + t] for t < 32: 4 blocks × 32.
        let err = run(&rt, "fixture_broken_barrier_f32", cfg(4, 32, 0), &[Arg::buf(&out), Arg::I32(32)])
            .expect_err("a divergent barrier must fail the launch");
        let CudaError::DivergentBarrier(msg) = &err else { panic!("wrong error kind: {err:?}") };
        eprintln!("{msg}");
        assert!(msg.contains("fixture_broken_barrier_f32"), "{msg}");
        assert!(msg.contains("16 thread(s) [0-15] wait at __syncthreads() at broken_barrier.cu:10"), "{msg}");
        assert!(msg.contains("16 thread(s) [16-31] have exited"), "{msg}");
    }
}

#[test]
fn barriers_at_different_sites_or_iterations_are_reported() {
    for rt in runtimes() {
        let out = floats(&rt, 64);
        // Both fixtures write out[block·64 + t] for t < 64, one block of 64.
        let err = run(&rt, "fixture_split_barrier_f32", cfg(1, 64, 0), &[Arg::buf(&out), Arg::I32(64)])
            .expect_err("split barrier");
        let CudaError::DivergentBarrier(msg) = &err else { panic!("wrong error kind: {err:?}") };
        assert!(msg.contains("broken_barrier.cu:20") && msg.contains("broken_barrier.cu:22"), "{msg}");
        let err = run(&rt, "fixture_barrier_in_loop_f32", cfg(1, 64, 0), &[Arg::buf(&out), Arg::I32(64)])
            .expect_err("barrier in a loop of varying trip count");
        assert!(matches!(err, CudaError::DivergentBarrier(_)), "{err:?}");
        eprintln!("{err}");
    }
}

#[test]
fn shuffle_over_exited_lane_is_reported() {
    for rt in runtimes() {
        let out = floats(&rt, 32);
        // Writes out[t] for t < 16.
        let err = run(&rt, "fixture_shuffle_exited_lane_f32", cfg(1, 32, 0), &[Arg::buf(&out)])
            .expect_err("shuffle naming exited lanes");
        let CudaError::ExitedLane(msg) = &err else { panic!("wrong error kind: {err:?}") };
        eprintln!("{msg}");
        assert!(msg.contains("__shfl_down_sync") && msg.contains("lane(s) 16-31"), "{msg}");
        assert!(msg.contains("shuffle_exited_lane.cu:9"), "{msg}");
        // A partial warp: lanes 20-31 of a 20-thread block do not exist. Writes out[t], t < 20.
        let err = run(&rt, "fixture_shuffle_absent_lane_f32", cfg(1, 20, 0), &[Arg::buf(&out)])
            .expect_err("shuffle naming absent lanes");
        let CudaError::ExitedLane(msg) = &err else { panic!("wrong error kind: {err:?}") };
        assert!(msg.contains("lane(s) 20-31") && msg.contains("do not exist"), "{msg}");
    }
}

#[test]
fn deadlocks_and_bad_masks_are_reported() {
    let rt = EmuRuntime::new();
    let out = floats(&rt, 2);
    // Both fixtures write out[0] and out[1] at most.
    let err = run(&rt, "fixture_mismatched_collectives_f32", cfg(1, 2, 0), &[Arg::buf(&out)])
        .expect_err("deadlock");
    let CudaError::Deadlock(msg) = &err else { panic!("wrong error kind: {err:?}") };
    assert!(msg.contains("__shfl_sync") && msg.contains("__ballot_sync"), "{msg}");
    let err =
        run(&rt, "fixture_mask_without_self_f32", cfg(1, 2, 0), &[Arg::buf(&out)]).expect_err("bad mask");
    assert!(matches!(err, CudaError::WarpUsage(_)), "{err:?}");
}

#[test]
fn shared_memory_overrun_and_trap_are_reported() {
    let rt = EmuRuntime::new();
    let out = floats(&rt, 32);
    // Writes out[0] and one float past 16 bytes of dynamic shared memory.
    let err = run(&rt, "fixture_shared_overflow_f32", cfg(2, 32, 16), &[Arg::buf(&out), Arg::I32(4)])
        .expect_err("overrun");
    let CudaError::SharedMemory(msg) = &err else { panic!("wrong error kind: {err:?}") };
    assert!(msg.contains("16 bytes of dynamic shared memory"), "{msg}");
    // Within bounds it is fine.
    run(&rt, "fixture_shared_overflow_f32", cfg(2, 32, 20), &[Arg::buf(&out), Arg::I32(4)])
        .expect("in bounds");
    // Writes out[t] for t < 32.
    let err = run(&rt, "fixture_trap_f32", cfg(1, 32, 0), &[Arg::buf(&out)]).expect_err("trap");
    let CudaError::Trap(msg) = &err else { panic!("wrong error kind: {err:?}") };
    assert!(msg.contains("thread 3"), "{msg}");
}

/// What the warp-collective fixture must produce for thread `t` of a `block`-thread block
/// (lanes of a partial warp that read a lane outside their mask get the emulator's poison,
/// all ones, where CUDA leaves the value undefined).
fn expected_warp_ops(t: usize, block: usize) -> [i32; 8] {
    let lane = t % 32;
    let present = (block - t / 32 * 32).min(32);
    let read = |src: usize| if src < present { src as i32 } else { -1 };
    let ballot = (0..present).filter(|l| l % 2 == 1).fold(0u32, |m, l| m | 1 << l) as i32;
    [
        if lane + 1 < 32 { read(lane + 1) } else { lane as i32 },
        if lane >= 2 { read(lane - 2) } else { lane as i32 },
        read(lane ^ 5),
        read(3),
        ballot,
        if lane % 8 + 1 < 8 { read(lane + 1) } else { lane as i32 },
        read(lane ^ 4),
        (block * (block - 1) / 2) as i32,
    ]
}

#[test]
fn warp_collectives_follow_cuda_semantics() {
    for rt in runtimes() {
        for block in [32usize, 64, 48, 7] {
            let grid = 3;
            let out = rt.alloc::<i32>(grid * block * 8).expect("alloc");
            // Writes out[(block_idx·block + t)·8 + 0..8].
            run(&rt, "fixture_warp_ops_f32", cfg(grid as u32, block as u32, 0), &[Arg::buf(&out)])
                .expect("launch");
            let got = rt.download(&out).expect("download");
            for b in 0..grid {
                for t in 0..block {
                    let at = (b * block + t) * 8;
                    assert_eq!(
                        got[at..at + 8],
                        expected_warp_ops(t, block),
                        "block size {block}, thread {t} ({:?})",
                        rt.schedule()
                    );
                }
            }
        }
    }
}

#[test]
fn shared_memory_is_per_block() {
    for workers in [1, 2, 4] {
        for schedule in [Schedule::Forward, Schedule::Reverse, Schedule::Shuffled { seed: 3 }] {
            let rt = EmuRuntime::new().with_schedule(schedule).with_workers(workers);
            let (grid, block) = (64usize, 40usize);
            let out = floats(&rt, grid * block);
            // Writes out[block_idx·40 + t]; 4 bytes of dynamic shared memory used.
            run(&rt, "fixture_block_shared_f32", cfg(grid as u32, block as u32, 4), &[Arg::buf(&out)])
                .expect("launch");
            let got = rt.download(&out).expect("download");
            for (i, v) in got.iter().enumerate() {
                assert_eq!(*v, 3.0 * (i / block) as f32, "element {i} ({schedule:?}, {workers} workers)");
            }
        }
    }
}

#[test]
fn missing_barrier_reads_poison_in_every_order() {
    for rt in runtimes() {
        let out = floats(&rt, 64);
        // Writes out[t] for t < 64.
        run(&rt, "fixture_missing_barrier_f32", cfg(1, 64, 0), &[Arg::buf(&out), Arg::I32(0)])
            .expect("launch");
        let got = rt.download(&out).expect("download");
        assert!(
            got.iter().any(|v| v.is_nan()),
            "a race must show as NaN poison ({:?}): {got:?}",
            rt.schedule()
        );
        run(&rt, "fixture_missing_barrier_f32", cfg(1, 64, 0), &[Arg::buf(&out), Arg::I32(1)])
            .expect("launch");
        let got = rt.download(&out).expect("download");
        let want: Vec<f32> = (0..64).map(|t| ((t + 1) % 64) as f32).collect();
        assert_eq!(got, want, "with the barrier ({:?})", rt.schedule());
    }
}

#[test]
fn emulator_refuses_bad_launches() {
    let rt = EmuRuntime::new();
    let out = floats(&rt, 64);
    let block_2k = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(2048), shared_bytes: 0 };
    let err = run(&rt, "fixture_trap_f32", block_2k, &[Arg::buf(&out)]).expect_err("block too large");
    assert!(matches!(err, CudaError::InvalidLaunch { .. }), "{err:?}");
    let err = run(&rt, "fixture_trap_f32", cfg(0, 32, 0), &[Arg::buf(&out)]).expect_err("empty grid");
    assert!(matches!(err, CudaError::InvalidLaunch { .. }), "{err:?}");
    let err = run(&rt, "fixture_trap_f32", cfg(1, 32, 64 * 1024), &[Arg::buf(&out)]).expect_err("shared");
    assert!(matches!(err, CudaError::InvalidLaunch { .. }), "{err:?}");
    let err = run(&rt, "no_such_kernel_f32", cfg(1, 32, 0), &[Arg::buf(&out)]).expect_err("unknown");
    assert!(matches!(err, CudaError::UnknownKernel(_)), "{err:?}");
    let err = run(&rt, "fixture_trap_f32", cfg(1, 32, 0), &[Arg::I32(3)]).expect_err("types");
    assert!(matches!(err, CudaError::Signature(_)), "{err:?}");
    let err = run(&rt, "fixture_trap_f32", cfg(1, 32, 0), &[]).expect_err("arity");
    assert!(matches!(err, CudaError::Signature(_)), "{err:?}");
}

#[test]
fn contracts_reject_short_buffers_and_bad_shapes() {
    let rt = EmuRuntime::new();
    let short = floats(&rt, 10);
    let long = floats(&rt, 2000);
    fn lstm_args<'a>(h_new: &'a EmuBuffer<f32>, rest: &'a EmuBuffer<f32>) -> Vec<Arg<'a, EmuRuntime>> {
        let mut a = vec![Arg::buf(h_new)];
        a.extend((0..10).map(|_| Arg::buf(rest)));
        a.extend([Arg::int(4), Arg::int(20)]);
        a
    }
    let args = |h_new| lstm_args(h_new, &long);
    // 4 tasks × 20 hidden units need 80 elements of h_new.
    let err = rt.launch_default(KernelId::LstmCellForward, &args(&short)).expect_err("short buffer");
    let CudaError::InvalidArgument { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("`h_new`") && reason.contains("80"), "{reason}");
    rt.launch_default(KernelId::LstmCellForward, &args(&long)).expect("long enough");
    // An offset moves the start: 2000 − 1930 = 70 < 80.
    let mut a = args(&long);
    a[0] = Arg::buf_at(&long, 1930);
    assert!(rt.launch_default(KernelId::LstmCellForward, &a).is_err());
    // Too little dynamic shared memory, a 2-D block, a grid short of one block per task.
    for config in [
        LaunchConfig { grid: Dim3::x(4), block: Dim3::x(32), shared_bytes: 8 },
        LaunchConfig { grid: Dim3::x(4), block: Dim3::xy(32, 2), shared_bytes: 96 },
        LaunchConfig { grid: Dim3::x(3), block: Dim3::x(32), shared_bytes: 96 },
    ] {
        let err = rt.launch(KernelId::LstmCellForward, &config, &args(&long)).expect_err("bad launch");
        assert!(matches!(err, CudaError::InvalidLaunch { .. }), "{err:?}");
    }
    // Tiled kernels need (16, 16) blocks.
    let mut a = vec![Arg::buf(&long), Arg::buf(&long), Arg::buf(&long)];
    a.extend([2, 3, 4, 5, 30, 0, 20, 1].map(Arg::I32));
    let bad = LaunchConfig { grid: Dim3::xy(1, 2), block: Dim3::x(256), shared_bytes: 0 };
    assert!(matches!(rt.launch(KernelId::LinearForward, &bad, &a), Err(CudaError::InvalidLaunch { .. })));
    rt.launch_default(KernelId::LinearForward, &a).expect("valid");
    // Weight outside the parameter stride; unknown activation; wrong argument type.
    a[8] = Arg::I32(11);
    assert!(matches!(rt.launch_default(KernelId::LinearForward, &a), Err(CudaError::InvalidArgument { .. })));
    a[8] = Arg::I32(0);
    a[10] = Arg::I32(7);
    assert!(matches!(rt.launch_default(KernelId::LinearForward, &a), Err(CudaError::InvalidArgument { .. })));
    a[10] = Arg::F32(1.0);
    assert!(matches!(rt.launch_default(KernelId::LinearForward, &a), Err(CudaError::Signature(_))));
}

/// Entry points declared in a kernel source, as the build script finds them.
fn declared(source: &str) -> Vec<String> {
    const MARK: &str = "extern \"C\" __global__ void ";
    source
        .match_indices(MARK)
        .map(|(at, _)| {
            source[at + MARK.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
        })
        .collect()
}

#[test]
fn registry_matches_sources_and_kernel_ids() {
    let registered = EmuRuntime::registered_kernels();
    let mut files: Vec<&str> = KernelId::ALL.iter().map(|k| k.source_file()).collect();
    files.dedup();
    let mut in_sources = Vec::new();
    for k in KernelId::ALL {
        assert!(k.entry_point().ends_with("_f32") && k.entry_point().starts_with(k.name()));
        let src = kernel_source(k);
        assert!(src.contains("#include \"common.cuh\""), "{}", k.source_file());
        assert!(
            declared(src).contains(&k.entry_point().to_string()),
            "{} not in {}",
            k.entry_point(),
            k.source_file()
        );
        assert_eq!(KernelId::from_entry_point(k.entry_point()), Some(k));
        assert!(registered.contains(&k.entry_point().to_string()), "{} not registered", k.entry_point());
        assert_eq!(
            EmuRuntime::registered_signature(k.entry_point()).as_deref(),
            Some(k.signature().as_str()),
            "parameter list of {} differs between the .cu signature (KernelId::params) and {}",
            k.entry_point(),
            k.source_file()
        );
    }
    for f in files {
        let src = kernel_source(KernelId::ALL.into_iter().find(|k| k.source_file() == f).expect("a kernel"));
        in_sources.extend(declared(src));
    }
    for name in &in_sources {
        assert!(KernelId::from_entry_point(name).is_some(), "{name} has no KernelId");
    }
    // Every registered kernel is a KernelId or a test fixture, each once.
    for name in &registered {
        assert!(KernelId::from_entry_point(name).is_some() || name.starts_with("fixture_"), "{name}");
        assert_eq!(registered.iter().filter(|n| *n == name).count(), 1, "{name} registered twice");
    }
    // Each .cu file's header documents its kernels' launch shapes.
    for k in KernelId::ALL {
        let src = kernel_source(k);
        assert!(src.contains("Launch:") || src.contains("Grid ("), "{}", k.source_file());
        assert!(src.contains("FLOPs") && src.contains("Bytes"), "{}", k.source_file());
    }
}

#[test]
fn kernels_are_cuda_clean() {
    // What the emulator cannot run and NVRTC would not need: inline PTX, raw `extern
    // __shared__` (use the METASCHED_*SHARED macros), standard headers.
    for k in KernelId::ALL {
        let src = kernel_source(k);
        for banned in ["asm(", "asm volatile", "extern __shared__", "#include <"] {
            assert!(!src.contains(banned), "{} contains `{banned}`", k.source_file());
        }
    }
    assert!(!metasched_cuda::kernels::COMMON_SOURCE.contains("asm("));
}

#[test]
fn concurrent_launches_from_many_threads() {
    // The emulator is reentrant: Rust tests (and callers) launch from several threads at once.
    std::thread::scope(|s| {
        for i in 0..4u64 {
            s.spawn(move || {
                let rt = EmuRuntime::new().with_schedule(Schedule::Shuffled { seed: i });
                for _ in 0..5 {
                    let out = floats(&rt, 16 * 40);
                    // Writes out[block_idx·40 + t].
                    run(&rt, "fixture_block_shared_f32", cfg(16, 40, 4), &[Arg::buf(&out)]).expect("launch");
                    let got = rt.download(&out).expect("download");
                    assert!(got.iter().enumerate().all(|(j, &v)| v == 3.0 * (j / 40) as f32));
                }
            });
        }
    });
}
