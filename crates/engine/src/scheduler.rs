//! The learning-rate scheduler of one inner run: produces `a_t` step by step (spec §3) and,
//! once the meta-backward pass has produced every `dJ/da_t`, back-propagates into phi.

use crate::config::{Config, FEATURES, SchedulerKind};
use crate::lstm_cell::{lstm_cell_backward, lstm_cell_forward, sigmoid};
use crate::params::{LstmParams, Params};
use crate::real::Real;

/// Everything one task's scheduler computed, kept for the backward pass.
#[derive(Debug, Clone)]
pub struct SchedulerTrace<T> {
    kind: SchedulerKind,
    /// Global index of the trace's first step (a window of a long run starts mid-run; the
    /// LSLR table is indexed by global step).
    t0: usize,
    groups: usize,
    hidden: usize,
    lr_min: T,
    lr_span: T,
    lr_fixed: T,
    /// `σ(z_t)`, `[T, G]`.
    sig: Vec<T>,
    /// `a_t`, `[T, G]`.
    rates: Vec<T>,
    /// Features, `[T]`.
    xs: Vec<[T; FEATURES]>,
    /// `h_t`, `[T+1, H]` (`h_0 = 0`).
    hs: Vec<T>,
    /// `c_t`, `[T+1, H]`.
    cs: Vec<T>,
    /// Activated gates, `[T, 4H]`.
    gates: Vec<T>,
    /// `tanh(c_{t+1})`, `[T, H]`.
    tanh_c: Vec<T>,
    /// Whether the LSTM's per-step values are kept for [`SchedulerTrace::backward`]; a
    /// forward-only trace keeps two `h`/`c` slots and one gate slot, so its memory per step
    /// is that of the features and rates alone (`--remat`, evaluation).
    keep: bool,
    /// Steps taken so far.
    done: usize,
}

impl<T: Real> SchedulerTrace<T> {
    /// An empty trace for one inner run of `config`.
    pub fn new(config: &Config) -> Self {
        Self::window(config, 0, config.inner.steps, None)
    }

    /// An empty trace for `steps` steps of a run starting at global step `t0`, the LSTM
    /// starting from `start = (h, c)` (zero when `None`): one window of a long run (spec §8).
    pub fn window(config: &Config, t0: usize, steps: usize, start: Option<(&[T], &[T])>) -> Self {
        Self::with_storage(config, t0, steps, start, true)
    }

    /// Like [`SchedulerTrace::window`], but keeping only what the rates and features need: the
    /// LSTM's intermediate values are dropped step by step, so the trace cannot be
    /// back-propagated; [`SchedulerTrace::last_state`] still gives the state to start the next
    /// segment's trace from. Its rates are the same bits as a full trace's.
    pub fn window_forward(config: &Config, t0: usize, steps: usize, start: Option<(&[T], &[T])>) -> Self {
        Self::with_storage(config, t0, steps, start, false)
    }

    fn with_storage(
        config: &Config,
        t0: usize,
        steps: usize,
        start: Option<(&[T], &[T])>,
        keep: bool,
    ) -> Self {
        let s = &config.scheduler;
        let g = config.groups();
        let h = if s.kind == SchedulerKind::Lstm { s.hidden } else { 0 };
        let (state_slots, gate_slots) = if keep { (steps + 1, steps) } else { (2, 1) };
        let mut hs = vec![T::zero(); state_slots * h];
        let mut cs = vec![T::zero(); state_slots * h];
        if let Some((h0, c0)) = start {
            hs[..h].copy_from_slice(&h0[..h]);
            cs[..h].copy_from_slice(&c0[..h]);
        }
        Self {
            kind: s.kind,
            t0,
            groups: g,
            hidden: h,
            lr_min: T::of(s.lr_min),
            lr_span: T::of(s.lr_max - s.lr_min),
            lr_fixed: T::of(s.lr_fixed),
            sig: vec![T::zero(); steps * g],
            rates: vec![T::zero(); steps * g],
            xs: vec![[T::zero(); FEATURES]; steps],
            hs,
            cs,
            gates: vec![T::zero(); gate_slots * 4 * h],
            tanh_c: vec![T::zero(); gate_slots * h],
            keep,
            done: 0,
        }
    }

    /// The `h`/`c` slot holding the state after `t` steps, and the gate slot of step `t`.
    fn slots(&self, t: usize) -> (usize, usize) {
        if self.keep { (t, t) } else { (t % 2, 0) }
    }

    /// Computes the rates `a_t` of step `t` from the features `x_t` (steps must be taken in
    /// order 0, 1, ...). `params` must hold the phi tensors of the configured kind.
    pub fn step(&mut self, params: &Params<T>, t: usize, x: [T; FEATURES]) -> &[T] {
        let g = self.groups;
        debug_assert_eq!(t, self.done, "scheduler steps are taken in order");
        self.done = t + 1;
        let (prev, gi) = self.slots(t);
        let next = self.slots(t + 1).0;
        self.xs[t] = x;
        let rates = &mut self.rates[t * g..(t + 1) * g];
        let sig = &mut self.sig[t * g..(t + 1) * g];
        match self.kind {
            SchedulerKind::Fixed => rates.fill(self.lr_fixed),
            SchedulerKind::Lslr => {
                let row = self.t0 + t;
                let z = &params.lslr.as_ref().expect("validated: lslr table present")[row * g..(row + 1) * g];
                for ((r, s), &z) in rates.iter_mut().zip(sig.iter_mut()).zip(z) {
                    *s = sigmoid(z);
                    *r = self.lr_min + self.lr_span * *s;
                }
            }
            SchedulerKind::Lstm => {
                let p = params.lstm.as_ref().expect("validated: lstm tensors present");
                let h = self.hidden;
                let (h_prev, h_new) = two_slots(&mut self.hs, h, prev, next);
                let (c_prev, c_new) = two_slots(&mut self.cs, h, prev, next);
                lstm_cell_forward(
                    h_new,
                    c_new,
                    &mut self.gates[gi * 4 * h..(gi + 1) * 4 * h],
                    &mut self.tanh_c[gi * h..(gi + 1) * h],
                    p,
                    &x,
                    h_prev,
                    c_prev,
                );
                let h_new = &*h_new;
                for k in 0..g {
                    let z = p.head_b[k] + crate::linalg::dot(&p.head_w[k * h..(k + 1) * h], h_new);
                    sig[k] = sigmoid(z);
                    rates[k] = self.lr_min + self.lr_span * sig[k];
                }
            }
        }
        rates
    }

    /// The rates of every step so far, `[T, G]`.
    pub fn rates(&self) -> &[T] {
        &self.rates
    }

    /// The rates of step `t`.
    pub fn rates_at(&self, t: usize) -> &[T] {
        &self.rates[t * self.groups..(t + 1) * self.groups]
    }

    /// The LSTM state `(h, c)` after the last step (empty for the other kinds): what a long
    /// run carries into its next window.
    pub fn last_state(&self) -> (&[T], &[T]) {
        let (h, n) = (self.hidden, self.slots(self.done).0);
        (&self.hs[n * h..(n + 1) * h], &self.cs[n * h..(n + 1) * h])
    }

    /// The features of every step, as fed to the scheduler.
    pub fn features(&self) -> &[[T; FEATURES]] {
        &self.xs
    }

    /// Back-propagates `da = dJ/da_t` (`[T, G]`, all steps) into the phi gradients of `grad`
    /// (accumulating). `dJ/dz = dJ/da · (lr_max − lr_min) · σ(z)(1 − σ(z))`, then into the LSLR
    /// table, or into the head and through the LSTM by back-propagation through time.
    pub fn backward(&self, grad: &mut Params<T>, params: &Params<T>, da: &[T]) {
        let mut carry = (vec![T::zero(); self.hidden], vec![T::zero(); self.hidden]);
        self.backward_carrying(grad, params, da, &mut carry);
    }

    /// [`SchedulerTrace::backward`] for one segment of a longer run: `carry` holds
    /// `(dJ/dh, dJ/dc)` of the LSTM state after the segment's last step (from the segment
    /// after it; zero for the last) and comes back holding those of the state before its
    /// first step. Back-propagating the segments from the last one this way takes the very
    /// steps, in the very order, of one backward pass over the whole run: the same bits.
    pub fn backward_carrying(
        &self,
        grad: &mut Params<T>,
        params: &Params<T>,
        da: &[T],
        carry: &mut (Vec<T>, Vec<T>),
    ) {
        assert!(self.keep, "a forward-only scheduler trace cannot be back-propagated");
        let g = self.groups;
        let steps = self.xs.len();
        let dz = |t: usize, k: usize| {
            da[t * g + k] * self.lr_span * self.sig[t * g + k] * (T::one() - self.sig[t * g + k])
        };
        match self.kind {
            SchedulerKind::Fixed => {}
            SchedulerKind::Lslr => {
                let gz = grad.lslr.as_mut().expect("gradient has the lslr slot");
                for t in 0..steps {
                    for k in 0..g {
                        gz[(self.t0 + t) * g + k] += dz(t, k);
                    }
                }
            }
            SchedulerKind::Lstm => {
                let p = params.lstm.as_ref().expect("validated: lstm tensors present");
                let gl: &mut LstmParams<T> = grad.lstm.as_mut().expect("gradient has the lstm slots");
                let h = self.hidden;
                let (dh_carry, dc_carry) = carry;
                let mut dh_total = vec![T::zero(); h];
                let mut dh_prev = vec![T::zero(); h];
                let mut dc_prev = vec![T::zero(); h];
                let mut dgates = vec![T::zero(); 4 * h];
                for t in (0..steps).rev() {
                    let h_new = &self.hs[(t + 1) * h..(t + 2) * h];
                    dh_total.copy_from_slice(dh_carry);
                    for k in 0..g {
                        let d = dz(t, k);
                        crate::linalg::axpy(&mut gl.head_w[k * h..(k + 1) * h], d, h_new);
                        gl.head_b[k] += d;
                        crate::linalg::axpy(&mut dh_total, d, &p.head_w[k * h..(k + 1) * h]);
                    }
                    lstm_cell_backward(
                        &mut dh_prev,
                        &mut dc_prev,
                        &mut dgates,
                        gl,
                        p,
                        &self.xs[t],
                        &self.hs[t * h..(t + 1) * h],
                        &self.cs[t * h..(t + 1) * h],
                        &self.gates[t * 4 * h..(t + 1) * 4 * h],
                        &self.tanh_c[t * h..(t + 1) * h],
                        &dh_total,
                        dc_carry,
                    );
                    std::mem::swap(dh_carry, &mut dh_prev);
                    std::mem::swap(dc_carry, &mut dc_prev);
                }
            }
        }
    }
}

/// Slot `prev` (read) and slot `next` (written) of `h`-sized slots of `v`.
fn two_slots<T>(v: &mut [T], h: usize, prev: usize, next: usize) -> (&[T], &mut [T]) {
    if prev < next {
        let (lo, hi) = v.split_at_mut(next * h);
        (&lo[prev * h..(prev + 1) * h], &mut hi[..h])
    } else {
        let (lo, hi) = v.split_at_mut(prev * h);
        (&hi[..h], &mut lo[next * h..(next + 1) * h])
    }
}
