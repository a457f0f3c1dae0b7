//! User dataset files of the `train-mlp` family (spec §7.1): one safetensors file holding the
//! training data (`x` with `y` or `labels`) and optionally an explicit held-out split
//! (`val.x` with `val.y` or `val.labels`). Read and validated once per process; every run
//! shares it and differs from the others only by its seed (data order and learner
//! initialisation): a file dataset has no per-run class subset or function.

use std::any::{Any, TypeId};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use metasched_engine::horizon::Batch;
use metasched_engine::rng::CounterRng;
use metasched_engine::{Config, LossKind, Real, Targets};
use metasched_formats::{FileKind, FormatError, TensorFile};

use crate::error::{Result, TaskError};
use crate::train_mlp::dataset::Sets;

/// Percentage (rounded down, at least one point) of a file's rows held out when it has no
/// `val.x`.
pub const FILE_VAL_PERCENT: usize = 20;

/// Seed of the fixed shuffle choosing the held-out rows of a file without `val.x` (the same
/// for every run and every user seed, so all runs validate on the same rows).
pub const FILE_SPLIT_SEED: u64 = 0x6669_6c65_7370_6c74; // "filesplt"

/// Every tensor name a dataset file may hold.
pub const DATASET_TENSORS: [&str; 6] = ["x", "y", "labels", "val.x", "val.y", "val.labels"];

/// Casts of the file's sets to the float types runs asked for, one per type.
type CastCache = Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>;

/// A validated dataset file.
#[derive(Debug)]
pub struct FileDataset {
    path: PathBuf,
    d_in: usize,
    d_out: usize,
    loss: LossKind,
    explicit_val: bool,
    sets: Sets<f32>,
    casts: CastCache,
}

fn bad(path: &Path, tensor: &str, reason: impl Into<String>) -> TaskError {
    TaskError::DatasetFile { path: path.to_path_buf(), tensor: tensor.to_string(), reason: reason.into() }
}

/// The shape of `name` (present), checked to be of rank `rank`.
fn shape_of(file: &TensorFile, name: &str, dims: &str) -> Result<Vec<usize>> {
    let shape = file.shape(name).unwrap_or_default().to_vec();
    let rank = dims.split(',').count();
    if shape.len() != rank {
        return Err(bad(
            file.path(),
            name,
            format!("shape {shape:?} has rank {}, expected rank {rank} [{dims}]", shape.len()),
        ));
    }
    Ok(shape)
}

/// The first non-finite value of a `[rows, cols]` tensor, as an error naming its position.
fn check_finite(file: &TensorFile, name: &str, v: &[f32], cols: usize) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(bad(
            file.path(),
            name,
            format!(
                "non-finite value {} at row {}, column {} (flat index {i})",
                v[i],
                i / cols.max(1),
                i % cols.max(1)
            ),
        )),
    }
}

/// Reads one split: `{prefix}x` `[N, d_0]` and `{prefix}y` `[N, d_L]` or `{prefix}labels`
/// `[N]`, checked against each other and the configuration.
fn read_split(file: &TensorFile, prefix: &str, loss: LossKind, config: &Config) -> Result<Batch<f32>> {
    let path = file.path();
    let (d_in, d_out) = (config.d_in(), config.d_out());
    let xname = format!("{prefix}x");
    let x = file.f32(&xname)?;
    let shape = shape_of(file, &xname, "N, d_0")?;
    let n = shape[0];
    if n == 0 {
        return Err(bad(path, &xname, "holds no row: the split is empty"));
    }
    if shape[1] != d_in {
        return Err(bad(
            path,
            &xname,
            format!(
                "has {} columns but the learner's input width (config `model.layers`) is {d_in}",
                shape[1]
            ),
        ));
    }
    check_finite(file, &xname, &x, d_in)?;
    let y = match loss {
        LossKind::Mse => {
            let name = format!("{prefix}y");
            let y = file.f32(&name)?;
            let shape = shape_of(file, &name, "N, d_L")?;
            if shape[0] != n {
                return Err(bad(path, &name, format!("has {} rows but `{xname}` has {n}", shape[0])));
            }
            if shape[1] != d_out {
                return Err(bad(
                    path,
                    &name,
                    format!(
                        "has {} columns but the learner's output width (config `model.layers`) is {d_out}",
                        shape[1]
                    ),
                ));
            }
            check_finite(file, &name, &y, d_out)?;
            Targets::Values(y)
        }
        LossKind::CrossEntropy => {
            let name = format!("{prefix}labels");
            let raw = file.i64(&name)?;
            let shape = shape_of(file, &name, "N")?;
            if shape[0] != n {
                return Err(bad(path, &name, format!("has {} rows but `{xname}` has {n}", shape[0])));
            }
            let mut labels = Vec::with_capacity(n);
            for (index, &value) in raw.iter().enumerate() {
                match u32::try_from(value) {
                    Ok(l) if (l as usize) < d_out => labels.push(l),
                    _ => {
                        return Err(FormatError::BadLabel {
                            kind: FileKind::Dataset,
                            path: path.to_path_buf(),
                            tensor: name,
                            index,
                            value,
                            classes: d_out,
                        }
                        .into());
                    }
                }
            }
            Targets::Labels(labels)
        }
    };
    Ok(Batch { n, x, y })
}

/// Rows `rows` of `set`.
fn rows(set: &Batch<f32>, rows: &[usize], d_in: usize, d_out: usize) -> Batch<f32> {
    let mut x = Vec::with_capacity(rows.len() * d_in);
    for &r in rows {
        x.extend_from_slice(&set.x[r * d_in..(r + 1) * d_in]);
    }
    let y = match &set.y {
        Targets::Values(v) => {
            let mut y = Vec::with_capacity(rows.len() * d_out);
            for &r in rows {
                y.extend_from_slice(&v[r * d_out..(r + 1) * d_out]);
            }
            Targets::Values(y)
        }
        Targets::Labels(l) => Targets::Labels(rows.iter().map(|&r| l[r]).collect()),
    };
    Batch { n: rows.len(), x, y }
}

impl FileDataset {
    /// Reads and validates the dataset file at `path` for learners of configuration `config`.
    ///
    /// Errors (bad input, naming the file and the tensor): unreadable or not safetensors; an
    /// unknown tensor name; both or neither of `y` and `labels`; targets not matching
    /// `model.loss`; a missing tensor, a wrong dtype (`F32` for `x`, `y`; `I64` for labels) or
    /// rank; row counts of inputs and targets differing; widths not matching `model.layers`;
    /// a NaN or infinity (with its row and column); a label outside `0..d_L`; an empty split;
    /// `val.x` without held-out targets or the reverse.
    pub fn read(path: impl AsRef<Path>, config: &Config) -> Result<FileDataset> {
        let path = path.as_ref();
        let file = TensorFile::read(path, FileKind::Dataset)?;
        if let Some(name) = file.names().find(|n| !DATASET_TENSORS.contains(n)) {
            return Err(bad(
                path,
                name,
                "unknown tensor (a dataset file holds x, y or labels, and optionally val.x, val.y or val.labels)",
            ));
        }
        let loss = match (file.contains("y"), file.contains("labels")) {
            (true, true) => {
                return Err(bad(path, "labels", "given together with `y`: a dataset has one kind of target"));
            }
            (false, false) => {
                return Err(bad(
                    path,
                    "y",
                    "missing: a dataset needs targets `y` (mse) or `labels` (cross_entropy)",
                ));
            }
            (true, false) => LossKind::Mse,
            (false, true) => LossKind::CrossEntropy,
        };
        let (target, other) = match loss {
            LossKind::Mse => ("val.y", "val.labels"),
            LossKind::CrossEntropy => ("val.labels", "val.y"),
        };
        if file.contains(other) {
            return Err(bad(
                path,
                other,
                format!(
                    "the training targets are `{}`, so the held-out ones must be `{target}`",
                    &target[4..]
                ),
            ));
        }
        if config.model.loss != loss {
            let (got, want) = match loss {
                LossKind::Mse => ("y", "mse"),
                LossKind::CrossEntropy => ("labels", "cross_entropy"),
            };
            return Err(TaskError::ConfigMismatch {
                dataset: "file",
                field: "model.loss",
                reason: format!("{} holds `{got}`, which needs loss {want}", path.display()),
            });
        }
        let all = read_split(&file, "", loss, config)?;
        let (d_in, d_out) = (config.d_in(), config.d_out());
        let explicit_val = match (file.contains("val.x"), file.contains(target)) {
            (true, true) => true,
            (false, false) => false,
            (true, false) => {
                return Err(bad(path, target, "missing: `val.x` is given without held-out targets"));
            }
            (false, true) => {
                return Err(bad(path, "val.x", format!("missing: `{target}` is given without inputs")));
            }
        };
        let sets = if explicit_val {
            Sets { train: all, val: read_split(&file, "val.", loss, config)? }
        } else {
            if all.n < 2 {
                return Err(bad(
                    path,
                    "x",
                    format!(
                        "holds {} row: at least 2 are needed to hold out {FILE_VAL_PERCENT}% for validation \
                         (or give `val.x`)",
                        all.n
                    ),
                ));
            }
            let (train, val) = Self::split_rows(all.n);
            Sets { train: rows(&all, &train, d_in, d_out), val: rows(&all, &val, d_in, d_out) }
        };
        Ok(FileDataset {
            path: path.to_path_buf(),
            d_in,
            d_out,
            loss,
            explicit_val,
            sets,
            casts: Mutex::default(),
        })
    }

    /// The training and held-out rows (each ascending) of a file of `n >= 2` rows without
    /// `val.x`: the rows `0..n` shuffled by the stream `(FILE_SPLIT_SEED, [n])` (Fisher–Yates as
    /// `CounterRng::shuffle`); the first `max(1, floor(n · 20 / 100))` are held out.
    pub fn split_rows(n: usize) -> (Vec<usize>, Vec<usize>) {
        let mut idx: Vec<usize> = (0..n).collect();
        CounterRng::new(FILE_SPLIT_SEED, &[n as u64]).shuffle(&mut idx);
        let held = (n * FILE_VAL_PERCENT / 100).max(1).min(n);
        let mut train = idx.split_off(held);
        idx.sort_unstable();
        train.sort_unstable();
        (train, idx)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Input width `d_0` (columns of `x`).
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// Output width `d_L`: columns of `y`, or the classes of the learner `labels` were checked
    /// against.
    pub fn d_out(&self) -> usize {
        self.d_out
    }

    /// `mse` for `y`, `cross_entropy` for `labels`.
    pub fn loss(&self) -> LossKind {
        self.loss
    }

    /// Whether the file gave its held-out split (`val.x`) rather than having one carved out.
    pub fn explicit_val(&self) -> bool {
        self.explicit_val
    }

    /// Points in the training split.
    pub fn n_train(&self) -> usize {
        self.sets.train.n
    }

    /// Points in the held-out split.
    pub fn n_val(&self) -> usize {
        self.sets.val.n
    }

    /// The training and held-out sets as `T`, cast on the first request for `T` and shared by
    /// every later run.
    pub(crate) fn sets<T: Real>(&self) -> Arc<Sets<T>> {
        let mut casts = self.casts.lock().unwrap_or_else(PoisonError::into_inner);
        let id = TypeId::of::<T>();
        if let Some(found) =
            casts.iter().find(|(t, _)| *t == id).and_then(|(_, a)| a.clone().downcast::<Sets<T>>().ok())
        {
            return found;
        }
        let sets = Arc::new(self.sets.cast::<T>());
        casts.push((id, sets.clone()));
        sets
    }
}
