//! Epoch permutations of a training split (spec §7.1): a keyed bijection of `0..n` evaluated
//! one index at a time, so the minibatch of any step is found in `O(b)` without storing a
//! permutation, and any worker (or a PyTorch reimplementation) finds the same one.
//!
//! The bijection is a 4-round balanced Feistel network on `k` bits (`k` the smallest even
//! number `>= 2` with `2^k >= n`), round function `mix64(R ^ K_i) & mask`, restricted to
//! `0..n` by cycle walking (re-encrypting while the result is `>= n`). Since `2^k < 4n`, a
//! lookup takes fewer than four encryptions on average.

use metasched_engine::rng::{CounterRng, mix64};

use crate::train_mlp::stream::PERMUTATION_STREAM;

/// Feistel rounds of an epoch permutation.
pub const ROUNDS: usize = 4;

/// The permutation of epoch `epoch` of a run's training split of `n` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPermutation {
    n: u64,
    half_bits: u32,
    mask: u64,
    keys: [u64; ROUNDS],
}

impl EpochPermutation {
    /// The permutation of `0..n` for epoch `epoch` of the run with seed `run_seed`: its round
    /// keys are the first [`ROUNDS`] outputs of the stream `(run_seed, [PERMUTATION_STREAM,
    /// epoch])`.
    pub fn new(run_seed: u64, epoch: u64, n: usize) -> Self {
        let mut rng = CounterRng::new(run_seed, &[PERMUTATION_STREAM, epoch]);
        let keys = std::array::from_fn(|_| rng.next_u64());
        let n = n as u64;
        let mut bits = 2u32;
        while bits < 64 && (1u64 << bits) < n {
            bits += 2;
        }
        let half_bits = bits / 2;
        Self { n, half_bits, mask: (1u64 << half_bits) - 1, keys }
    }

    /// Number of points permuted.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// Whether the permuted set is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The Feistel bijection of `0..2^k`.
    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.mask);
        for &k in &self.keys {
            let f = mix64(r ^ k) & self.mask;
            (l, r) = (r, l ^ f);
        }
        (l << self.half_bits) | r
    }

    /// The point at position `j` of the epoch. Panics if `j >= n`.
    pub fn apply(&self, j: usize) -> usize {
        assert!((j as u64) < self.n, "position {j} of a permutation of {}", self.n);
        let mut x = self.encrypt(j as u64);
        while x >= self.n {
            x = self.encrypt(x);
        }
        x as usize
    }
}

/// Calls `f` with the training-split index of each of the `b` points of the minibatch of step
/// `t`, in order: position `p = t·b + i` of the run's stream of points lies in epoch
/// `p / n` at position `p % n`, and is point `EpochPermutation::new(run_seed, p / n, n)
/// .apply(p % n)`. Every epoch therefore visits every point exactly once, whether or not `b`
/// divides `n` (a minibatch may straddle two epochs). Does nothing when `n == 0`.
pub fn for_each_batch_index(run_seed: u64, n: usize, b: usize, t: usize, mut f: impl FnMut(usize)) {
    if n == 0 {
        return;
    }
    let n64 = n as u64;
    let start = (t as u64).wrapping_mul(b as u64);
    let mut epoch = start / n64;
    let mut perm = EpochPermutation::new(run_seed, epoch, n);
    for i in 0..b as u64 {
        let p = start.wrapping_add(i);
        if p / n64 != epoch {
            epoch = p / n64;
            perm = EpochPermutation::new(run_seed, epoch, n);
        }
        f(perm.apply((p % n64) as usize));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gives_a_permutation() {
        for n in (1..300).chain([1000, 1024, 1025, 4097]) {
            for epoch in 0..3 {
                let p = EpochPermutation::new(11, epoch, n);
                let mut seen = vec![false; n];
                for j in 0..n {
                    let i = p.apply(j);
                    assert!(!seen[i], "n {n}: {i} twice");
                    seen[i] = true;
                }
            }
        }
    }

    #[test]
    fn epochs_and_seeds_give_different_orders() {
        let order = |seed, epoch| {
            (0..500).map(|j| EpochPermutation::new(seed, epoch, 500).apply(j)).collect::<Vec<_>>()
        };
        assert_ne!(order(1, 0), order(1, 1));
        assert_ne!(order(1, 0), order(2, 0));
        assert_ne!(order(1, 0), (0..500).collect::<Vec<_>>());
        assert_eq!(order(1, 0), order(1, 0));
    }

    #[test]
    fn positions_are_spread_evenly() {
        // Position 0 of the epoch over many epochs is roughly uniform over 0..10.
        let mut counts = [0usize; 10];
        for epoch in 0..10_000 {
            counts[EpochPermutation::new(3, epoch, 10).apply(0)] += 1;
        }
        assert!(counts.iter().all(|&c| (850..1150).contains(&c)), "{counts:?}");
    }

    #[test]
    fn minibatches_tile_epochs() {
        let (n, b) = (10, 4);
        let mut stream = Vec::new();
        for t in 0..10 {
            for_each_batch_index(5, n, b, t, |i| stream.push(i));
        }
        for (e, epoch) in stream.chunks(n).enumerate() {
            let mut sorted = epoch.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "epoch {e}");
            let p = EpochPermutation::new(5, e as u64, n);
            assert!(epoch.iter().enumerate().all(|(j, &i)| p.apply(j) == i));
        }
    }
}
