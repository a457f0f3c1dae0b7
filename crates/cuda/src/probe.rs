//! Finds the CUDA libraries before cudarc touches them.
//!
//! cudarc (with `dynamic-loading`) `dlopen()`s `libnvrtc` and `libcuda` on first use and
//! panics when neither name it tries loads. The probes here try the same names first (and
//! then the directories named by `METASCHED_NVRTC_LIB_DIR` / `METASCHED_CUDA_LIB_DIR`), keep
//! the library loaded for the life of the process, and report a missing one as a typed
//! [`CudaError::LibraryMissing`]. Once a probe has succeeded, cudarc's own `dlopen()` of the
//! library's soname finds the already-loaded object, so it cannot panic for that reason.
//!
//! This module, [`crate::ffi`] and `crate::nccl_ffi` are the only ones allowed `unsafe`: loading a shared
//! library runs its initialisers, which Rust cannot check. NVRTC and the driver are
//! well-behaved libraries whose initialisers have no preconditions on the caller.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{CudaError, Result};

/// How to install NVRTC without the full toolkit.
pub const NVRTC_HINT: &str = "install it with `pip install nvidia-cuda-nvrtc-cu12==12.4.127` and put \
     .../site-packages/nvidia/cuda_nvrtc/lib on LD_LIBRARY_PATH (or set METASCHED_NVRTC_LIB_DIR to it), \
     or install the CUDA toolkit";

/// What it takes to have a driver.
pub const DRIVER_HINT: &str = "this machine has no NVIDIA driver (libcuda.so.1 ships with it, not with the \
     toolkit); install the driver, or set METASCHED_CUDA_LIB_DIR to the directory holding libcuda.so.1";

/// A library the probe loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedLibrary {
    /// The name or path `dlopen()` succeeded with.
    pub loaded_as: String,
    /// The file actually mapped (from `/proc/self/maps`), when it can be told.
    pub path: Option<PathBuf>,
}

struct Probe {
    result: Result<LoadedLibrary>,
    _lib: Option<libloading::Library>,
}

fn probe(stem: &str, soname: &str, env_dir: &str, hint: &str) -> Probe {
    probe_with(stem, soname, env_dir, hint, &[])
}

/// [`probe`] with `extra_dirs` searched (by full path) after every name has failed.
fn probe_with(stem: &str, soname: &str, env_dir: &str, hint: &str, extra_dirs: &[PathBuf]) -> Probe {
    let mut tried = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    if let Some(dir) = std::env::var_os(env_dir) {
        let dir = PathBuf::from(dir);
        for name in names_for(stem, soname) {
            let p = dir.join(&name);
            if p.exists() {
                candidates.push(p.display().to_string());
            }
        }
        if candidates.is_empty() {
            tried.push(format!("{env_dir}={} (no {soname} there)", dir.display()));
        }
    }
    // The soname, then cudarc's names, deduplicated; on Linux only the `lib<stem>.so*` ones can
    // exist.
    for name in names_for(stem, soname) {
        let plausible = !cfg!(target_os = "linux") || name.starts_with(&format!("lib{stem}.so"));
        if plausible && !candidates.contains(&name) {
            candidates.push(name);
        }
    }
    for dir in extra_dirs {
        let p = dir.join(soname);
        if p.exists() {
            candidates.push(p.display().to_string());
        }
    }
    let mut last_error = String::from("no candidate");
    let mut best_error: Option<String> = None;
    for name in candidates {
        // SAFETY: loading NVRTC or the CUDA driver runs their ELF initialisers, which have no
        // preconditions; the handle is kept in a process-wide static and never unloaded, so
        // no symbol obtained from it can outlive it.
        match unsafe { libloading::Library::new(&name) } {
            Ok(lib) => {
                let path = mapped_path(stem);
                return Probe { result: Ok(LoadedLibrary { loaded_as: name, path }), _lib: Some(lib) };
            }
            Err(e) => {
                let msg = match std::error::Error::source(&e) {
                    Some(cause) => cause.to_string(),
                    None => e.to_string(),
                };
                // A library that exists but fails to load (missing dependency, wrong
                // architecture) says more than "no such file" for the other names.
                if !msg.contains("No such file") && best_error.is_none() {
                    best_error = Some(msg.clone());
                }
                last_error = msg;
                tried.push(name);
            }
        }
    }
    Probe {
        result: Err(CudaError::LibraryMissing {
            library: soname.to_string(),
            tried: tried.join(", "),
            reason: best_error.unwrap_or(last_error),
            hint: hint.to_string(),
        }),
        _lib: None,
    }
}

/// The soname first (`libnccl.so.2`, which cudarc's list lacks), then cudarc's list.
fn names_for(stem: &str, soname: &str) -> Vec<String> {
    let mut v = vec![soname.to_string()];
    for n in lib_name_candidates(stem) {
        if !v.contains(&n) {
            v.push(n);
        }
    }
    v
}

/// The names `dlopen()` is tried with: cudarc's own list, so that its later `dlopen()` finds
/// the object the probe loaded.
#[cfg(feature = "cuda")]
fn lib_name_candidates(stem: &str) -> Vec<String> {
    cudarc::get_lib_name_candidates(stem)
}

/// The names `dlopen()` is tried with in a build without cudarc: the plain soname.
#[cfg(not(feature = "cuda"))]
fn lib_name_candidates(stem: &str) -> Vec<String> {
    vec![format!("lib{stem}.so")]
}

/// The file mapped into this process whose name starts with `lib<stem>.`.
fn mapped_path(stem: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let prefix = format!("lib{stem}.");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .find(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(&prefix)))
        .map(Path::to_path_buf)
}

/// Loads NVRTC (once per process) and says where it is, or why it is not there. Call this
/// before any `cudarc::nvrtc` function; [`crate::compile`] does.
pub fn nvrtc_available() -> Result<LoadedLibrary> {
    static NVRTC: OnceLock<Probe> = OnceLock::new();
    NVRTC
        .get_or_init(|| probe("nvrtc", "libnvrtc.so.12", "METASCHED_NVRTC_LIB_DIR", NVRTC_HINT))
        .result
        .clone()
}

/// Loads the CUDA driver (once per process) and says where it is, or why it is not there.
pub fn driver_available() -> Result<LoadedLibrary> {
    static DRIVER: OnceLock<Probe> = OnceLock::new();
    DRIVER.get_or_init(|| probe("cuda", "libcuda.so.1", "METASCHED_CUDA_LIB_DIR", DRIVER_HINT)).result.clone()
}

/// Where the `nvidia-nccl-cu12` / `nvidia-nccl-cu13` wheels put `libnccl.so.2`
/// (`<site-packages>/nvidia/nccl/lib`), for the Python environments that are cheap to find:
/// `$VIRTUAL_ENV`, `$CONDA_PREFIX`, `~/.local` and the system's `/usr/local/lib` and `/usr/lib`.
pub fn nccl_wheel_dirs() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = ["VIRTUAL_ENV", "CONDA_PREFIX"]
        .iter()
        .filter_map(|v| std::env::var_os(v).filter(|p| !p.is_empty()))
        .map(|p| PathBuf::from(p).join("lib"))
        .collect();
    if let Some(home) = std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        prefixes.push(PathBuf::from(home).join(".local/lib"));
    }
    prefixes.push(PathBuf::from("/usr/local/lib"));
    prefixes.push(PathBuf::from("/usr/lib"));
    let mut dirs = Vec::new();
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(&prefix) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("python3")))
            .collect();
        pythons.sort();
        for py in pythons {
            for packages in ["site-packages", "dist-packages"] {
                let d = py.join(packages).join("nvidia/nccl/lib");
                if d.is_dir() {
                    dirs.push(d);
                }
            }
        }
    }
    dirs
}

fn nccl_probe() -> &'static Probe {
    static NCCL: OnceLock<Probe> = OnceLock::new();
    NCCL.get_or_init(|| {
        probe_with(
            "nccl",
            "libnccl.so.2",
            "METASCHED_NCCL_LIB_DIR",
            "install NCCL (libnccl2, or pip install nvidia-nccl-cu12), or set METASCHED_NCCL_LIB_DIR to the \
             directory holding libnccl.so.2",
            &nccl_wheel_dirs(),
        )
    })
}

/// Loads NCCL (once per process) and says where it is, or why it is not there. Tried in
/// order: `$METASCHED_NCCL_LIB_DIR/libnccl.so.2` (and cudarc's names there), `libnccl.so.2`
/// and cudarc's names through the loader's search path, then the NCCL wheels' directories
/// ([`nccl_wheel_dirs`]). [`crate::NcclCollective`] calls NCCL through this very handle
/// (`crate::nccl_ffi`), never through cudarc's own `dlopen()`, which knows no `libnccl.so.2`.
pub fn nccl_available() -> Result<LoadedLibrary> {
    nccl_probe().result.clone()
}

/// The handle [`nccl_available`] loaded, for `crate::nccl_ffi` to resolve symbols from.
pub(crate) fn nccl_library() -> Result<&'static libloading::Library> {
    let p = nccl_probe();
    match (&p.result, &p._lib) {
        (Ok(_), Some(lib)) => Ok(lib),
        (Err(e), _) => Err(e.clone()),
        (Ok(_), None) => Err(CudaError::Driver("NCCL probe kept no handle".into())),
    }
}

/// The number of CUDA devices: probes the driver library, then (only if it loaded) calls
/// `cuInit` and `cuDeviceGetCount` through cudarc. Without the `cuda` feature:
/// [`CudaError::FeatureDisabled`].
pub fn cuda_devices() -> Result<usize> {
    if cfg!(not(feature = "cuda")) {
        return Err(CudaError::FeatureDisabled("cuda"));
    }
    device_count()
}

#[cfg(feature = "cuda")]
fn device_count() -> Result<usize> {
    driver_available()?;
    cudarc::driver::result::init().map_err(|e| CudaError::Driver(format!("cuInit failed: {e:?}")))?;
    let n = cudarc::driver::result::device::get_count()
        .map_err(|e| CudaError::Driver(format!("cuDeviceGetCount failed: {e:?}")))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(not(feature = "cuda"))]
fn device_count() -> Result<usize> {
    Err(CudaError::FeatureDisabled("cuda"))
}

/// `ptxas` for [`crate::compile::ptxas_resources`]: `explicit` if given, else `$PTXAS`, else
/// `ptxas` on `PATH`, else next to the NVRTC that was loaded (the `nvidia-cuda-nvcc-cu12`
/// wheel installs it in `site-packages/nvidia/cuda_nvcc/bin`, beside `cuda_nvrtc/`), else
/// `$CUDA_HOME/bin` and `/usr/local/cuda/bin`.
pub fn find_ptxas(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("PTXAS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Ok(LoadedLibrary { path: Some(lib), .. }) = nvrtc_available() {
        // .../nvidia/cuda_nvrtc/lib/libnvrtc.so.12 -> .../nvidia/cuda_nvcc/bin
        if let Some(nvidia) = lib.parent().and_then(Path::parent).and_then(Path::parent) {
            dirs.push(nvidia.join("cuda_nvcc/bin"));
        }
        // <toolkit>/lib64/libnvrtc.so.12 -> <toolkit>/bin
        if let Some(root) = lib.parent().and_then(Path::parent) {
            dirs.push(root.join("bin"));
        }
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/bin"));
    dirs.into_iter().map(|d| d.join("ptxas")).find(|p| p.is_file())
}
