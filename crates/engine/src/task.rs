//! A batch of tasks in the task-file layout (spec §6), and per-task views into it.

use crate::config::{Config, LossKind};
use crate::error::{EngineError, Result};
use crate::real::Real;

/// Targets of one set of points for all tasks of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets<T> {
    /// Regression targets, `[B, n, d_L]` row-major (loss `mse`).
    Values(Vec<T>),
    /// Class labels, `[B, n]` (loss `cross_entropy`).
    Labels(Vec<u32>),
}

/// Support and query sets of `b` tasks, stored contiguously as in a task file.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskBatch<T> {
    /// Number of tasks `B`.
    pub b: usize,
    /// Support points per task `K`.
    pub k: usize,
    /// Query points per task `Q`.
    pub q: usize,
    /// Input width `d_0`.
    pub d_in: usize,
    /// Output width `d_L`.
    pub d_out: usize,
    /// `support.x`, `[B, K, d_0]`.
    pub support_x: Vec<T>,
    /// `support.y` or `support.labels`.
    pub support_y: Targets<T>,
    /// `query.x`, `[B, Q, d_0]`.
    pub query_x: Vec<T>,
    /// `query.y` or `query.labels`.
    pub query_y: Targets<T>,
}

/// Borrowed targets of one set of one task.
#[derive(Debug, Clone, Copy)]
pub enum TargetsRef<'a, T> {
    /// `[n, d_L]` values.
    Values(&'a [T]),
    /// `[n]` labels.
    Labels(&'a [u32]),
}

/// One set (support or query) of one task.
#[derive(Debug, Clone, Copy)]
pub struct SetRef<'a, T> {
    /// Number of points.
    pub n: usize,
    /// Inputs, `[n, d_0]`.
    pub x: &'a [T],
    /// Targets.
    pub y: TargetsRef<'a, T>,
}

/// One task of a batch.
#[derive(Debug, Clone, Copy)]
pub struct TaskRef<'a, T> {
    /// Where the inner loop trains.
    pub support: SetRef<'a, T>,
    /// Where the outer loss is measured.
    pub query: SetRef<'a, T>,
}

fn set<'a, T>(x: &'a [T], y: &'a Targets<T>, i: usize, n: usize, d_in: usize, d_out: usize) -> SetRef<'a, T> {
    SetRef {
        n,
        x: &x[i * n * d_in..(i + 1) * n * d_in],
        y: match y {
            Targets::Values(v) => TargetsRef::Values(&v[i * n * d_out..(i + 1) * n * d_out]),
            Targets::Labels(l) => TargetsRef::Labels(&l[i * n..(i + 1) * n]),
        },
    }
}

fn bad(name: &str, reason: impl Into<String>) -> EngineError {
    EngineError::InvalidTaskData { name: name.to_string(), reason: reason.into() }
}

impl<T: Real> TaskBatch<T> {
    /// Task `i` of the batch.
    pub fn task(&self, i: usize) -> TaskRef<'_, T> {
        TaskRef {
            support: set(&self.support_x, &self.support_y, i, self.k, self.d_in, self.d_out),
            query: set(&self.query_x, &self.query_y, i, self.q, self.d_in, self.d_out),
        }
    }

    /// Checks the batch against a configuration: non-empty sets, matching widths and target
    /// kind, consistent lengths, finite values and labels in range.
    pub fn validate(&self, config: &Config) -> Result<()> {
        if self.b == 0 {
            return Err(bad("support.x", "the batch holds no task (B = 0)"));
        }
        if self.k == 0 {
            return Err(bad("support.x", "the support set is empty (K = 0)"));
        }
        if self.q == 0 {
            return Err(bad("query.x", "the query set is empty (Q = 0)"));
        }
        if self.d_in != config.d_in() {
            return Err(bad(
                "support.x",
                format!("input width {} but the model expects {}", self.d_in, config.d_in()),
            ));
        }
        let sets = [
            ("support", self.k, &self.support_x, &self.support_y),
            ("query", self.q, &self.query_x, &self.query_y),
        ];
        for (which, n, x, y) in sets {
            let xname = format!("{which}.x");
            if x.len() != self.b * n * self.d_in {
                return Err(bad(
                    &xname,
                    format!("holds {} values, expected {}", x.len(), self.b * n * self.d_in),
                ));
            }
            if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
                return Err(bad(&xname, format!("non-finite value {} at flat index {pos}", x[pos])));
            }
            match (config.model.loss, y) {
                (LossKind::Mse, Targets::Values(v)) => {
                    let name = format!("{which}.y");
                    if self.d_out != config.d_out() {
                        return Err(bad(
                            &name,
                            format!("output width {} but the model has {}", self.d_out, config.d_out()),
                        ));
                    }
                    if v.len() != self.b * n * self.d_out {
                        return Err(bad(
                            &name,
                            format!("holds {} values, expected {}", v.len(), self.b * n * self.d_out),
                        ));
                    }
                    if let Some(pos) = v.iter().position(|v| !v.is_finite()) {
                        return Err(bad(&name, format!("non-finite value {} at flat index {pos}", v[pos])));
                    }
                }
                (LossKind::CrossEntropy, Targets::Labels(l)) => {
                    let name = format!("{which}.labels");
                    if l.len() != self.b * n {
                        return Err(bad(&name, format!("holds {} labels, expected {}", l.len(), self.b * n)));
                    }
                    let classes = config.d_out();
                    if let Some(pos) = l.iter().position(|&c| c as usize >= classes) {
                        return Err(bad(
                            &name,
                            format!("label {} at flat index {pos} is not below {classes} classes", l[pos]),
                        ));
                    }
                }
                (LossKind::Mse, Targets::Labels(_)) => {
                    return Err(bad(
                        &format!("{which}.y"),
                        "loss mse needs float targets `.y`, found `.labels`",
                    ));
                }
                (LossKind::CrossEntropy, Targets::Values(_)) => {
                    return Err(bad(
                        &format!("{which}.labels"),
                        "loss cross_entropy needs integer `.labels`, found float `.y`",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Converts every value to another float type.
    pub fn cast<U: Real>(&self) -> TaskBatch<U> {
        let c = |v: &Vec<T>| v.iter().map(|&x| U::of(x.as_f64())).collect::<Vec<U>>();
        let ct = |t: &Targets<T>| match t {
            Targets::Values(v) => Targets::Values(c(v)),
            Targets::Labels(l) => Targets::Labels(l.clone()),
        };
        TaskBatch {
            b: self.b,
            k: self.k,
            q: self.q,
            d_in: self.d_in,
            d_out: self.d_out,
            support_x: c(&self.support_x),
            support_y: ct(&self.support_y),
            query_x: c(&self.query_x),
            query_y: ct(&self.query_y),
        }
    }
}
