//! The TCP side of `meta-worker`: connect to the coordinator (retrying with exponential
//! backoff, so start order does not matter and a restarted coordinator is rejoined),
//! authenticate, then serve jobs and send heartbeats until told to stop.
//!
//! The socket reader never waits for a job: jobs go to a runner task that computes them one
//! at a time, so pings, `Stop` and `LeaveGroup` (which aborts an all-reduce blocked on a lost
//! group member) are handled while a job runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metasched_compute::{Compute, Executor, TaskSource};
use metasched_engine::{FixedSum, Params};
use metasched_proto::{
    Capabilities, DeviceKind, Job, JobResult, MAX_FRAME_BYTES, ParamsBlob, ProtoError, RunSetup,
    SETUP_FAILED_JOB, ToCoord, ToWorker, Token, read_sealed, worker_handshake, write_sealed,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::group::{Created, GroupHandle, JoinSpec};

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
    /// The device jobs run on, opened once for the worker's lifetime.
    pub compute: Arc<Compute>,
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
    /// Welcomed, but the run cannot be set up here (told to the coordinator).
    SetupFailed(String),
}

fn capabilities(name: &str, threads: usize, compute: &Compute) -> Capabilities {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Capabilities {
        device: match compute {
            Compute::Cpu(_) => DeviceKind::Cpu,
            Compute::Emu(_) => DeviceKind::Emu,
            Compute::Cuda(_) => DeviceKind::Cuda,
        },
        device_count: 1,
        cores: if threads == 0 { cores } else { threads } as u32,
        build_version: env!("CARGO_PKG_VERSION").to_string(),
        name: name.to_string(),
        collective: crate::group::offered(compute),
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
                let caps = capabilities(&opts.name, opts.threads, &opts.compute);
                match worker_handshake(&mut stream, &token, caps, opts.handshake).await {
                    Ok((id, setup, sealing)) => {
                        tracing::info!(coord = %opts.coord, worker = id, "joined the run");
                        match serve(stream, setup, sealing, &opts).await {
                            Session::Stopped => {
                                tracing::info!("coordinator said stop: exiting");
                                return Ok(());
                            }
                            Session::Lost(reason) => {
                                tracing::warn!(coord = %opts.coord, "connection lost: {reason}; reconnecting");
                                backoff = Duration::from_millis(200);
                                since = Instant::now();
                                reason
                            }
                            Session::SetupFailed(reason) => {
                                // Retrying at once cannot help (the coordinator has been told
                                // why): keep backing off, and let --give-up-after count from
                                // the last session that worked.
                                tracing::error!(
                                    coord = %opts.coord,
                                    "cannot set up the run: {reason}; retrying in {:.1} s",
                                    backoff.as_secs_f64()
                                );
                                format!("cannot set up the run: {reason}")
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

/// A job for the runner task.
struct Queued {
    job_id: u64,
    job: Job,
    params: Option<ParamsBlob>,
    /// `Some(group)` for a part to all-reduce within that group.
    group: Option<u64>,
}

/// The current group of this session, shared by the reader (join, leave) and the runner.
type SharedGroup = Arc<std::sync::Mutex<Option<Arc<GroupHandle>>>>;

fn current_group(g: &SharedGroup) -> Option<Arc<GroupHandle>> {
    g.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Runs one job on a blocking thread; a grouped meta-gradient part is all-reduced there too.
fn run_job(exec: &Executor, q: &Queued, params: &Params<f32>, group: Option<Arc<GroupHandle>>) -> ToCoord {
    let job_id = q.job_id;
    let failed = |message: String| ToCoord::Failed { job_id, message };
    let result = match exec.run(&q.job, params) {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    match (q.group, result) {
        (None, JobResult::Step(result)) => ToCoord::StepDone { job_id, result },
        (None, JobResult::Eval(result)) => ToCoord::EvalDone { job_id, result },
        (None, JobResult::Window(result)) => ToCoord::WindowDone { job_id, result },
        (Some(id), JobResult::Step(mut result)) => {
            let Some(g) = group.filter(|g| g.group == id) else {
                return failed(format!("not a member of group {id}"));
            };
            let total = match g.all_reduce(result.sum.to_limbs()) {
                Ok(limbs) => limbs,
                Err(e) => return failed(e.to_string()),
            };
            let root = g.rank == 0;
            result.sum = if root {
                match FixedSum::from_limbs(&total) {
                    Some(s) => s,
                    None => return failed("the all-reduce returned malformed limbs".into()),
                }
            } else {
                FixedSum::zeros(0)
            };
            ToCoord::GroupStepDone { job_id, group: id, root, result }
        }
        (Some(_), JobResult::Eval(_)) => failed("evaluation jobs are not grouped".into()),
        (Some(_), JobResult::Window(_)) => failed("window jobs are not grouped".into()),
    }
}

/// Computes queued jobs one at a time, keeping the parameters of the latest version.
async fn runner(
    exec: Arc<Executor>,
    mut jobs: mpsc::UnboundedReceiver<Queued>,
    tx: mpsc::UnboundedSender<ToCoord>,
    group: SharedGroup,
) {
    let mut params: Option<Arc<Params<f32>>> = None;
    while let Some(q) = jobs.recv().await {
        let job_id = q.job_id;
        if let Some(blob) = &q.params {
            match params_from_blob(exec.config(), blob) {
                Ok(p) => params = Some(Arc::new(p)),
                Err(message) => {
                    let _ = tx.send(ToCoord::Failed { job_id, message });
                    continue;
                }
            }
        }
        let Some(p) = params.clone() else {
            let _ = tx.send(ToCoord::Failed { job_id, message: "no parameters received yet".into() });
            continue;
        };
        let (exec, g) = (Arc::clone(&exec), current_group(&group));
        let reply = match tokio::task::spawn_blocking(move || run_job(&exec, &q, &p, g)).await {
            Ok(reply) => reply,
            Err(e) => ToCoord::Failed { job_id, message: format!("job panicked or was cancelled: {e}") },
        };
        if tx.send(reply).is_err() {
            return;
        }
    }
}

/// Tells the coordinator why this worker cannot take part in the run (a [`ToCoord::Failed`]
/// for [`SETUP_FAILED_JOB`]), then ends the session.
async fn setup_failed(
    mut stream: TcpStream,
    sealer: &mut metasched_proto::Sealer,
    message: String,
) -> Session {
    let msg = ToCoord::Failed { job_id: SETUP_FAILED_JOB, message: message.clone() };
    let told = tokio::time::timeout(Duration::from_secs(5), write_sealed(&mut stream, sealer, &msg)).await;
    if let Ok(Ok(())) = told {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    Session::SetupFailed(message)
}

/// One session with the coordinator; every frame is sealed with `sealing`'s halves.
async fn serve(
    stream: TcpStream,
    setup: RunSetup,
    sealing: metasched_proto::Session,
    opts: &ClientOptions,
) -> Session {
    let metasched_proto::Session { mut sealer, mut opener } = sealing;
    let config = setup.config.clone();
    let spec = setup.tasks.clone();
    let compute = Arc::clone(&opts.compute);
    let exec = tokio::task::spawn_blocking(move || {
        let source = TaskSource::open(&spec, &config).map_err(|e| e.to_string())?;
        Executor::with_compute(config, source, compute).map_err(|e| e.to_string())
    })
    .await;
    let exec = match exec {
        Ok(Ok(e)) => Arc::new(e),
        Ok(Err(e)) => return setup_failed(stream, &mut sealer, e).await,
        Err(e) => return setup_failed(stream, &mut sealer, format!("set-up task failed: {e}")).await,
    };
    // Peers of a group reach rank 0 at the address this worker reaches the coordinator from.
    let local_ip = stream.local_addr().map(|a| a.ip()).unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToCoord>();
    let writer_task = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write_sealed(&mut writer, &mut sealer, &msg).await.is_err() {
                return;
            }
        }
    });
    // The first message after the handshake: set up, ready for jobs (the coordinator counts
    // a worker as live from it on).
    let _ = tx.send(ToCoord::Heartbeat { seq: 0 });
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
    let group: SharedGroup = Arc::new(std::sync::Mutex::new(None));
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Queued>();
    let runner_task = tokio::spawn(runner(Arc::clone(&exec), jobs_rx, tx.clone(), Arc::clone(&group)));
    let mut created: Option<(u64, Created)> = None;
    let outcome = loop {
        let msg = match read_sealed::<_, ToWorker>(&mut reader, &mut opener, MAX_FRAME_BYTES).await {
            Ok(m) => m,
            Err(e) => break Session::Lost(e.to_string()),
        };
        match msg {
            ToWorker::Work { job_id, job, params } => {
                let _ = jobs_tx.send(Queued { job_id, job, params, group: None });
            }
            ToWorker::GroupWork { job_id, job, params, group } => {
                let _ = jobs_tx.send(Queued { job_id, job, params, group: Some(group) });
            }
            ToWorker::CreateGroup { group: id, world } => {
                let reply = match crate::group::offered(exec.compute()) {
                    None => {
                        ToCoord::GroupFailed { group: id, message: "this worker offers no collective".into() }
                    }
                    Some(kind) => match crate::group::create_id(kind, local_ip) {
                        Ok((bytes, state)) => {
                            tracing::info!(group = id, world, ?kind, "created a communicator id as rank 0");
                            created = Some((id, state));
                            ToCoord::GroupCreated { group: id, id: bytes }
                        }
                        Err(e) => ToCoord::GroupFailed { group: id, message: e.to_string() },
                    },
                };
                let _ = tx.send(reply);
            }
            ToWorker::JoinGroup { group: id, id: bytes, rank, world, timeout_s } => {
                let Some(kind) = crate::group::offered(exec.compute()) else {
                    let _ = tx.send(ToCoord::GroupFailed { group: id, message: "no collective".into() });
                    continue;
                };
                if let Some(old) = group.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    old.leave();
                }
                let state = created.take().filter(|(g, _)| *g == id).map(|(_, s)| s);
                let spec = JoinSpec {
                    group: id,
                    id: bytes,
                    rank: rank as usize,
                    world: world as usize,
                    timeout: Duration::from_secs_f64(timeout_s.clamp(0.1, 86_400.0)),
                };
                let join_tx = tx.clone();
                let handle = GroupHandle::join(kind, spec, state, Arc::clone(exec.compute()), move |r| {
                    let msg = match r {
                        Ok(()) => {
                            tracing::info!(group = id, rank, world, "joined the reduction group");
                            ToCoord::GroupJoined { group: id }
                        }
                        Err(e) => ToCoord::GroupFailed { group: id, message: e.to_string() },
                    };
                    let _ = join_tx.send(msg);
                });
                *group.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(handle));
            }
            ToWorker::LeaveGroup { group: id } => {
                let mut g = group.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if g.as_ref().is_some_and(|h| h.group == id)
                    && let Some(h) = g.take()
                {
                    tracing::warn!(group = id, "left the reduction group (a member was lost)");
                    if !h.leave() {
                        tracing::error!(
                            group = id,
                            "an NCCL all-reduce is blocked on a lost member and cannot be aborted: \
                             exiting so that the supervisor restarts this worker"
                        );
                        metasched_cuda::nccl::exit_now(3);
                    }
                }
            }
            ToWorker::Ping => {
                let _ = tx.send(ToCoord::Heartbeat { seq: 0 });
            }
            ToWorker::Stop => break Session::Stopped,
            other => {
                break Session::Lost(format!("unexpected message after the handshake: {}", other.kind()));
            }
        }
    };
    if let Some(h) = group.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
        h.leave();
    }
    drop(jobs_tx);
    runner_task.abort();
    heartbeat.abort();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    outcome
}
