//! The learner's losses (spec §2), their gradient w.r.t. the output and the R-operator of
//! that gradient (for exact Hessian-vector products).

use crate::config::LossKind;
use crate::real::Real;
use crate::task::TargetsRef;

/// Loss of `out[n×d]` against `y`; writes `dL/dout` into `dout` and, for cross-entropy, the
/// softmax into `probs` (kept for the R-operator).
pub fn loss_forward_backward<T: Real>(
    dout: &mut [T],
    probs: &mut [T],
    kind: LossKind,
    out: &[T],
    y: TargetsRef<'_, T>,
    n: usize,
    d: usize,
) -> T {
    match (kind, y) {
        (LossKind::Mse, TargetsRef::Values(y)) => {
            let scale = T::of(2.0) / T::of((n * d) as f64);
            let mut sum = T::zero();
            for ((g, &o), &t) in dout.iter_mut().zip(out).zip(y) {
                let e = o - t;
                sum += e * e;
                *g = scale * e;
            }
            sum / T::of((n * d) as f64)
        }
        (LossKind::CrossEntropy, TargetsRef::Labels(labels)) => {
            let inv_n = T::one() / T::of(n as f64);
            let mut sum = T::zero();
            for r in 0..n {
                let o = &out[r * d..(r + 1) * d];
                let p = &mut probs[r * d..(r + 1) * d];
                let m = o.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
                let mut z = T::zero();
                for (p, &o) in p.iter_mut().zip(o) {
                    *p = (o - m).exp();
                    z += *p;
                }
                let label = labels[r] as usize;
                sum += m + z.ln() - o[label];
                let inv_z = T::one() / z;
                let g = &mut dout[r * d..(r + 1) * d];
                for (g, p) in g.iter_mut().zip(p.iter_mut()) {
                    *p *= inv_z;
                    *g = *p * inv_n;
                }
                g[label] -= inv_n;
            }
            sum * inv_n
        }
        // Task validation guarantees targets match the loss kind.
        _ => T::nan(),
    }
}

/// Loss value only (no gradient), for evaluation.
pub fn loss_value<T: Real>(kind: LossKind, out: &[T], y: TargetsRef<'_, T>, n: usize, d: usize) -> T {
    match (kind, y) {
        (LossKind::Mse, TargetsRef::Values(y)) => {
            let sum: T = out.iter().zip(y).map(|(&o, &t)| (o - t) * (o - t)).sum();
            sum / T::of((n * d) as f64)
        }
        (LossKind::CrossEntropy, TargetsRef::Labels(labels)) => {
            let mut sum = T::zero();
            for r in 0..n {
                let o = &out[r * d..(r + 1) * d];
                let m = o.iter().fold(T::neg_infinity(), |a, &b| a.max(b));
                let z: T = o.iter().map(|&o| (o - m).exp()).sum();
                sum += m + z.ln() - o[labels[r] as usize];
            }
            sum / T::of(n as f64)
        }
        _ => T::nan(),
    }
}

/// `R{dL/dout}` for a direction `rout = R{out}`: the loss Hessian w.r.t. the output applied
/// to `rout`. mse: `2 rout / (n d)`; cross-entropy: `(p ⊙ (rout − ⟨p, rout⟩)) / n` per row.
pub fn loss_rop<T: Real>(rdout: &mut [T], kind: LossKind, probs: &[T], rout: &[T], n: usize, d: usize) {
    match kind {
        LossKind::Mse => {
            let scale = T::of(2.0) / T::of((n * d) as f64);
            for (g, &r) in rdout.iter_mut().zip(rout) {
                *g = scale * r;
            }
        }
        LossKind::CrossEntropy => {
            let inv_n = T::one() / T::of(n as f64);
            for r in 0..n {
                let p = &probs[r * d..(r + 1) * d];
                let ro = &rout[r * d..(r + 1) * d];
                let mean: T = p.iter().zip(ro).map(|(&p, &r)| p * r).sum();
                for ((g, &p), &r) in rdout[r * d..(r + 1) * d].iter_mut().zip(p).zip(ro) {
                    *g = p * (r - mean) * inv_n;
                }
            }
        }
    }
}
