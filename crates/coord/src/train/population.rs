//! The population of long runs a `train-mlp` meta-training advances (spec §8), held by the
//! coordinator: every member's state lives here between windows, travels with its job and
//! comes back with the answer, and is written into every checkpoint (`state.*` tensors and
//! `train.population` in `metasched.config`), so neither a lost worker nor a restart of the
//! coordinator changes a bit.

use std::collections::BTreeMap;

use anyhow::anyhow;
use metasched_engine::horizon::{Estimator, Member, Objective, PesPair, RunState};
use metasched_engine::{Config, Params};
use metasched_proto::MemberJob;
use serde::{Deserialize, Serialize};

use crate::exit::BadInput;

/// Named `(shape, values)` tensors, as a checkpoint's extra tensors.
pub type StateTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// One slot of the population: which run it holds and that run's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    /// The run's identity in the `train` stream.
    pub run: u64,
    /// Steps still to advance without gradient before its next window (a new population's
    /// stagger).
    pub burn_in: usize,
    /// The run's state (`None`: not started yet).
    pub state: Option<Member<f32>>,
}

/// The members, and the next run identity to hand out.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    /// One slot per member.
    pub slots: Vec<Slot>,
    /// The identity the next restarted slot takes.
    pub next_run: u64,
}

/// What `train.population` of a checkpoint holds besides the `state.*` tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationMeta {
    /// The identity the next restarted slot takes.
    pub next_run: u64,
    /// Per slot: `(run, burn_in, step)`, `step` absent for a slot not started yet.
    pub slots: Vec<(u64, usize, Option<usize>)>,
}

impl Population {
    /// `n` fresh runs, staggered: slot `i` first advances `⌊iK/n⌋·W` steps (spec §8).
    pub fn new(n: usize, objective: &Objective) -> Self {
        let k = objective.windows();
        let slots = (0..n)
            .map(|i| Slot { run: i as u64, burn_in: (i * k / n.max(1)) * objective.window, state: None })
            .collect();
        Self { slots, next_run: n as u64 }
    }

    /// The members as jobs.
    pub fn jobs(&self) -> Vec<MemberJob> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| MemberJob {
                slot: i as u64,
                run: s.run,
                burn_in: s.burn_in,
                state: s.state.clone(),
            })
            .collect()
    }

    /// Takes the members back after a window; a member that reached the horizon restarts
    /// as a fresh run with the next identity.
    pub fn update(&mut self, members: Vec<Member<f32>>, horizon: usize) {
        for (slot, m) in self.slots.iter_mut().zip(members) {
            slot.burn_in = 0;
            if m.step() >= horizon {
                slot.run = self.next_run;
                self.next_run += 1;
                slot.state = None;
            } else {
                slot.state = Some(m);
            }
        }
    }

    /// The `state.*` tensors and the metadata of a checkpoint.
    pub fn to_checkpoint(&self) -> (PopulationMeta, StateTensors) {
        let mut tensors = BTreeMap::new();
        let mut put = |name: String, v: &[f32]| {
            if !v.is_empty() {
                tensors.insert(name, (vec![v.len()], v.to_vec()));
            }
        };
        let mut slots = Vec::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            let step = s.state.as_ref().map(Member::step);
            slots.push((s.run, s.burn_in, step));
            let run = |put: &mut dyn FnMut(String, &[f32]), prefix: String, r: &RunState<f32>| {
                for (name, v) in [("theta", &r.theta), ("m", &r.m), ("s", &r.s), ("h", &r.h), ("c", &r.c)] {
                    put(format!("{prefix}.{name}"), v);
                }
            };
            match &s.state {
                None => {}
                Some(Member::Run(r)) => run(&mut put, format!("state.{i}"), r),
                Some(Member::Pair(p)) => {
                    run(&mut put, format!("state.{i}.plus"), &p.plus);
                    run(&mut put, format!("state.{i}.minus"), &p.minus);
                    put(format!("state.{i}.xi"), &p.xi);
                }
            }
        }
        (PopulationMeta { next_run: self.next_run, slots }, tensors)
    }

    /// Rebuilds the population from a checkpoint's metadata and `state.*` tensors, checking
    /// every member against the model and the estimator.
    pub fn from_checkpoint(
        meta: &PopulationMeta,
        tensors: &StateTensors,
        config: &Config,
        estimator: Estimator,
        origin: &str,
    ) -> anyhow::Result<Self> {
        let bad = |what: String| anyhow!(BadInput(format!("{origin}: {what}")));
        let zeros = Params::<f32>::zeros(config);
        let fresh = RunState::<f32>::fresh(config, vec![0.0; zeros.theta.len()]);
        let take = |name: &str, want: usize| -> anyhow::Result<Vec<f32>> {
            match tensors.get(name) {
                Some((_, v)) if v.len() == want => Ok(v.clone()),
                Some((_, v)) => {
                    Err(bad(format!("tensor `{name}` holds {} values, expected {want}", v.len())))
                }
                None if want == 0 => Ok(Vec::new()),
                None => Err(bad(format!("tensor `{name}` missing"))),
            }
        };
        let run = |prefix: &str, step: usize| -> anyhow::Result<RunState<f32>> {
            Ok(RunState {
                step,
                theta: take(&format!("{prefix}.theta"), fresh.theta.len())?,
                m: take(&format!("{prefix}.m"), fresh.m.len())?,
                s: take(&format!("{prefix}.s"), fresh.s.len())?,
                h: take(&format!("{prefix}.h"), fresh.h.len())?,
                c: take(&format!("{prefix}.c"), fresh.c.len())?,
            })
        };
        let mut slots = Vec::with_capacity(meta.slots.len());
        for (i, &(run_id, burn_in, step)) in meta.slots.iter().enumerate() {
            let state = match (step, estimator) {
                (None, _) => None,
                (Some(t), Estimator::Pes { .. }) => Some(Member::Pair(PesPair {
                    plus: run(&format!("state.{i}.plus"), t)?,
                    minus: run(&format!("state.{i}.minus"), t)?,
                    xi: take(&format!("state.{i}.xi"), metasched_engine::horizon::phi_len(&zeros))?,
                })),
                (Some(t), _) => Some(Member::Run(run(&format!("state.{i}"), t)?)),
            };
            if let Some(m) = &state {
                m.validate(config, &zeros, estimator).map_err(|e| bad(format!("member {i}: {e}")))?;
            }
            slots.push(Slot { run: run_id, burn_in, state });
        }
        Ok(Self { slots, next_run: meta.next_run })
    }
}
