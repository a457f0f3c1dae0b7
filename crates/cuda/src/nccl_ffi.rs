//! Our own binding of the few NCCL functions metasched uses, resolved from the library that
//! [`crate::probe::nccl_available`] loaded.
//!
//! Why not cudarc's: cudarc 0.19 `dlopen()`s NCCL by the names of `get_lib_name_candidates`
//! (`libnccl.so`, `libnccl.so.12/.11/.10/.9/.1`, ...), never `libnccl.so.2`, the soname every
//! NCCL package and the `nvidia-nccl-cu12/cu13` wheels install, and panics when none loads. It
//! reads no environment variable, so it cannot be pointed at the library the probe found. The
//! symbols here come from the probe's own handle instead, so whatever the probe loaded (by
//! name, from `METASCHED_NCCL_LIB_DIR` or from the wheel's directory) is what runs.
//!
//! Semantics follow `nccl.h` (NCCL >= 2.17 for the non-blocking path):
//! - a communicator is created with `ncclCommInitRankConfig` and `config.blocking = 0`, so the
//!   call returns `ncclInProgress` at once and `ncclCommGetAsyncError` is polled until it says
//!   `ncclSuccess`; a deadline, a cancellation or an error ends the wait with `ncclCommAbort`;
//! - an all-reduce is enqueued (`ncclAllReduce`, which may itself return `ncclInProgress`) and
//!   then waited for by polling the stream and `ncclCommGetAsyncError` together, again with
//!   `ncclCommAbort` on a deadline, a cancellation or an asynchronous error (NCCL's documented
//!   fault-tolerance loop);
//! - an older NCCL (no `ncclCommInitRankConfig`) gets the blocking `ncclCommInitRank`, which no
//!   deadline can bound; [`Communicator::is_abortable`] says so.
//!
//! Every error carries NCCL's numeric code, its `ncclResult_t` name and `ncclGetErrorString`
//! (and `ncclGetLastError` where present).
//!
//! Like [`crate::probe`] and [`crate::ffi`], this module is allowed `unsafe`: it calls C.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{CudaError, Result};

/// Bytes of an `ncclUniqueId` (`NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = 128;

const NCCL_SUCCESS: c_int = 0;
const NCCL_IN_PROGRESS: c_int = 7;
/// `ncclInt64`.
const NCCL_INT64: c_int = 4;
/// `ncclSum`.
const NCCL_SUM: c_int = 0;
/// `NCCL_CONFIG_INITIALIZER`'s magic.
const CONFIG_MAGIC: u32 = 0xcafe_beef;
/// `NCCL_CONFIG_UNDEF_INT`.
const CONFIG_UNDEF_INT: c_int = c_int::MIN;
/// `NCCL_VERSION(2, 17, 0)`: the release whose `ncclConfig_t` ([`Config`]) this is. Newer NCCL
/// reads `size` bytes of it and defaults the fields it lacks.
const CONFIG_VERSION: u32 = 21700;
/// How often a wait polls `ncclCommGetAsyncError` and the stream.
const POLL: Duration = Duration::from_millis(1);

/// `ncclUniqueId`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; UNIQUE_ID_BYTES],
}

/// `ncclConfig_v21700` of `nccl.h`.
#[repr(C)]
struct Config {
    size: usize,
    magic: u32,
    version: u32,
    blocking: c_int,
    cga_cluster_size: c_int,
    min_ctas: c_int,
    max_ctas: c_int,
    net_name: *const c_char,
    split_share: c_int,
}

type RawComm = *mut c_void;
type GetVersionFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type GetUniqueIdFn = unsafe extern "C" fn(*mut UniqueId) -> c_int;
type CommInitRankFn = unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int) -> c_int;
type CommInitRankConfigFn = unsafe extern "C" fn(*mut RawComm, c_int, UniqueId, c_int, *mut Config) -> c_int;
type CommGetAsyncErrorFn = unsafe extern "C" fn(RawComm, *mut c_int) -> c_int;
type CommFn = unsafe extern "C" fn(RawComm) -> c_int;
type AllReduceFn =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, RawComm, *mut c_void) -> c_int;
type GetErrorStringFn = unsafe extern "C" fn(c_int) -> *const c_char;
type GetLastErrorFn = unsafe extern "C" fn(RawComm) -> *const c_char;

/// The resolved entry points (function pointers out of the probe's never-unloaded handle).
struct Api {
    version: i32,
    get_unique_id: GetUniqueIdFn,
    comm_init_rank: CommInitRankFn,
    comm_destroy: CommFn,
    all_reduce: AllReduceFn,
    get_error_string: Option<GetErrorStringFn>,
    get_last_error: Option<GetLastErrorFn>,
    /// The non-blocking API (NCCL >= 2.14 has the symbols; the config layout used is 2.17's).
    nonblocking: Option<(CommInitRankConfigFn, CommGetAsyncErrorFn, CommFn)>,
}

/// `ncclResult_t`'s name for `code`.
pub fn result_name(code: i32) -> &'static str {
    match code {
        0 => "ncclSuccess",
        1 => "ncclUnhandledCudaError",
        2 => "ncclSystemError",
        3 => "ncclInternalError",
        4 => "ncclInvalidArgument",
        5 => "ncclInvalidUsage",
        6 => "ncclRemoteError",
        7 => "ncclInProgress",
        _ => "unknown ncclResult_t",
    }
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    let lib = crate::probe::nccl_library()?;
    API.get_or_init(|| resolve(lib)).as_ref().map_err(|e| CudaError::Driver(e.clone()))
}

fn resolve(lib: &'static libloading::Library) -> std::result::Result<Api, String> {
    fn sym<F: Copy>(lib: &'static libloading::Library, name: &str) -> Option<F> {
        let c = format!("{name}\0");
        // SAFETY: each name is looked up with the C signature `nccl.h` declares for it (the
        // type aliases above); the library stays loaded for the life of the process.
        unsafe { lib.get::<F>(c.as_bytes()).ok().map(|s| *s) }
    }
    fn need<F: Copy>(lib: &'static libloading::Library, name: &str) -> std::result::Result<F, String> {
        sym(lib, name).ok_or_else(|| format!("the NCCL library lacks {name}"))
    }
    let get_version: GetVersionFn = need(lib, "ncclGetVersion")?;
    let mut version: c_int = 0;
    // SAFETY: ncclGetVersion writes one int.
    let rc = unsafe { get_version(&mut version) };
    if rc != NCCL_SUCCESS {
        return Err(format!("ncclGetVersion failed: {} ({rc})", result_name(rc)));
    }
    let nonblocking = if version >= CONFIG_VERSION as i32 {
        match (
            sym(lib, "ncclCommInitRankConfig"),
            sym(lib, "ncclCommGetAsyncError"),
            sym(lib, "ncclCommAbort"),
        ) {
            (Some(a), Some(b), Some(c)) => Some((a, b, c)),
            _ => None,
        }
    } else {
        None
    };
    Ok(Api {
        version,
        get_unique_id: need(lib, "ncclGetUniqueId")?,
        comm_init_rank: need(lib, "ncclCommInitRank")?,
        comm_destroy: need(lib, "ncclCommDestroy")?,
        all_reduce: need(lib, "ncclAllReduce")?,
        get_error_string: sym(lib, "ncclGetErrorString"),
        get_last_error: sym(lib, "ncclGetLastError"),
        nonblocking,
    })
}

/// Why an NCCL call failed, with NCCL's own code: `"<call> failed: <name> (<code>): <text>"`.
fn nccl_error(api: &Api, call: &str, code: c_int, comm: RawComm) -> CudaError {
    let mut text = String::new();
    if let Some(f) = api.get_error_string {
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string (or NULL).
        let p = unsafe { f(code) };
        if !p.is_null() {
            // SAFETY: non-null, NUL-terminated, static.
            text = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        }
    }
    if let Some(f) = api.get_last_error {
        // SAFETY: ncclGetLastError accepts NULL or a communicator and returns a NUL-terminated
        // string owned by NCCL (or NULL); it is copied at once.
        let p = unsafe { f(comm) };
        if !p.is_null() {
            // SAFETY: as above.
            let last = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
            if !last.is_empty() {
                text = if text.is_empty() { last } else { format!("{text}; {last}") };
            }
        }
    }
    CudaError::Driver(format!("{call} failed: {} ({code}){}", result_name(code), sep(&text)))
}

fn sep(text: &str) -> String {
    if text.is_empty() { String::new() } else { format!(": {text}") }
}

/// The loaded NCCL's version (`ncclGetVersion`, e.g. 22304 for 2.23.4).
pub fn version() -> Result<i32> {
    Ok(api()?.version)
}

/// A new `ncclUniqueId` (rank 0 creates it; every member joins with it).
pub fn unique_id() -> Result<[u8; UNIQUE_ID_BYTES]> {
    let api = api()?;
    let mut id = UniqueId { internal: [0; UNIQUE_ID_BYTES] };
    // SAFETY: ncclGetUniqueId writes one ncclUniqueId.
    let rc = unsafe { (api.get_unique_id)(&mut id) };
    if rc != NCCL_SUCCESS {
        return Err(nccl_error(api, "ncclGetUniqueId", rc, std::ptr::null_mut()));
    }
    Ok(id.internal.map(|c| c as u8))
}

/// Why a wait ended early.
fn stopped(cancel: &AtomicBool, deadline: Instant) -> Option<&'static str> {
    if cancel.load(Ordering::SeqCst) {
        Some("cancelled (the group was left)")
    } else if Instant::now() >= deadline {
        Some("deadline passed")
    } else {
        None
    }
}

/// One member of an NCCL communicator. Dropping it aborts (non-blocking) or destroys (blocking)
/// the communicator.
#[derive(Debug)]
pub struct Communicator {
    comm: RawComm,
    rank: usize,
    world: usize,
    nonblocking: bool,
}

// SAFETY: an NCCL communicator may be used from any one thread at a time; `Communicator` is
// not `Sync` and every call takes `&mut self` or `self`.
unsafe impl Send for Communicator {}

impl Communicator {
    /// Joins communicator `id` as `rank` of `world` on the calling thread's current CUDA
    /// device. With NCCL >= 2.17 the join is non-blocking and ends, with `ncclCommAbort`,
    /// after `timeout` or once `cancel` is set; with an older NCCL it blocks (see
    /// [`Communicator::is_abortable`]).
    pub fn init_rank(
        id: &[u8],
        rank: usize,
        world: usize,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<Self> {
        let api = api()?;
        let raw: [u8; UNIQUE_ID_BYTES] = id.try_into().map_err(|_| {
            CudaError::Runtime(format!(
                "an NCCL unique id has {UNIQUE_ID_BYTES} bytes, this one {}",
                id.len()
            ))
        })?;
        let id = UniqueId { internal: raw.map(|b| b as c_char) };
        let (nranks, r) = match (c_int::try_from(world), c_int::try_from(rank)) {
            (Ok(n), Ok(r)) => (n, r),
            _ => return Err(CudaError::Runtime(format!("rank {rank} of {world} does not fit NCCL's int"))),
        };
        let deadline = Instant::now() + timeout;
        let mut comm: RawComm = std::ptr::null_mut();
        let Some((init_config, get_async, abort)) = api.nonblocking else {
            // SAFETY: ncclCommInitRank writes one communicator handle; id is passed by value.
            let rc = unsafe { (api.comm_init_rank)(&mut comm, nranks, id, r) };
            if rc != NCCL_SUCCESS {
                return Err(nccl_error(api, "ncclCommInitRank", rc, comm));
            }
            return Ok(Self { comm, rank, world, nonblocking: false });
        };
        let mut config = Config {
            size: std::mem::size_of::<Config>(),
            magic: CONFIG_MAGIC,
            version: CONFIG_VERSION,
            blocking: 0,
            cga_cluster_size: CONFIG_UNDEF_INT,
            min_ctas: CONFIG_UNDEF_INT,
            max_ctas: CONFIG_UNDEF_INT,
            net_name: std::ptr::null(),
            split_share: CONFIG_UNDEF_INT,
        };
        // SAFETY: writes one handle; `config` outlives the call (NCCL copies it).
        let rc = unsafe { init_config(&mut comm, nranks, id, r, &mut config) };
        let this = Self { comm, rank, world, nonblocking: true };
        if rc != NCCL_SUCCESS && rc != NCCL_IN_PROGRESS {
            let e = nccl_error(api, "ncclCommInitRankConfig", rc, comm);
            this.abort_with(abort);
            return Err(e);
        }
        match wait_async(get_async, comm, None, deadline, cancel) {
            Ok(()) => Ok(this),
            Err(why) => {
                // The message first: ncclGetLastError may look at the communicator.
                let e = match why {
                    Waited::Failed(code) => {
                        nccl_error(api, "ncclCommInitRankConfig (asynchronous)", code, comm)
                    }
                    Waited::Stream(e) => CudaError::Driver(e),
                    Waited::Stopped(reason) => CudaError::Driver(format!(
                        "ncclCommInitRankConfig: rank {rank} of {world} not joined: {reason} after {:.1} s; \
                         communicator aborted (ncclCommAbort)",
                        timeout.as_secs_f64()
                    )),
                };
                this.abort_with(abort);
                Err(e)
            }
        }
    }

    /// This member's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Members.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Whether a wait on this communicator can be ended by a deadline or a cancellation
    /// (non-blocking communicator, NCCL >= 2.17).
    pub fn is_abortable(&self) -> bool {
        self.nonblocking
    }

    /// `ncclAllReduce(ptr, ptr, count, ncclInt64, ncclSum, comm, stream)` in place, then waits
    /// until `done()` says the stream finished, polling `ncclCommGetAsyncError`. A deadline,
    /// a cancellation or an asynchronous error aborts the communicator (consuming it: the
    /// error is returned and the communicator is gone).
    ///
    /// # Safety
    /// `ptr` must be a live device allocation of at least `count` i64 on the communicator's
    /// device, `stream` a live stream of that device's context, and neither may be freed
    /// before this returns.
    pub unsafe fn all_reduce_sum_i64_in_place(
        &mut self,
        ptr: u64,
        count: usize,
        stream: *mut c_void,
        done: &mut dyn FnMut() -> std::result::Result<bool, String>,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<()> {
        let api = api()?;
        if self.comm.is_null() {
            return Err(CudaError::Driver("the NCCL communicator was aborted".into()));
        }
        let deadline = Instant::now() + timeout;
        let buf = ptr as usize as *mut c_void;
        // SAFETY: the caller guarantees `ptr`/`count`/`stream` (see above).
        let rc = unsafe { (api.all_reduce)(buf, buf, count, NCCL_INT64, NCCL_SUM, self.comm, stream) };
        if rc != NCCL_SUCCESS && rc != NCCL_IN_PROGRESS {
            let e = nccl_error(api, "ncclAllReduce", rc, self.comm);
            self.abort();
            return Err(e);
        }
        let Some((_, get_async, _)) = api.nonblocking else {
            // Blocking communicator: the stream is waited for without a bound.
            loop {
                match done() {
                    Ok(true) => return Ok(()),
                    Ok(false) => std::thread::sleep(POLL),
                    Err(e) => return Err(CudaError::Driver(format!("after ncclAllReduce: {e}"))),
                }
            }
        };
        match wait_async(get_async, self.comm, Some(done), deadline, cancel) {
            Ok(()) => Ok(()),
            Err(why) => {
                let comm = self.comm;
                let e = match why {
                    Waited::Failed(code) => nccl_error(api, "ncclAllReduce (asynchronous)", code, comm),
                    Waited::Stream(e) => CudaError::Driver(format!("after ncclAllReduce: {e}")),
                    Waited::Stopped(reason) => CudaError::Driver(format!(
                        "ncclAllReduce: {reason} after {:.1} s; communicator aborted (ncclCommAbort)",
                        timeout.as_secs_f64()
                    )),
                };
                self.abort();
                Err(e)
            }
        }
    }

    /// Aborts the communicator now (`ncclCommAbort`; `ncclCommDestroy` for a blocking one).
    pub fn abort(&mut self) {
        let comm = std::mem::replace(&mut self.comm, std::ptr::null_mut());
        if comm.is_null() {
            return;
        }
        if let Ok(api) = api() {
            match api.nonblocking {
                // SAFETY: `comm` is a live communicator handle, released exactly once here.
                Some((_, _, abort)) => unsafe {
                    abort(comm);
                },
                // SAFETY: as above.
                None => unsafe {
                    (api.comm_destroy)(comm);
                },
            }
        }
    }

    fn abort_with(mut self, abort: CommFn) {
        let comm = std::mem::replace(&mut self.comm, std::ptr::null_mut());
        if !comm.is_null() {
            // SAFETY: a handle returned by ncclCommInitRankConfig, released exactly once here.
            unsafe {
                abort(comm);
            }
        }
    }
}

impl Drop for Communicator {
    fn drop(&mut self) {
        self.abort();
    }
}

enum Waited {
    /// `ncclCommGetAsyncError` reported this code.
    Failed(c_int),
    /// A deadline or a cancellation.
    Stopped(&'static str),
    /// The stream query failed.
    Stream(String),
}

/// Polls `ncclCommGetAsyncError` (and `done`, once NCCL is no longer in progress) until both
/// say finished, an error, the deadline or a cancellation.
fn wait_async(
    get_async: CommGetAsyncErrorFn,
    comm: RawComm,
    mut done: Option<&mut dyn FnMut() -> std::result::Result<bool, String>>,
    deadline: Instant,
    cancel: &AtomicBool,
) -> std::result::Result<(), Waited> {
    loop {
        let mut state: c_int = NCCL_IN_PROGRESS;
        // SAFETY: `comm` is a live handle; writes one int.
        let rc = unsafe { get_async(comm, &mut state) };
        if rc != NCCL_SUCCESS {
            return Err(Waited::Failed(rc));
        }
        match state {
            NCCL_SUCCESS => match done.as_mut() {
                None => return Ok(()),
                Some(d) => match d() {
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(e) => return Err(Waited::Stream(e)),
                },
            },
            NCCL_IN_PROGRESS => {}
            code => return Err(Waited::Failed(code)),
        }
        if let Some(reason) = stopped(cancel, deadline) {
            return Err(Waited::Stopped(reason));
        }
        std::thread::sleep(POLL);
    }
}

/// Whether the work queued on `stream` has finished (`cuStreamQuery`: `CUDA_SUCCESS` yes,
/// `CUDA_ERROR_NOT_READY` not yet, anything else an error).
///
/// # Safety
/// `stream` must be a live stream handle.
#[cfg(feature = "cuda")]
pub unsafe fn stream_done(stream: *mut c_void) -> std::result::Result<bool, String> {
    use cudarc::driver::sys::{CUresult, cuStreamQuery};
    // SAFETY: `stream` is a live stream handle of the current context (the caller's).
    match unsafe { cuStreamQuery(stream.cast()) } {
        CUresult::CUDA_SUCCESS => Ok(true),
        CUresult::CUDA_ERROR_NOT_READY => Ok(false),
        e => Err(format!("cuStreamQuery: {e:?}")),
    }
}
