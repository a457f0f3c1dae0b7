//! The messages of the coordinator–worker protocol.
//!
//! A connection starts with a handshake: the worker says [`ToCoord::Hello`] (protocol
//! version, capabilities, its nonce); the coordinator refuses a wrong version or answers
//! [`ToWorker::Challenge`] (its nonce and its proof of the shared token); the worker checks
//! that proof and answers [`ToCoord::Auth`] with its own; the coordinator answers
//! [`ToWorker::Welcome`] (the run's setup) or [`ToWorker::Refused`]. The token itself never
//! crosses the wire: both sides prove knowledge of it with an HMAC over both nonces
//! (`auth.rs`). After that the coordinator sends jobs, the worker sends results and
//! heartbeats, until [`ToWorker::Stop`].
//!
//! Device workers that share a collective (NCCL between GPUs, or its TCP stand-in between
//! emulated devices) can reduce a meta-step among themselves: the coordinator asks rank 0 for
//! a communicator id ([`ToWorker::CreateGroup`] → [`ToCoord::GroupCreated`]), hands it to every
//! member ([`ToWorker::JoinGroup`] → [`ToCoord::GroupJoined`]), then sends each its part as
//! [`ToWorker::GroupWork`]; the members all-reduce their part sums and only rank 0 sends the
//! reduced gradient ([`ToCoord::GroupStepDone`] with `root` set), the others their per-task
//! losses and rates. On any fault the coordinator dissolves the group ([`ToWorker::LeaveGroup`])
//! and redoes the step with coordinator-side reduction.

use crate::job::{EvalResult, Job, StepResult, WindowResult};
use crate::task_spec::TaskSpec;
use metasched_engine::Config;
use serde::{Deserialize, Serialize};

/// The job id of a [`ToCoord::Failed`] that answers no job: the worker was welcomed but cannot
/// set up the run (a task directory it cannot list, a device it cannot open); its message says
/// why. It is the worker's first message after the handshake; the coordinator logs the reason,
/// drops the connection and does not count the worker as live (no job id ever reaches it).
pub const SETUP_FAILED_JOB: u64 = u64::MAX;

/// Length of the handshake nonces and of HMAC-SHA256 tags, in bytes.
pub const NONCE_LEN: usize = 32;

/// What kind of device a worker computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceKind {
    /// The CPU engine.
    Cpu,
    /// CUDA GPUs.
    Cuda,
    /// The CPU emulator of the CUDA kernels (the device code path without a GPU).
    Emu,
}

/// A collective a worker can join to all-reduce meta-gradients with its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CollectiveKind {
    /// NCCL between GPUs (the id is an `ncclUniqueId`).
    Nccl,
    /// A TCP all-reduce between worker processes, NCCL's stand-in where there are no GPUs
    /// (the id is rank 0's address and a session key).
    Tcp,
}

/// What a worker brings, announced in its hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Device kind.
    pub device: DeviceKind,
    /// Number of devices of that kind the worker drives (1 for a CPU worker).
    pub device_count: u32,
    /// CPU cores the worker will use.
    pub cores: u32,
    /// `CARGO_PKG_VERSION` of the worker binary.
    pub build_version: String,
    /// A human-readable name (host name and pid) for logs.
    pub name: String,
    /// The collective this worker can join, if any (CPU workers: none, the coordinator
    /// reduces).
    pub collective: Option<CollectiveKind>,
}

/// The run a worker joins: everything it needs to generate tasks and compute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSetup {
    /// Model configuration (spec §5).
    pub config: Config,
    /// Task family and sizes.
    pub tasks: TaskSpec,
    /// Engine threads the worker should use (0: all its cores).
    pub threads: u32,
    /// Seconds between the worker's heartbeats.
    pub heartbeat_s: f64,
}

/// Parameters of one version, flattened in canonical slot order (`Params::buffers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsBlob {
    /// Version (the coordinator's step counter).
    pub version: u64,
    /// The values.
    pub values: Vec<f32>,
}

/// Coordinator to worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToWorker {
    /// Handshake step 2: the coordinator's nonce and its proof of the token over the worker's
    /// nonce.
    Challenge {
        /// Fresh random nonce of the coordinator.
        nonce: [u8; NONCE_LEN],
        /// HMAC proving the coordinator holds the token.
        proof: [u8; NONCE_LEN],
    },
    /// Handshake step 4: accepted.
    Welcome {
        /// Id the coordinator gives this worker (for logs).
        worker_id: u32,
        /// The run.
        setup: RunSetup,
    },
    /// Handshake refused (wrong version, wrong token, bad message); the connection closes.
    ///
    /// Keep it variant 2 holding one string in every future version, so that a worker of
    /// another version can still read why it was refused.
    Refused {
        /// Why, for the worker's log.
        reason: String,
    },
    /// Work to do. `params` is present when the worker may not hold `job`'s version yet.
    Work {
        /// Id to quote in the answer.
        job_id: u64,
        /// The job.
        job: Job,
        /// Parameters to use, when they changed.
        params: Option<ParamsBlob>,
    },
    /// Liveness probe; the worker answers with a heartbeat.
    Ping,
    /// The run is over: exit cleanly.
    Stop,
    /// To the would-be rank 0 of a group: create a communicator id for `world` members.
    CreateGroup {
        /// Group id (the coordinator's counter).
        group: u64,
        /// Members.
        world: u32,
    },
    /// Join group `group` as `rank` of `world` with the communicator id rank 0 created.
    JoinGroup {
        /// Group id.
        group: u64,
        /// Communicator id (opaque bytes of the collective).
        id: Vec<u8>,
        /// This worker's rank.
        rank: u32,
        /// Members.
        world: u32,
        /// Seconds a collective operation may block before it fails.
        timeout_s: f64,
    },
    /// Leave (and abort) group `group`: a member was lost, the step is redone without it.
    LeaveGroup {
        /// Group id.
        group: u64,
    },
    /// A meta-gradient part to reduce within group `group` (answered by
    /// [`ToCoord::GroupStepDone`]).
    GroupWork {
        /// Id to quote in the answer.
        job_id: u64,
        /// The job (a [`Job::MetaGrad`]).
        job: Job,
        /// Parameters to use, when they changed.
        params: Option<ParamsBlob>,
        /// The group to all-reduce in.
        group: u64,
    },
}

/// Worker to coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToCoord {
    /// Handshake step 1.
    ///
    /// This must stay variant 0 with `protocol_version` as its first field in every future
    /// version: the coordinator reads those two numbers even from a hello it cannot decode,
    /// to answer a worker of another version with a clear refusal.
    Hello {
        /// [`crate::PROTOCOL_VERSION`] of the worker.
        protocol_version: u32,
        /// What the worker brings.
        capabilities: Capabilities,
        /// Fresh random nonce of the worker.
        nonce: [u8; NONCE_LEN],
    },
    /// Handshake step 3: the worker's proof of the token over the coordinator's nonce.
    Auth {
        /// HMAC proving the worker holds the token.
        proof: [u8; NONCE_LEN],
    },
    /// A finished meta-gradient part.
    StepDone {
        /// The job's id.
        job_id: u64,
        /// The result.
        result: StepResult,
    },
    /// A finished evaluation part.
    EvalDone {
        /// The job's id.
        job_id: u64,
        /// The result.
        result: EvalResult,
    },
    /// The job failed on the worker (its message says why); the coordinator re-dispatches.
    Failed {
        /// The job's id.
        job_id: u64,
        /// One-line reason.
        message: String,
    },
    /// Alive (sent periodically and in answer to a ping).
    Heartbeat {
        /// Increasing counter.
        seq: u64,
    },
    /// Rank 0's communicator id for group `group`.
    GroupCreated {
        /// Group id.
        group: u64,
        /// Communicator id, to hand to every member.
        id: Vec<u8>,
    },
    /// This worker joined group `group` (every member has: the join is collective).
    GroupJoined {
        /// Group id.
        group: u64,
    },
    /// Creating or joining group `group` failed; the coordinator reduces by itself instead.
    GroupFailed {
        /// Group id.
        group: u64,
        /// One-line reason.
        message: String,
    },
    /// A part of a grouped meta-step. Rank 0 (`root`) carries in `result.sum` the group's
    /// all-reduced sum; the other members an empty sum (theirs went into the reduction).
    GroupStepDone {
        /// The job's id.
        job_id: u64,
        /// Group id.
        group: u64,
        /// Whether this is rank 0's answer (holding the reduced sum).
        root: bool,
        /// The part's per-task losses and rates (and, from rank 0, the reduced sum).
        result: StepResult,
    },
    /// A finished window of long-run members.
    WindowDone {
        /// The job's id.
        job_id: u64,
        /// The result.
        result: WindowResult,
    },
}

impl ToWorker {
    /// The variant's name (`"Challenge"`, `"Work"`, …), for logs and protocol errors; it never
    /// includes the message's contents.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Challenge { .. } => "Challenge",
            Self::Welcome { .. } => "Welcome",
            Self::Refused { .. } => "Refused",
            Self::Work { .. } => "Work",
            Self::Ping => "Ping",
            Self::Stop => "Stop",
            Self::CreateGroup { .. } => "CreateGroup",
            Self::JoinGroup { .. } => "JoinGroup",
            Self::LeaveGroup { .. } => "LeaveGroup",
            Self::GroupWork { .. } => "GroupWork",
        }
    }
}

impl ToCoord {
    /// The variant's name (`"Hello"`, `"StepDone"`, …), for logs and protocol errors; it never
    /// includes the message's contents.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "Hello",
            Self::Auth { .. } => "Auth",
            Self::StepDone { .. } => "StepDone",
            Self::EvalDone { .. } => "EvalDone",
            Self::Failed { .. } => "Failed",
            Self::Heartbeat { .. } => "Heartbeat",
            Self::GroupCreated { .. } => "GroupCreated",
            Self::GroupJoined { .. } => "GroupJoined",
            Self::GroupFailed { .. } => "GroupFailed",
            Self::GroupStepDone { .. } => "GroupStepDone",
            Self::WindowDone { .. } => "WindowDone",
        }
    }
}
