//! N-way K-shot classification on the real 8×8 handwritten digits (UCI "Optical Recognition of
//! Handwritten Digits", 1,797 images, 10 classes; see `data/README.md`).
//!
//! The data is embedded in the binary and parsed once ([`Digits::load`]). Its images are split
//! once and for all, independently of any run seed, into a meta-train and a meta-test part:
//! within each class, a fixed shuffle (the stream `(SPLIT_SEED, [class])`), then the first 70 %
//! (rounded down) of the class's images go to [`Split::Train`], the rest to [`Split::Test`].
//!
//! Task `index` of meta-step `step` is a pure function of `(seed, split, step, index)` through
//! the stream `(seed, [split id, step, index])`: it draws `ways` distinct classes uniformly,
//! gives them labels `0..ways` in random order, then draws `shots + query` distinct images of
//! each class from that class's pool in the split, the first `shots` for the support set and
//! the others for the query set. Inputs are `pixel / 16` (`d_0 = 64`), targets are labels
//! (`d_L = ways`, loss `cross_entropy`).

use std::io::Read;
use std::sync::OnceLock;

use flate2::read::GzDecoder;
use metasched_engine::rng::CounterRng;
use metasched_engine::{Targets, TaskBatch};

use crate::error::{Result, TaskError};
use crate::split::Split;

/// Pixels per image (8×8), the input width `d_0` of digits tasks.
pub const PIXELS: usize = 64;

/// Number of digit classes.
pub const CLASSES: usize = 10;

/// Percentage (rounded down per class) of each class's images in the meta-train split.
pub const TRAIN_PERCENT: usize = 70;

/// Seed of the fixed per-class shuffles that split the images (never the run seed).
pub const SPLIT_SEED: u64 = 0x6469_6769_7473_7370; // "digitssp"

/// Largest pixel value of the data (pixels are integers `0..=16`).
const PIXEL_MAX: u32 = 16;

/// Name of the embedded data in error messages.
const EMBEDDED_NAME: &str = "embedded data/digits.csv.gz";

/// The gzip-compressed CSV shipped in `data/`.
static EMBEDDED: &[u8] = include_bytes!("../../../data/digits.csv.gz");

/// A parse failure: the 1-based line at fault (`None` for the whole data) and what is wrong.
type ParseError = (Option<usize>, String);

/// The embedded data, parsed on first use (a failure is kept, and reported at every call).
static PARSED: OnceLock<std::result::Result<Digits, ParseError>> = OnceLock::new();

/// The digits images with their labels and their fixed meta-train / meta-test pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Digits {
    /// `[n, PIXELS]` row-major, `pixel / 16`.
    pixels: Vec<f32>,
    /// `[n]`, `0..CLASSES`.
    labels: Vec<u8>,
    /// Image indices of each class in each split (`[split id][class]`), ascending.
    pools: [[Vec<u32>; CLASSES]; 2],
}

fn data_error(source_name: &str, line: Option<usize>, reason: impl Into<String>) -> TaskError {
    TaskError::DigitsData { source_name: source_name.to_string(), line, reason: reason.into() }
}

fn bad_parameter(name: &'static str, value: usize, reason: &str) -> TaskError {
    TaskError::BadParameter { family: "digits", name, value: value.to_string(), reason: reason.to_string() }
}

/// Moves a uniformly random ordered selection of `m` elements of `v` to its front (the first
/// `m` steps of a Fisher–Yates shuffle).
fn partial_shuffle<X>(rng: &mut CounterRng, v: &mut [X], m: usize) {
    let n = v.len();
    for i in 0..m.min(n) {
        let j = i + rng.below((n - i) as u64) as usize;
        v.swap(i, j);
    }
}

/// Parses the CSV text: one image per non-empty line, 64 pixels `0..=16` then the label.
fn parse_csv(text: &str) -> std::result::Result<(Vec<f32>, Vec<u8>), ParseError> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = Some(i + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != PIXELS + 1 {
            return Err((at, format!("{} fields, expected {} pixels and a label", fields.len(), PIXELS)));
        }
        for (col, field) in fields[..PIXELS].iter().enumerate() {
            match field.parse::<u32>() {
                Ok(v) if v <= PIXEL_MAX => pixels.push(v as f32 / PIXEL_MAX as f32),
                _ => {
                    return Err((
                        at,
                        format!("pixel {col} is `{field}`, expected an integer in 0..={PIXEL_MAX}"),
                    ));
                }
            }
        }
        let field = fields[PIXELS];
        match field.parse::<u8>() {
            Ok(l) if (l as usize) < CLASSES => labels.push(l),
            _ => return Err((at, format!("label is `{field}`, expected an integer in 0..{CLASSES}"))),
        }
    }
    if labels.is_empty() {
        return Err((None, "holds no image".to_string()));
    }
    Ok((pixels, labels))
}

impl Digits {
    /// The embedded digits data, decompressed, parsed and split on the first call; later calls
    /// return the same value. A broken embedding is an error, not a panic.
    pub fn load() -> Result<&'static Digits> {
        match PARSED.get_or_init(|| Self::parse(EMBEDDED)) {
            Ok(d) => Ok(d),
            Err((line, reason)) => Err(data_error(EMBEDDED_NAME, *line, reason.clone())),
        }
    }

    /// Digits data from other bytes in the format of `data/digits.csv.gz` (gzip-compressed
    /// CSV, one image per line: 64 pixels `0..=16` then the label `0..=9`), split as the
    /// embedded data is. `source_name` names the data in errors.
    pub fn from_csv_gz(source_name: &str, bytes: &[u8]) -> Result<Digits> {
        Self::parse(bytes).map_err(|(line, reason)| data_error(source_name, line, reason))
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Digits, ParseError> {
        let mut text = String::new();
        GzDecoder::new(bytes)
            .read_to_string(&mut text)
            .map_err(|e| (None, format!("cannot decompress as gzip text: {e}")))?;
        let (pixels, labels) = parse_csv(&text)?;
        Ok(Self::with_split(pixels, labels))
    }

    /// Splits parsed images into the fixed meta-train and meta-test pools.
    fn with_split(pixels: Vec<f32>, labels: Vec<u8>) -> Digits {
        let split: [(Vec<u32>, Vec<u32>); CLASSES] = std::array::from_fn(|class| {
            let mut train: Vec<u32> =
                (0..labels.len() as u32).filter(|&i| labels[i as usize] as usize == class).collect();
            CounterRng::new(SPLIT_SEED, &[class as u64]).shuffle(&mut train);
            let mut test = train.split_off(train.len() * TRAIN_PERCENT / 100);
            train.sort_unstable();
            test.sort_unstable();
            (train, test)
        });
        let mut pools: [[Vec<u32>; CLASSES]; 2] = Default::default();
        for (class, (train, test)) in split.into_iter().enumerate() {
            pools[Split::Train.id() as usize][class] = train;
            pools[Split::Test.id() as usize][class] = test;
        }
        Digits { pixels, labels, pools }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no image (never for the embedded data).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i` (`pixel / 16`, row-major 8×8). Panics if `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.pixels[i * PIXELS..(i + 1) * PIXELS]
    }

    /// Digit shown by image `i`. Panics if `i >= self.len()`.
    pub fn label(&self, i: usize) -> u32 {
        u32::from(self.labels[i])
    }

    /// Indices (ascending) of the images of class `class` in split `split`. Panics if
    /// `class >= CLASSES`.
    pub fn pool(&self, split: Split, class: usize) -> &[u32] {
        &self.pools[split.id() as usize][class]
    }

    /// Number of images of each class in split `split`.
    pub fn pool_sizes(&self, split: Split) -> [usize; CLASSES] {
        std::array::from_fn(|c| self.pool(split, c).len())
    }

    /// Tasks `first .. first + count` of meta-step `step` of split `split`: each task draws
    /// `ways` distinct classes (uniformly), assigns them labels `0..ways` by a random
    /// permutation, then for each class draws `shots` support and `query` query images without
    /// replacement (support and query disjoint) from that class's pool in `split`. The support
    /// set has `ways * shots` points, the query set `ways * query`, both ordered by label.
    /// Every task is a pure function of `(seed, split, step, task index)` through the stream
    /// `(seed, [split id, step, index])`, so any worker can generate any task.
    ///
    /// Errors when `ways` is not in `2..=10`, `shots` or `query` is 0, or `shots + query` is
    /// larger than the smallest class pool of `split`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        split: Split,
        seed: u64,
        step: u64,
        first: u64,
        count: usize,
        ways: usize,
        shots: usize,
        query: usize,
    ) -> Result<TaskBatch<f32>> {
        if !(2..=CLASSES).contains(&ways) {
            return Err(bad_parameter("ways", ways, &format!("must be in 2..={CLASSES}")));
        }
        if shots == 0 {
            return Err(bad_parameter("shots", shots, "must be at least 1"));
        }
        if query == 0 {
            return Err(bad_parameter("query", query, "must be at least 1"));
        }
        let needed = shots.saturating_add(query);
        let sizes = self.pool_sizes(split);
        let (class, &available) = sizes.iter().enumerate().min_by_key(|&(_, &n)| n).unwrap_or((0, &0));
        if needed > available {
            return Err(TaskError::PoolTooSmall { split, class, available, needed });
        }

        let (k, q) = (ways * shots, ways * query);
        let mut support_x = vec![0.0f32; count * k * PIXELS];
        let mut query_x = vec![0.0f32; count * q * PIXELS];
        let mut support_y = vec![0u32; count * k];
        let mut query_y = vec![0u32; count * q];
        let mut drawn: Vec<u32> = Vec::new();
        for t in 0..count {
            let index = first.wrapping_add(t as u64);
            let mut rng = CounterRng::new(seed, &[split.id(), step, index]);
            let mut classes: [usize; CLASSES] = std::array::from_fn(|c| c);
            partial_shuffle(&mut rng, &mut classes, ways);
            for (label, &class) in classes[..ways].iter().enumerate() {
                drawn.clear();
                drawn.extend_from_slice(self.pool(split, class));
                partial_shuffle(&mut rng, &mut drawn, needed);
                let (sup, qry) = drawn[..needed].split_at(shots);
                for (j, &img) in sup.iter().enumerate() {
                    let p = t * k + label * shots + j;
                    support_x[p * PIXELS..(p + 1) * PIXELS].copy_from_slice(self.image(img as usize));
                    support_y[p] = label as u32;
                }
                for (j, &img) in qry.iter().enumerate() {
                    let p = t * q + label * query + j;
                    query_x[p * PIXELS..(p + 1) * PIXELS].copy_from_slice(self.image(img as usize));
                    query_y[p] = label as u32;
                }
            }
        }
        Ok(TaskBatch {
            b: count,
            k,
            q,
            d_in: PIXELS,
            d_out: ways,
            support_x,
            support_y: Targets::Labels(support_y),
            query_x,
            query_y: Targets::Labels(query_y),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    /// Class counts of the UCI digits data.
    const COUNTS: [usize; CLASSES] = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];

    fn digits() -> &'static Digits {
        Digits::load().expect("embedded digits data")
    }

    fn key(row: &[f32]) -> Vec<u32> {
        row.iter().map(|v| v.to_bits()).collect()
    }

    /// Every image's pixel row to its index (the data holds no duplicate image).
    fn rows(d: &Digits) -> HashMap<Vec<u32>, usize> {
        let map: HashMap<_, _> = (0..d.len()).map(|i| (key(d.image(i)), i)).collect();
        assert_eq!(map.len(), d.len(), "duplicate images");
        map
    }

    fn labels(t: &Targets<f32>) -> &[u32] {
        match t {
            Targets::Labels(l) => l,
            Targets::Values(_) => panic!("digits targets are labels"),
        }
    }

    /// Image indices of the support and query points of task `t`.
    fn images_of(b: &TaskBatch<f32>, map: &HashMap<Vec<u32>, usize>, t: usize) -> (Vec<usize>, Vec<usize>) {
        let find = |x: &[f32], n: usize| -> Vec<usize> {
            (0..n).map(|p| map[&key(&x[(t * n + p) * PIXELS..(t * n + p + 1) * PIXELS])]).collect()
        };
        (find(&b.support_x, b.k), find(&b.query_x, b.q))
    }

    fn gz(text: &str) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(text.as_bytes()).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn the_embedded_data_has_the_uci_images() {
        let d = digits();
        assert_eq!(d.len(), 1797);
        let mut counts = [0usize; CLASSES];
        for i in 0..d.len() {
            counts[d.label(i) as usize] += 1;
            assert!(d.image(i).iter().all(|&p| (0.0..=1.0).contains(&p)));
        }
        assert_eq!(counts, COUNTS);
        // First line of the file: a zero.
        assert_eq!(d.label(0), 0);
        assert_eq!(&d.image(0)[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        assert!(std::ptr::eq(d, digits()), "parsed once");
    }

    #[test]
    fn the_split_is_disjoint_covers_every_image_and_keeps_70_percent() {
        let d = digits();
        let mut seen = vec![0u8; d.len()];
        for split in Split::ALL {
            for class in 0..CLASSES {
                for &i in d.pool(split, class) {
                    assert_eq!(d.label(i as usize) as usize, class);
                    seen[i as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "every image in exactly one pool");
        let train = d.pool_sizes(Split::Train);
        let test = d.pool_sizes(Split::Test);
        for c in 0..CLASSES {
            assert_eq!(train[c], COUNTS[c] * 7 / 10);
            assert_eq!(train[c] + test[c], COUNTS[c]);
        }
        assert_eq!(test.iter().min(), Some(&53)); // class 8: 174 - 121
    }

    #[test]
    fn the_split_is_fixed_and_never_depends_on_the_run_seed() {
        let d = digits();
        // Re-parsing gives the same pools: they are a function of the data alone.
        let again = Digits::from_csv_gz("copy", EMBEDDED).expect("parse");
        assert_eq!(&again, d);
        // Whatever the seed, tasks of a split only use that split's images.
        let map = rows(d);
        for split in Split::ALL {
            let pool: HashSet<usize> =
                (0..CLASSES).flat_map(|c| d.pool(split, c).iter().map(|&i| i as usize)).collect();
            for seed in [0, 1, 42, u64::MAX] {
                let b = d.sample(split, seed, 3, 0, 4, 5, 3, 4).expect("sample");
                for t in 0..b.b {
                    let (s, q) = images_of(&b, &map, t);
                    assert!(s.iter().chain(&q).all(|i| pool.contains(i)), "{split} seed {seed}");
                }
            }
        }
    }

    #[test]
    fn tasks_are_reproducible_and_independent_of_slicing() {
        let d = digits();
        let whole = d.sample(Split::Train, 5, 3, 0, 4, 5, 2, 3).expect("sample");
        assert_eq!(whole, d.sample(Split::Train, 5, 3, 0, 4, 5, 2, 3).expect("sample"));
        let tail = d.sample(Split::Train, 5, 3, 2, 2, 5, 2, 3).expect("sample");
        let (k, q) = (whole.k * PIXELS, whole.q * PIXELS);
        assert_eq!(&whole.support_x[2 * k..], &tail.support_x[..]);
        assert_eq!(&whole.query_x[2 * q..], &tail.query_x[..]);
        assert_eq!(&labels(&whole.support_y)[2 * whole.k..], labels(&tail.support_y));
        assert_eq!(&labels(&whole.query_y)[2 * whole.q..], labels(&tail.query_y));
        let one = d.sample(Split::Train, 5, 3, 3, 1, 5, 2, 3).expect("sample");
        assert_eq!(&whole.support_x[3 * k..], &one.support_x[..]);
    }

    #[test]
    fn shapes_labels_and_classes_are_consistent() {
        let d = digits();
        let map = rows(d);
        let (ways, shots, query) = (5, 3, 7);
        let b = d.sample(Split::Test, 11, 0, 0, 20, ways, shots, query).expect("sample");
        assert_eq!((b.b, b.k, b.q, b.d_in, b.d_out), (20, ways * shots, ways * query, PIXELS, ways));
        assert_eq!(b.support_x.len(), 20 * ways * shots * PIXELS);
        assert_eq!(b.query_x.len(), 20 * ways * query * PIXELS);
        let (sl, ql) = (labels(&b.support_y), labels(&b.query_y));
        for t in 0..b.b {
            let sup = &sl[t * b.k..(t + 1) * b.k];
            let qry = &ql[t * b.q..(t + 1) * b.q];
            for l in 0..ways as u32 {
                assert_eq!(sup.iter().filter(|&&x| x == l).count(), shots);
                assert_eq!(qry.iter().filter(|&&x| x == l).count(), query);
            }
            assert!(sup.iter().chain(qry).all(|&l| (l as usize) < ways));
            let (s, q) = images_of(&b, &map, t);
            // Distinct images within the task, support and query disjoint.
            let all: HashSet<usize> = s.iter().chain(&q).copied().collect();
            assert_eq!(all.len(), b.k + b.q);
            // One class per label, distinct classes for distinct labels.
            let mut class_of = [None; CLASSES];
            for (&img, &l) in s.iter().zip(sup).chain(q.iter().zip(qry)) {
                let c = d.label(img);
                assert_eq!(*class_of[l as usize].get_or_insert(c), c);
            }
            let classes: HashSet<_> = class_of.iter().flatten().collect();
            assert_eq!(classes.len(), ways);
        }
    }

    #[test]
    fn different_coordinates_give_different_tasks() {
        let d = digits();
        let base = d.sample(Split::Train, 5, 3, 0, 2, 5, 1, 1).expect("sample");
        let other_step = d.sample(Split::Train, 5, 4, 0, 2, 5, 1, 1).expect("sample");
        let other_seed = d.sample(Split::Train, 6, 3, 0, 2, 5, 1, 1).expect("sample");
        let other_index = d.sample(Split::Train, 5, 3, 2, 2, 5, 1, 1).expect("sample");
        assert_ne!(base.support_x, other_step.support_x);
        assert_ne!(base.support_x, other_seed.support_x);
        assert_ne!(base.support_x, other_index.support_x);
        let first = &base.support_x[..base.k * PIXELS];
        let second = &base.support_x[base.k * PIXELS..];
        assert_ne!(first, second);
    }

    #[test]
    fn train_and_test_tasks_use_disjoint_images() {
        let d = digits();
        let pixels = |split| -> HashSet<Vec<u32>> {
            let b = d.sample(split, 1, 0, 0, 100, 10, 5, 5).expect("sample");
            b.support_x.chunks(PIXELS).chain(b.query_x.chunks(PIXELS)).map(key).collect()
        };
        let (train, test) = (pixels(Split::Train), pixels(Split::Test));
        assert!(train.len() > 1000 && test.len() > 400, "{} {}", train.len(), test.len());
        assert!(train.is_disjoint(&test));
    }

    #[test]
    fn classes_are_drawn_uniformly() {
        let d = digits();
        let b = d.sample(Split::Train, 2, 0, 0, 4000, 2, 1, 1).expect("sample");
        let map = rows(d);
        let mut counts = [0usize; CLASSES];
        for t in 0..b.b {
            let (s, _) = images_of(&b, &map, t);
            for img in s {
                counts[d.label(img) as usize] += 1;
            }
        }
        // 8000 draws, 800 expected per class; sd ≈ 27.
        assert!(counts.iter().all(|&n| (680..920).contains(&n)), "{counts:?}");
        // Label 0 goes to the smaller class half the time (random permutation).
        let sl = labels(&b.support_y);
        let smaller_first = (0..b.b)
            .filter(|&t| {
                let (s, _) = images_of(&b, &map, t);
                let (c0, c1) = (d.label(s[0]), d.label(s[1]));
                assert_eq!((sl[2 * t], sl[2 * t + 1]), (0, 1));
                c0 < c1
            })
            .count();
        assert!((1800..2200).contains(&smaller_first), "{smaller_first}");
    }

    #[test]
    fn bad_parameters_are_errors() {
        let d = digits();
        let msg = |r: Result<TaskBatch<f32>>| r.expect_err("must fail").to_string();
        assert!(msg(d.sample(Split::Train, 0, 0, 0, 1, 1, 1, 1)).contains("`ways` = 1"));
        assert!(msg(d.sample(Split::Train, 0, 0, 0, 1, 11, 1, 1)).contains("`ways` = 11"));
        assert!(msg(d.sample(Split::Train, 0, 0, 0, 1, 5, 0, 1)).contains("`shots` = 0"));
        assert!(msg(d.sample(Split::Train, 0, 0, 0, 1, 5, 1, 0)).contains("`query` = 0"));
        let m = msg(d.sample(Split::Test, 0, 0, 0, 1, 5, 30, 24));
        assert!(m.contains("class 8") && m.contains("only 53 test images"), "{m}");
        assert!(d.sample(Split::Test, 0, 0, 0, 1, 5, 30, 23).is_ok());
        let m = msg(d.sample(Split::Train, 0, 0, 0, 1, 5, 100, 22));
        assert!(m.contains("class 8") && m.contains("only 121 train images"), "{m}");
        let m = msg(d.sample(Split::Train, 0, 0, 0, 1, 5, usize::MAX, 1));
        assert!(m.contains("class 8"), "{m}");
    }

    #[test]
    fn malformed_data_is_an_error_naming_the_line() {
        let row = |label: &str| format!("{}{label}\n", "0,".repeat(PIXELS));
        let ok = Digits::from_csv_gz("t", &gz(&(row("3") + &row("4")))).expect("parse");
        assert_eq!((ok.len(), ok.label(1)), (2, 4));
        let cases = [
            (row("3") + &row("10"), "line 2: label is `10`"),
            (row("3") + "1,2,3\n", "line 2: 3 fields"),
            (row("x"), "line 1: label is `x`"),
            (format!("17,{}", row("1").split_once(',').map_or("", |p| p.1)), "line 1: pixel 0 is `17`"),
            (String::new(), "holds no image"),
        ];
        for (text, want) in cases {
            let e = Digits::from_csv_gz("test.csv.gz", &gz(&text)).expect_err("must fail").to_string();
            assert!(e.starts_with("digits data (test.csv.gz): ") && e.contains(want), "{e}");
        }
        let e = Digits::from_csv_gz("raw", b"not gzip").expect_err("must fail").to_string();
        assert!(e.contains("digits data (raw): cannot decompress"), "{e}");
    }
}
