//! `meta-worker`: serves meta-gradient and evaluation jobs for a `meta-coord` coordinator.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use metasched_compute::{Compute, ComputeError, Device};
use metasched_proto::Token;
use metasched_worker::client::{ClientError, ClientOptions, run};
use tracing_subscriber::EnvFilter;

#[cfg(feature = "selftest")]
mod selftest;

/// A metasched worker: connects to a coordinator, computes its share of every meta-step.
#[derive(Debug, Parser)]
#[command(
    name = "meta-worker",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Coordinator address, HOST:PORT.
    #[arg(long, required = true)]
    coord: Option<String>,
    /// cpu, emu (the CUDA kernels on the CPU emulator) or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Engine threads (0: the coordinator's suggestion, or every core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// File holding the shared token (else METASCHED_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Give up after this many seconds without a coordinator (default: keep trying).
    #[arg(long)]
    give_up_after: Option<f64>,
    /// Name in the coordinator's logs (default: host name and pid).
    #[arg(long)]
    name: Option<String>,
    /// With --device cuda:N: precompiled kernels (`compile-kernels --out DIR`) instead of
    /// NVRTC at run time (default: $METASCHED_KERNELS_DIR, else NVRTC).
    #[arg(long, value_name = "DIR")]
    kernels: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Compile the CUDA kernels to PTX with NVRTC (and check them with ptxas when found).
    CompileKernels {
        /// Target architectures, comma-separated (sm_80,sm_90).
        #[arg(long, value_delimiter = ',', required = true)]
        arch: Vec<String>,
        /// Output directory for <file>.<arch>.ptx.
        #[arg(long)]
        out: PathBuf,
        /// A directory of .cu files, or one .cu file (default: the kernels built into this binary).
        #[arg(long)]
        kernels_dir: Option<PathBuf>,
        /// ptxas to report registers and spills with (default: $PTXAS, PATH, next to NVRTC).
        #[arg(long)]
        ptxas: Option<PathBuf>,
    },
    /// Check every kernel family and the whole device meta-gradient against the CPU engine.
    Selftest {
        /// emu (the CPU emulator of the kernels), or cuda:N.
        #[arg(long, default_value = "emu")]
        device: Device,
        /// With cuda:N: precompiled kernels (`compile-kernels --out DIR`) instead of NVRTC
        /// (default: $METASCHED_KERNELS_DIR, else NVRTC).
        #[arg(long, value_name = "DIR")]
        kernels: Option<PathBuf>,
    },
}

/// The most engine threads `--threads` accepts: far above any machine's cores, well below
/// what stalls thread creation (the coordinator's bound too).
const MAX_THREADS: usize = 1024;
/// The most seconds `--give-up-after` accepts (about 11.6 days; the default keeps trying).
const MAX_SECONDS: f64 = 1e6;

/// A command-line error as one line (clap adds the usage and a hint on further lines).
fn one_line_clap_error(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    lines.join(" ")
}

/// Parses the command line: negative numbers are values (refused by the checks below,
/// naming the flag); `--help` / `--version` print as usual; any other error is one line and
/// exit code 2.
fn parse_args() -> Args {
    use clap::{CommandFactory, FromArgMatches};
    let result = Args::command()
        .allow_negative_numbers(true)
        .try_get_matches()
        .and_then(|m| Args::from_arg_matches(&m));
    match result {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            eprintln!("{}", one_line_clap_error(&e));
            std::process::exit(2);
        }
    }
}

/// Checks the numeric flags before anything starts: a bad value is one line and exit 2.
fn validate(args: &Args) -> Result<Option<Duration>, (i32, String)> {
    if args.threads > MAX_THREADS {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        return Err((
            2,
            format!(
                "--threads {}: at most {MAX_THREADS} threads (this machine has {cores} cores)",
                args.threads
            ),
        ));
    }
    match args.give_up_after {
        None => Ok(None),
        Some(v) if v.is_finite() && v > 0.0 && v <= MAX_SECONDS => Ok(Some(Duration::from_secs_f64(v))),
        Some(v) => {
            Err((2, format!("--give-up-after {v}: out of range: seconds must lie in (0, {MAX_SECONDS}]")))
        }
    }
}

fn main() {
    let mut args = parse_args();
    if let Some(Cmd::Selftest { device, kernels }) = &args.command {
        if kernels.is_some() {
            metasched_compute::set_kernels_dir(kernels.clone());
        }
        let code = match run_selftest(*device) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err((code, msg)) => {
                eprintln!("error: {msg}");
                code
            }
        };
        std::process::exit(code);
    }
    if let Some(Cmd::CompileKernels { arch, out, kernels_dir, ptxas }) = args.command.take() {
        let code = match compile_kernels::run(&arch, &out, kernels_dir.as_deref(), ptxas.as_deref()) {
            Ok(()) => 0,
            Err((code, msg)) => {
                eprintln!("error: {msg}");
                code
            }
        };
        std::process::exit(code);
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let code = match real_main(args) {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    };
    std::process::exit(code);
}

/// Opens `device`: a device that cannot be opened here (no driver, no such GPU) exits 2.
fn open_device(device: Device, threads: usize) -> Result<Compute, (i32, String)> {
    Compute::open(device, threads).map_err(|e| match e {
        ComputeError::DeviceUnavailable(why) => (2, why),
        e => (1, format!("--device {device}: {e}")),
    })
}

fn real_main(args: Args) -> Result<(), (i32, String)> {
    let give_up_after = validate(&args)?;
    if args.kernels.is_some() {
        metasched_compute::set_kernels_dir(args.kernels.clone());
    }
    let compute = std::sync::Arc::new(open_device(args.device, args.threads)?);
    let coord = args.coord.ok_or_else(|| (2, "--coord HOST:PORT is required".to_string()))?;
    let token = Token::resolve(args.token_file.as_deref())
        .map_err(|e| (2, e.to_string()))?
        .ok_or_else(|| (2, "no shared token: pass --token-file FILE or set METASCHED_TOKEN".to_string()))?;
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    let opts = ClientOptions {
        coord,
        threads: args.threads,
        give_up_after,
        handshake: Duration::from_secs(10),
        name: args.name.unwrap_or_else(|| format!("{host}:{}", std::process::id())),
        compute,
    };
    tracing::info!(device = %opts.compute.describe(), "device opened");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| (1, format!("cannot start the runtime: {e}")))?;
    rt.block_on(run(opts, token)).map_err(|e| match e {
        ClientError::Refused { .. } => (2, e.to_string()),
        ClientError::GaveUp { .. } => (1, e.to_string()),
    })
}

/// `meta-worker selftest --device DEV`: the table on stdout; `Ok(false)` when a check failed.
#[cfg(feature = "selftest")]
fn run_selftest(device: Device) -> Result<bool, (i32, String)> {
    match open_device(device, 0)? {
        Compute::Emu(rt) => {
            let mut rows = selftest::run(&rt);
            let (lines, host_rows) = selftest::host_path(&rt);
            rows.extend(host_rows);
            let ok = selftest::print("emu", &rows);
            lines.iter().for_each(|l| println!("{l}"));
            Ok(ok)
        }
        Compute::Cuda(rt) => {
            let mut rows = selftest::run(rt.as_ref());
            let (lines, host_rows) = selftest::host_path(rt.as_ref());
            rows.extend(host_rows);
            let ok = selftest::print(&metasched_cuda::Runtime::device_name(rt.as_ref()), &rows);
            lines.iter().for_each(|l| println!("{l}"));
            Ok(ok)
        }
        Compute::Cpu(_) => {
            Err((2, "selftest checks a device against the CPU engine: use --device emu or cuda:N".into()))
        }
    }
}

/// `meta-worker selftest` in a build without the `selftest` feature (no kernel checks).
#[cfg(not(feature = "selftest"))]
fn run_selftest(_device: Device) -> Result<bool, (i32, String)> {
    Err((2, "this meta-worker was built without the `selftest` feature".into()))
}

mod compile_kernels {
    //! `meta-worker compile-kernels`: NVRTC to PTX, then `ptxas -v` resource checks.

    use std::path::{Path, PathBuf};

    use metasched_cuda::compile::{
        KernelResources, compile_source, kernel_files, parse_arch, ptxas_resources,
    };
    use metasched_cuda::kernel_dir::{MANIFEST, Manifest, sha256_hex};
    use metasched_cuda::{CudaError, kernel_source, probe};

    /// A source to compile: its file name, text and directory (for its includes).
    struct Source {
        name: String,
        text: String,
        dir: Option<PathBuf>,
    }

    fn sources(kernels_dir: Option<&Path>) -> Result<Vec<Source>, (i32, String)> {
        let Some(path) = kernels_dir else {
            return Ok(kernel_files()
                .into_iter()
                .filter_map(|f| {
                    metasched_cuda::KernelId::ALL.into_iter().find(|k| k.source_file() == f).map(|id| {
                        Source { name: f.to_string(), text: kernel_source(id).to_string(), dir: None }
                    })
                })
                .collect());
        };
        let files: Vec<PathBuf> = if path.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| (2, format!("cannot read {}: {e}", path.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cu"))
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        if files.is_empty() {
            return Err((2, format!("no .cu files in {}", path.display())));
        }
        files
            .into_iter()
            .map(|f| {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| (2, format!("cannot read {}: {e}", f.display())))?;
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Ok(Source { name, text, dir: f.parent().map(Path::to_path_buf) })
            })
            .collect()
    }

    pub fn run(
        archs: &[String],
        out: &Path,
        kernels_dir: Option<&Path>,
        ptxas: Option<&Path>,
    ) -> Result<(), (i32, String)> {
        for a in archs {
            parse_arch(a).map_err(|e| (2, e.to_string()))?;
        }
        let nvrtc = probe::nvrtc_available().map_err(|e| (2, format!("NVRTC is not installed: {e}")))?;
        eprintln!(
            "NVRTC: {}",
            nvrtc.path.as_deref().map_or(nvrtc.loaded_as.clone(), |p| p.display().to_string())
        );
        let nvrtc_version = metasched_cuda::compile::nvrtc_version().map_err(|e| (2, e.to_string()))?;
        eprintln!("NVRTC version: {nvrtc_version}");
        let sources = sources(kernels_dir)?;
        std::fs::create_dir_all(out).map_err(|e| (2, format!("cannot create {}: {e}", out.display())))?;
        let mut failures = 0usize;
        let mut written = Vec::new();
        for src in &sources {
            let stem = src.name.strip_suffix(".cu").unwrap_or(&src.name);
            for arch in archs {
                match compile_source(&src.name, &src.text, src.dir.as_deref(), arch) {
                    Ok(ptx) => {
                        let path = out.join(format!("{stem}.{arch}.ptx"));
                        std::fs::write(&path, ptx)
                            .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))?;
                        eprintln!("compiled {} for {arch} -> {}", src.name, path.display());
                        let source_hash = sha256_hex(
                            metasched_cuda::compile::expand_includes(
                                &src.name,
                                &src.text,
                                src.dir.as_deref(),
                            )
                            .as_bytes(),
                        );
                        written.push((path, arch.clone(), src.name.clone(), source_hash));
                    }
                    Err(CudaError::Compile { file, arch, status, log }) => {
                        failures += 1;
                        eprintln!("NVRTC rejected {file} for {arch} ({status}); compiler log:\n{log}");
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("{}: {e}", src.name);
                    }
                }
            }
        }
        if failures > 0 {
            return Err((1, format!("{failures} compilation(s) failed")));
        }
        let Some(ptxas) = probe::find_ptxas(ptxas) else {
            eprintln!(
                "ptxas not found (pass --ptxas, set PTXAS, or pip install nvidia-cuda-nvcc-cu12): skipped the register/spill check and the cubins"
            );
            return write_manifest(out, &written, &nvrtc_version, false);
        };
        eprintln!("ptxas: {}", ptxas.display());
        let mut rows: Vec<(String, String, KernelResources)> = Vec::new();
        for (ptx, arch, _, _) in &written {
            let cubin = ptx.with_extension("cubin");
            let res = ptxas_resources(&ptxas, ptx, arch, &cubin).map_err(|e| (1, e.to_string()))?;
            let file = ptx.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            rows.extend(res.into_iter().map(|r| (arch.clone(), file.clone(), r)));
        }
        println!(
            "{:<6} {:<38} {:>5} {:>6} {:>7} {:>7} {:>6}",
            "arch", "kernel", "regs", "stack", "spill_st", "spill_ld", "smem"
        );
        // ptxas lists a file's kernels in its own order; group by architecture, then file.
        rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut spilled = Vec::new();
        for (arch, _file, r) in &rows {
            println!(
                "{:<6} {:<38} {:>5} {:>6} {:>7} {:>7} {:>6}",
                arch, r.kernel, r.registers, r.stack_bytes, r.spill_stores, r.spill_loads, r.shared_bytes
            );
            if r.spill_stores > 0 || r.spill_loads > 0 {
                spilled.push(format!("{} ({arch})", r.kernel));
            }
        }
        write_manifest(out, &written, &nvrtc_version, true)?;
        if !spilled.is_empty() {
            return Err((1, format!("register spills in: {}", spilled.join(", "))));
        }
        Ok(())
    }

    /// Writes `out/manifest.tsv`: every PTX written (and its cubin when `cubins`), with the
    /// hash of the source it came from, the architecture and the NVRTC version, so that a
    /// runtime loading the directory (`--kernels`) refuses stale files.
    fn write_manifest(
        out: &Path,
        written: &[(PathBuf, String, String, String)],
        nvrtc: &str,
        cubins: bool,
    ) -> Result<(), (i32, String)> {
        let mut m = Manifest::default();
        for (ptx, arch, source, source_hash) in written {
            let mut files = vec![ptx.clone()];
            if cubins {
                files.push(ptx.with_extension("cubin"));
            }
            for f in files.iter().filter(|f| f.exists()) {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                m.add(out, &name, source, source_hash, arch, nvrtc).map_err(|e| (1, e.to_string()))?;
            }
        }
        let path = out.join(MANIFEST);
        std::fs::write(&path, m.render())
            .map_err(|e| (1, format!("cannot write {}: {e}", path.display())))?;
        eprintln!("wrote {} ({} files)", path.display(), m.entries.len());
        Ok(())
    }
}
