//! How a pool's jobs reach its workers and come back: the one thing in which the in-process
//! pool ([`super::local_pool::LocalPool`]) and the TCP pool ([`super::remote_pool::RemotePool`])
//! differ. The step itself — split, dispatch, gather, check, reduce — is written once, in
//! [`super::pool::WorkerPool`], on top of a [`Transport`].

use std::sync::Arc;

use metasched_engine::Params;
use metasched_proto::{Job, JobResult};

/// Every part's answer with the worker that gave it (in any order), and how the gathering
/// went.
#[derive(Debug, Default)]
pub struct Gathered {
    /// `(worker id, answer)` of every part.
    pub parts: Vec<(u32, JobResult)>,
    /// Seconds between the first and the last part arriving (waiting for stragglers).
    pub straggler_s: f64,
    /// Parts sent again because their worker died, hung or failed.
    pub redispatched: u32,
}

/// How a pool's jobs reach its workers and come back, so that the step skeleton of
/// [`super::pool::WorkerPool`] is written once for every kind of worker (each `Transport` is a
/// `WorkerPool`).
pub trait Transport {
    /// Number of live workers.
    fn live(&self) -> usize;

    /// Waits until at least one worker can take a part, and says how many parts to split the
    /// tasks into (one per live worker).
    fn ready(&mut self) -> anyhow::Result<usize>;

    /// Sends `jobs[i]` (with the parameters `params` of version `version`, to the workers
    /// that lack them) and gathers every part's answer, surviving faults as the transport can.
    fn dispatch_gather(
        &mut self,
        jobs: &[Job],
        params: &Arc<Params<f32>>,
        version: u64,
    ) -> anyhow::Result<Gathered>;

    /// The version evaluations send the parameters under (one no meta-step uses, so a worker
    /// that caches parameters by version never mixes the two up).
    fn eval_version(&mut self) -> u64;

    /// How many workers reduce this meta-step's gradient among themselves (a group over NCCL
    /// or its TCP stand-in), forming the group first if need be; `None`: the coordinator
    /// reduces. Transports without groups keep the default.
    fn group_size(&mut self, _batch: usize) -> anyhow::Result<Option<usize>> {
        Ok(None)
    }

    /// [`Transport::dispatch_gather`] within the group, one job per member in rank order:
    /// rank 0's answer carries the reduced sum, the others' sums are zeros. `None` when a
    /// fault dissolved the group: the step is then redone with coordinator-side reduction.
    fn dispatch_gather_grouped(
        &mut self,
        _jobs: &[Job],
        _params: &Arc<Params<f32>>,
        _version: u64,
    ) -> anyhow::Result<Option<Gathered>> {
        Ok(None)
    }
}
