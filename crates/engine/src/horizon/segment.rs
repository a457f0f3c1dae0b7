//! A stretch of consecutive steps of a long run, run forward: the one step loop shared by a
//! window's first pass, the `--remat` replay in its backward pass, PES and plain evaluation,
//! so that all of them compute the same bits.

use crate::config::{Config, FEATURES};
use crate::inner_loop::features;
use crate::inner_optimizer::OptimizerTrace;
use crate::mlp::{Mlp, MlpCache};
use crate::params::Params;
use crate::real::Real;
use crate::scheduler::SchedulerTrace;

use super::objective::Objective;
use super::rate_rule::RateRule;
use super::run_data::{Batch, RunData};

/// Where a step's rates come from.
pub(crate) enum RateSource<'a, T: Real> {
    /// The learned scheduler (recorded in its trace); `fixed` holds the features instead of
    /// the run's own (the finite-difference checks of spec §3 treat them as constants).
    Learned { sched: &'a mut SchedulerTrace<T>, params: &'a Params<T>, fixed: Option<&'a [[T; FEATURES]]> },
    /// The rates a learned pass recorded, replayed (the `--remat` backward pass).
    Replay(&'a SchedulerTrace<T>),
    /// A hand-made schedule.
    Rule(&'a mut dyn RateRule<T>),
}

/// What a segment needs from its run.
pub(crate) struct Ctx<'a, T: Real> {
    pub mlp: &'a Mlp,
    pub config: &'a Config,
    pub data: &'a dyn RunData<T>,
    /// Global step of the window's first step.
    pub t0: usize,
    /// Where validation losses are measured (none: not at all).
    pub objective: Option<&'a Objective>,
}

/// The state a segment starts from: `(theta, m, s)`.
pub(crate) type Start<T> = (Vec<T>, Vec<T>, Vec<T>);

/// The steps `start .. start + len` of a window (indices local to the window), with every
/// step's intermediate values when `keep` (for the backward pass), else only the last.
pub(crate) struct Segment<T: Real> {
    pub len: usize,
    keep: bool,
    p: usize,
    /// `theta` at each step boundary (`[len+1, P]` kept, else two alternating slots).
    thetas: Vec<T>,
    /// `g` of each step (`[len, P]` kept, else `[P]`).
    pub grads: Vec<T>,
    caches: Vec<MlpCache<T>>,
    batches: Vec<Batch<T>>,
    pub opt: OptimizerTrace<T>,
    /// Minibatch loss of each step.
    pub train_loss: Vec<T>,
    /// `(t, L_val(theta_t))` at the objective's points inside the segment.
    pub val_loss: Vec<(usize, T)>,
    /// The rates of each step when they came from a rule, `[len, G]` (a trace keeps the
    /// learned ones).
    pub rule_rates: Vec<T>,
}

impl<T: Real> Segment<T> {
    /// Runs the segment from `from`.
    pub(crate) fn run(
        ctx: &Ctx<'_, T>,
        mut source: RateSource<'_, T>,
        start: usize,
        len: usize,
        keep: bool,
        from: (&[T], &[T], &[T]),
    ) -> Self {
        let mlp = ctx.mlp;
        let p = mlp.layout.len();
        let groups = mlp.layout.groups();
        let horizon = ctx.config.inner.steps;
        let slots = if keep { len } else { 1 };
        let labels = matches!(ctx.data.validation().y, crate::task::TargetsRef::Labels(_));
        let mut seg = Self {
            len,
            keep,
            p,
            thetas: vec![T::zero(); if keep { (len + 1) * p } else { 2 * p }],
            grads: vec![T::zero(); slots * p],
            caches: Vec::with_capacity(slots),
            batches: (0..slots).map(|_| Batch::empty(labels)).collect(),
            opt: OptimizerTrace::starting(
                ctx.config.inner.optimizer,
                len,
                p,
                keep,
                ctx.t0 + start,
                Some((from.1, from.2)),
            ),
            train_loss: Vec::with_capacity(len),
            val_loss: Vec::new(),
            rule_rates: Vec::new(),
        };
        seg.thetas[..p].copy_from_slice(from.0);
        let validation = ctx.data.validation();
        let mut val_cache: Option<MlpCache<T>> = None;
        let mut rates = vec![T::zero(); groups];
        let mut prev_d: Option<Vec<T>> = None;
        for k in 0..len {
            let tl = start + k;
            let tg = ctx.t0 + tl;
            let slot = if keep { k } else { 0 };
            let batch = &mut seg.batches[slot];
            ctx.data.fill_batch(tg, batch);
            if seg.caches.len() <= slot {
                seg.caches.push(mlp.cache(batch.n));
            }
            let (cur, next) = if keep { (k, k + 1) } else { (k % 2, (k + 1) % 2) };
            let (lo, hi) = seg.thetas.split_at_mut(cur.max(next) * p);
            let (theta, theta_next) =
                if cur < next { (&lo[cur * p..], &mut hi[..p]) } else { (&hi[..p], &mut lo[next * p..]) };
            let g = &mut seg.grads[slot * p..(slot + 1) * p];
            let set = batch.as_set();
            let loss = mlp.loss_and_grad(g, &mut seg.caches[slot], theta, set.x, set.y);
            seg.train_loss.push(loss);
            match &mut source {
                RateSource::Learned { sched, params, fixed } => {
                    let x = fixed.map_or_else(|| features(loss, g, tg, horizon), |f| f[tl]);
                    rates.copy_from_slice(sched.step(params, tl, x));
                }
                RateSource::Replay(sched) => rates.copy_from_slice(sched.rates_at(tl)),
                RateSource::Rule(rule) => {
                    let x = features(loss, g, tg, horizon);
                    rule.rates(tg, &x, g, prev_d.as_deref(), &mut rates);
                    seg.rule_rates.extend_from_slice(&rates);
                }
            }
            let d = seg.opt.step(k, g);
            for (kk, &a) in rates.iter().enumerate() {
                let r = mlp.layout.group(kk);
                for ((tn, &th), &di) in theta_next[r.clone()].iter_mut().zip(&theta[r.clone()]).zip(&d[r]) {
                    *tn = th - a * di;
                }
            }
            if matches!(source, RateSource::Rule(_)) {
                prev_d.get_or_insert_with(|| vec![T::zero(); p]).copy_from_slice(d);
            }
            if ctx.objective.and_then(|o| o.weight(tg + 1)).is_some() {
                let cache = val_cache.get_or_insert_with(|| mlp.cache(validation.n));
                mlp.forward(cache, theta_next, validation.x);
                let l = mlp.loss_of_output(cache, validation.y);
                seg.val_loss.push((tg + 1, l));
            }
        }
        seg
    }

    /// `theta` at the segment's local boundary `k` (`0..=len`; only the last one unless kept).
    pub(crate) fn theta(&self, k: usize) -> &[T] {
        let slot = if self.keep { k } else { k % 2 };
        debug_assert!(self.keep || k == self.len);
        &self.thetas[slot * self.p..(slot + 1) * self.p]
    }

    /// The cache and minibatch of local step `k` (kept segments).
    pub(crate) fn cache_and_batch(&self, k: usize) -> (&MlpCache<T>, &Batch<T>) {
        (&self.caches[k], &self.batches[k])
    }

    /// The state after the last step: `(theta, m, s)`.
    /// The segment has at least one step (callers check).
    pub(crate) fn end(&self) -> Start<T> {
        let (m, s) = self.opt.state_after(self.len - 1);
        (self.theta(self.len).to_vec(), m.to_vec(), s.to_vec())
    }
}
