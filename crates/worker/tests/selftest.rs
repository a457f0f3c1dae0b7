//! `meta-worker selftest`: on the emulator every check passes and the table is printed; on
//! `cuda:0` the outcome the probe predicts: without a driver (or without the device backend)
//! exit 2 with one clear line, with a GPU every check passes (exit 0). A stub driver
//! (`crates/cuda/tests/stubs/cuda_stub.c`) runs the "driver present" branch on every host.

#[path = "../../cuda/tests/stubs/mod.rs"]
mod stubs;

use std::ffi::OsStr;
use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &OsStr)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meta-worker"));
    cmd.args(args).env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("meta-worker runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn selftest_on_the_emulator_passes_and_prints_the_table() {
    let (code, stdout, stderr) = run(&["selftest", "--device", "emu"]);
    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("worst_abs") && stdout.contains("worst_rel"), "{stdout}");
    // One row per kernel (the shared checks of metasched_cuda::checks), then the
    // whole meta-gradient, a worker's part sum and the evaluation.
    let kernels = metasched_cuda::KernelId::ALL.map(|k| format!("{} ", k.name()));
    let metagrad = [
        "metagrad sinusoid grad.theta ",
        "metagrad cross-entropy grad.theta ",
        "part sum sinusoid ",
        "evaluate cross-entropy ",
    ]
    .map(String::from);
    for check in kernels.iter().chain(&metagrad) {
        let line =
            stdout.lines().find(|l| l.starts_with(check)).unwrap_or_else(|| panic!("{check}: {stdout}"));
        assert!(line.contains("pass"), "{line}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    // The host path of a meta-step, from the runtime's counters: a warm meta-step
    // allocates nothing and waits for the device once.
    for label in ["part sum", "mean"] {
        let row = format!("host path {label} (warm");
        let line = stdout.lines().find(|l| l.starts_with(&row)).unwrap_or_else(|| panic!("{row}: {stdout}"));
        assert!(line.contains("pass"), "{line}");
        let warm = format!("  {label:<8} warm:");
        let line =
            stdout.lines().find(|l| l.starts_with(&warm)).unwrap_or_else(|| panic!("{warm}: {stdout}"));
        assert!(line.contains(" 0 allocs") && line.contains(" 1 host syncs"), "{line}");
    }
    // The part sum replayed from a captured graph: one graph launch, no kernel launch, and
    // bitwise the results of the launches.
    let row = "host path part sum graph (warm)";
    let line = stdout.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("{row}: {stdout}"));
    assert!(line.contains("pass"), "{line}");
    let summary = "  graph launches 1, kernel launches 0 on replay";
    let line =
        stdout.lines().find(|l| l.starts_with(summary)).unwrap_or_else(|| panic!("{summary}: {stdout}"));
    assert!(line.ends_with("bitwise those of the launches: yes"), "{line}");
}

fn assert_one_line_refusal(code: Option<i32>, stdout: &str, stderr: &str) -> String {
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("error: --device cuda:0: "), "{}", lines[0]);
    lines[0].to_string()
}

#[test]
fn selftest_on_cuda_matches_the_probe() {
    let (code, stdout, stderr) = run(&["selftest", "--device", "cuda:0"]);
    match metasched_cuda::probe::cuda_devices() {
        Ok(n) if n > 0 => {
            eprintln!("this host has {n} CUDA device(s): expecting every check to pass");
            assert!(!stderr.contains("panicked"), "{stderr}");
            match metasched_cuda::probe::nvrtc_available() {
                Ok(_) => {
                    assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
                    assert!(stdout.contains(", 0 failed") && !stdout.contains("FAIL"), "{stdout}");
                }
                // The kernels cannot be compiled: a failure that names NVRTC, not a pass.
                Err(e) => {
                    assert_ne!(code, Some(0), "NVRTC missing ({e}), yet selftest passed: {stdout}");
                    let all = format!("{stdout}{stderr}").to_lowercase();
                    assert!(all.contains("nvrtc"), "stdout: {stdout}\nstderr: {stderr}");
                }
            }
        }
        probe => {
            eprintln!("no usable CUDA device ({probe:?}): expecting exit 2");
            assert_one_line_refusal(code, &stdout, &stderr);
        }
    }
}

#[test]
fn selftest_on_cuda_with_a_stub_driver_exits_2_with_the_drivers_error() {
    let stub = stubs::cuda_driver("../cuda/");
    let (code, stdout, stderr) = run_env(
        &["selftest", "--device", "cuda:0"],
        &[("LD_LIBRARY_PATH", stub.0.as_os_str()), ("STUB_CUDA_DEVICES", OsStr::new("1"))],
    );
    let line = assert_one_line_refusal(code, &stdout, &stderr);
    assert!(line.contains("(stub driver)"), "{line}");
}

#[test]
fn selftest_refuses_an_unknown_device() {
    let (code, _, stderr) = run(&["selftest", "--device", "tpu"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("tpu") && stderr.contains("expected cpu, emu or cuda:N"), "{stderr}");
    let (code, _, stderr) = run(&["selftest", "--device", "cpu"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("use --device emu or cuda:N"), "{stderr}");
}
