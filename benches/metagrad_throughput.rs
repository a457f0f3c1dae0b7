//! Meta-gradient throughput (tasks/s) of the CPU engine on the default sinusoid shape:
//! layers 1-40-40-1 relu, K = Q = 10, T = 5, LSTM H = 20, second order (and first order for
//! comparison), B = 25, on 1 thread and on every core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use metasched::engine::init::init_params;
use metasched::engine::{Config, Engine};
use metasched::tasks::sample_sinusoid;

fn metagrad(c: &mut Criterion) {
    let b = 25;
    let batch = sample_sinusoid(0, 0, b, 10, 10);
    let mut group = c.benchmark_group("metagrad_sinusoid_default");
    group.throughput(Throughput::Elements(b as u64));
    for first_order in [false, true] {
        let mut config = Config::sinusoid_default();
        config.inner.first_order = first_order;
        let params = init_params(&config, 0, 0.01).expect("init");
        let order = if first_order { "first_order" } else { "second_order" };
        for threads in [1, 0] {
            let engine = Engine::new(threads).expect("thread pool");
            let name = format!("{order}/threads={}", engine.threads());
            group.bench_function(name, |bench| {
                bench.iter(|| engine.meta_gradient(&config, &params, &batch).expect("metagrad"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, metagrad);
criterion_main!(benches);
