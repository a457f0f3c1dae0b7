//! Peak memory of one `full`-estimator gradient (spec §8): `window_meta_gradient` from step 0
//! over the whole horizon `T` of a digits run (learner 64-32-10, b = 32, LSTM scheduler,
//! objective every `--window` steps), with and without `--remat`. Each measurement runs in a
//! fresh child process (this binary re-executed with `--child T REMAT`) that reads its peak
//! resident set (`VmHWM`, /proc/self/status) at the end; the parent prints the table and checks
//! that the remat and plain gradients of each `T` are the same bits.
//!
//! `cargo bench --bench horizon_memory -- [--steps 100,1000,10000] [--window 20] [--optimizer sgd]
//! [--plain-max T]` (`--plain-max`: measure only `--remat` above `T` steps).

#[path = "horizon_common/mod.rs"]
mod common;

use std::process::Command;

use common::{dataset, digits_config, initial_params, run_data, timed};
use metasched::engine::Params;

/// `VmHWM` and `VmRSS` of this process in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} not in /proc/self/status"))
            / 1024.0
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// FNV-1a of the gradient's bits.
fn hash(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        x.to_bits().to_le_bytes().iter().fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    })
}

fn child(steps: usize, remat: bool, window: usize, opt: &str) {
    let config = digits_config(32, steps, opt, "lstm");
    let params: Params<f32> = initial_params(&config, opt);
    let data = dataset(&config);
    let run = run_data::<f32>(&data, &config, 0, 32);
    let theta = run.learner_init();
    let (_, base) = rss_mib();
    let (g, secs) = timed(|| {
        let mut g = params.zeros_like();
        let mut s = metasched::engine::horizon::RunState::fresh(&config, theta);
        let obj = common::objective(&config, window);
        metasched::engine::horizon::window_meta_gradient(
            &mut g, &config, &params, &mut s, &run, steps, &obj, remat, 1.0,
        )
        .expect("gradient");
        g
    });
    let (peak, _) = rss_mib();
    let phi: Vec<f32> = g.buffers().iter().skip(1).flat_map(|b| b.iter().copied()).collect();
    let norm = phi.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    println!("RESULT {steps} {remat} {base:.1} {peak:.1} {secs:.3} {:016x} {norm:.6e}", hash(&phi));
}

fn main() {
    let (mut steps, mut window, mut opt) = (vec![100, 1000, 10_000], 20usize, "sgd".to_string());
    let mut plain_max = usize::MAX;
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some("--child") {
        let t = raw[2].parse().expect("T");
        let remat = raw[3] == "true";
        window = raw[4].parse().expect("window");
        child(t, remat, window, &raw[5]);
        return;
    }
    for (k, v) in common::args() {
        match k.as_str() {
            "steps" => steps = common::list(&v),
            "window" => window = v.parse().expect("--window"),
            "optimizer" => opt = v,
            "plain-max" => plain_max = v.parse().expect("--plain-max"),
            other => panic!("unknown option --{other}"),
        }
    }
    let exe = std::env::current_exe().expect("current exe");
    println!(
        "# horizon_memory: digits 64-32-10, b = 32, lstm scheduler, {opt}, objective every {window} steps"
    );
    println!(
        "# one full-estimator gradient per fresh process; peak = VmHWM, base = VmRSS before the gradient"
    );
    println!(
        "{:>7} {:>6} {:>10} {:>10} {:>10} {:>9}  gradient",
        "T", "remat", "base MiB", "peak MiB", "grad MiB", "seconds"
    );
    for &t in &steps {
        let mut hashes = Vec::new();
        for remat in [false, true] {
            if !remat && t > plain_max {
                println!("{t:>7} {remat:>6}  not measured (--plain-max {plain_max})");
                continue;
            }
            let out = Command::new(&exe)
                .args(["--child", &t.to_string(), &remat.to_string(), &window.to_string(), &opt])
                .output()
                .expect("child");
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
                println!(
                    "{t:>7} {remat:>6}  failed: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
                );
                continue;
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let (base, peak): (f64, f64) = (f[2].parse().expect("base"), f[3].parse().expect("peak"));
            let secs: f64 = f[4].parse().expect("seconds");
            println!(
                "{t:>7} {remat:>6} {base:>10.1} {peak:>10.1} {:>10.1} {:>9.2}  {} |g| = {}",
                peak - base,
                secs,
                f[5],
                f[6]
            );
            hashes.push(f[5].to_string());
        }
        if hashes.len() == 2 {
            let same = hashes[0] == hashes[1];
            println!("{t:>7} remat and plain gradients bitwise equal: {same}");
            assert!(same, "remat changed the gradient at T = {t}");
        }
    }
}
