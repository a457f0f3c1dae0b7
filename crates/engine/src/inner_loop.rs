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
use crate::theta_trace::{ThetaTrace, row_stride};

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
struct Unroll<'a, T> {
    mlp: Mlp,
    /// `theta_t` for `t = 0..=T`.
    thetas: ThetaTrace<'a, T>,
    /// `g_t`, `[T, P]` with rows `stride` apart for [`Grads::Every`]; otherwise only the
    /// last step's (one row, reused: it stays in cache).
    grads: Aligned<T>,
    /// The bias groups' `g_t`, `[T, Σ_l d_{l+1}]` (what [`Mlp::sgd_reverse_step`] reads), for
    /// [`Grads::Biases`]; empty otherwise.
    bias_grads: Vec<T>,
    /// Distance between the rows of `grads`.
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
/// one dependent addition per parameter (a tenth of a wide meta-step): they use the
/// fixed-order partial sums of [`sum_of_squares`].
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

/// Which gradients of the inner run [`unroll`] keeps for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grads {
    /// Every step's `g_t` (the generic reverse pass).
    Every,
    /// Every step's bias gradients ([`Reverse::PlainSgd`]).
    Biases,
    /// None (evaluation).
    Nothing,
}

/// Runs the inner loop, recording what the backward pass needs: the caches of every step
/// with `keep_caches`, the gradients that `kept` names. With
/// `fixed_features`, the scheduler reads those instead of the ones the run produces
/// (finite-difference checks hold them constant, as spec §3 treats them). `theta0`, when
/// given, is `params.theta` on 64-byte lines, shared by a batch's tasks ([`ThetaTrace`]).
#[allow(clippy::too_many_arguments)]
fn unroll<'a, T: Real>(
    config: &Config,
    params: &'a Params<T>,
    theta0: Option<&'a [T]>,
    task: TaskRef<'_, T>,
    fixed_features: Option<&[[T; FEATURES]]>,
    keep_caches: bool,
    kept: Grads,
) -> Unroll<'a, T> {
    let mlp = Mlp::new(config);
    let p = mlp.layout.len();
    let steps = config.inner.steps;
    // Buffers from this thread's free list, not zeroed: every value is written before it is
    // read (`theta_{t+1}` by the update below, whose groups cover theta; `g_t` and the caches
    // by `loss_and_grad`).
    let stride = row_stride::<T>(p);
    let mut thetas = ThetaTrace::new(theta0.unwrap_or(&params.theta), theta0.is_some(), steps);
    let every = kept == Grads::Every;
    let mut grads = Aligned::take_dirty(if every { steps } else { 1 } * stride);
    let biases: Vec<_> = (0..mlp.layout.n_linear()).map(|l| mlp.layout.bias(l)).collect();
    let bias_len: usize = biases.iter().map(|r| r.len()).sum();
    let mut bias_grads =
        if kept == Grads::Biases { task_pool::take_dirty(steps * bias_len) } else { Vec::new() };
    // One cache per step when the backward pass needs them, else one reused cache.
    let mut caches: Vec<MlpCache<T>> =
        (0..if keep_caches { steps } else { 1 }).map(|_| mlp.cache_reused(task.support.n)).collect();
    let mut sched = SchedulerTrace::new(config);
    let mut opt = OptimizerTrace::new(config.inner.optimizer, steps, p, keep_caches);
    for t in 0..steps {
        let (theta, theta_next) = thetas.step(t);
        let row = if every { t } else { 0 };
        let g = &mut grads[row * stride..row * stride + p];
        let cache = &mut caches[if keep_caches { t } else { 0 }];
        let loss = mlp.loss_and_grad(g, cache, theta, task.support.x, task.support.y);
        let x = match fixed_features {
            Some(f) => f[t],
            None => features(loss, g, t, steps),
        };
        if kept == Grads::Biases {
            let mut at = t * bias_len;
            for r in &biases {
                bias_grads[at..at + r.len()].copy_from_slice(&g[r.clone()]);
                at += r.len();
            }
        }
        let rates = sched.step(params, t, x);
        let d = opt.step(t, g);
        for (k, &a) in rates.iter().enumerate() {
            let r = mlp.layout.group(k);
            sgd_step(&mut theta_next[r.clone()], &theta[r.clone()], &d[r], a);
        }
    }
    let mut qcache = mlp.cache_reused(task.query.n);
    let mut v = Aligned::take_dirty(p);
    let outer_loss = mlp.loss_and_grad(&mut v, &mut qcache, thetas.row(steps), task.query.x, task.query.y);
    let accuracy = mlp.accuracy_of_output(&qcache, task.query.y);
    qcache.recycle();
    Unroll { mlp, thetas, grads, bias_grads, stride, caches, sched, opt, v, outer_loss, accuracy }
}

/// Gives an unroll's buffers back to this thread's free list ([`task_pool`]).
fn recycle<T: Real>(
    thetas: ThetaTrace<'_, T>,
    (grads, bias_grads): (Aligned<T>, Vec<T>),
    caches: Vec<MlpCache<T>>,
    v: Aligned<T>,
) {
    thetas.give();
    grads.give();
    task_pool::give(bias_grads);
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
    let u = unroll(config, params, None, task, fixed_features, false, Grads::Nothing);
    let out = TaskOutcome {
        outer_loss: u.outer_loss,
        lr: u.sched.rates().to_vec(),
        features: u.sched.features().to_vec(),
        accuracy: u.accuracy,
    };
    recycle(u.thetas, (u.grads, u.bias_grads), u.caches, u.v);
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
    let reverse = if plain_sgd_reverse_applies(config) { Reverse::PlainSgd } else { Reverse::Generic };
    task_meta_gradient_by(reverse, GradInto::Add, grad, config, (params, None), task, scale)
}

/// [`task_meta_gradient`] written into `grad` whatever it held (a buffer reused across
/// batches): no pass to zero theta's 267 KB first for the wide learner. The same bits as
/// accumulating into zeros, but for the sign of zeros (`0 + −0` is `+0`), which any sum
/// starting from zero (the batch mean) makes the same.
/// `theta0` is `params.theta` on 64-byte lines, shared by the batch's tasks.
pub(crate) fn task_meta_gradient_written<T: Real>(
    grad: &mut Params<T>,
    config: &Config,
    (params, theta0): (&Params<T>, &[T]),
    task: TaskRef<'_, T>,
    scale: T,
) -> TaskOutcome<T> {
    // Every buffer but theta (the first) is accumulated into; theta's is written.
    for b in grad.buffers_mut().into_iter().skip(1) {
        b.fill(T::zero());
    }
    let reverse = if plain_sgd_reverse_applies(config) { Reverse::PlainSgd } else { Reverse::Generic };
    task_meta_gradient_by(reverse, GradInto::Overwrite, grad, config, (params, Some(theta0)), task, scale)
}

/// Whether the task's gradient of theta is added to `grad.theta` or written over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GradInto {
    Add,
    Overwrite,
}

/// How [`task_meta_gradient`] runs the reverse steps (the same mathematics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reverse {
    /// `u`, the optimiser's reverse step, [`Mlp::hvp`] into `hv`: any optimiser and order.
    Generic,
    /// [`Mlp::sgd_reverse_step`]: plain SGD at second order, `u = a ⊙ v` never formed.
    PlainSgd,
}

/// Whether [`Reverse::PlainSgd`] runs `config`: plain SGD at second order, for learners too
/// large for task groups (more than [`MAX_GROUP_PARAMS`] parameters). Smaller learners keep
/// the generic step, whose bits the task groups reproduce lane by lane.
fn plain_sgd_reverse_applies(config: &Config) -> bool {
    !config.inner.first_order
        && config.inner.optimizer.is_sgd()
        && crate::layout::ThetaLayout::new(config).len() > MAX_GROUP_PARAMS
}

/// [`task_meta_gradient`] with the reverse steps run by `reverse`.
fn task_meta_gradient_by<T: Real>(
    reverse: Reverse,
    into: GradInto,
    grad: &mut Params<T>,
    config: &Config,
    (params, theta0): (&Params<T>, Option<&[T]>),
    task: TaskRef<'_, T>,
    scale: T,
) -> TaskOutcome<T> {
    let second_order = !config.inner.first_order;
    // The optimiser's per-step state is needed for `d_t` even at first order (momentum, adam).
    let keep = second_order || !config.inner.optimizer.is_sgd();
    let plain = reverse == Reverse::PlainSgd;
    let Unroll {
        mlp,
        thetas,
        grads,
        bias_grads,
        stride,
        caches,
        sched,
        mut opt,
        mut v,
        outer_loss,
        accuracy,
    } = unroll(config, params, theta0, task, None, keep, if plain { Grads::Biases } else { Grads::Every });
    let p = mlp.layout.len();
    let g_count = mlp.layout.groups();
    let steps = config.inner.steps;
    for x in v.iter_mut() {
        *x *= scale;
    }
    // Written before read: `da` for every (t, k) below.
    let mut da = task_pool::take_dirty(steps * g_count);
    if plain {
        let bias_len = bias_grads.len() / steps.max(1);
        let mut scratch = mlp.sgd_reverse_scratch(task.support.n);
        for t in (0..steps).rev() {
            mlp.sgd_reverse_step(
                &mut v,
                &mut da[t * g_count..(t + 1) * g_count],
                &mut scratch,
                &caches[t],
                thetas.row(t),
                &bias_grads[t * bias_len..(t + 1) * bias_len],
                task.support.x,
                sched.rates_at(t),
            );
        }
        scratch.recycle();
        sched.backward(grad, params, &da);
        add_final(&mut grad.theta, &v, None, into == GradInto::Add);
        recycle(thetas, (grads, bias_grads), caches, v);
        task_pool::give(da);
        return TaskOutcome {
            outer_loss,
            lr: sched.rates().to_vec(),
            features: sched.features().to_vec(),
            accuracy,
        };
    }
    // Written before read: `u` group by group, `hv` and the scratch by `hvp`. The
    // optimiser's adjoints `wm`, `ws` start at zero.
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
            let theta = thetas.row(t);
            mlp.hvp(&mut hv, &mut scratch, &caches[t], theta, task.support.x, &u);
            hv_pending = true;
        }
    }
    sched.backward(grad, params, &da);
    add_final(&mut grad.theta, &v, hv_pending.then_some(&hv[..]), into == GradInto::Add);
    recycle(thetas, (grads, bias_grads), caches, v);
    scratch.recycle();
    for b in [da, wm, ws] {
        task_pool::give(b);
    }
    u.give();
    hv.give();
    TaskOutcome { outer_loss, lr: sched.rates().to_vec(), features: sched.features().to_vec(), accuracy }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Activation, InnerConfig, LossKind, ModelConfig, SchedulerConfig, SchedulerKind};
    use crate::rng::CounterRng;
    use crate::task::{Targets, TaskBatch};

    fn config(layers: &[usize], act: Activation, loss: LossKind, kind: SchedulerKind) -> Config {
        Config {
            model: ModelConfig { layers: layers.to_vec(), activation: act, loss },
            inner: InnerConfig {
                steps: 4,
                first_order: false,
                learn_init: true,
                optimizer: Default::default(),
            },
            scheduler: SchedulerConfig { kind, hidden: 4, lr_min: 0.01, lr_max: 0.6, lr_fixed: 0.3 },
        }
    }

    /// One task of `k` support and `q` query points, values and labels from a counter RNG.
    fn task_batch<T: Real>(config: &Config, k: usize, q: usize, seed: u64) -> TaskBatch<T> {
        let (d_in, d_out) = (config.d_in(), config.d_out());
        let mut rng = CounterRng::new(seed, &[7]);
        let mut vals = |n: usize| (0..n).map(|_| T::of(rng.uniform_in(-1.5, 1.5))).collect::<Vec<T>>();
        let (support_x, query_x) = (vals(k * d_in), vals(q * d_in));
        let (support_y, query_y) = match config.model.loss {
            LossKind::Mse => (Targets::Values(vals(k * d_out)), Targets::Values(vals(q * d_out))),
            LossKind::CrossEntropy => {
                let labels = |n: usize, o: usize| (0..n).map(|i| ((i * 7 + o) % d_out) as u32).collect();
                (Targets::Labels(labels(k, 1)), Targets::Labels(labels(q, 2)))
            }
        };
        TaskBatch { b: 1, k, q, d_in, d_out, support_x, support_y, query_x, query_y }
    }

    fn random_params<T: Real>(config: &Config, seed: u64, spread: f64) -> Params<T> {
        let mut p = Params::<T>::zeros(config);
        let mut rng = CounterRng::new(seed, &[99]);
        for v in p.values_mut() {
            *v = T::of(rng.uniform_in(-spread, spread));
        }
        p
    }

    /// Both reverse paths' meta-gradients of one task: `(generic, plain_sgd)`, flattened.
    fn both<T: Real>(config: &Config, params: &Params<T>, batch: &TaskBatch<T>) -> (Vec<f64>, Vec<f64>) {
        let run = |reverse| {
            let mut grad = params.zeros_like();
            let out = task_meta_gradient_by(
                reverse,
                GradInto::Add,
                &mut grad,
                config,
                (params, None),
                batch.task(0),
                T::of(0.5),
            );
            let mut flat: Vec<f64> = grad.values().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect();
            flat.push(out.outer_loss.to_f64().unwrap_or(f64::NAN));
            flat
        };
        (run(Reverse::Generic), run(Reverse::PlainSgd))
    }

    fn rel_err(a: &[f64], b: &[f64]) -> f64 {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt();
        diff / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-300)
    }

    /// The plain-SGD reverse step is the generic one's mathematics: in f64, every tensor of
    /// the meta-gradient agrees to 1e-12 (relative, whole vector) for both activation kinds,
    /// both losses, every scheduler kind and a learner deep enough for the R-operator's
    /// inner layers.
    #[test]
    fn plain_sgd_reverse_matches_the_generic_step_in_f64() {
        let mut seed = 3;
        for kind in [SchedulerKind::Lstm, SchedulerKind::Lslr, SchedulerKind::Fixed] {
            for act in [Activation::Relu, Activation::Tanh] {
                for (loss, layers) in
                    [(LossKind::Mse, vec![2, 9, 7, 2]), (LossKind::CrossEntropy, vec![3, 8, 6, 5, 4])]
                {
                    let cfg = config(&layers, act, loss, kind);
                    let params = random_params::<f64>(&cfg, seed, 0.7);
                    let batch = task_batch::<f64>(&cfg, 6, 5, seed);
                    let (generic, plain) = both(&cfg, &params, &batch);
                    let e = rel_err(&plain, &generic);
                    assert!(e < 1e-12, "{kind:?} {act:?} {loss:?}: relative error {e:.3e}");
                    seed += 1;
                }
            }
        }
    }

    /// On a learner with a wide layer (192 × 192, the AVX-512 kernels' size when the CPU has
    /// them) in f32, the two paths agree to f32 rounding (1e-5 relative).
    #[test]
    fn plain_sgd_reverse_matches_the_generic_step_on_a_wide_learner_in_f32() {
        let mut cfg = Config::sinusoid_default();
        cfg.model.layers = vec![1, 192, 192, 1];
        assert!(plain_sgd_reverse_applies(&cfg));
        let params = random_params::<f32>(&cfg, 9, 0.1);
        let batch = task_batch::<f32>(&cfg, 10, 10, 9);
        let (generic, plain) = both(&cfg, &params, &batch);
        let e = rel_err(&plain, &generic);
        assert!(e < 1e-5, "relative error {e:.3e}");
        assert!(
            !plain_sgd_reverse_applies(&Config::sinusoid_default()),
            "small learners keep the generic bits"
        );
    }
}
