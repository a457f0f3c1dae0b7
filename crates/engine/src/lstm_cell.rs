//! PyTorch's `LSTMCell` (gates in the order i, f, g, o), forward and backward for one step.
//!
//! These are the CPU twins of the CUDA kernels: same argument order, outputs first.

use crate::config::FEATURES;
use crate::params::LstmParams;
use crate::real::Real;

/// `σ(x)`, computed without overflow for large |x|.
#[inline]
pub fn sigmoid<T: Real>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// One forward step: `gates = W_ih x + b_ih + W_hh h + b_hh`, `c' = f c + i g`,
/// `h' = o tanh(c')`. Writes `h'`, `c'`, the activated gates `[i, f, g, o]` (4H) and
/// `tanh(c')` (both kept for the backward step).
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_forward<T: Real>(
    h_new: &mut [T],
    c_new: &mut [T],
    gates: &mut [T],
    tanh_c: &mut [T],
    p: &LstmParams<T>,
    x: &[T; FEATURES],
    h: &[T],
    c: &[T],
) {
    let hid = h.len();
    for (r, gate) in gates.iter_mut().enumerate().take(4 * hid) {
        let wi = &p.w_ih[r * FEATURES..(r + 1) * FEATURES];
        let mut pre = p.b_ih[r] + p.b_hh[r];
        for (&w, &x) in wi.iter().zip(x) {
            pre += w * x;
        }
        pre += crate::linalg::dot(&p.w_hh[r * hid..(r + 1) * hid], h);
        *gate = if (2 * hid..3 * hid).contains(&r) { pre.tanh() } else { sigmoid(pre) };
    }
    for j in 0..hid {
        let (i, f, g, o) = (gates[j], gates[hid + j], gates[2 * hid + j], gates[3 * hid + j]);
        c_new[j] = f * c[j] + i * g;
        tanh_c[j] = c_new[j].tanh();
        h_new[j] = o * tanh_c[j];
    }
}

/// One backward step. Given `dh_new = dJ/dh'` and `dc_new = dJ/dc'` (from later steps),
/// writes `dh = dJ/dh`, `dc = dJ/dc` and accumulates the four LSTM parameter gradients into
/// `grad` (its head fields are left alone). The features `x` are constants: no gradient.
#[allow(clippy::too_many_arguments)]
pub fn lstm_cell_backward<T: Real>(
    dh: &mut [T],
    dc: &mut [T],
    dgates: &mut [T],
    grad: &mut LstmParams<T>,
    p: &LstmParams<T>,
    x: &[T; FEATURES],
    h: &[T],
    c: &[T],
    gates: &[T],
    tanh_c: &[T],
    dh_new: &[T],
    dc_new: &[T],
) {
    let hid = h.len();
    for j in 0..hid {
        let (i, f, g, o) = (gates[j], gates[hid + j], gates[2 * hid + j], gates[3 * hid + j]);
        let tc = tanh_c[j];
        let d_o = dh_new[j] * tc;
        let dct = dc_new[j] + dh_new[j] * o * (T::one() - tc * tc);
        let (d_i, d_f, d_g) = (dct * g, dct * c[j], dct * i);
        dc[j] = dct * f;
        dgates[j] = d_i * i * (T::one() - i);
        dgates[hid + j] = d_f * f * (T::one() - f);
        dgates[2 * hid + j] = d_g * (T::one() - g * g);
        dgates[3 * hid + j] = d_o * o * (T::one() - o);
    }
    dh.fill(T::zero());
    for (r, &dg) in dgates.iter().enumerate().take(4 * hid) {
        crate::linalg::axpy(&mut grad.w_ih[r * FEATURES..(r + 1) * FEATURES], dg, x);
        crate::linalg::axpy(&mut grad.w_hh[r * hid..(r + 1) * hid], dg, h);
        grad.b_ih[r] += dg;
        grad.b_hh[r] += dg;
        crate::linalg::axpy(dh, dg, &p.w_hh[r * hid..(r + 1) * hid]);
    }
}
