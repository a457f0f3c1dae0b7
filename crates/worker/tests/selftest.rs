//! `meta-worker selftest`: on the emulator every check passes and the table is printed; on
//! `cuda:0` without a driver (or without the device backend) it exits 2 with one clear line.

use std::process::Command;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meta-worker"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("meta-worker runs");
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
}

#[test]
fn selftest_on_cuda_without_a_driver_exits_2_with_one_line() {
    let (code, stdout, stderr) = run(&["selftest", "--device", "cuda:0"]);
    assert_eq!(code, Some(2), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("error: --device cuda:0: "), "{}", lines[0]);
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
