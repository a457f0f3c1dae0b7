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
use std::sync::{Arc, Mutex, mpsc};
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
    kind: CollectiveKind,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    aborter: Arc<Mutex<Option<Aborter>>>,
    in_flight: Arc<AtomicBool>,
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
        let in_flight = Arc::new(AtomicBool::new(false));
        let handle = Self {
            group: spec.group,
            rank: spec.rank,
            kind,
            requests: Mutex::new(Some(tx)),
            aborter: Arc::clone(&aborter),
            in_flight: Arc::clone(&in_flight),
        };
        let spawn = std::thread::Builder::new().name(format!("group-{}", spec.group)).spawn(move || {
            let member: Result<Box<dyn Collective>> = match (kind, created) {
                (CollectiveKind::Tcp, created) => {
                    let rv = match created {
                        Some(Created::Tcp(rv)) => Some(rv),
                        _ => None,
                    };
                    TcpCollective::join(&spec.id, spec.rank, spec.world, rv, spec.timeout)
                        .and_then(|m| {
                            *aborter.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(m.aborter()?);
                            Ok(Box::new(m) as Box<dyn Collective>)
                        })
                        .map_err(WorkerError::from)
                }
                (CollectiveKind::Nccl, _) => match compute.as_ref() {
                    Compute::Cuda(rt) => {
                        metasched_cuda::NcclCollective::from_id_bytes(rt, spec.rank, spec.world, &spec.id)
                            .map(|m| Box::new(m) as Box<dyn Collective>)
                            .map_err(WorkerError::from)
                    }
                    _ => Err(WorkerError::Collective(CollectiveError::Unavailable(
                        "NCCL needs a CUDA device".into(),
                    ))),
                },
            };
            let mut member = match member {
                Ok(m) => {
                    on_joined(Ok(()));
                    m
                }
                Err(e) => {
                    on_joined(Err(e));
                    return;
                }
            };
            while let Ok((mut data, reply)) = rx.recv() {
                in_flight.store(true, Ordering::SeqCst);
                let out = member.all_reduce_sum_i64(&mut data).map(|_| data).map_err(WorkerError::from);
                in_flight.store(false, Ordering::SeqCst);
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

    /// Leaves the group: no further all-reduce is accepted and one blocked on a lost member
    /// is aborted (TCP: its sockets are shut down). An NCCL all-reduce cannot be aborted from
    /// outside (cudarc's `Comm` aborts only when dropped, and it is borrowed by the blocked
    /// call), so a worker blocked in one returns `false` here and should exit to be
    /// restarted by its supervisor.
    pub fn leave(&self) -> bool {
        self.close();
        if let Some(a) = self.aborter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            a.abort();
        }
        !(self.kind == CollectiveKind::Nccl && self.in_flight.load(Ordering::SeqCst))
    }
}
