//! A worker's membership in a reduction group: the collective (NCCL on a GPU, the TCP stand-in
//! on the emulated device) lives on a thread of its own — an NCCL communicator may not move
//! between threads — and jobs hand it their part sums to all-reduce.
//!
//! Protocol side (see `metasched_proto::message`): rank 0 creates the communicator id
//! ([`create_id`]), every member joins with it ([`GroupHandle::join`], collective: it returns
//! once every member joined or the timeout passed), each grouped job all-reduces its part's
//! fixed-point limbs ([`GroupHandle::all_reduce`]), and a lost member makes the coordinator
//! send `LeaveGroup` ([`GroupHandle::leave`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use metasched_collective::tcp::{self, Aborter, Rendezvous, TcpCollective};
use metasched_collective::{Collective, CollectiveError};
use metasched_compute::Compute;
use metasched_proto::CollectiveKind;

use crate::error::{Result, WorkerError};

/// Rank 0's state between creating an id and joining with it.
#[derive(Debug)]
pub enum Created {
    /// The TCP stand-in's listening socket.
    Tcp(Rendezvous),
    /// NCCL keeps its own state; nothing to carry.
    Nccl,
}

/// The collective this worker offers for `compute`: NCCL on a GPU when the library is present,
/// the TCP stand-in on the emulator, none on the CPU engine (the coordinator reduces).
pub fn offered(compute: &Compute) -> Option<CollectiveKind> {
    match compute {
        Compute::Cpu(_) => None,
        Compute::Emu(_) => Some(CollectiveKind::Tcp),
        Compute::Cuda(_) => metasched_cuda::probe::nccl_available().ok().map(|_| CollectiveKind::Nccl),
    }
}

/// Creates a communicator id as rank 0 (`ip`: the address peers reach this worker at).
pub fn create_id(kind: CollectiveKind, ip: IpAddr) -> Result<(Vec<u8>, Created)> {
    match kind {
        CollectiveKind::Tcp => {
            let (id, rv) = tcp::create(ip)?;
            Ok((id, Created::Tcp(rv)))
        }
        CollectiveKind::Nccl => Ok((metasched_cuda::nccl::nccl_unique_id_bytes()?, Created::Nccl)),
    }
}

/// How long [`GroupHandle::leave`] waits for a cancelled join or all-reduce to end.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// What the member thread is doing, for [`GroupHandle::leave`] to tell whether it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Joining the communicator.
    Joining,
    /// Waiting for an all-reduce request.
    Idle,
    /// In an all-reduce.
    InFlight,
    /// The thread ended.
    Done,
}

/// The member thread's [`Busy`] state and whether its blocking calls honour the cancel flag.
#[derive(Debug)]
struct Activity {
    state: Mutex<(Busy, bool)>,
    changed: Condvar,
}

impl Activity {
    fn set(&self, busy: Busy) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0 = busy;
        self.changed.notify_all();
    }

    fn set_abortable(&self, abortable: bool) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 = abortable;
    }
}

type Reply = mpsc::Sender<Result<Vec<i64>>>;
/// An all-reduce request: the limbs and where to send the result.
type Request = (Vec<i64>, Reply);

/// A joined (or joining) group member, driven from its own thread.
#[derive(Debug)]
pub struct GroupHandle {
    /// Group id (the coordinator's).
    pub group: u64,
    /// This worker's rank.
    pub rank: usize,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    aborter: Arc<Mutex<Option<Aborter>>>,
    cancel: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

/// What a join needs, in one value.
#[derive(Debug)]
pub struct JoinSpec {
    /// Group id.
    pub group: u64,
    /// Communicator id from rank 0.
    pub id: Vec<u8>,
    /// This worker's rank.
    pub rank: usize,
    /// Members.
    pub world: usize,
    /// Bound of the join and of every all-reduce.
    pub timeout: Duration,
}

impl GroupHandle {
    /// Starts the member thread, which joins and then serves all-reduces; `on_joined` is
    /// called on that thread with the join's outcome (to tell the coordinator).
    pub fn join(
        kind: CollectiveKind,
        spec: JoinSpec,
        created: Option<Created>,
        compute: Arc<Compute>,
        on_joined: impl FnOnce(Result<()>) + Send + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let aborter = Arc::new(Mutex::new(None));
        let cancel = Arc::new(AtomicBool::new(false));
        // Both joins (TCP and NCCL >= 2.17) honour the cancel flag and the timeout.
        let activity =
            Arc::new(Activity { state: Mutex::new((Busy::Joining, true)), changed: Condvar::new() });
        let handle = Self {
            group: spec.group,
            rank: spec.rank,
            requests: Mutex::new(Some(tx)),
            aborter: Arc::clone(&aborter),
            cancel: Arc::clone(&cancel),
            activity: Arc::clone(&activity),
        };
        let thread_activity = Arc::clone(&activity);
        let spawn = std::thread::Builder::new().name(format!("group-{}", spec.group)).spawn(move || {
            let activity = thread_activity;
            // Marks the thread ended however it returns.
            struct EndGuard(Arc<Activity>);
            impl Drop for EndGuard {
                fn drop(&mut self) {
                    self.0.set(Busy::Done);
                }
            }
            let _end = EndGuard(Arc::clone(&activity));
            let member: Result<Box<dyn Collective>> = match (kind, created) {
                (CollectiveKind::Tcp, created) => {
                    let rv = match created {
                        Some(Created::Tcp(rv)) => Some(rv),
                        _ => None,
                    };
                    TcpCollective::join_cancellable(
                        &spec.id,
                        spec.rank,
                        spec.world,
                        rv,
                        spec.timeout,
                        &cancel,
                    )
                    .and_then(|m| {
                        *aborter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                            Some(m.aborter()?);
                        Ok(Box::new(m) as Box<dyn Collective>)
                    })
                    .map_err(WorkerError::from)
                }
                (CollectiveKind::Nccl, _) => match compute.as_ref() {
                    Compute::Cuda(rt) => metasched_cuda::NcclCollective::join(
                        rt,
                        spec.rank,
                        spec.world,
                        &spec.id,
                        spec.timeout,
                        Arc::clone(&cancel),
                    )
                    .map(|m| {
                        // An NCCL older than 2.17 has only blocking calls.
                        activity.set_abortable(m.is_abortable());
                        Box::new(m) as Box<dyn Collective>
                    })
                    .map_err(WorkerError::from),
                    _ => Err(WorkerError::Collective(CollectiveError::Unavailable(
                        "NCCL needs a CUDA device".into(),
                    ))),
                },
            };
            let mut member = match member {
                Ok(m) => {
                    activity.set(Busy::Idle);
                    on_joined(Ok(()));
                    m
                }
                Err(e) => {
                    activity.set(Busy::Done);
                    on_joined(Err(e));
                    return;
                }
            };
            while let Ok((mut data, reply)) = rx.recv() {
                activity.set(Busy::InFlight);
                let out = member.all_reduce_sum_i64(&mut data).map(|_| data).map_err(WorkerError::from);
                activity.set(Busy::Idle);
                let failed = out.is_err();
                let _ = reply.send(out);
                if failed {
                    return; // a failed collective is not reused
                }
            }
        });
        if let Err(e) = spawn {
            tracing::error!("cannot start the group thread: {e}");
            handle.close();
        }
        handle
    }

    /// All-reduces `data` (fixed-point limbs) across the group; blocks until every member
    /// contributed, the timeout passed, or the group was left.
    pub fn all_reduce(&self, data: Vec<i64>) -> Result<Vec<i64>> {
        let (tx, rx) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(|r| r.send((data, tx)).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(WorkerError::Collective(CollectiveError::Unavailable(format!(
                "group {} is closed",
                self.group
            ))));
        }
        rx.recv().unwrap_or_else(|_| {
            Err(WorkerError::Collective(CollectiveError::Unavailable(format!("group {} failed", self.group))))
        })
    }

    fn close(&self) {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }

    /// Leaves the group: no further all-reduce is accepted, and a join or all-reduce in
    /// progress is cancelled (TCP: its sockets are shut down or its accept/connect loop stops;
    /// NCCL >= 2.17: the non-blocking communicator is aborted with `ncclCommAbort`). Returns
    /// `true` once the member thread is no longer joining or all-reducing (waiting at most
    /// [`LEAVE_GRACE`]), `false` if it is still blocked after that (an NCCL older than 2.17,
    /// whose calls cannot be aborted): the worker should then exit, without running exit
    /// handlers while NCCL's threads spin (`libc::_exit`), to be restarted by its supervisor.
    pub fn leave(&self) -> bool {
        self.close();
        self.cancel.store(true, Ordering::SeqCst);
        if let Some(a) = self.aborter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            a.abort();
        }
        let state = self.activity.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (state, _) = self
            .activity
            .changed
            .wait_timeout_while(state, LEAVE_GRACE, |(busy, abortable)| {
                *abortable && matches!(busy, Busy::Joining | Busy::InFlight)
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !matches!(state.0, Busy::Joining | Busy::InFlight)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A join whose peer never comes is cancelled by `leave`, which returns only once the
    /// member stopped (so `true` is no longer said of a member still joining).
    #[test]
    fn leaving_cancels_a_stuck_join_and_waits_for_it() {
        let compute = Arc::new(Compute::open(metasched_compute::Device::Cpu, 1).expect("cpu"));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let (id, created) = create_id(CollectiveKind::Tcp, ip).expect("id");
        let (tx, rx) = mpsc::channel();
        let spec = JoinSpec { group: 7, id, rank: 0, world: 2, timeout: Duration::from_secs(600) };
        let h = GroupHandle::join(CollectiveKind::Tcp, spec, Some(created), compute, move |r| {
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        assert!(h.leave(), "the join was cancelled");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        let joined = rx.recv_timeout(Duration::from_secs(1)).expect("on_joined was called");
        assert!(joined.expect_err("cancelled").contains("cancelled"));
        assert!(h.all_reduce(vec![1]).is_err(), "a left group takes no work");
    }
}
