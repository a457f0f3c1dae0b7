//! `cuda_*` benches: the device meta-gradient and one kernel launch on `cuda:0` (cudarc),
//! with the emulator's time for the same work alongside. Without a CUDA driver they print one
//! `skipped: no CUDA driver` line and measure nothing.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use metasched_cuda::{CudaRuntime, Runtime, device_meta_gradient};
use metasched_engine::Config;
use metasched_engine::init::init_params;

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
    let params = match init_params(&config, 1, 0.05) {
        Ok(p) => p,
        Err(e) => {
            println!("skipped: {e}");
            return;
        }
    };
    for b in [32usize, 256] {
        let tasks = metasched_tasks::random_batch(&config, b, 10, 10, 9);
        c.bench_function(&format!("cuda_metagrad_sinusoid_b{b}"), |bench| {
            bench.iter(|| black_box(device_meta_gradient(&rt, &config, &params, &tasks).map(|m| m.j).ok()))
        });
    }
}

criterion_group!(benches, cuda_benches);
criterion_main!(benches);
