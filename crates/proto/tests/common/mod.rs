//! Fixed example messages shared by the integration tests.

#![allow(dead_code)]

use metasched_engine::{Config, FixedSum};
use metasched_proto::{
    Capabilities, CollectiveKind, DeviceKind, EvalResult, Job, ParamsBlob, RunSetup, Split, StepResult,
    TaskFamily, TaskSpec, ToCoord, ToWorker,
};

/// A fixed worker nonce.
pub const NONCE_W: [u8; 32] = [0x11; 32];
/// A fixed 32-byte value counting up (used as a coordinator nonce or a proof).
pub const COUNTING: [u8; 32] = {
    let mut a = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        a[i] = i as u8;
        i += 1;
    }
    a
};

/// Capabilities of a GPU worker that can join an NCCL group.
pub fn caps() -> Capabilities {
    Capabilities {
        device: DeviceKind::Cuda,
        device_count: 1,
        cores: 4,
        build_version: "0.1.0".into(),
        name: "host-1234".into(),
        collective: Some(CollectiveKind::Nccl),
    }
}

/// The default sinusoid run.
pub fn setup() -> RunSetup {
    RunSetup {
        config: Config::sinusoid_default(),
        tasks: TaskSpec { family: TaskFamily::Sinusoid, shots: 10, query: 10, ways: 1, seed: 7 },
        threads: 2,
        heartbeat_s: 2.0,
    }
}

/// A small step result with a three-value gradient sum.
pub fn step_result() -> StepResult {
    let mut sum = FixedSum::zeros(3);
    sum.add_f32(0, &[0.5, -1.25, 3.0e-3]);
    StepResult {
        step: 3,
        version: 3,
        first: 8,
        sum,
        outer_loss: vec![0.25, 0.125],
        lr: vec![0.01, 0.02],
        compute_s: 1.5,
    }
}

/// A small evaluation result.
pub fn eval_result() -> EvalResult {
    EvalResult { first: 4, outer_loss: vec![0.5], lr: vec![0.05], accuracy: vec![0.75], compute_s: 0.25 }
}

/// One example of every coordinator-to-worker message (two of `Work`), with a name.
pub fn to_worker_examples() -> Vec<(&'static str, ToWorker)> {
    vec![
        ("challenge", ToWorker::Challenge { nonce: NONCE_W, proof: COUNTING }),
        ("welcome", ToWorker::Welcome { worker_id: 7, setup: setup() }),
        ("refused", ToWorker::Refused { reason: "authentication failed".into() }),
        (
            "work_metagrad",
            ToWorker::Work {
                job_id: 42,
                job: Job::MetaGrad { step: 3, version: 3, first: 8, count: 4 },
                params: Some(ParamsBlob { version: 3, values: vec![1.0, -2.0, 0.5] }),
            },
        ),
        (
            "work_eval",
            ToWorker::Work {
                job_id: 300,
                job: Job::Eval { split: Split::Test, stream: 1, first: 0, count: 16, shots: 5, query: 20 },
                params: None,
            },
        ),
        ("ping", ToWorker::Ping),
        ("stop", ToWorker::Stop),
        ("create_group", ToWorker::CreateGroup { group: 2, world: 3 }),
        (
            "join_group",
            ToWorker::JoinGroup { group: 2, id: vec![0xab, 0xcd], rank: 1, world: 3, timeout_s: 0.5 },
        ),
        ("leave_group", ToWorker::LeaveGroup { group: 2 }),
        (
            "group_work",
            ToWorker::GroupWork {
                job_id: 42,
                job: Job::MetaGrad { step: 3, version: 3, first: 8, count: 4 },
                params: None,
                group: 2,
            },
        ),
    ]
}

/// One example of every worker-to-coordinator message, with a name.
pub fn to_coord_examples() -> Vec<(&'static str, ToCoord)> {
    vec![
        ("hello", ToCoord::Hello { protocol_version: 2, capabilities: caps(), nonce: NONCE_W }),
        ("auth", ToCoord::Auth { proof: COUNTING }),
        ("step_done", ToCoord::StepDone { job_id: 42, result: step_result() }),
        ("eval_done", ToCoord::EvalDone { job_id: 300, result: eval_result() }),
        ("failed", ToCoord::Failed { job_id: 5, message: "task source: no such file".into() }),
        ("heartbeat", ToCoord::Heartbeat { seq: 70_000 }),
        ("group_created", ToCoord::GroupCreated { group: 2, id: vec![0xab, 0xcd] }),
        ("group_joined", ToCoord::GroupJoined { group: 2 }),
        ("group_failed", ToCoord::GroupFailed { group: 2, message: "no NCCL".into() }),
        (
            "group_step_done",
            ToCoord::GroupStepDone { job_id: 42, group: 2, root: true, result: step_result() },
        ),
        (
            "window_done",
            ToCoord::WindowDone {
                job_id: 7,
                result: metasched_proto::WindowResult {
                    step: 3,
                    version: 3,
                    first: 1,
                    sum: metasched_engine::FixedSum::zeros(2),
                    members: vec![],
                    objective: vec![0.5],
                    lr: vec![0.25],
                    compute_s: 0.5,
                },
            },
        ),
    ]
}

/// Index of the variant, by an exhaustive match: adding a variant breaks this until the
/// examples (and the golden bytes) cover it.
pub fn to_worker_variant(m: &ToWorker) -> usize {
    match m {
        ToWorker::Challenge { .. } => 0,
        ToWorker::Welcome { .. } => 1,
        ToWorker::Refused { .. } => 2,
        ToWorker::Work { .. } => 3,
        ToWorker::Ping => 4,
        ToWorker::Stop => 5,
        ToWorker::CreateGroup { .. } => 6,
        ToWorker::JoinGroup { .. } => 7,
        ToWorker::LeaveGroup { .. } => 8,
        ToWorker::GroupWork { .. } => 9,
    }
}

/// Number of `ToWorker` variants.
pub const TO_WORKER_VARIANTS: usize = 10;

/// Index of the variant, by an exhaustive match (see [`to_worker_variant`]).
pub fn to_coord_variant(m: &ToCoord) -> usize {
    match m {
        ToCoord::Hello { .. } => 0,
        ToCoord::Auth { .. } => 1,
        ToCoord::StepDone { .. } => 2,
        ToCoord::EvalDone { .. } => 3,
        ToCoord::Failed { .. } => 4,
        ToCoord::Heartbeat { .. } => 5,
        ToCoord::GroupCreated { .. } => 6,
        ToCoord::GroupJoined { .. } => 7,
        ToCoord::GroupFailed { .. } => 8,
        ToCoord::GroupStepDone { .. } => 9,
        ToCoord::WindowDone { .. } => 10,
    }
}

/// Number of `ToCoord` variants.
pub const TO_COORD_VARIANTS: usize = 11;
