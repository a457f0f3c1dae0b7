//! Builds the stub libraries of this directory (`cc -shared`) into a fresh temporary
//! directory; shared by the tests of `metasched-cuda` and `metasched-worker` (included with
//! `#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system's temporary directory, removed on drop.
pub struct StubDir(pub PathBuf);

impl Drop for StubDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn compile(dir: &Path, source: &str, soname: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(source);
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-o")
        .arg(dir.join(soname))
        .arg(&src)
        .output()
        .expect("a C compiler (cc) builds the stub");
    assert!(out.status.success(), "cc {}: {}", src.display(), String::from_utf8_lossy(&out.stderr));
}

fn fresh(tag: &str) -> StubDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("metasched-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    StubDir(dir)
}

/// A stub CUDA driver, `libcuda.so.1` (and `libcuda.so` linking to it, the first name cudarc
/// tries, so that cudarc opens the stub too where a real driver is installed): put the
/// directory on `LD_LIBRARY_PATH` of a child process. `crate_dir` is the path from the
/// including crate's manifest to `crates/cuda`.
pub fn cuda_driver(crate_dir: &str) -> StubDir {
    let d = fresh("cuda-stub");
    compile(&d.0, &format!("{crate_dir}tests/stubs/cuda_stub.c"), "libcuda.so.1");
    std::os::unix::fs::symlink("libcuda.so.1", d.0.join("libcuda.so")).expect("symlink");
    d
}

/// A stub NCCL, `libnccl.so.2`.
pub fn nccl(crate_dir: &str) -> StubDir {
    let d = fresh("nccl-stub");
    compile(&d.0, &format!("{crate_dir}tests/stubs/nccl_stub.c"), "libnccl.so.2");
    d
}
