//! Scaling of the CPU engine (issue 13, item 4): full meta-steps per second of the default
//! configuration (exact second-order meta-gradient, clip 10, Adam; 1-40-40-1 relu, K = Q = 10,
//! T = 5, LSTM H = 20) against engine threads (B = 25) and against the batch size B (every
//! core), and the peak resident memory of one `Engine::meta_gradient` against the number of
//! inner steps T (each T in a fresh child process, so the high-water marks are separate).
//! A plain binary printing one line per measurement; medians of `--reps` repetitions.
//!
//! `cargo bench --bench scaling -- [--reps N]`

use std::process::Command;
use std::time::Instant;

use metasched::engine::init::init_params;
use metasched::engine::{Adam, AdamConfig, Config, Engine, UpdateMask, clip_grad_norm};
use metasched::tasks::sample_sinusoid;

/// Median ms per meta-step over `steps` timed steps after 3 warm-up steps.
fn ms_per_step(engine: &Engine, config: &Config, b: usize, steps: usize) -> f64 {
    let batch = sample_sinusoid(0, 0, b, 10, 10);
    let mut params = init_params(config, 0, 0.01).expect("init");
    let mut adam = Adam::new(AdamConfig::default(), &params);
    let mask = UpdateMask { theta: config.inner.learn_init };
    let mut times = Vec::new();
    for i in 0..3 + steps {
        let start = Instant::now();
        let mut grad = engine.meta_gradient(config, &params, &batch).expect("metagrad").grad;
        clip_grad_norm(&mut grad, 10.0, mask);
        adam.step(&mut params, &grad, mask);
        if i >= 3 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    median(times)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The peak resident set of this process so far, KiB (`VmHWM`; Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Child: one meta-gradient of B = 25 tasks with `steps` inner steps, then the peak RSS.
fn rss_child(steps: usize) {
    let mut config = Config::sinusoid_default();
    config.inner.steps = steps;
    let before = peak_rss_kib().unwrap_or(0);
    let engine = Engine::new(0).expect("thread pool");
    let batch = sample_sinusoid(0, 0, 25, 10, 10);
    let params = init_params(&config, 0, 0.01).expect("init");
    let out = engine.meta_gradient(&config, &params, &batch).expect("metagrad");
    let after = peak_rss_kib().unwrap_or(0);
    println!("{before} {after} {}", out.j);
}

fn main() {
    let mut reps = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().and_then(|v| v.parse().ok()).expect("--reps needs a number"),
            "--rss-child" => {
                let t = args.next().and_then(|v| v.parse().ok()).expect("--rss-child needs T");
                rss_child(t);
                return;
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let config = Config::sinusoid_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engines: Vec<Engine> = (1..=cores.min(2)).map(|t| Engine::new(t).expect("thread pool")).collect();
    // Threads and batch sizes, interleaved per repetition so that load on the machine hits
    // every case alike.
    let cases: Vec<(usize, usize, usize)> = engines
        .iter()
        .enumerate()
        .map(|(i, _)| (i, 25, 40))
        .chain([(engines.len() - 1, 100, 10), (engines.len() - 1, 1000, 3)])
        .collect();
    let mut times = vec![Vec::new(); cases.len()];
    for _ in 0..reps {
        for (c, &(e, b, steps)) in cases.iter().enumerate() {
            times[c].push(ms_per_step(&engines[e], &config, b, steps));
        }
    }
    for (c, &(e, b, _)) in cases.iter().enumerate() {
        let ms = median(times[c].clone());
        println!(
            "scaling threads={} B={b} median_ms_per_meta_step={ms:.3} meta_steps_per_s={:.1} tasks_per_s={:.0}",
            engines[e].threads(),
            1e3 / ms,
            b as f64 * 1e3 / ms
        );
    }
    let exe = std::env::current_exe().expect("own path");
    for t in [5, 10, 20, 40, 80] {
        let out = Command::new(&exe).args(["--rss-child", &t.to_string()]).output().expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut f = text.split_whitespace();
        let (before, after) = (f.next().unwrap_or("?"), f.next().unwrap_or("?"));
        println!("peak_rss T={t} B=25 threads={cores} before_kib={before} peak_kib={after}");
    }
}
