//! Atomic writes and the `metagrad` / `eval` output files.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use metasched_formats::{FormatError, OutputTensor, read_tensors, write_atomic, write_tensors};
use safetensors::SafeTensors;

fn listing(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> =
        std::fs::read_dir(dir).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    v.sort();
    v
}

#[test]
fn write_atomic_creates_and_replaces_leaving_no_temp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("file.bin");
    write_atomic(&path, b"first").expect("create");
    assert_eq!(std::fs::read(&path).expect("read"), b"first");
    write_atomic(&path, b"second, longer").expect("replace");
    assert_eq!(std::fs::read(&path).expect("read"), b"second, longer");
    write_atomic(&path, b"").expect("empty");
    assert_eq!(std::fs::read(&path).expect("read"), b"");
    assert_eq!(listing(dir.path()), [OsString::from("file.bin")]);
}

#[test]
fn write_atomic_relative_path() {
    // Paths with `.` components work, and the temp file lands next to the target.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(".").join("rel.bin");
    write_atomic(&path, b"x").expect("write");
    assert_eq!(listing(dir.path()), [OsString::from("rel.bin")]);
}

#[test]
fn write_atomic_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing").join("file.bin");
    write_atomic(&path, b"data").expect_err("no directory");
    assert!(!path.exists());
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn write_atomic_failed_rename_keeps_target_and_removes_temp() {
    // The target is a non-empty directory: the rename fails after the temp file was written.
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    std::fs::write(target.join("inside"), b"keep me").expect("write");
    write_atomic(&target, b"new").expect_err("cannot replace a directory");
    assert_eq!(std::fs::read(target.join("inside")).expect("read"), b"keep me");
    assert_eq!(listing(dir.path()), [OsString::from("target")]);
}

#[test]
fn write_atomic_rejects_path_without_file_name() {
    write_atomic(Path::new("/"), b"x").expect_err("no file name");
    write_atomic(Path::new(".."), b"x").expect_err("no file name");
}

#[test]
fn concurrent_writers_never_expose_partial_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.bin");
    let contents: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 100_000 + usize::from(i)]).collect();
    std::thread::scope(|s| {
        for c in &contents {
            let path = &path;
            s.spawn(move || {
                for _ in 0..5 {
                    write_atomic(path, c).expect("write");
                }
            });
        }
        s.spawn(|| {
            for _ in 0..50 {
                if let Ok(b) = std::fs::read(&path) {
                    assert!(contents.contains(&b), "saw a partial file of {} bytes", b.len());
                }
            }
        });
    });
    let last = std::fs::read(&path).expect("read");
    assert!(contents.contains(&last));
    assert_eq!(listing(dir.path()), [OsString::from("shared.bin")]);
}

#[test]
fn output_file_with_scalar_j() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("grad.safetensors");
    let tensors = vec![
        ("J".to_string(), vec![], vec![0.125f32]),
        ("outer_loss".to_string(), vec![2], vec![0.1, 0.15]),
        ("lr".to_string(), vec![2, 5, 6], common::values(3, 60)),
        ("grad.theta.layers.0.weight".to_string(), vec![40, 1], common::values(4, 40)),
    ];
    let meta = BTreeMap::from([("metasched.command".to_string(), "metagrad".to_string())]);
    write_tensors(&path, &tensors, &meta).expect("write");

    // Readable by the safetensors crate itself, J with an empty shape and one element.
    let bytes = std::fs::read(&path).expect("read");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let j = st.tensor("J").expect("J");
    assert_eq!(j.shape(), [] as [usize; 0]);
    assert_eq!(j.data(), 0.125f32.to_le_bytes());

    let f = read_tensors(&path).expect("read back");
    assert_eq!(f.metadata(), &meta);
    assert_eq!(f.shape("J"), Some(&[][..]));
    assert_eq!(f.f32("J").expect("J"), [0.125]);
    let all = f.all_f32().expect("all f32");
    for (name, shape, values) in &tensors {
        assert_eq!(&all[name].0, shape);
        assert_eq!(&all[name].1, values);
    }
}

#[test]
fn output_writer_refuses_inconsistent_tensors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out.safetensors");
    let cases: Vec<(&str, Vec<OutputTensor>)> = vec![
        ("scalar with two values", vec![("J".into(), vec![], vec![1.0, 2.0])]),
        ("length", vec![("lr".into(), vec![2, 3], vec![0.0; 5])]),
        ("duplicate", vec![("a".into(), vec![1], vec![0.0]), ("a".into(), vec![1], vec![0.0])]),
        ("empty name", vec![(String::new(), vec![1], vec![0.0])]),
    ];
    for (what, tensors) in cases {
        let e = write_tensors(&path, &tensors, &BTreeMap::new()).expect_err(what);
        assert!(matches!(e, FormatError::InvalidOutput { .. }), "{what}: {e:?}");
        assert!(!e.is_bad_input());
        assert!(e.to_string().contains("out.safetensors"));
        assert!(!path.exists(), "{what}");
    }
    let e =
        write_tensors(dir.path().join("nodir/out.safetensors"), &[], &BTreeMap::new()).expect_err("no dir");
    assert!(matches!(e, FormatError::Io { .. }));
    assert!(!e.is_bad_input());
}

#[test]
fn output_bytes_are_deterministic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tensors = vec![("x".to_string(), vec![3], vec![1.0f32, 2.0, 3.0])];
    let meta: BTreeMap<String, String> = (0..12).map(|i| (format!("key{i}"), format!("value{i}"))).collect();
    let mut files = Vec::new();
    for i in 0..6 {
        let p = dir.path().join(format!("o{i}.safetensors"));
        write_tensors(&p, &tensors, &meta).expect("write");
        files.push(std::fs::read(&p).expect("read"));
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]), "equal inputs gave different bytes");
    let (n, _) = SafeTensors::read_metadata(&files[0]).expect("header");
    assert_eq!(n % 8, 0, "header not padded to 8 bytes");
}

#[test]
fn write_atomic_removes_stale_temps_of_the_same_target_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("checkpoint.safetensors");
    // A dead writer's (no process has a pid above pid_max), a live one's (this process,
    // another counter), another target's, and a name that only looks similar.
    let dead = dir.path().join(".checkpoint.safetensors.tmp.999999999.7");
    let live = dir.path().join(format!(".checkpoint.safetensors.tmp.{}.999999", std::process::id()));
    let other = dir.path().join(".metrics.jsonl.tmp.999999999.7");
    let odd = dir.path().join(".checkpoint.safetensors.tmp.notapid.7");
    for p in [&dead, &live, &other, &odd] {
        std::fs::write(p, b"x").expect("write");
    }
    metasched_formats::write_atomic(&target, b"new").expect("write");
    assert!(!dead.exists(), "a dead writer's temporary file is left");
    assert!(live.exists() && other.exists() && odd.exists());
    assert_eq!(std::fs::read(&target).expect("read"), b"new");
}
