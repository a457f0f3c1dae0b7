//! Run identities of the `train-mlp` family (spec §7.1): meta-training runs, the runs that tune
//! baselines and the held-out runs a report quotes draw from disjoint random streams, so no
//! tuned or reported number is measured on a run meta-training (or tuning) has seen.

use std::fmt;
use std::str::FromStr;

use metasched_engine::rng::CounterRng;

/// First id of every `train-mlp` run-seed stream path (`"train-ml"`), so run seeds never
/// coincide with the streams of the few-shot families that share the user's seed.
pub const TRAIN_MLP_TAG: u64 = 0x7472_6169_6e2d_6d6c;

/// Sub-stream of a run seed holding the run's content (digits class subset and label
/// permutation, sinusoid function and points): the stream `(run seed, [CONTENT_STREAM])`.
pub const CONTENT_STREAM: u64 = 1;

/// Sub-stream of a run seed keying the epoch permutations: epoch `e` uses the stream
/// `(run seed, [PERMUTATION_STREAM, e])`.
pub const PERMUTATION_STREAM: u64 = 2;

/// Which family of runs a run belongs to; runs of different streams never share a seed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStream {
    /// Runs the scheduler is meta-trained on.
    Train,
    /// Runs the baselines' hyper-parameters (fixed rates, cosine peaks, ...) are tuned on.
    Tune,
    /// Held-out runs the reported comparison is measured on.
    Test,
}

impl RunStream {
    /// Every stream, in id order.
    pub const ALL: [RunStream; 3] = [RunStream::Train, RunStream::Tune, RunStream::Test];

    /// The stream's id in run-seed paths (`0` train, `1` tune, `2` test).
    pub fn id(self) -> u64 {
        match self {
            Self::Train => 0,
            Self::Tune => 1,
            Self::Test => 2,
        }
    }

    /// The stream's name, for messages and command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Tune => "tune",
            Self::Test => "test",
        }
    }
}

impl fmt::Display for RunStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStream {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "train" => Ok(Self::Train),
            "tune" => Ok(Self::Tune),
            "test" => Ok(Self::Test),
            other => Err(format!("unknown run stream `{other}` (expected train, tune or test)")),
        }
    }
}

/// The seed of run `run` of stream `stream` under the user's `seed`: the first output of the
/// stream `(seed, [TRAIN_MLP_TAG, stream id, run])`. Everything random about the run (its
/// content, its epoch permutations, its learner's initialisation) derives from this one
/// number, so a worker handed `(seed, stream, run)` regenerates the whole run.
pub fn run_seed(seed: u64, stream: RunStream, run: u64) -> u64 {
    CounterRng::new(seed, &[TRAIN_MLP_TAG, stream.id(), run]).next_u64()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn streams_and_runs_get_distinct_seeds() {
        let mut seen = HashSet::new();
        for stream in RunStream::ALL {
            assert_eq!(stream.as_str().parse::<RunStream>(), Ok(stream));
            for run in 0..1000 {
                assert!(seen.insert(run_seed(7, stream, run)), "{stream} {run}");
            }
        }
        assert_eq!(run_seed(7, RunStream::Test, 3), run_seed(7, RunStream::Test, 3));
        assert_ne!(run_seed(7, RunStream::Test, 3), run_seed(8, RunStream::Test, 3));
        assert!("val".parse::<RunStream>().is_err());
    }
}
