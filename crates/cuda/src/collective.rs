//! Collectives between the workers of one meta-step: the sum of integer vectors (fixed-point
//! limbs of [`metasched_engine::fixed_sum`] sums), exact and independent of the order of
//! arrival. [`InProcessGroup`] implements it between threads (for tests and single-host
//! runs); [`NcclCollective`] between GPUs through NCCL.

use std::sync::{Arc, Barrier, Mutex};

use cudarc::driver::CudaStream;

use crate::error::{CudaError, Result};

/// One member of a group that sums vectors across its members.
pub trait Collective {
    /// This member's index in `0..world_size()`.
    fn rank(&self) -> usize;

    /// Members in the group.
    fn world_size(&self) -> usize;

    /// Replaces `data` with the elementwise sum (wrapping, so exact and order-independent) of
    /// every member's `data`. Every member must call it with the same length.
    fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> Result<()>;
}

#[derive(Debug, Default)]
struct Shared {
    sum: Vec<i64>,
    len: Option<usize>,
    mismatch: bool,
}

/// A member of a group of threads of one process ([`InProcessGroup::new`] makes them all).
#[derive(Debug)]
pub struct InProcessGroup {
    rank: usize,
    world: usize,
    shared: Arc<Mutex<Shared>>,
    barrier: Arc<Barrier>,
}

impl InProcessGroup {
    /// The `world` members of a new group, rank `i` at index `i` (move each to its thread).
    pub fn new(world: usize) -> Vec<Self> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let barrier = Arc::new(Barrier::new(world.max(1)));
        (0..world)
            .map(|rank| Self { rank, world, shared: Arc::clone(&shared), barrier: Arc::clone(&barrier) })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A member that panicked while holding the lock left a consistent state (plain adds).
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Collective for InProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> Result<()> {
        {
            let mut s = self.lock();
            match s.len {
                None => {
                    s.len = Some(data.len());
                    s.sum = vec![0; data.len()];
                }
                Some(n) if n != data.len() => s.mismatch = true,
                Some(_) => {}
            }
            for (acc, &x) in s.sum.iter_mut().zip(data.iter()) {
                *acc = acc.wrapping_add(x);
            }
        }
        self.barrier.wait();
        let result = {
            let s = self.lock();
            if s.mismatch {
                Err(CudaError::Runtime(format!(
                    "all_reduce_sum_i64: members passed different lengths (rank {} passed {})",
                    self.rank,
                    data.len()
                )))
            } else {
                data.copy_from_slice(&s.sum);
                Ok(())
            }
        };
        if self.barrier.wait().is_leader() {
            *self.lock() = Shared::default();
        }
        self.barrier.wait();
        result
    }
}

/// A member of an NCCL communicator: one GPU (its stream) of `world_size`.
#[derive(Debug)]
pub struct NcclCollective {
    comm: cudarc::nccl::Comm,
    stream: Arc<CudaStream>,
}

/// A new NCCL unique id, to be shared by rank 0 with every member (through the coordinator),
/// after probing for the NCCL library.
pub fn nccl_unique_id() -> Result<cudarc::nccl::Id> {
    crate::probe::nccl_available()?;
    cudarc::nccl::Id::new().map_err(|e| CudaError::Driver(format!("ncclGetUniqueId: {e:?}")))
}

/// A new NCCL unique id as the bytes the coordinator hands to every member.
pub fn nccl_unique_id_bytes() -> Result<Vec<u8>> {
    Ok(nccl_unique_id()?.internal().iter().map(|&c| c as u8).collect())
}

impl NcclCollective {
    /// Joins the communicator whose id rank 0 created ([`nccl_unique_id_bytes`]) as `rank` of
    /// `world_size`; `id` must be the 128 bytes of an `ncclUniqueId`.
    pub fn from_id_bytes(rt: &crate::CudaRuntime, rank: usize, world_size: usize, id: &[u8]) -> Result<Self> {
        let raw: [u8; 128] = id.try_into().map_err(|_| {
            CudaError::Runtime(format!("an NCCL unique id has 128 bytes, this one {}", id.len()))
        })?;
        let internal = raw.map(|b| b as core::ffi::c_char);
        Self::new(rt, rank, world_size, cudarc::nccl::Id::uninit(internal))
    }

    /// Joins communicator `id` as `rank` of `world_size` on the runtime's device.
    pub fn new(
        rt: &crate::CudaRuntime,
        rank: usize,
        world_size: usize,
        id: cudarc::nccl::Id,
    ) -> Result<Self> {
        crate::probe::nccl_available()?;
        let stream = rt.stream();
        // ncclCommInitRank binds the communicator to the calling thread's current device, and
        // cudarc's `from_rank` does not set it: make this runtime's context current first (a
        // group thread of a worker on cuda:1 would otherwise join on device 0).
        stream.context().bind_to_thread().map_err(|e| {
            CudaError::Driver(format!("cannot make cuda:{} current: {e}", stream.context().ordinal()))
        })?;
        let comm = cudarc::nccl::Comm::from_rank(Arc::clone(&stream), rank, world_size, id)
            .map_err(|e| CudaError::Driver(format!("ncclCommInitRank: {e:?}")))?;
        Ok(Self { comm, stream })
    }
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> Result<()> {
        let driver = |what: &str, e: String| CudaError::Driver(format!("{what}: {e}"));
        self.stream.context().bind_to_thread().map_err(|e| driver("bind the context", e.to_string()))?;
        let mut buf =
            self.stream.clone_htod(data).map_err(|e| driver("host to device copy", e.to_string()))?;
        self.comm
            .all_reduce_in_place(&mut buf, &cudarc::nccl::ReduceOp::Sum)
            .map_err(|e| driver("ncclAllReduce", format!("{e:?}")))?;
        self.stream.memcpy_dtoh(&buf, data).map_err(|e| driver("device to host copy", e.to_string()))?;
        self.stream.synchronize().map_err(|e| driver("synchronize", e.to_string()))
    }
}
