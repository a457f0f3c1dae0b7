//! Every numeric flag of `meta-coord train` and `meta-worker` given NaN, inf, a negative,
//! zero and a huge value: each either works (where the value is fine) or exits 2 with one
//! line naming the flag, never panics, never stalls, and writes nothing into `--out` when
//! refused. Then the other cases: task files `metagrad` refuses, bad values from
//! `--config`, `run.toml` and a checkpoint, and stale temporary checkpoint files.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{finish, meta_coord, s, worker_bin};
use metasched_engine::{Activation, LossKind, SchedulerKind};
use metasched_formats::{FileKind, NamedTensor, write_safetensors};

/// The flags of a fast run (one meta-step of a tiny learner); a case replaces the value of a
/// flag it names.
const BASE: [(&str, &str); 8] = [
    ("--steps", "1"),
    ("--meta-batch", "2"),
    ("--layers", "1,8,1"),
    ("--hidden", "3"),
    ("--eval-every", "0"),
    ("--final-eval-tasks", "2"),
    ("--threads", "1"),
    ("--log-every", "1"),
];

const HUGE: &str = "18446744073709551615";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Exit 0.
    Works,
    /// Exit 2, one line naming the flag, nothing in `--out`.
    Refused,
}
use Expect::{Refused, Works};

/// Runs `meta-coord train --out OUT` with the base flags overridden by `args` (bounded in
/// time).
fn train(out: &Path, args: &[&str]) -> Output {
    let mut all: Vec<String> = vec!["train".into(), "--out".into(), s(out).into()];
    for (flag, value) in BASE {
        if !args.contains(&flag) {
            all.extend([flag.to_string(), value.to_string()]);
        }
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let child = meta_coord()
        .args(&all)
        .env_remove("METASCHED_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meta-coord starts");
    finish(child, Duration::from_secs(120))
}

/// Checks the refusal contract: exit 2, no panic, one line on stderr holding `needle`, and
/// `out` absent (or, for an existing run directory, as it was: `before`).
fn assert_refused(
    what: &str,
    o: &Output,
    needle: &str,
    out: &Path,
    before: Option<&BTreeMap<String, Vec<u8>>>,
) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    assert_eq!(o.status.code(), Some(2), "{what}: exit code {:?}, stderr: {stderr}", o.status.code());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line, got: {stderr}");
    assert!(stderr.contains(needle), "{what}: the message does not name `{needle}`: {stderr}");
    match before {
        None => assert!(!out.exists(), "{what} wrote into {} despite refusing", out.display()),
        Some(b) => assert_eq!(&snapshot(out), b, "{what} changed {} despite refusing", out.display()),
    }
}

/// Every file of a directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check(tmp: &Path, i: usize, flag: &str, value: &str, extra: &[&str], expect: Expect) {
    let out = tmp.join(format!("case-{i}"));
    let mut args = vec![flag, value];
    args.extend_from_slice(extra);
    let what = format!("train {}", args.join(" "));
    let o = train(&out, &args);
    match expect {
        Works => {
            common::assert_no_panic(&what, &o);
            assert_eq!(
                o.status.code(),
                Some(0),
                "{what}: expected to work, stderr: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Refused => assert_refused(&what, &o, flag, &out, None),
    }
}

/// `(flag, extra flags, [NaN, inf, -1, 0, huge] expectations)`.
type Row = (&'static str, &'static [&'static str], [Expect; 5]);

/// Every numeric flag of `meta-coord train`. Integer flags refuse NaN, inf and negatives at
/// parsing (naming the flag); `--steps` gets no huge value (a long run is legitimate).
const TABLE: [Row; 32] = [
    ("--shots", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--query", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--ways", &[], [Refused, Refused, Refused, Refused, Works]),
    ("--hidden", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--lr-min", &[], [Refused, Refused, Refused, Works, Refused]),
    ("--lr-max", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--lr-init", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--lr-fixed", &["--scheduler", "fixed"], [Refused, Refused, Refused, Works, Refused]),
    ("--inner-steps", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--meta-batch", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--meta-lr", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--clip-norm", &[], [Refused, Refused, Refused, Works, Works]),
    ("--seed", &[], [Refused, Refused, Refused, Works, Works]),
    ("--steps", &[], [Refused, Refused, Refused, Works, Works]),
    ("--workers", &[], [Refused, Refused, Refused, Works, Refused]),
    ("--threads", &[], [Refused, Refused, Refused, Works, Refused]),
    ("--eval-every", &[], [Refused, Refused, Refused, Works, Works]),
    ("--checkpoint-every", &[], [Refused, Refused, Refused, Works, Works]),
    ("--log-every", &[], [Refused, Refused, Refused, Refused, Works]),
    ("--eval-tasks", &["--eval-every", "1"], [Refused, Refused, Refused, Refused, Refused]),
    ("--final-eval-tasks", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--eval-query", &[], [Refused, Refused, Refused, Works, Refused]),
    ("--expect-workers", &[], [Refused, Refused, Refused, Works, Refused]),
    ("--spawn-workers", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--worker-timeout", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--heartbeat-timeout", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--step-deadline", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--layers", &[], [Refused, Refused, Refused, Refused, Refused]),
    ("--momentum", &["--inner-optimizer", "momentum"], [Refused, Refused, Refused, Works, Refused]),
    ("--adam-beta1", &["--inner-optimizer", "adam"], [Refused, Refused, Refused, Works, Refused]),
    ("--adam-beta2", &["--inner-optimizer", "adam"], [Refused, Refused, Refused, Works, Refused]),
    ("--adam-eps", &["--inner-optimizer", "adam"], [Refused, Refused, Refused, Refused, Refused]),
];

/// The value of a column for a flag: floats get `1e30` as the huge value, integers
/// `u64::MAX`; `--steps` a short run instead; `--layers` a list.
fn value(flag: &str, column: usize) -> String {
    let float = matches!(
        flag,
        "--lr-min"
            | "--lr-max"
            | "--lr-init"
            | "--lr-fixed"
            | "--meta-lr"
            | "--momentum"
            | "--adam-beta1"
            | "--adam-beta2"
            | "--adam-eps"
            | "--clip-norm"
            | "--worker-timeout"
            | "--heartbeat-timeout"
            | "--step-deadline"
    );
    let v = match column {
        0 => "NaN",
        1 => "inf",
        2 => "-1",
        3 => "0",
        _ if flag == "--steps" => "2",
        _ if float => "1e30",
        _ => HUGE,
    };
    if flag == "--layers" {
        return match column {
            4 => "1,100000,100000,1".into(),
            _ => format!("1,{v},1"),
        };
    }
    v.to_string()
}

#[test]
fn every_numeric_train_flag_works_or_is_refused_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut i = 0;
    for (flag, extra, expect) in TABLE {
        for (column, e) in expect.into_iter().enumerate() {
            check(tmp.path(), i, flag, &value(flag, column), extra, e);
            i += 1;
        }
    }
    // The `--flag=-1` spelling and the reported breakages' exact values.
    for (flag, v) in [
        ("--lr-fixed", "=-1"),
        ("--meta-batch", "1000000000"),
        ("--hidden", "100000"),
        ("--shots", "100000000"),
        ("--eval-query", "1000000000"),
        ("--final-eval-tasks", "1000000000000"),
        ("--threads", "100000"),
        ("--meta-batch", "1e9"),
    ] {
        let out = tmp.path().join(format!("case-{i}"));
        i += 1;
        let arg = if let Some(v) = v.strip_prefix('=') {
            vec![format!("{flag}={v}")]
        } else {
            vec![flag.into(), v.into()]
        };
        let args: Vec<&str> = arg.iter().map(String::as_str).collect();
        let o = train(&out, &args);
        assert_refused(&format!("train {}", args.join(" ")), &o, flag, &out, None);
    }
}

#[test]
fn listen_addresses_and_tokens_are_checked_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let token = tmp.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").expect("token");
    for (i, addr) in ["not-an-address", "99999", "127.0.0.1:99999", ":70000"].into_iter().enumerate() {
        let out = tmp.path().join(format!("listen-{i}"));
        let o = train(&out, &["--listen", addr, "--token-file", s(&token)]);
        assert_refused(&format!("--listen {addr}"), &o, "--listen", &out, None);
    }
    let out = tmp.path().join("no-token");
    let o = train(&out, &["--listen", "127.0.0.1:0"]);
    assert_refused("--listen without a token", &o, "--listen", &out, None);
}

/// `meta-worker` with `args` (bounded in time).
fn worker(args: &[&str]) -> Output {
    let child = std::process::Command::new(worker_bin())
        .args(args)
        .env("METASCHED_TOKEN", "0123456789abcdef0123456789abcdef")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meta-worker starts");
    finish(child, Duration::from_secs(60))
}

#[test]
fn every_numeric_worker_flag_works_or_is_refused_naming_it() {
    // Port 1 on loopback: nothing listens, so a worker that starts gives up quickly.
    let base = ["--coord", "127.0.0.1:1"];
    for (flag, values) in [
        ("--threads", ["NaN", "inf", "-1", HUGE, "100000"]),
        ("--give-up-after", ["NaN", "inf", "-1", "0", "1e30"]),
    ] {
        for v in values {
            let mut args = base.to_vec();
            args.extend([flag, v]);
            if flag == "--threads" {
                args.extend(["--give-up-after", "0.2"]);
            }
            let o = worker(&args);
            let what = format!("meta-worker {}", args.join(" "));
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
            assert_eq!(o.status.code(), Some(2), "{what}: exit {:?}, stderr: {stderr}", o.status.code());
            assert_eq!(stderr.lines().count(), 1, "{what}: expected one line: {stderr}");
            assert!(stderr.contains(flag), "{what}: does not name {flag}: {stderr}");
        }
    }
    // Values that are fine: the worker starts, finds no coordinator and gives up (exit 1).
    for args in
        [["--threads", "0", "--give-up-after", "0.2"], ["--threads", "1024", "--give-up-after", "0.2"]]
    {
        let mut all = base.to_vec();
        all.extend(args);
        let o = worker(&all);
        common::assert_no_panic("meta-worker", &o);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A task file of `b` tasks of `k` support and `q` query points for a 1-8-1 learner.
fn task_file(path: &Path, b: usize, k: usize, q: usize, seed: u64) {
    let config = common::config(&[1, 8, 1], Activation::Relu, LossKind::Mse, SchedulerKind::Lstm, false);
    metasched_formats::write_task_batch(path, &common::random_batch(&config, b, k, q, seed))
        .expect("write tasks");
}

#[test]
fn task_directories_that_metagrad_refuses_are_refused_by_train_with_nothing_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).expect("dir");
        d
    };
    let good = dir("good");
    task_file(&good.join("a.safetensors"), 4, 5, 6, 1);
    let base = |d: &Path| format!("file:{}", s(d));
    let mut cases: Vec<(String, Vec<String>, &str)> = Vec::new();
    // NaN data.
    let nan = dir("nan");
    let b = common::random_batch(
        &common::config(&[1, 8, 1], Activation::Relu, LossKind::Mse, SchedulerKind::Lstm, false),
        4,
        5,
        6,
        2,
    );
    let mut sx = b.support_x.clone();
    sx[1] = f32::NAN;
    let ys = |t: &metasched_engine::Targets<f32>| match t {
        metasched_engine::Targets::Values(v) => v.clone(),
        metasched_engine::Targets::Labels(_) => unreachable!("mse"),
    };
    let (sy, qy) = (ys(&b.support_y), ys(&b.query_y));
    write_safetensors(
        nan.join("a.safetensors"),
        FileKind::TaskFile,
        &[
            NamedTensor::f32("support.x", vec![4, 5, 1], &sx),
            NamedTensor::f32("support.y", vec![4, 5, 1], &sy),
            NamedTensor::f32("query.x", vec![4, 6, 1], &b.query_x),
            NamedTensor::f32("query.y", vec![4, 6, 1], &qy),
        ],
        &BTreeMap::new(),
    )
    .expect("write");
    cases.push((base(&nan), vec![], "support.x"));
    // F64 data.
    let f64_dir = dir("f64");
    // safetensors by hand: 8-byte header length, JSON header, little-endian F64 data.
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape, values) in [
        ("support.x", [4, 5, 1], &b.support_x),
        ("support.y", [4, 5, 1], &sy),
        ("query.x", [4, 6, 1], &b.query_x),
        ("query.y", [4, 6, 1], &qy),
    ] {
        let start = data.len();
        for v in values.iter() {
            data.extend_from_slice(&f64::from(*v).to_le_bytes());
        }
        header.insert(
            name.into(),
            serde_json::json!({"dtype": "F64", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    std::fs::write(f64_dir.join("a.safetensors"), bytes).expect("write");
    cases.push((base(&f64_dir), vec![], "a.safetensors"));
    // Not safetensors, empty file, empty directory.
    let text = dir("text");
    std::fs::write(text.join("a.safetensors"), "not a safetensors file\n").expect("write");
    cases.push((base(&text), vec![], "a.safetensors"));
    let empty_file = dir("empty-file");
    std::fs::write(empty_file.join("a.safetensors"), b"").expect("write");
    cases.push((base(&empty_file), vec![], "a.safetensors"));
    let empty = dir("empty");
    cases.push((base(&empty), vec![], "empty"));
    // Mixed B across files.
    let mixed = dir("mixed");
    task_file(&mixed.join("a.safetensors"), 4, 5, 6, 3);
    task_file(&mixed.join("b.safetensors"), 3, 5, 6, 4);
    cases.push((base(&mixed), vec![], "b.safetensors"));
    // A meta-batch above the files' B, K and Q other than the files', a wrong learner.
    cases.push((base(&good), vec!["--meta-batch".into(), "5".into()], "--meta-batch"));
    cases.push((base(&good), vec!["--shots".into(), "10".into()], "--shots"));
    cases.push((base(&good), vec!["--query".into(), "3".into()], "--query"));
    cases.push((base(&good), vec!["--eval-query".into(), "100".into()], "--eval-query"));
    cases.push((base(&good), vec!["--layers".into(), "2,8,1".into()], "2"));
    cases.push(("file:/nonexistent/metasched".into(), vec![], "/nonexistent/metasched"));
    for (i, (task, extra, needle)) in cases.iter().enumerate() {
        let out = tmp.path().join(format!("out-{i}"));
        let mut args: Vec<&str> = vec!["--task", task];
        args.extend(extra.iter().map(String::as_str));
        let o = train(&out, &args);
        assert_refused(&format!("train {}", args.join(" ")), &o, needle, &out, None);
    }
    // The files fix K and Q: a run that does not type them reports the files' values.
    let out = tmp.path().join("out-good");
    let g = base(&good);
    let o = train(&out, &["--task", &g]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("(5-shot, 6 query points)"), "{stdout}");
}

#[test]
fn digits_and_sinusoid_impossible_tasks_are_refused_with_nothing_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (args, needle)) in [
        (vec!["--task", "digits", "--layers", "64,8,11", "--ways", "11"], "ways"),
        (vec!["--task", "digits", "--layers", "64,8,5", "--shots", "500"], "shots"),
        (vec!["--layers", "2,40,1"], "sinusoid"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("out-{i}"));
        let o = train(&out, &args);
        assert_refused(&format!("train {}", args.join(" ")), &o, needle, &out, None);
    }
}

#[test]
fn bad_values_from_config_run_toml_and_checkpoint_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // --config.
    for (i, (line, needle)) in [
        ("meta_batch = 1000000000", "--meta-batch"),
        ("hidden = 100000", "--hidden"),
        ("lr_fixed = 1e30", "lr_fixed"),
        ("meta_lr = nan", "meta_lr"),
        ("threads = 100000", "--threads"),
        ("final_eval_tasks = 1000000000000", "--final-eval-tasks"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = tmp.path().join(format!("cfg-{i}.toml"));
        std::fs::write(&file, format!("{line}\n")).expect("write");
        let out = tmp.path().join(format!("cfg-out-{i}"));
        // No base flags: a flag would override the file's value.
        let child = meta_coord()
            .args(["train", "--config", s(&file), "--out", s(&out), "--steps", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("meta-coord starts");
        let o = finish(child, Duration::from_secs(120));
        assert_refused(&format!("--config with {line}"), &o, needle, &out, None);
    }
    // A run to resume.
    let run = tmp.path().join("run");
    let o = train(&run, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // run.toml with runtime values that cannot work.
    let original = std::fs::read_to_string(run.join("run.toml")).expect("run.toml");
    for (key, value, needle) in
        [("threads", "100000", "--threads"), ("final_eval_tasks", "1000000000000", "--final-eval-tasks")]
    {
        let edited: String =
            original
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} =")) {
                        format!("{key} = {value}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        std::fs::write(run.join("run.toml"), edited).expect("write");
        let before = snapshot(&run);
        let o = meta_coord().args(["train", "--resume", s(&run), "--steps", "2"]).output().expect("runs");
        assert_refused(&format!("run.toml {key} = {value}"), &o, needle, &run, Some(&before));
    }
    std::fs::write(run.join("run.toml"), &original).expect("write");
    // The checkpoint: a trajectory value that cannot fit, a negative second moment.
    let ckpt_path = run.join("checkpoint.safetensors");
    let pristine = std::fs::read(&ckpt_path).expect("read");
    let rewrite = |edit: &dyn Fn(&mut metasched_formats::Checkpoint)| {
        std::fs::write(&ckpt_path, &pristine).expect("restore");
        let mut ckpt = metasched_formats::read_checkpoint(&ckpt_path).expect("read");
        edit(&mut ckpt);
        metasched_formats::write_checkpoint(&ckpt_path, &ckpt).expect("write");
    };
    rewrite(&|c| c.config_json["train"]["config"]["meta_batch"] = serde_json::json!(1_000_000_000_u64));
    let before = snapshot(&run);
    let o = meta_coord().args(["train", "--resume", s(&run), "--steps", "2"]).output().expect("runs");
    assert_refused("checkpoint meta_batch 1e9", &o, "--meta-batch", &run, Some(&before));
    rewrite(&|c| {
        let (_, (_, v)) =
            c.extra_tensors.iter_mut().find(|(n, _)| n.starts_with("optim.adam.v.")).expect("adam v");
        v[0] = -1.0;
    });
    let before = snapshot(&run);
    let o = meta_coord().args(["train", "--resume", s(&run), "--steps", "2"]).output().expect("runs");
    assert_refused("checkpoint with a negative optim.adam.v", &o, "optim.adam.v", &run, Some(&before));
}

#[test]
fn stale_temporary_checkpoints_are_removed_on_resume_and_on_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    let o = train(&run, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // Left by a writer killed before its rename (no process has this pid: above pid_max).
    let stale = run.join(".checkpoint.safetensors.tmp.999999999.0");
    std::fs::write(&stale, b"half a checkpoint").expect("write");
    let other = run.join(".other.tmp.999999999.0");
    std::fs::write(&other, b"not ours").expect("write");
    let o = meta_coord().args(["train", "--resume", s(&run), "--steps", "2"]).output().expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stale.exists(), "the stale temporary checkpoint is still there");
    assert!(other.exists(), "another target's temporary file was removed");
    // The library write itself cleans the same target's stale files.
    let target = tmp.path().join("file.bin");
    let stale = tmp.path().join(".file.bin.tmp.999999999.3");
    std::fs::write(&stale, b"x").expect("write");
    metasched_formats::write_atomic(&target, b"data").expect("write");
    assert!(!stale.exists());
    assert_eq!(std::fs::read(&target).expect("read"), b"data");
}

#[test]
fn init_refuses_sizes_that_cannot_fit_and_rates_out_of_range() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (args, needle)) in [
        (vec!["--hidden", "100000"], "--hidden"),
        (vec!["--layers", "1,100000,100000,1"], "--layers"),
        (vec!["--scheduler", "fixed", "--lr-fixed", "1e30"], "--lr-fixed"),
        (vec!["--lr-max", "NaN"], "--lr-max"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("init-{i}.safetensors"));
        let mut all = vec!["init", "--out", s(&out)];
        all.extend(args.iter().copied());
        let o = common::run(&all);
        assert_refused(&format!("init {}", args.join(" ")), &o, needle, &out, None);
    }
}

#[test]
fn eval_and_metagrad_refuse_sizes_that_cannot_fit_and_too_many_threads() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt = tmp.path().join("c.safetensors");
    let o = common::run(&["init", "--out", s(&ckpt), "--layers", "1,8,1", "--hidden", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    for (i, (args, needle)) in [
        (vec!["--tasks", "1000000000000"], "--tasks"),
        (vec!["--tasks", "10", "--query", "100000000000"], "--query"),
        (vec!["--tasks", "10", "--threads", "100000"], "--threads"),
        (vec!["--tasks", "10", "--threads", HUGE], "--threads"),
    ]
    .into_iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("eval-{i}.safetensors"));
        let mut all = vec!["eval", "--checkpoint", s(&ckpt), "--task", "sinusoid", "--out", s(&out)];
        all.extend(args.iter().copied());
        let o = common::run(&all);
        assert_refused(&format!("eval {}", args.join(" ")), &o, needle, &out, None);
    }
    let out = tmp.path().join("e.safetensors");
    let o = common::run(&[
        "eval",
        "--checkpoint",
        s(&ckpt),
        "--task",
        "sinusoid",
        "--tasks",
        "3",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}
