//! The data side of the `train-mlp` family (spec §7.1): reproducible runs, epoch
//! permutations, class subsets, sinusoid functions, dataset files and their validation.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use metasched_engine::horizon::{Batch, RunData};
use metasched_engine::init::init_theta;
use metasched_engine::{Config, LossKind, Targets, TargetsRef};
use metasched_formats::{FileKind, NamedTensor, write_safetensors};
use metasched_tasks::train_mlp::{EpochPermutation, FILE_VAL_PERCENT};
use metasched_tasks::{
    Digits, FileDataset, OpenedDataset, RunContent, RunStream, Split, TaskError, TrainMlpData, TrainRun,
    run_seed,
};

fn config(layers: Vec<usize>, loss: LossKind) -> Config {
    let mut c = Config::sinusoid_default();
    c.model.layers = layers;
    c.model.loss = loss;
    c.inner.learn_init = false;
    c
}

fn digits_config(classes: usize) -> Config {
    config(vec![64, 32, classes], LossKind::CrossEntropy)
}

fn sin_config() -> Config {
    config(vec![1, 40, 40, 1], LossKind::Mse)
}

fn open(data: &TrainMlpData, c: &Config) -> OpenedDataset {
    OpenedDataset::open(data, c).expect("open dataset")
}

fn run<T: metasched_engine::Real>(
    d: &OpenedDataset,
    c: &Config,
    stream: RunStream,
    r: u64,
    b: usize,
) -> TrainRun<T> {
    TrainRun::open(d, c, 42, stream, r, b).expect("open run")
}

fn batch<T: metasched_engine::Real>(run: &TrainRun<T>, t: usize) -> Batch<T> {
    let mut out = run.empty_batch();
    run.fill_batch(t, &mut out);
    out
}

fn labels<'a>(y: &'a TargetsRef<'a, f32>) -> &'a [u32] {
    match y {
        TargetsRef::Labels(l) => l,
        TargetsRef::Values(_) => panic!("labels expected"),
    }
}

fn values<'a>(y: &'a TargetsRef<'a, f32>) -> &'a [f32] {
    match y {
        TargetsRef::Values(v) => v,
        TargetsRef::Labels(_) => panic!("values expected"),
    }
}

fn bits(b: &Batch<f32>) -> Vec<u32> {
    let mut v: Vec<u32> = b.x.iter().map(|x| x.to_bits()).collect();
    match &b.y {
        Targets::Values(y) => v.extend(y.iter().map(|x| x.to_bits())),
        Targets::Labels(l) => v.extend(l),
    }
    v
}

#[test]
fn runs_are_pure_functions_of_seed_stream_run_and_step() {
    let c = digits_config(5);
    let d = open(&TrainMlpData::Digits { classes: 5 }, &c);
    let a = run::<f32>(&d, &c, RunStream::Train, 3, 32);
    let again = run::<f32>(&open(&TrainMlpData::Digits { classes: 5 }, &c), &c, RunStream::Train, 3, 32);
    for t in [0, 1, 17, 9_999] {
        assert_eq!(bits(&batch(&a, t)), bits(&batch(&again, t)), "step {t}");
    }
    // Filling out of order, or twice, gives the same bits (no hidden state).
    let b5 = bits(&batch(&a, 5));
    let _ = batch(&a, 100);
    assert_eq!(bits(&batch(&a, 5)), b5);
    assert_ne!(bits(&batch(&a, 5)), bits(&batch(&a, 6)));
    // Other runs, streams and seeds differ.
    for other in [
        run::<f32>(&d, &c, RunStream::Train, 4, 32),
        run::<f32>(&d, &c, RunStream::Tune, 3, 32),
        run::<f32>(&d, &c, RunStream::Test, 3, 32),
        TrainRun::open(&d, &c, 43, RunStream::Train, 3, 32).expect("open"),
    ] {
        assert_ne!(other.run_seed(), a.run_seed());
        assert_ne!(bits(&batch(&other, 0)), bits(&batch(&a, 0)));
    }
    assert_eq!(a.run_seed(), run_seed(42, RunStream::Train, 3));
    assert_eq!((a.seed(), a.stream(), a.run(), a.batch()), (42, RunStream::Train, 3, 32));
}

/// Every window of `n` consecutive stream positions (an epoch) is a permutation.
fn check_epochs<T: metasched_engine::Real>(r: &TrainRun<T>, steps: usize) {
    let n = r.n_train();
    let stream: Vec<usize> = (0..steps).flat_map(|t| r.batch_indices(t)).collect();
    for (e, epoch) in stream.chunks(n).enumerate() {
        let distinct: HashSet<usize> = epoch.iter().copied().collect();
        assert_eq!(distinct.len(), epoch.len(), "repeat within epoch {e}");
        if epoch.len() == n {
            assert!(epoch.iter().all(|&i| i < n));
        }
        let p = EpochPermutation::new(r.run_seed(), e as u64, n);
        assert!(epoch.iter().enumerate().all(|(j, &i)| p.apply(j) == i));
    }
}

#[test]
fn epochs_visit_every_training_point_once() {
    let c = sin_config();
    let d = open(&TrainMlpData::Sinusoid { train_points: 120, val_points: 30 }, &c);
    // b divides n: each epoch is exactly 12 whole minibatches holding every point once.
    let r = run::<f32>(&d, &c, RunStream::Train, 0, 10);
    for e in 0..5 {
        let mut xs: Vec<u32> =
            (e * 12..(e + 1) * 12).flat_map(|t| batch(&r, t).x).map(f32::to_bits).collect();
        let mut all: Vec<u32> = r.train_set().x.iter().map(|x| x.to_bits()).collect();
        xs.sort_unstable();
        all.sort_unstable();
        assert_eq!(xs, all, "epoch {e}");
    }
    check_epochs(&r, 60);
    // b does not divide n: minibatches straddle epochs, still no repeat within one.
    check_epochs(&run::<f32>(&d, &c, RunStream::Train, 1, 7), 100);
    check_epochs(&run::<f32>(&d, &c, RunStream::Train, 1, 120), 4);
    // Epochs are shuffled differently.
    let r = run::<f32>(&d, &c, RunStream::Train, 2, 120);
    assert_ne!(r.batch_indices(0), r.batch_indices(1));
}

#[test]
fn minibatches_are_rows_of_the_training_split() {
    let c = digits_config(4);
    let d = open(&TrainMlpData::Digits { classes: 4 }, &c);
    let r = run::<f32>(&d, &c, RunStream::Test, 9, 50);
    let train = r.train_set();
    for t in [0, 3, 1000] {
        let b = batch(&r, t);
        assert_eq!(b.n, 50);
        assert_eq!((b.x.len(), r.batch_indices(t).len()), (50 * 64, 50));
        let Targets::Labels(l) = &b.y else { panic!("labels") };
        for (p, &i) in r.batch_indices(t).iter().enumerate() {
            assert_eq!(&b.x[p * 64..(p + 1) * 64], &train.x[i * 64..(i + 1) * 64]);
            assert_eq!(l[p], labels(&train.y)[i]);
        }
    }
}

#[test]
fn digits_runs_draw_a_class_subset_under_a_random_labelling() {
    let digits = Digits::load().expect("digits");
    let image_of: HashMap<Vec<u32>, usize> =
        (0..digits.len()).map(|i| (digits.image(i).iter().map(|v| v.to_bits()).collect(), i)).collect();
    let train_pool: HashSet<usize> =
        (0..10).flat_map(|c| digits.pool(Split::Train, c).iter().map(|&i| i as usize)).collect();
    let c = digits_config(3);
    let d = open(&TrainMlpData::Digits { classes: 3 }, &c);
    let mut subsets = HashSet::new();
    let mut first_digit = [0usize; 10];
    for r in 0..300 {
        let run = run::<f32>(&d, &c, RunStream::Train, r, 8);
        let RunContent::Digits { classes } = run.content().clone() else { panic!("digits content") };
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.iter().collect::<HashSet<_>>().len(), 3);
        first_digit[classes[0]] += 1;
        let mut sorted = classes.clone();
        sorted.sort_unstable();
        subsets.insert(sorted);
        if r < 5 {
            let mut seen = HashSet::new();
            for (which, set) in [("train", run.train_set()), ("val", run.validation())] {
                assert!(set.n > 0);
                for (p, &l) in labels(&set.y).iter().enumerate() {
                    let row: Vec<u32> = set.x[p * 64..(p + 1) * 64].iter().map(|v| v.to_bits()).collect();
                    let img = image_of[&row];
                    assert_eq!(digits.label(img) as usize, classes[l as usize], "{which}");
                    assert!(train_pool.contains(&img), "{which}: only meta-train images");
                    assert!(seen.insert(img), "train and val disjoint");
                }
            }
            assert!(run.n_train() > 3 * run.n_val());
        }
    }
    // 300 runs over C(10,3) = 120 subsets; the first label's digit is uniform.
    assert!(subsets.len() > 80, "{}", subsets.len());
    assert!(first_digit.iter().all(|&n| (10..60).contains(&n)), "{first_digit:?}");
    // All ten classes: every digit, in a random order.
    let c = digits_config(10);
    let d = open(&TrainMlpData::digits_default(), &c);
    let orders: HashSet<Vec<usize>> = (0..20)
        .map(|r| {
            let RunContent::Digits { classes } = run::<f32>(&d, &c, RunStream::Train, r, 8).content().clone()
            else {
                panic!("digits")
            };
            let mut s = classes.clone();
            s.sort_unstable();
            assert_eq!(s, (0..10).collect::<Vec<_>>());
            classes
        })
        .collect();
    assert!(orders.len() > 15);
    // Every run has the same held-out images for the same classes: the split is fixed.
    let a = run::<f32>(&d, &c, RunStream::Train, 0, 8);
    let b = run::<f32>(&d, &c, RunStream::Test, 0, 8);
    let rows = |s: metasched_engine::SetRef<'_, f32>| -> HashSet<Vec<u32>> {
        s.x.chunks(64).map(|r| r.iter().map(|v| v.to_bits()).collect()).collect()
    };
    assert_eq!(rows(a.validation()), rows(b.validation()));
    assert_eq!(rows(a.train_set()), rows(b.train_set()));
}

#[test]
fn sinusoid_runs_have_their_own_function() {
    let c = sin_config();
    let d = open(&TrainMlpData::sinusoid_default(), &c);
    let mut amplitudes = HashSet::new();
    for r in 0..20 {
        let run = run::<f32>(&d, &c, RunStream::Train, r, 64);
        assert_eq!((run.n_train(), run.n_val()), (1000, 200));
        let RunContent::Sinusoid { amplitude, phase } = *run.content() else { panic!("sinusoid") };
        assert!((0.1..5.0).contains(&amplitude) && (0.0..std::f64::consts::PI).contains(&phase));
        amplitudes.insert(amplitude.to_bits());
        for set in [run.train_set(), run.validation()] {
            for (&x, &y) in set.x.iter().zip(values(&set.y)) {
                assert!((-5.0..5.0).contains(&x));
                let want = amplitude * (f64::from(x) - phase).sin();
                assert!((f64::from(y) - want).abs() < 1e-5, "{y} vs {want}");
            }
        }
        assert_ne!(run.train_set().x[..200], run.validation().x[..]);
    }
    assert_eq!(amplitudes.len(), 20);
}

#[test]
fn fill_batch_reuses_its_buffers() {
    for (data, c) in [
        (TrainMlpData::Digits { classes: 6 }, digits_config(6)),
        (TrainMlpData::sinusoid_default(), sin_config()),
    ] {
        let d = open(&data, &c);
        let r = run::<f32>(&d, &c, RunStream::Train, 1, 33);
        let mut out = r.empty_batch();
        r.fill_batch(0, &mut out);
        let ptr = out.x.as_ptr();
        let cap = out.x.capacity();
        let ycap = match &out.y {
            Targets::Values(v) => (v.as_ptr() as usize, v.capacity()),
            Targets::Labels(l) => (l.as_ptr() as usize, l.capacity()),
        };
        for t in 1..500 {
            r.fill_batch(t, &mut out);
            assert_eq!((out.x.as_ptr(), out.x.capacity()), (ptr, cap));
            let now = match &out.y {
                Targets::Values(v) => (v.as_ptr() as usize, v.capacity()),
                Targets::Labels(l) => (l.as_ptr() as usize, l.capacity()),
            };
            assert_eq!(now, ycap);
        }
        // A fresh buffer of the wrong kind, or too small, is fixed up on the first fill.
        let mut wrong = Batch::<f32>::empty(!matches!(out.y, Targets::Labels(_)));
        r.fill_batch(7, &mut wrong);
        assert_eq!(wrong, batch(&r, 7));
    }
}

#[test]
fn f64_runs_hold_the_f32_values() {
    for (data, c) in [
        (TrainMlpData::Digits { classes: 2 }, digits_config(2)),
        (TrainMlpData::Sinusoid { train_points: 50, val_points: 9 }, sin_config()),
    ] {
        let d = open(&data, &c);
        let a = run::<f32>(&d, &c, RunStream::Tune, 5, 16);
        let b = run::<f64>(&d, &c, RunStream::Tune, 5, 16);
        let widen = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        for t in [0, 11] {
            let (fa, fb) = (batch(&a, t), batch(&b, t));
            assert_eq!(widen(&fa.x), fb.x);
            match (&fa.y, &fb.y) {
                (Targets::Values(x), Targets::Values(y)) => assert_eq!(&widen(x), y),
                (Targets::Labels(x), Targets::Labels(y)) => assert_eq!(x, y),
                _ => panic!("kinds differ"),
            }
        }
        assert_eq!(widen(a.validation().x), b.validation().x);
        assert_eq!(widen(a.train_set().x), b.train_set().x);
        assert_eq!(widen(&a.learner_init()), b.learner_init());
    }
}

#[test]
fn learner_init_is_pytorch_default_from_the_run_seed() {
    let c = digits_config(10);
    let d = open(&TrainMlpData::digits_default(), &c);
    let a = run::<f32>(&d, &c, RunStream::Train, 0, 8);
    let b = run::<f32>(&d, &c, RunStream::Train, 1, 8);
    assert_eq!(a.learner_init(), init_theta(&c, a.run_seed()));
    assert_eq!(a.learner_init().len(), 64 * 32 + 32 + 32 * 10 + 10);
    assert_ne!(a.learner_init(), b.learner_init());
    let bound = 1.0 / 8.0; // first layer: 1/sqrt(64)
    assert!(a.learner_init()[..64 * 32].iter().all(|w| w.abs() <= bound));
}

#[test]
fn the_description_crosses_the_wire() {
    for d in [
        TrainMlpData::Digits { classes: 7 },
        TrainMlpData::sinusoid_default(),
        TrainMlpData::File { path: PathBuf::from("data/set.safetensors") },
    ] {
        let bytes = bincode::serde::encode_to_vec(&d, bincode::config::standard()).expect("encode");
        let (back, used): (TrainMlpData, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decode");
        assert_eq!((back, used), (d, bytes.len()));
    }
}

// ---- dataset files ----

enum Data {
    F(Vec<usize>, Vec<f32>),
    I(Vec<usize>, Vec<i64>),
}

fn write(path: &Path, tensors: &[(&str, Data)]) {
    let named: Vec<NamedTensor<'_>> = tensors
        .iter()
        .map(|(name, d)| match d {
            Data::F(s, v) => NamedTensor::f32(*name, s.clone(), v),
            Data::I(s, v) => NamedTensor::i64(*name, s.clone(), v),
        })
        .collect();
    write_safetensors(path, FileKind::Output, &named, &Default::default()).expect("write dataset");
}

fn xs(n: usize, d: usize) -> Data {
    Data::F(vec![n, d], (0..n * d).map(|i| i as f32 * 0.5).collect())
}

fn ys(n: usize, d: usize) -> Data {
    Data::F(vec![n, d], (0..n * d).map(|i| -(i as f32)).collect())
}

fn ls(n: usize, classes: i64) -> Data {
    Data::I(vec![n], (0..n as i64).map(|i| i % classes).collect())
}

fn mse3() -> Config {
    config(vec![3, 8, 2], LossKind::Mse)
}

fn ce3() -> Config {
    config(vec![3, 8, 4], LossKind::CrossEntropy)
}

fn file_data(path: &Path) -> TrainMlpData {
    TrainMlpData::File { path: path.to_path_buf() }
}

#[test]
fn a_file_without_val_holds_out_a_fixed_fifth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reg.safetensors");
    write(&path, &[("x", xs(50, 3)), ("y", ys(50, 2))]);
    let c = mse3();
    let d = open(&file_data(&path), &c);
    let f = d.file().expect("file");
    assert_eq!((f.n_train(), f.n_val(), f.explicit_val(), f.d_in(), f.d_out()), (40, 10, false, 3, 2));
    assert_eq!(50 * FILE_VAL_PERCENT / 100, 10);
    let (train_rows, val_rows) = FileDataset::split_rows(50);
    let a = run::<f32>(&d, &c, RunStream::Train, 0, 8);
    let b = run::<f32>(&d, &c, RunStream::Test, 7, 8);
    for (set, rows) in [(a.train_set(), &train_rows), (a.validation(), &val_rows)] {
        assert_eq!(set.n, rows.len());
        for (p, &r) in rows.iter().enumerate() {
            assert_eq!(set.x[p * 3], (r * 3) as f32 * 0.5);
            assert_eq!(values(&set.y)[p * 2 + 1], -((r * 2 + 1) as f32));
        }
    }
    // Every run holds out the same rows; runs differ by data order and init only.
    assert_eq!(a.validation().x, b.validation().x);
    assert_eq!(*a.content(), RunContent::File);
    assert_ne!(a.batch_indices(0), b.batch_indices(0));
    assert_ne!(a.learner_init(), b.learner_init());
    // The file is read once: runs share its sets.
    assert!(std::ptr::eq(a.train_set().x.as_ptr(), b.train_set().x.as_ptr()));
    check_epochs(&a, 30);
    // Two rows: one held out.
    write(&path, &[("x", xs(2, 3)), ("y", ys(2, 2))]);
    let f = FileDataset::read(&path, &c).expect("read");
    assert_eq!((f.n_train(), f.n_val()), (1, 1));
}

#[test]
fn a_file_with_val_and_labels_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cls.safetensors");
    write(&path, &[("x", xs(30, 3)), ("labels", ls(30, 4)), ("val.x", xs(6, 3)), ("val.labels", ls(6, 4))]);
    let c = ce3();
    let d = open(&file_data(&path), &c);
    assert_eq!((d.d_in(), d.d_out(), d.loss()), (3, 4, LossKind::CrossEntropy));
    let r = run::<f64>(&d, &c, RunStream::Train, 0, 30);
    assert_eq!((r.n_train(), r.n_val()), (30, 6));
    assert!(d.file().expect("file").explicit_val());
    let TargetsRef::Labels(l) = r.validation().y else { panic!("labels") };
    assert_eq!(l, &[0, 1, 2, 3, 0, 1]);
    // b = n: each minibatch is a whole epoch, shuffled.
    let b = batch(&r, 0);
    let Targets::Labels(bl) = &b.y else { panic!("labels") };
    let mut sorted = bl.clone();
    sorted.sort_unstable();
    let mut all: Vec<u32> = (0..30).map(|i| i % 4).collect();
    all.sort_unstable();
    assert_eq!(sorted, all);
}

/// Opening the dataset (or, with `batch`, a run of it) fails with a bad-input error whose
/// message contains every one of `want`.
fn refused(tensors: &[(&str, Data)], c: &Config, want: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.safetensors");
    write(&path, tensors);
    let e = OpenedDataset::open(&file_data(&path), c).expect_err("must be refused");
    check(&e, want);
    assert!(e.to_string().contains("bad.safetensors") || want.contains(&"model.loss"), "{e}");
}

fn check(e: &TaskError, want: &[&str]) {
    let m = e.to_string();
    eprintln!("MSG {m}");
    assert!(e.is_bad_input(), "{m}");
    assert!(!m.contains('\n'), "{m}");
    for w in want {
        assert!(m.contains(w), "`{w}` not in: {m}");
    }
}

#[test]
fn every_bad_dataset_file_is_refused_naming_the_tensor() {
    let (m, c) = (mse3(), ce3());
    let nan = |at: usize| {
        let mut v: Vec<f32> = (0..30).map(|i| i as f32).collect();
        v[at] = f32::NAN;
        Data::F(vec![10, 3], v)
    };
    refused(&[("y", ys(10, 2))], &m, &["`x`", "missing"]);
    refused(&[("x", Data::I(vec![10, 3], vec![0; 30])), ("y", ys(10, 2))], &m, &["`x`", "dtype"]);
    refused(&[("x", Data::F(vec![30], vec![0.0; 30])), ("y", ys(10, 2))], &m, &["`x`", "rank"]);
    refused(&[("x", xs(10, 3)), ("y", Data::F(vec![20], vec![0.0; 20]))], &m, &["`y`", "rank"]);
    refused(&[("x", xs(10, 3)), ("y", ys(9, 2))], &m, &["`y`", "9 rows", "`x` has 10"]);
    refused(&[("x", xs(10, 3)), ("labels", ls(11, 4))], &c, &["`labels`", "11 rows"]);
    refused(&[("x", xs(10, 3)), ("labels", Data::I(vec![10, 1], vec![0; 10]))], &c, &["`labels`", "rank"]);
    refused(&[("x", xs(10, 3)), ("labels", Data::F(vec![10], vec![0.0; 10]))], &c, &["`labels`", "dtype"]);
    refused(&[("x", nan(7)), ("y", ys(10, 2))], &m, &["`x`", "NaN", "row 2, column 1"]);
    let mut inf = vec![0.0f32; 12];
    inf[5] = f32::INFINITY;
    refused(
        &[("x", xs(10, 3)), ("y", ys(10, 2)), ("val.x", xs(6, 3)), ("val.y", Data::F(vec![6, 2], inf))],
        &m,
        &["`val.y`", "inf", "row 2, column 1"],
    );
    refused(&[("x", xs(10, 3)), ("labels", ls(10, 5))], &c, &["`labels`", "label 4", "0..4"]);
    refused(&[("x", xs(10, 3)), ("labels", Data::I(vec![10], vec![-1; 10]))], &c, &["`labels`", "-1"]);
    refused(
        &[("x", xs(10, 3)), ("labels", ls(10, 4)), ("val.x", xs(6, 3)), ("val.labels", ls(6, 9))],
        &c,
        &["`val.labels`", "0..4"],
    );
    refused(&[("x", xs(10, 2)), ("y", ys(10, 2))], &m, &["`x`", "model.layers", "2 columns"]);
    refused(&[("x", xs(10, 3)), ("y", ys(10, 5))], &m, &["`y`", "model.layers", "5 columns"]);
    refused(
        &[("x", xs(10, 3)), ("y", ys(10, 2)), ("val.x", xs(4, 4)), ("val.y", ys(4, 2))],
        &m,
        &["`val.x`"],
    );
    refused(&[("x", xs(10, 3)), ("labels", ls(10, 4))], &m, &["model.loss", "cross_entropy"]);
    refused(&[("x", xs(10, 3)), ("y", ys(10, 4))], &c, &["model.loss", "mse"]);
    refused(&[("x", xs(0, 3)), ("y", ys(0, 2))], &m, &["`x`", "empty"]);
    refused(
        &[("x", xs(10, 3)), ("y", ys(10, 2)), ("val.x", xs(0, 3)), ("val.y", ys(0, 2))],
        &m,
        &["`val.x`", "empty"],
    );
    refused(&[("x", xs(1, 3)), ("y", ys(1, 2))], &m, &["`x`", "1 row", "val.x"]);
    refused(&[("x", xs(10, 3)), ("y", ys(10, 2)), ("val.x", xs(3, 3))], &m, &["`val.y`", "missing"]);
    refused(&[("x", xs(10, 3)), ("y", ys(10, 2)), ("val.y", ys(3, 2))], &m, &["`val.x`", "missing"]);
    refused(&[("x", xs(10, 3)), ("y", ys(10, 2)), ("labels", ls(10, 2))], &m, &["`labels`", "`y`"]);
    refused(&[("x", xs(10, 3))], &m, &["`y`", "missing", "labels"]);
    refused(&[("x", xs(10, 3)), ("y", ys(10, 2)), ("val_x", xs(3, 3))], &m, &["`val_x`", "unknown"]);
    refused(
        &[("x", xs(10, 3)), ("y", ys(10, 2)), ("val.x", xs(3, 3)), ("val.labels", ls(3, 2))],
        &m,
        &["`val.labels`", "`val.y`"],
    );
    // Not a dataset file at all, or no file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.safetensors");
    std::fs::write(&path, b"garbage").expect("write");
    check(
        &OpenedDataset::open(&file_data(&path), &m).expect_err("garbage"),
        &["dataset file", "garbage.safetensors"],
    );
    let gone = dir.path().join("gone.safetensors");
    check(&OpenedDataset::open(&file_data(&gone), &m).expect_err("missing"), &["gone.safetensors"]);
}

#[test]
fn bad_parameters_and_configs_are_refused_naming_them() {
    let e = |data: TrainMlpData, c: &Config| OpenedDataset::open(&data, c).expect_err("must fail");
    check(&e(TrainMlpData::Digits { classes: 1 }, &digits_config(1)), &["`classes` = 1", "2..=10"]);
    check(&e(TrainMlpData::Digits { classes: 11 }, &digits_config(11)), &["`classes` = 11"]);
    check(&e(TrainMlpData::Digits { classes: 5 }, &digits_config(10)), &["model.layers", "output width 5"]);
    check(
        &e(TrainMlpData::Digits { classes: 5 }, &config(vec![63, 5], LossKind::CrossEntropy)),
        &["model.layers"],
    );
    check(&e(TrainMlpData::Digits { classes: 5 }, &config(vec![64, 5], LossKind::Mse)), &["model.loss"]);
    check(&e(TrainMlpData::sinusoid_default(), &digits_config(10)), &["model.loss"]);
    check(&e(TrainMlpData::sinusoid_default(), &config(vec![1, 8, 2], LossKind::Mse)), &["model.layers"]);
    for (t, v, name) in [(0, 5, "`train_points` = 0"), (5, 0, "`val_points` = 0")] {
        check(&e(TrainMlpData::Sinusoid { train_points: t, val_points: v }, &sin_config()), &[name]);
    }
    // Batch size against the run's training split.
    let c = sin_config();
    let d = open(&TrainMlpData::Sinusoid { train_points: 20, val_points: 5 }, &c);
    assert!(TrainRun::<f32>::open(&d, &c, 0, RunStream::Train, 0, 20).is_ok());
    for b in [0, 21] {
        let err = TrainRun::<f32>::open(&d, &c, 0, RunStream::Train, 0, b).expect_err("batch");
        check(&err, &["`batch`", "1..=20"]);
    }
    // A run checks its own config against the dataset too.
    let err = TrainRun::<f32>::open(&d, &digits_config(3), 0, RunStream::Train, 0, 4).expect_err("config");
    check(&err, &["model.loss"]);
}

// ---- spec §7.1, reimplemented from its text ----

fn spec_mix(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xBF58476D1CE4E5B9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

const GAMMA: u64 = 0x9E3779B97F4A7C15;

struct SpecStream {
    key: u64,
    i: u64,
}

impl SpecStream {
    fn new(seed: u64, ids: &[u64]) -> Self {
        let mut key = spec_mix(seed ^ 0x6D65746173636864);
        for &id in ids {
            key = spec_mix(key ^ spec_mix(id.wrapping_add(GAMMA)));
        }
        Self { key, i: 0 }
    }
    fn next(&mut self) -> u64 {
        self.i += 1;
        spec_mix(self.key.wrapping_add(self.i.wrapping_mul(GAMMA)))
    }
    fn uniform_in(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * ((self.next() >> 11) as f64 * 2f64.powi(-53))
    }
    fn below(&mut self, n: u64) -> u64 {
        loop {
            let u = self.next();
            if u < u64::MAX - u64::MAX % n {
                return u % n;
            }
        }
    }
}

fn spec_perm(rho: u64, e: u64, n: u64, j: u64) -> u64 {
    let mut k = 2;
    while (1u64 << k) < n {
        k += 2;
    }
    let (h, mask) = (k / 2, (1u64 << (k / 2)) - 1);
    let mut s = SpecStream::new(rho, &[2, e]);
    let keys: Vec<u64> = (0..4).map(|_| s.next()).collect();
    let enc = |x: u64| {
        let (mut l, mut r) = (x >> h, x & mask);
        for &key in &keys {
            (l, r) = (r, l ^ (spec_mix(r ^ key) & mask));
        }
        (l << h) | r
    };
    let mut x = enc(j);
    while x >= n {
        x = enc(x);
    }
    x
}

#[test]
fn the_spec_text_reproduces_runs() {
    let c = sin_config();
    let d = open(&TrainMlpData::Sinusoid { train_points: 37, val_points: 5 }, &c);
    let r = TrainRun::<f32>::open(&d, &c, 9, RunStream::Tune, 4, 10).expect("run");
    let rho = SpecStream::new(9, &[0x747261696E2D6D6C, 1, 4]).next();
    assert_eq!(r.run_seed(), rho);
    for t in [0, 3, 4, 250] {
        let want: Vec<usize> = (0..10u64)
            .map(|i| {
                let p = t as u64 * 10 + i;
                spec_perm(rho, p / 37, 37, p % 37) as usize
            })
            .collect();
        assert_eq!(r.batch_indices(t), want, "step {t}");
    }
    let mut s = SpecStream::new(rho, &[1]);
    let a = s.uniform_in(0.1, 5.0);
    let phase = s.uniform_in(0.0, std::f64::consts::PI);
    assert_eq!(*r.content(), RunContent::Sinusoid { amplitude: a, phase });
    let x0 = s.uniform_in(-5.0, 5.0);
    assert_eq!(r.train_set().x[0], x0 as f32);
    assert_eq!(values(&r.train_set().y)[0], (a * (x0 - phase).sin()) as f32);
    // Digits labels.
    let c = digits_config(4);
    let d = open(&TrainMlpData::Digits { classes: 4 }, &c);
    let r = TrainRun::<f32>::open(&d, &c, 9, RunStream::Train, 2, 10).expect("run");
    let mut s = SpecStream::new(r.run_seed(), &[1]);
    let mut order: Vec<usize> = (0..10).collect();
    for i in 0..4 {
        let j = i + s.below(10 - i as u64) as usize;
        order.swap(i, j);
    }
    assert_eq!(*r.content(), RunContent::Digits { classes: order[..4].to_vec() });
    // File split.
    let mut s = SpecStream::new(0x66696C6573706C74, &[50]);
    let mut idx: Vec<usize> = (0..50).collect();
    for i in (1..50).rev() {
        let j = s.below(i as u64 + 1) as usize;
        idx.swap(i, j);
    }
    let mut val = idx[..10].to_vec();
    val.sort_unstable();
    assert_eq!(FileDataset::split_rows(50).1, val);
}
