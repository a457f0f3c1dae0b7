//! Workers as `meta-worker` processes over TCP: the [`Transport`] of distributed training (the
//! step skeleton itself, shared with in-process workers, is [`super::pool::WorkerPool`]).
//!
//! A tokio runtime owned by the pool accepts connections, runs the authenticated handshake
//! under a deadline (so a slowloris client cannot hold a slot), and gives every worker a
//! reader and a writer task that turn its socket into events. The coordinator thread drives
//! each meta-step: it splits the tasks into contiguous parts, one per live worker, sends each
//! its part with the parameters it lacks, and waits. A worker that disconnects, goes silent
//! past the heartbeat timeout, fails a job, or sends anything malformed is dropped and its
//! parts go to the others; a part still pending after the step deadline is sent a second time
//! (the first answer wins). Because parts are summed exactly, a step's result does not depend
//! on who computed what: a fault never changes a bit, and no step is lost or applied twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use metasched_engine::Params;
use metasched_proto::{
    Capabilities, Job, JobResult, MAX_FRAME_BYTES, ParamsBlob, RunSetup, Session, ToCoord, ToWorker, Token,
    coordinator_handshake, read_sealed, write_sealed,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::transport::{Gathered, Transport};

mod group;
pub use group::CollectiveMode;

/// Timing knobs of the distributed pool.
#[derive(Debug, Clone, Copy)]
pub struct RemoteTimeouts {
    /// How long a new connection may take to finish the handshake.
    pub handshake: Duration,
    /// A worker silent for this long is considered dead.
    pub heartbeat: Duration,
    /// Workers send a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A part pending for this long is sent to another worker as well.
    pub step_deadline: Duration,
    /// How long to wait for workers when none is connected (then the run saves and stops).
    pub no_workers: Duration,
    /// How long forming a reduction group (id, every member joined) may take.
    pub group_setup: Duration,
}

impl Default for RemoteTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            heartbeat: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(2),
            step_deadline: Duration::from_secs(600),
            no_workers: Duration::from_secs(300),
            group_setup: Duration::from_secs(30),
        }
    }
}

/// What the socket tasks tell the coordinator.
enum Event {
    Joined { id: u32, caps: Capabilities, tx: mpsc::UnboundedSender<ToWorker>, tasks: [AbortHandle; 2] },
    Msg { id: u32, msg: ToCoord },
    Gone { id: u32, reason: String },
}

struct Live {
    caps: Capabilities,
    tx: mpsc::UnboundedSender<ToWorker>,
    tasks: [AbortHandle; 2],
    last_seen: Instant,
    version: Option<u64>,
    pending: usize,
}

/// A part in flight: the workers it was sent to and when it was last sent.
struct Pending {
    workers: Vec<u32>,
    sent: Instant,
}

/// A job's answer when it is of the kind asked for (`step`: a meta-gradient, else an
/// evaluation), with its job id; `None` for any other message.
fn answer(msg: ToCoord, step: bool) -> Option<(u64, JobResult)> {
    match msg {
        ToCoord::StepDone { job_id, result } if step => Some((job_id, JobResult::Step(result))),
        ToCoord::EvalDone { job_id, result } if !step => Some((job_id, JobResult::Eval(result))),
        _ => None,
    }
}

/// The distributed pool.
pub struct RemotePool {
    rt: tokio::runtime::Runtime,
    events: mpsc::UnboundedReceiver<Event>,
    live: BTreeMap<u32, Live>,
    addr: SocketAddr,
    timeouts: RemoteTimeouts,
    next_job: u64,
    accept: AbortHandle,
    stop: Option<super::signals::StopFlag>,
    collective: CollectiveMode,
    group: Option<group::ActiveGroup>,
    next_group: u64,
    formation_failures: u32,
}

/// The parameters as sent on the wire.
fn blob(params: &Params<f32>, version: u64) -> ParamsBlob {
    ParamsBlob { version, values: params.buffers().iter().flat_map(|b| b.iter().copied()).collect() }
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u32,
    token: Arc<Token>,
    setup: Arc<RunSetup>,
    deadline: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    let (caps, Session { mut sealer, mut opener }) =
        match coordinator_handshake(&mut stream, &token, &setup, id, deadline).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, "connection refused: {e}");
                return;
            }
        };
    tracing::info!(
        %peer,
        worker = id,
        name = %caps.name,
        cores = caps.cores,
        device = ?caps.device,
        collective = ?caps.collective,
        "worker joined"
    );
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ToWorker>();
    let ev = events.clone();
    // A ping every heartbeat period keeps sealed frames flowing to the worker even while the
    // coordinator has nothing to say, so a frame lost on the way is caught by the worker's
    // counter within one period instead of leaving both sides waiting for each other.
    let ping_every = Duration::from_secs_f64(setup.heartbeat_s.clamp(0.05, 60.0));
    let write_task = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
                _ = ping.tick() => ToWorker::Ping,
            };
            if let Err(e) = write_sealed(&mut writer, &mut sealer, &msg).await {
                let _ = ev.send(Event::Gone { id, reason: format!("write failed: {e}") });
                return;
            }
            if matches!(msg, ToWorker::Stop) {
                return;
            }
        }
    });
    let ev = events.clone();
    let read_task = tokio::spawn(async move {
        loop {
            match read_sealed::<_, ToCoord>(&mut reader, &mut opener, MAX_FRAME_BYTES).await {
                Ok(msg) => {
                    if ev.send(Event::Msg { id, msg }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = ev.send(Event::Gone { id, reason: e.to_string() });
                    return;
                }
            }
        }
    });
    let tasks = [write_task.abort_handle(), read_task.abort_handle()];
    let _ = events.send(Event::Joined { id, caps, tx, tasks });
}

impl RemotePool {
    /// Listens on `listen` and starts accepting workers for the run `setup`.
    pub fn start(
        listen: &str,
        token: Token,
        setup: RunSetup,
        timeouts: RemoteTimeouts,
    ) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("metasched-net")
            .enable_all()
            .build()
            .context("cannot start the network runtime")?;
        let listener =
            rt.block_on(TcpListener::bind(listen)).with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let (tx, events) = mpsc::unbounded_channel();
        let token = Arc::new(token);
        let setup = Arc::new(setup);
        let handshake = timeouts.handshake;
        // At most this many connections may be in their handshake at once.
        let slots = Arc::new(Semaphore::new(64));
        let accept = rt.spawn(async move {
            let mut next_id = 0u32;
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, "too many connections in handshake: dropped");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (token, setup, tx) = (Arc::clone(&token), Arc::clone(&setup), tx.clone());
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                let span = tracing::info_span!("worker", id, %peer);
                tokio::spawn(
                    async move {
                        serve_connection(stream, peer, id, token, setup, handshake, tx).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        });
        tracing::info!(%addr, "coordinator listening");
        Ok(Self {
            rt,
            events,
            live: BTreeMap::new(),
            addr,
            timeouts,
            next_job: 0,
            accept: accept.abort_handle(),
            stop: None,
            collective: CollectiveMode::default(),
            group: None,
            next_group: 0,
            formation_failures: 0,
        })
    }

    /// Makes waits for workers give up when `stop` is raised (SIGINT/SIGTERM), so a signal
    /// saves the last completed step even when no worker is left to finish the current one.
    pub fn set_stop_flag(&mut self, stop: super::signals::StopFlag) {
        self.stop = Some(stop);
    }

    fn check_stop(&self) -> anyhow::Result<()> {
        match &self.stop {
            Some(s) if s.raised() => Err(anyhow!("interrupted while waiting for workers")),
            _ => Ok(()),
        }
    }

    /// Fails once no worker has been connected for the no-worker timeout, counted from
    /// `*since` (set on the first call), or when a stop signal is raised: a run without workers
    /// saves and stops rather than waiting for ever. `what` starts the message.
    fn give_up_without_workers(&self, since: &mut Option<Instant>, what: &str) -> anyhow::Result<()> {
        self.check_stop()?;
        let since = *since.get_or_insert_with(Instant::now);
        if since.elapsed() > self.timeouts.no_workers {
            return Err(anyhow!(
                "{what} {:.0} s (listening on {}); stopping",
                self.timeouts.no_workers.as_secs_f64(),
                self.addr
            ));
        }
        Ok(())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn drop_worker(&mut self, id: u32, reason: &str) {
        if let Some(w) = self.live.remove(&id) {
            for t in &w.tasks {
                t.abort();
            }
            tracing::warn!(worker = id, name = %w.caps.name, "worker lost: {reason}");
        }
    }

    /// Applies an event that is not a job result; returns it back if it is one.
    fn absorb(&mut self, ev: Event) -> Option<(u32, ToCoord)> {
        match ev {
            Event::Joined { id, caps, tx, tasks } => {
                self.live.insert(
                    id,
                    Live { caps, tx, tasks, last_seen: Instant::now(), version: None, pending: 0 },
                );
                None
            }
            Event::Gone { id, reason } => {
                self.drop_worker(id, &reason);
                None
            }
            Event::Msg { id, msg } => {
                if let Some(w) = self.live.get_mut(&id) {
                    w.last_seen = Instant::now();
                }
                match msg {
                    ToCoord::Heartbeat { .. } => None,
                    ToCoord::Hello { .. } | ToCoord::Auth { .. } => {
                        self.drop_worker(id, "protocol violation: handshake message after the handshake");
                        None
                    }
                    other => Some((id, other)),
                }
            }
        }
    }

    /// The next message that is not a heartbeat, waiting at most `wait` (joins and losses are
    /// applied on the way).
    fn next_message(&mut self, wait: Duration) -> Option<(u32, ToCoord)> {
        let ev = self.rt.block_on(async { tokio::time::timeout(wait, self.events.recv()).await });
        match ev {
            Ok(Some(ev)) => self.absorb(ev),
            _ => None,
        }
    }

    /// Waits until `n` workers are connected, or `timeout` passes with at least one.
    pub fn wait_for_workers(&mut self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let mut last_log = Instant::now();
        while self.live.len() < n {
            self.check_stop()?;
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                if self.live.is_empty() {
                    return Err(anyhow!("no worker connected within {:.0} s", timeout.as_secs_f64()));
                }
                tracing::warn!(
                    connected = self.live.len(),
                    expected = n,
                    "starting with fewer workers than expected"
                );
                return Ok(());
            }
            if last_log.elapsed() > Duration::from_secs(5) {
                tracing::info!(connected = self.live.len(), expected = n, addr = %self.addr, "waiting for workers");
                last_log = Instant::now();
            }
            let _ = self.next_message(left.min(Duration::from_secs(1)));
        }
        Ok(())
    }

    /// Sends `job` to worker `id` (to reduce within group `group`, when given), with the
    /// parameters if it lacks this version.
    fn send(
        &mut self,
        id: u32,
        job: Job,
        params: &Params<f32>,
        version: u64,
        group: Option<u64>,
    ) -> Option<u64> {
        let job_id = self.next_job;
        self.next_job += 1;
        let w = self.live.get_mut(&id)?;
        let with = (w.version != Some(version)).then(|| blob(params, version));
        let msg = match group {
            Some(group) => ToWorker::GroupWork { job_id, job, params: with, group },
            None => ToWorker::Work { job_id, job, params: with },
        };
        if w.tx.send(msg).is_err() {
            return None;
        }
        w.version = Some(version);
        w.pending += 1;
        Some(job_id)
    }

    /// The live worker with the fewest pending jobs, other than those in `avoid` if possible.
    fn least_loaded(&self, avoid: &[u32]) -> Option<u32> {
        let pick = |skip: bool| {
            self.live
                .iter()
                .filter(|(id, _)| !skip || !avoid.contains(id))
                .min_by_key(|(_, w)| w.pending)
                .map(|(&id, _)| id)
        };
        pick(true).or_else(|| pick(false))
    }

    /// Tells every worker the run is over.
    pub fn stop_all(&mut self) {
        for w in self.live.values() {
            let _ = w.tx.send(ToWorker::Stop);
        }
        // Give the writers a moment to flush.
        self.rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

impl Transport for RemotePool {
    fn live(&self) -> usize {
        self.live.len()
    }

    /// Waits (up to the no-worker timeout, or a stop signal) until a worker is connected.
    fn ready(&mut self) -> anyhow::Result<usize> {
        let mut waited_since: Option<Instant> = None;
        while self.live.is_empty() {
            self.give_up_without_workers(&mut waited_since, "no worker left for")?;
            tracing::warn!(addr = %self.addr, "no worker connected: waiting");
            let _ = self.next_message(Duration::from_secs(1));
        }
        Ok(self.live.len())
    }

    /// Sends part `i` to the `i`-th live worker, then gathers, re-dispatching around faults:
    /// a part whose workers are all gone, or still pending past the step deadline, goes to the
    /// least loaded worker as well (the first answer wins).
    fn dispatch_gather(
        &mut self,
        jobs: &[Job],
        params: &Arc<Params<f32>>,
        version: u64,
    ) -> anyhow::Result<Gathered> {
        let step = matches!(jobs.first(), Some(Job::MetaGrad { .. }));
        let ids: Vec<u32> = self.live.keys().copied().collect();
        let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
        let mut parts: Vec<Pending> = Vec::with_capacity(jobs.len());
        let mut answers: Vec<Option<(u32, JobResult)>> = Vec::new();
        let mut redispatched = 0u32;
        for (i, job) in jobs.iter().enumerate() {
            parts.push(Pending { workers: vec![], sent: Instant::now() });
            answers.push(None);
            let mut target = ids.get(i % ids.len().max(1)).copied();
            while let Some(id) = target {
                if let Some(job_id) = self.send(id, job.clone(), params, version, None) {
                    pending.insert(job_id, i);
                    parts[i].workers.push(id);
                    break;
                }
                self.drop_worker(id, "cannot send");
                target = self.least_loaded(&[]);
            }
        }
        let mut first_done: Option<Instant> = None;
        let mut no_worker_since: Option<Instant> = None;
        while answers.iter().any(Option::is_none) {
            // Parts with no live worker on them, or past the deadline, go (again) to someone.
            let now = Instant::now();
            for i in 0..parts.len() {
                if answers[i].is_some() {
                    continue;
                }
                let orphan = !parts[i].workers.iter().any(|w| self.live.contains_key(w));
                let late = now.duration_since(parts[i].sent) > self.timeouts.step_deadline;
                if !(orphan || late) {
                    continue;
                }
                let Some(id) = self.least_loaded(&parts[i].workers) else { continue };
                if late && !orphan && parts[i].workers.contains(&id) {
                    continue;
                }
                if let Some(job_id) = self.send(id, jobs[i].clone(), params, version, None) {
                    tracing::warn!(part = ?jobs[i], worker = id, orphan, late, "part re-dispatched");
                    pending.insert(job_id, i);
                    parts[i].workers.push(id);
                    parts[i].sent = now;
                    redispatched += 1;
                }
            }
            // Workers that stopped answering are dropped.
            let silent: Vec<u32> = self
                .live
                .iter()
                .filter(|(_, w)| w.last_seen.elapsed() > self.timeouts.heartbeat)
                .map(|(&id, _)| id)
                .collect();
            for id in silent {
                self.drop_worker(id, "no heartbeat within the timeout");
            }
            if self.live.is_empty() {
                self.give_up_without_workers(
                    &mut no_worker_since,
                    "every worker is gone and none came back within",
                )?;
            } else {
                no_worker_since = None;
            }
            let Some((id, msg)) = self.next_message(Duration::from_millis(200)) else { continue };
            if group::is_group_message(&msg) {
                continue; // late traffic of a dissolved group
            }
            if let ToCoord::Failed { job_id, message } = &msg {
                // A failure of an earlier job (a grouped part whose group was dissolved) is
                // stale; one of this call's parts drops the worker.
                if let Some(&i) = pending.get(job_id) {
                    tracing::warn!(worker = id, part = ?jobs[i], "job failed on the worker: {message}");
                    parts[i].workers.retain(|&w| w != id);
                    self.drop_worker(id, &format!("job failed: {message}"));
                } else {
                    tracing::debug!(worker = id, job_id, "stale job failure ignored: {message}");
                }
                continue;
            }
            match answer(msg, step) {
                Some((job_id, r)) => {
                    if let Some(w) = self.live.get_mut(&id) {
                        w.pending = w.pending.saturating_sub(1);
                    }
                    if let Some(&i) = pending.get(&job_id)
                        && answers[i].is_none()
                    {
                        answers[i] = Some((id, r));
                        first_done.get_or_insert_with(Instant::now);
                    }
                }
                None => self.drop_worker(id, "protocol violation: unexpected message"),
            }
        }
        Ok(Gathered {
            parts: answers.into_iter().flatten().collect(),
            straggler_s: first_done.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0),
            redispatched,
        })
    }

    /// Evaluations use the current parameters under a version no step uses.
    fn eval_version(&mut self) -> u64 {
        u64::MAX - self.next_job
    }

    fn group_size(&mut self, batch: usize) -> anyhow::Result<Option<usize>> {
        self.group_for(batch)
    }

    fn dispatch_gather_grouped(
        &mut self,
        jobs: &[Job],
        params: &Arc<Params<f32>>,
        version: u64,
    ) -> anyhow::Result<Option<Gathered>> {
        self.group_dispatch_gather(jobs, params, version)
    }
}

impl Drop for RemotePool {
    fn drop(&mut self) {
        self.accept.abort();
        for w in self.live.values() {
            for t in &w.tasks {
                t.abort();
            }
        }
    }
}
