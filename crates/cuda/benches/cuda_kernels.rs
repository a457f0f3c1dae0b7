//! `cuda_<kernel>` benches: every kernel of `kernels/*.cu` launched alone on `cuda:0` (cudarc)
//! at realistic sizes — B = 25, 250 and 1000 tasks of the default problem (learner 1-40-40-1,
//! P = 1,761 parameters in G = 6 groups, K = 10 points, LSTM H = 20; the 40 -> 40 layer for the
//! layer kernels; a 5-way, 25-point output for cross-entropy) — printing, after each bench,
//! the time per launch, the achieved GB/s and GFLOP/s (bytes and FLOPs from
//! `metasched_cuda::kernels::cost`, the formulas `docs/KERNELS.md` quotes) and the ratio of the
//! H100 floor (`max(bytes / 3 TB/s, FLOPs / 60 TFLOP/s)`) to the measured time (1 = at the
//! floor).
//!
//! Launches are issued back to back and synchronised once per sample, so a time per launch is
//! the device's throughput for that kernel including launch overhead, not one launch's latency.
//! Without a CUDA driver (or device) the bench prints one `cuda_kernels: skipped: ...` line and
//! measures nothing.

use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use metasched_cuda::kernels::FEATURES;
use metasched_cuda::kernels::cost::{Cost, H100_BYTES_PER_S, H100_FLOPS_PER_S, launch_cost};
use metasched_cuda::{Arg, CudaError, CudaRuntime, KernelId, LaunchConfig, Runtime};
use metasched_engine::rng::CounterRng;
use metasched_engine::{Config, ThetaLayout};

/// Task counts each kernel is timed at.
const BATCHES: [usize; 3] = [25, 250, 1000];
/// Points per task (K of the default sinusoid problem).
const ROWS: usize = 10;
/// LSTM hidden size of the default scheduler.
const HIDDEN: usize = 20;
/// Cross-entropy output: points and classes (5-way, 5 shots of 5 classes).
const CE_ROWS: usize = 25;
const CE_CLASSES: usize = 5;

/// One launch argument, referring to the buffers of a [`Launch`] by index.
enum Spec {
    F32(usize),
    I32(usize),
    U32(usize),
    Int(usize),
    Float(f32),
}

/// A kernel with its device buffers filled with random data and its arguments.
struct Launch<R: Runtime> {
    f32s: Vec<R::Buffer<f32>>,
    i32s: Vec<R::Buffer<i32>>,
    u32s: Vec<R::Buffer<u32>>,
    spec: Vec<Spec>,
}

impl<R: Runtime> Launch<R> {
    fn args(&self) -> Vec<Arg<'_, R>> {
        self.spec
            .iter()
            .map(|s| match *s {
                Spec::F32(i) => Arg::buf(&self.f32s[i]),
                Spec::I32(i) => Arg::buf(&self.i32s[i]),
                Spec::U32(i) => Arg::buf(&self.u32s[i]),
                Spec::Int(v) => Arg::int(v),
                Spec::Float(v) => Arg::F32(v),
            })
            .collect()
    }
}

/// Builds a [`Launch`] argument by argument, in the kernel's parameter order.
struct Builder<'r, R: Runtime> {
    rt: &'r R,
    launch: Launch<R>,
    rng: CounterRng,
}

impl<'r, R: Runtime> Builder<'r, R> {
    fn new(rt: &'r R, kernel: KernelId) -> Self {
        let launch = Launch { f32s: Vec::new(), i32s: Vec::new(), u32s: Vec::new(), spec: Vec::new() };
        Self { rt, launch, rng: CounterRng::new(17, &[kernel as u64]) }
    }

    /// A buffer of `n` values uniform in `[lo, hi)`.
    fn uniform(mut self, n: usize, lo: f64, hi: f64) -> Result<Self, CudaError> {
        let data: Vec<f32> = (0..n).map(|_| self.rng.uniform_in(lo, hi) as f32).collect();
        self.launch.f32s.push(self.rt.upload(&data)?);
        self.launch.spec.push(Spec::F32(self.launch.f32s.len() - 1));
        Ok(self)
    }

    /// A buffer of `n` values in `[-0.5, 0.5)`.
    fn floats(self, n: usize) -> Result<Self, CudaError> {
        self.uniform(n, -0.5, 0.5)
    }

    fn ints(mut self, data: &[i32]) -> Result<Self, CudaError> {
        self.launch.i32s.push(self.rt.upload(data)?);
        self.launch.spec.push(Spec::I32(self.launch.i32s.len() - 1));
        Ok(self)
    }

    fn labels(mut self, n: usize, classes: usize) -> Result<Self, CudaError> {
        let data: Vec<u32> = (0..n).map(|_| self.rng.below(classes as u64) as u32).collect();
        self.launch.u32s.push(self.rt.upload(&data)?);
        self.launch.spec.push(Spec::U32(self.launch.u32s.len() - 1));
        Ok(self)
    }

    fn int(mut self, v: usize) -> Self {
        self.launch.spec.push(Spec::Int(v));
        self
    }

    /// Several `int` arguments.
    fn ints_of(mut self, values: &[usize]) -> Self {
        self.launch.spec.extend(values.iter().map(|&v| Spec::Int(v)));
        self
    }

    fn float(mut self, v: f32) -> Self {
        self.launch.spec.push(Spec::Float(v));
        self
    }

    fn build(self) -> Launch<R> {
        self.launch
    }
}

/// The launch of `kernel` for `b` tasks of the default problem.
fn launch<R: Runtime>(rt: &R, kernel: KernelId, b: usize) -> Result<Launch<R>, CudaError> {
    let config = Config::sinusoid_default();
    let layout = ThetaLayout::new(&config);
    let (p, g, h, f, n) = (layout.len(), layout.groups(), HIDDEN, FEATURES, ROWS);
    let offsets: Vec<i32> = layout.offsets.iter().map(|&o| o as i32).collect();
    // The 40 -> 40 layer (layer 1) and the activation between layers (relu).
    let (din, dout) = (layout.widths[1], layout.widths[2]);
    let (w_off, b_off) = (layout.weight(1).start, layout.bias(1).start);
    let act = metasched_cuda::learner::act_code(config.model.activation) as usize;
    let layer = [b, n, din, dout, p, w_off, b_off, act];
    let k = Builder::new(rt, kernel);
    let (xin, xout) = (b * n * din, b * n * dout);
    Ok(match kernel {
        KernelId::LstmCellForward => k
            .floats(b * h)?
            .floats(b * h)?
            .floats(b * 4 * h)?
            .floats(b * h)?
            .floats(4 * h * f)?
            .floats(4 * h * h)?
            .floats(4 * h)?
            .floats(4 * h)?
            .floats(b * f)?
            .floats(b * h)?
            .floats(b * h)?
            .int(b)
            .int(h)
            .build(),
        KernelId::LstmCellBackward => k
            .floats(b * h)?
            .floats(b * h)?
            .floats(b * 4 * h)?
            .floats(b * 4 * h * f)?
            .floats(b * 4 * h * h)?
            .floats(b * 4 * h)?
            .floats(b * 4 * h)?
            .floats(4 * h * f)?
            .floats(4 * h * h)?
            .floats(b * f)?
            .floats(b * h)?
            .floats(b * h)?
            .uniform(b * 4 * h, 0.0, 1.0)?
            .floats(b * h)?
            .floats(b * h)?
            .floats(b * h)?
            .int(b)
            .int(h)
            .build(),
        KernelId::SgdUpdateForward | KernelId::SgdUpdateBackward => {
            let k = if kernel == KernelId::SgdUpdateForward {
                k.floats(b * p)?.floats(b * p)?.floats(b * p)?
            } else {
                k.floats(b * g)?.floats(b * p)?.floats(b * p)?.floats(b * p)?
            };
            k.uniform(b * g, 0.0, 0.1)?.ints(&offsets)?.int(b).int(p).int(g).build()
        }
        KernelId::LinearForward => k.floats(xout)?.floats(xin)?.floats(b * p)?.ints_of(&layer).build(),
        KernelId::LinearBackward => k
            .floats(b * p)?
            .floats(xin)?
            .floats(xin)?
            .floats(xout)?
            .uniform(xin, 0.0, 1.0)?
            .floats(b * p)?
            .ints_of(&layer)
            .int(1)
            .build(),
        KernelId::LinearRop => k
            .floats(xout)?
            .floats(xout)?
            .floats(xin)?
            .uniform(xin, 0.0, 1.0)?
            .uniform(xout, 0.0, 1.0)?
            .floats(b * p)?
            .floats(b * p)?
            .ints_of(&layer)
            .int(1)
            .build(),
        KernelId::LinearRopBackward => k
            .floats(b * p)?
            .floats(xin)?
            .floats(xout)?
            .floats(xout)?
            .uniform(xin, 0.0, 1.0)?
            .floats(xin)?
            .floats(xin)?
            .floats(xin)?
            .floats(b * p)?
            .floats(b * p)?
            .ints_of(&layer)
            .int(1)
            .build(),
        KernelId::ActivationForward => k.floats(xin)?.floats(xin)?.int(xin).int(act).build(),
        KernelId::ActivationBackward => {
            k.floats(xin)?.floats(xin)?.uniform(xin, 0.0, 1.0)?.int(xin).int(act).build()
        }
        KernelId::MseForwardBackward => {
            k.floats(b)?.floats(b * n)?.floats(b * n)?.floats(b * n)?.int(b).int(n).int(1).build()
        }
        KernelId::MseRop => k.floats(b * n)?.floats(b * n)?.int(b).int(n).int(1).build(),
        KernelId::CrossEntropyForwardBackward => {
            let m = b * CE_ROWS * CE_CLASSES;
            k.floats(b)?
                .floats(m)?
                .floats(m)?
                .floats(m)?
                .labels(b * CE_ROWS, CE_CLASSES)?
                .int(b)
                .int(CE_ROWS)
                .int(CE_CLASSES)
                .build()
        }
        KernelId::CrossEntropyRop => {
            let m = b * CE_ROWS * CE_CLASSES;
            k.floats(m)?.uniform(m, 0.0, 0.4)?.floats(m)?.int(b).int(CE_ROWS).int(CE_CLASSES).build()
        }
        KernelId::SchedulerFeatures => {
            k.floats(b * f)?.uniform(b, 0.1, 2.0)?.floats(b * p)?.int(b).int(p).int(2).int(5).build()
        }
        KernelId::SchedulerHeadForward => k
            .floats(b * g)?
            .floats(b * g)?
            .floats(b * h)?
            .floats(g * h)?
            .floats(g)?
            .int(b)
            .int(h)
            .int(g)
            .float(0.0)
            .float(0.1)
            .build(),
        KernelId::SchedulerHeadBackward => k
            .floats(b * h)?
            .floats(b * g * h)?
            .floats(b * g)?
            .floats(b * g)?
            .uniform(b * g, 0.0, 1.0)?
            .floats(b * h)?
            .floats(g * h)?
            .floats(b * h)?
            .int(b)
            .int(h)
            .int(g)
            .float(0.1)
            .build(),
        KernelId::TaskSum => k.floats(p)?.floats(b * p)?.int(b).int(p).build(),
        KernelId::VectorAxpy => k.floats(b * p)?.floats(b * p)?.float(-1.0).int(b * p).build(),
        // alpha = 1: repeated launches must not drive the values into denormals.
        KernelId::VectorScale => k.floats(b * p)?.float(1.0).int(b * p).build(),
    })
}

/// Times every kernel on `rt` and prints the rates after each bench.
fn bench_kernels<R: Runtime>(c: &mut Criterion, rt: &R) {
    for kernel in KernelId::ALL {
        let mut group = c.benchmark_group(format!("cuda_{}", kernel.name()));
        let mut summaries = Vec::new();
        for b in BATCHES {
            let l = match launch(rt, kernel, b) {
                Ok(l) => l,
                Err(e) => {
                    summaries.push(format!("cuda_{}/b{b}: cannot prepare the launch: {e}", kernel.name()));
                    continue;
                }
            };
            let args = l.args();
            let prepared = || -> Result<(LaunchConfig, Cost), CudaError> {
                let values: Vec<_> = args.iter().map(Arg::value).collect();
                let config = kernel.default_config(&values)?;
                let cost = launch_cost(kernel, &args)?;
                // One checked launch before timing, so a failure is reported, not timed.
                rt.launch(kernel, &config, &args)?;
                rt.synchronize()?;
                Ok((config, cost))
            };
            let (config, cost) = match prepared() {
                Ok(v) => v,
                Err(e) => {
                    summaries.push(format!("cuda_{}/b{b}: launch failed: {e}", kernel.name()));
                    continue;
                }
            };
            let samples = RefCell::new(Vec::<(u64, Duration)>::new());
            let failure = RefCell::new(None::<CudaError>);
            group.bench_function(BenchmarkId::from_parameter(format!("b{b}")), |bench| {
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if let Err(e) = black_box(rt.launch(kernel, &config, &args)) {
                            failure.borrow_mut().get_or_insert(e);
                        }
                    }
                    if let Err(e) = rt.synchronize() {
                        failure.borrow_mut().get_or_insert(e);
                    }
                    let elapsed = start.elapsed();
                    samples.borrow_mut().push((iters, elapsed));
                    elapsed
                })
            });
            if let Some(e) = failure.into_inner() {
                summaries.push(format!("cuda_{}/b{b}: a timed launch failed: {e}", kernel.name()));
                continue;
            }
            // Median over criterion's samples of the time per launch.
            let mut per_launch: Vec<f64> = samples
                .into_inner()
                .iter()
                .filter(|(iters, _)| *iters > 0)
                .map(|(iters, d)| d.as_secs_f64() / *iters as f64)
                .collect();
            if per_launch.is_empty() {
                continue; // filtered out on the command line
            }
            per_launch.sort_by(f64::total_cmp);
            let t = per_launch[per_launch.len() / 2];
            let floor = cost.floor_s(H100_BYTES_PER_S, H100_FLOPS_PER_S);
            summaries.push(format!(
                "cuda_{}/b{b}: {:.3} µs per launch; {} bytes, {} FLOPs; {:.3} GB/s, {:.3} GFLOP/s; \
                 H100 floor {:.4} µs, floor/time = {:.4}",
                kernel.name(),
                t * 1e6,
                cost.bytes,
                cost.flops,
                cost.gb_per_s(t),
                cost.gflop_per_s(t),
                floor * 1e6,
                floor / t
            ));
        }
        group.finish();
        for s in summaries {
            println!("{s}");
        }
    }
}

fn cuda_kernels(c: &mut Criterion) {
    // Probe first: cudarc panics when libcuda is missing.
    let rt = match metasched_cuda::probe::cuda_devices() {
        Ok(0) => {
            println!("cuda_kernels: skipped: no CUDA device (the driver reports none)");
            return;
        }
        Ok(_) => match CudaRuntime::new(0) {
            Ok(rt) => rt,
            Err(e) => {
                println!("cuda_kernels: skipped: cannot start the CUDA runtime on cuda:0 ({e})");
                return;
            }
        },
        Err(e) => {
            println!("cuda_kernels: skipped: no CUDA driver ({e})");
            return;
        }
    };
    println!("cuda_kernels: device {}", rt.device_name());
    bench_kernels(c, &rt);
}

criterion_group!(benches, cuda_kernels);
criterion_main!(benches);
