//! [`CudaRuntime`]: the [`Runtime`] of a real GPU, through cudarc. One context and stream per
//! runtime (device index), the kernels' PTX from [`crate::compile::kernel_ptx`] for the
//! device's architecture, loaded once per kernel file, buffers as device slices, and every
//! launch checked by [`KernelId::check`] before it reaches the driver.
//!
//! Construct it only through [`CudaRuntime::new`], which runs [`crate::probe`] first: cudarc
//! panics when it cannot load the driver library, the probe reports that as an error.
// Kernel launches through the driver API are unsafe by nature; the arguments are checked
// against the kernel's contract (types, buffer lengths, launch shape) first.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, PushKernelArg};
use cudarc::nvrtc::Ptx;

use crate::error::{CudaError, Result};
use crate::kernel_dir::{KernelDir, KernelImage, load_error};
use crate::kernels::{ArgValue, KernelId};
use crate::runtime::{Arg, DeviceBuffer, Element, LaunchConfig, Runtime};

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

impl<T> DeviceBuffer<T> for CudaBuffer<T> {
    fn len(&self) -> usize {
        self.slice.len()
    }
}

/// One CUDA device (context and stream) with the kernels loaded on first use.
#[derive(Debug)]
pub struct CudaRuntime {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    /// Precompiled kernels (`--kernels`, `$METASCHED_KERNELS_DIR`); `None`: NVRTC.
    kernels: Option<KernelDir>,
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
        let (major, minor) = ctx.compute_capability().map_err(|e| driver("compute capability", e))?;
        let stream = ctx.default_stream();
        let kernels = crate::kernel_dir::configured_dir().map(|d| KernelDir::open(&d)).transpose()?;
        let rt = Self {
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            kernels,
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

    /// The stream every launch and copy goes to.
    pub fn stream(&self) -> Arc<CudaStream> {
        Arc::clone(&self.stream)
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

    fn function(&self, kernel: KernelId) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().map_err(|_| poisoned())?.get(kernel.entry_point()) {
            return Ok(f.clone());
        }
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
        let f = module
            .load_function(kernel.entry_point())
            .map_err(|e| driver(&format!("no function {} in {file}", kernel.entry_point()), e))?;
        self.functions.lock().map_err(|_| poisoned())?.insert(kernel.entry_point(), f.clone());
        Ok(f)
    }
}

/// Says on stderr that `file` is compiled for compute_90 because NVRTC refused `arch` (the
/// crate has no logging dependency; this happens once per file and process).
fn warn_arch_fallback(file: &str, arch: &str, e: &CudaError) {
    eprintln!(
        "metasched-cuda: NVRTC cannot compile {file} for {arch} ({e}); using compute_90 PTX, JIT-compiled by the driver"
    );
}

/// A launch argument as cudarc takes it.
enum Pushed<'c> {
    F32(f32),
    I32(i32),
    U32(u32),
    F32Ptr(CudaView<'c, f32>),
    I32Ptr(CudaView<'c, i32>),
    U32Ptr(CudaView<'c, u32>),
}

fn view<'c, T>(kernel: KernelId, buf: &'c CudaBuffer<T>, offset: usize) -> Result<CudaView<'c, T>> {
    buf.slice.try_slice(offset..).ok_or_else(|| CudaError::InvalidArgument {
        kernel: kernel.entry_point().to_string(),
        reason: format!("offset {offset} past the end of a buffer of {}", buf.slice.len()),
    })
}

impl Runtime for CudaRuntime {
    type Buffer<T: Element> = CudaBuffer<T>;

    fn device_name(&self) -> String {
        let name = self.ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        format!("cuda:{} {name} ({})", self.ctx.ordinal(), self.arch)
    }

    fn alloc<T: Element>(&self, len: usize) -> Result<CudaBuffer<T>> {
        let slice = self.stream.alloc_zeros::<T>(len).map_err(|e| driver("allocation", e))?;
        Ok(CudaBuffer { slice })
    }

    fn copy_in<T: Element>(&self, dst: &mut CudaBuffer<T>, src: &[T]) -> Result<()> {
        if dst.slice.len() != src.len() {
            return Err(CudaError::LengthMismatch { buffer: dst.slice.len(), host: src.len() });
        }
        self.stream.memcpy_htod(src, &mut dst.slice).map_err(|e| driver("host to device copy", e))
    }

    fn copy_out<T: Element>(&self, src: &CudaBuffer<T>, dst: &mut [T]) -> Result<()> {
        if src.slice.len() != dst.len() {
            return Err(CudaError::LengthMismatch { buffer: src.slice.len(), host: dst.len() });
        }
        self.stream.memcpy_dtoh(&src.slice, dst).map_err(|e| driver("device to host copy", e))?;
        self.stream.synchronize().map_err(|e| driver("synchronize", e))
    }

    fn launch(&self, kernel: KernelId, config: &LaunchConfig, args: &[Arg<'_, Self>]) -> Result<()> {
        let values: Vec<ArgValue> = args.iter().map(Arg::value).collect();
        kernel.check(config, &values)?;
        let func = self.function(kernel)?;
        let pushed: Vec<Pushed<'_>> = args
            .iter()
            .map(|a| {
                Ok(match *a {
                    Arg::F32(v) => Pushed::F32(v),
                    Arg::I32(v) => Pushed::I32(v),
                    Arg::U32(v) => Pushed::U32(v),
                    Arg::BufF32(b, o) => Pushed::F32Ptr(view(kernel, b, o)?),
                    Arg::BufI32(b, o) => Pushed::I32Ptr(view(kernel, b, o)?),
                    Arg::BufU32(b, o) => Pushed::U32Ptr(view(kernel, b, o)?),
                })
            })
            .collect::<Result<_>>()?;
        let mut builder = self.stream.launch_builder(&func);
        for p in &pushed {
            match p {
                Pushed::F32(v) => builder.arg(v),
                Pushed::I32(v) => builder.arg(v),
                Pushed::U32(v) => builder.arg(v),
                Pushed::F32Ptr(v) => builder.arg(v),
                Pushed::I32Ptr(v) => builder.arg(v),
                Pushed::U32Ptr(v) => builder.arg(v),
            };
        }
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (config.grid.x, config.grid.y, config.grid.z),
            block_dim: (config.block.x, config.block.y, config.block.z),
            shared_mem_bytes: u32::try_from(config.shared_bytes)
                .map_err(|_| CudaError::Runtime(format!("{} bytes of shared memory", config.shared_bytes)))?,
        };
        // SAFETY: `KernelId::check` verified the parameter types, that every buffer holds what
        // the kernel indexes for these sizes, and the launch shape the kernel requires.
        unsafe { builder.launch(cfg) }
            .map_err(|e| driver(&format!("launch of {}", kernel.entry_point()), e))?;
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| driver("synchronize", e))
    }
}
