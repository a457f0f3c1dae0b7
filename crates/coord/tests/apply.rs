//! `meta-coord apply` end to end on a tiny train-mlp checkpoint: it writes its table and
//! figures; the learned row is a direct `advance` of the checkpoint's scheduler; the constant
//! baseline is the engine's own `fixed` scheduler at that rate; results do not depend on the
//! thread count; tuning never looks at Test runs; `--record-trajectory` writes that learned
//! run step by step; bad input exits 2 on one line.

mod common;

use std::path::{Path, PathBuf};

use common::{run, s};
use metasched_coord::commands::apply::setup::group_map;
use metasched_coord::commands::apply::table::verdict;
use metasched_engine::horizon::{Objective, ObjectiveMode, RunData, RunState, advance};
use metasched_engine::mlp::Mlp;
use metasched_engine::{Params, SchedulerKind};
use metasched_formats::{read_checkpoint, read_tensors};
use metasched_tasks::train_mlp::{OpenedDataset, RunStream, TrainMlpData, TrainRun};
use serde_json::Value;

/// Trains a tiny checkpoint (H = 50) into `dir` and returns its path.
fn tiny_checkpoint(dir: &Path) -> PathBuf {
    let out = run(&[
        "train",
        "--task",
        "train-mlp",
        "--dataset",
        "digits:3",
        "--layers",
        "64,8,3",
        "--hidden",
        "4",
        "--inner-steps",
        "50",
        "--window",
        "10",
        "--meta-batch",
        "4",
        "--steps",
        "3",
        "--batch-size",
        "16",
        "--lr-max",
        "1.0",
        "--lr-init",
        "0.1",
        "--final-eval-tasks",
        "2",
        "--eval-every",
        "0",
        "--seed",
        "5",
        "--out",
        s(dir),
    ]);
    assert!(out.status.success(), "train failed: {}", String::from_utf8_lossy(&out.stderr));
    dir.join("checkpoint.safetensors")
}

/// Runs apply and returns its apply.json.
fn apply(ckpt: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["apply", "--checkpoint", s(ckpt), "--out", s(out), "--tune-seeds", "2"];
    if !extra.contains(&"--seeds") {
        args.extend_from_slice(&["--seeds", "3"]);
    }
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "apply failed: {}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(out.join("apply.json")).expect("apply.json written");
    serde_json::from_str(&text).expect("apply.json is JSON")
}

/// Per-seed final validation losses of row `row`.
fn val_losses(report: &Value, row: usize) -> Vec<f32> {
    report["table"]["rows"][row]["per_seed"]
        .as_array()
        .expect("per_seed")
        .iter()
        .map(|x| x["val_loss"].as_f64().expect("val_loss") as f32)
        .collect()
}

/// Final validation loss of a direct `advance` over the whole horizon of Test run `r`.
fn direct_val(ckpt_config: &metasched_engine::Config, params: &Params<f32>, r: u64) -> f32 {
    let data: TrainMlpData = "digits:3".parse().expect("dataset");
    let opened = OpenedDataset::open(&data, ckpt_config).expect("opens");
    let run = TrainRun::<f32>::open(&opened, ckpt_config, 5, RunStream::Test, r, 16).expect("run");
    let h = ckpt_config.inner.steps;
    let mut state = RunState::fresh(ckpt_config, run.learner_init());
    let obj = Objective { window: 1, mode: ObjectiveMode::End, horizon: h };
    advance(ckpt_config, params, &mut state, &run, h, Some(&obj), None, None).expect("advance");
    let mlp = Mlp::new(ckpt_config);
    let val = run.validation();
    let mut cache = mlp.cache(val.n);
    mlp.forward(&mut cache, &state.theta, val.x);
    mlp.loss_of_output(&cache, val.y)
}

#[test]
fn apply_end_to_end_matches_direct_runs_and_fixed_scheduler() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny_checkpoint(dir.path());
    let out = dir.path().join("apply");
    let report = apply(&ckpt, &out, &["--threads", "1"]);
    for f in ["apply.json", "apply_lr.png", "apply_loss.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let rows = report["table"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    assert!(["yes", "tie", "no"].contains(&rows[0]["wins"].as_str().expect("wins")));
    assert_eq!(report["tuning"]["grids"]["rates"].as_array().map(Vec::len), Some(12));

    // The learned row is the checkpoint's scheduler run directly through `advance`.
    let c = read_checkpoint(&ckpt).expect("checkpoint");
    let learned = val_losses(&report, 0);
    for (r, &v) in learned.iter().enumerate() {
        assert_eq!(v.to_bits(), direct_val(&c.config, &c.params, r as u64).to_bits(), "learned run {r}");
    }

    // The constant baseline is the engine's `fixed` scheduler at the tuned rate, bit for bit.
    let rate = report["tuning"]["chosen"][0]["rate"].as_f64().expect("tuned constant");
    let mut fixed = c.config.clone();
    fixed.scheduler.kind = SchedulerKind::Fixed;
    fixed.scheduler.lr_fixed = rate;
    let params = Params::<f32>::zeros(&fixed);
    let constant = val_losses(&report, 1);
    for (r, &v) in constant.iter().enumerate() {
        assert_eq!(v.to_bits(), direct_val(&fixed, &params, r as u64).to_bits(), "constant run {r}");
    }

    // Same seeds, another thread count: the same bits everywhere.
    let again = apply(&ckpt, &dir.path().join("again"), &["--threads", "2"]);
    assert_eq!(report["table"], again["table"]);
    assert_eq!(report["tuning"], again["tuning"]);

    // More Test runs change nothing about tuning (it only sees Tune runs), and the first
    // runs' figures stay the same.
    let more = apply(&ckpt, &dir.path().join("more"), &["--seeds", "5"]);
    assert_eq!(report["tuning"], more["tuning"]);
    assert_eq!(val_losses(&more, 1)[..3], constant[..]);
}

#[test]
fn apply_generalises_to_other_horizons_layers_and_datasets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny_checkpoint(dir.path());
    let longer = apply(&ckpt, &dir.path().join("h2"), &["--inner-steps", "100"]);
    assert_eq!(longer["horizon"], 100);
    assert_eq!(longer["trained_horizon"], 50);
    let deeper = apply(&ckpt, &dir.path().join("deep"), &["--layers", "64,16,8,3"]);
    assert_eq!(deeper["group_map"], serde_json::json!([0, 1, 0, 1, 2, 3]));
    let sin = apply(&ckpt, &dir.path().join("sin"), &["--dataset", "sinusoid", "--layers", "1,8,1"]);
    assert!(sin["table"]["rows"][0]["accuracy"].is_null());
}

#[test]
fn record_trajectory_writes_the_learned_run_step_by_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ckpt = tiny_checkpoint(dir.path());
    let traj = dir.path().join("traj.safetensors");
    let out = dir.path().join("apply");
    let report = apply(
        &ckpt,
        &out,
        &["--seeds", "2", "--curve-every", "1", "--record-trajectory", s(&traj), "--record-run", "1"],
    );
    let file = read_tensors(&traj).expect("trajectory written");
    let about: Value =
        serde_json::from_str(&file.metadata()["metasched.trajectory"]).expect("trajectory metadata is JSON");
    assert_eq!((about["run"].as_u64(), about["stream"].as_str()), (Some(1), Some("test")));

    // A direct `advance` of Test run 1, validation loss after every step: the same bits.
    let c = read_checkpoint(&ckpt).expect("checkpoint");
    let config = &c.config;
    let h = config.inner.steps;
    let data: TrainMlpData = "digits:3".parse().expect("dataset");
    let opened = OpenedDataset::open(&data, config).expect("opens");
    let run = TrainRun::<f32>::open(&opened, config, 5, RunStream::Test, 1, 16).expect("run");
    let theta0 = run.learner_init();
    let mut state = RunState::fresh(config, theta0.clone());
    let obj = Objective { window: 1, mode: ObjectiveMode::End, horizon: h };
    let direct = advance(config, &c.params, &mut state, &run, h, Some(&obj), None, None).expect("advance");
    assert_eq!(file.f32("lr").expect("lr"), direct.lr);
    assert_eq!(file.shape("lr"), Some(&[h, config.groups()][..]));
    assert_eq!(file.f32("train_loss").expect("train_loss"), direct.train_loss);
    let val: Vec<f32> = direct.val_loss.iter().map(|&(_, l)| l).collect();
    assert_eq!(file.f32("val_loss").expect("val_loss"), val);
    assert_eq!(file.i64("val_step").expect("val_step"), (1..=h as i64).collect::<Vec<_>>());
    assert_eq!(val[h - 1].to_bits(), val_losses(&report, 0)[1].to_bits());

    // theta_0 by tensor name, and every step's minibatch as indices into the training split.
    let mut theta = Vec::new();
    for l in 0..config.model.layers.len() - 1 {
        theta.extend(file.f32(&format!("theta.layers.{l}.weight")).expect("weight"));
        theta.extend(file.f32(&format!("theta.layers.{l}.bias")).expect("bias"));
    }
    assert_eq!(theta, theta0);
    let indices = file.i64("batch.indices").expect("batch.indices");
    assert_eq!(file.shape("batch.indices"), Some(&[h, 16][..]));
    for t in [0, 1, h / 2, h - 1] {
        let want: Vec<i64> = run.batch_indices(t).into_iter().map(|i| i as i64).collect();
        assert_eq!(indices[t * 16..(t + 1) * 16], want[..], "step {t}");
    }
    assert_eq!(file.f32("train.x").expect("train.x").len(), run.n_train() * 64);
    assert_eq!(file.i64("val.labels").expect("val.labels").len(), run.n_val());
}

#[test]
fn group_map_sends_extra_hidden_layers_to_the_last_trained_hidden_layer() {
    assert_eq!(group_map(2, 2), vec![0, 1, 2, 3]);
    assert_eq!(group_map(2, 4), vec![0, 1, 0, 1, 0, 1, 2, 3]);
    assert_eq!(group_map(3, 4), vec![0, 1, 2, 3, 2, 3, 4, 5]);
    assert_eq!(group_map(3, 2), vec![0, 1, 4, 5]);
    assert_eq!(group_map(1, 3), vec![0, 1, 0, 1, 0, 1]);
}

/// Asserts exit code 2 and a one-line error naming `needle`.
fn refused(args: &[&str], needle: &str) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

#[test]
fn apply_refuses_bad_input_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.safetensors");
    refused(&["apply", "--checkpoint", s(&missing)], "no such file");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").expect("write");
    refused(&["apply", "--checkpoint", s(&garbage)], "garbage.safetensors");
    let init = dir.path().join("init.safetensors");
    let o = run(&["init", "--out", s(&init)]);
    assert!(o.status.success());
    refused(&["apply", "--checkpoint", s(&init)], "not a train-mlp");
    let ckpt = tiny_checkpoint(dir.path());
    refused(&["apply", "--checkpoint", s(&ckpt), "--seeds", "0"], "--seeds");
    refused(&["apply", "--checkpoint", s(&ckpt), "--tune-seeds", "0"], "--tune-seeds");
    refused(&["apply", "--checkpoint", s(&ckpt), "--dataset", "sinusoid"], "--layers");
    refused(&["apply", "--checkpoint", s(&ckpt), "--layers", "64,8,4"], "layers");
    refused(&["apply", "--checkpoint", s(&ckpt), "--inner-optimizer", "rmsprop"], "rmsprop");
    let traj = dir.path().join("traj.safetensors");
    refused(
        &[
            "apply",
            "--checkpoint",
            s(&ckpt),
            "--seeds",
            "2",
            "--record-trajectory",
            s(&traj),
            "--record-run",
            "2",
        ],
        "--record-run",
    );
}

#[test]
fn verdict_needs_disjoint_intervals_and_a_finite_learned_mean() {
    assert_eq!(verdict((1.0, 0.1), (2.0, 0.1)), "yes");
    assert_eq!(verdict((1.0, 0.6), (2.0, 0.6)), "tie");
    assert_eq!(verdict((2.5, 0.6), (2.0, 0.6)), "tie");
    assert_eq!(verdict((3.0, 0.1), (2.0, 0.1)), "no");
    assert_eq!(verdict((f64::NAN, f64::NAN), (2.0, 0.1)), "no");
    assert_eq!(verdict((1.0, 0.1), (f64::INFINITY, f64::NAN)), "yes");
    assert_eq!(verdict((1.0, f64::NAN), (2.0, 0.1)), "tie");
}
