//! Workers as `meta-worker` processes over TCP: the [`Transport`] of distributed training (the
//! step skeleton itself, shared with in-process workers, is [`super::pool::WorkerPool`]).
//!
//! A tokio runtime owned by the pool accepts connections, runs the authenticated handshake
//! under a deadline (so a slowloris client cannot hold a slot), and gives every worker a
//! reader and a writer task that turn its socket into events. The coordinator thread drives
//! each meta-step: it splits the tasks into contiguous parts, one per live worker, sends each
//! its part with the parameters it lacks, and waits. A worker that disconnects, goes silent
//! past the heartbeat timeout, fails a job, or sends anything malformed — including an answer
//! that does not fit the job it answers ([`super::pool::check_answer`]) — is dropped with the
//! reason logged and its parts go to the others; a part still pending after the step deadline
//! is sent a second time (the first answer wins; later duplicates are ignored and counted). A
//! worker counts as live from its first message after the handshake (it sends one as soon as it
//! has set the run up, or a [`metasched_proto::SETUP_FAILED_JOB`] failure saying why it cannot),
//! and time the coordinator spent not polling (a pause) is not counted as workers' silence. Because parts are summed exactly, a step's result does not depend
//! on who computed what: a fault never changes a bit, and no step is lost or applied twice.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use metasched_engine::Params;
use metasched_proto::{
    Capabilities, Job, JobResult, MAX_FRAME_BYTES, ParamsBlob, RunSetup, SETUP_FAILED_JOB, Session, ToCoord,
    ToWorker, Token, coordinator_handshake, read_sealed, write_sealed,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::pool::{AnswerShape, check_answer};
use super::transport::{Gathered, Transport};

mod group;
mod handshakes;
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

/// The shortest heartbeat timeout the pool applies, whatever it is given: below it every
/// worker would be dropped at once, over and over.
const MIN_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(1);

/// The coordinator thread not polling its workers for longer than this (a SIGSTOP, a long
/// checkpoint write, a slow machine) is a pause: the silence it could not observe is not
/// counted against the workers.
const PAUSE: Duration = Duration::from_millis(500);

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

/// A job's answer (a meta-gradient or an evaluation) with its job id; `None` for any other
/// message.
fn answer_of(msg: ToCoord) -> Option<(u64, JobResult)> {
    match msg {
        ToCoord::StepDone { job_id, result } => Some((job_id, JobResult::Step(result))),
        ToCoord::EvalDone { job_id, result } => Some((job_id, JobResult::Eval(result))),
        ToCoord::WindowDone { job_id, result } => Some((job_id, JobResult::Window(result))),
        _ => None,
    }
}

/// The distributed pool.
pub struct RemotePool {
    rt: tokio::runtime::Runtime,
    events: mpsc::UnboundedReceiver<Event>,
    /// Workers that are set up and take jobs.
    live: BTreeMap<u32, Live>,
    /// Workers past the handshake that have not said yet that they are set up (their first
    /// message); they get no job and do not count as live.
    joining: BTreeMap<u32, Live>,
    /// Messages read from the events while judging silence, not yet handled.
    inbox: VecDeque<(u32, ToCoord)>,
    /// When the coordinator thread last polled the events.
    last_poll: Instant,
    /// What answers of this run's model look like.
    shape: AnswerShape,
    /// Answers that came after their part was already answered (or of an earlier call): ignored.
    stale_answers: u64,
    /// Why the last worker that could not set up the run could not, for the no-worker message.
    last_setup_failure: Option<String>,
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

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    id: u32,
    token: Arc<Token>,
    setup: Arc<RunSetup>,
    deadline: Duration,
    events: mpsc::UnboundedSender<Event>,
    slot: handshakes::Slot,
) {
    let handshake = async {
        // A peer that has not sent its first byte within the pre-hello deadline is idle: its
        // slot goes back before the full handshake deadline.
        let mut first = [0u8; 1];
        match tokio::time::timeout(deadline.min(handshakes::PRE_HELLO), stream.peek(&mut first)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => return Err("closed before its hello".to_string()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no hello within the pre-hello deadline".to_string()),
        }
        slot.speaking();
        coordinator_handshake(&mut stream, &token, &setup, id, deadline).await.map_err(|e| e.to_string())
    };
    let result = handshake.await;
    // The slot is free once the handshake is over, whatever its outcome.
    drop(slot);
    let (caps, Session { mut sealer, mut opener }) = match result {
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
        let mut timeouts = timeouts;
        let floor = MIN_HEARTBEAT_TIMEOUT.max(timeouts.heartbeat_interval * 4);
        if timeouts.heartbeat < floor {
            tracing::warn!(
                "a heartbeat timeout of {:.3} s would drop every worker at once: using {:.3} s",
                timeouts.heartbeat.as_secs_f64(),
                floor.as_secs_f64()
            );
            timeouts.heartbeat = floor;
        }
        let shape = AnswerShape::of_run(&setup.config, &setup.tasks);
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
        let table = handshakes::Table::new();
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
                let _ = stream.set_nodelay(true);
                let (token, setup, tx) = (Arc::clone(&token), Arc::clone(&setup), tx.clone());
                let id = next_id;
                next_id = next_id.wrapping_add(1);
                let span = tracing::info_span!("worker", id, %peer);
                let wait = table.wait_before_admitting(peer.ip());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                table.admit(peer, |slot| {
                    tokio::spawn(
                        async move {
                            serve_connection(stream, peer, id, token, setup, handshake, tx, slot).await;
                        }
                        .instrument(span),
                    )
                    .abort_handle()
                });
            }
        });
        tracing::info!(%addr, "coordinator listening");
        Ok(Self {
            rt,
            events,
            live: BTreeMap::new(),
            joining: BTreeMap::new(),
            inbox: VecDeque::new(),
            last_poll: Instant::now(),
            shape,
            stale_answers: 0,
            last_setup_failure: None,
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
                "{what} {:.0} s (listening on {}){}; stopping",
                self.timeouts.no_workers.as_secs_f64(),
                self.addr,
                self.setup_failure_note()
            ));
        }
        Ok(())
    }

    /// Why workers left before taking part, for the no-worker messages (empty if none did).
    fn setup_failure_note(&self) -> String {
        match &self.last_setup_failure {
            Some(r) => format!("; the last worker to join could not set up the run: {r}"),
            None => String::new(),
        }
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn drop_worker(&mut self, id: u32, reason: &str) {
        if let Some(w) = self.live.remove(&id).or_else(|| self.joining.remove(&id)) {
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
                self.joining.insert(
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
                if let ToCoord::Failed { job_id: SETUP_FAILED_JOB, message } = &msg {
                    tracing::error!(worker = id, "the worker cannot set up the run: {message}");
                    self.last_setup_failure = Some(message.clone());
                    self.drop_worker(id, &format!("cannot set up the run: {message}"));
                    return None;
                }
                if let Some(w) = self.joining.remove(&id) {
                    // Its first message: set up and ready for jobs.
                    tracing::info!(worker = id, name = %w.caps.name, "worker ready");
                    self.live.insert(id, w);
                }
                if let Some(w) = self.live.get_mut(&id) {
                    w.last_seen = Instant::now();
                } else {
                    return None; // a message of a worker already dropped
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
        self.credit_unobserved();
        if let Some(m) = self.inbox.pop_front() {
            return Some(m);
        }
        let started = Instant::now();
        let ev = self.rt.block_on(async { tokio::time::timeout(wait, self.events.recv()).await });
        // Returning much later than asked means the process was paused while waiting.
        self.credit_pause(started.elapsed().saturating_sub(wait));
        self.last_poll = Instant::now();
        match ev {
            Ok(Some(ev)) => self.absorb(ev),
            _ => None,
        }
    }

    /// Does not count `gap`, a time the coordinator could not hear its workers, as their
    /// silence, when it is a pause.
    fn credit_pause(&mut self, gap: Duration) {
        if gap <= PAUSE {
            return;
        }
        tracing::warn!(
            "the coordinator did not poll its workers for {:.1} s: not counted as their silence",
            gap.as_secs_f64()
        );
        let now = Instant::now();
        for w in self.live.values_mut().chain(self.joining.values_mut()) {
            w.last_seen = (w.last_seen + gap).min(now);
        }
    }

    /// Credits the time since the last poll (see [`RemotePool::credit_pause`]).
    fn credit_unobserved(&mut self) {
        let gap = self.last_poll.elapsed();
        self.last_poll = Instant::now();
        self.credit_pause(gap);
    }

    /// Applies every event already queued (heartbeats refresh their senders; other messages wait
    /// in the inbox), so that silence is judged on everything received so far.
    fn drain_events(&mut self) {
        self.credit_unobserved();
        while let Ok(ev) = self.events.try_recv() {
            if let Some(m) = self.absorb(ev) {
                self.inbox.push_back(m);
            }
        }
    }

    /// Drops the live workers (among `among`, or all) silent past the heartbeat timeout, after
    /// reading whatever they already sent.
    fn drop_silent(&mut self, among: Option<&[u32]>) {
        self.drain_events();
        let timeout = self.timeouts.heartbeat;
        // Joining workers are not judged: they hold no job, and setting up a run (a large task
        // directory, a device) may take longer than a heartbeat timeout.
        let silent: Vec<u32> = self
            .live
            .iter()
            .filter(|(id, w)| among.is_none_or(|a| a.contains(id)) && w.last_seen.elapsed() > timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in silent {
            self.drop_worker(id, "no heartbeat within the timeout");
        }
    }

    /// Answers that arrived after their part was answered, or after the call that sent them.
    pub fn stale_answers(&self) -> u64 {
        self.stale_answers
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
                    return Err(anyhow!(
                        "no worker connected within {:.0} s{}",
                        timeout.as_secs_f64(),
                        self.setup_failure_note()
                    ));
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

    /// Counts an answer that came too late to be used (its part was answered first by another
    /// worker): normal with re-dispatched parts, never a fault.
    fn note_stale(&mut self, id: u32, job_id: u64) {
        self.stale_answers += 1;
        tracing::debug!(worker = id, job_id, total = self.stale_answers, "late duplicate answer ignored");
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
            self.drop_silent(None);
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
            let Some((job_id, r)) = answer_of(msg) else {
                self.drop_worker(id, "protocol violation: unexpected message");
                continue;
            };
            if job_id >= self.next_job {
                self.drop_worker(id, &format!("protocol violation: an answer to job {job_id}, never sent"));
                continue;
            }
            if let Some(w) = self.live.get_mut(&id) {
                w.pending = w.pending.saturating_sub(1);
            }
            let Some(&i) = pending.get(&job_id) else {
                // A late duplicate of a part re-sent in an earlier call (maybe of the other
                // kind, answered during an evaluation): its first answer was already used.
                self.note_stale(id, job_id);
                continue;
            };
            if !parts[i].workers.contains(&id) {
                self.drop_worker(
                    id,
                    &format!("protocol violation: an answer to job {job_id}, sent to another worker"),
                );
                continue;
            }
            if answers[i].is_some() {
                self.note_stale(id, job_id);
                continue;
            }
            if let Err(e) = check_answer(&self.shape, &jobs[i], &r) {
                // Only this worker's answer is wrong: drop it, give its part to another.
                parts[i].workers.retain(|&w| w != id);
                self.drop_worker(id, &format!("wrong answer to {:?}: {e}", jobs[i]));
                continue;
            }
            answers[i] = Some((id, r));
            first_done.get_or_insert_with(Instant::now);
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
        if self.stale_answers > 0 {
            tracing::info!(stale = self.stale_answers, "late duplicate answers ignored during the run");
        }
        for w in self.live.values().chain(self.joining.values()) {
            for t in &w.tasks {
                t.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metasched_proto::{TaskFamily, TaskSpec};

    fn pool(heartbeat: Duration) -> RemotePool {
        let setup = RunSetup {
            config: metasched_engine::Config::sinusoid_default(),
            tasks: TaskSpec { family: TaskFamily::Sinusoid, shots: 5, query: 5, ways: 1, seed: 0 },
            threads: 1,
            heartbeat_s: 0.05,
        };
        let timeouts = RemoteTimeouts {
            heartbeat,
            heartbeat_interval: Duration::from_millis(50),
            ..RemoteTimeouts::default()
        };
        RemotePool::start("127.0.0.1:0", Token::random(), setup, timeouts).expect("pool")
    }

    #[test]
    fn a_zero_heartbeat_timeout_is_raised_to_a_floor() {
        assert_eq!(pool(Duration::ZERO).timeouts.heartbeat, MIN_HEARTBEAT_TIMEOUT);
        assert_eq!(pool(Duration::from_secs(7)).timeouts.heartbeat, Duration::from_secs(7));
    }

    #[test]
    fn a_pause_of_the_coordinator_is_not_the_workers_silence() {
        let mut p = pool(Duration::from_secs(3));
        let (tx, _rx) = mpsc::unbounded_channel();
        let idle = p.rt.spawn(std::future::pending::<()>()).abort_handle();
        let caps = Capabilities {
            device: metasched_proto::DeviceKind::Cpu,
            device_count: 1,
            cores: 1,
            build_version: String::new(),
            name: "test".into(),
            collective: None,
        };
        let live = |at: Instant| Live {
            caps: caps.clone(),
            tx: tx.clone(),
            tasks: [idle.clone(), idle.clone()],
            last_seen: at,
            version: None,
            pending: 0,
        };
        // Heard from 1 s before the coordinator stopped polling, then a 6 s pause.
        let now = Instant::now();
        p.last_poll = now - Duration::from_secs(6);
        p.live.insert(0, live(now - Duration::from_secs(7)));
        p.drop_silent(None);
        assert!(p.live.contains_key(&0), "a pause of the coordinator dropped a worker");
        // Without a pause, 4 s of silence is silence.
        p.live.get_mut(&0).expect("worker").last_seen = Instant::now() - Duration::from_secs(4);
        p.drop_silent(None);
        assert!(p.live.is_empty());
        idle.abort();
    }
}
