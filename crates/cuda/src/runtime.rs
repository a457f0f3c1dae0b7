//! The device interface every backend implements: allocation, copies and typed kernel
//! launches. [`crate::EmuRuntime`] implements it on the CPU emulator; the cudarc adapter
//! (phase 2) implements it on a real GPU, so drivers such as [`crate::learner`] run on both.

use std::ops::Range;

use crate::counters::Counters;
use crate::error::{CudaError, Result};
use crate::graph::{BufferId, Identified};
use crate::kernels::{ArgValue, KernelId, MAX_PARAMS, ParamType};
use crate::pool::BufferPool;

/// A launch dimension (CUDA's `dim3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dim3 {
    /// Extent along x.
    pub x: u32,
    /// Extent along y.
    pub y: u32,
    /// Extent along z.
    pub z: u32,
}

impl Dim3 {
    /// `(x, 1, 1)`.
    pub const fn x(x: u32) -> Self {
        Self { x, y: 1, z: 1 }
    }

    /// `(x, y, 1)`.
    pub const fn xy(x: u32, y: u32) -> Self {
        Self { x, y, z: 1 }
    }

    /// `x · y · z`.
    pub const fn count(self) -> u64 {
        self.x as u64 * self.y as u64 * self.z as u64
    }
}

/// Geometry of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaunchConfig {
    /// Blocks.
    pub grid: Dim3,
    /// Threads per block.
    pub block: Dim3,
    /// Bytes of dynamic shared memory per block.
    pub shared_bytes: usize,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for i32 {}
    impl Sealed for u32 {}

    /// What the GPU backend needs of an element type: cudarc's marker traits when it is
    /// built, nothing otherwise.
    #[cfg(feature = "cuda")]
    pub trait DeviceRepr: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits {}
    #[cfg(feature = "cuda")]
    impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> DeviceRepr for T {}
    /// What the GPU backend needs of an element type: nothing without the `cuda` feature.
    #[cfg(not(feature = "cuda"))]
    pub trait DeviceRepr {}
    #[cfg(not(feature = "cuda"))]
    impl<T> DeviceRepr for T {}
}

/// An element type device buffers hold: `f32`, `i32` or `u32`.
pub trait Element:
    Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static + sealed::Sealed + sealed::DeviceRepr
{
    /// The kernel parameter type of a pointer to this element.
    const POINTER: ParamType;

    /// What a poisoning pool ([`crate::EmuRuntime::with_poisoned_pool`]) fills a recycled
    /// buffer with, so that a kernel reading a value it did not write shows: NaN, or all ones.
    const POISON: Self;

    /// The launch argument for `buf`, starting `offset` elements in.
    fn buffer_arg<R: Runtime + ?Sized>(buf: &R::Buffer<Self>, offset: usize) -> Arg<'_, R>;

    /// The free list of `pool` that holds buffers of this element type.
    fn free_list<R: Runtime + ?Sized>(pool: &mut BufferPool<R>) -> &mut crate::pool::FreeList<R, Self>;
}

impl Element for f32 {
    const POINTER: ParamType = ParamType::PtrF32;
    const POISON: Self = f32::NAN;
    fn free_list<R: Runtime + ?Sized>(pool: &mut BufferPool<R>) -> &mut crate::pool::FreeList<R, Self> {
        &mut pool.f32s
    }
    fn buffer_arg<R: Runtime + ?Sized>(buf: &R::Buffer<Self>, offset: usize) -> Arg<'_, R> {
        Arg::BufF32(buf, offset)
    }
}

impl Element for i32 {
    const POINTER: ParamType = ParamType::PtrI32;
    const POISON: Self = -1;
    fn free_list<R: Runtime + ?Sized>(pool: &mut BufferPool<R>) -> &mut crate::pool::FreeList<R, Self> {
        &mut pool.i32s
    }
    fn buffer_arg<R: Runtime + ?Sized>(buf: &R::Buffer<Self>, offset: usize) -> Arg<'_, R> {
        Arg::BufI32(buf, offset)
    }
}

impl Element for u32 {
    const POINTER: ParamType = ParamType::PtrU32;
    const POISON: Self = u32::MAX;
    fn free_list<R: Runtime + ?Sized>(pool: &mut BufferPool<R>) -> &mut crate::pool::FreeList<R, Self> {
        &mut pool.u32s
    }
    fn buffer_arg<R: Runtime + ?Sized>(buf: &R::Buffer<Self>, offset: usize) -> Arg<'_, R> {
        Arg::BufU32(buf, offset)
    }
}

/// A device allocation of `len()` elements of `T`; its identity ([`Identified`]) is what a
/// graph replay checks.
pub trait DeviceBuffer<T>: Identified {
    /// Number of elements.
    fn len(&self) -> usize;

    /// Whether it holds no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One kernel launch argument, in the kernel's parameter order. Buffers are passed by
/// reference with an element offset (a pointer `offset` elements into the buffer); a kernel
/// may write through any buffer argument, including ones it only reads by contract.
pub enum Arg<'a, R: Runtime + ?Sized> {
    /// A `float` parameter.
    F32(f32),
    /// An `int` parameter.
    I32(i32),
    /// An `unsigned` parameter.
    U32(u32),
    /// A `float*` parameter: the buffer, and the first element the pointer designates.
    BufF32(&'a R::Buffer<f32>, usize),
    /// An `int*` parameter.
    BufI32(&'a R::Buffer<i32>, usize),
    /// An `unsigned*` parameter.
    BufU32(&'a R::Buffer<u32>, usize),
}

impl<'a, R: Runtime + ?Sized> Arg<'a, R> {
    /// A pointer to the start of `buf`.
    pub fn buf<T: Element>(buf: &'a R::Buffer<T>) -> Self {
        T::buffer_arg::<R>(buf, 0)
    }

    /// A pointer `offset` elements into `buf`.
    pub fn buf_at<T: Element>(buf: &'a R::Buffer<T>, offset: usize) -> Self {
        T::buffer_arg::<R>(buf, offset)
    }

    /// An `int` from a size; values over `i32::MAX` saturate (and then fail validation, whose
    /// sizes must all fit an `int`).
    pub fn int(value: usize) -> Self {
        Arg::I32(i32::try_from(value).unwrap_or(i32::MAX))
    }

    /// An `int` flag (0 or 1).
    pub fn flag(value: bool) -> Self {
        Arg::I32(i32::from(value))
    }

    /// What validation sees of this argument: its type and value, or a buffer's length left
    /// after the offset (`None` if the offset is past the end).
    pub fn value(&self) -> ArgValue {
        fn left<T: Element, B: DeviceBuffer<T> + ?Sized>(b: &B, offset: usize) -> Option<usize> {
            b.len().checked_sub(offset)
        }
        match self {
            Arg::F32(v) => ArgValue::F32(*v),
            Arg::I32(v) => ArgValue::I32(*v),
            Arg::U32(v) => ArgValue::U32(*v),
            Arg::BufF32(b, o) => ArgValue::Buffer { ty: ParamType::PtrF32, len: left::<f32, _>(*b, *o) },
            Arg::BufI32(b, o) => ArgValue::Buffer { ty: ParamType::PtrI32, len: left::<i32, _>(*b, *o) },
            Arg::BufU32(b, o) => ArgValue::Buffer { ty: ParamType::PtrU32, len: left::<u32, _>(*b, *o) },
        }
    }
}

impl<R: Runtime + ?Sized> Clone for Arg<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Runtime + ?Sized> Copy for Arg<'_, R> {}

impl<R: Runtime + ?Sized> std::fmt::Debug for Arg<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.value())
    }
}

/// The [`ArgValue`]s of `args`, on the stack (no allocation per launch): the array and how
/// many of its entries are used. More arguments than any kernel takes is an error.
pub fn arg_values<R: Runtime + ?Sized>(
    kernel: KernelId,
    args: &[Arg<'_, R>],
) -> Result<([ArgValue; MAX_PARAMS], usize)> {
    let mut values = [ArgValue::I32(0); MAX_PARAMS];
    if args.len() > MAX_PARAMS {
        return Err(CudaError::Signature(format!(
            "{} got {} arguments; no kernel takes more than {MAX_PARAMS}",
            kernel.entry_point(),
            args.len()
        )));
    }
    for (v, a) in values.iter_mut().zip(args) {
        *v = a.value();
    }
    Ok((values, args.len()))
}

/// The identities of the buffers among `args`, on the stack (what a capture adds to the
/// graph's footprint): the array and how many of its entries are used.
pub(crate) fn buffer_ids<R: Runtime + ?Sized>(args: &[Arg<'_, R>]) -> ([BufferId; MAX_PARAMS], usize) {
    let mut ids = [BufferId { addr: 0, bytes: 0 }; MAX_PARAMS];
    let mut n = 0;
    for a in args {
        let id = match a {
            Arg::BufF32(b, _) => b.id(),
            Arg::BufI32(b, _) => b.id(),
            Arg::BufU32(b, _) => b.id(),
            Arg::F32(_) | Arg::I32(_) | Arg::U32(_) => continue,
        };
        if let Some(slot) = ids.get_mut(n) {
            *slot = id;
            n += 1;
        }
    }
    (ids, n)
}

/// A device: memory plus kernel launches. Launches are ordered (each sees the effects of the
/// ones before it); `copy_out` returns once all earlier work is done.
///
/// Every backend counts what it does ([`Runtime::counters`]) and keeps a pool of buffers
/// ([`Runtime::alloc_pooled`], [`Runtime::recycle`]), so a meta-step that gives its buffers
/// back allocates nothing the next time it runs with the same shapes.
pub trait Runtime {
    /// A device allocation of elements of `T`.
    type Buffer<T: Element>: DeviceBuffer<T>;

    /// A captured sequence of launches, memsets and device copies ([`Runtime::capture`]),
    /// replayed by one host call ([`Runtime::replay`]).
    type Graph;

    /// Human-readable description of the device.
    fn device_name(&self) -> String;

    /// A zero-filled buffer of `len` elements (always a new allocation).
    fn alloc<T: Element>(&self, len: usize) -> Result<Self::Buffer<T>>;

    /// Copies `src` into `dst` (equal lengths).
    fn copy_in<T: Element>(&self, dst: &mut Self::Buffer<T>, src: &[T]) -> Result<()>;

    /// Copies `src` into `dst` (equal lengths); waits for every earlier launch first.
    fn copy_out<T: Element>(&self, src: &Self::Buffer<T>, dst: &mut [T]) -> Result<()>;

    /// Copies `src[src_range]` into `dst` from element `dst_offset` on, on the device, in
    /// launch order (the host does not wait).
    fn copy_device<T: Element>(
        &self,
        dst: &mut Self::Buffer<T>,
        dst_offset: usize,
        src: &Self::Buffer<T>,
        src_range: Range<usize>,
    ) -> Result<()>;

    /// Sets `buf[range]` to zero, in launch order (the host does not wait).
    fn zero<T: Element>(&self, buf: &mut Self::Buffer<T>, range: Range<usize>) -> Result<()>;

    /// Launches `kernel` with `config` and `args` (in the kernel's parameter order). An
    /// implementation must check the arguments with [`KernelId::check`] first, so that no
    /// kernel ever touches memory outside the buffers passed.
    fn launch(&self, kernel: KernelId, config: &LaunchConfig, args: &[Arg<'_, Self>]) -> Result<()>;

    /// Waits until every launch so far has finished.
    fn synchronize(&self) -> Result<()>;

    /// What this runtime has done so far (launches, allocations, copies, host waits).
    fn counters(&self) -> Counters;

    /// A buffer of `len` elements from the pool when one of that length was recycled (its
    /// contents are whatever was left in it), else a new zero-filled allocation. The default
    /// keeps no pool.
    fn alloc_pooled<T: Element>(&self, len: usize) -> Result<Self::Buffer<T>> {
        self.alloc(len)
    }

    /// Gives `buf` back to the pool for a later [`Runtime::alloc_pooled`] of the same length.
    /// The default frees it.
    fn recycle<T: Element>(&self, buf: Self::Buffer<T>) {
        drop(buf);
    }

    /// Frees every buffer the pool holds (e.g. after an evaluation of an unusual batch size).
    fn release_pool(&self) {}

    /// The graphs of this runtime's meta-step shapes when it was opened with them
    /// (`EmuRuntime::with_step_graphs`, `CudaRuntime::with_step_graphs`):
    /// [`crate::device_meta_gradient_sum`] then replays captured graphs
    /// ([`crate::device_meta_gradient_sum_graphed`]). The default: none.
    fn step_graphs(&self) -> Option<&std::sync::Mutex<crate::graph_step::MetaStepGraphs<Self>>>
    where
        Self: Sized,
    {
        None
    }

    /// Whether [`Runtime::capture`] and [`Runtime::replay`] work here (the default: no).
    fn supports_graphs(&self) -> bool {
        false
    }

    /// Runs `record` without executing what it issues: its launches, memsets and device
    /// copies are recorded, with the buffer pointers and scalar arguments they had, into a
    /// graph that [`Runtime::replay`] runs (nothing has run when this returns). Uploads,
    /// downloads, waits and allocations inside `record` are errors ([`CudaError::Graph`]),
    /// as they are inside a CUDA stream capture: do them before, or after the replay. The
    /// default records nothing and says so.
    fn capture(&self, record: impl FnOnce(&Self) -> Result<()>) -> Result<Self::Graph> {
        drop(record);
        Err(CudaError::Graph(format!("{} records no graphs", self.device_name())))
    }

    /// Runs `graph` once, in launch order, with one host call. `bound` must hold every buffer
    /// the graph was captured with (the same allocations, alive: they are borrowed for the
    /// call); a graph whose buffers are not all there is refused with [`CudaError::Graph`]
    /// instead of running on stale pointers.
    fn replay(&self, graph: &Self::Graph, bound: &[&dyn Identified]) -> Result<()> {
        let _ = (graph, bound);
        Err(CudaError::Graph(format!("{} records no graphs", self.device_name())))
    }

    /// Launches `kernel` with the launch shape [`KernelId::default_config`] derives from its
    /// arguments.
    fn launch_default(&self, kernel: KernelId, args: &[Arg<'_, Self>]) -> Result<()> {
        let (values, n) = arg_values(kernel, args)?;
        let config = kernel.default_config(&values[..n])?;
        self.launch(kernel, &config, args)
    }

    /// A new buffer holding a copy of `src`.
    fn upload<T: Element>(&self, src: &[T]) -> Result<Self::Buffer<T>> {
        let mut buf = self.alloc(src.len())?;
        self.copy_in(&mut buf, src)?;
        Ok(buf)
    }

    /// A buffer from the pool (see [`Runtime::alloc_pooled`]) holding a copy of `src`.
    fn upload_pooled<T: Element>(&self, src: &[T]) -> Result<Self::Buffer<T>> {
        let mut buf = self.alloc_pooled(src.len())?;
        self.copy_in(&mut buf, src)?;
        Ok(buf)
    }

    /// The contents of `src`.
    fn download<T: Element>(&self, src: &Self::Buffer<T>) -> Result<Vec<T>> {
        let mut out = vec![T::default(); src.len()];
        self.copy_out(src, &mut out)?;
        Ok(out)
    }
}

/// Checks a device copy or fill: `range` (and `dst_offset + range.len()`) inside the buffers.
pub(crate) fn check_range(what: &str, len: usize, range: &Range<usize>) -> Result<()> {
    if range.start <= range.end && range.end <= len {
        Ok(())
    } else {
        Err(CudaError::Runtime(format!(
            "{what}: range {}..{} outside a buffer of {len}",
            range.start, range.end
        )))
    }
}
