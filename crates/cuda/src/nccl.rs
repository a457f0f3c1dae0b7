//! NCCL: the [`Collective`] of GPU workers (one communicator member per device), behind the
//! `cuda` feature. The trait and the device-agnostic collectives live in
//! `metasched-collective`; without the feature [`NcclCollective`] is a stand-in that cannot be
//! constructed ([`CudaError::FeatureDisabled`]).
//!
//! NCCL is called through `crate::nccl_ffi` (symbols from the library the probe loaded, so
//! `libnccl.so.2` and the wheels work), not through cudarc's NCCL module. The join and every
//! all-reduce are bounded by the group's timeout and end early when the group is left (the
//! `cancel` flag): the communicator is non-blocking and aborted (`ncclCommAbort`) on either.

pub use imp::NcclCollective;

/// Ends the process at once with `code`, without exit handlers or flushing: the CUDA
/// runtime's teardown can block behind an NCCL kernel spinning on a lost peer, so a worker
/// that cannot abort its communicator (NCCL older than 2.17) leaves this way, for its
/// supervisor to restart it.
#[allow(unsafe_code)]
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` takes no pointers, touches no Rust state and never returns.
    unsafe { libc::_exit(code) }
}

/// A new NCCL unique id (128 bytes), to be shared by rank 0 with every member (through the
/// coordinator), after probing for the NCCL library. Without the `cuda` feature:
/// [`CudaError::FeatureDisabled`].
pub fn nccl_unique_id_bytes() -> crate::Result<Vec<u8>> {
    if cfg!(not(feature = "cuda")) {
        return Err(crate::CudaError::FeatureDisabled("cuda"));
    }
    Ok(crate::nccl_ffi::unique_id()?.to_vec())
}

#[cfg(feature = "cuda")]
mod imp {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use cudarc::driver::{CudaStream, DevicePtrMut};
    use metasched_collective::{Collective, CollectiveError};

    use crate::CudaRuntime;
    use crate::error::{CudaError, Result};
    use crate::nccl_ffi::{self, Communicator};

    /// A member of an NCCL communicator: one GPU (a stream of its own) of `world_size`.
    #[derive(Debug)]
    pub struct NcclCollective {
        comm: Communicator,
        stream: Arc<CudaStream>,
        timeout: Duration,
        cancel: Arc<AtomicBool>,
    }

    impl NcclCollective {
        /// Joins the communicator whose id rank 0 created ([`super::nccl_unique_id_bytes`],
        /// 128 bytes) as `rank` of `world_size` on the runtime's device. The join, and every
        /// later all-reduce, ends with an error (and `ncclCommAbort`) after `timeout` or once
        /// `cancel` is set.
        pub fn join(
            rt: &CudaRuntime,
            rank: usize,
            world_size: usize,
            id: &[u8],
            timeout: Duration,
            cancel: Arc<AtomicBool>,
        ) -> Result<Self> {
            crate::probe::nccl_available()?;
            // A stream of its own: the all-reduce neither waits for nor delays the compute
            // stream (the part sum it reduces was downloaded, and waited for, already).
            let stream = rt.new_side_stream()?;
            // ncclCommInitRank* binds the communicator to the calling thread's current device:
            // make this runtime's context current first (a group thread of a worker on cuda:1
            // would otherwise join on device 0).
            stream.context().bind_to_thread().map_err(|e| {
                CudaError::Driver(format!("cannot make cuda:{} current: {e}", stream.context().ordinal()))
            })?;
            let comm = Communicator::init_rank(id, rank, world_size, timeout, &cancel)?;
            Ok(Self { comm, stream, timeout, cancel })
        }

        /// Whether a blocked join or all-reduce of this member can be ended by its timeout or
        /// the cancel flag (NCCL >= 2.17: non-blocking communicator).
        pub fn is_abortable(&self) -> bool {
            self.comm.is_abortable()
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
            {
                let (ptr, _record) = buf.device_ptr_mut(&self.stream);
                let raw_stream = self.stream.cu_stream().cast::<std::ffi::c_void>();
                // SAFETY: `raw_stream` is this member's live stream; `ptr` is `buf`, a live
                // allocation of `data.len()` i64 on its device, which outlives the call (the
                // all-reduce is waited for before it returns).
                #[allow(unsafe_code)]
                let mut done = || unsafe { nccl_ffi::stream_done(raw_stream) };
                // SAFETY: as above.
                #[allow(unsafe_code)]
                let reduced = unsafe {
                    self.comm.all_reduce_sum_i64_in_place(
                        ptr,
                        data.len(),
                        raw_stream,
                        &mut done,
                        self.timeout,
                        &self.cancel,
                    )
                };
                reduced.map_err(|e| driver("all-reduce", e.to_string()))?;
            }
            self.stream.memcpy_dtoh(&buf, data).map_err(|e| driver("device to host copy", e.to_string()))?;
            self.stream.synchronize().map_err(|e| driver("synchronize", e.to_string()))
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use metasched_collective::Collective;

    use crate::CudaRuntime;
    use crate::error::{CudaError, Result};

    /// An NCCL communicator member; never exists in a build without the `cuda` feature.
    #[derive(Debug)]
    pub struct NcclCollective {
        never: Infallible,
    }

    impl NcclCollective {
        /// Always [`CudaError::FeatureDisabled`]: this build has no device bindings.
        pub fn join(
            _rt: &CudaRuntime,
            _rank: usize,
            _world: usize,
            _id: &[u8],
            _timeout: Duration,
            _cancel: Arc<AtomicBool>,
        ) -> Result<Self> {
            Err(CudaError::FeatureDisabled("cuda"))
        }

        /// Unreachable: no value exists.
        pub fn is_abortable(&self) -> bool {
            match self.never {}
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
