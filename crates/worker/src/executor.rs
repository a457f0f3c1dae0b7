//! Runs jobs: samples the tasks of a range and hands them to the CPU engine.

use std::time::Instant;

use metasched_engine::{Config, Engine, Params};

use crate::error::Result;
use crate::task_source::{Split, TaskSource};
use metasched_proto::{EvalResult, Job, JobResult, StepResult};

/// A worker's compute: the model configuration, its task source and a CPU engine.
#[derive(Debug)]
pub struct Executor {
    config: Config,
    tasks: TaskSource,
    engine: Engine,
}

impl Executor {
    /// An executor with `threads` engine threads (0: one per core).
    pub fn new(config: Config, tasks: TaskSource, threads: usize) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, tasks, engine: Engine::new(threads)? })
    }

    /// The model configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Runs `job` with the parameters `params` (of version `version`).
    pub fn run(&self, job: &Job, params: &Params<f32>) -> Result<JobResult> {
        let start = Instant::now();
        match *job {
            Job::MetaGrad { step, version, first, count } => {
                let batch = self.tasks.sample(Split::Train, step, first, count)?;
                let (sum, outcomes) = self.engine.meta_gradient_sum(&self.config, params, &batch)?;
                Ok(JobResult::Step(StepResult {
                    step,
                    version,
                    first,
                    sum,
                    outer_loss: outcomes.iter().map(|o| o.outer_loss).collect(),
                    lr: outcomes.iter().flat_map(|o| o.lr.iter().copied()).collect(),
                    compute_s: start.elapsed().as_secs_f64(),
                }))
            }
            Job::Eval { split, stream, first, count, shots, query } => {
                let batch = self.tasks.sample_with(split, stream, first, count, shots, query)?;
                let ev = self.engine.evaluate(&self.config, params, &batch)?;
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
