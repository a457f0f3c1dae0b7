//! Errors of the CUDA backend, real or emulated.

/// Everything a device runtime can report. The emulator's execution errors carry its full
/// message (kernel, block, threads and source lines involved).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// A launch argument does not fit the kernel's contract (type, count, value, or a buffer
    /// too short for the sizes passed).
    #[error("kernel {kernel}: invalid argument: {reason}")]
    InvalidArgument {
        /// Entry point of the kernel.
        kernel: String,
        /// What is wrong.
        reason: String,
    },
    /// The grid, block or shared-memory size cannot run the kernel.
    #[error("kernel {kernel}: invalid launch configuration: {reason}")]
    InvalidLaunch {
        /// Entry point of the kernel.
        kernel: String,
        /// What is wrong.
        reason: String,
    },
    /// A host slice and a device buffer of different lengths in a copy.
    #[error("copy between a device buffer of {buffer} elements and a host slice of {host}")]
    LengthMismatch {
        /// Elements in the device buffer.
        buffer: usize,
        /// Elements in the host slice.
        host: usize,
    },
    /// No kernel of that name is compiled into the runtime.
    #[error("unknown kernel: {0}")]
    UnknownKernel(String),
    /// Arguments passed do not match the kernel's parameter list.
    #[error("signature mismatch: {0}")]
    Signature(String),
    /// `__syncthreads()` not reached by every live thread of a block (some exited, or wait at
    /// another barrier or warp collective).
    #[error("{0}")]
    DivergentBarrier(String),
    /// A warp collective (`__shfl*_sync`, `__ballot_sync`, `__syncwarp`) whose mask names a
    /// lane that has exited or does not exist.
    #[error("{0}")]
    ExitedLane(String),
    /// Threads that wait for each other forever.
    #[error("{0}")]
    Deadlock(String),
    /// Shared memory over the per-block limit, or written past the end of an array.
    #[error("{0}")]
    SharedMemory(String),
    /// A warp collective used against its rules (width, own lane missing from the mask).
    #[error("{0}")]
    WarpUsage(String),
    /// The kernel called `__trap()`.
    #[error("{0}")]
    Trap(String),
    /// A shared library the backend needs (NVRTC, the CUDA driver) could not be loaded.
    #[error("{library} not found (tried {tried}): {reason}; {hint}")]
    LibraryMissing {
        /// The library, e.g. `libnvrtc.so.12`.
        library: String,
        /// The names and paths tried, comma-separated.
        tried: String,
        /// The loader's error for the last attempt.
        reason: String,
        /// How to install it.
        hint: String,
    },
    /// The CUDA driver was loaded but failed (`cuInit`, device queries).
    #[error("CUDA driver: {0}")]
    Driver(String),
    /// NVRTC rejected a kernel source; `log` is its full compiler log.
    #[error("NVRTC could not compile {file} for {arch}: {status}\n{log}")]
    Compile {
        /// Source file name.
        file: String,
        /// Target architecture (`sm_80`, ...).
        arch: String,
        /// NVRTC's status.
        status: String,
        /// The full compiler log.
        log: String,
    },
    /// This build of the crate lacks the cargo feature the call needs (`cuda`: cudarc, NVRTC,
    /// NCCL); the stand-ins of [`crate::CudaRuntime`] and [`crate::NcclCollective`] return it
    /// so that CPU-only builds compile and fail clearly at run time.
    #[error("built without the `{0}` feature of metasched-cuda")]
    FeatureDisabled(&'static str),
    /// A precompiled kernels directory (`--kernels`, `$METASCHED_KERNELS_DIR`) that cannot be
    /// used: no manifest, a stale or modified file, or a file the driver refuses; one line
    /// naming the file (and the versions involved).
    #[error("{0}")]
    Kernels(String),
    /// A captured graph cannot be replayed: its runtime records no graphs, the operation is
    /// not allowed while a capture is under way (an upload, a download, a wait, an
    /// allocation), or a buffer the graph was captured with is not among the buffers handed
    /// to the replay (a replay would use stale pointers; recapture instead).
    #[error("graph: {0}")]
    Graph(String),
    /// The runtime itself failed (out of memory, internal error).
    #[error("device runtime failure: {0}")]
    Runtime(String),
}

/// Result of the CUDA backend.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;
