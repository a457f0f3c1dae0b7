//! [`CudaRuntime`]: the [`Runtime`] of a real GPU, through cudarc. One context and one
//! dedicated compute stream per runtime (device index; a non-blocking stream of its own, not
//! the legacy NULL stream, which NCCL and other libraries also use), the kernels' PTX from
//! [`crate::compile::kernel_ptx`] for the device's architecture, loaded once per kernel file,
//! buffers as device slices, and every launch checked by [`KernelId::check`] before it
//! reaches the driver.
//!
//! The host path of a launch allocates nothing and takes no lock: the arguments are checked
//! and marshalled in arrays on the stack, the function comes from a per-[`KernelId`] table
//! filled once ([`KernelId::index`]), and `cuLaunchKernel` is called directly. cudarc's event
//! tracking (two CUDA events recorded per buffer use, for multi-stream safety) is disabled:
//! all compute work goes to the one stream, and the NCCL stream ([`CudaRuntime::new_side_stream`])
//! uses buffers of its own that it waits for before the host reads them. Buffers come from a
//! [`BufferPool`] that the meta-step gives its buffers back to.
//!
//! Construct it only through [`CudaRuntime::new`], which runs [`crate::probe`] first: cudarc
//! panics when it cannot load the driver library, the probe reports that as an error.
// Kernel launches through the driver API are unsafe by nature; the arguments are checked
// against the kernel's contract (types, buffer lengths, launch shape) first.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::Ptx;

use crate::counters::{CounterSet, Counters, Event};
use crate::error::{CudaError, Result};
use crate::graph::{BufferId, Footprint, Identified};
use crate::graph_step::MetaStepGraphs;
use crate::kernel_dir::{KernelDir, KernelImage, load_error};
use crate::kernels::{KernelId, MAX_PARAMS};
use crate::pool::BufferPool;
use crate::runtime::{Arg, DeviceBuffer, Element, LaunchConfig, Runtime, arg_values, check_range};

fn poisoned() -> CudaError {
    CudaError::Runtime("kernel cache poisoned".into())
}

fn driver(what: &str, e: impl std::fmt::Display) -> CudaError {
    CudaError::Driver(format!("{what}: {e}"))
}

/// A device allocation: a cudarc slice.
#[derive(Debug)]
pub struct CudaBuffer<T> {
    slice: CudaSlice<T>,
}

impl<T> crate::graph::sealed::Sealed for CudaBuffer<T> {}

impl<T> Identified for CudaBuffer<T> {
    fn id(&self) -> BufferId {
        let (addr, _no_event) = self.slice.device_ptr(self.slice.stream());
        BufferId { addr, bytes: self.slice.num_bytes() as u64 }
    }
}

/// A graph captured on the compute stream ([`Runtime::capture`]), instantiated, with the
/// buffers its operations use.
pub struct CudaGraphExec {
    graph: CudaGraph,
    footprint: Footprint,
}

impl std::fmt::Debug for CudaGraphExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaGraphExec({} buffers)", self.footprint.len())
    }
}

// SAFETY: a CUDA graph may be used from any thread as long as calls on it are serialised
// (CUDA's graph thread-safety rules); `CudaGraphExec` is not `Sync` and its one operation,
// `launch`, takes `&self` through the runtime that owns the stream, so moving it to another
// thread and launching it there is allowed.
unsafe impl Send for CudaGraphExec {}

impl<T> DeviceBuffer<T> for CudaBuffer<T> {
    fn len(&self) -> usize {
        self.slice.len()
    }
}

/// One CUDA device (context and compute stream) with the kernels loaded on first use.
#[derive(Debug)]
pub struct CudaRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    /// Loaded modules by kernel file; locked only while a function is first looked up.
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Each kernel's function, by [`KernelId::index`], set on its first launch.
    functions: [OnceLock<CudaFunction>; KernelId::ALL.len()],
    /// Precompiled kernels (`--kernels`, `$METASCHED_KERNELS_DIR`); `None`: NVRTC.
    kernels: Option<KernelDir>,
    counters: CounterSet,
    pool: Mutex<BufferPool<CudaRuntime>>,
    /// Whether a capture is under way on the compute stream (read on every launch, so a
    /// launch outside a capture takes no lock).
    capturing: AtomicBool,
    /// The buffers the capture under way has used so far.
    footprint: Mutex<Footprint>,
    /// The meta-step graphs, when opted in ([`CudaRuntime::with_step_graphs`]).
    step_graphs: Option<Mutex<MetaStepGraphs<CudaRuntime>>>,
}

/// The CUDA version the driver supports (`cuDriverGetVersion`, e.g. 12040), when it answers.
pub fn driver_version() -> Option<i32> {
    crate::probe::driver_available().ok()?;
    let mut v = 0;
    // SAFETY: the probe loaded the driver; cuDriverGetVersion writes one int.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    (r == cudarc::driver::sys::CUresult::CUDA_SUCCESS).then_some(v)
}

impl CudaRuntime {
    /// The runtime of device `index`, after [`crate::probe::cuda_devices`] found the driver
    /// and at least `index + 1` devices.
    pub fn new(index: usize) -> Result<Self> {
        let count = crate::probe::cuda_devices()?;
        if index >= count {
            return Err(CudaError::Driver(format!(
                "no device cuda:{index}: the driver reports {count} device(s)"
            )));
        }
        let ctx = CudaContext::new(index).map_err(|e| driver("cannot create a context", e))?;
        // SAFETY: called before any buffer of this context exists. Without event tracking,
        // cudarc leaves cross-stream ordering to us: every compute buffer is allocated, used
        // and freed on the one compute stream (stream order is then enough), and the NCCL
        // stream only uses buffers it allocates itself and synchronises before returning.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx.compute_capability().map_err(|e| driver("compute capability", e))?;
        let stream = ctx.new_stream().map_err(|e| driver("cannot create the compute stream", e))?;
        let kernels = crate::kernel_dir::configured_dir().map(|d| KernelDir::open(&d)).transpose()?;
        let rt = Self {
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            modules: Mutex::new(HashMap::new()),
            functions: std::array::from_fn(|_| OnceLock::new()),
            kernels,
            counters: CounterSet::default(),
            pool: Mutex::new(BufferPool::default()),
            capturing: AtomicBool::new(false),
            footprint: Mutex::new(Footprint::default()),
            step_graphs: None,
        };
        // Precompiled kernels are all checked and loaded now, so a stale or refused file is an
        // error at start-up, not in the middle of a run.
        if let Some(kd) = &rt.kernels {
            for file in crate::compile::kernel_files() {
                let m = rt.load_precompiled(kd, file)?;
                rt.modules.lock().map_err(|_| poisoned())?.insert(file, m);
            }
        }
        Ok(rt)
    }

    /// The same runtime, with (`true`) or without its own [`MetaStepGraphs`]: with,
    /// [`crate::device_meta_gradient_sum`] replays a captured CUDA graph per meta-step shape
    /// (`METASCHED_CUDA_GRAPHS=1`). Untested on a GPU so far: opt-in.
    pub fn with_step_graphs(mut self, on: bool) -> Self {
        self.step_graphs = on.then(|| Mutex::new(MetaStepGraphs::default()));
        self
    }

    /// The stream every launch and copy goes to.
    pub fn stream(&self) -> Arc<CudaStream> {
        Arc::clone(&self.stream)
    }

    /// A new non-blocking stream of this runtime's context, for work that must not queue
    /// behind (or in front of) the compute stream: the NCCL all-reduce.
    pub fn new_side_stream(&self) -> Result<Arc<CudaStream>> {
        self.ctx.new_stream().map_err(|e| driver("cannot create a stream", e))
    }

    /// The precompiled kernels directory in use, `None` when kernels come from NVRTC.
    pub fn kernels_dir(&self) -> Option<&std::path::Path> {
        self.kernels.as_ref().map(KernelDir::dir)
    }

    /// The module of `file` from the precompiled directory, checked (manifest, staleness) and
    /// loaded; a driver refusal is one line naming the file and both versions.
    fn load_precompiled(&self, kd: &KernelDir, file: &str) -> Result<Arc<CudaModule>> {
        let k = kd.load(file, &self.arch)?;
        let image = match &k.image {
            KernelImage::Ptx(text) => Ptx::from_src(text.clone()),
            KernelImage::Cubin(bytes) => Ptx::from_binary(bytes.clone()),
        };
        self.ctx.load_module(image).map_err(|e| load_error(&k, &format!("{e:?}"), driver_version()))
    }

    /// The architecture the kernels are compiled for (`sm_90`, …).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `kernel`'s function: from the table after its first launch (no lock, no hash), else
    /// loaded now.
    fn function(&self, kernel: KernelId) -> Result<&CudaFunction> {
        let cell = &self.functions[kernel.index()];
        if let Some(f) = cell.get() {
            return Ok(f);
        }
        let f = self.load_function(kernel)?;
        Ok(cell.get_or_init(|| f))
    }

    fn load_function(&self, kernel: KernelId) -> Result<CudaFunction> {
        let file = kernel.source_file();
        let module = {
            let mut modules = self.modules.lock().map_err(|_| poisoned())?;
            match modules.get(file) {
                Some(m) => Arc::clone(m),
                None if self.kernels.is_some() => {
                    let kd = self.kernels.as_ref().ok_or_else(poisoned)?;
                    let m = self.load_precompiled(kd, file)?;
                    modules.insert(file, Arc::clone(&m));
                    m
                }
                None => {
                    let ptx = match crate::compile::kernel_ptx(file, &self.arch) {
                        Ok(ptx) => ptx,
                        // A GPU newer than this NVRTC knows: PTX for compute_90 is
                        // forward-compatible, the driver JIT-compiles it for the device.
                        Err(e) if crate::compile::parse_arch(&self.arch).is_ok_and(|cc| cc > 90) => {
                            warn_arch_fallback(file, &self.arch, &e);
                            crate::compile::kernel_ptx(file, "sm_90")?
                        }
                        Err(e) => return Err(e),
                    };
                    let m = self
                        .ctx
                        .load_module(Ptx::from_src(ptx.to_string()))
                        .map_err(|e| driver(&format!("cannot load the PTX of {file}"), e))?;
                    modules.insert(file, Arc::clone(&m));
                    m
                }
            }
        };
        module
            .load_function(kernel.entry_point())
            .map_err(|e| driver(&format!("no function {} in {file}", kernel.entry_point()), e))
    }
}

impl CudaRuntime {
    /// An error when a capture is under way: `what` cannot be part of a graph (and would
    /// invalidate the capture if it reached the driver).
    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capturing.load(Ordering::Acquire) {
            return Err(CudaError::Graph(format!(
                "{what} inside a capture (a CUDA graph holds launches, memsets and device copies \
                 only): do it before the capture or after the replay"
            )));
        }
        Ok(())
    }

    /// Counts `event`, or, during a capture, one captured operation touching `ids`.
    fn count(&self, event: Event, ids: &[BufferId]) {
        if !self.capturing.load(Ordering::Acquire) {
            self.counters.add(event);
            return;
        }
        self.counters.add(Event::Captured);
        if let Ok(mut f) = self.footprint.lock() {
            for &id in ids {
                f.add(id);
            }
        }
    }
}

/// Says on stderr that `file` is compiled for compute_90 because NVRTC refused `arch` (the
/// crate has no logging dependency; this happens once per file and process).
fn warn_arch_fallback(file: &str, arch: &str, e: &CudaError) {
    eprintln!(
        "metasched-cuda: NVRTC cannot compile {file} for {arch} ({e}); using compute_90 PTX, JIT-compiled by the driver"
    );
}

/// The device address of element `offset` of `buf` (checked against its length by
/// [`KernelId::check`] before any launch uses it).
fn device_address<T>(stream: &CudaStream, buf: &CudaBuffer<T>, offset: usize) -> u64 {
    let (base, _no_event) = buf.slice.device_ptr(stream);
    base + (offset * std::mem::size_of::<T>()) as u64
}

/// A view of `buf[range]` (checked by the caller).
fn slice_of<'b, T>(buf: &'b CudaBuffer<T>, range: Range<usize>) -> Result<cudarc::driver::CudaView<'b, T>> {
    let len = buf.slice.len();
    buf.slice
        .try_slice(range.clone())
        .ok_or_else(|| CudaError::Runtime(format!("range {range:?} outside a buffer of {len}")))
}

impl Runtime for CudaRuntime {
    type Buffer<T: Element> = CudaBuffer<T>;
    type Graph = CudaGraphExec;

    fn device_name(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        format!("cuda:{} {name} ({})", self.ctx.ordinal(), self.arch)
    }

    fn alloc<T: Element>(&self, len: usize) -> Result<CudaBuffer<T>> {
        self.not_capturing("an allocation")?;
        let slice = self.stream.alloc_zeros::<T>(len).map_err(|e| driver("allocation", e))?;
        self.counters.add(Event::Alloc);
        Ok(CudaBuffer { slice })
    }

    fn copy_in<T: Element>(&self, dst: &mut CudaBuffer<T>, src: &[T]) -> Result<()> {
        if dst.slice.len() != src.len() {
            return Err(CudaError::LengthMismatch { buffer: dst.slice.len(), host: src.len() });
        }
        self.not_capturing("an upload")?;
        self.counters.add(Event::Upload);
        self.stream.memcpy_htod(src, &mut dst.slice).map_err(|e| driver("host to device copy", e))
    }

    fn copy_out<T: Element>(&self, src: &CudaBuffer<T>, dst: &mut [T]) -> Result<()> {
        if src.slice.len() != dst.len() {
            return Err(CudaError::LengthMismatch { buffer: src.slice.len(), host: dst.len() });
        }
        self.not_capturing("a download")?;
        self.counters.add(Event::Download);
        self.stream.memcpy_dtoh(&src.slice, dst).map_err(|e| driver("device to host copy", e))?;
        self.synchronize()
    }

    fn copy_device<T: Element>(
        &self,
        dst: &mut CudaBuffer<T>,
        dst_offset: usize,
        src: &CudaBuffer<T>,
        src_range: Range<usize>,
    ) -> Result<()> {
        check_range("device copy source", src.slice.len(), &src_range)?;
        let n = src_range.end - src_range.start;
        let dst_range = dst_offset..dst_offset.saturating_add(n);
        check_range("device copy destination", dst.slice.len(), &dst_range)?;
        let from = slice_of(src, src_range)?;
        let dst_id = dst.id();
        let dst_len = dst.slice.len();
        let mut to = dst.slice.try_slice_mut(dst_range.clone()).ok_or_else(|| {
            CudaError::Runtime(format!("range {dst_range:?} outside a buffer of {dst_len}"))
        })?;
        self.count(Event::DeviceCopy, &[dst_id, src.id()]);
        self.stream.memcpy_dtod(&from, &mut to).map_err(|e| driver("device to device copy", e))
    }

    fn zero<T: Element>(&self, buf: &mut CudaBuffer<T>, range: Range<usize>) -> Result<()> {
        let len = buf.slice.len();
        check_range("zero fill", len, &range)?;
        let id = buf.id();
        let mut view = buf
            .slice
            .try_slice_mut(range.clone())
            .ok_or_else(|| CudaError::Runtime(format!("range {range:?} outside a buffer of {len}")))?;
        self.count(Event::Memset, &[id]);
        self.stream.memset_zeros(&mut view).map_err(|e| driver("zero fill", e))
    }

    fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    fn alloc_pooled<T: Element>(&self, len: usize) -> Result<CudaBuffer<T>> {
        let reused = self.pool.lock().ok().and_then(|mut p| p.take::<T>(len));
        match reused {
            Some(buf) => {
                self.counters.add(Event::PoolHit);
                Ok(buf)
            }
            None => self.alloc(len),
        }
    }

    fn recycle<T: Element>(&self, buf: CudaBuffer<T>) {
        if let Ok(mut p) = self.pool.lock() {
            p.put::<T>(buf);
        }
    }

    fn release_pool(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.clear();
        }
    }

    fn launch(&self, kernel: KernelId, config: &LaunchConfig, args: &[Arg<'_, Self>]) -> Result<()> {
        let (values, n) = arg_values(kernel, args)?;
        kernel.check(config, &values[..n])?;
        let func = self.function(kernel)?;
        let shared = u32::try_from(config.shared_bytes)
            .map_err(|_| CudaError::Runtime(format!("{} bytes of shared memory", config.shared_bytes)))?;
        // Each argument's value, by type, on the stack; `params[i]` points at argument i's.
        let (mut f32s, mut i32s, mut u32s, mut ptrs) =
            ([0f32; MAX_PARAMS], [0i32; MAX_PARAMS], [0u32; MAX_PARAMS], [0u64; MAX_PARAMS]);
        let mut params = [std::ptr::null_mut::<c_void>(); MAX_PARAMS];
        for (i, a) in args.iter().enumerate() {
            match *a {
                Arg::F32(v) => f32s[i] = v,
                Arg::I32(v) => i32s[i] = v,
                Arg::U32(v) => u32s[i] = v,
                Arg::BufF32(b, o) => ptrs[i] = device_address(&self.stream, b, o),
                Arg::BufI32(b, o) => ptrs[i] = device_address(&self.stream, b, o),
                Arg::BufU32(b, o) => ptrs[i] = device_address(&self.stream, b, o),
            }
        }
        for (i, a) in args.iter().enumerate() {
            params[i] = match a {
                Arg::F32(_) => (&mut f32s[i] as *mut f32).cast(),
                Arg::I32(_) => (&mut i32s[i] as *mut i32).cast(),
                Arg::U32(_) => (&mut u32s[i] as *mut u32).cast(),
                Arg::BufF32(..) | Arg::BufI32(..) | Arg::BufU32(..) => (&mut ptrs[i] as *mut u64).cast(),
            };
        }
        self.ctx.bind_to_thread().map_err(|e| driver("bind the context", e))?;
        // SAFETY: `KernelId::check` verified the parameter types, that every buffer holds what
        // the kernel indexes for these sizes, and the launch shape the kernel requires;
        // `params[..n]` points at one live value of the right C type per parameter (the
        // arrays above outlive the call, which copies them); the buffers outlive the launch
        // because they are freed on this same stream, after it.
        unsafe {
            cudarc::driver::result::launch_kernel(
                func.cu_function(),
                (config.grid.x, config.grid.y, config.grid.z),
                (config.block.x, config.block.y, config.block.z),
                shared,
                self.stream.cu_stream(),
                &mut params[..n],
            )
        }
        .map_err(|e| driver(&format!("launch of {}", kernel.entry_point()), e))?;
        if self.capturing.load(Ordering::Acquire) {
            let (ids, k) = crate::runtime::buffer_ids(args);
            self.count(Event::Launch, &ids[..k]);
        } else {
            self.counters.add(Event::Launch);
        }
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.not_capturing("a host wait")?;
        self.counters.add(Event::Sync);
        self.stream.synchronize().map_err(|e| driver("synchronize", e))
    }

    fn supports_graphs(&self) -> bool {
        true
    }

    fn step_graphs(&self) -> Option<&Mutex<MetaStepGraphs<Self>>> {
        self.step_graphs.as_ref()
    }

    fn capture(&self, record: impl FnOnce(&Self) -> Result<()>) -> Result<CudaGraphExec> {
        if self.capturing.swap(true, Ordering::AcqRel) {
            return Err(CudaError::Graph("a capture is already under way on this runtime".into()));
        }
        if let Ok(mut f) = self.footprint.lock() {
            *f = Footprint::default();
        }
        // Thread-local mode: only this thread's potentially unsafe calls (allocations,
        // synchronous copies) break the capture; other runtimes' threads are unaffected.
        let begun = self
            .stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| driver("begin capture", e));
        let recorded = begun.and_then(|()| record(self));
        // End the capture whatever `record` did, so the stream takes work again.
        let ended =
            self.stream.end_capture(CUgraphInstantiate_flags(0)).map_err(|e| driver("end capture", e));
        self.capturing.store(false, Ordering::Release);
        let mut footprint =
            self.footprint.lock().map(|mut f| std::mem::take(&mut *f)).map_err(|_| poisoned())?;
        recorded?;
        let graph = ended?.ok_or_else(|| CudaError::Graph("the capture recorded nothing".into()))?;
        footprint.seal();
        self.counters.add(Event::Capture);
        Ok(CudaGraphExec { graph, footprint })
    }

    fn replay(&self, graph: &CudaGraphExec, bound: &[&dyn Identified]) -> Result<()> {
        self.not_capturing("a graph replay")?;
        graph.footprint.check(bound)?;
        graph.graph.launch().map_err(|e| driver("graph launch", e))?;
        self.counters.add(Event::GraphLaunch);
        Ok(())
    }
}
