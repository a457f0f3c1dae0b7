//! Runs jobs: samples the tasks of a range and hands them to the device (the CPU
//! engine, the emulated device or a GPU: [`Compute`]).

use std::sync::Arc;
use std::time::Instant;

use metasched_engine::horizon::{Member, RunData, WindowItem};
use metasched_engine::rng::CounterRng;
use metasched_engine::{Config, Params};
use metasched_tasks::{RunStream, TrainRun};

use metasched_proto::{EvalResult, Job, JobResult, MemberJob, Split, StepResult, WindowResult};

use crate::compute::Compute;
use crate::device::Device;
use crate::error::{ComputeError, Result};
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
            Job::Window { step, version, first, ref members } => {
                let (sum, members, objective, lr) = self.windows(params, members)?;
                Ok(JobResult::Window(WindowResult {
                    step,
                    version,
                    first,
                    sum,
                    members,
                    objective,
                    lr,
                    compute_s: start.elapsed().as_secs_f64(),
                }))
            }
            Job::Eval { stream, first, count, .. } if matches!(self.tasks, TaskSource::TrainMlp { .. }) => {
                let (outer_loss, accuracy, lr) = self.held_out_runs(params, stream, first, count)?;
                Ok(JobResult::Eval(EvalResult {
                    first,
                    outer_loss,
                    lr,
                    accuracy,
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

    /// The long-run family, or why this run has none.
    fn long_runs(&self) -> Result<(&metasched_proto::LongRuns, &metasched_tasks::OpenedDataset, u64)> {
        match &self.tasks {
            TaskSource::TrainMlp { runs, data, spec } => Ok((runs, data, spec.seed)),
            _ => Err(ComputeError::BadSpec("a window job for a run without train-mlp tasks".into())),
        }
    }

    /// One window of each member (spec §8): members arrive with their state (or none: a
    /// fresh run), the PES noise is a function of the seed, the run and the window's first
    /// step, so a job sent again computes the same bits.
    #[allow(clippy::type_complexity)]
    fn windows(
        &self,
        params: &Params<f32>,
        members: &[MemberJob],
    ) -> Result<(metasched_engine::FixedSum, Vec<Member<f32>>, Vec<f32>, Vec<f32>)> {
        let (runs, data, seed) = self.long_runs()?;
        let config = &self.config;
        let spec = runs.window_spec(config.inner.steps);
        let mut items = Vec::with_capacity(members.len());
        for m in members {
            let run = TrainRun::<f32>::open(data, config, seed, RunStream::Train, m.run, runs.batch)?;
            let member = match &m.state {
                Some(state) => {
                    state.validate(config, params, spec.estimator)?;
                    state.clone()
                }
                None => Member::fresh(config, params, spec.estimator, run.learner_init()),
            };
            let noise = CounterRng::new(seed, &[PES_NOISE, m.run, (member.step() + m.burn_in) as u64]);
            let data: Box<dyn RunData<f32> + Send> = Box::new(run);
            items.push(WindowItem { data, member, burn_in: m.burn_in, noise });
        }
        let (sum, outcomes) = self.compute.window_sum(config, params, items, &spec)?;
        let g = config.groups();
        let mut lr = Vec::with_capacity(outcomes.len() * g);
        for o in &outcomes {
            let steps = (o.window.lr.len() / g.max(1)).max(1);
            for k in 0..g {
                let total: f64 = o.window.lr.iter().skip(k).step_by(g).map(|&a| f64::from(a)).sum();
                lr.push((total / steps as f64) as f32);
            }
        }
        let objective = outcomes.iter().map(|o| o.objective).collect();
        let members = outcomes.into_iter().map(|o| o.member).collect();
        Ok((sum, members, objective, lr))
    }

    /// Whole held-out runs `first .. first + count` of evaluation stream `stream` with the
    /// learned scheduler: final validation loss, accuracy (classification) and every rate.
    fn held_out_runs(
        &self,
        params: &Params<f32>,
        stream: u64,
        first: usize,
        count: usize,
    ) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (runs, data, seed) = self.long_runs()?;
        let config = &self.config;
        let mut items: Vec<(Box<dyn RunData<f32> + Send>, Vec<f32>)> = Vec::with_capacity(count);
        for i in first..first + count {
            let run = TrainRun::<f32>::open(
                data,
                config,
                seed,
                RunStream::Test,
                held_out_run(stream, i),
                runs.batch,
            )?;
            let theta = run.learner_init();
            items.push((Box::new(run), theta));
        }
        let reports = self.compute.complete_runs(config, params, items)?;
        let loss = reports.iter().map(|r| r.val_loss).collect();
        let accuracy = reports.iter().filter_map(|r| r.val_accuracy).collect();
        let lr = reports.into_iter().flat_map(|r| r.lr).collect();
        Ok((loss, accuracy, lr))
    }
}

/// First id of the PES noise streams (`"pesnoise"`): a member's perturbation of the window
/// starting at step `t` of run `r` is the stream `(seed, [PES_NOISE, r, t])`.
pub const PES_NOISE: u64 = 0x7065_736e_6f69_7365;

/// The run id of held-out run `i` of evaluation stream `stream` (streams are 2^32 runs apart).
pub fn held_out_run(stream: u64, i: usize) -> u64 {
    (stream << 32) | i as u64
}
