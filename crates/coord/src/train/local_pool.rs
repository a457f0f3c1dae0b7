//! Workers as threads of the coordinator's process, talking over channels: the single-machine
//! mode of `meta-coord train`, behind the same [`WorkerPool`] interface as remote workers.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use metasched_compute::{Compute, Device, Executor, TaskSource};
use metasched_engine::{Config, Params};
use metasched_proto::{Job, JobResult, TaskSpec};

use super::pool::{
    EvalOutput, EvalSpec, StepOutput, WorkerPool, assemble_eval, assemble_step, check_step_answers, eval_job,
    split_range, step_job,
};

type Request = (Job, Arc<Params<f32>>);
type Reply = metasched_compute::Result<JobResult>;

struct LocalWorker {
    tx: Option<Sender<Request>>,
    rx: Receiver<Reply>,
    handle: Option<JoinHandle<()>>,
}

/// A pool of in-process workers, each an [`Executor`] on its own thread.
pub struct LocalPool {
    workers: Vec<LocalWorker>,
}

impl LocalPool {
    /// Starts `workers` workers with `threads` engine threads each. Every worker builds its
    /// own task source from `spec`, as a remote worker would.
    pub fn start(config: &Config, spec: &TaskSpec, workers: usize, threads: usize) -> anyhow::Result<Self> {
        Self::start_on(config, spec, workers, threads, Device::Cpu)
    }

    /// [`LocalPool::start`] on `device`: CPU workers each get their own engine; on a device
    /// (emulated or a GPU) the workers share one opened device.
    pub fn start_on(
        config: &Config,
        spec: &TaskSpec,
        workers: usize,
        threads: usize,
        device: Device,
    ) -> anyhow::Result<Self> {
        if device == Device::Emu {
            tracing::warn!(
                "--device emu runs the CUDA kernels on a CPU emulator, hundreds of times slower than \
                 --device cpu (docs/PERFORMANCE.md): use it to check the device code path, not to train"
            );
        }
        let shared = match device {
            Device::Cpu => None,
            d => Some(Arc::new(crate::device::open(d, threads)?)),
        };
        let mut out = Vec::with_capacity(workers);
        for i in 0..workers {
            let source = TaskSource::open(spec, config).context("cannot open the task source")?;
            let exec = match &shared {
                None => Executor::new(config.clone(), source, threads)?,
                Some(c) => Executor::with_compute(config.clone(), source, Arc::clone(c))?,
            };
            let (tx, worker_rx) = channel::<Request>();
            let (worker_tx, rx) = channel::<Reply>();
            let handle = std::thread::Builder::new()
                .name(format!("metasched-worker-{i}"))
                .spawn(move || {
                    for (job, params) in worker_rx {
                        if worker_tx.send(exec.run(&job, &params)).is_err() {
                            break;
                        }
                    }
                })
                .context("cannot start a worker thread")?;
            out.push(LocalWorker { tx: Some(tx), rx, handle: Some(handle) });
        }
        let on = shared.as_deref().map_or_else(|| "cpu".to_string(), Compute::describe);
        tracing::info!(workers, threads, device = %on, "local workers started");
        Ok(Self { workers: out })
    }

    /// Sends part `i` of a job to worker `i` for every part, then gathers the replies in part
    /// order.
    fn scatter_gather(
        &mut self,
        jobs: Vec<Job>,
        params: &Arc<Params<f32>>,
    ) -> anyhow::Result<Vec<JobResult>> {
        for (w, job) in self.workers.iter().zip(&jobs) {
            let tx = w.tx.as_ref().ok_or_else(|| anyhow!("worker already stopped"))?;
            tx.send((job.clone(), Arc::clone(params)))
                .map_err(|_| anyhow!("a local worker thread has died"))?;
        }
        let mut out = Vec::with_capacity(jobs.len());
        for w in self.workers.iter().take(jobs.len()) {
            let reply = w.rx.recv().map_err(|_| anyhow!("a local worker thread has died"))?;
            out.push(reply?);
        }
        Ok(out)
    }
}

impl WorkerPool for LocalPool {
    fn size(&self) -> usize {
        self.workers.len()
    }

    fn meta_step(
        &mut self,
        params: &Arc<Params<f32>>,
        version: u64,
        step: u64,
        batch: usize,
    ) -> anyhow::Result<StepOutput> {
        let ranges = split_range(batch, self.workers.len());
        let jobs = ranges.iter().map(|r| step_job(step, version, r)).collect();
        let len = params.buffers().iter().map(|b| b.len()).sum();
        let mut parts = Vec::new();
        for (i, reply) in self.scatter_gather(jobs, params)?.into_iter().enumerate() {
            let JobResult::Step(r) = reply else {
                return Err(anyhow!("worker answered a step with an evaluation"));
            };
            parts.push((i as u32, r));
        }
        check_step_answers(&parts, step, version)?;
        Ok(assemble_step(parts, len, 0.0, 0))
    }

    fn evaluate(&mut self, params: &Arc<Params<f32>>, spec: EvalSpec) -> anyhow::Result<EvalOutput> {
        let ranges = split_range(spec.tasks, self.workers.len());
        let jobs = ranges.iter().map(|r| eval_job(&spec, r)).collect();
        let mut parts = Vec::new();
        for reply in self.scatter_gather(jobs, params)? {
            let JobResult::Eval(r) = reply else {
                return Err(anyhow!("worker answered an evaluation with a step"));
            };
            parts.push(r);
        }
        Ok(assemble_eval(parts))
    }
}

impl Drop for LocalPool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.tx.take();
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}
