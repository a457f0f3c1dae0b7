//! Checkpoint round trips and the refusal of every kind of bad checkpoint (spec §5).

mod common;

use std::collections::BTreeMap;

use common::*;
use metasched_engine::{Config, EngineError, SchedulerKind};
use metasched_formats::{
    Checkpoint, Dtype, FileKind, FormatError, TensorFile, read_checkpoint, write_checkpoint,
};
use safetensors::SafeTensors;
use serde_json::json;

/// A checkpoint of `kind` carrying extra config keys, extra metadata and optimiser state.
fn rich_checkpoint(kind: SchedulerKind) -> Checkpoint {
    let config = config(kind);
    let mut ckpt = Checkpoint::new(config.clone(), params(&config, 7));
    ckpt.config_json["train"] = json!({"step": 1234, "optimizer": {"name": "adam", "beta1": 0.9}});
    ckpt.config_json["model"]["init_scale"] = json!(0.5);
    ckpt.extra_metadata.insert("metasched.note".into(), "written by a test".into());
    let n0 = config.model.layers[1] * config.model.layers[0];
    ckpt.extra_tensors.insert("optim.m.theta.layers.0.weight".into(), (vec![40, 1], values(11, n0)));
    ckpt.extra_tensors.insert("optim.step".into(), (vec![], vec![1234.0]));
    ckpt
}

fn round_trip(kind: SchedulerKind) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let ckpt = rich_checkpoint(kind);
    write_checkpoint(&path, &ckpt).expect("write");
    let back = read_checkpoint(&path).expect("read back");

    assert_eq!(back.config, ckpt.config);
    assert_eq!(bits(&back.params), bits(&ckpt.params), "parameters differ bitwise");
    assert_eq!(back.params.lstm.is_some(), ckpt.params.lstm.is_some());
    assert_eq!(back.params.lslr.is_some(), ckpt.params.lslr.is_some());
    assert_eq!(back.config_json["train"]["step"], json!(1234));
    assert_eq!(back.config_json["train"]["optimizer"]["name"], json!("adam"));
    assert_eq!(back.config_json["model"]["init_scale"], json!(0.5));
    assert_eq!(back.config_json["scheduler"]["kind"], json!(kind.as_str()));
    assert_eq!(back.extra_metadata, ckpt.extra_metadata);
    assert_eq!(back.extra_tensors.keys().collect::<Vec<_>>(), ckpt.extra_tensors.keys().collect::<Vec<_>>());
    for (name, (shape, v)) in &ckpt.extra_tensors {
        let (bshape, bv) = &back.extra_tensors[name];
        assert_eq!(bshape, shape);
        assert_eq!(
            bv.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
    // Writing what was read gives the same bytes (stable, deterministic output).
    let path2 = dir.path().join("again.safetensors");
    write_checkpoint(&path2, &back).expect("rewrite");
    assert_eq!(std::fs::read(&path).expect("read"), std::fs::read(&path2).expect("read"));
}

#[test]
fn round_trip_lstm() {
    round_trip(SchedulerKind::Lstm);
}

#[test]
fn round_trip_lslr() {
    round_trip(SchedulerKind::Lslr);
}

#[test]
fn round_trip_fixed() {
    round_trip(SchedulerKind::Fixed);
}

#[test]
fn file_holds_spec_names_shapes_and_dtypes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let config = config(SchedulerKind::Lstm);
    write_checkpoint(&path, &Checkpoint::new(config.clone(), params(&config, 3))).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("a safetensors file");
    let mut got: Vec<(String, Vec<usize>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), Dtype::F32, "{n}");
            (n, v.shape().to_vec())
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, Vec<usize>)> = [
        ("theta.layers.0.weight", vec![40, 1]),
        ("theta.layers.0.bias", vec![40]),
        ("theta.layers.1.weight", vec![40, 40]),
        ("theta.layers.1.bias", vec![40]),
        ("theta.layers.2.weight", vec![1, 40]),
        ("theta.layers.2.bias", vec![1]),
        ("phi.lstm.weight_ih", vec![80, 3]),
        ("phi.lstm.weight_hh", vec![80, 20]),
        ("phi.lstm.bias_ih", vec![80]),
        ("phi.lstm.bias_hh", vec![80]),
        ("phi.head.weight", vec![6, 20]),
        ("phi.head.bias", vec![6]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    want.sort();
    assert_eq!(got, want);
    // Little-endian float32 in PyTorch's row-major order.
    let p = params(&config, 3);
    let w = st.tensor("theta.layers.0.weight").expect("tensor");
    assert_eq!(w.data(), f32_bytes(&p.theta[..40]).as_slice());
    // The config metadata is plain JSON with the spec's sections.
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("header");
    let text = &meta.metadata().as_ref().expect("metadata")["metasched.config"];
    let v: serde_json::Value = serde_json::from_str(text).expect("json");
    assert_eq!(v["model"]["layers"], json!([1, 40, 40, 1]));
    assert_eq!(v["scheduler"]["hidden"], json!(20));
}

#[test]
fn tensors_lists_canonical_order() {
    let config = config(SchedulerKind::Lslr);
    let ckpt = Checkpoint::new(config.clone(), params(&config, 1));
    let names: Vec<String> = ckpt.tensors().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        [
            "theta.layers.0.weight",
            "theta.layers.0.bias",
            "theta.layers.1.weight",
            "theta.layers.1.bias",
            "theta.layers.2.weight",
            "theta.layers.2.bias",
            "phi.lslr.z"
        ]
    );
    let (_, shape, v) = &ckpt.tensors()[6];
    assert_eq!(shape, &vec![5, 6]);
    assert_eq!(v.len(), 30);
}

#[test]
fn config_wins_over_stale_config_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let config = config(SchedulerKind::Lstm);
    let mut ckpt = Checkpoint::new(config.clone(), params(&config, 2));
    ckpt.config_json["scheduler"]["hidden"] = json!(8);
    ckpt.config_json["scheduler"]["comment"] = json!("kept");
    ckpt.extra_metadata.insert("metasched.config".into(), "{\"stale\": true}".into());
    write_checkpoint(&path, &ckpt).expect("write");
    let back = read_checkpoint(&path).expect("read");
    assert_eq!(back.config.scheduler.hidden, 20);
    assert_eq!(back.config_json["scheduler"]["hidden"], json!(20));
    assert_eq!(back.config_json["scheduler"]["comment"], json!("kept"));
    assert!(back.extra_metadata.is_empty());
}

#[test]
fn lslr_checkpoint_may_carry_lstm_phi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("both.safetensors");
    let config = config(SchedulerKind::Lslr);
    let mut p = params(&config, 4);
    p.lstm = params(&self::config(SchedulerKind::Lstm), 5).lstm;
    write_checkpoint(&path, &Checkpoint::new(config, p.clone())).expect("write");
    let back = read_checkpoint(&path).expect("read");
    assert_eq!(bits(&back.params), bits(&p));
}

// ---------------------------------------------------------------------------------------
// Bad checkpoints.

fn lstm() -> Config {
    config(SchedulerKind::Lstm)
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = assert_bad!(
        read_checkpoint(dir.path().join("nope.safetensors")),
        FormatError::Io { .. },
        "checkpoint",
        "nope.safetensors"
    );
    assert_eq!(e.path(), dir.path().join("nope.safetensors"));
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("empty.safetensors");
    std::fs::write(&path, b"").expect("write");
    assert_bad!(
        read_checkpoint(&path),
        FormatError::NotSafetensors { len: 0, .. },
        "empty.safetensors",
        "0 bytes"
    );
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = raw_bytes(&raw_checkpoint_tensors(&lstm(), 1), Some(config_meta(&lstm())));
    // Cut in the middle of the data, and in the middle of the header.
    for cut in [full.len() / 2, 20] {
        let path = dir.path().join(format!("cut{cut}.safetensors"));
        std::fs::write(&path, &full[..cut]).expect("write");
        assert_bad!(
            read_checkpoint(&path),
            FormatError::NotSafetensors { .. },
            &format!("cut{cut}.safetensors")
        );
    }
    // One byte short of a whole file.
    let path = dir.path().join("short.safetensors");
    std::fs::write(&path, &full[..full.len() - 1]).expect("write");
    assert_bad!(
        read_checkpoint(&path),
        FormatError::NotSafetensors { .. },
        "short.safetensors",
        "not fully covered"
    );
}

#[test]
fn garbage_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"this is a text file, not a tensor file at all\n").expect("write");
    assert_bad!(
        read_checkpoint(&path),
        FormatError::NotSafetensors { .. },
        "garbage.safetensors",
        "not a safetensors file"
    );
    // A plausible length followed by a header that is not JSON.
    let mut bytes = 16u64.to_le_bytes().to_vec();
    bytes.extend(b"{not json at all");
    std::fs::write(&path, &bytes).expect("write");
    assert_bad!(read_checkpoint(&path), FormatError::NotSafetensors { .. }, "garbage.safetensors", "JSON");
}

#[test]
fn wrong_dtype_f64_and_i32() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    let i = t.iter().position(|r| r.0 == "theta.layers.0.weight").expect("present");
    t[i].1 = Dtype::F64;
    t[i].3 = t[i].3.iter().chain(t[i].3.iter()).copied().collect();
    let path = write_raw(dir.path(), "f64.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::WrongDtype { got: Dtype::F64, expected: Dtype::F32, .. },
        "f64.safetensors",
        "`theta.layers.0.weight`",
        "F64"
    );

    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    let i = t.iter().position(|r| r.0 == "phi.head.bias").expect("present");
    t[i].1 = Dtype::I32;
    let path = write_raw(dir.path(), "i32.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::WrongDtype { got: Dtype::I32, .. },
        "i32.safetensors",
        "`phi.head.bias`"
    );
}

#[test]
fn wrong_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    let i = t.iter().position(|r| r.0 == "theta.layers.0.weight").expect("present");
    t[i] = raw_f32("theta.layers.0.weight", vec![40, 2], &values(1, 80));
    let path = write_raw(dir.path(), "shape.safetensors", &t, Some(config_meta(&lstm())));
    let e = assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::ShapeMismatch { .. }, .. },
        "checkpoint",
        "shape.safetensors",
        "`theta.layers.0.weight`",
        "[40, 2]",
        "[40, 1]"
    );
    println!("{e}");
    // Same element count, transposed.
    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    let i = t.iter().position(|r| r.0 == "phi.head.weight").expect("present");
    t[i].2 = vec![20, 6];
    let path = write_raw(dir.path(), "transposed.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::ShapeMismatch { .. }, .. },
        "transposed.safetensors",
        "`phi.head.weight`"
    );
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    t.retain(|r| r.0 != "phi.lstm.bias_hh");
    let path = write_raw(dir.path(), "missing.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::MissingTensor { .. }, .. },
        "missing.safetensors",
        "`phi.lstm.bias_hh`"
    );
    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    t.retain(|r| r.0 != "theta.layers.2.bias");
    let path = write_raw(dir.path(), "missing2.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::MissingTensor { .. }, .. },
        "missing2.safetensors",
        "`theta.layers.2.bias`"
    );
    // lslr needs its table.
    let cfg = config(SchedulerKind::Lslr);
    let mut t = raw_checkpoint_tensors(&cfg, 1);
    t.retain(|r| r.0 != "phi.lslr.z");
    let path = write_raw(dir.path(), "nolslr.safetensors", &t, Some(config_meta(&cfg)));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::MissingTensor { .. }, .. },
        "nolslr.safetensors",
        "`phi.lslr.z`"
    );
}

#[test]
fn unknown_tensor() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["model.layers.0.weight", "theta.layers.3.weight", "phi.lstm.weight", "optimx"] {
        let mut t = raw_checkpoint_tensors(&lstm(), 1);
        t.push(raw_f32(name, vec![2], &[1.0, 2.0]));
        let path = write_raw(dir.path(), "unknown.safetensors", &t, Some(config_meta(&lstm())));
        assert_bad!(
            read_checkpoint(&path),
            FormatError::Engine { source: EngineError::UnknownTensor { .. }, .. },
            "unknown.safetensors",
            &format!("`{name}`")
        );
    }
}

#[test]
fn config_tensor_mismatch() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Tensors of an H = 8 scheduler under a config saying H = 20.
    let mut small = lstm();
    small.scheduler.hidden = 8;
    let t = raw_checkpoint_tensors(&small, 1);
    let path = write_raw(dir.path(), "h8.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::ShapeMismatch { .. }, .. },
        "h8.safetensors",
        "phi.",
        ", 8]",
        ", 20]"
    );
    // An lslr checkpoint read under steps = 7 instead of 5.
    let cfg = config(SchedulerKind::Lslr);
    let mut seven = cfg.clone();
    seven.inner.steps = 7;
    let path = write_raw(
        dir.path(),
        "steps.safetensors",
        &raw_checkpoint_tensors(&cfg, 1),
        Some(config_meta(&seven)),
    );
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::ShapeMismatch { .. }, .. },
        "steps.safetensors",
        "`phi.lslr.z`",
        "[5, 6]",
        "[7, 6]"
    );
    // A learner of other widths.
    let fixed = config(SchedulerKind::Fixed);
    let mut wide = fixed.clone();
    wide.model.layers = vec![1, 64, 1];
    let path = write_raw(
        dir.path(),
        "layers.safetensors",
        &raw_checkpoint_tensors(&fixed, 1),
        Some(config_meta(&wide)),
    );
    assert_bad!(
        read_checkpoint(&path),
        FormatError::Engine { source: EngineError::ShapeMismatch { .. }, .. },
        "layers.safetensors",
        "`theta.layers.0.bias`",
        "[40]",
        "[64]"
    );
}

#[test]
fn missing_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = raw_checkpoint_tensors(&lstm(), 1);
    let path = write_raw(dir.path(), "nometa.safetensors", &t, None);
    assert_bad!(
        read_checkpoint(&path),
        FormatError::MissingMetadata { .. },
        "nometa.safetensors",
        "metasched.config"
    );
    let other = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let path = write_raw(dir.path(), "otherkey.safetensors", &t, Some(other));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::MissingMetadata { .. },
        "otherkey.safetensors",
        "metasched.config"
    );
}

fn bad_config(dir: &std::path::Path, file: &str, text: &str) -> Result<Checkpoint, FormatError> {
    let path = write_raw(dir, file, &raw_checkpoint_tensors(&lstm(), 1), Some(config_text_meta(text)));
    read_checkpoint(&path)
}

#[test]
fn malformed_config_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = assert_bad!(
        bad_config(dir.path(), "json.safetensors", "{\"model\": {\"layers\": [1, 40"),
        FormatError::BadConfig { field: None, .. },
        "json.safetensors",
        "metasched.config",
        "invalid JSON"
    );
    println!("{e}");
    assert_bad!(
        bad_config(dir.path(), "array.safetensors", "[1, 2, 3]"),
        FormatError::BadConfig { field: None, .. },
        "array.safetensors",
        "object"
    );
}

fn config_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = serde_json::to_value(lstm()).expect("to json");
    edit(&mut v);
    v.to_string()
}

#[test]
fn unknown_scheduler_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with(|v| v["scheduler"]["kind"] = json!("adam"));
    let e = assert_bad!(
        bad_config(dir.path(), "adam.safetensors", &text),
        FormatError::BadConfig { field: Some(_), .. },
        "adam.safetensors",
        "`scheduler.kind`",
        "adam"
    );
    println!("{e}");
}

#[test]
fn config_field_errors_name_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: Vec<(&str, String)> = vec![
        (
            "scheduler.hidden",
            config_with(|v| {
                v["scheduler"].as_object_mut().expect("object").remove("hidden");
            }),
        ),
        ("model.activation", config_with(|v| v["model"]["activation"] = json!("gelu"))),
        ("model.layers", config_with(|v| v["model"]["layers"] = json!([1, -40, 1]))),
        ("inner.steps", config_with(|v| v["inner"]["steps"] = json!("five"))),
        (
            "inner",
            config_with(|v| {
                v.as_object_mut().expect("object").remove("inner");
            }),
        ),
        // Engine validation failures.
        ("scheduler.lr_max", config_with(|v| v["scheduler"]["lr_max"] = json!(-1.0))),
        ("inner.steps", config_with(|v| v["inner"]["steps"] = json!(0))),
        ("model.layers", config_with(|v| v["model"]["layers"] = json!([3]))),
    ];
    for (field, text) in cases {
        let e = assert_bad!(
            bad_config(dir.path(), "field.safetensors", &text),
            FormatError::BadConfig { field: Some(_), .. },
            "field.safetensors",
            &format!("`{field}`")
        );
        let FormatError::BadConfig { field: Some(f), .. } = &e else { unreachable!() };
        assert_eq!(f, field, "{e}");
    }
}

#[test]
fn unknown_config_keys_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_with(|v| {
        v["data"] = json!({"loader_position": 99});
        v["scheduler"]["momentum"] = json!(0.9);
    });
    let ckpt = bad_config(dir.path(), "extra.safetensors", &text).expect("extra keys are fine");
    assert_eq!(ckpt.config, lstm());
    assert_eq!(ckpt.config_json["data"]["loader_position"], json!(99));
}

#[test]
fn non_finite_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (bad, word) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf"), (f32::NEG_INFINITY, "-inf")] {
        let mut t = raw_checkpoint_tensors(&lstm(), 1);
        let i = t.iter().position(|r| r.0 == "phi.lstm.weight_hh").expect("present");
        let mut v = values(9, 80 * 20);
        v[123] = bad;
        t[i] = raw_f32("phi.lstm.weight_hh", vec![80, 20], &v);
        let path = write_raw(dir.path(), "nan.safetensors", &t, Some(config_meta(&lstm())));
        assert_bad!(
            read_checkpoint(&path),
            FormatError::NonFinite { index: 123, .. },
            "nan.safetensors",
            "`phi.lstm.weight_hh`",
            "index 123",
            word
        );
    }
    // In optimiser state too.
    let mut t = raw_checkpoint_tensors(&lstm(), 1);
    t.push(raw_f32("optim.v", vec![3], &[0.0, f32::NAN, 1.0]));
    let path = write_raw(dir.path(), "optim.safetensors", &t, Some(config_meta(&lstm())));
    assert_bad!(
        read_checkpoint(&path),
        FormatError::NonFinite { index: 1, .. },
        "optim.safetensors",
        "`optim.v`"
    );
}

#[test]
fn writer_refuses_what_the_reader_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.safetensors");
    let config = lstm();
    let good = Checkpoint::new(config.clone(), params(&config, 1));

    let mut short = good.clone();
    short.params.theta.pop();
    let mut nan = good.clone();
    nan.params.theta[5] = f32::NAN;
    let mut bad_extra = good.clone();
    bad_extra.extra_tensors.insert("adam.m".into(), (vec![1], vec![0.0]));
    let mut bad_len = good.clone();
    bad_len.extra_tensors.insert("optim.m".into(), (vec![2, 2], vec![0.0; 3]));
    let mut bad_cfg = good.clone();
    bad_cfg.config.scheduler.lr_max = -1.0;
    let mut bad_lstm = good.clone();
    if let Some(l) = bad_lstm.params.lstm.as_mut() {
        l.head_b.push(0.0);
    }
    let mut no_lstm = good.clone();
    no_lstm.params.lstm = None;
    let lslr = common::config(SchedulerKind::Lslr);
    let mut no_lslr = Checkpoint::new(lslr.clone(), params(&lslr, 1));
    no_lslr.params.lslr = None;
    for (what, ckpt) in [
        ("no lstm", no_lstm),
        ("no lslr", no_lslr),
        ("short theta", short),
        ("nan", nan),
        ("extra name", bad_extra),
        ("extra length", bad_len),
        ("config", bad_cfg),
        ("lstm length", bad_lstm),
    ] {
        let e = write_checkpoint(&path, &ckpt).expect_err(what);
        assert!(matches!(e, FormatError::InvalidOutput { .. }), "{what}: {e:?}");
        assert!(!e.is_bad_input(), "{what}");
        assert!(e.to_string().contains("out.safetensors"), "{e}");
        assert!(!path.exists(), "{what}: something was written");
    }
}

#[test]
fn failed_write_keeps_existing_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ckpt.safetensors");
    let config = lstm();
    let good = Checkpoint::new(config.clone(), params(&config, 1));
    write_checkpoint(&path, &good).expect("write");
    let before = std::fs::read(&path).expect("read");
    let mut bad = good.clone();
    bad.params.theta[0] = f32::INFINITY;
    write_checkpoint(&path, &bad).expect_err("refused");
    assert_eq!(std::fs::read(&path).expect("read"), before);
    // Output directory missing: an output error, not bad input.
    let e = write_checkpoint(dir.path().join("no/such/dir/ckpt.safetensors"), &good).expect_err("no dir");
    assert!(matches!(e, FormatError::Io { .. }), "{e:?}");
    assert!(!e.is_bad_input());
    assert!(e.to_string().contains("cannot write"), "{e}");
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("ckpt.safetensors")]);
}

#[test]
fn tensor_file_reads_generic_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_raw(
        dir.path(),
        "raw.safetensors",
        &[raw_f32("a", vec![2], &[1.5, -2.0]), ("b".into(), Dtype::I64, vec![], i64_bytes(&[-7]))],
        None,
    );
    let f = TensorFile::read(&path, FileKind::Output).expect("read");
    assert_eq!(f.names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(f.f32("a").expect("a"), [1.5, -2.0]);
    assert_eq!(f.i64("b").expect("b"), [-7]);
    assert_eq!(f.shape("b"), Some(&[][..]));
    assert!(f.metadata().is_empty());
    assert_bad!(f.f32("b"), FormatError::WrongDtype { .. }, "raw.safetensors", "`b`", "I64");
    assert_bad!(f.f32("c"), FormatError::Engine { source: EngineError::MissingTensor { .. }, .. }, "`c`");
}

#[test]
fn unaligned_hand_made_file() {
    // A header whose length is not a multiple of 4 puts the data at an unaligned offset; the
    // reader must still decode little-endian values correctly.
    let header = r#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}}"#;
    assert_ne!(header.len() % 4, 0);
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    for x in [1.0f32, -0.5, 3.25] {
        bytes.extend(x.to_le_bytes());
    }
    let f = TensorFile::from_bytes("hand.safetensors", FileKind::Output, bytes).expect("parse");
    assert_eq!(f.f32("w").expect("w"), [1.0, -0.5, 3.25]);
}
