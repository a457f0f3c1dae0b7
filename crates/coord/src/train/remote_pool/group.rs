//! Reduction groups of the distributed pool: when every live worker offers the same collective
//! (NCCL between GPUs, or its TCP stand-in between emulated devices), the coordinator forms one
//! group of them — rank 0 creates the communicator id, the coordinator hands it to every
//! member — and each meta-step's parts are all-reduced among the workers: only rank 0 sends
//! the reduced gradient, the others their per-task losses and rates. The reduction is exact
//! (fixed-point limbs summed as integers), so a grouped step gives bitwise the same sum as
//! coordinator-side reduction.
//!
//! Any fault (a member lost, silent, failing, or past the step deadline) dissolves the group
//! and the step is redone with coordinator-side reduction; the next step forms a group of the
//! survivors. A group that cannot be formed three times in a row is given up for the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metasched_engine::{FixedSum, Params};
use metasched_proto::{CollectiveKind, Job, JobResult, StepResult, ToCoord, ToWorker};

use super::RemotePool;
use crate::train::pool::check_answer_parts;
use crate::train::transport::Gathered;

/// Whether device workers may reduce meta-gradients among themselves.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CollectiveMode {
    /// Form a group when every worker offers the same collective (at least two workers).
    #[default]
    Auto,
    /// Always reduce on the coordinator.
    Off,
}

/// The group the live workers currently form.
#[derive(Debug)]
pub(super) struct ActiveGroup {
    /// Group id (sent in every group message).
    id: u64,
    /// Worker ids in rank order.
    members: Vec<u32>,
}

/// Failed formations after which groups are given up for the run.
const MAX_FORMATION_FAILURES: u32 = 3;

/// Whether a message belongs to the group protocol (stale ones are ignored elsewhere).
pub(super) fn is_group_message(msg: &ToCoord) -> bool {
    matches!(
        msg,
        ToCoord::GroupCreated { .. }
            | ToCoord::GroupJoined { .. }
            | ToCoord::GroupFailed { .. }
            | ToCoord::GroupStepDone { .. }
    )
}

impl RemotePool {
    /// Chooses between grouped and coordinator-side reduction.
    pub fn set_collective(&mut self, mode: CollectiveMode) {
        self.collective = mode;
    }

    /// The collective and members a group should have now: every live worker, when there are
    /// at least two, they all offer the same collective, and each gets at least one task.
    fn wanted_group(&self, batch: usize) -> Option<(CollectiveKind, Vec<u32>)> {
        let members: Vec<u32> = self.live.keys().copied().collect();
        let kind = self.live.values().next()?.caps.collective?;
        let same = self.live.values().all(|w| w.caps.collective == Some(kind));
        (same && members.len() >= 2 && batch >= members.len()).then_some((kind, members))
    }

    /// Tells the members to leave the current group (aborting a blocked all-reduce).
    pub(super) fn dissolve_group(&mut self, why: &str) {
        if let Some(g) = self.group.take() {
            tracing::warn!(group = g.id, "reduction group dissolved: {why}");
            for id in &g.members {
                if let Some(w) = self.live.get(id) {
                    let _ = w.tx.send(ToWorker::LeaveGroup { group: g.id });
                }
            }
        }
    }

    /// Forms a group of `members` (rank order); `false` (logged) when it could not be formed.
    fn form_group(&mut self, kind: CollectiveKind, members: Vec<u32>) -> anyhow::Result<bool> {
        let id = self.next_group;
        self.next_group += 1;
        let world = members.len() as u32;
        let deadline = Instant::now() + self.timeouts.group_setup;
        let fail = |pool: &mut RemotePool, why: String| {
            tracing::warn!(group = id, ?kind, "cannot form a reduction group: {why}");
            pool.group = Some(ActiveGroup { id, members: members.clone() });
            pool.dissolve_group("formation failed");
            Ok(false)
        };
        let Some(root) = self.live.get(&members[0]) else { return fail(self, "rank 0 is gone".into()) };
        if root.tx.send(ToWorker::CreateGroup { group: id, world }).is_err() {
            return fail(self, "cannot reach rank 0".into());
        }
        let comm_id = loop {
            self.check_stop()?;
            if Instant::now() > deadline {
                return fail(self, "rank 0 did not create an id in time".into());
            }
            if !self.live.contains_key(&members[0]) {
                return fail(self, "rank 0 was lost".into());
            }
            match self.next_message(Duration::from_millis(200)) {
                Some((w, ToCoord::GroupCreated { group, id: bytes })) if group == id && w == members[0] => {
                    break bytes;
                }
                Some((_, ToCoord::GroupFailed { group, message })) if group == id => {
                    return fail(self, message);
                }
                _ => {}
            }
        };
        let timeout_s = self.timeouts.step_deadline.as_secs_f64();
        for (rank, w) in members.iter().enumerate() {
            let msg =
                ToWorker::JoinGroup { group: id, id: comm_id.clone(), rank: rank as u32, world, timeout_s };
            if self.live.get(w).is_none_or(|l| l.tx.send(msg).is_err()) {
                return fail(self, format!("cannot reach worker {w}"));
            }
        }
        let mut joined = vec![false; members.len()];
        while joined.iter().any(|j| !j) {
            self.check_stop()?;
            if Instant::now() > deadline {
                return fail(self, "not every member joined in time".into());
            }
            if members.iter().any(|m| !self.live.contains_key(m)) {
                return fail(self, "a member was lost while joining".into());
            }
            match self.next_message(Duration::from_millis(200)) {
                Some((w, ToCoord::GroupJoined { group })) if group == id => {
                    if let Some(i) = members.iter().position(|&m| m == w) {
                        joined[i] = true;
                    }
                }
                Some((w, ToCoord::GroupFailed { group, message })) if group == id => {
                    return fail(self, format!("worker {w}: {message}"));
                }
                _ => {}
            }
        }
        tracing::info!(group = id, ?kind, members = ?members, "reduction group formed");
        self.group = Some(ActiveGroup { id, members });
        Ok(true)
    }

    /// How many workers reduce a meta-step of `batch` tasks among themselves, forming (or
    /// re-forming) the group first: `Ok(None)` means "reduce on the coordinator" (groups off
    /// or given up, no group wanted, or it could not be formed).
    pub(super) fn group_for(&mut self, batch: usize) -> anyhow::Result<Option<usize>> {
        if self.collective == CollectiveMode::Off || self.formation_failures >= MAX_FORMATION_FAILURES {
            return Ok(None);
        }
        let Some((kind, members)) = self.wanted_group(batch) else {
            self.dissolve_group("the workers no longer share a collective");
            return Ok(None);
        };
        let size = members.len();
        if self.group.as_ref().map(|g| &g.members) != Some(&members) {
            self.dissolve_group("the set of workers changed");
            if !self.form_group(kind, members)? {
                self.formation_failures += 1;
                if self.formation_failures >= MAX_FORMATION_FAILURES {
                    tracing::warn!(
                        "{MAX_FORMATION_FAILURES} failed group formations: reducing on the coordinator from now on"
                    );
                }
                return Ok(None);
            }
            self.formation_failures = 0;
        }
        Ok(Some(size))
    }

    /// One grouped meta-step: member `i` (in rank order) computes `jobs[i]` and all-reduces it;
    /// rank 0's answer carries the reduced sum, the others' sums are returned as zeros.
    /// `Ok(None)`: a fault dissolved the group and the step is to be redone without it.
    pub(super) fn group_dispatch_gather(
        &mut self,
        jobs: &[Job],
        params: &Arc<Params<f32>>,
        version: u64,
    ) -> anyhow::Result<Option<Gathered>> {
        let Some(g) = self.group.as_ref() else { return Ok(None) };
        let (gid, members) = (g.id, g.members.clone());
        if jobs.len() != members.len() {
            self.dissolve_group("fewer tasks than members");
            return Ok(None);
        }
        let step = match jobs.first() {
            Some(Job::MetaGrad { step, .. }) => *step,
            _ => return Ok(None),
        };
        let mut sent = Vec::with_capacity(members.len());
        for (w, job) in members.iter().zip(jobs) {
            match self.send(*w, job.clone(), params, version, Some(gid)) {
                Some(job_id) => sent.push(job_id),
                None => {
                    self.dissolve_group(&format!("cannot send to worker {w}"));
                    return Ok(None);
                }
            }
        }
        let started = Instant::now();
        let mut first_done: Option<Instant> = None;
        let mut answers: Vec<Option<(u32, bool, StepResult)>> = vec![None; members.len()];
        while answers.iter().any(Option::is_none) {
            self.check_stop()?;
            self.drop_silent(Some(&members));
            if let Some(lost) = members.iter().find(|m| !self.live.contains_key(m)) {
                self.dissolve_group(&format!("worker {lost} was lost during step {step}"));
                return Ok(None);
            }
            if started.elapsed() > self.timeouts.step_deadline {
                self.dissolve_group(&format!("step {step} passed its deadline"));
                return Ok(None);
            }
            match self.next_message(Duration::from_millis(200)) {
                Some((w, ToCoord::GroupStepDone { job_id, group, root, result })) if group == gid => {
                    if let Some(i) = sent.iter().position(|&j| j == job_id) {
                        if let Some(live) = self.live.get_mut(&w) {
                            live.pending = live.pending.saturating_sub(1);
                        }
                        answers[i] = Some((w, root, result));
                        first_done.get_or_insert_with(Instant::now);
                    }
                }
                Some((w, ToCoord::Failed { job_id, message })) if sent.contains(&job_id) => {
                    self.dissolve_group(&format!("worker {w} failed its part: {message}"));
                    return Ok(None);
                }
                _ => {}
            }
        }
        let len: usize = params.buffers().iter().map(|b| b.len()).sum();
        let total: usize =
            jobs.iter().map(|j| if let Job::MetaGrad { count, .. } = j { *count } else { 0 }).sum();
        let mut parts = Vec::with_capacity(members.len());
        for (rank, answer) in answers.into_iter().enumerate() {
            let Some((w, root, r)) = answer else { continue };
            let mut r = JobResult::Step(r);
            let checked = check_answer_parts(&self.shape, &jobs[rank], &r, false).and_then(|()| {
                let JobResult::Step(s) = &r else { unreachable!("built above") };
                if root != (rank == 0) {
                    Err(format!("as rank {} for rank {rank}", usize::from(!root)))
                } else if root && s.sum.len() != len {
                    Err(format!("a reduced sum of {} values for a model of {len}", s.sum.len()))
                } else if root && !s.sum.is_plausible_sum_of(total) {
                    Err(format!("a reduced sum no {total} task(s) can produce (out of range)"))
                } else if !root && !s.sum.is_empty() {
                    Err("a sum from a rank other than 0".into())
                } else {
                    Ok(())
                }
            });
            if let Err(e) = checked {
                self.drop_worker(w, &format!("wrong answer to {:?}: {e}", jobs[rank]));
                self.dissolve_group(&format!("worker {w} answered wrongly"));
                return Ok(None);
            }
            if !root && let JobResult::Step(s) = &mut r {
                s.sum = FixedSum::zeros(len);
            }
            parts.push((w, r));
        }
        let straggler_s = first_done.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        Ok(Some(Gathered { parts, straggler_s, redispatched: 0 }))
    }
}
