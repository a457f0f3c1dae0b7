//! The inner loop and exact meta-gradient of [`crate::inner_loop`] for up to [`LANES`] tasks
//! at once (issue 13): the learner's products run lane by lane over the group
//! ([`crate::lane_mlp`]), while what is per task and cheap (features, scheduler, inner
//! optimiser state, the meta-backward's dot products) runs per task through the one-task
//! code itself. Every task's result is bitwise that of [`crate::inner_loop::task_meta_gradient`]
//! and [`crate::inner_loop::evaluate_task`], so it does not depend on which tasks share its
//! group, nor on the number of threads. f32 only (the production type).
//!
//! The lane code is compiled for AVX-512 (`target_feature`), so that its element-wise loops
//! use whole registers too; it runs only where the CPU has it.
// Calling the AVX-512 functions needs `unsafe` after the run-time feature check.
#![allow(unsafe_code)]

use crate::config::Config;
use crate::inner_loop::{TaskOutcome, evaluate_task, features, task_meta_gradient};
use crate::inner_optimizer::OptimizerTrace;
use crate::lane_linalg::{
    LANES, Lanes, add_extracted_all, dot, extract, flat, flat_mut, has_avx512, insert, scaled, sub_scaled,
    sum_of_squares,
};
use crate::lane_mlp::{LaneCache, LaneScratch, accuracy_of_lane, hvp, loss_and_grad};
use crate::lane_pool::{give, take, take_dirty};
use crate::lane_scheduler::LaneLstm;
use crate::mlp::Mlp;
use crate::params::Params;
use crate::scheduler::SchedulerTrace;
use crate::task::{SetRef, TargetsRef, TaskRef};

/// The forward state of a group's inner runs, kept for the backward pass.
struct GroupUnroll {
    mlp: Mlp,
    /// Number of real tasks (lanes past it repeat the last task and are ignored).
    tasks: usize,
    /// Support inputs per lane.
    sx: Vec<Lanes>,
    /// `theta_t` per lane, `[T+1, P]`.
    thetas: Vec<Lanes>,
    /// `g_t` per task, `[LANES][T · P]` (other optimisers than sgd).
    grads: Vec<Vec<f32>>,
    /// `g_t` per lane, `[T, P]` (sgd, whose direction is `g_t`: no transposes).
    grads_l: Vec<Lanes>,
    /// `a_t` per lane, `[T, G]`.
    rates_l: Vec<Lanes>,
    /// Support-set caches at each `theta_t` (one reused cache without the backward pass).
    caches: Vec<LaneCache>,
    sched: GroupSched,
    opts: Vec<OptimizerTrace<f32>>,
    /// Query gradient at `theta_T` per lane.
    v: Vec<Lanes>,
    outer_loss: [f32; LANES],
    accuracy: Vec<Option<f32>>,
}

/// The schedulers of a group: the LSTM lane by lane, the others per lane.
enum GroupSched {
    Tasks(Vec<SchedulerTrace<f32>>),
    Lstm(LaneLstm),
}

impl GroupSched {
    fn new(config: &Config, tasks: usize) -> Self {
        match LaneLstm::new(config, tasks) {
            Some(s) => Self::Lstm(s),
            None => Self::Tasks((0..LANES).map(|_| SchedulerTrace::new(config)).collect()),
        }
    }

    /// The rates of step `t` (`[G]` lanes) from each lane's features.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    fn step(
        &mut self,
        params: &Params<f32>,
        t: usize,
        xs: &[[f32; crate::config::FEATURES]; LANES],
        rates: &mut [Lanes],
    ) {
        match self {
            Self::Tasks(scheds) => {
                for (l, sched) in scheds.iter_mut().enumerate() {
                    for (k, &a) in sched.step(params, t, xs[l]).iter().enumerate() {
                        rates[k].0[l] = a;
                    }
                }
            }
            Self::Lstm(s) => {
                let x = std::array::from_fn(|f| Lanes(std::array::from_fn(|l| xs[l][f])));
                s.step(params.lstm.as_ref().expect("validated: lstm tensors present"), t, x, rates);
            }
        }
    }

    /// The phi gradients of the group's tasks (`grads[l]` for lane `l`) from `dJ/da_t`
    /// (`[T, G]` lanes).
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    fn backward(&self, grads: &mut [Params<f32>], params: &Params<f32>, da: &[Lanes]) {
        match self {
            Self::Tasks(scheds) => {
                let mut da_t = vec![0.0f32; da.len()];
                for (l, grad) in grads.iter_mut().enumerate() {
                    extract(&mut da_t, da, l);
                    scheds[l].backward(grad, params, &da_t);
                }
            }
            Self::Lstm(s) => {
                s.backward(grads, params.lstm.as_ref().expect("validated: lstm tensors present"), da)
            }
        }
    }

    fn features(&self, l: usize) -> Vec<[f32; crate::config::FEATURES]> {
        match self {
            Self::Tasks(scheds) => scheds[l].features().to_vec(),
            Self::Lstm(s) => s.features(l),
        }
    }
}

/// A set's inputs lane by lane and its targets per lane.
fn lanes_of<'a>(sets: &[SetRef<'a, f32>; LANES]) -> (Vec<Lanes>, [TargetsRef<'a, f32>; LANES]) {
    let mut x = take_dirty(sets[0].x.len());
    for (l, s) in sets.iter().enumerate() {
        insert(&mut x, s.x, l);
    }
    (x, std::array::from_fn(|l| sets[l].y))
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn unroll(
    config: &Config,
    params: &Params<f32>,
    tasks: &[TaskRef<'_, f32>],
    keep_caches: bool,
) -> GroupUnroll {
    assert!(!tasks.is_empty() && tasks.len() <= LANES, "a group holds 1..={LANES} tasks");
    let lane_task = |l: usize| tasks[l.min(tasks.len() - 1)];
    let mlp = Mlp::new(config);
    let p = mlp.layout.len();
    let steps = config.inner.steps;
    let (sx, sy) = lanes_of(&std::array::from_fn(|l| lane_task(l).support));
    let n = tasks[0].support.n;
    let mut thetas = take_dirty((steps + 1) * p);
    for (t, &th) in thetas.iter_mut().zip(&params.theta) {
        *t = Lanes::splat(th);
    }
    let sgd = config.inner.optimizer.is_sgd();
    let mut grads: Vec<Vec<f32>> = (0..if sgd { 0 } else { LANES }).map(|_| vec![0.0; steps * p]).collect();
    let mut grads_l = take_dirty(if sgd { steps * p } else { 0 });
    let mut caches: Vec<LaneCache> =
        (0..if keep_caches { steps } else { 1 }).map(|_| LaneCache::new(&mlp, n)).collect();
    let mut sched = GroupSched::new(config, tasks.len());
    let mut opts: Vec<OptimizerTrace<f32>> =
        (0..LANES).map(|_| OptimizerTrace::new(config.inner.optimizer, steps, p, keep_caches)).collect();
    let mut g = take_dirty(p);
    let mut d = take_dirty(p);
    let groups = mlp.layout.groups();
    let mut rates_l = take_dirty(steps * groups);
    for t in 0..steps {
        let (done, next) = thetas.split_at_mut((t + 1) * p);
        let theta = &done[t * p..];
        let cache = &mut caches[if keep_caches { t } else { 0 }];
        let rates = &mut rates_l[t * groups..(t + 1) * groups];
        if sgd {
            let g = &mut grads_l[t * p..(t + 1) * p];
            let losses = loss_and_grad(&mlp, g, cache, theta, &sx, &sy);
            let sq = sum_of_squares(std::iter::empty::<f32>().sum(), g);
            let xs = std::array::from_fn(|l| features_of(losses[l], sq.0[l], t, steps));
            sched.step(params, t, &xs, rates);
        } else {
            let losses = loss_and_grad(&mlp, &mut g, cache, theta, &sx, &sy);
            let mut xs = [[0.0; crate::config::FEATURES]; LANES];
            for l in 0..LANES {
                let gt = &mut grads[l][t * p..(t + 1) * p];
                extract(gt, &g, l);
                xs[l] = features(losses[l], gt, t, steps);
                insert(&mut d, opts[l].step(t, gt), l);
            }
            sched.step(params, t, &xs, rates);
        }
        let theta_next = &mut next[..p];
        // sgd's direction is the gradient itself (kept lane by lane in `grads_l`).
        let d: &[Lanes] = if sgd { &grads_l[t * p..(t + 1) * p] } else { &d };
        for (k, &a) in rates.iter().enumerate() {
            let r = mlp.layout.group(k);
            sub_scaled(&mut theta_next[r.clone()], &theta[r.clone()], a, &d[r]);
        }
    }
    let (qx, qy) = lanes_of(&std::array::from_fn(|l| lane_task(l).query));
    let mut qcache = LaneCache::new(&mlp, tasks[0].query.n);
    let mut v = take_dirty(p);
    let outer_loss = loss_and_grad(&mlp, &mut v, &mut qcache, &thetas[steps * p..], &qx, &qy);
    let accuracy = (0..tasks.len()).map(|l| accuracy_of_lane(&mlp, &qcache, qy[l], l)).collect();
    qcache.recycle();
    for b in [qx, g, d] {
        give(b);
    }
    GroupUnroll {
        mlp,
        tasks: tasks.len(),
        sx,
        thetas,
        grads,
        grads_l,
        rates_l,
        caches,
        sched,
        opts,
        v,
        outer_loss,
        accuracy,
    }
}

/// [`features`] from the sum of squares of the gradient (the same operations).
fn features_of(loss: f32, sum_sq: f32, t: usize, steps: usize) -> [f32; crate::config::FEATURES] {
    let eps = 1e-8f64 as f32;
    let norm = sum_sq.sqrt();
    [(loss + eps).ln(), (norm + eps).ln(), t as f64 as f32 / steps as f64 as f32]
}

impl GroupUnroll {
    /// Gives the lane buffers back to this thread's pool.
    fn recycle(self) {
        for b in [self.sx, self.thetas, self.grads_l, self.rates_l, self.v] {
            give(b);
        }
        self.caches.into_iter().for_each(LaneCache::recycle);
        if let GroupSched::Lstm(s) = self.sched {
            s.recycle();
        }
    }

    fn outcome(&self, l: usize) -> TaskOutcome<f32> {
        TaskOutcome {
            outer_loss: self.outer_loss[l],
            lr: self.rates_l.iter().map(|r| r.0[l]).collect(),
            features: self.sched.features(l),
            accuracy: self.accuracy[l],
        }
    }
}

/// Query losses and rates of every task of a group after the inner loop, without gradients
/// (each bitwise [`crate::inner_loop::evaluate_task`]). Lane by lane on CPUs with AVX-512,
/// else task by task.
pub fn evaluate_group(
    config: &Config,
    params: &Params<f32>,
    tasks: &[TaskRef<'_, f32>],
) -> Vec<TaskOutcome<f32>> {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked).
        return unsafe { evaluate_group_lanes(config, params, tasks) };
    }
    tasks.iter().map(|&t| evaluate_task(config, params, t)).collect()
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn evaluate_group_lanes(
    config: &Config,
    params: &Params<f32>,
    tasks: &[TaskRef<'_, f32>],
) -> Vec<TaskOutcome<f32>> {
    let u = unroll(config, params, tasks, false);
    let out = (0..u.tasks).map(|l| u.outcome(l)).collect();
    u.recycle();
    out
}

/// The meta-gradient of `scale · L_query` of each task of a group, accumulated into
/// `grads[i]` for task `i` (each with the slots of `params`), and the tasks' outcomes; each
/// bitwise [`crate::inner_loop::task_meta_gradient`]. Lane by lane on CPUs with AVX-512,
/// else task by task.
pub fn group_meta_gradient(
    grads: &mut [Params<f32>],
    config: &Config,
    params: &Params<f32>,
    tasks: &[TaskRef<'_, f32>],
    scale: f32,
) -> Vec<TaskOutcome<f32>> {
    assert_eq!(grads.len(), tasks.len(), "one gradient per task");
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked).
        return unsafe { group_meta_gradient_lanes(grads, config, params, tasks, scale) };
    }
    grads.iter_mut().zip(tasks).map(|(g, &t)| task_meta_gradient(g, config, params, t, scale)).collect()
}

#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn group_meta_gradient_lanes(
    grads: &mut [Params<f32>],
    config: &Config,
    params: &Params<f32>,
    tasks: &[TaskRef<'_, f32>],
    scale: f32,
) -> Vec<TaskOutcome<f32>> {
    assert_eq!(grads.len(), tasks.len(), "one gradient per task");
    let second_order = !config.inner.first_order;
    let keep = second_order || !config.inner.optimizer.is_sgd();
    let mut u = unroll(config, params, tasks, keep);
    if config.inner.optimizer.is_sgd() {
        let out = sgd_backward(grads, config, params, &mut u, scale);
        u.recycle();
        return out;
    }
    let p = u.mlp.layout.len();
    let g_count = u.mlp.layout.groups();
    let steps = config.inner.steps;
    let nt = u.tasks;
    let mut v: Vec<Vec<f32>> = (0..nt)
        .map(|l| {
            let mut x = vec![0.0; p];
            extract(&mut x, &u.v, l);
            for x in x.iter_mut() {
                *x *= scale;
            }
            x
        })
        .collect();
    let mut da = vec![vec![0.0f32; steps * g_count]; nt];
    let mut ut = vec![0.0f32; p];
    let mut ul = take(p);
    let mut hvl = take_dirty(p);
    let mut hvt = vec![0.0f32; p];
    let mut scratch = LaneScratch::new(&u.mlp, tasks[0].support.n);
    let mut wm = vec![vec![0.0f32; p]; nt];
    let mut ws = vec![vec![0.0f32; p]; nt];
    for t in (0..steps).rev() {
        for l in 0..nt {
            let g = &u.grads[l][t * p..(t + 1) * p];
            let rates = &u.rates_l[t * g_count..(t + 1) * g_count];
            let d = u.opts[l].direction(t, g);
            for k in 0..g_count {
                let r = u.mlp.layout.group(k);
                da[l][t * g_count + k] = -crate::linalg::dot(&v[l][r.clone()], &d[r]);
            }
            if second_order {
                for (k, a) in rates.iter().enumerate() {
                    let (a, r) = (a.0[l], u.mlp.layout.group(k));
                    for (ui, &vi) in ut[r.clone()].iter_mut().zip(&v[l][r]) {
                        *ui = a * vi;
                    }
                }
                u.opts[l].backward(t, g, &mut ut, &mut wm[l], &mut ws[l]);
                insert(&mut ul, &ut, l);
            }
        }
        if second_order {
            let theta = &u.thetas[t * p..(t + 1) * p];
            hvp(&u.mlp, &mut hvl, &mut scratch, &u.caches[t], theta, &u.sx, &ul);
            for (l, v) in v.iter_mut().enumerate() {
                extract(&mut hvt, &hvl, l);
                for (vi, &h) in v.iter_mut().zip(&hvt) {
                    *vi -= h;
                }
            }
        }
    }
    let mut da_l = take(steps * g_count);
    for (l, da) in da.iter().enumerate() {
        insert(&mut da_l, da, l);
    }
    u.sched.backward(&mut grads[..nt], params, &da_l);
    give(da_l);
    for l in 0..nt {
        for (gi, &vi) in grads[l].theta.iter_mut().zip(&v[l]) {
            *gi += vi;
        }
    }
    let out = (0..nt).map(|l| u.outcome(l)).collect();
    give(ul);
    give(hvl);
    scratch.recycle();
    u.recycle();
    out
}

/// The meta-backward pass of an sgd group, lane by lane (sgd's `d_t` is `g_t` and its reverse
/// step is the identity, so only the scheduler's backward runs per task).
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn sgd_backward(
    grads: &mut [Params<f32>],
    config: &Config,
    params: &Params<f32>,
    u: &mut GroupUnroll,
    scale: f32,
) -> Vec<TaskOutcome<f32>> {
    let second_order = !config.inner.first_order;
    let p = u.mlp.layout.len();
    let g_count = u.mlp.layout.groups();
    let steps = config.inner.steps;
    let nt = u.tasks;
    let mut v = take_dirty(p);
    v.copy_from_slice(&u.v);
    flat_mut(&mut v).iter_mut().for_each(|x| *x *= scale);
    let mut da = take_dirty(steps * g_count);
    let mut ul = take_dirty(p);
    let mut hv = take_dirty(p);
    let mut scratch = LaneScratch::new(&u.mlp, u.caches[0].n());
    for t in (0..steps).rev() {
        let g = &u.grads_l[t * p..(t + 1) * p];
        let rates = &u.rates_l[t * g_count..(t + 1) * g_count];
        for k in 0..g_count {
            let r = u.mlp.layout.group(k);
            da[t * g_count + k] = dot(&v[r.clone()], &g[r]).map(|x| -x);
        }
        if second_order {
            for (k, a) in rates.iter().enumerate() {
                let r = u.mlp.layout.group(k);
                scaled(&mut ul[r.clone()], *a, &v[r]);
            }
            let theta = &u.thetas[t * p..(t + 1) * p];
            hvp(&u.mlp, &mut hv, &mut scratch, &u.caches[t], theta, &u.sx, &ul);
            for (vi, &h) in flat_mut(&mut v).iter_mut().zip(flat(&hv)) {
                *vi -= h;
            }
        }
    }
    u.sched.backward(&mut grads[..nt], params, &da);
    let mut thetas: Vec<&mut [f32]> = grads[..nt].iter_mut().map(|g| &mut g.theta[..]).collect();
    add_extracted_all(&mut thetas, &v);
    for b in [v, da, ul, hv] {
        give(b);
    }
    scratch.recycle();
    (0..nt).map(|l| u.outcome(l)).collect()
}
