//! A hostile network between a worker and the coordinator: a frame-aware proxy flips bits in,
//! truncates, rewrites, replays and drops frames after the handshake. Each fault only costs
//! that connection (the receiver refuses the frame, the worker reconnects, its part is
//! re-dispatched): the final checkpoint is bitwise the fault-free run's and no process panics.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{assert_no_panic, coordinator_addr, finish, meta_coord, s, small_trajectory, worker_bin};

const TOKEN: &str = "hostile wire token";

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToCoordinator,
    ToWorker,
}

/// What the proxy does to one frame.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Flips the bit at `seed mod (frame bits)`, length prefix included.
    FlipBit(u64),
    /// Sends the first half of the frame, then closes both sides.
    Truncate,
    /// Replaces the payload with other bytes of the same length.
    Rewrite,
    /// Sends the frame twice.
    Replay,
    /// Does not send the frame.
    Drop,
}

/// The fault for the `frame`-th frame (0-based, counting the handshake's) one way of one
/// connection.
#[derive(Debug, Clone, Copy)]
struct Plan {
    dir: Dir,
    frame: usize,
    fault: Fault,
}

/// The frames of every handshake in each direction before the sealed ones: to the
/// coordinator Hello and Auth; to the worker the Challenge (the Welcome is sealed).
fn first_sealed(dir: Dir) -> usize {
    match dir {
        Dir::ToCoordinator => 2,
        Dir::ToWorker => 1,
    }
}

fn read_frame(r: &mut TcpStream) -> Option<Vec<u8>> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header).ok()?;
    let len = u32::from_le_bytes(header) as usize;
    let mut frame = header.to_vec();
    frame.resize(4 + len, 0);
    r.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

/// Forwards frames from `src` to `dst`, applying `plan` when its frame comes by; records
/// each fault done in `log`.
fn pump(mut src: TcpStream, mut dst: TcpStream, dir: Dir, plan: Option<Plan>, log: Arc<Mutex<Vec<String>>>) {
    let mut index = 0usize;
    while let Some(mut frame) = read_frame(&mut src) {
        let fault = plan.filter(|p| p.dir == dir && p.frame == index).map(|p| p.fault);
        index += 1;
        let ok = match fault {
            None => dst.write_all(&frame).is_ok(),
            Some(f) => {
                log.lock().expect("log").push(format!("{dir:?} frame {}: {f:?}", index - 1));
                match f {
                    Fault::FlipBit(seed) => {
                        let bit = (seed % (frame.len() as u64 * 8)) as usize;
                        frame[bit / 8] ^= 1 << (bit % 8);
                        dst.write_all(&frame).is_ok()
                    }
                    Fault::Truncate => {
                        let _ = dst.write_all(&frame[..frame.len() / 2]);
                        false
                    }
                    Fault::Rewrite => {
                        for (i, b) in frame[4..].iter_mut().enumerate() {
                            *b = (i as u8).wrapping_mul(31).wrapping_add(7);
                        }
                        dst.write_all(&frame).is_ok()
                    }
                    Fault::Replay => dst.write_all(&frame).is_ok() && dst.write_all(&frame).is_ok(),
                    Fault::Drop => true,
                }
            }
        };
        if !ok {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// A proxy on a loopback port in front of `upstream`; connection `i` suffers `plans[i]`.
fn start_proxy(upstream: String, plans: Vec<Plan>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = Arc::clone(&log);
    std::thread::spawn(move || {
        for (i, conn) in listener.incoming().enumerate() {
            let Ok(worker) = conn else { return };
            let Ok(coord) = TcpStream::connect(&upstream) else { return };
            let plan = plans.get(i).copied();
            let (w2, c2) = (worker.try_clone().expect("clone"), coord.try_clone().expect("clone"));
            let (l1, l2) = (Arc::clone(&log2), Arc::clone(&log2));
            std::thread::spawn(move || pump(worker, coord, Dir::ToCoordinator, plan, l1));
            std::thread::spawn(move || pump(c2, w2, Dir::ToWorker, plan, l2));
        }
    });
    (addr, log)
}

fn reference(dir: &std::path::Path) -> Vec<u8> {
    let out =
        meta_coord().arg("train").args(small_trajectory(60)).args(["--out", s(dir)]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(dir.join("checkpoint.safetensors")).expect("checkpoint")
}

#[test]
fn tampered_frames_never_change_the_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let want = reference(&tmp.path().join("reference"));

    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let dir = tmp.path().join("run");
    let coord: Child = meta_coord()
        .arg("train")
        .args(small_trajectory(60))
        .args(["--out", s(&dir), "--token-file", s(&token_file), "--listen", "127.0.0.1:0"])
        .args(["--expect-workers", "1", "--heartbeat-timeout", "1.5", "--worker-timeout", "60"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meta-coord");
    let upstream = coordinator_addr(&dir);
    let to_c = first_sealed(Dir::ToCoordinator);
    let to_w = first_sealed(Dir::ToWorker);
    let plan = |dir, frame, fault| Plan { dir, frame, fault };
    let plans = vec![
        plan(Dir::ToCoordinator, to_c + 3, Fault::FlipBit(0x9e37_79b9)),
        plan(Dir::ToWorker, to_w + 2, Fault::FlipBit(0x1234_5677)),
        plan(Dir::ToWorker, to_w, Fault::FlipBit(77)),
        plan(Dir::ToCoordinator, to_c, Fault::FlipBit(5)),
        plan(Dir::ToCoordinator, to_c + 2, Fault::FlipBit(3)),
        plan(Dir::ToCoordinator, to_c + 2, Fault::Truncate),
        plan(Dir::ToWorker, to_w + 3, Fault::Replay),
        plan(Dir::ToCoordinator, to_c + 1, Fault::Drop),
        plan(Dir::ToWorker, to_w + 1, Fault::Rewrite),
        plan(Dir::ToCoordinator, to_c + 4, Fault::Rewrite),
        plan(Dir::ToWorker, to_w + 4, Fault::Drop),
        plan(Dir::ToCoordinator, to_c + 5, Fault::Replay),
    ];
    let n_plans = plans.len();
    let (proxy, log) = start_proxy(upstream, plans);
    let worker = Command::new(worker_bin())
        .args(["--coord", &proxy, "--token-file", s(&token_file), "--threads", "1", "--give-up-after", "60"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meta-worker");
    let out = finish(coord, Duration::from_secs(240));
    let wout = finish(worker, Duration::from_secs(30));
    assert_no_panic("meta-coord", &out);
    assert_no_panic("meta-worker", &wout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let done = log.lock().expect("log").clone();
    assert_eq!(done.len(), n_plans, "every planned fault happened: {done:?}");
    let got = std::fs::read(dir.join("checkpoint.safetensors")).expect("checkpoint");
    assert!(got == want, "a tampered frame changed the checkpoint; faults: {done:?}");
    let log_text = String::from_utf8_lossy(&out.stderr);
    assert!(
        log_text.contains("integrity check"),
        "the coordinator says why it dropped the worker: {log_text}"
    );
}
