//! `meta-coord compare` (what `kernels/gpu_check.sh` judges device outputs with) and
//! `sample-tasks --task digits` (its cross-entropy tasks).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn coord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meta-coord")).args(args).output().expect("run meta-coord")
}

fn ok(args: &[&str]) -> String {
    let out = coord(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("metasched-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn compare_passes_equal_outputs_and_names_differing_tensors() {
    let d = tmp("mg");
    let (ck, ck2, tasks) = (d.join("a.safetensors"), d.join("b.safetensors"), d.join("t.safetensors"));
    ok(&["init", "--out", s(&ck), "--seed", "1"]);
    ok(&["init", "--out", s(&ck2), "--seed", "2"]);
    ok(&["sample-tasks", "--tasks", "3", "--out", s(&tasks)]);
    let (m1, m2, m3) = (d.join("m1.safetensors"), d.join("m2.safetensors"), d.join("m3.safetensors"));
    for (c, m) in [(&ck, &m1), (&ck, &m2), (&ck2, &m3)] {
        ok(&["metagrad", "--checkpoint", s(c), "--tasks", s(&tasks), "--out", s(m)]);
    }
    let same = ok(&["compare", "--exact", s(&m1), s(&m2)]);
    assert!(same.contains("all tensors agree") && same.contains("grad.phi.lstm.weight_ih"), "{same}");
    let out = coord(&["compare", s(&m3), s(&m1)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tensor(s) differ beyond the tolerance") && err.contains("grad.theta"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A loose enough tolerance accepts them; different tensor sets are refused.
    ok(&["compare", s(&m3), s(&m1), "--atol", "1e9"]);
    let out = coord(&["compare", s(&m1), s(&ck)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hold different tensors"));
}

#[test]
fn digits_task_files_feed_cross_entropy_metagrad() {
    let d = tmp("digits");
    let (ck, tasks, m) = (d.join("c.safetensors"), d.join("t.safetensors"), d.join("m.safetensors"));
    ok(&["init", "--out", s(&ck), "--layers", "64,16,5", "--loss", "cross_entropy"]);
    let w = ok(&[
        "sample-tasks",
        "--task",
        "digits",
        "--ways",
        "5",
        "--shots",
        "1",
        "--query",
        "2",
        "--tasks",
        "2",
        "--out",
        s(&tasks),
    ]);
    assert!(w.contains("2 tasks, K = 5, Q = 10"), "{w}");
    ok(&["metagrad", "--checkpoint", s(&ck), "--tasks", s(&tasks), "--out", s(&m)]);
    let out = coord(&["sample-tasks", "--task", "digits", "--ways", "11", "--out", s(&tasks)]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
