//! Workers as the coordinator sees them: a pool that runs a job over a range of tasks by
//! splitting it into contiguous parts, one per worker, and gathers the parts: the step
//! skeleton, written once here for the in-process pool ([`super::local_pool::LocalPool`]) and
//! the TCP one ([`super::remote_pool::RemotePool`]) alike, which differ only in their
//! [`Transport`].

use std::ops::Range;
use std::sync::Arc;

use anyhow::anyhow;
use metasched_engine::{FixedSum, Params};
use metasched_proto::{EvalResult, Job, JobResult, Split, StepResult};

use super::transport::{Gathered, Transport};

/// The reduced result of one meta-step over all `B` tasks.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Sum of the per-task meta-gradients (order-independent).
    pub sum: FixedSum,
    /// Query loss of each task, in task order.
    pub outer_loss: Vec<f32>,
    /// Rates of each task, `[B, T, G]`.
    pub lr: Vec<f32>,
    /// What each part took, in task order.
    pub parts: Vec<PartStats>,
    /// Seconds between the first and the last part arriving (waiting for stragglers).
    pub straggler_s: f64,
    /// Parts sent again because their worker died, hung or failed.
    pub redispatched: u32,
    /// Whether the workers reduced the gradient among themselves (NCCL or its TCP stand-in)
    /// and one of them sent it, rather than every worker sending its part.
    pub group_reduced: bool,
}

/// Who computed one part of a meta-step, and how long it took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PartStats {
    /// Worker id.
    pub worker: u32,
    /// Tasks in the part.
    pub tasks: usize,
    /// Seconds the worker spent computing.
    pub compute_s: f64,
}

/// Results of an evaluation over fresh tasks.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// Query loss of each task, in task order.
    pub outer_loss: Vec<f32>,
    /// Rates of each task, `[n, T, G]`.
    pub lr: Vec<f32>,
    /// Query accuracy of each task (empty for regression).
    pub accuracy: Vec<f32>,
}

/// What to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalSpec {
    /// Which split of the task family.
    pub split: Split,
    /// Evaluation stream (a fixed stream gives the same tasks every time).
    pub stream: u64,
    /// Number of tasks.
    pub tasks: usize,
    /// Support points per task.
    pub shots: usize,
    /// Query points per task.
    pub query: usize,
}

/// A set of workers that compute meta-gradients and evaluations for the coordinator: the
/// one skeleton of a step — split the tasks into contiguous parts (one per worker), dispatch a
/// job per part, gather the answers, check them, reduce — over any [`Transport`]. Written
/// once so that every pool splits, checks and sums alike, which is what makes a step bitwise
/// the same for any number and kind of workers.
pub trait WorkerPool: Transport {
    /// Number of live workers.
    fn size(&self) -> usize {
        self.live()
    }

    /// The meta-gradient of tasks `0..batch` of meta-step `step` at `params` (version
    /// `version`): reduced within a worker group when the transport has one, else on the
    /// coordinator.
    fn meta_step(
        &mut self,
        params: &Arc<Params<f32>>,
        version: u64,
        step: u64,
        batch: usize,
    ) -> anyhow::Result<StepOutput> {
        let len = params.buffers().iter().map(|b| b.len()).sum();
        let jobs = |parts: usize| -> Vec<Job> {
            split_range(batch, parts)
                .into_iter()
                .map(|r| Job::MetaGrad { step, version, first: r.start, count: r.len() })
                .collect()
        };
        if let Some(members) = self.group_size(batch)?
            && let Some(gathered) = self.dispatch_gather_grouped(&jobs(members), params, version)?
        {
            let mut out =
                reduce_step(gathered, step, version, len).map_err(|e| anyhow!("reduction group: {e}"))?;
            out.group_reduced = true;
            return Ok(out);
        }
        let parts = self.ready()?;
        let gathered = self.dispatch_gather(&jobs(parts), params, version)?;
        reduce_step(gathered, step, version, len)
    }

    /// Query losses on fresh tasks.
    fn evaluate(&mut self, params: &Arc<Params<f32>>, spec: EvalSpec) -> anyhow::Result<EvalOutput> {
        let version = self.eval_version();
        let jobs: Vec<Job> = split_range(spec.tasks, self.ready()?)
            .into_iter()
            .map(|r| Job::Eval {
                split: spec.split,
                stream: spec.stream,
                first: r.start,
                count: r.len(),
                shots: spec.shots,
                query: spec.query,
            })
            .collect();
        let gathered = self.dispatch_gather(&jobs, params, version)?;
        reduce_eval(gathered)
    }
}

impl<T: Transport + ?Sized> WorkerPool for T {}

/// Splits `0..n` into `parts` contiguous ranges whose sizes differ by at most one (empty
/// ranges are dropped).
pub fn split_range(n: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let (base, extra) = (n / parts, n % parts);
    let mut out = Vec::with_capacity(parts);
    let mut at = 0;
    for i in 0..parts {
        let len = base + usize::from(i < extra);
        if len > 0 {
            out.push(at..at + len);
        }
        at += len;
    }
    out
}

/// Checks that every part answers meta-step `step` at parameter version `version` (a worker
/// answering another step or version, or with an evaluation, is a protocol error, never
/// silently summed), then puts the parts together: sums the meta-gradients (exact, so the
/// order does not matter) and concatenates per-task values in task order.
fn reduce_step(gathered: Gathered, step: u64, version: u64, param_len: usize) -> anyhow::Result<StepOutput> {
    let mut parts: Vec<(u32, StepResult)> = Vec::with_capacity(gathered.parts.len());
    for (id, answer) in gathered.parts {
        let JobResult::Step(r) = answer else {
            return Err(anyhow!("worker {id} answered a step with an evaluation"));
        };
        if r.step != step || r.version != version {
            return Err(anyhow!(
                "worker {id} answered step {} v{} for step {step} v{version}",
                r.step,
                r.version
            ));
        }
        parts.push((id, r));
    }
    parts.sort_by_key(|(_, r)| r.first);
    let mut out = StepOutput {
        sum: FixedSum::zeros(param_len),
        outer_loss: Vec::new(),
        lr: Vec::new(),
        parts: Vec::with_capacity(parts.len()),
        straggler_s: gathered.straggler_s,
        redispatched: gathered.redispatched,
        group_reduced: false,
    };
    for (worker, r) in parts {
        out.sum.merge(&r.sum);
        out.parts.push(PartStats { worker, tasks: r.outer_loss.len(), compute_s: r.compute_s });
        out.outer_loss.extend(r.outer_loss);
        out.lr.extend(r.lr);
    }
    Ok(out)
}

/// Puts evaluation parts that arrived in any order together, in task order.
fn reduce_eval(gathered: Gathered) -> anyhow::Result<EvalOutput> {
    let mut parts: Vec<EvalResult> = Vec::with_capacity(gathered.parts.len());
    for (id, answer) in gathered.parts {
        let JobResult::Eval(r) = answer else {
            return Err(anyhow!("worker {id} answered an evaluation with a step"));
        };
        parts.push(r);
    }
    parts.sort_by_key(|r| r.first);
    let mut out = EvalOutput { outer_loss: Vec::new(), lr: Vec::new(), accuracy: Vec::new() };
    for r in parts {
        out.outer_loss.extend(r.outer_loss);
        out.lr.extend(r.lr);
        out.accuracy.extend(r.accuracy);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_in_order() {
        for n in [0, 1, 7, 25] {
            for parts in [1, 2, 3, 8, 30] {
                let r = split_range(n, parts);
                let flat: Vec<usize> = r.iter().flat_map(|r| r.clone()).collect();
                assert_eq!(flat, (0..n).collect::<Vec<_>>());
                assert!(r.len() <= parts);
                if let (Some(a), Some(b)) = (r.iter().map(|r| r.len()).max(), r.iter().map(|r| r.len()).min())
                {
                    assert!(a - b <= 1);
                }
            }
        }
    }
}
