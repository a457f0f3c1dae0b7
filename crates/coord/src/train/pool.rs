//! Workers as the coordinator sees them: a pool that runs a job over a range of tasks by
//! splitting it into contiguous parts, one per worker, and gathers the parts: the step
//! skeleton, written once here for the in-process pool ([`super::local_pool::LocalPool`]) and
//! the TCP one ([`super::remote_pool::RemotePool`]) alike, which differ only in their
//! [`Transport`].

use std::ops::Range;
use std::sync::Arc;

use anyhow::anyhow;
use metasched_engine::horizon::{Estimator, Member};
use metasched_engine::{Config, FixedSum, LossKind, Params};
use metasched_proto::{EvalResult, Job, JobResult, MemberJob, Split, TaskFamily, TaskSpec};

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

/// The reduced result of one window of a long-run population.
#[derive(Debug, Clone)]
pub struct WindowOutput {
    /// Sum of the members' gradient estimates (order-independent).
    pub sum: FixedSum,
    /// Each member after its window, in member order.
    pub members: Vec<Member<f32>>,
    /// Each member's window objective.
    pub objective: Vec<f32>,
    /// Each member's mean rate per group, `[N, G]`.
    pub lr: Vec<f32>,
    /// What each part took, in member order.
    pub parts: Vec<PartStats>,
    /// Seconds between the first and the last part arriving.
    pub straggler_s: f64,
    /// Parts sent again because their worker died, hung or failed.
    pub redispatched: u32,
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
            if out.outer_loss.len() != batch {
                return Err(anyhow!(
                    "the group's parts of step {step} cover {} of {batch} tasks",
                    out.outer_loss.len()
                ));
            }
            out.group_reduced = true;
            return Ok(out);
        }
        let parts = self.ready()?;
        let gathered = self.dispatch_gather(&jobs(parts), params, version)?;
        let out = reduce_step(gathered, step, version, len)?;
        if out.outer_loss.len() != batch {
            return Err(anyhow!("the parts of step {step} cover {} of {batch} tasks", out.outer_loss.len()));
        }
        Ok(out)
    }

    /// One window of every member of a long-run population (spec §8), members split into
    /// contiguous parts, reduced on the coordinator. The members' states travel with the
    /// jobs and come back with the answers, so a lost worker's part is simply sent again.
    fn window_step(
        &mut self,
        params: &Arc<Params<f32>>,
        version: u64,
        step: u64,
        members: &[MemberJob],
    ) -> anyhow::Result<WindowOutput> {
        let len = params.buffers().iter().map(|b| b.len()).sum();
        let jobs: Vec<Job> = split_range(members.len(), self.ready()?)
            .into_iter()
            .map(|r| Job::Window { step, version, first: r.start, members: members[r].to_vec() })
            .collect();
        let gathered = self.dispatch_gather(&jobs, params, version)?;
        let out = reduce_window(gathered, step, version, len)?;
        if out.members.len() != members.len() {
            return Err(anyhow!(
                "the parts of step {step} cover {} of {} members",
                out.members.len(),
                members.len()
            ));
        }
        Ok(out)
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
        let out = reduce_eval(gathered)?;
        if out.outer_loss.len() != spec.tasks {
            return Err(anyhow!(
                "the evaluation parts cover {} of {} tasks",
                out.outer_loss.len(),
                spec.tasks
            ));
        }
        Ok(out)
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

/// What a correct answer of a run's model looks like: the lengths every answer is checked
/// against before it is used.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerShape {
    /// The model and the estimator of a long-run family (members coming back are checked
    /// against them); `None` for the few-shot families.
    pub long_runs: Option<(Config, Estimator)>,
    /// Values in a parameter set (the length of a meta-gradient sum).
    pub params: usize,
    /// Rates per task, `T·G`.
    pub lr_per_task: usize,
    /// Parameter groups `G` (a window answer has `G` mean rates per member).
    pub groups: usize,
    /// Whether evaluations report an accuracy per task (classification) or none (regression).
    pub classification: bool,
}

impl AnswerShape {
    /// The shape of answers for `config` and the run's tasks `tasks`.
    pub fn of_run(config: &Config, tasks: &TaskSpec) -> Self {
        let long_runs = match &tasks.family {
            TaskFamily::TrainMlp(runs) => Some((config.clone(), runs.estimator)),
            _ => None,
        };
        Self { long_runs, ..Self::of(config) }
    }

    /// The shape of answers for `config` (few-shot tasks).
    pub fn of(config: &Config) -> Self {
        Self {
            long_runs: None,
            params: Params::<f32>::zeros(config).buffers().iter().map(|b| b.len()).sum(),
            lr_per_task: config.inner.steps * config.groups(),
            groups: config.groups(),
            classification: config.model.loss == LossKind::CrossEntropy,
        }
    }
}

/// Checks one answer against the job it answers, before it is used: the same kind, the same
/// step, version and first task, per-task results of `count` entries (rates `count·T·G`,
/// accuracies `count` for classification and none for regression), a gradient sum of the
/// model's length that `count` real tasks could have produced ([`FixedSum::is_plausible_sum_of`])
/// and a finite, non-negative compute time. `Err` says what is wrong: the transport then drops
/// the worker that sent it and gives its part to another, so a broken or hostile worker costs
/// time, never a bit of the result.
pub fn check_answer(shape: &AnswerShape, job: &Job, answer: &JobResult) -> Result<(), String> {
    check_answer_parts(shape, job, answer, true)
}

/// [`check_answer`], checking the gradient sum only when `with_sum` (a grouped member's sum
/// is checked by the group code: rank 0 carries the whole group's).
pub fn check_answer_parts(
    shape: &AnswerShape,
    job: &Job,
    answer: &JobResult,
    with_sum: bool,
) -> Result<(), String> {
    let per_task = |what: &str, got: usize, per: usize, count: usize| -> Result<(), String> {
        match count.checked_mul(per) {
            Some(want) if want == got => Ok(()),
            _ => Err(format!("{got} {what} for {count} task(s) (expected {})", count.saturating_mul(per))),
        }
    };
    let time = |s: f64| -> Result<(), String> {
        if s.is_finite() && s >= 0.0 { Ok(()) } else { Err(format!("a compute time of {s} s")) }
    };
    match (job, answer) {
        (Job::MetaGrad { step, version, first, count }, JobResult::Step(r)) => {
            if (r.step, r.version) != (*step, *version) {
                return Err(format!("step {} v{} for step {step} v{version}", r.step, r.version));
            }
            if r.first != *first {
                return Err(format!("first task {} for first task {first}", r.first));
            }
            per_task("losses", r.outer_loss.len(), 1, *count)?;
            per_task("rates", r.lr.len(), shape.lr_per_task, *count)?;
            time(r.compute_s)?;
            if with_sum {
                if r.sum.len() != shape.params {
                    return Err(format!(
                        "a gradient sum of {} values for a model of {}",
                        r.sum.len(),
                        shape.params
                    ));
                }
                // An overflowed sum is legitimate (a task's non-finite meta-gradient: the step
                // is skipped, as in the fault-free run); one out of range is not.
                if !r.sum.is_plausible_sum_of(*count) {
                    return Err(format!("a gradient sum no {count} task(s) can produce (out of range)"));
                }
            }
            Ok(())
        }
        (Job::Eval { first, count, .. }, JobResult::Eval(r)) => {
            if r.first != *first {
                return Err(format!("first task {} for first task {first}", r.first));
            }
            per_task("losses", r.outer_loss.len(), 1, *count)?;
            per_task("rates", r.lr.len(), shape.lr_per_task, *count)?;
            per_task("accuracies", r.accuracy.len(), usize::from(shape.classification), *count)?;
            time(r.compute_s)
        }
        (Job::Window { step, version, first, members }, JobResult::Window(r)) => {
            if (r.step, r.version) != (*step, *version) {
                return Err(format!("step {} v{} for step {step} v{version}", r.step, r.version));
            }
            if r.first != *first {
                return Err(format!("first member {} for first member {first}", r.first));
            }
            let count = members.len();
            per_task("members", r.members.len(), 1, count)?;
            per_task("objectives", r.objective.len(), 1, count)?;
            per_task("rates", r.lr.len(), shape.groups, count)?;
            time(r.compute_s)?;
            let Some((config, estimator)) = &shape.long_runs else {
                return Err("a window answer in a run without long runs".into());
            };
            let zeros = Params::<f32>::zeros(config);
            for (i, (m, job)) in r.members.iter().zip(members).enumerate() {
                m.validate(config, &zeros, *estimator).map_err(|e| format!("member {i}: {e}"))?;
                let before = job.state.as_ref().map_or(0, Member::step) + job.burn_in;
                if m.step() <= before || m.step() > config.inner.steps {
                    return Err(format!("member {i} at step {} after a window from step {before}", m.step()));
                }
            }
            if r.sum.len() != shape.params {
                return Err(format!(
                    "a gradient sum of {} values for a model of {}",
                    r.sum.len(),
                    shape.params
                ));
            }
            if !r.sum.is_plausible_sum_of(count) {
                return Err(format!("a gradient sum no {count} member(s) can produce (out of range)"));
            }
            Ok(())
        }
        (job, answer) => Err(format!(
            "{} for a {} job",
            match answer {
                JobResult::Step(_) => "a meta-gradient",
                JobResult::Eval(_) => "an evaluation",
                JobResult::Window(_) => "a window",
            },
            match job {
                Job::MetaGrad { .. } => "meta-gradient",
                Job::Eval { .. } => "evaluation",
                Job::Window { .. } => "window",
            }
        )),
    }
}

/// Checks that every part answers meta-step `step` at parameter version `version` (a worker
/// answering another step or version, or with an evaluation, is a protocol error, never
/// silently summed), then puts the parts together: sums the meta-gradients (exact, so the
/// order does not matter) and concatenates per-task values in task order.
fn reduce_step(gathered: Gathered, step: u64, version: u64, param_len: usize) -> anyhow::Result<StepOutput> {
    let parts = answers_in_order(gathered.parts, step, version, "a step", |a| match a {
        JobResult::Step(r) => Some((r.step, r.version, r.first, r)),
        _ => None,
    })?;
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

/// Checks that every part answers (with `unpack`'s kind of result) meta-step `step` at
/// version `version`, and orders the parts by their first task or member, so that the sums
/// and concatenations that follow do not depend on arrival order.
fn answers_in_order<R>(
    parts: Vec<(u32, JobResult)>,
    step: u64,
    version: u64,
    what: &str,
    unpack: impl Fn(JobResult) -> Option<(u64, u64, usize, R)>,
) -> anyhow::Result<Vec<(u32, R)>> {
    let mut out: Vec<(usize, u32, R)> = Vec::with_capacity(parts.len());
    for (id, answer) in parts {
        let Some((s, v, first, r)) = unpack(answer) else {
            return Err(anyhow!("worker {id} answered {what} with another kind of result"));
        };
        if s != step || v != version {
            return Err(anyhow!("worker {id} answered step {s} v{v} for step {step} v{version}"));
        }
        out.push((first, id, r));
    }
    out.sort_by_key(|(first, _, _)| *first);
    Ok(out.into_iter().map(|(_, id, r)| (id, r)).collect())
}

/// Checks that every part answers window step `step` at version `version`, then sums the
/// gradient estimates (exact) and concatenates the members in member order.
fn reduce_window(
    gathered: Gathered,
    step: u64,
    version: u64,
    param_len: usize,
) -> anyhow::Result<WindowOutput> {
    let parts = answers_in_order(gathered.parts, step, version, "a window", |a| match a {
        JobResult::Window(r) => Some((r.step, r.version, r.first, r)),
        _ => None,
    })?;
    let mut out = WindowOutput {
        sum: FixedSum::zeros(param_len),
        members: Vec::new(),
        objective: Vec::new(),
        lr: Vec::new(),
        parts: Vec::with_capacity(parts.len()),
        straggler_s: gathered.straggler_s,
        redispatched: gathered.redispatched,
    };
    for (worker, r) in parts {
        out.sum.merge(&r.sum);
        out.parts.push(PartStats { worker, tasks: r.members.len(), compute_s: r.compute_s });
        out.members.extend(r.members);
        out.objective.extend(r.objective);
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
    use metasched_proto::StepResult;

    const SHAPE: AnswerShape =
        AnswerShape { long_runs: None, params: 7, lr_per_task: 6, groups: 2, classification: false };

    fn step_job() -> Job {
        Job::MetaGrad { step: 4, version: 4, first: 3, count: 2 }
    }

    fn good_step() -> StepResult {
        StepResult {
            step: 4,
            version: 4,
            first: 3,
            sum: FixedSum::zeros(7),
            outer_loss: vec![0.5; 2],
            lr: vec![0.01; 12],
            compute_s: 0.1,
        }
    }

    fn eval_job() -> Job {
        Job::Eval { split: Split::Test, stream: 1, first: 0, count: 3, shots: 5, query: 5 }
    }

    fn good_eval() -> EvalResult {
        EvalResult {
            first: 0,
            outer_loss: vec![0.5; 3],
            lr: vec![0.01; 18],
            accuracy: vec![],
            compute_s: 0.1,
        }
    }

    #[test]
    fn every_wrong_part_of_an_answer_is_refused() {
        let check = |job: &Job, r: JobResult| check_answer(&SHAPE, job, &r);
        assert_eq!(check(&step_job(), JobResult::Step(good_step())), Ok(()));
        assert_eq!(check(&eval_job(), JobResult::Eval(good_eval())), Ok(()));
        let bad_steps: Vec<fn(&mut StepResult)> = vec![
            |r| r.step += 1,
            |r| r.version += 1,
            |r| r.first = 0,
            |r| r.sum = FixedSum::zeros(6),
            |r| r.sum = FixedSum::zeros(8),
            |r| {
                let mut limbs = r.sum.to_limbs();
                limbs[2] = 1 << 30; // far more than two tasks' worth
                r.sum = FixedSum::from_limbs(&limbs).expect("limbs");
            },
            |r| {
                r.outer_loss.pop();
            },
            |r| r.outer_loss.push(0.0),
            |r| r.lr.truncate(6),
            |r| r.lr.push(0.0),
            |r| r.compute_s = f64::NAN,
            |r| r.compute_s = -1.0,
        ];
        for (i, spoil) in bad_steps.iter().enumerate() {
            let mut r = good_step();
            spoil(&mut r);
            assert!(check(&step_job(), JobResult::Step(r)).is_err(), "wrong step answer {i} accepted");
        }
        let bad_evals: Vec<fn(&mut EvalResult)> = vec![
            |r| r.first = 1,
            |r| r.outer_loss.truncate(2),
            |r| r.outer_loss.push(0.0),
            |r| {
                r.lr.pop();
            },
            |r| r.accuracy = vec![1.0; 3], // accuracy for regression
            |r| r.compute_s = f64::INFINITY,
        ];
        for (i, spoil) in bad_evals.iter().enumerate() {
            let mut r = good_eval();
            spoil(&mut r);
            assert!(check(&eval_job(), JobResult::Eval(r)).is_err(), "wrong evaluation answer {i} accepted");
        }
        assert!(check(&step_job(), JobResult::Eval(good_eval())).is_err());
        assert!(check(&eval_job(), JobResult::Step(good_step())).is_err());
        // Classification: one accuracy per task, no fewer.
        let cls = AnswerShape { classification: true, ..SHAPE };
        let mut r = good_eval();
        assert!(check_answer(&cls, &eval_job(), &JobResult::Eval(r.clone())).is_err());
        r.accuracy = vec![1.0; 3];
        assert_eq!(check_answer(&cls, &eval_job(), &JobResult::Eval(r)), Ok(()));
        // A non-finite gradient (an overflowed sum) is a legitimate answer: the step is skipped.
        let mut r = good_step();
        let mut limbs = r.sum.to_limbs();
        *limbs.last_mut().expect("flag") = 1;
        r.sum = FixedSum::from_limbs(&limbs).expect("limbs");
        assert!(r.sum.overflowed());
        assert_eq!(check(&step_job(), JobResult::Step(r)), Ok(()));
    }

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
