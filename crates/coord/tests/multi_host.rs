//! Issue 10's multi-host run: the coordinator and two `meta-worker`s each in their own network
//! namespace, joined to the coordinator's by a veth pair, with `tc netem` delay, loss and a rate
//! limit on worker 1's link, and worker 2's link taken down mid-run (longer than the heartbeat
//! timeout) and brought back. The coordinator drops worker 2, worker 1 carries the run alone,
//! worker 2 reconnects by itself, and the run ends with the checkpoint of the fault-free
//! in-process run, bit for bit. No process may panic.
//!
//! The hosts are the test's own: namespaces `ms-{c,w1,w2}-<pid>-<nanos>` whose only interfaces
//! are the veth pairs between them (addresses in 10.213.0.0/16 that exist only inside them), so
//! no packet leaves this machine. They are created by the test and deleted after it, on failure
//! too (a drop guard; the processes in them are killed first).
//!
//! It needs root (or `CAP_NET_ADMIN` and `CAP_SYS_ADMIN`) and `ip` from iproute2. Where a
//! namespace or a veth pair cannot be created the test prints `multi_host: skipped: <reason>`
//! and returns: that is its one permitted skip; any failure after that point fails the test.
//! Where `sch_netem` is missing, worker 1's link is rate-limited with `tbf` instead and briefly
//! flapped (down for a fraction of a second, well under the heartbeat timeout, so TCP
//! retransmits), and the test says so.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_no_panic, coordinator_addr, meta_coord, s, small_trajectory, worker_bin};

const TOKEN: &str = "multi-host token";
/// Meta-steps of the run.
const STEPS: u64 = 150;
/// Worker 2's link goes down once the run has logged this step.
const FAULT_AT: u64 = 15;
/// How long worker 2's link stays down (the coordinator's `--heartbeat-timeout` is 1.5 s).
const OUTAGE: Duration = Duration::from_millis(2500);
/// Worker 1's link rate, each way. It paces the run (a step moves about 6 KB from a worker and
/// 3 KB to it, so about 0.1 s a step) so that worker 2 has rejoined long before the last step:
/// its stale connection fails at TCP's next retransmission after the link is back, about 1 s.
const RATE: &str = "512kbit";
/// The coordinator's address: on its loopback, reached by each worker over its own veth link.
const COORD_IP: &str = "10.213.0.1";
/// Worker `i`'s address on its link to the coordinator (10.213.i.1 is the coordinator's end).
fn worker_ip(i: usize) -> String {
    format!("10.213.{i}.2")
}

/// Runs `ip ARGS`; the error is `ip`'s message.
fn ip(args: &[&str]) -> Result<(), String> {
    cmd("ip", args)
}

fn cmd(prog: &str, args: &[&str]) -> Result<(), String> {
    let o = Command::new(prog).args(args).output().map_err(|e| format!("cannot run {prog}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("`{prog} {}`: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// The test's network namespaces; dropping it deletes them (and with them their veth links).
struct Hosts {
    names: Vec<String>,
}

impl Hosts {
    fn add(&mut self, name: String) -> Result<(), String> {
        ip(&["netns", "add", &name])?;
        self.names.push(name);
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            if let Err(e) = ip(&["netns", "delete", n]) {
                eprintln!("multi_host: cleanup: {e}");
            }
        }
    }
}

/// Processes running in the namespaces; dropping it kills the ones still running (before the
/// namespaces go: declare it after [`Hosts`]).
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Logs of the processes, printed if the test fails (declare it after [`Procs`] and the
/// temporary directory holding them).
struct LogsOnFailure(Vec<PathBuf>);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.0 {
                let err = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(40).collect();
                eprintln!("--- {} (last {} lines of stderr)", log.display(), tail.len());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// The three hosts: names and whether netem shapes worker 1's link.
struct Net {
    coord: String,
    workers: [String; 2],
    netem: bool,
}

/// Creates the namespaces and links. `Err` means the machine cannot do it (the test skips);
/// only the first namespace and veth pair count as that probe, a failure after them panics.
fn set_up(hosts: &mut Hosts) -> Result<Net, String> {
    // Unique per run: the pid and the clock's nanoseconds.
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let run = format!("{}-{nanos:x}", std::process::id());
    let coord = format!("ms-c-{run}");
    let workers = [format!("ms-w1-{run}"), format!("ms-w2-{run}")];
    // The probe: a namespace, then a veth pair into a second one.
    hosts.add(coord.clone())?;
    hosts.add(workers[0].clone())?;
    ip(&["-n", &coord, "link", "add", "vc1", "type", "veth", "peer", "name", "vw1", "netns", &workers[0]])?;
    let must = |r: Result<(), String>| r.unwrap_or_else(|e| panic!("network namespaces work but: {e}"));
    must(hosts.add(workers[1].clone()));
    must(ip(&[
        "-n",
        &coord,
        "link",
        "add",
        "vc2",
        "type",
        "veth",
        "peer",
        "name",
        "vw2",
        "netns",
        &workers[1],
    ]));
    for n in [&coord, &workers[0], &workers[1]] {
        must(ip(&["-n", n, "link", "set", "lo", "up"]));
    }
    must(ip(&["-n", &coord, "addr", "add", &format!("{COORD_IP}/32"), "dev", "lo"]));
    for (i, w) in workers.iter().enumerate() {
        let i = i + 1;
        let (vc, vw) = (format!("vc{i}"), format!("vw{i}"));
        must(ip(&["-n", &coord, "addr", "add", &format!("10.213.{i}.1/24"), "dev", &vc]));
        must(ip(&["-n", &coord, "link", "set", &vc, "up"]));
        must(ip(&["-n", w, "addr", "add", &format!("{}/24", worker_ip(i)), "dev", &vw]));
        must(ip(&["-n", w, "link", "set", &vw, "up"]));
        must(ip(&["-n", w, "route", "add", "10.213.0.0/24", "via", &format!("10.213.{i}.1")]));
    }
    // Worker 1's link, both directions: netem delay and loss, else a tbf rate limit.
    let mut netem = true;
    for (n, dev) in [(&coord, "vc1"), (&workers[0], "vw1")] {
        let shaped = cmd(
            "tc",
            &[
                "-n", n, "qdisc", "add", "dev", dev, "root", "netem", "delay", "20ms", "5ms", "loss", "2%",
                "rate", RATE,
            ],
        );
        if let Err(e) = shaped {
            if netem {
                println!(
                    "multi_host: netem unavailable ({e}): running without netem delay and loss; worker 1's link is rate-limited by tbf and flapped instead"
                );
            }
            netem = false;
            if let Err(e) = cmd(
                "tc",
                &[
                    "-n", n, "qdisc", "add", "dev", dev, "root", "tbf", "rate", RATE, "burst", "4kb",
                    "latency", "400ms",
                ],
            ) {
                println!("multi_host: tbf unavailable too ({e}): worker 1's link is only flapped");
            }
        }
    }
    Ok(Net { coord, workers, netem })
}

/// `prog args` in namespace `ns`, standard output and error into `log.out` and `log.err`.
fn spawn_in(ns: &str, prog: &Path, args: &[String], log: &Path) -> Child {
    let out = File::create(log.with_extension("out")).expect("log file");
    let err = File::create(log.with_extension("err")).expect("log file");
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(prog)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn ip netns exec")
}

/// Text without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Worker ids the coordinator gave to connections from `ip`, in join order.
fn joined_from(coord_log: &str, ip: &str) -> Vec<u64> {
    let peer = format!("peer={ip}:");
    plain(coord_log)
        .lines()
        .filter(|l| l.contains("worker joined") && l.contains(&peer))
        .filter_map(|l| {
            let rest = &l[l.find(" worker=")? + " worker=".len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// The logged steps of a run: (step, worker ids of its parts).
fn steps(dir: &Path) -> Vec<(u64, Vec<u64>)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let step = v["step"].as_u64()?;
            let parts = v["parts"].as_array()?.iter().filter_map(|p| p["worker"].as_u64()).collect();
            Some((step, parts))
        })
        .collect()
}

fn wait_for(what: &str, coord: &mut Child, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        if let Ok(Some(status)) = coord.try_wait() {
            panic!("the coordinator ended ({status}) before {what}");
        }
        assert!(Instant::now() < deadline, "{what} did not happen within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit (killing it past `limit`) and returns its status and logs.
fn collect(child: &mut Child, log: &Path, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, std::fs::read_to_string(log.with_extension("err")).unwrap_or_default())
}

/// The in-process run of the same trajectory.
fn reference(dir: &Path) -> Vec<u8> {
    let o = meta_coord()
        .arg("train")
        .args(small_trajectory(STEPS))
        .args(["--out", s(dir)])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(dir.join("checkpoint.safetensors")).expect("reference checkpoint")
}

#[test]
fn coordinator_and_workers_on_separate_hosts_with_a_lossy_and_a_broken_link() {
    let started = Instant::now();
    let mut hosts = Hosts { names: Vec::new() };
    let net = match set_up(&mut hosts) {
        Ok(net) => net,
        Err(reason) => {
            println!("multi_host: skipped: cannot create network namespaces and veth links here ({reason})");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut procs = Procs::default();
    let want = reference(&tmp.path().join("reference"));

    let dir = tmp.path().join("run");
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let logs: PathBuf = tmp.path().join("logs");
    std::fs::create_dir(&logs).expect("logs dir");
    let coord_log = logs.join("coord");
    let mut args: Vec<String> = vec!["train".into()];
    args.extend(small_trajectory(STEPS));
    args.extend(
        [
            "--out",
            s(&dir),
            "--token-file",
            s(&token_file),
            "--listen",
            &format!("{COORD_IP}:0"),
            "--expect-workers",
            "2",
            "--heartbeat-timeout",
            "1.5",
            "--worker-timeout",
            "60",
        ]
        .map(String::from),
    );
    let coord_bin = PathBuf::from(env!("CARGO_BIN_EXE_meta-coord"));
    procs.0.push(spawn_in(&net.coord, &coord_bin, &args, &coord_log));
    let addr = coordinator_addr(&dir);
    assert!(addr.starts_with(&format!("{COORD_IP}:")), "the coordinator bound {addr}");
    let worker_logs = [logs.join("w1"), logs.join("w2")];
    let _print_logs = LogsOnFailure(vec![coord_log.clone(), worker_logs[0].clone(), worker_logs[1].clone()]);
    for (i, ns) in net.workers.iter().enumerate() {
        let args: Vec<String> = ["--coord", &addr, "--token-file", s(&token_file), "--threads", "1"]
            .into_iter()
            .map(String::from)
            .chain(["--give-up-after".into(), "30".into(), "--name".into(), format!("w{}", i + 1)])
            .collect();
        procs.0.push(spawn_in(ns, &worker_bin(), &args, &worker_logs[i]));
    }
    let (coord, _) = procs.0.split_first_mut().expect("coordinator");

    // Worker 1's link: brief flaps stand in for netem's loss where netem is missing.
    let flap = |on: bool| {
        ip(&["-n", &net.coord, "link", "set", "vc1", if on { "up" } else { "down" }])
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut flaps = 0;
    wait_for(&format!("step {FAULT_AT}"), coord, Duration::from_secs(60), || {
        if !net.netem && flaps < 3 && steps(&dir).last().is_some_and(|s| s.0 >= 3 + 4 * flaps) {
            flap(false);
            std::thread::sleep(Duration::from_millis(150));
            flap(true);
            flaps += 1;
        }
        steps(&dir).last().is_some_and(|s| s.0 >= FAULT_AT)
    });
    let before = steps(&dir);
    assert!(before.iter().any(|(_, p)| p.len() == 2), "both workers took part before the fault: {before:?}");

    // Worker 2's link goes down for longer than the heartbeat timeout, then comes back.
    let down_at = Instant::now();
    ip(&["-n", &net.coord, "link", "set", "vc2", "down"]).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(OUTAGE);
    ip(&["-n", &net.coord, "link", "set", "vc2", "up"]).unwrap_or_else(|e| panic!("{e}"));
    let up_after = down_at.elapsed();
    let fault_step = steps(&dir).last().map_or(0, |s| s.0);

    let (status, coord_err) = collect(coord, &coord_log, Duration::from_secs(90));
    let run_s = down_at.elapsed();
    for (w, log) in procs.0[1..].iter_mut().zip(&worker_logs) {
        let (st, err) = collect(w, log, Duration::from_secs(15));
        assert_no_panic(
            "meta-worker",
            &Output { status: st, stdout: Vec::new(), stderr: err.clone().into_bytes() },
        );
        assert!(st.success(), "a worker ended with {st}: {err}");
    }
    assert_no_panic(
        "meta-coord",
        &Output { status, stdout: Vec::new(), stderr: coord_err.clone().into_bytes() },
    );
    assert!(status.success(), "meta-coord: {status}: {coord_err}");
    let got = std::fs::read(dir.join("checkpoint.safetensors")).expect("checkpoint");
    assert!(got == want, "the multi-host checkpoint differs from the in-process one");

    // Who took part: worker 1 throughout, worker 2 before the outage and again after it.
    let log = steps(&dir);
    assert_eq!(log.last().map(|s| s.0), Some(STEPS), "every step was logged");
    let w1 = joined_from(&coord_err, &worker_ip(1));
    let w2 = joined_from(&coord_err, &worker_ip(2));
    assert!(!w1.is_empty(), "worker 1 joined: {coord_err}");
    assert!(w2.len() >= 2, "worker 2 joined, lost its link and rejoined: {w2:?}: {coord_err}");
    let took_part = |id: u64| log.iter().filter(|(_, p)| p.contains(&id)).count();
    assert!(w1.iter().map(|&id| took_part(id)).sum::<usize>() > 0, "worker 1 took part");
    assert!(took_part(w2[0]) > 0, "worker 2 took part before its link went down");
    let after: usize = w2[1..].iter().map(|&id| took_part(id)).sum();
    assert!(after > 0, "worker 2 took part again after its link came back: {log:?}");
    assert!(
        plain(&coord_err).lines().any(|l| l.contains("worker lost: no heartbeat") && l.contains("name=w2")),
        "the coordinator dropped worker 2 for its silence: {coord_err}"
    );
    println!(
        "multi_host: ran for real ({}): {STEPS} steps, worker 2's link down at step {FAULT_AT} for {:.1} s \
         (run at step {fault_step} when it came back), worker 2 rejoined as {:?}, \
         {after} steps with it afterwards, run finished {:.1} s after the fault, {:.1} s in all",
        if net.netem {
            format!("netem delay 20ms 5ms loss 2% on worker 1's link, which joined as {w1:?}")
        } else {
            format!("no netem: tbf and {flaps} flaps of 0.15 s on worker 1's link, which joined as {w1:?}")
        },
        up_after.as_secs_f64(),
        &w2[1..],
        run_s.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
}
