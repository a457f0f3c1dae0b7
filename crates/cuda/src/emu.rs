//! [`EmuRuntime`]: the [`Runtime`] that executes the CUDA kernels on the CPU through the
//! emulator in `kernels/emu/` (each CUDA thread a fiber, blocks spread over a few OS
//! threads). Device memory is host memory; launches are synchronous.

use std::cell::Cell;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use crate::counters::{CounterSet, Counters, Event};
use crate::emu_graph::{EmuGraph, Op};
use crate::error::{CudaError, Result};
use crate::ffi::CheckedLaunch;
use crate::graph::{BufferId, Footprint, Identified};
use crate::graph_step::MetaStepGraphs;
use crate::kernels::KernelId;
use crate::pool::BufferPool;
use crate::runtime::{Arg, DeviceBuffer, Element, LaunchConfig, Runtime, check_range};

/// In which order the emulator resumes the threads of a block at every step (and hands
/// blocks to its workers). Correct kernels give the same results under every order; a
/// kernel that depends on one (a missing barrier, a race on shared memory) shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Schedule {
    /// Threads 0, 1, ..., n−1.
    #[default]
    Forward,
    /// Threads n−1, ..., 0.
    Reverse,
    /// A fresh pseudo-random permutation every round, from `seed`.
    Shuffled {
        /// Seed of the permutations.
        seed: u64,
    },
}

/// A device buffer of the emulator: host memory the kernels read and write in place.
///
/// The elements live in `Cell`s, so the emulator may write them while the buffer is borrowed
/// shared (as a launch argument); the type is not `Sync`, so no other thread can read them
/// meanwhile.
pub struct EmuBuffer<T> {
    cells: Box<[Cell<T>]>,
}

impl<T> std::fmt::Debug for EmuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmuBuffer<{}>[{}]", std::any::type_name::<T>(), self.cells.len())
    }
}

impl<T: Element> EmuBuffer<T> {
    fn zeroed(len: usize) -> Self {
        Self { cells: (0..len).map(|_| Cell::new(T::default())).collect() }
    }

    /// Pointer to the first element, for the emulator (`Cell<T>` has `T`'s layout).
    pub(crate) fn base_ptr(&self) -> *mut T {
        self.cells.as_ptr().cast::<T>().cast_mut()
    }

    pub(crate) fn cells_len(&self) -> usize {
        self.cells.len()
    }
}

impl<T> crate::graph::sealed::Sealed for EmuBuffer<T> {}

impl<T> Identified for EmuBuffer<T> {
    fn id(&self) -> BufferId {
        BufferId {
            addr: self.cells.as_ptr().expose_provenance() as u64,
            bytes: std::mem::size_of_val::<[Cell<T>]>(&self.cells) as u64,
        }
    }
}

impl<T: Element> EmuBuffer<T> {
    /// The exposed address of element `at` (checked in range by the caller).
    fn addr_of(&self, at: usize) -> usize {
        self.base_ptr().wrapping_add(at).expose_provenance()
    }
}

impl<T: Element> DeviceBuffer<T> for EmuBuffer<T> {
    fn len(&self) -> usize {
        self.cells.len()
    }
}

/// The CPU emulator as a [`Runtime`]. Clones share the counters and the buffer pool.
#[derive(Debug, Clone, Default)]
pub struct EmuRuntime {
    schedule: Schedule,
    workers: u32,
    stack_bytes: u64,
    poison: bool,
    counters: Arc<CounterSet>,
    pool: Arc<Mutex<BufferPool<EmuRuntime>>>,
    /// The capture under way, if any: operations from its thread are recorded, not run.
    capture: Arc<Mutex<Option<Recording>>>,
    /// The meta-step graphs, when opted in ([`EmuRuntime::with_step_graphs`]).
    step_graphs: Option<Arc<Mutex<MetaStepGraphs<EmuRuntime>>>>,
}

/// What a capture has recorded so far, and on which thread it runs (as CUDA's
/// thread-local capture mode: other threads' work on clones of the runtime still runs).
#[derive(Debug)]
struct Recording {
    thread: std::thread::ThreadId,
    ops: Vec<OpSlot>,
    footprint: Footprint,
}

/// An [`Op`] in a [`Recording`] (a newtype so the recording can be `Debug`).
struct OpSlot(Op);

impl std::fmt::Debug for OpSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Op")
    }
}

impl EmuRuntime {
    /// An emulator with the default schedule ([`Schedule::Forward`]), automatic worker count
    /// and 64 KiB fiber stacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same emulator with another thread schedule.
    pub fn with_schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// The same emulator running blocks on `workers` OS threads (0: automatic, 2 to 8).
    pub fn with_workers(mut self, workers: u32) -> Self {
        self.workers = workers;
        self
    }

    /// The same emulator with fiber stacks of `bytes` (0: 64 KiB).
    pub fn with_stack_bytes(mut self, bytes: u64) -> Self {
        self.stack_bytes = bytes;
        self
    }

    /// The same emulator with a pool that fills every buffer it hands out again with
    /// [`Element::POISON`] (NaN for `f32`), so that a kernel reading what an earlier
    /// meta-step left in a reused buffer changes the results (the tests compare them with a
    /// fresh run, bit for bit).
    pub fn with_poisoned_pool(mut self, poison: bool) -> Self {
        self.poison = poison;
        self
    }

    /// The same emulator, with (`true`) or without its own [`MetaStepGraphs`]: with,
    /// [`crate::device_meta_gradient_sum`] replays a captured graph per meta-step shape (what
    /// `METASCHED_CUDA_GRAPHS=1` turns on for `--device emu`). Clones share the graphs.
    pub fn with_step_graphs(mut self, on: bool) -> Self {
        self.step_graphs = on.then(|| Arc::new(Mutex::new(MetaStepGraphs::default())));
        self
    }

    /// How many buffers the pool holds now.
    pub fn pooled_buffers(&self) -> usize {
        self.pool.lock().map(|p| p.buffers()).unwrap_or(0)
    }

    /// The thread schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// Worker threads per launch (0: automatic).
    pub fn workers(&self) -> u32 {
        self.workers
    }

    /// Bytes of stack per fiber (0: default).
    pub fn stack_bytes(&self) -> u64 {
        self.stack_bytes
    }

    /// Entry points compiled into the emulator (the kernels of `kernels/*.cu`, plus the test
    /// fixtures in test binaries).
    pub fn registered_kernels() -> Vec<String> {
        crate::ffi::registered_kernels()
    }

    /// The emulator's parameter signature (one [`crate::ParamType::code`] letter per
    /// parameter) of a registered kernel.
    pub fn registered_signature(name: &str) -> Option<String> {
        crate::ffi::registered_signature(name)
    }
}

impl EmuRuntime {
    /// Records `op` (touching `ids`) when this thread is capturing: `Ok(true)`; `Ok(false)`
    /// when not (the caller runs it).
    fn record(&self, op: impl FnOnce() -> Result<Op>, ids: &[BufferId]) -> Result<bool> {
        let mut cap = self.capture.lock().map_err(|_| CudaError::Graph("capture state poisoned".into()))?;
        match cap.as_mut() {
            Some(r) if r.thread == std::thread::current().id() => {
                r.ops.push(OpSlot(op()?));
                for &id in ids {
                    r.footprint.add(id);
                }
                self.counters.add(Event::Captured);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// An error when this thread is capturing: `what` cannot be part of a graph.
    fn not_capturing(&self, what: &str) -> Result<()> {
        let cap = self.capture.lock().map_err(|_| CudaError::Graph("capture state poisoned".into()))?;
        match cap.as_ref() {
            Some(r) if r.thread == std::thread::current().id() => Err(CudaError::Graph(format!(
                "{what} inside a capture (a CUDA graph holds launches, memsets and device copies \
                 only): do it before the capture or after the replay"
            ))),
            _ => Ok(()),
        }
    }
}

fn same_len(buffer: usize, host: usize) -> Result<()> {
    if buffer == host { Ok(()) } else { Err(CudaError::LengthMismatch { buffer, host }) }
}

impl Runtime for EmuRuntime {
    type Buffer<T: Element> = EmuBuffer<T>;
    type Graph = EmuGraph;

    fn device_name(&self) -> String {
        format!("CPU emulator ({:?} schedule)", self.schedule)
    }

    fn alloc<T: Element>(&self, len: usize) -> Result<EmuBuffer<T>> {
        self.not_capturing("an allocation")?;
        self.counters.add(Event::Alloc);
        Ok(EmuBuffer::zeroed(len))
    }

    fn copy_in<T: Element>(&self, dst: &mut EmuBuffer<T>, src: &[T]) -> Result<()> {
        same_len(dst.cells.len(), src.len())?;
        self.not_capturing("an upload")?;
        self.counters.add(Event::Upload);
        for (c, &v) in dst.cells.iter().zip(src) {
            c.set(v);
        }
        Ok(())
    }

    fn copy_out<T: Element>(&self, src: &EmuBuffer<T>, dst: &mut [T]) -> Result<()> {
        same_len(src.cells.len(), dst.len())?;
        self.not_capturing("a download")?;
        self.counters.add(Event::Download);
        self.counters.add(Event::Sync);
        for (d, c) in dst.iter_mut().zip(src.cells.iter()) {
            *d = c.get();
        }
        Ok(())
    }

    fn copy_device<T: Element>(
        &self,
        dst: &mut EmuBuffer<T>,
        dst_offset: usize,
        src: &EmuBuffer<T>,
        src_range: Range<usize>,
    ) -> Result<()> {
        check_range("device copy source", src.cells.len(), &src_range)?;
        let n = src_range.end - src_range.start;
        check_range("device copy destination", dst.cells.len(), &(dst_offset..dst_offset.saturating_add(n)))?;
        let bytes = n * std::mem::size_of::<T>();
        let op = || Ok(Op::Copy { dst: dst.addr_of(dst_offset), src: src.addr_of(src_range.start), bytes });
        if self.record(op, &[dst.id(), src.id()])? {
            return Ok(());
        }
        self.counters.add(Event::DeviceCopy);
        for (d, s) in dst.cells[dst_offset..dst_offset + n].iter().zip(&src.cells[src_range]) {
            d.set(s.get());
        }
        Ok(())
    }

    fn zero<T: Element>(&self, buf: &mut EmuBuffer<T>, range: Range<usize>) -> Result<()> {
        check_range("zero fill", buf.cells.len(), &range)?;
        let bytes = (range.end - range.start) * std::mem::size_of::<T>();
        if self.record(|| Ok(Op::Zero { at: buf.addr_of(range.start), bytes }), &[buf.id()])? {
            return Ok(());
        }
        self.counters.add(Event::Memset);
        for c in &buf.cells[range] {
            c.set(T::default());
        }
        Ok(())
    }

    fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    fn alloc_pooled<T: Element>(&self, len: usize) -> Result<EmuBuffer<T>> {
        let reused = self.pool.lock().ok().and_then(|mut p| p.take::<T>(len));
        match reused {
            Some(buf) => {
                self.counters.add(Event::PoolHit);
                if self.poison {
                    for c in buf.cells.iter() {
                        c.set(T::POISON);
                    }
                }
                Ok(buf)
            }
            None => self.alloc(len),
        }
    }

    fn recycle<T: Element>(&self, buf: EmuBuffer<T>) {
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
        let launch = CheckedLaunch::new(kernel, config, args)?;
        let (ids, n) = crate::runtime::buffer_ids(args);
        let mut launch = Some(launch);
        let record = || {
            let l = launch.take().ok_or_else(|| CudaError::Graph("launch recorded twice".into()))?;
            Ok(Op::Launch(l.record()?))
        };
        if self.record(record, &ids[..n])? {
            return Ok(());
        }
        let launch = launch.ok_or_else(|| CudaError::Graph("launch recorded and run".into()))?;
        self.counters.add(Event::Launch);
        launch.run(self)
    }

    fn synchronize(&self) -> Result<()> {
        self.not_capturing("a host wait")?;
        self.counters.add(Event::Sync);
        Ok(())
    }

    fn supports_graphs(&self) -> bool {
        true
    }

    fn step_graphs(&self) -> Option<&Mutex<MetaStepGraphs<Self>>> {
        self.step_graphs.as_deref()
    }

    fn capture(&self, record: impl FnOnce(&Self) -> Result<()>) -> Result<EmuGraph> {
        {
            let mut cap =
                self.capture.lock().map_err(|_| CudaError::Graph("capture state poisoned".into()))?;
            if cap.is_some() {
                return Err(CudaError::Graph("a capture is already under way on this runtime".into()));
            }
            *cap = Some(Recording {
                thread: std::thread::current().id(),
                ops: Vec::new(),
                footprint: Footprint::default(),
            });
        }
        let recorded = record(self);
        // End the capture whatever happened, so the runtime runs work again.
        let ended =
            self.capture.lock().map_err(|_| CudaError::Graph("capture state poisoned".into()))?.take();
        recorded?;
        let r = ended.ok_or_else(|| CudaError::Graph("the capture vanished".into()))?;
        self.counters.add(Event::Capture);
        Ok(EmuGraph::new(r.ops.into_iter().map(|o| o.0).collect(), r.footprint))
    }

    fn replay(&self, graph: &EmuGraph, bound: &[&dyn Identified]) -> Result<()> {
        self.not_capturing("a graph replay")?;
        self.counters.add(Event::GraphLaunch);
        graph.run(self, bound)
    }
}
