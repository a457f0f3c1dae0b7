//! A batch of tasks on a pool of threads: the mean meta-gradient (spec §4) and evaluation.
//!
//! Each task is computed by one thread from start to end, and per-task results are reduced
//! in task order afterwards, so the result is bitwise identical whatever the thread count.

use std::any::Any;

use rayon::prelude::*;

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::fixed_sum::FixedSum;
use crate::inner_loop::{TaskOutcome, evaluate_task, task_meta_gradient, task_meta_gradient_written};
use crate::inner_passes::add_final;
use crate::lane_linalg::LANES;
use crate::params::Params;
use crate::real::Real;
use crate::task::{TaskBatch, TaskRef};
use crate::task_group::{evaluate_group, group_meta_gradient};
use crate::task_pool::Aligned;

/// Groups smaller than this run task by task: a group costs as much as a full one.
const MIN_GROUP: usize = LANES / 4;

/// Largest learner (parameters) run in task groups. A group keeps `LANES` copies of theta per
/// inner step: past this the trace leaves the caches and the one-task path, whose products
/// reuse one theta across the support set, is faster (measured: 1-256-256-1, 66,817
/// parameters, slower lane by lane; 64-128-128-5, 25,733, faster).
pub(crate) const MAX_GROUP_PARAMS: usize = 32_768;

/// Whether `config`'s learner is small enough for task groups.
fn fits_groups(config: &Config) -> bool {
    crate::layout::ThetaLayout::new(config).len() <= MAX_GROUP_PARAMS
}

/// The f32 views of a generic batch's parameters and tasks, when `T` is f32 (the task-lane
/// path is f32 only).
fn as_f32<'a, T: Real>(
    params: &'a Params<T>,
    batch: &'a TaskBatch<T>,
) -> Option<(&'a Params<f32>, &'a TaskBatch<f32>)> {
    let p = (params as &dyn Any).downcast_ref::<Params<f32>>()?;
    let b = (batch as &dyn Any).downcast_ref::<TaskBatch<f32>>()?;
    Some((p, b))
}

/// A value of type `U` as type `T`, when they are the same type.
fn same_type<U: 'static, T: 'static>(x: U) -> Option<T> {
    (Box::new(x) as Box<dyn Any>).downcast::<T>().ok().map(|b| *b)
}

/// `range` cut into consecutive groups of at most [`LANES`] tasks: as few groups as lanes allow,
/// of balanced sizes (25 tasks: 13 + 12, not 16 + 9), so that on several threads the largest
/// group, the critical path, does as little per-task work (scheduler transcendentals, loss,
/// outcomes) as possible; a remainder too small for a group (< [`MIN_GROUP`]) stays a
/// remainder (it runs task by task, cheaper than a group of lanes). Which group a task lands
/// in never changes its bits.
fn groups_of(range: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
    let len = range.len();
    let count = len.div_ceil(LANES);
    if count < 2 || len.is_multiple_of(LANES) || len % LANES < MIN_GROUP {
        return range.clone().step_by(LANES).map(|s| s..(s + LANES).min(range.end)).collect();
    }
    let (base, extra) = (len / count, len % count);
    let mut start = range.start;
    (0..count)
        .map(|g| {
            let size = base + usize::from(g < extra);
            let r = start..start + size;
            start += size;
            r
        })
        .collect()
}

/// Each task's meta-gradient (scaled by `scale`) and outcome for the tasks of `range`: a group
/// of tasks lane by lane, or task by task when the group is small. Both are bitwise equal.
fn group_results(
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
    range: std::ops::Range<usize>,
    scale: f32,
) -> Vec<(Params<f32>, TaskOutcome<f32>)> {
    let mut grads: Vec<Params<f32>> = range.clone().map(|_| params.zeros_like()).collect();
    let outs = if range.len() < MIN_GROUP {
        grads
            .iter_mut()
            .zip(range)
            .map(|(g, i)| task_meta_gradient(g, config, params, batch.task(i), scale))
            .collect()
    } else {
        let tasks: Vec<TaskRef<'_, f32>> = range.map(|i| batch.task(i)).collect();
        group_meta_gradient(&mut grads, config, params, &tasks, scale)
    };
    grads.into_iter().zip(outs).collect()
}

/// Elements per chunk of [`sum_in_task_order`]'s parallel sum (32 KB of f32: a chunk of
/// every task's gradient passes through L1 and L2 once).
const SUM_CHUNK: usize = 8192;

/// `Σ_b grads[b]` in task order, element by element: each element is `((0 + g_0) + g_1) + …`,
/// bit for bit [`Params::add_assign`] task after task. Buffers longer than [`SUM_CHUNK`] are
/// cut into chunks spread over the current thread pool (the wide learner's 25 per-task
/// gradients, 6.7 MB, were summed on one thread: 3% of a meta-step on one thread, twice
/// that share on two). Which thread sums a chunk changes no bit.
fn sum_in_task_order<T: Real>(params: &Params<T>, grads: &[&Params<T>]) -> Params<T> {
    let mut sum = params.zeros_like();
    let parts: Vec<Vec<&[T]>> = grads.iter().map(|g| g.buffers()).collect();
    for (i, out) in sum.buffers_mut().into_iter().enumerate() {
        let add = |(c, chunk): (usize, &mut [T])| {
            let at = c * SUM_CHUNK;
            let len = chunk.len();
            for part in &parts {
                add_final(chunk, &part[i][at..at + len], None, true);
            }
        };
        if out.len() > SUM_CHUNK {
            out.par_chunks_mut(SUM_CHUNK).enumerate().for_each(add);
        } else {
            out.chunks_mut(SUM_CHUNK).enumerate().for_each(add);
        }
    }
    sum
}

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
    /// Whether f32 batches run in groups of tasks lane by lane ([`crate::task_group`]); off
    /// with `METASCHED_TASK_LANES=0` (for benchmarks of the one-task path; same bits), and on
    /// CPUs without AVX-512, where the portable lane products are no faster.
    lanes: bool,
    /// The one-task path's per-task gradients of the last batch (a `Vec<Params<T>>`), reused
    /// by the next: fresh ones cost page faults and zeroing (the wide learner's are 267 KB).
    task_grads: std::sync::Mutex<Option<Box<dyn Any + Send>>>,
}

impl Engine {
    /// An engine with `threads` worker threads (0: one per available core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("metasched-engine-{i}"))
            .build()
            .map_err(|e| EngineError::ThreadPool(e.to_string()))?;
        let lanes = std::env::var("METASCHED_TASK_LANES").map_or(true, |v| v != "0")
            && crate::lane_linalg::has_avx512();
        Ok(Self { pool, lanes, task_grads: std::sync::Mutex::new(None) })
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

    /// `count` gradients shaped like `params`: those of the last batch where they fit (not
    /// zeroed: [`task_meta_gradient_written`] overwrites them), else new zeroed ones.
    fn task_grads<T: Real>(&self, params: &Params<T>, count: usize) -> Vec<Params<T>> {
        let kept = self.task_grads.lock().ok().and_then(|mut k| k.take());
        let mut grads = kept.and_then(|b| b.downcast::<Vec<Params<T>>>().ok()).map_or_else(Vec::new, |b| *b);
        let shape = |p: &Params<T>| p.buffers().iter().map(|b| b.len()).collect::<Vec<_>>();
        let want = shape(params);
        grads.retain(|g| shape(g) == want);
        grads.truncate(count);
        while grads.len() < count {
            grads.push(params.zeros_like());
        }
        grads
    }

    /// Keeps per-task gradients for the next batch ([`Engine::task_grads`]).
    fn keep_task_grads<T: Real>(&self, grads: Vec<Params<T>>) {
        if let Ok(mut k) = self.task_grads.lock() {
            *k = Some(Box::new(grads));
        }
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
        let lanes = if self.lanes && fits_groups(config) { as_f32(params, batch) } else { None };
        let by_groups = lanes.is_some();
        let per_task: Vec<(Params<T>, TaskOutcome<T>)> = match lanes {
            Some((p32, b32)) => {
                let s32 = scale.to_f32().unwrap_or(f32::NAN);
                let per_group: Vec<Vec<(Params<f32>, TaskOutcome<f32>)>> = self.pool.install(|| {
                    groups_of(range.clone())
                        .into_par_iter()
                        .map(|r| group_results(config, p32, b32, r, s32))
                        .collect()
                });
                let flat: Vec<(Params<f32>, TaskOutcome<f32>)> = per_group.into_iter().flatten().collect();
                same_type(flat).expect("T is f32 on this path")
            }
            None => {
                let mut grads = self.task_grads(params, range.len());
                // One copy of theta on 64-byte lines for every task (the kernels' rows).
                let mut theta0 = Aligned::take_dirty(params.theta.len());
                theta0.copy_from_slice(&params.theta);
                let outs: Vec<TaskOutcome<T>> = self.pool.install(|| {
                    grads
                        .par_iter_mut()
                        .zip(range.clone().into_par_iter())
                        .map(|(g, i)| {
                            task_meta_gradient_written(g, config, (params, &theta0), batch.task(i), scale)
                        })
                        .collect()
                });
                theta0.give();
                grads.into_iter().zip(outs).collect()
            }
        };
        let grads: Vec<&Params<T>> = per_task.iter().map(|(g, _)| g).collect();
        let grad = self.pool.install(|| sum_in_task_order(params, &grads));
        let mut outer_loss = Vec::with_capacity(per_task.len());
        let mut lr = Vec::new();
        for (_, out) in &per_task {
            outer_loss.push(out.outer_loss);
            lr.extend_from_slice(&out.lr);
        }
        if !by_groups {
            self.keep_task_grads(per_task.into_iter().map(|(g, _)| g).collect());
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
        if self.lanes && fits_groups(config) {
            return Ok(self.meta_gradient_sum_groups(config, params, batch, len));
        }
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

    /// [`Engine::meta_gradient_sum`] in groups of tasks lane by lane (the same bits).
    fn meta_gradient_sum_groups(
        &self,
        config: &Config,
        params: &Params<f32>,
        batch: &TaskBatch<f32>,
        len: usize,
    ) -> (FixedSum, Vec<TaskOutcome<f32>>) {
        let (sum, mut outcomes) = self.pool.install(|| {
            groups_of(0..batch.b)
                .into_par_iter()
                .fold(
                    || (FixedSum::zeros(len), Vec::new()),
                    |(mut s, mut outs), r| {
                        let start = r.start;
                        for (j, (g, out)) in
                            group_results(config, params, batch, r, 1.0).into_iter().enumerate()
                        {
                            s.add_params(&g);
                            outs.push((start + j, out));
                        }
                        (s, outs)
                    },
                )
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
        (sum, outcomes.into_iter().map(|(_, o)| o).collect())
    }

    /// Query losses and rates of every task of a batch after the inner loop.
    pub fn evaluate<T: Real>(
        &self,
        config: &Config,
        params: &Params<T>,
        batch: &TaskBatch<T>,
    ) -> Result<Evaluation<T>> {
        Self::check(config, params, batch)?;
        let lanes = if self.lanes && fits_groups(config) { as_f32(params, batch) } else { None };
        let per_task: Vec<TaskOutcome<T>> = match lanes {
            Some((p32, b32)) => {
                let per_group: Vec<Vec<TaskOutcome<f32>>> = self.pool.install(|| {
                    groups_of(0..batch.b)
                        .into_par_iter()
                        .map(|r| {
                            if r.len() < MIN_GROUP {
                                r.map(|i| evaluate_task(config, p32, b32.task(i))).collect()
                            } else {
                                let tasks: Vec<TaskRef<'_, f32>> = r.map(|i| b32.task(i)).collect();
                                evaluate_group(config, p32, &tasks)
                            }
                        })
                        .collect()
                });
                let flat: Vec<TaskOutcome<f32>> = per_group.into_iter().flatten().collect();
                same_type(flat).expect("T is f32 on this path")
            }
            None => self.pool.install(|| {
                (0..batch.b).into_par_iter().map(|i| evaluate_task(config, params, batch.task(i))).collect()
            }),
        };
        let outer_loss: Vec<T> = per_task.iter().map(|o| o.outer_loss).collect();
        let lr = per_task.iter().flat_map(|o| o.lr.iter().copied()).collect();
        let mean = outer_loss.iter().copied().fold(T::zero(), |a, b| a + b) / T::of(batch.b as f64);
        let accuracy = per_task.iter().map(|o| o.accuracy).collect();
        Ok(Evaluation { mean, outer_loss, lr, accuracy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(range: std::ops::Range<usize>) -> Vec<usize> {
        let groups = groups_of(range.clone());
        let mut next = range.start;
        for g in &groups {
            assert_eq!(g.start, next, "groups are consecutive");
            assert!(!g.is_empty() && g.len() <= LANES, "group {g:?} of at most {LANES} tasks");
            next = g.end;
        }
        assert_eq!(next, range.end, "groups cover the range");
        groups.iter().map(|g| g.len()).collect()
    }

    /// Balanced groups where that keeps the number of lane groups; small remainders stay.
    #[test]
    fn groups_are_balanced_without_adding_groups() {
        assert_eq!(sizes(0..25), vec![13, 12]);
        assert_eq!(sizes(5..30), vec![13, 12]);
        assert_eq!(sizes(0..9), vec![9]);
        assert_eq!(sizes(0..16), vec![16]);
        assert_eq!(sizes(0..32), vec![16, 16]);
        assert_eq!(sizes(0..17), vec![16, 1]);
        assert_eq!(sizes(0..19), vec![16, 3]);
        assert_eq!(sizes(0..20), vec![10, 10]);
        assert_eq!(sizes(0..100), vec![15, 15, 14, 14, 14, 14, 14]);
        assert_eq!(sizes(0..0), Vec::<usize>::new());
    }
}
