//! The exact meta-gradient of one window of a long run (spec §8): the `full` estimator when
//! the window is the whole run from step 0, truncated BPTT otherwise (the state the window
//! starts from is a constant). With `remat`, only every `⌈√n⌉`-th state is kept and the rest
//! recomputed in the backward pass: O(√n) memory instead of O(n), the same bits.

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::mlp::Mlp;
use crate::params::Params;
use crate::real::Real;
use crate::scheduler::SchedulerTrace;

use super::objective::Objective;
use super::rate_rule::RateRule;
use super::run_data::RunData;
use super::run_state::RunState;
use super::segment::{Ctx, RateSource, Segment, Start};

/// What a window of a run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOutcome<T> {
    /// The window's objective: the weighted validation losses of spec §8.
    pub objective: T,
    /// Minibatch loss of each step, `[n]`.
    pub train_loss: Vec<T>,
    /// Rates used, `[n, G]`.
    pub lr: Vec<T>,
    /// `(t, L_val(theta_t))` at the objective's points.
    pub val_loss: Vec<(usize, T)>,
}

/// Checks a window of `steps` steps from `state` against `config` and `objective`.
pub(crate) fn check_window<T: Real>(
    config: &Config,
    params: &Params<T>,
    state: &RunState<T>,
    steps: usize,
    objective: &Objective,
) -> Result<()> {
    config.validate()?;
    params.validate(config)?;
    state.validate(config)?;
    let bad = |field: &str, reason: String| EngineError::InvalidConfig { field: field.into(), reason };
    if objective.horizon != config.inner.steps {
        return Err(bad(
            "objective.horizon",
            format!("{} differs from inner.steps = {}", objective.horizon, config.inner.steps),
        ));
    }
    if objective.window == 0 {
        return Err(bad("window", "must be at least 1".into()));
    }
    if steps == 0 || state.step + steps > config.inner.steps {
        return Err(bad(
            "window",
            format!("{steps} steps from step {} pass the horizon {}", state.step, config.inner.steps),
        ));
    }
    Ok(())
}

/// `⌈√n⌉`, the `--remat` segment length.
fn remat_segment(n: usize) -> usize {
    let mut s = (n as f64).sqrt() as usize;
    while s * s < n {
        s += 1;
    }
    s.max(1)
}

/// Runs `steps` steps of `state`'s run and accumulates into `grad`'s phi tensors the exact
/// gradient of `scale ×` the window's objective (the validation losses at `objective`'s
/// points inside the window) through those steps, the incoming state held constant.
/// `grad.theta` is left alone (a long run starts from a fresh learner: nothing to learn).
/// Advances `state` past the window.
#[allow(clippy::too_many_arguments)]
pub fn window_meta_gradient<T: Real>(
    grad: &mut Params<T>,
    config: &Config,
    params: &Params<T>,
    state: &mut RunState<T>,
    data: &dyn RunData<T>,
    steps: usize,
    objective: &Objective,
    remat: bool,
    scale: T,
) -> Result<WindowOutcome<T>> {
    check_window(config, params, state, steps, objective)?;
    let mlp = Mlp::new(config);
    let p = mlp.layout.len();
    let groups = mlp.layout.groups();
    let t0 = state.step;
    let ctx = Ctx { mlp: &mlp, config, data, t0, objective: Some(objective) };
    let seg_len = if remat { remat_segment(steps) } else { steps };
    let starts: Vec<usize> = (0..steps).step_by(seg_len).collect();
    // With remat the scheduler's trace is segmented like the learner's: the forward pass
    // keeps only rates and features, plus the LSTM state at every segment start, and the
    // backward pass recomputes one segment's trace at a time from those.
    let start = Some((&state.h[..], &state.c[..]));
    let mut sched = if remat {
        SchedulerTrace::window_forward(config, t0, steps, start)
    } else {
        SchedulerTrace::window(config, t0, steps, start)
    };

    // Forward: every segment from the end state of the one before; without remat the one
    // segment keeps everything, with remat only the segments' start states are kept.
    let mut checkpoints: Vec<Start<T>> = Vec::new();
    let mut lstm_starts: Vec<(Vec<T>, Vec<T>)> = Vec::new();
    let mut kept: Option<Segment<T>> = None;
    let mut cur: Start<T> = (state.theta.clone(), state.m.clone(), state.s.clone());
    let mut out =
        WindowOutcome { objective: T::zero(), train_loss: Vec::new(), lr: Vec::new(), val_loss: Vec::new() };
    for &a in &starts {
        let len = seg_len.min(steps - a);
        if remat {
            let (h, c) = sched.last_state();
            lstm_starts.push((h.to_vec(), c.to_vec()));
        }
        let source = RateSource::Learned { sched: &mut sched, params, fixed: None };
        let seg = Segment::run(&ctx, source, a, len, !remat, (&cur.0, &cur.1, &cur.2));
        out.train_loss.extend_from_slice(&seg.train_loss);
        out.val_loss.extend_from_slice(&seg.val_loss);
        let end = seg.end();
        if remat {
            checkpoints.push(std::mem::replace(&mut cur, end));
        } else {
            cur = end;
            kept = Some(seg);
        }
    }
    out.lr = sched.rates().to_vec();
    out.objective = objective.value(&out.val_loss);

    // Backward, segment by segment from the last.
    let second_order = !config.inner.first_order;
    let validation = data.validation();
    let mut val_cache = mlp.cache(validation.n);
    let mut val_grad = vec![T::zero(); p];
    let mut v = vec![T::zero(); p];
    let (mut wm, mut ws) = (vec![T::zero(); p], vec![T::zero(); p]);
    let mut u = vec![T::zero(); p];
    let mut hv = vec![T::zero(); p];
    let mut da = vec![T::zero(); steps * groups];
    let mut scratch = None;
    let mut carry = (vec![T::zero(); config.scheduler.hidden], vec![T::zero(); config.scheduler.hidden]);
    for (i, &a) in starts.iter().enumerate().rev() {
        let len = seg_len.min(steps - a);
        let mut seg = match kept.take() {
            Some(seg) => seg,
            None => {
                let from = &checkpoints[i];
                Segment::run(&ctx, RateSource::Replay(&sched), a, len, true, (&from.0, &from.1, &from.2))
            }
        };
        for k in (0..len).rev() {
            if let Some(w) = objective.weight(t0 + a + k + 1) {
                mlp.loss_and_grad(
                    &mut val_grad,
                    &mut val_cache,
                    seg.theta(k + 1),
                    validation.x,
                    validation.y,
                );
                let c = scale * T::of(w);
                for (vi, &gi) in v.iter_mut().zip(&val_grad) {
                    *vi += c * gi;
                }
            }
            let g = &seg.grads[k * p..(k + 1) * p];
            let rates = sched.rates_at(a + k);
            let d = seg.opt.direction(k, g);
            for kk in 0..groups {
                let r = mlp.layout.group(kk);
                da[(a + k) * groups + kk] = -crate::linalg::dot(&v[r.clone()], &d[r]);
            }
            if second_order {
                for (kk, &rate) in rates.iter().enumerate() {
                    let r = mlp.layout.group(kk);
                    for (ui, &vi) in u[r.clone()].iter_mut().zip(&v[r]) {
                        *ui = rate * vi;
                    }
                }
                seg.opt.backward(k, g, &mut u, &mut wm, &mut ws);
                let (cache, batch) = seg.cache_and_batch(k);
                let scratch = scratch.get_or_insert_with(|| mlp.hvp_scratch(batch.n));
                mlp.hvp(&mut hv, scratch, cache, seg.theta(k), &batch.x, &u);
                for (vi, &h) in v.iter_mut().zip(&hv) {
                    *vi -= h;
                }
            }
        }
        if remat {
            let (h, c) = &lstm_starts[i];
            let mut part = SchedulerTrace::window(config, t0 + a, len, Some((h, c)));
            for (k, &x) in sched.features()[a..a + len].iter().enumerate() {
                part.step(params, k, x);
            }
            part.backward_carrying(grad, params, &da[a * groups..(a + len) * groups], &mut carry);
        }
    }
    if !remat {
        sched.backward_carrying(grad, params, &da, &mut carry);
    }
    let (h, c) = sched.last_state();
    state.h = h.to_vec();
    state.c = c.to_vec();
    (state.theta, state.m, state.s) = cur;
    state.step += steps;
    Ok(out)
}

/// Runs `steps` steps of `state`'s run without any gradient, rates from the learned
/// scheduler or, when given, `rule`; validation losses at `objective`'s points when given.
/// Advances `state`. This is what evaluation, `apply` and PES run.
#[allow(clippy::too_many_arguments)]
pub fn advance<T: Real>(
    config: &Config,
    params: &Params<T>,
    state: &mut RunState<T>,
    data: &dyn RunData<T>,
    steps: usize,
    objective: Option<&Objective>,
    rule: Option<&mut dyn RateRule<T>>,
    fixed_features: Option<&[[T; crate::config::FEATURES]]>,
) -> Result<WindowOutcome<T>> {
    let check_obj = objective.copied().unwrap_or(Objective {
        window: steps.max(1),
        mode: super::objective::ObjectiveMode::End,
        horizon: config.inner.steps,
    });
    check_window(config, params, state, steps, &check_obj)?;
    let mlp = Mlp::new(config);
    let t0 = state.step;
    let ctx = Ctx { mlp: &mlp, config, data, t0, objective };
    let mut sched = SchedulerTrace::window_forward(config, t0, steps, Some((&state.h, &state.c)));
    let uses_rule = rule.is_some();
    let source = match rule {
        Some(rule) => RateSource::Rule(rule),
        None => RateSource::Learned { sched: &mut sched, params, fixed: fixed_features },
    };
    let seg = Segment::run(&ctx, source, 0, steps, false, (&state.theta, &state.m, &state.s));
    let (theta, m, s) = seg.end();
    if !uses_rule {
        let (h, c) = sched.last_state();
        state.h = h.to_vec();
        state.c = c.to_vec();
    }
    (state.theta, state.m, state.s) = (theta, m, s);
    state.step += steps;
    let lr = if uses_rule { seg.rule_rates.clone() } else { sched.rates().to_vec() };
    let value = objective.map_or(T::zero(), |o| o.value(&seg.val_loss));
    Ok(WindowOutcome { objective: value, train_loss: seg.train_loss, lr, val_loss: seg.val_loss })
}
