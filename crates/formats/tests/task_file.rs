//! Task-file round trips and the refusal of every kind of bad task file (spec §6).

mod common;

use common::*;
use metasched_engine::{EngineError, SchedulerKind, Targets, TaskBatch};
use metasched_formats::{Dtype, FormatError, read_task_batch, write_task_batch};
use safetensors::SafeTensors;

fn sin() -> metasched_engine::Config {
    config(SchedulerKind::Lstm)
}

fn f32_bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &TaskBatch<f32>, b: &TaskBatch<f32>) {
    assert_eq!((a.b, a.k, a.q, a.d_in, a.d_out), (b.b, b.k, b.q, b.d_in, b.d_out));
    assert_eq!(f32_bits(&a.support_x), f32_bits(&b.support_x));
    assert_eq!(f32_bits(&a.query_x), f32_bits(&b.query_x));
    for (x, y) in [(&a.support_y, &b.support_y), (&a.query_y, &b.query_y)] {
        match (x, y) {
            (Targets::Values(x), Targets::Values(y)) => assert_eq!(f32_bits(x), f32_bits(y)),
            (Targets::Labels(x), Targets::Labels(y)) => assert_eq!(x, y),
            _ => panic!("target kinds differ"),
        }
    }
}

#[test]
fn round_trip_mse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tasks.safetensors");
    let batch = mse_batch(3, 5, 7);
    write_task_batch(&path, &batch).expect("write");
    let back = read_task_batch(&path, &sin()).expect("read");
    assert_same(&back, &batch);
    assert_eq!(back, batch);

    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["query.x", "query.y", "support.x", "support.y"]);
    assert_eq!(st.tensor("support.x").expect("x").shape(), [3, 5, 1]);
    assert_eq!(st.tensor("query.y").expect("y").shape(), [3, 7, 1]);
    assert_eq!(st.tensor("query.y").expect("y").dtype(), Dtype::F32);
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("header");
    let info: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().expect("metadata")["metasched.tasks"]).expect("json");
    assert_eq!(info["b"], 3);
    assert_eq!(info["k"], 5);
    assert_eq!(info["q"], 7);
}

#[test]
fn round_trip_cross_entropy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ce.safetensors");
    let batch = ce_batch(4, 6, 2);
    write_task_batch(&path, &batch).expect("write");
    let back = read_task_batch(&path, &ce_config()).expect("read");
    assert_same(&back, &batch);

    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let labels = st.tensor("support.labels").expect("labels");
    assert_eq!(labels.dtype(), Dtype::I64);
    assert_eq!(labels.shape(), [4, 6]);
    assert_eq!(st.tensor("query.x").expect("x").shape(), [4, 2, 2]);
}

// ---------------------------------------------------------------------------------------
// Bad task files.

/// Raw tensors of a valid regression file.
fn mse_raw(b: usize, k: usize, q: usize) -> Vec<Raw> {
    vec![
        raw_f32("support.x", vec![b, k, 1], &values(1, b * k)),
        raw_f32("support.y", vec![b, k, 1], &values(2, b * k)),
        raw_f32("query.x", vec![b, q, 1], &values(3, b * q)),
        raw_f32("query.y", vec![b, q, 1], &values(4, b * q)),
    ]
}

/// Raw tensors of a valid classification file with the given labels.
fn ce_raw(b: usize, k: usize, q: usize, support_labels: &[i64]) -> Vec<Raw> {
    vec![
        raw_f32("support.x", vec![b, k, 2], &values(1, b * k * 2)),
        ("support.labels".into(), Dtype::I64, vec![b, k], i64_bytes(support_labels)),
        raw_f32("query.x", vec![b, q, 2], &values(3, b * q * 2)),
        ("query.labels".into(), Dtype::I64, vec![b, q], i64_bytes(&vec![1; b * q])),
    ]
}

fn replace(t: &mut [Raw], r: Raw) {
    let i = t.iter().position(|x| x.0 == r.0).expect("present");
    t[i] = r;
}

#[test]
fn valid_raw_files_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_raw(dir.path(), "ok.safetensors", &mse_raw(2, 3, 4), None);
    let b = read_task_batch(&p, &sin()).expect("mse");
    assert_eq!((b.b, b.k, b.q), (2, 3, 4));
    let p = write_raw(dir.path(), "okce.safetensors", &ce_raw(2, 3, 4, &[0, 1, 2, 2, 1, 0]), None);
    let b = read_task_batch(&p, &ce_config()).expect("ce");
    assert_eq!(b.support_y, Targets::Labels(vec![0, 1, 2, 2, 1, 0]));
}

#[test]
fn not_safetensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("empty.safetensors");
    std::fs::write(&p, b"").expect("write");
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::NotSafetensors { .. },
        "task file",
        "empty.safetensors"
    );
    let full = raw_bytes(&mse_raw(2, 3, 4), None);
    let p = dir.path().join("half.safetensors");
    std::fs::write(&p, &full[..full.len() / 2]).expect("write");
    assert_bad!(read_task_batch(&p, &sin()), FormatError::NotSafetensors { .. }, "half.safetensors");
    assert_bad!(
        read_task_batch(dir.path().join("absent.safetensors"), &sin()),
        FormatError::Io { .. },
        "absent.safetensors"
    );
}

#[test]
fn nan_and_inf_in_task_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("support.x", f32::NAN, "NaN"),
        ("query.y", f32::INFINITY, "inf"),
        ("support.y", f32::NEG_INFINITY, "-inf"),
    ];
    for (name, bad, word) in cases {
        let mut t = mse_raw(2, 3, 4);
        let i = t.iter().position(|x| x.0 == name).expect("present");
        let n = t[i].2.iter().product::<usize>();
        let mut v = values(8, n);
        v[4] = bad;
        t[i] = raw_f32(name, t[i].2.clone(), &v);
        let p = write_raw(dir.path(), "nan.safetensors", &t, None);
        assert_bad!(
            read_task_batch(&p, &sin()),
            FormatError::NonFinite { index: 4, .. },
            "nan.safetensors",
            &format!("`{name}`"),
            word
        );
    }
    // In classification inputs too.
    let mut t = ce_raw(1, 2, 1, &[0, 1]);
    replace(&mut t, raw_f32("query.x", vec![1, 1, 2], &[0.0, f32::NAN]));
    let p = write_raw(dir.path(), "cenan.safetensors", &t, None);
    assert_bad!(read_task_batch(&p, &ce_config()), FormatError::NonFinite { index: 1, .. }, "`query.x`");
}

#[test]
fn empty_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_raw(dir.path(), "k0.safetensors", &mse_raw(2, 0, 4), None);
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::Engine { source: EngineError::InvalidTaskData { .. }, .. },
        "k0.safetensors",
        "`support.x`",
        "K = 0"
    );
    let p = write_raw(dir.path(), "q0.safetensors", &mse_raw(2, 3, 0), None);
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::Engine { source: EngineError::InvalidTaskData { .. }, .. },
        "q0.safetensors",
        "Q = 0"
    );
    let p = write_raw(dir.path(), "b0.safetensors", &mse_raw(0, 3, 4), None);
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::Engine { source: EngineError::InvalidTaskData { .. }, .. },
        "b0.safetensors",
        "B = 0"
    );
    let p = write_raw(dir.path(), "cek0.safetensors", &ce_raw(2, 0, 1, &[]), None);
    assert_bad!(read_task_batch(&p, &ce_config()), FormatError::Engine { .. }, "K = 0");
}

#[test]
fn labels_out_of_range_and_negative() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (labels, value, index) in [
        ([0, 1, 3, 0], 3i64, 2usize),
        ([0, -1, 2, 0], -1, 1),
        ([0, 1, 2, i64::from(u32::MAX)], i64::from(u32::MAX), 3),
        ([i64::MIN, 1, 2, 0], i64::MIN, 0),
    ] {
        let p = write_raw(dir.path(), "labels.safetensors", &ce_raw(2, 2, 1, &labels), None);
        let e = assert_bad!(
            read_task_batch(&p, &ce_config()),
            FormatError::BadLabel { .. },
            "labels.safetensors",
            "`support.labels`",
            &format!("label {value} at flat index {index}"),
            "0..3"
        );
        let FormatError::BadLabel { value: v, index: i, .. } = e else { unreachable!() };
        assert_eq!((v, i), (value, index));
    }
}

#[test]
fn wrong_dtypes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = mse_raw(2, 3, 4);
    let v: Vec<u8> = values(1, 6).iter().flat_map(|&x| f64::from(x).to_le_bytes()).collect();
    replace(&mut t, ("support.x".into(), Dtype::F64, vec![2, 3, 1], v));
    let p = write_raw(dir.path(), "f64.safetensors", &t, None);
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::WrongDtype { got: Dtype::F64, expected: Dtype::F32, .. },
        "f64.safetensors",
        "`support.x`"
    );
    // Labels stored as I32 or as floats.
    let mut t = ce_raw(2, 2, 1, &[0, 1, 2, 0]);
    replace(&mut t, ("support.labels".into(), Dtype::I32, vec![2, 2], vec![0; 16]));
    let p = write_raw(dir.path(), "i32.safetensors", &t, None);
    assert_bad!(
        read_task_batch(&p, &ce_config()),
        FormatError::WrongDtype { got: Dtype::I32, expected: Dtype::I64, .. },
        "`support.labels`"
    );
    let mut t = ce_raw(2, 2, 1, &[0, 1, 2, 0]);
    replace(&mut t, raw_f32("query.labels", vec![2, 1], &[0.0, 1.0]));
    let p = write_raw(dir.path(), "flabels.safetensors", &t, None);
    assert_bad!(
        read_task_batch(&p, &ce_config()),
        FormatError::WrongDtype { got: Dtype::F32, expected: Dtype::I64, .. },
        "`query.labels`"
    );
}

#[test]
fn inconsistent_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |file: &str, t: Vec<Raw>, needles: &[&str]| {
        let p = write_raw(dir.path(), file, &t, None);
        let e = read_task_batch(&p, &sin()).expect_err(file);
        assert!(matches!(e, FormatError::Engine { .. }), "{file}: {e:?}");
        assert!(e.is_bad_input());
        let msg = e.to_string();
        assert!(msg.contains(file), "{msg}");
        for n in needles {
            assert!(msg.contains(n), "`{msg}` lacks `{n}`");
        }
    };
    // B differs between support and query.
    let mut t = mse_raw(2, 3, 4);
    replace(&mut t, raw_f32("query.x", vec![3, 4, 1], &values(3, 12)));
    replace(&mut t, raw_f32("query.y", vec![3, 4, 1], &values(4, 12)));
    check("b.safetensors", t, &["`query.x`", "[3, 4, 1]", "[2, 4, 1]"]);
    // K differs within the support set.
    let mut t = mse_raw(2, 3, 4);
    replace(&mut t, raw_f32("support.y", vec![2, 2, 1], &values(2, 4)));
    check("k.safetensors", t, &["`support.y`", "[2, 2, 1]", "[2, 3, 1]"]);
    // Q differs within the query set.
    let mut t = mse_raw(2, 3, 4);
    replace(&mut t, raw_f32("query.y", vec![2, 5, 1], &values(2, 10)));
    check("q.safetensors", t, &["`query.y`", "[2, 5, 1]", "[2, 4, 1]"]);
    // Input width differs from the model's d_0 = 1.
    let mut t = mse_raw(2, 3, 4);
    replace(&mut t, raw_f32("support.x", vec![2, 3, 2], &values(1, 12)));
    check("d0.safetensors", t, &["`support.x`", "[2, 3, 2]", "[2, 3, 1]"]);
    // Output width differs from the model's d_L = 1.
    let mut t = mse_raw(2, 3, 4);
    replace(&mut t, raw_f32("query.y", vec![2, 4, 3], &values(2, 24)));
    check("dl.safetensors", t, &["`query.y`", "[2, 4, 3]", "[2, 4, 1]"]);
    // Wrong rank.
    let mut t = mse_raw(2, 3, 4);
    replace(&mut t, raw_f32("support.x", vec![6, 1], &values(1, 6)));
    check("rank.safetensors", t, &["`support.x`", "rank 2", "[B, K, d_0]"]);
}

#[test]
fn unknown_and_missing_tensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = mse_raw(2, 3, 4);
    t.push(raw_f32("support.z", vec![1], &[0.0]));
    let p = write_raw(dir.path(), "unknown.safetensors", &t, None);
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::Engine { source: EngineError::UnknownTensor { .. }, .. },
        "unknown.safetensors",
        "`support.z`"
    );
    let mut t = mse_raw(2, 3, 4);
    t.retain(|x| x.0 != "query.y");
    let p = write_raw(dir.path(), "missing.safetensors", &t, None);
    assert_bad!(
        read_task_batch(&p, &sin()),
        FormatError::Engine { source: EngineError::MissingTensor { .. }, .. },
        "missing.safetensors",
        "`query.y`",
        "mse"
    );
    // A regression file read for a classification model.
    let p = write_raw(dir.path(), "kind.safetensors", &mse_raw(2, 3, 4), None);
    assert_bad!(
        read_task_batch(&p, &ce_config()),
        FormatError::Engine { source: EngineError::InvalidTaskData { .. }, .. },
        "kind.safetensors",
        "cross_entropy",
        "labels"
    );
}

#[test]
fn writer_refuses_inconsistent_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.safetensors");
    let mut short = mse_batch(2, 3, 4);
    short.query_x.pop();
    let mut mixed = mse_batch(2, 3, 4);
    mixed.query_y = Targets::Labels(vec![0; 8]);
    for (what, b) in [("short", short), ("mixed", mixed)] {
        let e = write_task_batch(&path, &b).expect_err(what);
        assert!(matches!(e, FormatError::InvalidOutput { .. }), "{what}: {e:?}");
        assert!(!e.is_bad_input());
        assert!(!path.exists());
    }
}
