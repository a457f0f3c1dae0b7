//! Runs on the embedded digits (spec §7.1): each run classifies a random subset of the 10
//! digits under a random labelling, training on the images of the digits' meta-train pool
//! ([`Split::Train`]) minus a fixed held-out part, which is the run's validation set.
//!
//! The digits' meta-test pool ([`Split::Test`]) is never used by `train-mlp`: those images
//! stay unseen by any scheduler meta-trained here, for a later held-out evaluation.

use metasched_engine::Targets;
use metasched_engine::horizon::Batch;
use metasched_engine::rng::CounterRng;

use crate::digits::{CLASSES, Digits, PIXELS};
use crate::split::Split;
use crate::train_mlp::dataset::Sets;
use crate::train_mlp::stream::CONTENT_STREAM;

/// Percentage (rounded down per class) of each class's meta-train pool held out for
/// validation.
pub const DIGITS_VAL_PERCENT: usize = 20;

/// Seed of the fixed per-class shuffles choosing the held-out images (never a run seed).
pub const DIGITS_VAL_SEED: u64 = 0x7472_6169_6e76_616c; // "trainval"

/// Image indices of each class's training and held-out pools, fixed for all runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DigitsPools {
    /// `[class]`, ascending.
    train: [Vec<u32>; CLASSES],
    /// `[class]`, ascending.
    val: [Vec<u32>; CLASSES],
}

impl DigitsPools {
    /// Splits each class's [`Split::Train`] pool: shuffled by the stream
    /// `(DIGITS_VAL_SEED, [class])` (Fisher–Yates as `CounterRng::shuffle`), its last
    /// `floor(len · 20 / 100)` images are held out, the rest train; both sorted ascending.
    pub(crate) fn new(digits: &Digits) -> Self {
        let mut train: [Vec<u32>; CLASSES] = Default::default();
        let mut val: [Vec<u32>; CLASSES] = Default::default();
        for class in 0..CLASSES {
            let mut pool = digits.pool(Split::Train, class).to_vec();
            CounterRng::new(DIGITS_VAL_SEED, &[class as u64]).shuffle(&mut pool);
            let held = pool.len() * DIGITS_VAL_PERCENT / 100;
            let mut v = pool.split_off(pool.len() - held);
            pool.sort_unstable();
            v.sort_unstable();
            train[class] = pool;
            val[class] = v;
        }
        Self { train, val }
    }

    /// The sets of the run with seed `run_seed`: from the stream `(run_seed, [CONTENT_STREAM])`,
    /// the first `classes` steps of a Fisher–Yates shuffle of `[0, 1, ..., 9]` (step `i` swaps
    /// entry `i` with entry `i + below(10 - i)`) choose the digit given label `i`. Each set
    /// lists label 0's images (ascending image index), then label 1's, ... Returns the digit of
    /// each label and the sets.
    pub(crate) fn run_sets(&self, digits: &Digits, classes: usize, run_seed: u64) -> (Vec<usize>, Sets<f32>) {
        let mut rng = CounterRng::new(run_seed, &[CONTENT_STREAM]);
        let mut order: [usize; CLASSES] = std::array::from_fn(|c| c);
        for i in 0..classes.min(CLASSES) {
            let j = i + rng.below((CLASSES - i) as u64) as usize;
            order.swap(i, j);
        }
        let chosen = order[..classes.min(CLASSES)].to_vec();
        let set = |pools: &[Vec<u32>; CLASSES]| {
            let n: usize = chosen.iter().map(|&c| pools[c].len()).sum();
            let mut x = Vec::with_capacity(n * PIXELS);
            let mut y = Vec::with_capacity(n);
            for (label, &class) in chosen.iter().enumerate() {
                for &img in &pools[class] {
                    x.extend_from_slice(digits.image(img as usize));
                    y.push(label as u32);
                }
            }
            Batch { n, x, y: Targets::Labels(y) }
        };
        let sets = Sets { train: set(&self.train), val: set(&self.val) };
        (chosen, sets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_split_the_meta_train_images_only() {
        let d = Digits::load().expect("digits");
        let p = DigitsPools::new(d);
        for class in 0..CLASSES {
            let pool = d.pool(Split::Train, class);
            let mut both: Vec<u32> = p.train[class].iter().chain(&p.val[class]).copied().collect();
            both.sort_unstable();
            assert_eq!(both, pool);
            assert_eq!(p.val[class].len(), pool.len() * DIGITS_VAL_PERCENT / 100);
            assert!(!p.val[class].is_empty());
        }
        assert_eq!(p, DigitsPools::new(d), "fixed");
    }
}
