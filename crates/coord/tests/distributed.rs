//! Distributed training over loopback TCP with real `meta-worker` processes: the result is
//! bitwise the in-process one, whatever fault happens — a worker killed or hung mid-run, a
//! late joiner, a worker with the wrong token, hostile raw clients, the coordinator killed
//! and resumed. No process may panic. Each test is bounded in time.
//!
//! `meta-worker` must be built next to `meta-coord` (`cargo test --workspace` does that).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_no_panic, coordinator_addr, finish, meta_coord, run, s, signal, small_trajectory as trajectory,
    spawn_worker, wait_for_step,
};

const TOKEN: &str = "correct horse battery staple";

struct Run {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    token_file: PathBuf,
}

impl Run {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let token_file = tmp.path().join("token");
        std::fs::write(&token_file, TOKEN).expect("token");
        Self { dir: tmp.path().join("run"), tmp, token_file }
    }

    fn coordinator(&self, steps: u64, extra: &[&str]) -> Child {
        let mut args: Vec<String> = vec!["train".into()];
        args.extend(trajectory(steps));
        args.extend(["--out", s(&self.dir), "--token-file", s(&self.token_file)].map(String::from));
        args.extend(extra.iter().map(|x| x.to_string()));
        meta_coord()
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meta-coord")
    }

    fn addr(&self) -> String {
        coordinator_addr(&self.dir)
    }

    fn worker(&self, addr: &str, token_file: &Path) -> Child {
        spawn_worker(addr, token_file)
    }

    fn checkpoint(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("checkpoint.safetensors")).expect("checkpoint")
    }

    fn wait_for_step(&self, child: &mut Child, step: u64) {
        wait_for_step(&self.dir, child, step);
    }
}

fn assert_clean(what: &str, out: &Output) {
    assert_no_panic(what, out);
}

/// The in-process run every distributed run must equal, bit for bit.
fn reference(steps: u64) -> Vec<u8> {
    let run_ = Run::new();
    let mut args: Vec<String> = vec!["train".into()];
    args.extend(trajectory(steps));
    args.extend(["--out".to_string(), s(&run_.dir).to_string()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run_.checkpoint()
}

#[test]
fn three_spawned_workers_equal_the_in_process_run() {
    let want = reference(40);
    let r = Run::new();
    let coord = r.coordinator(40, &["--spawn-workers", "3"]);
    let out = finish(coord, Duration::from_secs(120));
    assert_clean("meta-coord", &out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.checkpoint(), want);
    let text = std::fs::read_to_string(r.dir.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("line")).expect("json");
    assert_eq!(last["parts"].as_array().expect("parts").len(), 3, "three workers shared the step");
}

/// A run with `n` listening workers and a fault injected once step `at` is reached.
fn faulty_run(
    steps: u64,
    n: usize,
    at: u64,
    extra: &[&str],
    fault: impl FnOnce(&Run, &str, &mut Vec<Child>),
) -> (Run, Output, Vec<Output>) {
    let r = Run::new();
    let mut args = vec!["--listen", "127.0.0.1:0", "--heartbeat-timeout", "1.5", "--worker-timeout", "20"];
    let n_s = n.to_string();
    args.extend(["--expect-workers", &n_s]);
    args.extend(extra);
    let mut coord = r.coordinator(steps, &args);
    let addr = r.addr();
    let mut workers: Vec<Child> = (0..n).map(|_| r.worker(&addr, &r.token_file)).collect();
    r.wait_for_step(&mut coord, at);
    fault(&r, &addr, &mut workers);
    let out = finish(coord, Duration::from_secs(120));
    assert_clean("meta-coord", &out);
    let outs: Vec<Output> = workers
        .into_iter()
        .map(|mut w| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while w.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = w.kill();
            w.wait_with_output().expect("worker output")
        })
        .collect();
    for o in &outs {
        assert_clean("meta-worker", o);
    }
    (r, out, outs)
}

#[test]
fn a_worker_killed_mid_run_changes_nothing() {
    let want = reference(300);
    let (r, out, _) = faulty_run(300, 3, 60, &[], |_, _, workers| {
        signal(&workers[1], "-KILL");
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.checkpoint(), want);
    let text = std::fs::read_to_string(r.dir.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("line")).expect("json");
    assert_eq!(last["parts"].as_array().expect("parts").len(), 2, "two workers left");
}

#[test]
fn a_worker_that_stops_answering_is_replaced() {
    let want = reference(200);
    let mut stopped = None;
    let (r, out, _) = faulty_run(200, 2, 40, &[], |_, _, workers| {
        signal(&workers[0], "-STOP");
        stopped = Some(workers[0].id());
    });
    if let Some(pid) = stopped {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.checkpoint(), want);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no heartbeat"), "the coordinator says why it dropped the worker: {stderr}");
}

#[test]
fn a_late_joiner_is_used_and_a_wrong_token_is_refused() {
    let want = reference(300);
    let mut late_out = None;
    let (r, out, _) = faulty_run(300, 1, 30, &[], |r, addr, workers| {
        workers.push(r.worker(addr, &r.token_file));
        let bad = r.tmp.path().join("bad-token");
        std::fs::write(&bad, "not the token").expect("write");
        let intruder = r.worker(addr, &bad);
        late_out = Some(finish(intruder, Duration::from_secs(30)));
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.checkpoint(), want);
    let intruder = late_out.expect("intruder ran");
    assert_eq!(intruder.status.code(), Some(2), "a refused worker exits with 2");
    let why = String::from_utf8_lossy(&intruder.stderr);
    assert!(why.contains("refused") || why.contains("authentication"), "{why}");
    let coord_log = String::from_utf8_lossy(&out.stderr);
    assert!(coord_log.contains("authentication"), "the coordinator logs the refusal: {coord_log}");
    let text = std::fs::read_to_string(r.dir.join("metrics.jsonl")).expect("metrics");
    let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("line")).expect("json");
    assert_eq!(last["parts"].as_array().expect("parts").len(), 2, "the late joiner took part");
}

#[test]
fn hostile_clients_do_not_disturb_training() {
    let want = reference(300);
    let (r, out, _) = faulty_run(300, 2, 30, &[], |_, addr, _| {
        let mut garbage = TcpStream::connect(addr).expect("connect");
        let _ = garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02garbage garbage");
        let mut huge = TcpStream::connect(addr).expect("connect");
        let _ = huge.write_all(&u32::MAX.to_le_bytes());
        let _ = huge.write_all(&[0u8; 64]);
        let mut slow = TcpStream::connect(addr).expect("connect");
        let _ = slow.write_all(&[4]);
        // A valid frame at the wrong moment: a heartbeat instead of a hello.
        let mut early = TcpStream::connect(addr).expect("connect");
        let frame = [9u8, 0, 0, 0, 5, 1, 0, 0, 0, 0, 0, 0, 0];
        let _ = early.write_all(&frame);
        std::thread::sleep(Duration::from_millis(300));
        drop((garbage, huge, early));
        std::mem::forget(slow);
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.checkpoint(), want);
}

#[test]
fn a_killed_coordinator_resumes_and_workers_come_back() {
    let want = reference(400);
    let r = Run::new();
    let mut coord = r.coordinator(
        400,
        &[
            "--listen",
            "127.0.0.1:0",
            "--checkpoint-every",
            "25",
            "--heartbeat-timeout",
            "1.5",
            "--expect-workers",
            "2",
        ],
    );
    let addr = r.addr();
    let mut workers: Vec<Child> = (0..2).map(|_| r.worker(&addr, &r.token_file)).collect();
    r.wait_for_step(&mut coord, 80);
    signal(&coord, "-KILL");
    let _ = finish(coord, Duration::from_secs(10));
    let resumed = meta_coord()
        .args(["train", "--resume", s(&r.dir), "--listen", &addr, "--token-file", s(&r.token_file)])
        .args(["--expect-workers", "2", "--heartbeat-timeout", "1.5"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn resumed coordinator");
    let out = finish(resumed, Duration::from_secs(120));
    assert_clean("resumed meta-coord", &out);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.checkpoint(), want);
    for w in workers.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = w.kill();
    }
    for w in workers {
        let o = w.wait_with_output().expect("worker");
        assert_clean("meta-worker", &o);
    }
}

#[test]
fn with_no_worker_left_the_coordinator_saves_and_stops() {
    let r = Run::new();
    let mut coord = r.coordinator(
        100_000,
        &["--listen", "127.0.0.1:0", "--heartbeat-timeout", "1", "--worker-timeout", "2"],
    );
    let addr = r.addr();
    let mut w = r.worker(&addr, &r.token_file);
    r.wait_for_step(&mut coord, 20);
    signal(&w, "-KILL");
    let _ = w.wait();
    let out = finish(coord, Duration::from_secs(60));
    assert_clean("meta-coord", &out);
    assert!(!out.status.success(), "the coordinator gives up with an error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("worker"), "{stderr}");
    let c = metasched_formats::read_checkpoint(r.dir.join("checkpoint.safetensors")).expect("saved");
    assert!(c.config_json["train"]["step"].as_u64().expect("step") >= 20);
}

#[test]
fn sigterm_while_waiting_for_workers_saves_and_exits_130() {
    let r = Run::new();
    let coord = r.coordinator(50, &["--listen", "127.0.0.1:0", "--expect-workers", "2"]);
    let _ = r.addr();
    signal(&coord, "-TERM");
    let out = finish(coord, Duration::from_secs(30));
    assert_clean("meta-coord", &out);
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    let c = metasched_formats::read_checkpoint(r.dir.join("checkpoint.safetensors")).expect("saved");
    assert_eq!(c.config_json["train"]["step"], 0);
}

/// Runs `train` with `flags` plus `pool` (in-process or spawned workers) and returns the
/// final checkpoint's bytes.
fn checkpoint_of(flags: &[&str], pool: &[&str]) -> Vec<u8> {
    let r = Run::new();
    let mut args =
        vec!["train", "--out", s(&r.dir), "--eval-every", "0", "--log-every", "1", "--threads", "1"];
    args.extend(flags);
    args.extend(pool);
    let child = meta_coord()
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meta-coord");
    let out = finish(child, Duration::from_secs(240));
    assert_clean("meta-coord", &out);
    assert!(out.status.success(), "{flags:?} {pool:?}: {}", String::from_utf8_lossy(&out.stderr));
    r.checkpoint()
}

/// Learners and meta-batches above the default over TCP (the sizes that once livelocked at
/// step 0 on a decode limit): 1-256-256-1 (66,817 learner parameters), 1-320-320-1 (103,681),
/// 27 tasks of the default learner, and a first-order 1-64-64-1; spawned workers end bitwise
/// equal to in-process ones.
#[test]
fn wide_learners_and_large_batches_over_tcp_equal_in_process() {
    let cases: [&[&str]; 4] = [
        &["--layers", "1,256,256,1", "--meta-batch", "6", "--steps", "3", "--final-eval-tasks", "6"],
        &["--layers", "1,320,320,1", "--meta-batch", "4", "--steps", "2", "--final-eval-tasks", "4"],
        &["--meta-batch", "27", "--steps", "4", "--final-eval-tasks", "27"],
        &["--first-order", "--layers", "1,64,64,1", "--steps", "4", "--final-eval-tasks", "10"],
    ];
    for flags in cases {
        let want = checkpoint_of(flags, &["--workers", "2"]);
        let got = checkpoint_of(flags, &["--spawn-workers", "2", "--worker-timeout", "60"]);
        assert!(got == want, "{flags:?}: spawned workers differ from in-process ones");
    }
}
