//! Workers as threads of the coordinator's process, talking over channels: the standalone
//! (single-machine) mode of `meta-coord train`: a [`Transport`] under the same step skeleton
//! as remote workers ([`super::pool::WorkerPool`]).
//!
//! Each thread runs the real [`Executor`], the one `meta-worker` runs behind a socket. The
//! coordinator process opens a device here only when the user asks for one (`train --device
//! emu|cuda:N`); otherwise device work goes through worker processes.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use anyhow::{Context, anyhow};
use metasched_compute::{Compute, Device, Executor, TaskSource};
use metasched_engine::{Config, Params};
use metasched_proto::{Job, JobResult, TaskSpec};

use super::pool::{AnswerShape, check_answer};
use super::transport::{Gathered, Transport};

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
    shape: AnswerShape,
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
        Ok(Self { workers: out, shape: AnswerShape::of_run(config, spec) })
    }
}

impl Transport for LocalPool {
    fn live(&self) -> usize {
        self.workers.len()
    }

    fn ready(&mut self) -> anyhow::Result<usize> {
        Ok(self.workers.len())
    }

    /// Sends part `i` to worker `i` for every part, then gathers the replies in part order
    /// (threads neither vanish nor hang, so there is nothing to re-dispatch).
    fn dispatch_gather(
        &mut self,
        jobs: &[Job],
        params: &Arc<Params<f32>>,
        _version: u64,
    ) -> anyhow::Result<Gathered> {
        for (w, job) in self.workers.iter().zip(jobs) {
            let tx = w.tx.as_ref().ok_or_else(|| anyhow!("worker already stopped"))?;
            tx.send((job.clone(), Arc::clone(params)))
                .map_err(|_| anyhow!("a local worker thread has died"))?;
        }
        let mut parts = Vec::with_capacity(jobs.len());
        for (i, w) in self.workers.iter().take(jobs.len()).enumerate() {
            let reply = w.rx.recv().map_err(|_| anyhow!("a local worker thread has died"))??;
            // In-process workers run this binary's own code: a wrong answer is a bug, not a
            // fault to survive.
            check_answer(&self.shape, &jobs[i], &reply)
                .map_err(|e| anyhow!("local worker {i} answered {e}"))?;
            parts.push((i as u32, reply));
        }
        Ok(Gathered { parts, ..Gathered::default() })
    }

    /// In-process executors take no parameter version: any will do.
    fn eval_version(&mut self) -> u64 {
        u64::MAX
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
