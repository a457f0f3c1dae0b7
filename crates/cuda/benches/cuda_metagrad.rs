//! `cuda_metagrad_*` benches: the whole device meta-gradient of a sinusoid task batch (default
//! shape, B = 32 and 256) on `cuda:0` (cudarc), and, alongside, the same B = 32 batch on the
//! emulator (`cuda_metagrad_sinusoid_b32_emu`) and on the CPU engine
//! (`cuda_metagrad_sinusoid_b32_cpu`). Before timing, each batch is computed once on the GPU
//! and every tensor of `checks::meta_gradient_tensors` (J, losses, rates, theta's and every
//! phi gradient) is compared with the CPU engine, so a wrong or failing device result is
//! reported instead of timed. Without a CUDA driver (or device) it prints one
//! `skipped: ...` line and measures nothing.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use metasched_cuda::checks::meta_gradient_tensors;
use metasched_cuda::{CudaRuntime, EmuRuntime, Runtime, device_meta_gradient};
use metasched_engine::init::init_params;
use metasched_engine::{Config, Engine};

/// `|dev - cpu| <= ATOL + RTOL * |cpu|`, the tolerance of the device tests.
const ATOL: f32 = 1e-5;
const RTOL: f32 = 1e-4;

fn cuda_benches(c: &mut Criterion) {
    let rt = match metasched_cuda::probe::cuda_devices() {
        Ok(n) if n > 0 => match CudaRuntime::new(0) {
            Ok(rt) => rt,
            Err(e) => {
                println!("skipped: cannot start the CUDA runtime on cuda:0: {e}");
                return;
            }
        },
        Ok(_) => {
            println!("skipped: no CUDA driver devices (the driver reports none)");
            return;
        }
        Err(e) => {
            println!("skipped: no CUDA driver: {e}");
            return;
        }
    };
    println!("device: {}", rt.device_name());
    let config = Config::sinusoid_default();
    let params = init_params(&config, 1, 0.05).expect("initial parameters");
    let engine = Engine::new(1).expect("engine");
    for b in [32usize, 256] {
        let tasks = metasched_tasks::random_batch(&config, b, 10, 10, 9);
        let dev = device_meta_gradient(&rt, &config, &params, &tasks)
            .unwrap_or_else(|e| panic!("cuda_metagrad b{b}: the device meta-gradient failed: {e}"));
        let cpu = engine.meta_gradient(&config, &params, &tasks).expect("CPU meta-gradient");
        for ((name, d), (_, w)) in meta_gradient_tensors(&dev).iter().zip(&meta_gradient_tensors(&cpu)) {
            assert_eq!(d.len(), w.len(), "b{b} {name}: lengths differ");
            for (i, (x, y)) in d.iter().zip(w).enumerate() {
                assert!((x - y).abs() <= ATOL + RTOL * y.abs(), "b{b} {name}[{i}]: cuda {x} vs cpu {y}");
            }
        }
        c.bench_function(&format!("cuda_metagrad_sinusoid_b{b}"), |bench| {
            bench.iter(|| {
                black_box(
                    device_meta_gradient(&rt, &config, &params, &tasks).expect("device meta-gradient").j,
                )
            })
        });
        if b == 32 {
            let emu = EmuRuntime::new();
            let mut group = c.benchmark_group("cuda_metagrad_alongside");
            group.sample_size(10);
            group.bench_function("cuda_metagrad_sinusoid_b32_emu", |bench| {
                bench.iter(|| {
                    black_box(device_meta_gradient(&emu, &config, &params, &tasks).expect("emulator").j)
                })
            });
            group.bench_function("cuda_metagrad_sinusoid_b32_cpu", |bench| {
                bench.iter(|| black_box(engine.meta_gradient(&config, &params, &tasks).expect("cpu").j))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, cuda_benches);
criterion_main!(benches);
