//! `meta-coord train` end to end: worker count and interruptions (SIGINT, SIGKILL + resume)
//! leave the final checkpoint bitwise unchanged; non-finite steps are skipped, never applied;
//! TOML configuration and flags combine as documented.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{meta_coord, run, s};

/// Flags of a short, fast run.
fn short(out: &Path, steps: u64) -> Vec<String> {
    [
        "train",
        "--out",
        s(out),
        "--steps",
        &steps.to_string(),
        "--meta-batch",
        "7",
        "--layers",
        "1,16,16,1",
        "--hidden",
        "6",
        "--eval-every",
        "0",
        "--final-eval-tasks",
        "8",
        "--log-every",
        "1",
        "--seed",
        "3",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect()
}

fn train(args: &[String]) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&a);
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
}

fn ckpt(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoint.safetensors")).expect("checkpoint")
}

fn with(mut base: Vec<String>, extra: &[&str]) -> Vec<String> {
    base.extend(extra.iter().map(|x| x.to_string()));
    base
}

#[test]
fn the_number_of_workers_does_not_change_a_bit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (tmp.path().join("one"), tmp.path().join("three"), tmp.path().join("two-threads"));
    train(&with(short(&a, 30), &["--workers", "1", "--threads", "1"]));
    train(&with(short(&b, 30), &["--workers", "3", "--threads", "1"]));
    train(&with(short(&c, 30), &["--workers", "1", "--threads", "2"]));
    assert_eq!(ckpt(&a), ckpt(&b), "1 worker vs 3 workers");
    assert_eq!(ckpt(&a), ckpt(&c), "1 thread vs 2 threads");
    let before = metasched_formats::read_checkpoint(a.join("checkpoint.safetensors")).expect("read");
    assert_eq!(before.config_json["train"]["step"], 30);
}

/// Waits until the run's metrics log reaches `step`.
fn wait_for_step(child: &mut Child, dir: &Path, step: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
        let last = text.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        if last.and_then(|v| v["step"].as_u64()).is_some_and(|s| s >= step) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("training ended ({status}) before step {step}");
        }
        assert!(Instant::now() < deadline, "step {step} not reached in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn(args: &[String]) -> Child {
    meta_coord().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn meta-coord")
}

fn interrupted_then_resumed(signal: &str) -> (PathBuf, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (whole, cut) = (tmp.path().join("whole"), tmp.path().join("cut"));
    let steps = 1500;
    train(&with(short(&whole, steps), &["--checkpoint-every", "40"]));
    let args = with(short(&cut, steps), &["--checkpoint-every", "40"]);
    let mut child = spawn(&args);
    wait_for_step(&mut child, &cut, 100);
    let ok =
        std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    assert!(ok.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if signal == "-INT" {
        assert_eq!(out.status.code(), Some(130), "SIGINT exit code; stderr: {stderr}");
    }
    let saved =
        metasched_formats::read_checkpoint(cut.join("checkpoint.safetensors")).expect("saved checkpoint");
    let at = saved.config_json["train"]["step"].as_u64().expect("step");
    assert!(at < steps, "the run was not interrupted (step {at})");
    if signal == "-INT" {
        assert!(at >= 100, "SIGINT saves the current step, got {at}");
    }
    let o = run(&["train", "--resume", s(&cut)]);
    assert!(o.status.success(), "resume failed: {}", String::from_utf8_lossy(&o.stderr));
    (whole, cut, tmp)
}

#[test]
fn sigint_then_resume_ends_bitwise_equal() {
    let (whole, cut, _tmp) = interrupted_then_resumed("-INT");
    assert_eq!(ckpt(&whole), ckpt(&cut));
    // Every step is logged exactly once across the interruption.
    let text = std::fs::read_to_string(cut.join("metrics.jsonl")).expect("metrics");
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["step"].as_u64().expect("step"))
        .collect();
    assert_eq!(steps, (1..=1500).collect::<Vec<u64>>());
}

#[test]
fn sigkill_then_resume_ends_bitwise_equal() {
    let (whole, cut, _tmp) = interrupted_then_resumed("-KILL");
    assert_eq!(ckpt(&whole), ckpt(&cut));
}

#[test]
fn non_finite_steps_are_skipped_and_never_applied() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("diverge");
    // The largest rate accepted (`MAX_RATE`) makes every inner run diverge.
    let args = with(short(&dir, 6), &["--scheduler", "fixed", "--lr-fixed", "100"]);
    train(&args);
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json");
    assert_eq!(last["skipped"], 6);
    assert!(last["grad_norm"].is_null());
    // Parameters are still the initial ones.
    let init = tmp.path().join("init.safetensors");
    let o = run(&[
        "init",
        "--out",
        s(&init),
        "--layers",
        "1,16,16,1",
        "--scheduler",
        "fixed",
        "--lr-fixed",
        "100",
        "--seed",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = metasched_formats::read_checkpoint(&init).expect("init");
    let b = metasched_formats::read_checkpoint(dir.join("checkpoint.safetensors")).expect("trained");
    assert_eq!(a.params, b.params);
}

#[test]
fn toml_config_is_read_and_flags_override_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("run.toml");
    std::fs::write(
        &cfg,
        "steps = 9\nmeta_batch = 4\nlayers = [1, 8, 1]\nscheduler = \"lslr\"\nfinal_eval_tasks = 5\n",
    )
    .expect("write");
    let dir = tmp.path().join("run");
    let o = run(&["train", "--config", s(&cfg), "--steps", "5", "--out", s(&dir)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let c = metasched_formats::read_checkpoint(dir.join("checkpoint.safetensors")).expect("read");
    assert_eq!(c.config_json["train"]["step"], 5);
    assert_eq!(c.config_json["train"]["config"]["meta_batch"], 4);
    assert_eq!(c.config.model.layers, vec![1, 8, 1]);
    assert!(c.params.lslr.is_some());

    let typo = tmp.path().join("typo.toml");
    std::fs::write(&typo, "stpes = 9\n").expect("write");
    let o = run(&["train", "--config", s(&typo), "--out", s(&tmp.path().join("x"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stpes"));
}

#[test]
fn runs_are_protected_and_resume_refuses_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    train(&short(&dir, 3));
    let o = run(&with(short(&dir, 3), &[]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2), "a second run into the same directory is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));
    let o = run(&["train", "--resume", s(&dir), "--meta-lr", "0.1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--meta-lr"));
    let o = run(&["train", "--resume", s(&dir), "--steps", "5"]);
    assert!(o.status.success(), "extending a run is allowed: {}", String::from_utf8_lossy(&o.stderr));
    let c = metasched_formats::read_checkpoint(dir.join("checkpoint.safetensors")).expect("read");
    assert_eq!(c.config_json["train"]["step"], 5);
    let o = run(&["train", "--resume", s(&tmp.path().join("nothing"))]);
    assert_eq!(o.status.code(), Some(2));
}
