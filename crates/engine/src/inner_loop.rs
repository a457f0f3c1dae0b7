//! One task: the inner SGD loop (spec §3) and its exact meta-gradient (spec §4).

use crate::config::{Config, FEATURES};
use crate::inner_optimizer::OptimizerTrace;
use crate::inner_passes::{add_final, reverse_group, sgd_step, sum_of_squares};
use crate::metagrad::MAX_GROUP_PARAMS;
use crate::mlp::{HvpScratch, Mlp, MlpCache};
use crate::params::Params;
use crate::real::Real;
use crate::scheduler::SchedulerTrace;
use crate::task::TaskRef;
use crate::task_pool::{self, Aligned};

/// What one task's inner run produced.
#[derive(Debug, Clone)]
pub struct TaskOutcome<T> {
    /// Query loss after the inner loop, `L_query(theta_T)`.
    pub outer_loss: T,
    /// Rates used, `[T, G]`.
    pub lr: Vec<T>,
    /// Scheduler features of each step (what the inner run actually fed the scheduler).
    pub features: Vec<[T; FEATURES]>,
    /// Query accuracy after the inner loop (classification only).
    pub accuracy: Option<T>,
}

/// The forward state of one inner run, kept for the backward pass.
struct Unroll<T> {
    mlp: Mlp,
    /// `theta_t`, `[T+1, P]` with rows `stride` apart (aligned: see [`row_stride`]).
    thetas: Aligned<T>,
    /// `g_t`, `[T, P]` with rows `stride` apart.
    grads: Aligned<T>,
    /// Distance between the rows of `thetas` and `grads`.
    stride: usize,
    /// Support-set caches at each `theta_t` (for the Hessian-vector products).
    caches: Vec<MlpCache<T>>,
    sched: SchedulerTrace<T>,
    /// The inner optimiser's state at every step.
    opt: OptimizerTrace<T>,
    /// Query gradient at `theta_T`.
    v: Aligned<T>,
    outer_loss: T,
    accuracy: Option<T>,
}

/// `[ln(l + 1e-8), ln(||g|| + 1e-8), t / T]`.
///
/// `||g||²` is summed in order for learners that task groups may run (at most
/// [`MAX_GROUP_PARAMS`] parameters: the groups sum the same squares in the same order, lane
/// by lane). Larger learners (the wide one, 66,817) only ever run here, and a serial sum is
/// one dependent addition per parameter (a tenth of a wide meta-step): they use the eight
/// fixed-order partial sums of [`crate::linalg::dot`].
pub(crate) fn features<T: Real>(loss: T, grad: &[T], t: usize, steps: usize) -> [T; FEATURES] {
    let eps = T::of(1e-8);
    let sq = if grad.len() > MAX_GROUP_PARAMS {
        sum_of_squares(grad)
    } else {
        grad.iter().map(|&g| g * g).sum::<T>()
    };
    let norm = sq.sqrt();
    [(loss + eps).ln(), (norm + eps).ln(), T::of(t as f64) / T::of(steps as f64)]
}

/// Runs the inner loop, recording what the backward pass needs. With `fixed_features`, the
/// scheduler reads those instead of the ones the run produces (finite-difference checks hold
/// them constant, as spec §3 treats them).
fn unroll<T: Real>(
    config: &Config,
    params: &Params<T>,
    task: TaskRef<'_, T>,
    fixed_features: Option<&[[T; FEATURES]]>,
    keep_caches: bool,
) -> Unroll<T> {
    let mlp = Mlp::new(config);
    let p = mlp.layout.len();
    let steps = config.inner.steps;
    // Buffers from this thread's free list, not zeroed: every value is written before it is
    // read (`theta_{t+1}` by the update below, whose groups cover theta; `g_t` and the caches
    // by `loss_and_grad`).
    let stride = row_stride::<T>(p);
    let mut thetas = Aligned::take_dirty((steps + 1) * stride);
    thetas[..p].copy_from_slice(&params.theta);
    let mut grads = Aligned::take_dirty(steps * stride);
    // One cache per step when the backward pass needs them, else one reused cache.
    let mut caches: Vec<MlpCache<T>> =
        (0..if keep_caches { steps } else { 1 }).map(|_| mlp.cache_reused(task.support.n)).collect();
    let mut sched = SchedulerTrace::new(config);
    let mut opt = OptimizerTrace::new(config.inner.optimizer, steps, p, keep_caches);
    for t in 0..steps {
        let (done, next) = thetas.split_at_mut((t + 1) * stride);
        let theta = &done[t * stride..t * stride + p];
        let g = &mut grads[t * stride..t * stride + p];
        let cache = &mut caches[if keep_caches { t } else { 0 }];
        let loss = mlp.loss_and_grad(g, cache, theta, task.support.x, task.support.y);
        let x = match fixed_features {
            Some(f) => f[t],
            None => features(loss, g, t, steps),
        };
        let rates = sched.step(params, t, x);
        let d = opt.step(t, g);
        let theta_next = &mut next[..p];
        for (k, &a) in rates.iter().enumerate() {
            let r = mlp.layout.group(k);
            sgd_step(&mut theta_next[r.clone()], &theta[r.clone()], &d[r], a);
        }
    }
    let mut qcache = mlp.cache_reused(task.query.n);
    let mut v = Aligned::take_dirty(p);
    let theta_t = &thetas[steps * stride..steps * stride + p];
    let outer_loss = mlp.loss_and_grad(&mut v, &mut qcache, theta_t, task.query.x, task.query.y);
    let accuracy = mlp.accuracy_of_output(&qcache, task.query.y);
    qcache.recycle();
    Unroll { mlp, thetas, grads, stride, caches, sched, opt, v, outer_loss, accuracy }
}

/// Distance between consecutive steps' rows in the trace: `p` rounded up to whole 64-byte
/// lines, so that every step's parameters (and the weight matrices within, at offsets that
/// are multiples of 16 for the wide learner) start on a line as the first does.
fn row_stride<T>(p: usize) -> usize {
    p.next_multiple_of((64 / std::mem::size_of::<T>().max(1)).max(1))
}

/// Gives an unroll's buffers back to this thread's free list ([`task_pool`]).
fn recycle<T: Real>(thetas: Aligned<T>, grads: Aligned<T>, caches: Vec<MlpCache<T>>, v: Aligned<T>) {
    thetas.give();
    grads.give();
    caches.into_iter().for_each(MlpCache::recycle);
    v.give();
}

/// Query loss after the inner loop, and the rates used, without any gradient.
pub fn evaluate_task<T: Real>(config: &Config, params: &Params<T>, task: TaskRef<'_, T>) -> TaskOutcome<T> {
    run_task(config, params, task, None)
}

/// Like [`evaluate_task`], optionally with the scheduler's features held at given values.
pub fn run_task<T: Real>(
    config: &Config,
    params: &Params<T>,
    task: TaskRef<'_, T>,
    fixed_features: Option<&[[T; FEATURES]]>,
) -> TaskOutcome<T> {
    let u = unroll(config, params, task, fixed_features, false);
    let out = TaskOutcome {
        outer_loss: u.outer_loss,
        lr: u.sched.rates().to_vec(),
        features: u.sched.features().to_vec(),
        accuracy: u.accuracy,
    };
    recycle(u.thetas, u.grads, u.caches, u.v);
    out
}

/// The meta-gradient of `scale · L_query(theta_T)` for one task, accumulated into `grad`
/// (which must have the slots of `params`). `scale` is `1/B` for a batch mean.
pub fn task_meta_gradient<T: Real>(
    grad: &mut Params<T>,
    config: &Config,
    params: &Params<T>,
    task: TaskRef<'_, T>,
    scale: T,
) -> TaskOutcome<T> {
    let second_order = !config.inner.first_order;
    // The optimiser's per-step state is needed for `d_t` even at first order (momentum, adam).
    let keep = second_order || !config.inner.optimizer.is_sgd();
    let Unroll { mlp, thetas, grads, stride, caches, sched, mut opt, mut v, outer_loss, accuracy } =
        unroll(config, params, task, None, keep);
    let p = mlp.layout.len();
    let g_count = mlp.layout.groups();
    let steps = config.inner.steps;
    for x in v.iter_mut() {
        *x *= scale;
    }
    // Written before read: `da` for every (t, k) below, `u` group by group, `hv` and the
    // scratch by `hvp`. The optimiser's adjoints `wm`, `ws` start at zero.
    let mut da = task_pool::take_dirty(steps * g_count);
    let mut u = Aligned::take_dirty(p);
    let mut hv = Aligned::take_dirty(p);
    let mut scratch: HvpScratch<T> = mlp.hvp_scratch_reused(task.support.n);
    let (mut wm, mut ws) = if config.inner.optimizer.is_sgd() {
        (Vec::new(), Vec::new())
    } else {
        (task_pool::take(p), task_pool::take(p))
    };
    // Each step's `v −= hv` is applied by the pass that next reads `v` (the next step's, or
    // the final `grad += v`): one pass over `v`, `hv`, `d` and `u` per step instead of four.
    let mut hv_pending = false;
    for t in (0..steps).rev() {
        let g = &grads[t * stride..t * stride + p];
        let rates = sched.rates_at(t);
        let d = opt.direction(t, g);
        for (k, &a) in rates.iter().enumerate().take(g_count) {
            let r = mlp.layout.group(k);
            let h = hv_pending.then(|| &hv[r.clone()]);
            let uk = second_order.then(|| &mut u[r.clone()]);
            da[t * g_count + k] = -reverse_group(&mut v[r.clone()], h, &d[r], uk, a);
        }
        hv_pending = false;
        if second_order {
            opt.backward(t, g, &mut u, &mut wm, &mut ws);
            let theta = &thetas[t * stride..t * stride + p];
            mlp.hvp(&mut hv, &mut scratch, &caches[t], theta, task.support.x, &u);
            hv_pending = true;
        }
    }
    sched.backward(grad, params, &da);
    add_final(&mut grad.theta, &v, hv_pending.then_some(&hv[..]));
    recycle(thetas, grads, caches, v);
    scratch.recycle();
    for b in [da, wm, ws] {
        task_pool::give(b);
    }
    u.give();
    hv.give();
    TaskOutcome { outer_loss, lr: sched.rates().to_vec(), features: sched.features().to_vec(), accuracy }
}
