//! One run of the `train-mlp` family (spec §7.1): its training and held-out sets, its
//! minibatch of any step, and its learner's initialisation, all pure functions of
//! `(seed, stream, run)` and the step, so any worker regenerates any window of any run.

use std::sync::Arc;

use metasched_engine::horizon::{Batch, RunData};
use metasched_engine::init::init_theta;
use metasched_engine::{Config, Real, SetRef, Targets};

use crate::error::{Result, TaskError};
use crate::train_mlp::dataset::{OpenedDataset, Sets};
use crate::train_mlp::permutation::for_each_batch_index;
use crate::train_mlp::stream::{RunStream, run_seed};

/// What was drawn for a run besides its data order and initialisation (for reports and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum RunContent {
    /// The digit shown by each label: `classes[label]`.
    Digits {
        /// Digit of each label `0..classes`.
        classes: Vec<usize>,
    },
    /// The run's function `y = amplitude · sin(x − phase)`.
    Sinusoid {
        /// `A`.
        amplitude: f64,
        /// `φ`.
        phase: f64,
    },
    /// Nothing: every run of a file dataset trains on the same data.
    File,
}

/// The data of one training run: implements [`RunData`].
#[derive(Debug, Clone)]
pub struct TrainRun<T> {
    seed: u64,
    stream: RunStream,
    run: u64,
    run_seed: u64,
    batch: usize,
    d_in: usize,
    d_out: usize,
    config: Config,
    content: RunContent,
    sets: Arc<Sets<T>>,
}

impl<T: Real> TrainRun<T> {
    /// Run `run` of stream `stream` under the user's `seed`, on `data`, with minibatches of
    /// `batch` points, for learners of configuration `config`. The run's sets are materialised
    /// here (shared with the other runs for a file dataset).
    ///
    /// Errors (bad input) when `config` does not fit the data (`model.layers`, `model.loss`),
    /// or `batch` is 0 or larger than the run's training split.
    pub fn open(
        data: &OpenedDataset,
        config: &Config,
        seed: u64,
        stream: RunStream,
        run: u64,
        batch: usize,
    ) -> Result<TrainRun<T>> {
        data.check_config(config)?;
        let rs = run_seed(seed, stream, run);
        let (content, sets) = data.run_sets::<T>(rs);
        let n_train = sets.train.n;
        if batch == 0 || batch > n_train {
            return Err(TaskError::BadParameter {
                family: "train-mlp",
                name: "batch",
                value: batch.to_string(),
                reason: format!(
                    "must be in 1..={n_train}, the size of the run's training split ({})",
                    data.data()
                ),
            });
        }
        Ok(TrainRun {
            seed,
            stream,
            run,
            run_seed: rs,
            batch,
            d_in: data.d_in(),
            d_out: data.d_out(),
            config: config.clone(),
            content,
            sets,
        })
    }

    /// The learner's initial parameters: [`init_theta`] (PyTorch's default initialisation) with
    /// the run seed, cast to `T`.
    pub fn learner_init(&self) -> Vec<T> {
        init_theta(&self.config, self.run_seed).into_iter().map(|v| T::of(f64::from(v))).collect()
    }

    /// The user's seed the run derives from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The run's stream.
    pub fn stream(&self) -> RunStream {
        self.stream
    }

    /// The run's index in its stream.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// The run seed everything random about the run derives from ([`run_seed`]).
    pub fn run_seed(&self) -> u64 {
        self.run_seed
    }

    /// Points per minibatch, `b`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Points of the training split.
    pub fn n_train(&self) -> usize {
        self.sets.train.n
    }

    /// Points of the held-out split.
    pub fn n_val(&self) -> usize {
        self.sets.val.n
    }

    /// What was drawn for this run.
    pub fn content(&self) -> &RunContent {
        &self.content
    }

    /// A minibatch buffer with room for this run's minibatches, so that no
    /// [`RunData::fill_batch`] call allocates.
    pub fn empty_batch(&self) -> Batch<T> {
        let b = self.batch;
        let y = match &self.sets.train.y {
            Targets::Values(_) => Targets::Values(Vec::with_capacity(b * self.d_out)),
            Targets::Labels(_) => Targets::Labels(Vec::with_capacity(b)),
        };
        Batch { n: 0, x: Vec::with_capacity(b * self.d_in), y }
    }

    /// Indices into the training split ([`RunData::train_set`]) of the points of the minibatch
    /// of step `t`, in order.
    pub fn batch_indices(&self, t: usize) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.batch);
        for_each_batch_index(self.run_seed, self.sets.train.n, self.batch, t, |i| out.push(i));
        out
    }
}

impl<T: Real> RunData<T> for TrainRun<T> {
    fn fill_batch(&self, t: usize, out: &mut Batch<T>) {
        let train = &self.sets.train;
        let (b, d_in, d_out) = (self.batch, self.d_in, self.d_out);
        out.n = b;
        out.x.clear();
        out.x.reserve(b * d_in);
        match (&train.y, &mut out.y) {
            (Targets::Values(_), Targets::Values(v)) => {
                v.clear();
                v.reserve(b * d_out);
            }
            (Targets::Labels(_), Targets::Labels(l)) => {
                l.clear();
                l.reserve(b);
            }
            (Targets::Values(_), y) => *y = Targets::Values(Vec::with_capacity(b * d_out)),
            (Targets::Labels(_), y) => *y = Targets::Labels(Vec::with_capacity(b)),
        }
        let (x, y) = (&mut out.x, &mut out.y);
        for_each_batch_index(self.run_seed, train.n, b, t, |i| {
            x.extend_from_slice(&train.x[i * d_in..(i + 1) * d_in]);
            match (&train.y, &mut *y) {
                (Targets::Values(src), Targets::Values(dst)) => {
                    dst.extend_from_slice(&src[i * d_out..(i + 1) * d_out]);
                }
                (Targets::Labels(src), Targets::Labels(dst)) => dst.push(src[i]),
                _ => {}
            }
        });
    }

    fn validation(&self) -> SetRef<'_, T> {
        self.sets.val.as_set()
    }

    fn train_set(&self) -> SetRef<'_, T> {
        self.sets.train.as_set()
    }
}
