//! `meta-worker --device cuda:N`: the outcome the probe predicts, on any host, never a hang.
//! Without a driver: exit 2 with one clear line (the missing driver library, no such device,
//! or the driver's own error), never a panic, and without trying to reach the coordinator.
//! With a GPU: the device opens and the absent coordinator is retried until
//! `--give-up-after`, then exit 1. A stub driver (`crates/cuda/tests/stubs/cuda_stub.c`, one
//! device that refuses real work) runs the "driver present" branch of the probe on every host.

#[path = "../../cuda/tests/stubs/mod.rs"]
mod stubs;

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

fn run_env(args: &[&str], env: &[(&str, &OsStr)]) -> (Option<i32>, String) {
    let start = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meta-worker"));
    cmd.args(args).env("METASCHED_TOKEN", "test-token").env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("meta-worker runs");
    assert!(start.elapsed() < Duration::from_secs(30), "bounded: took {:?}", start.elapsed());
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    run_env(args, &[])
}

const CUDA0: [&str; 6] = ["--device", "cuda:0", "--coord", "127.0.0.1:9", "--give-up-after", "2"];

/// Exit 2, no panic, exactly one line `error: --device cuda:0: ...`; returns the line.
fn assert_refused(code: Option<i32>, stderr: &str) -> String {
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("error: --device cuda:0: "), "{}", lines[0]);
    lines[0].to_string()
}

#[test]
fn cuda_device_is_refused_without_a_driver_and_bounded_with_one() {
    let (code, stderr) = run(&CUDA0);
    match metasched_cuda::probe::cuda_devices() {
        Ok(n) if n > 0 => {
            // A GPU host: the device opened, the coordinator (port 9) never answers.
            eprintln!("this host has {n} CUDA device(s): expecting the bounded retry");
            assert_eq!(code, Some(1), "stderr: {stderr}");
            assert!(!stderr.contains("panicked"), "stderr: {stderr}");
            assert!(stderr.contains("gave up reaching the coordinator at 127.0.0.1:9"), "{stderr}");
        }
        probe => {
            eprintln!("no usable CUDA device ({probe:?}): expecting exit 2");
            let line = assert_refused(code, &stderr);
            assert!(
                (line.contains("no CUDA driver") && line.contains("libcuda.so.1"))
                    || line.contains("cannot start CUDA")
                    || line.contains("reports no devices")
                    || line.contains("CUDA driver: "),
                "{line}"
            );
        }
    }
}

#[test]
fn cuda_device_with_a_stub_driver_is_refused_with_the_drivers_error() {
    let stub = stubs::cuda_driver("../cuda/");
    let env = [("LD_LIBRARY_PATH", stub.0.as_os_str()), ("STUB_CUDA_DEVICES", OsStr::new("1"))];
    let (code, stderr) = run_env(&CUDA0, &env);
    let line = assert_refused(code, &stderr);
    assert!(line.contains("cannot start CUDA") && line.contains("(stub driver)"), "{line}");
    // An ordinal the (stub) driver does not have is refused from the probe's count alone.
    let (code, stderr) =
        run_env(&["--device", "cuda:1", "--coord", "127.0.0.1:9", "--give-up-after", "2"], &env);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("the CUDA driver reports 1 device(s)"), "{stderr}");
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

/// A kernels directory of fake PTX for sm_80 whose manifest says NVRTC 12.6 / ISA 8.5, fresh
/// (the real source hashes) unless `stale`.
fn fake_kernels_dir(name: &str, stale: bool) -> std::path::PathBuf {
    use metasched_cuda::kernel_dir::{MANIFEST, Manifest, builtin_source_sha256};
    let d = std::env::temp_dir().join(format!("metasched-worker-kdir-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    let mut m = Manifest::default();
    for file in metasched_cuda::compile::kernel_files() {
        let stem = file.trim_end_matches(".cu");
        let ptx = format!("{stem}.sm_80.ptx");
        std::fs::write(d.join(&ptx), ".version 8.5\n.target sm_80\n").expect("write ptx");
        let hash = if stale { "0".repeat(64) } else { builtin_source_sha256(file).expect("hash") };
        m.add(&d, &ptx, file, &hash, "sm_80", "12.6").expect("manifest entry");
    }
    std::fs::write(d.join(MANIFEST), m.render()).expect("manifest");
    d
}

/// Precompiled kernels through a stub driver that opens a context (sm_86, CUDA 12.4) and
/// refuses every module with CUDA_ERROR_UNSUPPORTED_PTX_VERSION: `--kernels DIR` and
/// `$METASCHED_KERNELS_DIR` are used, a refusal is one line naming the file and both versions,
/// and a stale directory is refused before the driver sees it.
#[test]
fn precompiled_kernels_refused_by_the_driver_or_stale_are_one_line() {
    let stub = stubs::cuda_driver("../cuda/");
    let env = [
        ("LD_LIBRARY_PATH", stub.0.as_os_str()),
        ("STUB_CUDA_CONTEXT", OsStr::new("1")),
        ("STUB_CUDA_CC", OsStr::new("86")),
        ("STUB_CUDA_VERSION", OsStr::new("12040")),
    ];
    let dir = fake_kernels_dir("refused", false);
    let kernels = dir.to_str().expect("utf-8");
    let (code, stderr) = run_env(&["selftest", "--device", "cuda:0", "--kernels", kernels], &env);
    let line = assert_refused(code, &stderr);
    assert!(line.contains("lstm_cell.sm_80.ptx: the driver refused it"), "{line}");
    assert!(line.contains("CUDA_ERROR_UNSUPPORTED_PTX_VERSION"), "{line}");
    assert!(
        line.contains("PTX ISA 8.5 written by NVRTC 12.6") && line.contains("driver CUDA 12.4"),
        "{line}"
    );
    let mut with_var = env.to_vec();
    with_var.push(("METASCHED_KERNELS_DIR", dir.as_os_str()));
    let (code, stderr) = run_env(&CUDA0, &with_var);
    assert!(assert_refused(code, &stderr).contains("lstm_cell.sm_80.ptx: the driver refused it"), "{stderr}");

    let stale = fake_kernels_dir("stale", true);
    let (code, stderr) =
        run_env(&["selftest", "--device", "cuda:0", "--kernels", stale.to_str().expect("utf-8")], &env);
    let line = assert_refused(code, &stderr);
    assert!(
        line.contains("lstm_cell.sm_80.ptx: stale") && line.contains("rerun meta-worker compile-kernels"),
        "{line}"
    );
}
