//! The datasets of the `train-mlp` family (spec §7.1): their description, which crosses the
//! wire to workers, and the dataset opened once per process, which every run of that process
//! shares.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use metasched_engine::horizon::Batch;
use metasched_engine::{Config, LossKind, Real, Targets};

use crate::digits::{CLASSES, Digits, PIXELS};
use crate::error::{Result, TaskError};
use crate::train_mlp::digits_runs::DigitsPools;
use crate::train_mlp::file_dataset::FileDataset;
use crate::train_mlp::run::RunContent;
use crate::train_mlp::sinusoid_runs::sinusoid_run;

/// Training points of a sinusoid run unless told otherwise.
pub const DEFAULT_TRAIN_POINTS: usize = 1000;

/// Held-out points of a sinusoid run unless told otherwise.
pub const DEFAULT_VAL_POINTS: usize = 200;

/// Where the runs of a `train-mlp` task family take their data from. Plain data (externally
/// tagged, every field always written) so it crosses the wire in the job description and each
/// worker opens the dataset itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMlpData {
    /// The embedded 8×8 digits: each run classifies a random subset of `classes` of the 10
    /// digits (`2..=10`) under a random labelling `0..classes`.
    Digits {
        /// Classes per run, the learner's output width.
        classes: usize,
    },
    /// One random sinusoid per run (the sinusoid family's distribution), regression from 1
    /// input to 1 output.
    Sinusoid {
        /// Training points of each run.
        train_points: usize,
        /// Held-out points of each run.
        val_points: usize,
    },
    /// A user dataset file (safetensors, spec §7.1); runs differ only by seed (data order and
    /// learner initialisation).
    File {
        /// The file.
        path: PathBuf,
    },
}

impl TrainMlpData {
    /// Digits runs over all 10 classes.
    pub fn digits_default() -> Self {
        Self::Digits { classes: CLASSES }
    }

    /// Sinusoid runs of [`DEFAULT_TRAIN_POINTS`] training and [`DEFAULT_VAL_POINTS`] held-out
    /// points.
    pub fn sinusoid_default() -> Self {
        Self::Sinusoid { train_points: DEFAULT_TRAIN_POINTS, val_points: DEFAULT_VAL_POINTS }
    }

    /// The dataset's kind, `digits`, `sinusoid` or `file`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Digits { .. } => "digits",
            Self::Sinusoid { .. } => "sinusoid",
            Self::File { .. } => "file",
        }
    }
}

/// The command-line spelling parsed by [`TrainMlpData::from_str`].
impl fmt::Display for TrainMlpData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Digits { classes } => write!(f, "digits:{classes}"),
            Self::Sinusoid { train_points, val_points } => write!(f, "sinusoid:{train_points}:{val_points}"),
            Self::File { path } => write!(f, "file:{}", path.display()),
        }
    }
}

/// Parses the command-line spellings `digits[:CLASSES]`, `sinusoid[:TRAIN[:VAL]]` and
/// `file:PATH` (ranges are checked when the dataset is opened).
impl FromStr for TrainMlpData {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let number = |name: &str, v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("dataset `{s}`: {name} `{v}` is not a non-negative integer"))
        };
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err("dataset `file:` needs a path".to_string());
            }
            return Ok(Self::File { path: PathBuf::from(path) });
        }
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["digits"] => Ok(Self::digits_default()),
            ["digits", c] => Ok(Self::Digits { classes: number("classes", c)? }),
            ["sinusoid"] => Ok(Self::sinusoid_default()),
            ["sinusoid", t] => Ok(Self::Sinusoid {
                train_points: number("train points", t)?,
                val_points: DEFAULT_VAL_POINTS,
            }),
            ["sinusoid", t, v] => Ok(Self::Sinusoid {
                train_points: number("train points", t)?,
                val_points: number("val points", v)?,
            }),
            _ => Err(format!(
                "unknown dataset `{s}` (expected digits[:CLASSES], sinusoid[:TRAIN[:VAL]] or file:PATH)"
            )),
        }
    }
}

/// The training and held-out sets of a run, as `T`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sets<T> {
    /// The training split the minibatches are drawn from.
    pub(crate) train: Batch<T>,
    /// The held-out split.
    pub(crate) val: Batch<T>,
}

fn cast_batch<T: Real>(b: &Batch<f32>) -> Batch<T> {
    Batch {
        n: b.n,
        x: b.x.iter().map(|&v| T::of(f64::from(v))).collect(),
        y: match &b.y {
            Targets::Values(v) => Targets::Values(v.iter().map(|&v| T::of(f64::from(v))).collect()),
            Targets::Labels(l) => Targets::Labels(l.clone()),
        },
    }
}

impl Sets<f32> {
    /// The same values as another float type (exactly, for `f64`).
    pub(crate) fn cast<T: Real>(&self) -> Sets<T> {
        Sets { train: cast_batch(&self.train), val: cast_batch(&self.val) }
    }
}

/// What an opened dataset holds.
#[derive(Debug, Clone)]
enum Source {
    /// The embedded digits and their fixed per-class training / held-out pools.
    Digits { digits: &'static Digits, pools: Arc<DigitsPools>, classes: usize },
    /// Nothing: every run generates its own function and points.
    Sinusoid { train_points: usize, val_points: usize },
    /// The file, read and validated once.
    File(Arc<FileDataset>),
}

/// A dataset opened once per process and checked against the learner configuration; runs
/// share it (cloning is cheap: the digits are static, a file is behind an `Arc`).
#[derive(Debug, Clone)]
pub struct OpenedDataset {
    data: TrainMlpData,
    source: Source,
}

fn bad_parameter(family: &'static str, name: &'static str, value: usize, reason: String) -> TaskError {
    TaskError::BadParameter { family, name, value: value.to_string(), reason }
}

fn mismatch(dataset: &'static str, field: &'static str, reason: String) -> TaskError {
    TaskError::ConfigMismatch { dataset, field, reason }
}

impl OpenedDataset {
    /// Opens `data` for learners of configuration `config`: loads the embedded digits (once per
    /// process) or reads and validates the file (spec §7.1), checks the dataset's parameters
    /// and that the learner's input and output widths and loss fit the data.
    ///
    /// Errors (all bad input) name the parameter, the configuration field or the file and
    /// tensor at fault.
    pub fn open(data: &TrainMlpData, config: &Config) -> Result<OpenedDataset> {
        let source = match data {
            TrainMlpData::Digits { classes } => {
                if !(2..=CLASSES).contains(classes) {
                    return Err(bad_parameter(
                        "train-mlp digits",
                        "classes",
                        *classes,
                        format!("must be in 2..={CLASSES}"),
                    ));
                }
                let digits = Digits::load()?;
                Source::Digits { digits, pools: Arc::new(DigitsPools::new(digits)), classes: *classes }
            }
            TrainMlpData::Sinusoid { train_points, val_points } => {
                for (name, v) in [("train_points", *train_points), ("val_points", *val_points)] {
                    if v == 0 {
                        return Err(bad_parameter(
                            "train-mlp sinusoid",
                            name,
                            v,
                            "must be at least 1".into(),
                        ));
                    }
                }
                Source::Sinusoid { train_points: *train_points, val_points: *val_points }
            }
            TrainMlpData::File { path } => Source::File(Arc::new(FileDataset::read(path, config)?)),
        };
        let opened = OpenedDataset { data: data.clone(), source };
        opened.check_config(config)?;
        Ok(opened)
    }

    /// The description this dataset was opened from.
    pub fn data(&self) -> &TrainMlpData {
        &self.data
    }

    /// The learner's input width `d_0` the data needs.
    pub fn d_in(&self) -> usize {
        match &self.source {
            Source::Digits { .. } => PIXELS,
            Source::Sinusoid { .. } => 1,
            Source::File(f) => f.d_in(),
        }
    }

    /// The learner's output width `d_L` the data needs.
    pub fn d_out(&self) -> usize {
        match &self.source {
            Source::Digits { classes, .. } => *classes,
            Source::Sinusoid { .. } => 1,
            Source::File(f) => f.d_out(),
        }
    }

    /// The loss the data's targets call for.
    pub fn loss(&self) -> LossKind {
        match &self.source {
            Source::Digits { .. } => LossKind::CrossEntropy,
            Source::Sinusoid { .. } => LossKind::Mse,
            Source::File(f) => f.loss(),
        }
    }

    /// The file, for a file dataset.
    pub fn file(&self) -> Option<&FileDataset> {
        match &self.source {
            Source::File(f) => Some(f),
            _ => None,
        }
    }

    /// Checks that learners of `config` fit the data: `model.layers` starts with
    /// [`OpenedDataset::d_in`] and ends with [`OpenedDataset::d_out`], `model.loss` is
    /// [`OpenedDataset::loss`].
    pub fn check_config(&self, config: &Config) -> Result<()> {
        let kind = self.data.kind();
        let layers = &config.model.layers;
        let loss = self.loss();
        if config.model.loss != loss {
            let name = |l: LossKind| match l {
                LossKind::Mse => "mse",
                LossKind::CrossEntropy => "cross_entropy",
            };
            return Err(mismatch(
                kind,
                "model.loss",
                format!("is {} but the data's targets need {}", name(config.model.loss), name(loss)),
            ));
        }
        let (d_in, d_out) = (self.d_in(), self.d_out());
        if layers.len() < 2 || layers[0] != d_in || layers[layers.len() - 1] != d_out {
            return Err(mismatch(
                kind,
                "model.layers",
                format!("is {layers:?} but the data needs input width {d_in} and output width {d_out}"),
            ));
        }
        Ok(())
    }

    /// The training and held-out sets of the run with seed `run_seed` as `T`, with what was
    /// drawn for it. Digits and sinusoid runs materialise their own (small) sets; every run of
    /// a file dataset shares the file's, cast once per process.
    pub(crate) fn run_sets<T: Real>(&self, run_seed: u64) -> (RunContent, Arc<Sets<T>>) {
        match &self.source {
            Source::Digits { digits, pools, classes } => {
                let (chosen, sets) = pools.run_sets(digits, *classes, run_seed);
                (RunContent::Digits { classes: chosen }, Arc::new(sets.cast()))
            }
            Source::Sinusoid { train_points, val_points } => {
                let (amplitude, phase, sets) = sinusoid_run(run_seed, *train_points, *val_points);
                (RunContent::Sinusoid { amplitude, phase }, Arc::new(sets.cast()))
            }
            Source::File(f) => (RunContent::File, f.sets::<T>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for d in [
            TrainMlpData::digits_default(),
            TrainMlpData::Digits { classes: 3 },
            TrainMlpData::sinusoid_default(),
            TrainMlpData::Sinusoid { train_points: 5, val_points: 7 },
            TrainMlpData::File { path: PathBuf::from("/a/b.safetensors") },
        ] {
            assert_eq!(d.to_string().parse::<TrainMlpData>(), Ok(d));
        }
        assert_eq!("digits".parse::<TrainMlpData>(), Ok(TrainMlpData::Digits { classes: 10 }));
        assert_eq!(
            "sinusoid:50".parse::<TrainMlpData>(),
            Ok(TrainMlpData::Sinusoid { train_points: 50, val_points: DEFAULT_VAL_POINTS })
        );
        for bad in ["mnist", "digits:x", "sinusoid:1:2:3", "file:"] {
            assert!(bad.parse::<TrainMlpData>().is_err(), "{bad}");
        }
    }
}
