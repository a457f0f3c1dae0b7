//! `meta-coord train --task train-mlp` end to end (spec §7-8): the population's state is part
//! of the checkpoint and travels with every window job, so a run over TCP workers, a run whose
//! worker is SIGKILLed mid-window and a run whose coordinator is killed and resumed all end
//! bitwise equal to the fault-free in-process run, for tbptt and for PES. Bad long-run input
//! exits 2 with one line naming the field and writes nothing.
//!
//! `meta-worker` must be built next to `meta-coord` (`cargo test --workspace` does that).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_no_panic, coordinator_addr, finish, meta_coord, s, signal, spawn_worker, wait_for_step};

const TOKEN: &str = "long runs token";

/// A small digits run: 4 classes, 64-12-4 learner, H = 40 in windows of 10, 6 members.
fn trajectory(estimator: &str, steps: u64) -> Vec<String> {
    [
        "--task",
        "train-mlp",
        "--dataset",
        "digits:4",
        "--layers",
        "64,12,4",
        "--inner-steps",
        "40",
        "--window",
        "10",
        "--meta-batch",
        "6",
        "--batch-size",
        "8",
        "--estimator",
        estimator,
        "--hidden",
        "6",
        "--lr-max",
        "1.0",
        "--lr-init",
        "0.1",
        "--seed",
        "3",
        "--eval-every",
        "0",
        "--final-eval-tasks",
        "4",
        "--log-every",
        "5",
        "--steps",
        &steps.to_string(),
    ]
    .map(String::from)
    .to_vec()
}

struct Run {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    token_file: PathBuf,
}

impl Run {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, TOKEN).expect("token");
        Self { dir: tmp.path().join("run"), _tmp: tmp, token_file }
    }

    fn spawn(&self, args: &[String]) -> Child {
        meta_coord()
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meta-coord")
    }

    fn train(&self, trajectory: &[String], extra: &[&str]) -> Child {
        let mut args = vec!["train".to_string()];
        args.extend(trajectory.iter().cloned());
        args.extend(["--out", s(&self.dir), "--token-file", s(&self.token_file)].map(String::from));
        args.extend(extra.iter().map(|x| x.to_string()));
        self.spawn(&args)
    }

    fn worker(&self, addr: &str) -> Child {
        spawn_worker(addr, &self.token_file)
    }

    fn checkpoint(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("checkpoint.safetensors")).expect("checkpoint")
    }

    fn wait_for_step(&self, child: &mut Child, step: u64) {
        wait_for_step(&self.dir, child, step);
    }
}

fn ok(what: &str, out: &Output) {
    assert_no_panic(what, out);
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
}

fn stop_workers(workers: Vec<Child>) {
    for mut w in workers {
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = w.kill();
        let o = w.wait_with_output().expect("worker");
        assert_no_panic("meta-worker", &o);
    }
}

/// The fault-free in-process run.
fn reference(trajectory: &[String]) -> Vec<u8> {
    let r = Run::new();
    let mut args = vec!["train".to_string()];
    args.extend(trajectory.iter().cloned());
    args.extend(["--out".to_string(), s(&r.dir).to_string()]);
    let out = finish(r.spawn(&args), Duration::from_secs(120));
    ok("reference", &out);
    r.checkpoint()
}

#[test]
fn the_checkpoint_holds_the_population_and_a_resumed_run_is_bitwise_the_same() {
    for estimator in ["tbptt", "pes"] {
        let want = reference(&trajectory(estimator, 14));
        let r = Run::new();
        let out = finish(r.train(&trajectory(estimator, 5), &[]), Duration::from_secs(60));
        ok("first part", &out);
        let c = metasched_formats::read_checkpoint(r.dir.join("checkpoint.safetensors")).expect("read");
        let members = c.config_json["train"]["population"]["slots"].as_array().expect("population").len();
        assert_eq!(members, 6, "{estimator}: every member's slot is in the checkpoint");
        assert!(c.extra_tensors.keys().any(|k| k.starts_with("state.")), "{estimator}: states are saved");
        let resumed = r.spawn(&["train", "--resume", s(&r.dir), "--steps", "14"].map(String::from));
        ok("resumed", &finish(resumed, Duration::from_secs(60)));
        assert_eq!(r.checkpoint(), want, "{estimator}: resumed run differs from the uninterrupted one");
    }
}

/// Spec §8: `tbptt` with `W = H` is `full`: with one window per run, both estimators train
/// the same bits (phi, theta and the outer optimiser's state after several meta-steps).
#[test]
fn tbptt_with_the_window_equal_to_the_horizon_is_the_full_estimator() {
    let run = |estimator: &str| {
        let mut t = trajectory(estimator, 4);
        let w = t.iter().position(|a| a == "--window").expect("--window") + 1;
        t[w] = "40".to_string();
        let r = Run::new();
        let mut args = vec!["train".to_string()];
        args.extend(t);
        args.extend(["--out".to_string(), s(&r.dir).to_string()]);
        ok(estimator, &finish(r.spawn(&args), Duration::from_secs(60)));
        metasched_formats::read_checkpoint(r.dir.join("checkpoint.safetensors")).expect("read")
    };
    let (full, tbptt) = (run("full"), run("tbptt"));
    assert!(full.params.lstm.is_some(), "an lstm scheduler was trained");
    // Debug prints every f32 round-trippably (and tells -0 from 0): equal text, equal bits.
    let bits = |c: &metasched_formats::Checkpoint| format!("{:?}", c.params);
    assert_eq!(bits(&full), bits(&tbptt), "phi/theta differ between full and tbptt with W = H");
    let optim = |c: &metasched_formats::Checkpoint| {
        c.extra_tensors
            .iter()
            .filter(|(k, _)| k.starts_with("optim."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert!(!optim(&full).is_empty(), "the outer optimiser's state is saved");
    assert_eq!(
        format!("{:?}", optim(&full)),
        format!("{:?}", optim(&tbptt)),
        "the outer optimiser's state differs"
    );
}

#[test]
fn tcp_workers_and_a_worker_killed_mid_window_change_nothing() {
    for estimator in ["tbptt", "pes"] {
        let t = trajectory(estimator, 400);
        let want = reference(&t);
        let r = Run::new();
        let mut coord =
            r.train(&t, &["--listen", "127.0.0.1:0", "--expect-workers", "3", "--heartbeat-timeout", "1.5"]);
        let addr = coordinator_addr(&r.dir);
        let workers: Vec<Child> = (0..3).map(|_| r.worker(&addr)).collect();
        r.wait_for_step(&mut coord, 40);
        signal(&workers[1], "-KILL");
        let out = finish(coord, Duration::from_secs(180));
        ok("meta-coord", &out);
        stop_workers(workers);
        assert_eq!(r.checkpoint(), want, "{estimator}: a killed worker changed the result");
    }
}

#[test]
fn a_killed_coordinator_resumes_with_its_workers_bitwise() {
    let t = trajectory("tbptt", 400);
    let want = reference(&t);
    let r = Run::new();
    let mut coord = r.train(
        &t,
        &[
            "--listen",
            "127.0.0.1:0",
            "--expect-workers",
            "2",
            "--checkpoint-every",
            "7",
            "--heartbeat-timeout",
            "1.5",
        ],
    );
    let addr = coordinator_addr(&r.dir);
    let workers: Vec<Child> = (0..2).map(|_| r.worker(&addr)).collect();
    r.wait_for_step(&mut coord, 60);
    signal(&coord, "-KILL");
    let _ = finish(coord, Duration::from_secs(10));
    let resumed = r.spawn(
        &["train", "--resume", s(&r.dir), "--listen", &addr, "--token-file", s(&r.token_file)]
            .into_iter()
            .chain(["--expect-workers", "2", "--heartbeat-timeout", "1.5"])
            .map(String::from)
            .collect::<Vec<_>>(),
    );
    ok("resumed meta-coord", &finish(resumed, Duration::from_secs(180)));
    stop_workers(workers);
    assert_eq!(r.checkpoint(), want);
}

/// `train` with `extra` replacing flags of the small trajectory: must exit 2 with one line
/// naming `field`, and create nothing.
fn refused(extra: &[&str], field: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("run");
    let mut args = vec!["train".to_string()];
    // The case's flags replace the trajectory's (clap refuses a flag given twice).
    let base = trajectory("tbptt", 3);
    let mut i = 0;
    while i < base.len() {
        if extra.contains(&base[i].as_str()) {
            i += 2;
            continue;
        }
        args.push(base[i].clone());
        i += 1;
    }
    args.extend(extra.iter().map(|x| x.to_string()));
    args.extend(["--out".to_string(), s(&out_dir).to_string()]);
    let out = meta_coord().args(&args).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
    assert!(stderr.contains(field), "{extra:?}: the message names `{field}`: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{extra:?}: one line: {stderr}");
    assert!(!out_dir.exists(), "{extra:?}: nothing is written");
}

#[test]
fn bad_long_run_input_exits_2_naming_the_field_and_writes_nothing() {
    refused(&["--window", "41"], "window");
    refused(&["--window", "0"], "window");
    refused(&["--pes-sigma", "0"], "pes_sigma");
    refused(&["--pes-sigma", "-1"], "pes_sigma");
    refused(&["--pes-sigma", "nan"], "pes_sigma");
    refused(&["--batch-size", "100000"], "batch");
    refused(&["--batch-size", "0"], "batch_size");
    refused(&["--dataset", "digits:11"], "classes");
    refused(&["--dataset", "mnist"], "dataset");
    refused(&["--layers", "64,12,5"], "layers");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, x, labels) in [
        ("nan", vec![0.5f32, f32::NAN, 1.0, 2.0, 0.1, 0.2, 0.3, 0.4], vec![0i64, 1, 0, 1]),
        ("rows", vec![0.5f32, 0.1, 1.0, 2.0, 0.1, 0.2, 0.3, 0.4], vec![0i64, 1, 0]),
    ] {
        let path = tmp.path().join(format!("{name}.safetensors"));
        write_dataset(&path, &x, &labels);
        let dataset = format!("file:{}", s(&path));
        let field = if name == "nan" { "x" } else { "labels" };
        refused(
            &["--dataset", &dataset, "--layers", "2,4,2", "--loss", "cross_entropy", "--batch-size", "1"],
            field,
        );
    }
}

/// A dataset file `x [n, 2]` F32, `labels [m]` I64.
fn write_dataset(path: &Path, x: &[f32], labels: &[i64]) {
    use metasched_formats::tensor_io::{NamedTensor, write_safetensors};
    let tensors = [
        NamedTensor::f32("x", vec![x.len() / 2, 2], x),
        NamedTensor::i64("labels", vec![labels.len()], labels),
    ];
    write_safetensors(path, metasched_formats::FileKind::Dataset, &tensors, &Default::default())
        .expect("write");
}
