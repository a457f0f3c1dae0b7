//! `meta-worker`: serves meta-gradient and evaluation jobs for a `meta-coord` coordinator.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use metasched_proto::Token;
use metasched_worker::client::{ClientError, ClientOptions, run};
use tracing_subscriber::EnvFilter;

/// A metasched worker: connects to a coordinator, computes its share of every meta-step.
#[derive(Debug, Parser)]
#[command(name = "meta-worker", version, about)]
struct Args {
    /// Coordinator address, HOST:PORT.
    #[arg(long)]
    coord: String,
    /// cpu, or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
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
}

fn main() {
    let args = Args::parse();
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

fn real_main(args: Args) -> Result<(), (i32, String)> {
    if args.device != "cpu" {
        return Err((
            2,
            format!(
                "--device {}: this build of meta-worker has no CUDA backend yet; use --device cpu",
                args.device
            ),
        ));
    }
    let token = Token::resolve(args.token_file.as_deref())
        .map_err(|e| (2, e.to_string()))?
        .ok_or_else(|| (2, "no shared token: pass --token-file FILE or set METASCHED_TOKEN".to_string()))?;
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    let opts = ClientOptions {
        coord: args.coord,
        threads: args.threads,
        give_up_after: args.give_up_after.map(Duration::from_secs_f64),
        handshake: Duration::from_secs(10),
        name: args.name.unwrap_or_else(|| format!("{host}:{}", std::process::id())),
    };
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
