//! NCCL found under its real name and bounded without a GPU: a stub `libnccl.so.2`
//! (`tests/stubs/nccl_stub.c`, built here with `cc`) in a temporary directory named by
//! `METASCHED_NCCL_LIB_DIR` (and, in a second run, on `LD_LIBRARY_PATH`). The probe must load it by that soname and report it; our NCCL
//! binding must call it (version, unique id), print NCCL's error code, and end a join whose
//! peers never come at its deadline or at a cancellation, with `ncclCommAbort`, not hang.
//!
//! The probe is once per process, so the test re-runs its own binary with the environment set.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metasched_cuda::nccl_ffi::Communicator;

#[path = "stubs/mod.rs"]
mod stubs;

const TEST: &str = "stub_libnccl_so_2_is_found_by_its_soname_and_joins_end_at_their_deadline";

#[test]
fn stub_libnccl_so_2_is_found_by_its_soname_and_joins_end_at_their_deadline() {
    if std::env::var_os("STUB_NCCL_LOG").is_none() {
        let stub = stubs::nccl("");
        let dir = stub.0.clone();
        // Once from METASCHED_NCCL_LIB_DIR (by path), once through the loader's search path
        // (by the bare name `libnccl.so.2`).
        for by_name in [false, true] {
            let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
            cmd.args([TEST, "--exact", "--nocapture", "--test-threads=1"])
                .env("STUB_NCCL_DIR", &dir)
                .env("STUB_NCCL_LOG", dir.join(format!("log-{by_name}")))
                .env_remove("METASCHED_NCCL_LIB_DIR");
            if by_name {
                cmd.env("LD_LIBRARY_PATH", &dir);
            } else {
                cmd.env("METASCHED_NCCL_LIB_DIR", &dir);
            }
            let out = cmd.output().expect("re-run the test binary");
            let text =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            println!("{text}");
            assert!(out.status.success(), "the test with the stub NCCL failed:\n{text}");
            assert!(text.contains("1 passed"), "{text}");
        }
        return;
    }
    let dir = PathBuf::from(std::env::var_os("STUB_NCCL_DIR").expect("set by the parent"));
    let by_path = std::env::var_os("METASCHED_NCCL_LIB_DIR").is_some();
    let log = PathBuf::from(std::env::var_os("STUB_NCCL_LOG").expect("set by the parent"));
    let aborts =
        || std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| *l == "abort").count();

    // Found, by the soname cudarc's list lacks, and reported.
    let lib = metasched_cuda::probe::nccl_available().expect("the stub NCCL is found");
    println!("probe: {lib:?}");
    if by_path {
        assert_eq!(PathBuf::from(&lib.loaded_as), dir.join("libnccl.so.2"), "{lib:?}");
    } else {
        assert_eq!(lib.loaded_as, "libnccl.so.2", "{lib:?}");
    }
    assert_eq!(lib.path.as_deref(), Some(dir.join("libnccl.so.2").as_path()), "{lib:?}");
    assert_eq!(metasched_cuda::nccl_ffi::version().expect("ncclGetVersion"), 22304);
    let id = metasched_cuda::nccl_ffi::unique_id().expect("ncclGetUniqueId");
    assert!(id.iter().all(|&b| b == 0x5a));
    if cfg!(feature = "cuda") {
        let bytes = metasched_cuda::nccl::nccl_unique_id_bytes().expect("unique id through the probe");
        assert_eq!(bytes, id.to_vec());
    }

    // NCCL's code is in the message (name, number, ncclGetErrorString).
    let never = AtomicBool::new(false);
    let e = Communicator::init_rank(&id, 3, 2, Duration::from_secs(5), &never).expect_err("rank 3 of 2");
    let msg = e.to_string();
    println!("invalid rank: {msg}");
    assert!(msg.contains("ncclInvalidArgument (4)") && msg.contains("invalid argument (stub)"), "{msg}");
    assert!(Communicator::init_rank(&id[..10], 0, 2, Duration::from_secs(5), &never).is_err());

    // A join whose peers never come ends at its deadline, aborted.
    let before = aborts();
    let t = Instant::now();
    let e = Communicator::init_rank(&id, 0, 2, Duration::from_millis(300), &never).expect_err("never joins");
    let took = t.elapsed();
    let msg = e.to_string();
    println!("deadline: {msg} ({took:?})");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "{took:?}");
    assert!(msg.contains("deadline passed") && msg.contains("ncclCommAbort"), "{msg}");
    assert_eq!(aborts(), before + 1, "the communicator was aborted");

    // ... or at a cancellation (the group was left), long before its deadline.
    let cancel = Arc::new(AtomicBool::new(false));
    let c2 = Arc::clone(&cancel);
    let leaver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c2.store(true, Ordering::SeqCst);
    });
    let t = Instant::now();
    let e = Communicator::init_rank(&id, 1, 2, Duration::from_secs(600), &cancel).expect_err("left");
    leaver.join().expect("thread");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.to_string().contains("cancelled"), "{e}");
    assert_eq!(aborts(), before + 2);

    // A group of one (no peer to wait for; the stub finishes after 20 polls) joins; dropping
    // the member releases the communicator.
    let c = Communicator::init_rank(&id, 0, 1, Duration::from_secs(5), &never).expect("a group of one joins");
    assert!(c.is_abortable() && c.rank() == 0 && c.world_size() == 1);
    drop(c);
    assert_eq!(aborts(), before + 3);

    // An all-reduce whose kernel never finishes (the stream never reports done) ends at its
    // deadline with the communicator aborted; NCCL's synchronous error carries its code.
    let mut c = Communicator::init_rank(&id, 0, 1, Duration::from_secs(5), &never).expect("joins");
    let t = Instant::now();
    let mut spinning = || Ok(false);
    let e = all_reduce(&mut c, 8, &mut spinning, Duration::from_millis(300), &never).expect_err("spins");
    println!("spinning all-reduce: {e} ({:?})", t.elapsed());
    assert!(t.elapsed() >= Duration::from_millis(300) && t.elapsed() < Duration::from_secs(5));
    assert!(e.to_string().contains("deadline passed") && e.to_string().contains("ncclCommAbort"), "{e}");
    assert_eq!(aborts(), before + 4);
    let again = all_reduce(&mut c, 8, &mut spinning, Duration::from_millis(300), &never);
    assert!(again.expect_err("aborted").to_string().contains("was aborted"));
    drop(c);
    assert_eq!(aborts(), before + 4, "aborted once");

    let mut c = Communicator::init_rank(&id, 0, 1, Duration::from_secs(5), &never).expect("joins");
    let e = all_reduce(&mut c, 0, &mut spinning, Duration::from_secs(5), &never).expect_err("count 0");
    assert!(e.to_string().contains("ncclAllReduce failed: ncclInvalidUsage (5): stub error"), "{e}");
    assert_eq!(aborts(), before + 5);
}

/// An all-reduce on no memory: the stub NCCL touches neither the pointer nor the stream.
#[allow(unsafe_code)]
fn all_reduce(
    c: &mut Communicator,
    count: usize,
    done: &mut dyn FnMut() -> Result<bool, String>,
    timeout: Duration,
    cancel: &AtomicBool,
) -> metasched_cuda::Result<()> {
    // SAFETY: only the stub NCCL is loaded in this process, and it dereferences nothing.
    unsafe { c.all_reduce_sum_i64_in_place(0, count, std::ptr::null_mut(), done, timeout, cancel) }
}
