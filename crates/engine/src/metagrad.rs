//! A batch of tasks on a pool of threads: the mean meta-gradient (spec §4) and evaluation.
//!
//! Each task is computed by one thread from start to end, and per-task results are reduced
//! in task order afterwards, so the result is bitwise identical whatever the thread count.

use rayon::prelude::*;

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::fixed_sum::FixedSum;
use crate::inner_loop::{TaskOutcome, evaluate_task, task_meta_gradient};
use crate::params::Params;
use crate::real::Real;
use crate::task::TaskBatch;

/// The mean meta-gradient of a batch and what the inner runs produced.
#[derive(Debug, Clone)]
pub struct MetaGradient<T> {
    /// `J`, the mean query loss.
    pub j: T,
    /// Each task's query loss, `[B]`.
    pub outer_loss: Vec<T>,
    /// Rates used, `[B, T, G]`.
    pub lr: Vec<T>,
    /// `dJ/dNAME` for every tensor of the parameters (zero for phi tensors the configured
    /// scheduler kind does not use).
    pub grad: Params<T>,
}

/// Query losses of a batch after the inner loop, without gradients.
#[derive(Debug, Clone)]
pub struct Evaluation<T> {
    /// The mean query loss.
    pub mean: T,
    /// Each task's query loss, `[B]`.
    pub outer_loss: Vec<T>,
    /// Rates used, `[B, T, G]`.
    pub lr: Vec<T>,
    /// Each task's query accuracy (classification only).
    pub accuracy: Option<Vec<T>>,
}

/// The CPU engine: a thread pool that processes a batch's tasks in parallel.
#[derive(Debug)]
pub struct Engine {
    pool: rayon::ThreadPool,
}

impl Engine {
    /// An engine with `threads` worker threads (0: one per available core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("metasched-engine-{i}"))
            .build()
            .map_err(|e| EngineError::ThreadPool(e.to_string()))?;
        Ok(Self { pool })
    }

    /// Runs `f` on the engine's thread pool (parallel work of other modules, e.g. the
    /// windows of a population of long runs).
    pub(crate) fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Number of threads of the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    fn check<T: Real>(config: &Config, params: &Params<T>, batch: &TaskBatch<T>) -> Result<()> {
        config.validate()?;
        params.validate(config)?;
        batch.validate(config)
    }

    /// `J`, per-task losses, rates and the mean meta-gradient of a batch.
    pub fn meta_gradient<T: Real>(
        &self,
        config: &Config,
        params: &Params<T>,
        batch: &TaskBatch<T>,
    ) -> Result<MetaGradient<T>> {
        Self::check(config, params, batch)?;
        self.meta_gradient_range(config, params, batch, 0..batch.b, batch.b)
    }

    /// The contribution of tasks `range` of `batch` to the mean over `denominator` tasks:
    /// gradients of `(1/denominator) Σ_{b in range} L_b`, reduced in task order. Lets a
    /// worker compute a slice of a meta-batch. The caller has validated the inputs.
    pub fn meta_gradient_range<T: Real>(
        &self,
        config: &Config,
        params: &Params<T>,
        batch: &TaskBatch<T>,
        range: std::ops::Range<usize>,
        denominator: usize,
    ) -> Result<MetaGradient<T>> {
        let scale = T::one() / T::of(denominator as f64);
        let per_task: Vec<(Params<T>, TaskOutcome<T>)> = self.pool.install(|| {
            range
                .clone()
                .into_par_iter()
                .map(|i| {
                    let mut g = params.zeros_like();
                    let out = task_meta_gradient(&mut g, config, params, batch.task(i), scale);
                    (g, out)
                })
                .collect()
        });
        let mut grad = params.zeros_like();
        let mut outer_loss = Vec::with_capacity(per_task.len());
        let mut lr = Vec::new();
        for (g, out) in &per_task {
            grad.add_assign(g);
            outer_loss.push(out.outer_loss);
            lr.extend_from_slice(&out.lr);
        }
        let j = outer_loss.iter().copied().fold(T::zero(), |a, b| a + b) * scale;
        Ok(MetaGradient { j, outer_loss, lr, grad })
    }

    /// Per-task meta-gradients of every task in `batch` (unscaled: the gradient of the sum of
    /// their query losses), reduced into an order-independent [`FixedSum`], with each task's
    /// outcome in task order. This is what a training worker computes: however the tasks of a
    /// meta-batch are split into batches and threads, the merged sums are bitwise equal.
    pub fn meta_gradient_sum(
        &self,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
    ) -> Result<(FixedSum, Vec<TaskOutcome<f32>>)> {
        Self::check(config, params, batch)?;
        let len: usize = params.buffers().iter().map(|b| b.len()).sum();
        // Each thread folds its tasks into one fixed-point sum (integer addition is
        // associative, so however rayon splits the range the total is the same bits).
        let (sum, mut outcomes) = self.pool.install(|| {
            (0..batch.b)
                .into_par_iter()
                .fold(
                    || (FixedSum::zeros(len), Vec::new(), params.zeros_like()),
                    |(mut s, mut outs, mut g), i| {
                        for b in g.buffers_mut() {
                            b.fill(0.0);
                        }
                        let out = task_meta_gradient(&mut g, config, params, batch.task(i), 1.0);
                        s.add_params(&g);
                        outs.push((i, out));
                        (s, outs, g)
                    },
                )
                .map(|(s, outs, _)| (s, outs))
                .reduce(
                    || (FixedSum::zeros(len), Vec::new()),
                    |(mut a, mut ao), (b, bo)| {
                        a.merge(&b);
                        ao.extend(bo);
                        (a, ao)
                    },
                )
        });
        outcomes.sort_by_key(|(i, _)| *i);
        let outcomes = outcomes.into_iter().map(|(_, o)| o).collect();
        Ok((sum, outcomes))
    }

    /// Query losses and rates of every task of a batch after the inner loop.
    pub fn evaluate<T: Real>(
        &self,
        config: &Config,
        params: &Params<T>,
        batch: &TaskBatch<T>,
    ) -> Result<Evaluation<T>> {
        Self::check(config, params, batch)?;
        let per_task: Vec<TaskOutcome<T>> = self.pool.install(|| {
            (0..batch.b).into_par_iter().map(|i| evaluate_task(config, params, batch.task(i))).collect()
        });
        let outer_loss: Vec<T> = per_task.iter().map(|o| o.outer_loss).collect();
        let lr = per_task.iter().flat_map(|o| o.lr.iter().copied()).collect();
        let mean = outer_loss.iter().copied().fold(T::zero(), |a, b| a + b) / T::of(batch.b as f64);
        let accuracy = per_task.iter().map(|o| o.accuracy).collect();
        Ok(Evaluation { mean, outer_loss, lr, accuracy })
    }
}
