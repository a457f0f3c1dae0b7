//! `meta-worker --device cuda:N` where it cannot run: exit 2 with one clear line (the missing
//! driver library, no such device, or the driver's own error), never a panic, and without
//! trying to reach the coordinator.

use std::process::Command;
use std::time::{Duration, Instant};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meta-worker"))
        .args(args)
        .env("METASCHED_TOKEN", "test-token")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("meta-worker runs");
    assert!(start.elapsed() < Duration::from_secs(30), "refused without waiting for a coordinator");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cuda_device_is_refused_with_exit_2_and_one_clear_line() {
    let (code, stderr) = run(&["--device", "cuda:0", "--coord", "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: --device cuda:0: "), "{line}");
    assert!(
        (line.contains("no CUDA driver") && line.contains("libcuda.so.1"))
            || line.contains("cannot start CUDA")
            || line.contains("reports no devices")
            || line.contains("CUDA driver: "),
        "{line}"
    );
}

#[test]
fn malformed_device_is_refused() {
    let (code, stderr) = run(&["--device", "cuda:zero", "--coord", "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("bad CUDA device index in `cuda:zero`"), "{stderr}");
    let (code, stderr) = run(&["--device", "tpu", "--coord", "127.0.0.1:9"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("expected cpu, emu or cuda:N"), "{stderr}");
}

#[test]
fn compile_kernels_is_a_subcommand_that_excludes_worker_flags() {
    let (code, stderr) = run(&["--coord", "127.0.0.1:9", "compile-kernels", "--arch", "sm_80", "--out", "x"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    let (code, stderr) = run(&["compile-kernels", "--arch", "sm_7x", "--out", "x"]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("unknown GPU architecture"), "{stderr}");
}
