//! The LSTM scheduler of [`crate::scheduler`] for a group of tasks lane by lane (issue 13):
//! the gate pre-activations, the cell, the head and the whole backward pass through time run
//! with one [`Lanes`] value per scalar, so one vector instruction advances every task of the
//! group. Each task's operations and their order are exactly those of
//! [`crate::scheduler::SchedulerTrace`] and [`crate::lstm_cell`] (the same products, the
//! partial sums of [`crate::linalg::dot`], no fused multiply-add), and the transcendental
//! functions (`expf`, `tanhf`) are the same scalar calls per lane, so every lane's rates and
//! phi gradient are bitwise the one-task engine's. Those scalar calls run for the group's real
//! tasks only: padding lanes repeat the last task and copy its values.
//!
//! Only the LSTM kind runs here; the fixed and LSLR schedulers (no network) stay per task.
//! `step` and `backward` are compiled for AVX-512 (`target_feature`, so that every [`Lanes`]
//! operation is one instruction) and are called from the task groups' AVX-512 code only.
// Block and lane loops index several arrays by the same counter on purpose.
#![allow(clippy::needless_range_loop)]
// Reinterpreting `Lanes` as an AVX-512 register (module `simd`).
#![allow(unsafe_code)]

use crate::config::{Config, FEATURES, SchedulerKind};
use crate::lane_linalg::{LANES, Lanes, all_zero_bits, extract_all, insert};
use crate::lane_pool::{give, take, take_dirty};
use crate::lstm_cell::sigmoid;
use crate::params::{LstmParams, Params};
use crate::real::Real;

#[cfg(target_arch = "x86_64")]
use simd::{add, mul, sub};

/// Lane-wise arithmetic as single AVX-512 instructions (LLVM's own vectorisation of
/// `[f32; 16]` prefers 256-bit halves and stack copies). Called only from functions compiled
/// with AVX-512F.
#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_mul_ps, _mm512_sub_ps};

    use crate::lane_linalg::Lanes;

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn v(x: Lanes) -> __m512 {
        // SAFETY: `Lanes` is `repr(C)` over `[f32; 16]`: 64 bytes of f32, as `__m512`, and
        // every bit pattern is valid for both.
        unsafe { std::mem::transmute::<Lanes, __m512>(x) }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn l(x: __m512) -> Lanes {
        // SAFETY: as `v`.
        unsafe { std::mem::transmute::<__m512, Lanes>(x) }
    }

    /// `a + b` per lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn add(a: Lanes, b: Lanes) -> Lanes {
        l(_mm512_add_ps(v(a), v(b)))
    }

    /// `a − b` per lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn sub(a: Lanes, b: Lanes) -> Lanes {
        l(_mm512_sub_ps(v(a), v(b)))
    }

    /// `a · b` per lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn mul(a: Lanes, b: Lanes) -> Lanes {
        l(_mm512_mul_ps(v(a), v(b)))
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    a.zip(b, |a, b| a + b)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    a.zip(b, |a, b| a - b)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn mul(a: Lanes, b: Lanes) -> Lanes {
    a.zip(b, |a, b| a * b)
}

/// `acc + s · x` (a product rounded, then a sum), `s` shared by every lane.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn mac_s(acc: Lanes, s: f32, x: Lanes) -> Lanes {
    add(acc, mul(Lanes::splat(s), x))
}

/// `linalg::dot(w, x)` per lane for a vector `w` shared by every lane: eight partial sums, a
/// tail and the same summation tree.
#[inline]
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
fn dot_shared(w: &[f32], x: &[Lanes]) -> Lanes {
    let n = w.len().min(x.len());
    let mut acc = [Lanes::default(); 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for q in 0..8 {
            acc[q] = mac_s(acc[q], w[c * 8 + q], x[c * 8 + q]);
        }
    }
    let mut tail = Lanes::default();
    for i in chunks * 8..n {
        tail = mac_s(tail, w[i], x[i]);
    }
    add(
        add(add(add(acc[0], acc[4]), add(acc[1], acc[5])), add(add(acc[2], acc[6]), add(acc[3], acc[7]))),
        tail,
    )
}

/// `f` on the first `real` lanes, the other lanes a copy of lane `real − 1` (padding lanes
/// repeat the last task, so this is what they would compute).
#[inline(always)]
fn per_lane(x: Lanes, real: usize, f: impl Fn(f32) -> f32) -> Lanes {
    let mut o = [0.0; LANES];
    for l in 0..real {
        o[l] = f(x.0[l]);
    }
    for l in real..LANES {
        o[l] = o[real - 1];
    }
    Lanes(o)
}

/// Everything a group's LSTM scheduler computed, kept for the backward pass (the lane twin of
/// [`crate::scheduler::SchedulerTrace`] for the LSTM kind, starting from `h_0 = c_0 = 0`).
pub struct LaneLstm {
    /// Real tasks of the group (lanes past it repeat the last one).
    tasks: usize,
    groups: usize,
    hidden: usize,
    lr_min: f32,
    lr_span: f32,
    /// `σ(z_t)`, `[T, G]`.
    sig: Vec<Lanes>,
    /// Features, `[T, FEATURES]`.
    xs: Vec<Lanes>,
    /// `h_t`, `[T+1, H]`.
    hs: Vec<Lanes>,
    /// `c_t`, `[T+1, H]`.
    cs: Vec<Lanes>,
    /// Activated gates, `[T, 4H]`.
    gates: Vec<Lanes>,
    /// `tanh(c_{t+1})`, `[T, H]`.
    tanh_c: Vec<Lanes>,
}

impl LaneLstm {
    /// An empty trace for a group of `tasks` real tasks and one inner run of `config`, or
    /// `None` when its scheduler is not an LSTM.
    pub fn new(config: &Config, tasks: usize) -> Option<Self> {
        let s = &config.scheduler;
        if s.kind != SchedulerKind::Lstm {
            return None;
        }
        assert!((1..=LANES).contains(&tasks), "a group holds 1..={LANES} tasks");
        let (steps, g, h) = (config.inner.steps, config.groups(), s.hidden);
        let mut hs = take_dirty((steps + 1) * h);
        let mut cs = take_dirty((steps + 1) * h);
        hs[..h].fill(Lanes::default());
        cs[..h].fill(Lanes::default());
        Some(Self {
            tasks,
            groups: g,
            hidden: h,
            lr_min: f32::of(s.lr_min),
            lr_span: f32::of(s.lr_max - s.lr_min),
            sig: take_dirty(steps * g),
            xs: take_dirty(steps * FEATURES),
            hs,
            cs,
            gates: take_dirty(steps * 4 * h),
            tanh_c: take_dirty(steps * h),
        })
    }

    /// Gives the buffers back to this thread's pool.
    pub fn recycle(self) {
        for b in [self.sig, self.xs, self.hs, self.cs, self.gates, self.tanh_c] {
            give(b);
        }
    }

    /// The features of every step of lane `l`.
    pub fn features(&self, l: usize) -> Vec<[f32; FEATURES]> {
        self.xs.chunks_exact(FEATURES).map(|x| std::array::from_fn(|f| x[f].0[l])).collect()
    }

    /// Step `t` (steps in order 0, 1, ...) from the features `x`: writes the rates `a_t`
    /// (`[G]`), as [`crate::scheduler::SchedulerTrace::step`] per lane.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    pub(crate) fn step(&mut self, p: &LstmParams<f32>, t: usize, x: [Lanes; FEATURES], rates: &mut [Lanes]) {
        let (g, hid, real) = (self.groups, self.hidden, self.tasks);
        self.xs[t * FEATURES..(t + 1) * FEATURES].copy_from_slice(&x);
        let h = &self.hs[t * hid..(t + 1) * hid];
        let gates = &mut self.gates[t * 4 * hid..(t + 1) * 4 * hid];
        // lstm_cell_forward.
        for (r, gate) in gates.iter_mut().enumerate() {
            let mut pre = Lanes::splat(p.b_ih[r] + p.b_hh[r]);
            for (&w, &x) in p.w_ih[r * FEATURES..(r + 1) * FEATURES].iter().zip(&x) {
                pre = mac_s(pre, w, x);
            }
            pre = add(pre, dot_shared(&p.w_hh[r * hid..(r + 1) * hid], h));
            *gate = if (2 * hid..3 * hid).contains(&r) {
                per_lane(pre, real, |v| v.tanh())
            } else {
                per_lane(pre, real, sigmoid)
            };
        }
        let hs_next = &mut self.hs[(t + 1) * hid..];
        let (cs_prev, cs_next) = self.cs.split_at_mut((t + 1) * hid);
        let c_prev = &cs_prev[t * hid..];
        let (h_new, c_new) = (&mut hs_next[..hid], &mut cs_next[..hid]);
        let tanh_c = &mut self.tanh_c[t * hid..(t + 1) * hid];
        for j in 0..hid {
            let (i, f, gg, o) = (gates[j], gates[hid + j], gates[2 * hid + j], gates[3 * hid + j]);
            c_new[j] = add(mul(f, c_prev[j]), mul(i, gg));
            tanh_c[j] = per_lane(c_new[j], real, |v| v.tanh());
            h_new[j] = mul(o, tanh_c[j]);
        }
        // The head.
        let sig = &mut self.sig[t * g..(t + 1) * g];
        let (lr_min, lr_span) = (Lanes::splat(self.lr_min), Lanes::splat(self.lr_span));
        for k in 0..g {
            let z = add(Lanes::splat(p.head_b[k]), dot_shared(&p.head_w[k * hid..(k + 1) * hid], h_new));
            sig[k] = per_lane(z, real, sigmoid);
            rates[k] = add(lr_min, mul(lr_span, sig[k]));
        }
    }

    /// Back-propagates `da = dJ/da_t` (`[T, G]` per lane) into the phi gradients of the
    /// group's real tasks, `grads[l]` for lane `l` (accumulating), as
    /// [`crate::scheduler::SchedulerTrace::backward`] per lane.
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx512f"))]
    pub(crate) fn backward(&self, grads: &mut [Params<f32>], p: &LstmParams<f32>, da: &[Lanes]) {
        let (g, hid) = (self.groups, self.hidden);
        let steps = self.xs.len() / FEATURES;
        let nt = self.tasks.min(grads.len());
        // The gradients lane by lane, from the tasks' current values.
        let sizes = [4 * hid * FEATURES, 4 * hid * hid, 4 * hid, 4 * hid, g * hid, g];
        let mut gl: Vec<Vec<Lanes>> = sizes.iter().map(|&n| take(n)).collect();
        for (l, grad) in grads.iter().enumerate().take(nt) {
            let t = grad.lstm.as_ref().expect("gradient has the lstm slots");
            for (dst, src) in gl.iter_mut().zip([&t.w_ih, &t.w_hh, &t.b_ih, &t.b_hh, &t.head_w, &t.head_b]) {
                // The buffers start at +0.0: a task's all-zero gradient (the usual case) needs
                // no transpose.
                if !all_zero_bits(src) {
                    insert(dst, src, l);
                }
            }
        }
        let [gw_ih, gw_hh, gb_ih, gb_hh, ghead_w, ghead_b] = &mut gl[..] else {
            unreachable!("six gradient tensors")
        };
        let mut dh_carry = take(hid);
        let mut dc_carry = take(hid);
        let mut dh_total = take_dirty(hid);
        let mut dh_prev = take_dirty(hid);
        let mut dc_prev = take_dirty(hid);
        // The recurrence first (it needs only the weights), keeping each step's head and gate
        // gradients; then every weight gradient in one pass, each element summing its steps in
        // the same order (t = T-1 down to 0) as the step-by-step loop did: the same bits, one
        // pass over the 4H x (F + H) gradient instead of T.
        let mut d_head = take_dirty(steps * g);
        let mut dgates_all = take_dirty(steps * 4 * hid);
        let span = Lanes::splat(self.lr_span);
        let one = Lanes::splat(1.0);
        for t in (0..steps).rev() {
            dh_total.copy_from_slice(&dh_carry);
            for k in 0..g {
                let s = self.sig[t * g + k];
                let d = mul(mul(mul(da[t * g + k], span), s), sub(one, s));
                d_head[t * g + k] = d;
                for (y, &w) in dh_total.iter_mut().zip(&p.head_w[k * hid..(k + 1) * hid]) {
                    *y = add(*y, mul(d, Lanes::splat(w)));
                }
            }
            // lstm_cell_backward.
            let gates = &self.gates[t * 4 * hid..(t + 1) * 4 * hid];
            let c = &self.cs[t * hid..(t + 1) * hid];
            let dgates = &mut dgates_all[t * 4 * hid..(t + 1) * 4 * hid];
            for j in 0..hid {
                let (i, f, gg, o) = (gates[j], gates[hid + j], gates[2 * hid + j], gates[3 * hid + j]);
                let tc = self.tanh_c[t * hid + j];
                let d_o = mul(dh_total[j], tc);
                let dct = add(dc_carry[j], mul(mul(dh_total[j], o), sub(one, mul(tc, tc))));
                let (d_i, d_f, d_g) = (mul(dct, gg), mul(dct, c[j]), mul(dct, i));
                dc_prev[j] = mul(dct, f);
                dgates[j] = mul(mul(d_i, i), sub(one, i));
                dgates[hid + j] = mul(mul(d_f, f), sub(one, f));
                dgates[2 * hid + j] = mul(d_g, sub(one, mul(gg, gg)));
                dgates[3 * hid + j] = mul(mul(d_o, o), sub(one, o));
            }
            dh_prev.fill(Lanes::default());
            for (r, &dg) in dgates.iter().enumerate() {
                for (y, &w) in dh_prev.iter_mut().zip(&p.w_hh[r * hid..(r + 1) * hid]) {
                    *y = add(*y, mul(dg, Lanes::splat(w)));
                }
            }
            std::mem::swap(&mut dh_carry, &mut dh_prev);
            std::mem::swap(&mut dc_carry, &mut dc_prev);
        }
        // The weight gradients: `grad += d_t * input_t` for t = T-1 down to 0, per element.
        let accumulate =
            |gw: &mut [Lanes], d: &[Lanes], d_len: usize, inputs: &[Lanes], in_len: usize, lag: usize| {
                for (r, row) in gw.chunks_exact_mut(in_len).enumerate() {
                    for (c, y) in row.iter_mut().enumerate() {
                        let mut acc = *y;
                        for t in (0..steps).rev() {
                            acc = add(acc, mul(d[t * d_len + r], inputs[(t + lag) * in_len + c]));
                        }
                        *y = acc;
                    }
                }
            };
        accumulate(ghead_w, &d_head, g, &self.hs, hid, 1);
        accumulate(gw_ih, &dgates_all, 4 * hid, &self.xs, FEATURES, 0);
        accumulate(gw_hh, &dgates_all, 4 * hid, &self.hs, hid, 0);
        for (k, y) in ghead_b.iter_mut().enumerate() {
            for t in (0..steps).rev() {
                *y = add(*y, d_head[t * g + k]);
            }
        }
        for (r, (yi, yh)) in gb_ih.iter_mut().zip(gb_hh.iter_mut()).enumerate() {
            for t in (0..steps).rev() {
                let dg = dgates_all[t * 4 * hid + r];
                *yi = add(*yi, dg);
                *yh = add(*yh, dg);
            }
        }
        let mut lstm: Vec<&mut LstmParams<f32>> =
            grads[..nt].iter_mut().map(|g| g.lstm.as_mut().expect("gradient has the lstm slots")).collect();
        for (k, src) in gl.iter().enumerate() {
            let mut dst: Vec<&mut [f32]> = lstm
                .iter_mut()
                .map(|t| match k {
                    0 => &mut t.w_ih[..],
                    1 => &mut t.w_hh[..],
                    2 => &mut t.b_ih[..],
                    3 => &mut t.b_hh[..],
                    4 => &mut t.head_w[..],
                    _ => &mut t.head_b[..],
                })
                .collect();
            extract_all(&mut dst, src);
        }
        for b in gl.into_iter().chain([dh_carry, dc_carry, dh_total, dh_prev, dc_prev, d_head, dgates_all]) {
            give(b);
        }
    }
}
