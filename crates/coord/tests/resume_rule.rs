//! The resume rule: `--resume` keeps the checkpoint's trajectory settings. Changing one by a
//! flag or by editing the run's `run.toml` is refused (exit 2, one line naming the setting);
//! runtime settings may change either way.

mod common;

use std::path::Path;

use common::{run, s};

/// A 3-step run in `dir`.
fn short_run(dir: &Path) {
    let o = run(&[
        "train",
        "--out",
        s(dir),
        "--steps",
        "3",
        "--meta-batch",
        "3",
        "--layers",
        "1,8,1",
        "--hidden",
        "6",
        "--eval-every",
        "0",
        "--final-eval-tasks",
        "4",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// Runs `args`, expects exit 2 with one stderr line mentioning every `names`.
fn refused(args: &[&str], names: &[&str]) {
    let o = run(args);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: stderr {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    for n in names {
        assert!(stderr.contains(n), "{args:?}: `{n}` not named in: {stderr}");
    }
}

fn step_of(dir: &Path) -> serde_json::Value {
    let c = metasched_formats::read_checkpoint(dir.join("checkpoint.safetensors")).expect("read");
    c.config_json["train"]["step"].clone()
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read run.toml");
    assert!(text.contains(from), "{from} not in {text}");
    std::fs::write(path, text.replace(from, to)).expect("write run.toml");
}

#[test]
fn changing_a_trajectory_setting_on_resume_is_refused_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    short_run(&dir);
    let before = std::fs::read(dir.join("checkpoint.safetensors")).expect("checkpoint");
    let d = s(&dir);

    // By flag: the flag and the field are named.
    refused(&["train", "--resume", d, "--hidden", "7"], &["--hidden", "`hidden`"]);
    refused(&["train", "--resume", d, "--no-learn-init"], &["--no-learn-init", "`learn_init`"]);
    refused(&["train", "--resume", d, "--seed", "6", "--steps", "5"], &["--seed"]);
    refused(&["train", "--resume", d, "--loss", "cross_entropy"], &["--loss"]);
    refused(
        &["train", "--resume", d, "--inner-optimizer", "adam"],
        &["--inner-optimizer", "`inner_optimizer`"],
    );
    refused(&["train", "--resume", d, "--momentum", "0.5"], &["--momentum"]);

    // By editing run.toml: the key and the file are named.
    let toml = dir.join("run.toml");
    edit(&toml, "hidden = 6", "hidden = 7");
    refused(&["train", "--resume", d], &["`hidden`", "run.toml"]);
    edit(&toml, "hidden = 7", "hidden = 6");
    edit(&toml, "meta_lr = 0.001", "meta_lr = 0.5");
    refused(&["train", "--resume", d, "--steps", "5"], &["`meta_lr`", "run.toml"]);
    edit(&toml, "meta_lr = 0.5", "meta_lr = 0.001");
    // A typo in run.toml is refused too, not silently ignored.
    let text = std::fs::read_to_string(&toml).expect("read");
    std::fs::write(&toml, format!("{text}hiden = 9\n")).expect("write");
    refused(&["train", "--resume", d], &["hiden"]);
    std::fs::write(&toml, text).expect("write");

    // Nothing refused touched the run.
    assert_eq!(std::fs::read(dir.join("checkpoint.safetensors")).expect("checkpoint"), before);
    assert_eq!(step_of(&dir), 3);
}

#[test]
fn runtime_settings_may_change_on_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    short_run(&dir);
    let d = s(&dir);

    // By editing run.toml: more steps, a metrics line every step.
    let toml = dir.join("run.toml");
    edit(&toml, "steps = 3", "steps = 5");
    edit(&toml, "log_every = 10", "log_every = 1");
    let o = run(&["train", "--resume", d]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(step_of(&dir), 5);
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics");
    assert!(metrics.lines().any(|l| l.contains("\"step\":4")), "log_every = 1 from run.toml: {metrics}");

    // By flag, repeating a trajectory setting unchanged is fine.
    let o = run(&["train", "--resume", d, "--steps", "6", "--workers", "2", "--hidden", "6", "--seed", "5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(step_of(&dir), 6);
    let text = std::fs::read_to_string(&toml).expect("run.toml");
    assert!(text.contains("steps = 6") && text.contains("workers = 2"), "{text}");
}
