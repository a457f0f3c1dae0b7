//! A trained checkpoint evaluated by `meta-coord eval --task …` against the independent
//! float64 reference on the same fresh tasks: the per-task query losses after the inner loop
//! agree to a relative 1e-4, so the figures `train` and `eval` print are the spec's.

mod common;

use std::collections::BTreeMap;

use common::{run, s};
use metasched_compute::TaskSource;
use metasched_proto::{Split, TaskSpec};
use metasched_reference::reference_forward;

#[test]
fn eval_of_a_trained_checkpoint_matches_the_reference() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("run");
    let o = run(&[
        "train",
        "--out",
        s(&dir),
        "--steps",
        "40",
        "--meta-batch",
        "5",
        "--hidden",
        "8",
        "--eval-every",
        "0",
        "--final-eval-tasks",
        "5",
        "--seed",
        "11",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ckpt_path = dir.join("checkpoint.safetensors");
    let o = run(&[
        "eval",
        "--checkpoint",
        s(&ckpt_path),
        "--task",
        "sinusoid",
        "--tasks",
        "12",
        "--shots",
        "10",
        "--query",
        "100",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let ours: Vec<f64> =
        printed["outer_loss"].as_array().expect("losses").iter().map(|v| v.as_f64().expect("f64")).collect();
    assert_eq!(ours.len(), 12);

    // The same tasks, regenerated independently of the command, through the reference.
    let ckpt = metasched_formats::read_checkpoint(&ckpt_path).expect("checkpoint");
    let spec =
        TaskSpec { family: "sinusoid".parse().expect("family"), shots: 10, query: 100, ways: 5, seed: 0 };
    let batch = TaskSource::open(&spec, &ckpt.config)
        .expect("source")
        .sample_with(Split::Test, metasched_coord::train::report::FINAL_EVAL_STREAM, 0, 12, 10, 100)
        .expect("tasks");
    let cfg = common::ref_config(&ckpt.config);
    let tensors: BTreeMap<String, Vec<f64>> =
        ckpt.tensors().into_iter().map(|(n, _, v)| (n, v.iter().map(|&x| x as f64).collect())).collect();
    let tasks = common::ref_tasks(&batch);
    for (i, &loss) in ours.iter().enumerate() {
        let task = tasks[i].clone();
        let (want, _) = reference_forward(&cfg, &tensors, &[task], None);
        let rel = (loss - want).abs() / want.abs().max(1e-12);
        assert!(rel < 1e-4, "task {i}: meta-coord eval {loss} vs reference {want} (relative {rel:.2e})");
    }
}

#[test]
fn digits_training_reports_accuracy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("digits");
    let o = run(&[
        "train",
        "--task",
        "digits",
        "--ways",
        "3",
        "--shots",
        "1",
        "--query",
        "2",
        "--layers",
        "64,16,3",
        "--steps",
        "5",
        "--meta-batch",
        "4",
        "--hidden",
        "4",
        "--lr-max",
        "1.0",
        "--lr-init",
        "0.1",
        "--eval-every",
        "5",
        "--eval-tasks",
        "6",
        "--final-eval-tasks",
        "6",
        "--out",
        s(&dir),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).expect("eval.json"))
            .expect("json");
    let acc = eval["accuracy"].as_f64().expect("accuracy");
    assert!((0.0..=1.0).contains(&acc));
    assert!(String::from_utf8_lossy(&o.stdout).contains("query accuracy"));
    for png in ["lr_schedule.png", "meta_loss.png"] {
        let bytes = std::fs::read(dir.join(png)).expect(png);
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png} is a PNG");
    }
}
