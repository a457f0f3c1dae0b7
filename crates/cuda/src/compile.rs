//! NVRTC compilation of the kernel sources to PTX, and `ptxas` resource reports.
//!
//! Sources are compiled as one translation unit each: `#include "…common.cuh"` lines are
//! replaced by the header's text (from the source's directory when compiling files from
//! disk, else the copy built into this crate), framed by `#line` directives so that NVRTC's
//! messages name the right file and line. NVRTC needs no toolkit headers for these kernels:
//! they use only the built-in CUDA vocabulary and math functions.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{CudaError, Result};
use crate::kernels::{COMMON_SOURCE, KernelId, kernel_source};
#[cfg(feature = "cuda")]
use crate::probe;

/// The kernel source files of [`KernelId::ALL`], each once, in registry order.
pub fn kernel_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = Vec::new();
    for id in KernelId::ALL {
        if !files.contains(&id.source_file()) {
            files.push(id.source_file());
        }
    }
    files
}

/// The compute capability of `sm_80` / `compute_90` / `80`, checked.
pub fn parse_arch(arch: &str) -> Result<u32> {
    let digits = arch.strip_prefix("sm_").or_else(|| arch.strip_prefix("compute_")).unwrap_or(arch);
    match digits.parse::<u32>() {
        Ok(cc) if (50..=120).contains(&cc) => Ok(cc),
        _ => Err(CudaError::Runtime(format!(
            "unknown GPU architecture {arch:?} (expected sm_NN, e.g. sm_80 or sm_90)"
        ))),
    }
}

/// `source` with its `#include "common.cuh"` (or `"../common.cuh"`, …) lines replaced by the
/// header. The header is read from `dir` when given and present there, else the built-in
/// copy is used. Other includes are left for NVRTC (which will reject them).
pub fn expand_includes(name: &str, source: &str, dir: Option<&Path>) -> String {
    let mut out = String::with_capacity(source.len() + COMMON_SOURCE.len() + 128);
    for (i, line) in source.lines().enumerate() {
        let t = line.trim();
        let include = t
            .strip_prefix("#include")
            .map(str::trim)
            .and_then(|r| r.strip_prefix('"'))
            .and_then(|r| r.split('"').next());
        match include {
            Some(inc) if Path::new(inc).file_name().is_some_and(|f| f == "common.cuh") => {
                let header = dir
                    .map(|d| d.join(inc))
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .unwrap_or_else(|| COMMON_SOURCE.to_string());
                out.push_str("#line 1 \"common.cuh\"\n");
                out.push_str(&header);
                if !header.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("#line {} \"{name}\"\n", i + 2));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Compiles one source (already include-expanded or not) to PTX for `arch`, without caching.
/// A rejected source gives [`CudaError::Compile`] with NVRTC's full log; a missing NVRTC gives
/// [`CudaError::LibraryMissing`]; a build without the `cuda` feature (no NVRTC bindings)
/// gives [`CudaError::FeatureDisabled`].
pub fn compile_source(name: &str, source: &str, dir: Option<&Path>, arch: &str) -> Result<String> {
    let cc = parse_arch(arch)?;
    nvrtc_compile(name, &expand_includes(name, source, dir), cc, arch)
}

#[cfg(not(feature = "cuda"))]
fn nvrtc_compile(_name: &str, _text: &str, _cc: u32, _arch: &str) -> Result<String> {
    Err(CudaError::FeatureDisabled("cuda"))
}

#[cfg(feature = "cuda")]
fn nvrtc_compile(name: &str, text: &str, cc: u32, arch: &str) -> Result<String> {
    probe::nvrtc_available()?;
    let opts = cudarc::nvrtc::CompileOptions {
        name: Some(name.to_string()),
        options: vec![
            format!("--gpu-architecture=compute_{cc}"),
            "--std=c++17".to_string(),
            "-default-device".to_string(),
            "--fmad=true".to_string(),
        ],
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(text, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. }) => Err(CudaError::Compile {
            file: name.to_string(),
            arch: arch.to_string(),
            status: format!("{nvrtc:?}"),
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(CudaError::Compile {
            file: name.to_string(),
            arch: arch.to_string(),
            status: format!("{e:?}"),
            log: String::new(),
        }),
    }
}

/// The version of the NVRTC library loaded (`12.4`); a missing NVRTC gives
/// [`CudaError::LibraryMissing`], a build without the `cuda` feature
/// [`CudaError::FeatureDisabled`].
#[cfg(feature = "cuda")]
#[allow(unsafe_code)]
pub fn nvrtc_version() -> Result<String> {
    probe::nvrtc_available()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the probe loaded NVRTC; nvrtcVersion writes two ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    if status != cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(CudaError::Runtime(format!("nvrtcVersion failed: {status:?}")));
    }
    Ok(format!("{major}.{minor}"))
}

/// Without the `cuda` feature there is no NVRTC.
#[cfg(not(feature = "cuda"))]
pub fn nvrtc_version() -> Result<String> {
    Err(CudaError::FeatureDisabled("cuda"))
}

/// The PTX of one of the built-in kernel files (`mlp.cu`, …, see [`kernel_files`]) for
/// `arch`, compiled on first request and cached for the life of the process per (file, arch).
pub fn kernel_ptx(file: &str, arch: &str) -> Result<Arc<str>> {
    type Cache = Mutex<HashMap<(String, u32), Arc<str>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cc = parse_arch(arch)?;
    let id = KernelId::ALL
        .into_iter()
        .find(|k| k.source_file() == file)
        .ok_or_else(|| CudaError::UnknownKernel(format!("no kernel source file {file}")))?;
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (file.to_string(), cc);
    if let Some(ptx) = cache.lock().map_err(|_| CudaError::Runtime("PTX cache poisoned".into()))?.get(&key) {
        return Ok(Arc::clone(ptx));
    }
    // Compiled outside the lock: two threads may both compile the same file once, which is
    // harmless, and nobody waits behind a long compile of another file.
    let ptx: Arc<str> = compile_source(file, kernel_source(id), None, &format!("sm_{cc}"))?.into();
    let mut guard = cache.lock().map_err(|_| CudaError::Runtime("PTX cache poisoned".into()))?;
    Ok(Arc::clone(guard.entry(key).or_insert(ptx)))
}

/// Resources `ptxas -v` reports for one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelResources {
    /// Entry point.
    pub kernel: String,
    /// Registers per thread.
    pub registers: u32,
    /// Stack frame, bytes.
    pub stack_bytes: u32,
    /// Spill stores, bytes.
    pub spill_stores: u32,
    /// Spill loads, bytes.
    pub spill_loads: u32,
    /// Static shared memory, bytes.
    pub shared_bytes: u32,
}

fn number_before(text: &str, unit: &str) -> Option<u32> {
    let at = text.find(unit)?;
    text[..at].split_whitespace().last()?.parse().ok()
}

/// Parses `ptxas -v` output (its stderr) into one entry per kernel, in output order.
pub fn parse_ptxas_verbose(text: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelResources {
                kernel: name,
                registers: 0,
                stack_bytes: 0,
                spill_stores: 0,
                spill_loads: 0,
                shared_bytes: 0,
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            cur.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            cur.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            cur.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("Used ") && line.contains("registers") {
            cur.registers = number_before(line, "registers").unwrap_or(0);
            if let Some(smem) = line.split(',').find(|p| p.contains("bytes smem")) {
                cur.shared_bytes = number_before(smem, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// Runs `ptxas -v -arch=<arch> <ptx> -o <cubin>` and returns what it reports per kernel; a
/// failing `ptxas` gives its output as the error.
pub fn ptxas_resources(ptxas: &Path, ptx: &Path, arch: &str, cubin: &Path) -> Result<Vec<KernelResources>> {
    let cc = parse_arch(arch)?;
    let output = Command::new(ptxas)
        .arg("-v")
        .arg(format!("-arch=sm_{cc}"))
        .arg(ptx)
        .arg("-o")
        .arg(cubin)
        .output()
        .map_err(|e| CudaError::Runtime(format!("cannot run {}: {e}", ptxas.display())))?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(CudaError::Runtime(format!(
            "{} failed on {} ({}):\n{text}",
            ptxas.display(),
            ptx.display(),
            output.status
        )));
    }
    Ok(parse_ptxas_verbose(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_inlined_with_line_directives() {
        let src = "// a\n#include \"../common.cuh\"\nint x;\n";
        let out = expand_includes("f.cu", src, None);
        assert!(out.starts_with("// a\n#line 1 \"common.cuh\"\n"));
        assert!(out.contains("METASCHED_COMMON_CUH"));
        assert!(out.ends_with("#line 3 \"f.cu\"\nint x;\n"));
        assert!(!out.contains("#include \"../common.cuh\""));
    }

    #[test]
    fn archs_are_checked() {
        assert_eq!(parse_arch("sm_80").ok(), Some(80));
        assert_eq!(parse_arch("compute_90").ok(), Some(90));
        assert!(parse_arch("sm_x").is_err());
        assert!(parse_arch("gfx90a").is_err());
    }

    #[test]
    fn every_kernel_file_is_listed_once() {
        assert_eq!(kernel_files(), ["lstm_cell.cu", "sgd_update.cu", "mlp.cu", "loss.cu", "scheduler.cu"]);
    }

    #[test]
    fn ptxas_verbose_output_is_parsed() {
        let text = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'mse_rop_f32' for 'sm_80'\n\
            ptxas info    : Function properties for mse_rop_f32\n    \
            16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
            ptxas info    : Used 32 registers, 1188 bytes smem, 392 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'b' for 'sm_80'\n\
            ptxas info    : Function properties for b\n    \
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 10 registers, 380 bytes cmem[0]\n";
        let r = parse_ptxas_verbose(text);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                kernel: "mse_rop_f32".into(),
                registers: 32,
                stack_bytes: 16,
                spill_stores: 8,
                spill_loads: 4,
                shared_bytes: 1188
            }
        );
        assert_eq!((r[1].registers, r[1].spill_stores, r[1].shared_bytes), (10, 0, 0));
    }

    /// Compiles every kernel when NVRTC is installed; without it, checks that the probe reports
    /// it as missing instead of panicking. `METASCHED_EXPECT_NVRTC=1` (set by
    /// `kernels/check_ptx.sh`, which puts its venv's NVRTC on the library path) makes a missing
    /// NVRTC a failure, `=0` makes a present one a failure, so neither branch is taken silently.
    #[cfg(feature = "cuda")]
    #[test]
    fn kernels_compile_with_nvrtc_when_installed() {
        let found = probe::nvrtc_available();
        let expect = std::env::var("METASCHED_EXPECT_NVRTC").ok();
        match (expect.as_deref(), &found) {
            (Some("1"), Err(e)) => panic!("METASCHED_EXPECT_NVRTC=1 but NVRTC is missing: {e}"),
            (Some("0"), Ok(lib)) => panic!("METASCHED_EXPECT_NVRTC=0 but NVRTC loaded: {lib:?}"),
            _ => {}
        }
        match found {
            Ok(lib) => {
                eprintln!("NVRTC present ({lib:?}): compiling every kernel file");
                for file in kernel_files() {
                    let ptx = kernel_ptx(file, "sm_80").unwrap_or_else(|e| panic!("{e}"));
                    assert!(ptx.contains(".visible .entry"), "{file}");
                    let again = kernel_ptx(file, "sm_80").unwrap_or_else(|e| panic!("{e}"));
                    assert!(Arc::ptr_eq(&ptx, &again), "cached");
                }
            }
            Err(e) => {
                eprintln!("NVRTC missing: checking the typed error ({e})");
                assert!(matches!(e, CudaError::LibraryMissing { .. }), "{e}");
                let err = compile_source("x.cu", "", None, "sm_80");
                assert!(matches!(err, Err(CudaError::LibraryMissing { .. })));
            }
        }
    }

    /// Without the `cuda` feature there are no NVRTC bindings: a clear error, no panic.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn compiling_without_the_cuda_feature_is_a_clear_error() {
        let err = compile_source("x.cu", "", None, "sm_80");
        assert!(matches!(err, Err(CudaError::FeatureDisabled("cuda"))), "{err:?}");
    }
}
