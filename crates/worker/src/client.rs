//! The TCP side of `meta-worker`: connect to the coordinator (retrying with exponential
//! backoff, so start order does not matter and a restarted coordinator is rejoined),
//! authenticate, then serve jobs and send heartbeats until told to stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metasched_engine::Params;
use metasched_proto::{
    Capabilities, DeviceKind, MAX_FRAME_BYTES, ParamsBlob, ProtoError, RunSetup, ToCoord, ToWorker, Token,
    read_msg, worker_handshake, write_msg,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::executor::Executor;
use crate::task_source::TaskSource;
use metasched_proto::JobResult;

/// How a worker connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Coordinator address, `HOST:PORT`.
    pub coord: String,
    /// Engine threads (0: the coordinator's suggestion, or every core).
    pub threads: usize,
    /// Stop trying after this long without a coordinator (`None`: never).
    pub give_up_after: Option<Duration>,
    /// Deadline of the handshake.
    pub handshake: Duration,
    /// Name shown in the coordinator's logs.
    pub name: String,
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The coordinator refused this worker (wrong token, wrong version): retrying cannot help.
    #[error("refused by the coordinator at {coord}: {reason}")]
    Refused {
        /// Coordinator address.
        coord: String,
        /// Its reason or ours.
        reason: String,
    },
    /// No coordinator could be reached in time.
    #[error("gave up reaching the coordinator at {coord} after {secs:.0} s: {last}")]
    GaveUp {
        /// Coordinator address.
        coord: String,
        /// Seconds waited.
        secs: f64,
        /// The last error.
        last: String,
    },
}

enum Session {
    Stopped,
    Lost(String),
}

fn capabilities(name: &str, threads: usize) -> Capabilities {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Capabilities {
        device: DeviceKind::Cpu,
        device_count: 1,
        cores: if threads == 0 { cores } else { threads } as u32,
        build_version: env!("CARGO_PKG_VERSION").to_string(),
        name: name.to_string(),
    }
}

/// Rebuilds parameters shaped for `config` from a blob.
fn params_from_blob(config: &metasched_engine::Config, blob: &ParamsBlob) -> Result<Params<f32>, String> {
    let mut p = Params::<f32>::zeros(config);
    let want: usize = p.buffers().iter().map(|b| b.len()).sum();
    if blob.values.len() != want {
        return Err(format!("parameters of {} values, the model has {want}", blob.values.len()));
    }
    let mut at = 0;
    for b in p.buffers_mut() {
        b.copy_from_slice(&blob.values[at..at + b.len()]);
        at += b.len();
    }
    Ok(p)
}

/// Connects and serves until the coordinator says stop.
pub async fn run(opts: ClientOptions, token: Token) -> Result<(), ClientError> {
    let token = Arc::new(token);
    let mut backoff = Duration::from_millis(200);
    let mut since = Instant::now();
    loop {
        let last = match TcpStream::connect(&opts.coord).await {
            Err(e) => format!("cannot connect: {e}"),
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                let caps = capabilities(&opts.name, opts.threads);
                match worker_handshake(&mut stream, &token, caps, opts.handshake).await {
                    Ok((id, setup)) => {
                        tracing::info!(coord = %opts.coord, worker = id, "joined the run");
                        backoff = Duration::from_millis(200);
                        match serve(stream, setup, &opts).await {
                            Session::Stopped => {
                                tracing::info!("coordinator said stop: exiting");
                                return Ok(());
                            }
                            Session::Lost(reason) => {
                                tracing::warn!(coord = %opts.coord, "connection lost: {reason}; reconnecting");
                                since = Instant::now();
                                reason
                            }
                        }
                    }
                    Err(
                        e @ (ProtoError::Refused(_)
                        | ProtoError::AuthFailed
                        | ProtoError::VersionMismatch { .. }),
                    ) => {
                        return Err(ClientError::Refused {
                            coord: opts.coord.clone(),
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => format!("handshake failed: {e}"),
                }
            }
        };
        if let Some(limit) = opts.give_up_after
            && since.elapsed() > limit
        {
            return Err(ClientError::GaveUp {
                coord: opts.coord.clone(),
                secs: since.elapsed().as_secs_f64(),
                last,
            });
        }
        tracing::debug!(coord = %opts.coord, "{last}; retrying in {:.1} s", backoff.as_secs_f64());
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One session with the coordinator.
async fn serve(stream: TcpStream, setup: RunSetup, opts: &ClientOptions) -> Session {
    let threads = if opts.threads > 0 { opts.threads } else { setup.threads as usize };
    let config = setup.config.clone();
    let spec = setup.tasks.clone();
    let exec = tokio::task::spawn_blocking(move || {
        let source = TaskSource::open(&spec, &config).map_err(|e| e.to_string())?;
        Executor::new(config, source, threads).map_err(|e| e.to_string())
    })
    .await;
    let exec = match exec {
        Ok(Ok(e)) => Arc::new(e),
        Ok(Err(e)) => return Session::Lost(format!("cannot set up the run: {e}")),
        Err(e) => return Session::Lost(format!("set-up task failed: {e}")),
    };
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToCoord>();
    let writer_task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write_msg(&mut writer, &msg).await.is_err() {
                return;
            }
        }
    });
    let beat_tx = tx.clone();
    let period = Duration::from_secs_f64(setup.heartbeat_s.clamp(0.05, 60.0));
    let heartbeat = tokio::spawn(async move {
        let mut seq = 0u64;
        loop {
            tokio::time::sleep(period).await;
            seq += 1;
            if beat_tx.send(ToCoord::Heartbeat { seq }).is_err() {
                return;
            }
        }
    });
    let mut params: Option<Arc<Params<f32>>> = None;
    let outcome = loop {
        let msg = match read_msg::<_, ToWorker>(&mut reader, MAX_FRAME_BYTES).await {
            Ok(m) => m,
            Err(e) => break Session::Lost(e.to_string()),
        };
        match msg {
            ToWorker::Work { job_id, job, params: blob } => {
                if let Some(blob) = blob {
                    match params_from_blob(exec.config(), &blob) {
                        Ok(p) => params = Some(Arc::new(p)),
                        Err(e) => {
                            let _ = tx.send(ToCoord::Failed { job_id, message: e });
                            continue;
                        }
                    }
                }
                let Some(p) = params.clone() else {
                    let _ = tx.send(ToCoord::Failed { job_id, message: "no parameters received yet".into() });
                    continue;
                };
                let exec = Arc::clone(&exec);
                let done = tokio::task::spawn_blocking(move || exec.run(&job, &p)).await;
                let reply = match done {
                    Ok(Ok(JobResult::Step(result))) => ToCoord::StepDone { job_id, result },
                    Ok(Ok(JobResult::Eval(result))) => ToCoord::EvalDone { job_id, result },
                    Ok(Err(e)) => ToCoord::Failed { job_id, message: e.to_string() },
                    Err(e) => {
                        ToCoord::Failed { job_id, message: format!("job panicked or was cancelled: {e}") }
                    }
                };
                if tx.send(reply).is_err() {
                    break Session::Lost("writer closed".into());
                }
            }
            ToWorker::Ping => {
                let _ = tx.send(ToCoord::Heartbeat { seq: 0 });
            }
            ToWorker::Stop => break Session::Stopped,
            other => break Session::Lost(format!("unexpected message after the handshake: {other:?}")),
        }
    };
    heartbeat.abort();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    outcome
}
