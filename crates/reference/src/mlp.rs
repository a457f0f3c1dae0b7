//! The learner of spec §2 on the tape: forward pass, losses, and a hand-written
//! backward pass recorded as tape operations (so that it can be differentiated
//! again, giving exact Hessian terms).
//!
//! `theta` is a list of `G = 2L` groups: `theta[2l]` is layer `l`'s weight,
//! row-major `[d_{l+1}, d_l]`; `theta[2l+1]` its bias `[d_{l+1}]`.

use super::tape::{Tape, Var};
use super::{RefSet, RefTargets};

/// What the learner is: layer sizes, activation and loss.
#[derive(Clone, Copy, Debug)]
pub struct Learner<'a> {
    /// `[d_0, ..., d_L]`
    pub layers: &'a [usize],
    /// `tanh` between layers if true, `relu` otherwise.
    pub tanh: bool,
    /// `cross_entropy` if true, `mse` otherwise.
    pub cross_entropy: bool,
}

/// The recorded forward pass of one set.
pub struct Forward {
    /// `h[l]`: input of layer `l`, row-major `[n, d_l]` (`h[0]` = the data, as constants).
    pub h: Vec<Vec<Var>>,
    /// `z[l]`: pre-activation of layer `l`, row-major `[n, d_{l+1}]`; `z[L-1]` is the output.
    pub z: Vec<Vec<Var>>,
    /// The loss over the set.
    pub loss: Var,
    /// `d loss / d output`, row-major `[n, d_L]`, as tape operations.
    pub d_out: Vec<Var>,
}

impl Learner<'_> {
    /// Number of weight layers `L`.
    pub fn depth(&self) -> usize {
        self.layers.len() - 1
    }

    /// Sizes of the `2L` groups, in group order.
    pub fn group_sizes(&self) -> Vec<usize> {
        let mut s = Vec::new();
        for l in 0..self.depth() {
            s.push(self.layers[l + 1] * self.layers[l]);
            s.push(self.layers[l + 1]);
        }
        s
    }

    /// Checkpoint names of the `2L` groups, in group order.
    pub fn group_names(&self) -> Vec<String> {
        let mut s = Vec::new();
        for l in 0..self.depth() {
            s.push(format!("theta.layers.{l}.weight"));
            s.push(format!("theta.layers.{l}.bias"));
        }
        s
    }

    /// Records the forward pass and the loss of `theta` on `set`.
    pub fn forward(&self, tape: &mut Tape, theta: &[Vec<Var>], set: &RefSet) -> Forward {
        let n = set.n;
        let depth = self.depth();
        let d0 = self.layers[0];
        assert_eq!(set.x.len(), n * d0, "x must be [n, d_0]");
        let mut h: Vec<Vec<Var>> = vec![set.x.iter().map(|&v| tape.constant(v)).collect()];
        let mut z: Vec<Vec<Var>> = Vec::new();
        for l in 0..depth {
            let (din, dout) = (self.layers[l], self.layers[l + 1]);
            let w = &theta[2 * l];
            let b = &theta[2 * l + 1];
            assert_eq!(w.len(), dout * din, "weight {l} must be [d_{{l+1}}, d_l]");
            assert_eq!(b.len(), dout, "bias {l} must be [d_{{l+1}}]");
            let mut zl = Vec::with_capacity(n * dout);
            for k in 0..n {
                for j in 0..dout {
                    let row = &w[j * din..(j + 1) * din];
                    let hk = &h[l][k * din..(k + 1) * din];
                    let s = tape.dot(row, hk);
                    zl.push(tape.add(s, b[j]));
                }
            }
            if l + 1 < depth {
                let hn: Vec<Var> =
                    zl.iter().map(|&v| if self.tanh { tape.tanh(v) } else { tape.relu(v) }).collect();
                h.push(hn);
            }
            z.push(zl);
        }
        let out = z[depth - 1].clone();
        let dl = self.layers[depth];
        let (loss, d_out) = match (&set.y, self.cross_entropy) {
            (RefTargets::Values(y), false) => {
                assert_eq!(y.len(), n * dl, "mse targets must be [n, d_L]");
                let m = (n * dl) as f64;
                let mut sq = Vec::with_capacity(n * dl);
                let mut d = Vec::with_capacity(n * dl);
                for (idx, &o) in out.iter().enumerate() {
                    let diff = tape.add_const(o, -y[idx]);
                    sq.push(tape.mul(diff, diff));
                    d.push(tape.scale(diff, 2.0 / m));
                }
                let s = tape.sum(&sq);
                (tape.scale(s, 1.0 / m), d)
            }
            (RefTargets::Labels(lab), true) => {
                assert_eq!(lab.len(), n, "labels must be [n]");
                let mut terms = Vec::with_capacity(n);
                let mut d = Vec::with_capacity(n * dl);
                for k in 0..n {
                    assert!(lab[k] < dl, "label out of range");
                    let row = &out[k * dl..(k + 1) * dl];
                    // logsumexp with the max subtracted as a constant.
                    let mx = row.iter().map(|&v| tape.value(v)).fold(f64::NEG_INFINITY, f64::max);
                    let ex: Vec<Var> = row
                        .iter()
                        .map(|&v| {
                            let s = tape.add_const(v, -mx);
                            tape.exp(s)
                        })
                        .collect();
                    let se = tape.sum(&ex);
                    let lse0 = tape.ln(se);
                    let lse = tape.add_const(lse0, mx);
                    terms.push(tape.sub(lse, row[lab[k]]));
                    for (j, &o) in row.iter().enumerate() {
                        // softmax_j = exp(out_j - lse); d/d out_j = (softmax_j - [j == label]) / n
                        let s = tape.sub(o, lse);
                        let p = tape.exp(s);
                        let p = if j == lab[k] { tape.add_const(p, -1.0) } else { p };
                        d.push(tape.scale(p, 1.0 / n as f64));
                    }
                }
                let s = tape.sum(&terms);
                (tape.scale(s, 1.0 / n as f64), d)
            }
            (RefTargets::Values(_), true) => panic!("cross_entropy needs labels"),
            (RefTargets::Labels(_), false) => panic!("mse needs value targets"),
        };
        Forward { h, z, loss, d_out }
    }

    /// Hand-written backward pass, as tape operations: `grad loss` per group.
    pub fn backward(&self, tape: &mut Tape, theta: &[Vec<Var>], fwd: &Forward, n: usize) -> Vec<Vec<Var>> {
        let depth = self.depth();
        let mut grads: Vec<Vec<Var>> = vec![Vec::new(); 2 * depth];
        let mut dz = fwd.d_out.clone();
        for l in (0..depth).rev() {
            let (din, dout) = (self.layers[l], self.layers[l + 1]);
            let w = &theta[2 * l];
            let h = &fwd.h[l];
            // dW[j][i] = sum_k dZ[k][j] * H[k][i]
            let mut dw = Vec::with_capacity(dout * din);
            for j in 0..dout {
                for i in 0..din {
                    let col_dz: Vec<Var> = (0..n).map(|k| dz[k * dout + j]).collect();
                    let col_h: Vec<Var> = (0..n).map(|k| h[k * din + i]).collect();
                    dw.push(tape.dot(&col_dz, &col_h));
                }
            }
            // db[j] = sum_k dZ[k][j]
            let mut db = Vec::with_capacity(dout);
            for j in 0..dout {
                let col: Vec<Var> = (0..n).map(|k| dz[k * dout + j]).collect();
                db.push(tape.sum(&col));
            }
            grads[2 * l] = dw;
            grads[2 * l + 1] = db;
            if l > 0 {
                // dH[k][i] = sum_j dZ[k][j] * W[j][i];  dZ_{l-1} = dH * act'(Z_{l-1})
                let zprev = &fwd.z[l - 1];
                let mut dzp = Vec::with_capacity(n * din);
                for k in 0..n {
                    for i in 0..din {
                        let row_dz = &dz[k * dout..(k + 1) * dout];
                        let col_w: Vec<Var> = (0..dout).map(|j| w[j * din + i]).collect();
                        let dh = tape.dot(row_dz, &col_w);
                        let v = if self.tanh {
                            // tanh' = 1 - H^2 with H = tanh(Z_{l-1}) = fwd.h[l]
                            let hv = h[k * din + i];
                            let h2 = tape.mul(hv, hv);
                            let one_minus = tape.neg(h2);
                            let deriv = tape.add_const(one_minus, 1.0);
                            tape.mul(dh, deriv)
                        } else {
                            // relu' is a step function: a constant (its own derivative is 0).
                            let on = tape.value(zprev[k * din + i]) > 0.0;
                            tape.scale(dh, if on { 1.0 } else { 0.0 })
                        };
                        dzp.push(v);
                    }
                }
                dz = dzp;
            }
        }
        grads
    }
}
