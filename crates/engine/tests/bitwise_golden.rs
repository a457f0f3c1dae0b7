//! Golden bits of the CPU engine: a hash of every output bit of `Engine::meta_gradient`,
//! `Engine::meta_gradient_sum` and `Engine::evaluate` (f32) on fixed batches, over the
//! optimisers, orders, scheduler kinds, activations and losses, recorded before the engine's
//! speed work (issue 13). Faster paths must leave every bit as it was, for any thread count;
//! a changed hash means results (and the README's quoted default-run figure) changed.
//!
//! `GOLDEN_PRINT=1 cargo test --release -p metasched-engine --test bitwise_golden -- --nocapture`
//! prints the current hashes.

use metasched_engine::init::init_params;
use metasched_engine::rng::CounterRng;
use metasched_engine::{Activation, Config, Engine, InnerOptimizer, LossKind, SchedulerKind, TaskBatch};

/// FNV-1a over 32-bit words.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn word(&mut self, w: u32) {
        for b in w.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn f32s(&mut self, xs: &[f32]) {
        self.word(xs.len() as u32);
        for &x in xs {
            self.word(x.to_bits());
        }
    }
}

/// The cases: (name, config, batch size, batch seed).
fn cases() -> Vec<(String, Config, usize, u64)> {
    let mut out = Vec::new();
    let opts = [
        ("sgd", InnerOptimizer::Sgd),
        ("momentum", InnerOptimizer::Momentum { mu: 0.9 }),
        ("adam", InnerOptimizer::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
    ];
    for (oname, opt) in opts {
        for first_order in [false, true] {
            for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
                let mut c = Config::sinusoid_default();
                c.inner.optimizer = opt;
                c.inner.first_order = first_order;
                c.scheduler.kind = kind;
                let name =
                    format!("default-{oname}-{}-{}", if first_order { "fo" } else { "so" }, kind.as_str());
                out.push((name, c, 25, 1));
            }
        }
    }
    let mut tanh = Config::sinusoid_default();
    tanh.model.activation = Activation::Tanh;
    tanh.model.layers = vec![1, 32, 24, 1];
    out.push(("tanh-1-32-24-1".into(), tanh, 37, 2));
    let mut ce = Config::sinusoid_default();
    ce.model.layers = vec![16, 40, 5];
    ce.model.loss = LossKind::CrossEntropy;
    out.push(("ce-16-40-5".into(), ce.clone(), 19, 3));
    let mut ce_tanh = ce;
    ce_tanh.model.layers = vec![9, 20, 17, 3];
    ce_tanh.model.activation = Activation::Tanh;
    ce_tanh.inner.optimizer = InnerOptimizer::Adam { beta1: 0.8, beta2: 0.99, eps: 1e-6 };
    out.push(("ce-tanh-adam-9-20-17-3".into(), ce_tanh, 5, 4));
    let mut deep = Config::sinusoid_default();
    deep.model.layers = vec![3, 12, 40, 9, 2];
    deep.inner.steps = 3;
    out.push(("deep-3-12-40-9-2".into(), deep, 33, 5));
    out
}

fn batch(config: &Config, b: usize, seed: u64) -> TaskBatch<f32> {
    metasched_tasks::random_batch(config, b, 10, 7, seed)
}

/// Hash of all outputs of one case on an engine.
fn hash_case(engine: &Engine, config: &Config, b: usize, seed: u64) -> u64 {
    let mut params = init_params(config, seed, 0.01).expect("init");
    // Perturb every value so that no tensor (the lslr table, the LSTM head) is trivially zero.
    let mut rng = CounterRng::new(seed, &[42]);
    for v in params.values_mut() {
        *v += rng.uniform_in(-0.05, 0.05) as f32;
    }
    let batch = batch(config, b, seed);
    let mut h = Fnv::new();
    let mg = engine.meta_gradient(config, &params, &batch).expect("meta_gradient");
    h.f32s(&[mg.j]);
    h.f32s(&mg.outer_loss);
    h.f32s(&mg.lr);
    for buf in mg.grad.buffers() {
        h.f32s(buf);
    }
    let range = engine.meta_gradient_range(config, &params, &batch, 1..b, b + 3).expect("range");
    h.f32s(&[range.j]);
    for buf in range.grad.buffers() {
        h.f32s(buf);
    }
    let (sum, outs) = engine.meta_gradient_sum(config, &params, &batch).expect("sum");
    for limb in sum.to_limbs() {
        h.word(limb as u32);
        h.word((limb >> 32) as u32);
    }
    for o in &outs {
        h.f32s(&[o.outer_loss]);
        h.f32s(&o.lr);
        for f in &o.features {
            h.f32s(f);
        }
        h.f32s(&o.accuracy.into_iter().collect::<Vec<_>>());
    }
    let ev = engine.evaluate(config, &params, &batch).expect("evaluate");
    h.f32s(&[ev.mean]);
    h.f32s(&ev.outer_loss);
    h.f32s(&ev.lr);
    h.f32s(&ev.accuracy.unwrap_or_default());
    h.0
}

/// Hashes recorded at commit 2bd8dda (before issue 13's speed work).
const GOLDEN: &[(&str, u64)] = &[
    ("default-sgd-so-lstm", 0xf77e50790294876e),
    ("default-sgd-so-lslr", 0xa0b02e7e1e9477d0),
    ("default-sgd-so-fixed", 0x7d18311cc7765bad),
    ("default-sgd-fo-lstm", 0x5af6ae8fa198cb66),
    ("default-sgd-fo-lslr", 0xf37f89eaf69c4046),
    ("default-sgd-fo-fixed", 0x7a4ce347fb26bcb9),
    ("default-momentum-so-lstm", 0xd28ecf63a48959a5),
    ("default-momentum-so-lslr", 0x88dd5d6047ea653f),
    ("default-momentum-so-fixed", 0xe8d851bff3540280),
    ("default-momentum-fo-lstm", 0x239399bfe3eb8ae5),
    ("default-momentum-fo-lslr", 0xd0a0dfb1d083a28e),
    ("default-momentum-fo-fixed", 0x84eecce3e2a75f81),
    ("default-adam-so-lstm", 0x350ad9d4c321e206),
    ("default-adam-so-lslr", 0x7e59f23937258d9b),
    ("default-adam-so-fixed", 0x8f7c715d7aa13773),
    ("default-adam-fo-lstm", 0x92b4819b07864ff8),
    ("default-adam-fo-lslr", 0xc184f7adcecaa877),
    ("default-adam-fo-fixed", 0xab701abfeaa462a3),
    ("tanh-1-32-24-1", 0x406a58060219f326),
    ("ce-16-40-5", 0x2986593fad35d12d),
    ("ce-tanh-adam-9-20-17-3", 0x7e3d5f22897855aa),
    ("deep-3-12-40-9-2", 0xa38dcf9c593761ed),
];

#[test]
fn outputs_are_bitwise_the_recorded_ones_for_any_thread_count() {
    let engines: Vec<Engine> = [1, 2, 3].iter().map(|&t| Engine::new(t).expect("pool")).collect();
    let print = std::env::var_os("GOLDEN_PRINT").is_some();
    let mut failures = Vec::new();
    for (name, config, b, seed) in cases() {
        let hashes: Vec<u64> = engines.iter().map(|e| hash_case(e, &config, b, seed)).collect();
        assert!(hashes.iter().all(|&x| x == hashes[0]), "{name}: thread counts disagree: {hashes:x?}");
        if print {
            println!("    (\"{name}\", 0x{:016x}),", hashes[0]);
        }
        match GOLDEN.iter().find(|(n, _)| *n == name) {
            Some(&(_, want)) if want == hashes[0] => {}
            Some(&(_, want)) => {
                failures.push(format!("{name}: 0x{:016x}, recorded 0x{want:016x}", hashes[0]))
            }
            None => failures.push(format!("{name}: no recorded hash")),
        }
    }
    assert!(failures.is_empty(), "bits changed:\n{}", failures.join("\n"));
}
