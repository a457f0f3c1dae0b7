//! Where meta-gradients and evaluations are computed: the CPU engine, the CPU emulator of the
//! CUDA kernels, or a CUDA device. `meta-worker --device` and `meta-coord train|metagrad|eval
//! --device` all open a [`Compute`] here, so the device code path, its probe and its error
//! messages are the same everywhere.

use metasched_cuda::{CudaError, CudaRuntime, EmuRuntime, Runtime};
use metasched_engine::horizon::{MemberOutcome, RunData, RunReport, WindowItem, WindowSpec};
use metasched_engine::{Config, Engine, Evaluation, FixedSum, MetaGradient, Params, TaskBatch};

use crate::device::Device;
use crate::error::{ComputeError, Result};
use crate::part_sum::PartSum;

/// An opened device, kept open across jobs (and, in a worker, across coordinator sessions):
/// opening a GPU or the emulator costs far more than a job.
#[derive(Debug)]
pub enum Compute {
    /// The CPU engine.
    Cpu(Engine),
    /// The kernels on the CPU emulator.
    Emu(EmuRuntime),
    /// A CUDA device through cudarc (created only after the probe found the driver).
    Cuda(Box<CudaRuntime>),
}

/// Whether a worker's part of a meta-step is replayed from a captured CUDA graph
/// (`METASCHED_CUDA_GRAPHS=1`; off by default until measured on a GPU; see docs/KERNELS.md):
/// bitwise the same results, one graph launch instead of ~120 kernel launches per meta-step.
fn step_graphs() -> bool {
    std::env::var("METASCHED_CUDA_GRAPHS").is_ok_and(|v| v == "1")
}

/// Why `--device cuda:N` cannot be opened here, in one line, from the probe alone (cudarc is
/// not touched when the driver library is missing, so this never panics).
fn cuda_unavailable(index: usize) -> Option<String> {
    match metasched_cuda::probe::cuda_devices() {
        Err(e @ CudaError::LibraryMissing { .. }) => {
            Some(format!("--device cuda:{index}: no CUDA driver: {e}"))
        }
        Err(e) => Some(format!("--device cuda:{index}: {e}")),
        Ok(0) => Some(format!("--device cuda:{index}: the CUDA driver loaded but reports no devices")),
        Ok(n) if index >= n => Some(format!(
            "--device cuda:{index}: the CUDA driver reports {n} device(s) (cuda:0..cuda:{})",
            n - 1
        )),
        Ok(_) => None,
    }
}

impl Compute {
    /// Opens `device` with `threads` CPU threads (0: one per core; the emulator spreads
    /// blocks over as many). A CUDA device is probed first: a machine without a driver gets
    /// [`ComputeError::DeviceUnavailable`] naming the missing library.
    pub fn open(device: Device, threads: usize) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Self::Cpu(Engine::new(threads)?)),
            Device::Emu => {
                let rt = EmuRuntime::new().with_step_graphs(step_graphs());
                Ok(Self::Emu(if threads > 0 { rt.with_workers(threads as u32) } else { rt }))
            }
            Device::Cuda(index) => {
                if let Some(why) = cuda_unavailable(index) {
                    return Err(ComputeError::DeviceUnavailable(why));
                }
                let rt = CudaRuntime::new(index).map_err(|e| {
                    ComputeError::DeviceUnavailable(format!("--device cuda:{index}: cannot start CUDA: {e}"))
                })?;
                Ok(Self::Cuda(Box::new(rt.with_step_graphs(step_graphs()))))
            }
        }
    }

    /// What the device is, for logs (`cpu (2 threads)`, `emu`, the GPU's name).
    pub fn describe(&self) -> String {
        match self {
            Self::Cpu(e) => format!("cpu ({} threads)", e.threads()),
            Self::Emu(rt) => rt.device_name(),
            Self::Cuda(rt) => rt.device_name(),
        }
    }

    /// Whether this device can run `config`: the CUDA kernels (emulated or real) implement
    /// the `sgd` inner optimiser only; momentum and adam (spec §3.1) run on the CPU engine.
    pub fn supports(&self, config: &Config) -> Result<()> {
        let opt = config.inner.optimizer;
        match self {
            Self::Cpu(_) => Ok(()),
            Self::Emu(_) | Self::Cuda(_) if opt.is_sgd() => Ok(()),
            Self::Emu(_) | Self::Cuda(_) => Err(ComputeError::Unsupported(format!(
                "--device {}: the CUDA kernels implement the sgd inner optimizer only; \
                 --inner-optimizer {} runs on --device cpu",
                if matches!(self, Self::Emu(_)) { "emu" } else { "cuda" },
                opt.name()
            ))),
        }
    }

    /// `J`, per-task losses, rates and the mean meta-gradient of `batch` (`metagrad`).
    pub fn meta_gradient(
        &self,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
    ) -> Result<MetaGradient<f32>> {
        self.supports(config)?;
        match self {
            Self::Cpu(e) => Ok(e.meta_gradient(config, params, batch)?),
            Self::Emu(rt) => Ok(metasched_cuda::device_meta_gradient(rt, config, params, batch)?),
            Self::Cuda(rt) => Ok(metasched_cuda::device_meta_gradient(rt.as_ref(), config, params, batch)?),
        }
    }

    /// A worker's part of a meta-step: the same bits on every split of the batch for a given
    /// device kind (each task's gradient is rounded to fixed point on its own).
    pub fn meta_gradient_sum(
        &self,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
    ) -> Result<PartSum> {
        fn on<R: Runtime>(rt: &R, c: &Config, p: &Params<f32>, b: &TaskBatch<f32>) -> Result<PartSum> {
            let s = metasched_cuda::device_meta_gradient_sum(rt, c, p, b)?;
            Ok(PartSum { sum: s.sum, outer_loss: s.outer_loss, lr: s.lr })
        }
        self.supports(config)?;
        match self {
            Self::Cpu(e) => {
                let (sum, outcomes) = e.meta_gradient_sum(config, params, batch)?;
                Ok(PartSum {
                    sum,
                    outer_loss: outcomes.iter().map(|o| o.outer_loss).collect(),
                    lr: outcomes.iter().flat_map(|o| o.lr.iter().copied()).collect(),
                })
            }
            Self::Emu(rt) => on(rt, config, params, batch),
            Self::Cuda(rt) => on(rt.as_ref(), config, params, batch),
        }
    }

    /// The CPU engine, for what only it implements (long runs, spec §7-8).
    fn cpu_only(&self, what: &str) -> Result<&Engine> {
        match self {
            Self::Cpu(e) => Ok(e),
            Self::Emu(_) | Self::Cuda(_) => Err(ComputeError::Unsupported(format!(
                "--device {}: {what} runs on --device cpu only (the CUDA kernels implement the \
                 few-shot inner loop)",
                if matches!(self, Self::Emu(_)) { "emu" } else { "cuda" }
            ))),
        }
    }

    /// One window of every member of a long-run population (spec §8): the fixed-point sum of
    /// their gradient estimates and each member's outcome.
    pub fn window_sum(
        &self,
        config: &Config,
        params: &Params<f32>,
        items: Vec<WindowItem<'_>>,
        spec: &WindowSpec,
    ) -> Result<(FixedSum, Vec<MemberOutcome>)> {
        Ok(self.cpu_only("train-mlp")?.window_sum(config, params, items, spec)?)
    }

    /// Whole runs with the learned scheduler (evaluation of `train-mlp`).
    pub fn complete_runs(
        &self,
        config: &Config,
        params: &Params<f32>,
        items: Vec<(Box<dyn RunData<f32> + Send + '_>, Vec<f32>)>,
    ) -> Result<Vec<RunReport>> {
        Ok(self.cpu_only("train-mlp")?.complete_runs(config, params, items)?)
    }

    /// Query losses (and accuracies) after the inner loop, without gradients.
    pub fn evaluate(
        &self,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
    ) -> Result<Evaluation<f32>> {
        self.supports(config)?;
        match self {
            Self::Cpu(e) => Ok(e.evaluate(config, params, batch)?),
            Self::Emu(rt) => Ok(metasched_cuda::device_evaluate(rt, config, params, batch)?),
            Self::Cuda(rt) => Ok(metasched_cuda::device_evaluate(rt.as_ref(), config, params, batch)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use metasched_engine::init::init_params;

    use super::*;

    #[test]
    fn a_part_sum_replayed_from_a_graph_has_the_bits_of_the_launches() {
        let c = Config::sinusoid_default();
        let plain = Compute::Emu(EmuRuntime::new());
        let graphed = Compute::Emu(EmuRuntime::new().with_step_graphs(true));
        for seed in 0..2 {
            let p = init_params(&c, seed, 0.05).expect("params");
            let batch = metasched_tasks::random_batch(&c, 2, 5, 5, seed);
            let (a, b) = (
                plain.meta_gradient_sum(&c, &p, &batch).expect("plain"),
                graphed.meta_gradient_sum(&c, &p, &batch).expect("graphed"),
            );
            assert_eq!(a.sum, b.sum);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.lr), bits(&b.lr));
            assert_eq!(bits(&a.outer_loss), bits(&b.outer_loss));
        }
        if let Compute::Emu(rt) = &graphed {
            assert_eq!(rt.counters().graph_launches, 2);
        }
    }
}
