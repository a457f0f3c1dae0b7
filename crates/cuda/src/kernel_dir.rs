//! Precompiled kernels: the output of `meta-worker compile-kernels` (PTX per virtual
//! architecture, cubins when `ptxas` was found) loaded from a directory instead of compiling
//! with NVRTC at run time, so a GPU machine needs no NVRTC.
//!
//! The directory holds `<stem>.<arch>.ptx` / `<stem>.<arch>.cubin` and [`MANIFEST`], one line
//! per kernel file:
//!
//! ```text
//! # metasched kernels v1
//! # file  source  source_sha256  arch  nvrtc  ptx_isa  file_sha256
//! mlp.sm_80.ptx  mlp.cu  3f1c…  sm_80  12.4  8.4  9ab2…
//! ```
//!
//! `source_sha256` is the SHA-256 of the source NVRTC compiled (the `.cu` file with
//! `common.cuh` inlined, [`crate::compile::expand_includes`]); a file whose source hash differs
//! from the source built into this binary is *stale* and refused, as is a file whose bytes do
//! not match `file_sha256`. [`configured_dir`] says which directory to use: the one set by
//! `--kernels DIR` ([`set_kernels_dir`]), else `$METASCHED_KERNELS_DIR`, else none (NVRTC).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::compile::{expand_includes, parse_arch};
use crate::error::{CudaError, Result};
use crate::kernels::{KernelId, kernel_source};

/// The manifest's file name inside a kernels directory.
pub const MANIFEST: &str = "manifest.tsv";
/// The environment variable naming a kernels directory.
pub const ENV_DIR: &str = "METASCHED_KERNELS_DIR";
const HEADER: &str = "# metasched kernels v1";

/// One compiled kernel file as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// File name inside the directory (`mlp.sm_80.ptx`).
    pub file: String,
    /// The `.cu` file it was compiled from (`mlp.cu`).
    pub source: String,
    /// SHA-256 (hex) of the include-expanded source.
    pub source_sha256: String,
    /// Target architecture (`sm_80`).
    pub arch: String,
    /// NVRTC version that wrote the PTX (`12.4`).
    pub nvrtc: String,
    /// PTX ISA version of the PTX (`8.4`), `-` when unknown.
    pub ptx_isa: String,
    /// SHA-256 (hex) of the file's bytes.
    pub file_sha256: String,
}

impl ManifestEntry {
    /// True for a cubin (SASS for exactly `arch`), false for PTX.
    pub fn is_cubin(&self) -> bool {
        self.file.ends_with(".cubin")
    }
}

/// A parsed manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Its entries, in file order.
    pub entries: Vec<ManifestEntry>,
}

fn kerr(msg: String) -> CudaError {
    CudaError::Kernels(msg)
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The SHA-256 of the built-in source of kernel file `source` (`mlp.cu`), include-expanded
/// exactly as [`crate::compile::kernel_ptx`] compiles it.
pub fn builtin_source_sha256(source: &str) -> Result<String> {
    let id = KernelId::ALL
        .into_iter()
        .find(|k| k.source_file() == source)
        .ok_or_else(|| CudaError::UnknownKernel(format!("no kernel source file {source}")))?;
    Ok(sha256_hex(expand_includes(source, kernel_source(id), None).as_bytes()))
}

/// The PTX ISA version (`8.4`) of a PTX text, from its `.version` line.
pub fn ptx_isa(ptx: &str) -> Option<String> {
    ptx.lines().find_map(|l| l.trim().strip_prefix(".version").map(|v| v.trim().to_string()))
}

impl Manifest {
    /// Parses a manifest's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some(HEADER) {
            return Err(kerr(format!(
                "{}: not a metasched kernels manifest (first line is not {HEADER:?}); rerun meta-worker compile-kernels",
                path.display()
            )));
        }
        let mut entries = Vec::new();
        for (i, line) in lines.enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 7 {
                return Err(kerr(format!(
                    "{} line {}: expected 7 tab-separated fields (file, source, source_sha256, arch, nvrtc, ptx_isa, file_sha256), found {}",
                    path.display(),
                    i + 2,
                    f.len()
                )));
            }
            entries.push(ManifestEntry {
                file: f[0].into(),
                source: f[1].into(),
                source_sha256: f[2].into(),
                arch: f[3].into(),
                nvrtc: f[4].into(),
                ptx_isa: f[5].into(),
                file_sha256: f[6].into(),
            });
        }
        Ok(Self { entries })
    }

    /// The manifest's text.
    pub fn render(&self) -> String {
        let mut s = format!("{HEADER}\n# file\tsource\tsource_sha256\tarch\tnvrtc\tptx_isa\tfile_sha256\n");
        for e in &self.entries {
            let _ = writeln!(
                s,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                e.file, e.source, e.source_sha256, e.arch, e.nvrtc, e.ptx_isa, e.file_sha256
            );
        }
        s
    }

    /// Adds an entry for `dir/file`, hashing its bytes now.
    pub fn add(
        &mut self,
        dir: &Path,
        file: &str,
        source: &str,
        source_sha256: &str,
        arch: &str,
        nvrtc: &str,
    ) -> Result<()> {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(|e| kerr(format!("cannot read {}: {e}", path.display())))?;
        let isa = if file.ends_with(".ptx") {
            ptx_isa(&String::from_utf8_lossy(&bytes)).unwrap_or_else(|| "-".into())
        } else {
            "-".into()
        };
        self.entries.push(ManifestEntry {
            file: file.into(),
            source: source.into(),
            source_sha256: source_sha256.into(),
            arch: arch.into(),
            nvrtc: nvrtc.into(),
            ptx_isa: isa,
            file_sha256: sha256_hex(&bytes),
        });
        Ok(())
    }
}

/// What the driver is given: PTX text (JIT-compiled by the driver) or a cubin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelImage {
    /// PTX text.
    Ptx(String),
    /// A cubin for exactly one architecture.
    Cubin(Vec<u8>),
}

/// One kernel file read from a directory and checked against the manifest and this binary.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes.
    pub image: KernelImage,
    /// Its manifest entry.
    pub entry: ManifestEntry,
}

/// A directory of precompiled kernels with its manifest.
#[derive(Debug, Clone)]
pub struct KernelDir {
    dir: PathBuf,
    manifest: Manifest,
}

impl KernelDir {
    /// Reads `dir/manifest.tsv`; a directory without one is an error naming it.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            kerr(format!(
                "kernels directory {}: cannot read {MANIFEST} ({e}); make it with meta-worker compile-kernels --out {}",
                dir.display(),
                dir.display()
            ))
        })?;
        Ok(Self { dir: dir.to_path_buf(), manifest: Manifest::parse(&text, &path)? })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The kernels of source file `source` (`mlp.cu`) for a device of architecture `arch`
    /// (`sm_90`): its cubin for exactly that architecture when listed, else the PTX for the
    /// highest listed architecture not above it (PTX runs on newer GPUs, JIT-compiled by the
    /// driver). Refuses a stale file (its source hash is not that of the source built into this
    /// binary) and a file whose bytes do not match the manifest, each in one line.
    pub fn load(&self, source: &str, arch: &str) -> Result<LoadedKernel> {
        let cc = parse_arch(arch)?;
        let of_source: Vec<&ManifestEntry> =
            self.manifest.entries.iter().filter(|e| e.source == source).collect();
        let pick = of_source
            .iter()
            .find(|e| e.is_cubin() && parse_arch(&e.arch).ok() == Some(cc))
            .or_else(|| {
                of_source
                    .iter()
                    .filter(|e| !e.is_cubin())
                    .filter_map(|e| parse_arch(&e.arch).ok().filter(|&a| a <= cc).map(|a| (a, e)))
                    .max_by_key(|(a, _)| *a)
                    .map(|(_, e)| e)
            })
            .copied()
            .ok_or_else(|| {
                let have: Vec<String> = of_source.iter().map(|e| e.file.clone()).collect();
                kerr(format!(
                    "kernels directory {}: no kernel of {source} for {arch} (a cubin for {arch} or PTX for sm_{cc} or lower; listed: {}); rerun compile-kernels --arch {arch}",
                    self.dir.display(),
                    if have.is_empty() { "none".into() } else { have.join(", ") }
                ))
            })?;
        let path = self.dir.join(&pick.file);
        let expected = builtin_source_sha256(source)?;
        if pick.source_sha256 != expected {
            return Err(kerr(format!(
                "{}: stale: compiled from a {source} with SHA-256 {}…, this binary's {source} has {}…; rerun meta-worker compile-kernels --out {}",
                path.display(),
                short(&pick.source_sha256),
                short(&expected),
                self.dir.display()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| kerr(format!("cannot read {}: {e}", path.display())))?;
        let actual = sha256_hex(&bytes);
        if actual != pick.file_sha256 {
            return Err(kerr(format!(
                "{}: its bytes (SHA-256 {}…) are not what {MANIFEST} lists ({}…): modified or truncated since compile-kernels",
                path.display(),
                short(&actual),
                short(&pick.file_sha256)
            )));
        }
        let image = if pick.is_cubin() {
            KernelImage::Cubin(bytes)
        } else {
            KernelImage::Ptx(
                String::from_utf8(bytes)
                    .map_err(|_| kerr(format!("{}: PTX is not UTF-8 text", path.display())))?,
            )
        };
        Ok(LoadedKernel { path, image, entry: pick.clone() })
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// A driver version as `cuDriverGetVersion` reports it (12040) written `12.4`.
pub fn cuda_version_text(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The one-line error for a kernel file the driver refused to load. `driver_error` is the
/// driver's error text; `driver_version` what `cuDriverGetVersion` reported.
pub fn load_error(kernel: &LoadedKernel, driver_error: &str, driver_version: Option<i32>) -> CudaError {
    let driver = driver_version.map_or_else(|| "unknown".to_string(), cuda_version_text);
    let e = &kernel.entry;
    let why = if driver_error.contains("UNSUPPORTED_PTX_VERSION") && !e.is_cubin() {
        format!(
            "PTX ISA {} written by NVRTC {} is newer than this driver supports (driver CUDA {driver}): use an NVRTC no newer than the driver (or a cubin for {}), or update the driver",
            e.ptx_isa, e.nvrtc, e.arch
        )
    } else if driver_error.contains("NO_BINARY_FOR_GPU") || driver_error.contains("INVALID_IMAGE") {
        format!(
            "the {} image does not fit this GPU (built for {}, NVRTC {}, driver CUDA {driver})",
            if e.is_cubin() { "cubin" } else { "PTX" },
            e.arch,
            e.nvrtc
        )
    } else {
        format!("built for {} by NVRTC {}, driver CUDA {driver}", e.arch, e.nvrtc)
    };
    CudaError::Kernels(format!("{}: the driver refused it ({driver_error}): {why}", kernel.path.display()))
}

static DIR_OVERRIDE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets the kernels directory for this process (`--kernels DIR`), overriding
/// `$METASCHED_KERNELS_DIR`; `None` goes back to the environment.
pub fn set_kernels_dir(dir: Option<PathBuf>) {
    if let Ok(mut g) = DIR_OVERRIDE.lock() {
        *g = dir;
    }
}

/// The kernels directory in effect: `--kernels`, else a non-empty `$METASCHED_KERNELS_DIR`,
/// else `None` (compile with NVRTC).
pub fn configured_dir() -> Option<PathBuf> {
    if let Some(d) = DIR_OVERRIDE.lock().ok().and_then(|g| g.clone()) {
        return Some(d);
    }
    std::env::var_os(ENV_DIR).filter(|v| !v.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metasched-kdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("test setup");
        d
    }

    /// A directory holding fake PTX for mlp.cu (sm_80) and a cubin (sm_90), hashed right.
    fn fake_dir(name: &str) -> PathBuf {
        let d = tmpdir(name);
        std::fs::write(d.join("mlp.sm_80.ptx"), "//\n.version 8.4\n.target sm_80\n").expect("test setup");
        std::fs::write(d.join("mlp.sm_90.cubin"), [0x7f, b'E', b'L', b'F', 1, 2, 3]).expect("test setup");
        let src = builtin_source_sha256("mlp.cu").expect("test setup");
        let mut m = Manifest::default();
        m.add(&d, "mlp.sm_80.ptx", "mlp.cu", &src, "sm_80", "12.4").expect("test setup");
        m.add(&d, "mlp.sm_90.cubin", "mlp.cu", &src, "sm_90", "12.4").expect("test setup");
        std::fs::write(d.join(MANIFEST), m.render()).expect("test setup");
        d
    }

    #[test]
    fn manifest_round_trips() {
        let d = fake_dir("roundtrip");
        let kd = KernelDir::open(&d).expect("test setup");
        assert_eq!(kd.manifest().entries.len(), 2);
        assert_eq!(kd.manifest().entries[0].ptx_isa, "8.4");
        let again = Manifest::parse(&kd.manifest().render(), &d.join(MANIFEST)).expect("test setup");
        assert_eq!(&again, kd.manifest());
    }

    #[test]
    fn picks_the_cubin_for_its_arch_and_ptx_otherwise() {
        let d = fake_dir("pick");
        let kd = KernelDir::open(&d).expect("test setup");
        assert!(matches!(kd.load("mlp.cu", "sm_90").expect("test setup").image, KernelImage::Cubin(_)));
        let k = kd.load("mlp.cu", "sm_80").expect("test setup");
        assert!(matches!(k.image, KernelImage::Ptx(ref t) if t.contains(".target sm_80")));
        // A newer GPU gets the highest PTX not above it; the sm_90 cubin is not for it.
        assert_eq!(kd.load("mlp.cu", "sm_100").expect("test setup").entry.file, "mlp.sm_80.ptx");
        let e = kd.load("mlp.cu", "sm_75").expect_err("must fail").to_string();
        assert!(e.contains("no kernel of mlp.cu for sm_75") && e.contains("mlp.sm_80.ptx"), "{e}");
        let e = kd.load("loss.cu", "sm_80").expect_err("must fail").to_string();
        assert!(e.contains("listed: none"), "{e}");
    }

    #[test]
    fn stale_sources_are_refused() {
        let d = fake_dir("stale");
        let text = std::fs::read_to_string(d.join(MANIFEST)).expect("test setup");
        let real = builtin_source_sha256("mlp.cu").expect("test setup");
        std::fs::write(d.join(MANIFEST), text.replace(&real, &"0".repeat(64))).expect("test setup");
        let e = KernelDir::open(&d)
            .expect("test setup")
            .load("mlp.cu", "sm_80")
            .expect_err("must fail")
            .to_string();
        assert!(
            e.contains("mlp.sm_80.ptx: stale") && e.contains("000000000000…") && e.contains(&real[..12]),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn modified_files_are_refused() {
        let d = fake_dir("modified");
        std::fs::write(d.join("mlp.sm_80.ptx"), "//\n.version 8.4\n.target sm_80\n// edited\n")
            .expect("test setup");
        let e = KernelDir::open(&d)
            .expect("test setup")
            .load("mlp.cu", "sm_80")
            .expect_err("must fail")
            .to_string();
        assert!(e.contains("mlp.sm_80.ptx") && e.contains("modified or truncated"), "{e}");
    }

    #[test]
    fn missing_or_bad_manifests_are_clear() {
        let d = tmpdir("nomanifest");
        let e = KernelDir::open(&d).expect_err("must fail").to_string();
        assert!(e.contains("cannot read manifest.tsv") && e.contains("compile-kernels"), "{e}");
        std::fs::write(d.join(MANIFEST), "hello\n").expect("test setup");
        assert!(
            KernelDir::open(&d)
                .expect_err("must fail")
                .to_string()
                .contains("not a metasched kernels manifest")
        );
        std::fs::write(d.join(MANIFEST), format!("{HEADER}\na\tb\n")).expect("test setup");
        let e = KernelDir::open(&d).expect_err("must fail").to_string();
        assert!(e.contains("line 2") && e.contains("found 2"), "{e}");
    }

    #[test]
    fn driver_refusals_name_file_and_versions() {
        let d = fake_dir("refusal");
        let k = KernelDir::open(&d).expect("test setup").load("mlp.cu", "sm_80").expect("test setup");
        let e = load_error(&k, "DriverError(CUDA_ERROR_UNSUPPORTED_PTX_VERSION, \"...\")", Some(12020))
            .to_string();
        assert!(e.contains("mlp.sm_80.ptx"), "{e}");
        assert!(e.contains("PTX ISA 8.4 written by NVRTC 12.4") && e.contains("driver CUDA 12.2"), "{e}");
        assert!(!e.contains('\n'));
        let e = load_error(&k, "CUDA_ERROR_INVALID_IMAGE", None).to_string();
        assert!(e.contains("does not fit this GPU") && e.contains("driver CUDA unknown"), "{e}");
    }

    #[test]
    fn the_process_setting_beats_the_environment() {
        set_kernels_dir(Some(PathBuf::from("/x/kernels")));
        assert_eq!(configured_dir(), Some(PathBuf::from("/x/kernels")));
        set_kernels_dir(None);
        assert_eq!(configured_dir(), std::env::var_os(ENV_DIR).filter(|v| !v.is_empty()).map(PathBuf::from));
    }

    /// The real output of `meta-worker compile-kernels --arch sm_80,sm_90` (with ptxas), when
    /// `METASCHED_KERNELS_CHECK_DIR` names it (`kernels/check_ptx.sh` sets it): every kernel
    /// file loads, fresh, as a cubin for sm_80 and sm_90 and as sm_90 PTX for a newer GPU.
    #[test]
    fn compile_kernels_output_loads_when_given() {
        let Some(dir) = std::env::var_os("METASCHED_KERNELS_CHECK_DIR") else {
            eprintln!("METASCHED_KERNELS_CHECK_DIR unset: skipped (kernels/check_ptx.sh runs it)");
            return;
        };
        let kd = KernelDir::open(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
        for file in crate::compile::kernel_files() {
            for arch in ["sm_80", "sm_90"] {
                let k = kd.load(file, arch).unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    matches!(k.image, KernelImage::Cubin(ref b) if b.starts_with(b"\x7fELF")),
                    "{file} {arch}"
                );
                assert!(k.entry.nvrtc.split('.').all(|p| p.parse::<u32>().is_ok()), "{:?}", k.entry);
            }
            let k = kd.load(file, "sm_100").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(k.entry.arch, "sm_90");
            assert!(matches!(k.image, KernelImage::Ptx(ref t) if t.contains(".visible .entry")), "{file}");
            assert!(k.entry.ptx_isa.contains('.'), "{:?}", k.entry);
        }
    }
}
