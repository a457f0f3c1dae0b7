//! Runs jobs: samples the tasks of a range and hands them to the device (the CPU
//! engine, the emulated device or a GPU: [`Compute`]).

use std::sync::Arc;
use std::time::Instant;

use metasched_engine::{Config, Params};

use metasched_proto::{EvalResult, Job, JobResult, Split, StepResult};

use crate::compute::Compute;
use crate::device::Device;
use crate::error::Result;
use crate::task_source::TaskSource;

/// A worker's compute: the model configuration, its task source and its device — one value
/// that turns a wire [`Job`] into its result, whoever carries the job.
#[derive(Debug)]
pub struct Executor {
    config: Config,
    tasks: TaskSource,
    compute: Arc<Compute>,
}

impl Executor {
    /// An executor on the CPU engine with `threads` threads (0: one per core).
    pub fn new(config: Config, tasks: TaskSource, threads: usize) -> Result<Self> {
        Self::with_compute(config, tasks, Arc::new(Compute::open(Device::Cpu, threads)?))
    }

    /// An executor on an already opened device (a worker opens its GPU once and keeps it
    /// across coordinator sessions).
    pub fn with_compute(config: Config, tasks: TaskSource, compute: Arc<Compute>) -> Result<Self> {
        config.validate()?;
        compute.supports(&config)?;
        Ok(Self { config, tasks, compute })
    }

    /// The model configuration (a worker checks parameter blobs against it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device jobs run on (a worker's reduction group runs its collective there too).
    pub fn compute(&self) -> &Arc<Compute> {
        &self.compute
    }

    /// Runs `job` with the parameters `params`: the one place a job of the wire protocol
    /// becomes tasks and a device computation, for in-process and TCP workers alike.
    pub fn run(&self, job: &Job, params: &Params<f32>) -> Result<JobResult> {
        let start = Instant::now();
        match *job {
            Job::MetaGrad { step, version, first, count } => {
                let batch = self.tasks.sample(Split::Train, step, first, count)?;
                let part = self.compute.meta_gradient_sum(&self.config, params, &batch)?;
                Ok(JobResult::Step(StepResult {
                    step,
                    version,
                    first,
                    sum: part.sum,
                    outer_loss: part.outer_loss,
                    lr: part.lr,
                    compute_s: start.elapsed().as_secs_f64(),
                }))
            }
            Job::Eval { split, stream, first, count, shots, query } => {
                let batch = self.tasks.sample_with(split, stream, first, count, shots, query)?;
                let ev = self.compute.evaluate(&self.config, params, &batch)?;
                Ok(JobResult::Eval(EvalResult {
                    first,
                    outer_loss: ev.outer_loss,
                    lr: ev.lr,
                    accuracy: ev.accuracy.unwrap_or_default(),
                    compute_s: start.elapsed().as_secs_f64(),
                }))
            }
        }
    }
}
