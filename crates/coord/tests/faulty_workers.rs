//! Workers that answer wrongly, late or not at all, and peers that only hold connections open:
//! each costs that worker (or that connection) only. A wrong answer drops the worker that sent
//! it with the reason logged and its part goes to another; a late duplicate is ignored; a
//! coordinator paused past the heartbeat timeout keeps its workers; a flood of idle connections
//! does not lock a worker out; a worker that cannot set up the run says why and the
//! coordinator's `--worker-timeout` fires with that reason. Every run that finishes ends with
//! the checkpoint of the fault-free in-process run, bit for bit, and no process panics. Each
//! test is bounded in time and stays on loopback.
//!
//! `meta-worker` must be built next to `meta-coord` (`cargo test --workspace` does that).

mod common;

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{assert_no_panic, coordinator_addr, finish, meta_coord, s, small_trajectory, worker_bin};
use metasched_engine::{FixedSum, Params};
use metasched_proto::{
    Capabilities, DeviceKind, EvalResult, Job, MAX_FRAME_BYTES, StepResult, ToCoord, ToWorker, Token,
    read_sealed, worker_handshake, write_sealed,
};

const TOKEN: &str = "faulty workers token";

/// `small_trajectory(steps)` with `--eval-every` set to `eval_every`.
fn trajectory(steps: u64, eval_every: u64) -> Vec<String> {
    let mut t = small_trajectory(steps);
    let at = t.iter().position(|a| a == "--eval-every").expect("--eval-every") + 1;
    t[at] = eval_every.to_string();
    t
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

    fn coordinator(&self, trajectory: &[String], extra: &[&str]) -> Child {
        meta_coord()
            .arg("train")
            .args(trajectory)
            .args(["--out", s(&self.dir), "--token-file", s(&self.token_file)])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meta-coord")
    }

    fn worker(&self, addr: &str) -> Child {
        Command::new(worker_bin())
            .args(["--coord", addr, "--token-file", s(&self.token_file), "--threads", "1"])
            .args(["--give-up-after", "20"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meta-worker")
    }

    fn checkpoint(&self) -> Vec<u8> {
        std::fs::read(self.dir.join("checkpoint.safetensors")).expect("checkpoint")
    }

    fn metrics(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("metrics.jsonl")).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn wait_for_step(&self, child: &mut Child, step: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.metrics().last().and_then(|v| v["step"].as_u64()).is_none_or(|s| s < step) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("coordinator ended ({status}) before step {step}");
            }
            assert!(Instant::now() < deadline, "step {step} not reached in time");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The in-process run of `trajectory`: its checkpoint and its standard output.
fn reference(trajectory: &[String]) -> (Vec<u8>, String) {
    let r = Run::new();
    let o = meta_coord().arg("train").args(trajectory).args(["--out", s(&r.dir)]).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (r.checkpoint(), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The lines of `stdout` that report the final evaluation.
fn final_evaluation(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("final evaluation")).collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Ways a fake worker spoils an answer to a meta-gradient part.
const STEP_FAULTS: [&str; 9] =
    ["step", "version", "first", "short sum", "long sum", "huge sum", "short losses", "long rates", "eval"];
/// Ways a fake worker spoils an answer to an evaluation part.
const EVAL_FAULTS: [&str; 5] = ["short losses", "long losses", "short rates", "accuracy", "step"];

/// A worker that speaks the protocol correctly but answers every part wrongly, one fault after
/// another (reconnecting after each, since the coordinator drops it), until `stop` is raised.
/// Returns how many wrong answers it sent.
fn fake_worker(addr: String, stop: Arc<AtomicBool>) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (steps, evals) = (AtomicUsize::new(0), AtomicUsize::new(0));
    rt.block_on(async {
        let token = Token::new(TOKEN).expect("token");
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let caps = Capabilities {
                device: DeviceKind::Cpu,
                device_count: 1,
                cores: 1,
                build_version: "fake".into(),
                name: "fake-worker".into(),
                collective: None,
            };
            let Ok((_, setup, session)) =
                worker_handshake(&mut stream, &token, caps, Duration::from_secs(5)).await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let metasched_proto::Session { mut sealer, mut opener } = session;
            let params: usize = Params::<f32>::zeros(&setup.config).buffers().iter().map(|b| b.len()).sum();
            let lr_per_task = setup.config.inner.steps * setup.config.groups();
            if write_sealed(&mut stream, &mut sealer, &ToCoord::Heartbeat { seq: 0 }).await.is_err() {
                continue;
            }
            loop {
                let read = tokio::time::timeout(
                    Duration::from_millis(200),
                    read_sealed::<_, ToWorker>(&mut stream, &mut opener, MAX_FRAME_BYTES),
                )
                .await;
                let msg = match read {
                    Err(_) if stop.load(Ordering::Relaxed) => return,
                    Err(_) => continue,
                    Ok(Err(_)) => break, // dropped: reconnect for the next fault
                    Ok(Ok(m)) => m,
                };
                let reply = match msg {
                    ToWorker::Ping => ToCoord::Heartbeat { seq: 1 },
                    ToWorker::Stop => return,
                    ToWorker::Work { job_id, job, .. } => {
                        let n = match job {
                            Job::MetaGrad { .. } | Job::Window { .. } => &steps,
                            Job::Eval { .. } => &evals,
                        };
                        wrong_answer(job_id, &job, n.fetch_add(1, Ordering::Relaxed), params, lr_per_task)
                    }
                    _ => continue,
                };
                if write_sealed(&mut stream, &mut sealer, &reply).await.is_err() {
                    break;
                }
            }
        }
    });
    steps.into_inner() + evals.into_inner()
}

/// The `n`-th wrong answer: right in every respect but one.
fn wrong_answer(job_id: u64, job: &Job, n: usize, params: usize, lr_per_task: usize) -> ToCoord {
    match *job {
        Job::MetaGrad { step, version, first, count } => {
            let mut r = StepResult {
                step,
                version,
                first,
                sum: FixedSum::zeros(params),
                outer_loss: vec![0.25; count],
                lr: vec![0.01; count * lr_per_task],
                compute_s: 0.01,
            };
            match STEP_FAULTS[n % STEP_FAULTS.len()] {
                "step" => r.step += 1,
                "version" => r.version += 1,
                "first" => r.first += 1,
                "short sum" => r.sum = FixedSum::zeros(params - 1),
                "long sum" => r.sum = FixedSum::zeros(params + 1),
                "huge sum" => {
                    let mut limbs = r.sum.to_limbs();
                    limbs[2] = 1 << 30;
                    r.sum = FixedSum::from_limbs(&limbs).expect("limbs");
                }
                "short losses" => r.outer_loss.truncate(count - 1),
                "long rates" => r.lr.push(0.01),
                _ => {
                    let result = EvalResult {
                        first,
                        outer_loss: r.outer_loss,
                        lr: r.lr,
                        accuracy: vec![],
                        compute_s: 0.01,
                    };
                    return ToCoord::EvalDone { job_id, result };
                }
            }
            ToCoord::StepDone { job_id, result: r }
        }
        Job::Eval { first, count, .. } => {
            let mut r = EvalResult {
                first,
                outer_loss: vec![0.25; count],
                lr: vec![0.01; count * lr_per_task],
                accuracy: vec![],
                compute_s: 0.01,
            };
            match EVAL_FAULTS[n % EVAL_FAULTS.len()] {
                "short losses" => r.outer_loss.truncate(count / 2),
                "long losses" => r.outer_loss.extend(vec![0.25; count]),
                "short rates" => r.lr.pop().map_or((), drop),
                "accuracy" => r.accuracy = vec![1.0; count],
                _ => {
                    let result = StepResult {
                        step: 0,
                        version: 0,
                        first,
                        sum: FixedSum::zeros(params),
                        outer_loss: r.outer_loss,
                        lr: r.lr,
                        compute_s: 0.01,
                    };
                    return ToCoord::StepDone { job_id, result };
                }
            }
            ToCoord::EvalDone { job_id, result: r }
        }
        // These tests train few-shot tasks only: a window job is a protocol error here.
        Job::Window { .. } => ToCoord::Failed { job_id, message: "no window jobs in this test".into() },
    }
}

#[test]
fn wrong_answers_drop_only_their_worker_and_change_nothing() {
    let traj = trajectory(40, 4);
    let (want, want_stdout) = reference(&traj);
    let r = Run::new();
    let mut coord = r.coordinator(
        &traj,
        &[
            "--listen",
            "127.0.0.1:0",
            "--expect-workers",
            "2",
            "--heartbeat-timeout",
            "5",
            "--worker-timeout",
            "30",
        ],
    );
    let addr = coordinator_addr(&r.dir);
    let stop = Arc::new(AtomicBool::new(false));
    let fake = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || fake_worker(addr, stop))
    };
    let worker = r.worker(&addr);
    r.wait_for_step(&mut coord, 1);
    let out = finish(coord, Duration::from_secs(240));
    stop.store(true, Ordering::Relaxed);
    let wrong = fake.join().expect("fake worker");
    let w = finish(worker, Duration::from_secs(30));
    assert_no_panic("meta-coord", &out);
    assert_no_panic("meta-worker", &w);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(r.checkpoint(), want, "wrong answers changed the result: {err}");
    assert_eq!(
        final_evaluation(&String::from_utf8_lossy(&out.stdout)),
        final_evaluation(&want_stdout),
        "wrong answers changed the final evaluation"
    );
    assert!(wrong >= STEP_FAULTS.len(), "the fake worker got only {wrong} parts: {err}");
    assert!(err.contains("wrong answer to"), "the coordinator says why it dropped the worker: {err}");
    assert!(err.contains("gradient sum of"), "a sum of the wrong length is named: {err}");
    assert!(err.contains("out of range"), "an implausible sum is named: {err}");
    assert!(err.contains("losses for"), "short losses are named: {err}");
}

#[test]
fn late_duplicates_past_a_tiny_step_deadline_are_ignored() {
    let traj = trajectory(16, 2);
    let (want, want_stdout) = reference(&traj);
    let r = Run::new();
    let mut coord = r.coordinator(
        &traj,
        &[
            "--listen",
            "127.0.0.1:0",
            "--expect-workers",
            "2",
            "--step-deadline",
            "0.001",
            "--worker-timeout",
            "30",
        ],
    );
    let addr = coordinator_addr(&r.dir);
    let workers = [r.worker(&addr), r.worker(&addr)];
    r.wait_for_step(&mut coord, 1);
    let out = finish(coord, Duration::from_secs(240));
    let err = stderr(&out);
    assert_no_panic("meta-coord", &out);
    for w in workers {
        assert_no_panic("meta-worker", &finish(w, Duration::from_secs(30)));
    }
    assert!(out.status.success(), "{err}");
    assert_eq!(r.checkpoint(), want, "{err}");
    assert_eq!(final_evaluation(&String::from_utf8_lossy(&out.stdout)), final_evaluation(&want_stdout));
    assert!(!err.contains("protocol violation"), "a late duplicate was taken for a violation: {err}");
    assert!(!err.contains("worker lost"), "a healthy worker was dropped: {err}");
    let redispatched: u64 = r.metrics().iter().filter_map(|m| m["redispatched"].as_u64()).sum();
    assert!(redispatched > 0, "no part was sent to a second worker past the deadline");
}

#[test]
fn a_paused_coordinator_keeps_its_workers() {
    let traj = trajectory(60, 0);
    let (want, _) = reference(&traj);
    let r = Run::new();
    let mut coord = r.coordinator(
        &traj,
        &[
            "--listen",
            "127.0.0.1:0",
            "--expect-workers",
            "2",
            "--heartbeat-timeout",
            "3",
            "--worker-timeout",
            "30",
        ],
    );
    let addr = coordinator_addr(&r.dir);
    let workers = [r.worker(&addr), r.worker(&addr)];
    r.wait_for_step(&mut coord, 3);
    let kill = |sig: &str| {
        assert!(Command::new("kill").args([sig, &coord.id().to_string()]).status().expect("kill").success());
    };
    kill("-STOP");
    std::thread::sleep(Duration::from_secs(6));
    kill("-CONT");
    let out = finish(coord, Duration::from_secs(240));
    let err = stderr(&out);
    assert_no_panic("meta-coord", &out);
    for w in workers {
        assert_no_panic("meta-worker", &finish(w, Duration::from_secs(30)));
    }
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("worker lost"), "a pause of the coordinator dropped a worker: {err}");
    assert_eq!(r.checkpoint(), want);
    let last = r.metrics().last().cloned().expect("metrics");
    assert_eq!(last["parts"].as_array().expect("parts").len(), 2, "both workers still share the step");
}

/// Holds `n` idle connections to `addr` open, reopening each as soon as it is dropped, until
/// `stop` is raised (or two minutes pass); returns how many it opened.
fn idle_flood(addr: String, n: usize, stop: Arc<AtomicBool>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let open = || {
        let c = TcpStream::connect(&addr).ok()?;
        c.set_nonblocking(true).ok()?;
        Some(c)
    };
    let mut conns: Vec<Option<TcpStream>> = (0..n).map(|_| open()).collect();
    let mut opened = n;
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for c in &mut conns {
            let alive = match c {
                Some(s) => match s.read(&mut buf) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == ErrorKind::WouldBlock,
                },
                None => false,
            };
            if !alive {
                *c = open();
                opened += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    opened
}

#[test]
fn a_flood_of_idle_connections_does_not_lock_a_worker_out() {
    let traj = trajectory(10, 0);
    let (want, _) = reference(&traj);
    let r = Run::new();
    let coord =
        r.coordinator(&traj, &["--listen", "127.0.0.1:0", "--expect-workers", "1", "--worker-timeout", "40"]);
    let addr = coordinator_addr(&r.dir);
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || idle_flood(addr, 80, stop))
    };
    // Every handshake slot is taken by then.
    std::thread::sleep(Duration::from_millis(500));
    let worker = r.worker(&addr);
    let out = finish(coord, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().expect("flood");
    let w = finish(worker, Duration::from_secs(30));
    let err = stderr(&out);
    assert_no_panic("meta-coord", &out);
    assert_no_panic("meta-worker", &w);
    assert!(out.status.success(), "the worker never joined through the flood ({opened} connections): {err}");
    assert!(w.status.success(), "{}", stderr(&w));
    assert!(opened > 80, "the flood was never dropped: {opened}");
    assert_eq!(r.checkpoint(), want);
}

#[test]
fn a_worker_that_cannot_set_up_the_run_says_why_and_the_worker_timeout_fires() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (coord_cwd, worker_cwd) = (tmp.path().join("coordinator"), tmp.path().join("worker"));
    std::fs::create_dir_all(coord_cwd.join("tasks")).expect("dirs");
    std::fs::create_dir_all(&worker_cwd).expect("dirs");
    let sampled = meta_coord()
        .args(["sample-tasks", "--task", "sinusoid", "--tasks", "9", "--shots", "10", "--query", "10"])
        .args(["--seed", "5", "--out", s(&coord_cwd.join("tasks").join("0.safetensors"))])
        .output()
        .expect("sample-tasks");
    assert!(sampled.status.success(), "{}", stderr(&sampled));
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let out_dir = tmp.path().join("run");
    let started = Instant::now();
    let coord = meta_coord()
        .current_dir(&coord_cwd)
        .arg("train")
        .args(small_trajectory(5))
        .args(["--task", "file:tasks", "--out", s(&out_dir), "--token-file", s(&token_file)])
        .args(["--listen", "127.0.0.1:0", "--expect-workers", "1", "--worker-timeout", "4"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meta-coord");
    let addr = coordinator_addr(&out_dir);
    // Started elsewhere, the worker cannot list the relative task directory.
    let mut worker = Command::new(worker_bin())
        .current_dir(&worker_cwd)
        .args(["--coord", &addr, "--token-file", s(&token_file), "--threads", "1", "--give-up-after", "30"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meta-worker");
    let out = finish(coord, Duration::from_secs(60));
    let _ = worker.kill();
    let w = worker.wait_with_output().expect("worker output");
    let err = stderr(&out);
    assert_no_panic("meta-coord", &out);
    assert_no_panic("meta-worker", &w);
    assert!(!out.status.success(), "the run cannot succeed without a worker: {err}");
    assert!(started.elapsed() < Duration::from_secs(40), "--worker-timeout did not fire");
    assert!(err.contains("cannot set up the run"), "the coordinator says why the worker left: {err}");
    assert!(
        err.lines().any(|l| l.contains("could not set up the run") && l.contains("tasks")),
        "the worker-timeout message names the set-up failure: {err}"
    );
    // Backing off, not reconnecting five times a second.
    let attempts = err.matches("the worker cannot set up the run").count();
    let secs = started.elapsed().as_secs_f64();
    assert!((attempts as f64) < 2.0 + secs, "{attempts} set-up failures in {secs:.1} s: {err}");
    assert!(stderr(&w).contains("cannot set up the run"), "the worker says why: {}", stderr(&w));
}
