//! NCCL: the [`Collective`] of GPU workers (one communicator member per device), behind the
//! `cuda` feature. The trait and the device-agnostic collectives live in
//! `metasched-collective`; without the feature [`NcclCollective`] is a stand-in that cannot be
//! constructed ([`CudaError::FeatureDisabled`]).

#[cfg(feature = "cuda")]
pub use imp::nccl_unique_id;
pub use imp::{NcclCollective, nccl_unique_id_bytes};

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::Arc;

    use cudarc::driver::CudaStream;
    use metasched_collective::{Collective, CollectiveError};

    use crate::CudaRuntime;
    use crate::error::{CudaError, Result};

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
        pub fn from_id_bytes(rt: &CudaRuntime, rank: usize, world_size: usize, id: &[u8]) -> Result<Self> {
            let raw: [u8; 128] = id.try_into().map_err(|_| {
                CudaError::Runtime(format!("an NCCL unique id has 128 bytes, this one {}", id.len()))
            })?;
            let internal = raw.map(|b| b as core::ffi::c_char);
            Self::new(rt, rank, world_size, cudarc::nccl::Id::uninit(internal))
        }

        /// Joins communicator `id` as `rank` of `world_size` on the runtime's device.
        pub fn new(rt: &CudaRuntime, rank: usize, world_size: usize, id: cudarc::nccl::Id) -> Result<Self> {
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

        fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> metasched_collective::Result<()> {
            let driver = |what: &str, e: String| CollectiveError::Backend {
                backend: "NCCL",
                reason: format!("{what}: {e}"),
            };
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
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use std::convert::Infallible;

    use metasched_collective::Collective;

    use crate::CudaRuntime;
    use crate::error::{CudaError, Result};

    /// An NCCL communicator member; never exists in a build without the `cuda` feature.
    #[derive(Debug)]
    pub struct NcclCollective {
        never: Infallible,
    }

    /// Always [`CudaError::FeatureDisabled`]: this build has no NCCL bindings.
    pub fn nccl_unique_id_bytes() -> Result<Vec<u8>> {
        Err(CudaError::FeatureDisabled("cuda"))
    }

    impl NcclCollective {
        /// Always [`CudaError::FeatureDisabled`]: this build has no NCCL bindings.
        pub fn from_id_bytes(_rt: &CudaRuntime, _rank: usize, _world: usize, _id: &[u8]) -> Result<Self> {
            Err(CudaError::FeatureDisabled("cuda"))
        }
    }

    impl Collective for NcclCollective {
        fn rank(&self) -> usize {
            match self.never {}
        }

        fn world_size(&self) -> usize {
            match self.never {}
        }

        fn all_reduce_sum_i64(&mut self, _data: &mut [i64]) -> metasched_collective::Result<()> {
            match self.never {}
        }
    }
}
