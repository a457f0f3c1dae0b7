//! The `file:PATH` task family: a directory of task-batch safetensors files (spec §6), used in
//! order of their names, one file per meta-step, cycling.
//!
//! [`FileTasks::open`] lists the directory and reads and validates every file once, so a bad
//! file is reported before training starts. Files are then kept in memory while their total
//! size stays within a cap ([`DEFAULT_CACHE_BYTES`], or the one given to
//! [`FileTasks::open_with_cache`]); the remaining ones are read again, and validated again,
//! each time a step needs them.

use std::path::{Path, PathBuf};

use metasched_engine::{Config, Targets, TaskBatch};
use metasched_formats::read_task_batch;

use crate::error::{Result, TaskError};

/// How many bytes of task data [`FileTasks::open`] keeps in memory (256 MiB).
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// Extension of the task files of a directory.
const EXTENSION: &str = "safetensors";

/// Tasks `first .. first + count` of `batch` as a batch of their own, `None` when that range
/// is not within `0..batch.b`.
pub fn slice_batch<T: Clone>(batch: &TaskBatch<T>, first: usize, count: usize) -> Option<TaskBatch<T>> {
    let end = first.checked_add(count)?;
    if end > batch.b {
        return None;
    }
    let (k, q, d_in, d_out) = (batch.k, batch.q, batch.d_in, batch.d_out);
    let x = |v: &[T], n: usize| v.get(first * n * d_in..end * n * d_in).map(<[T]>::to_vec);
    let y = |t: &Targets<T>, n: usize| match t {
        Targets::Values(v) => v.get(first * n * d_out..end * n * d_out).map(|s| Targets::Values(s.to_vec())),
        Targets::Labels(l) => l.get(first * n..end * n).map(|s| Targets::Labels(s.to_vec())),
    };
    Some(TaskBatch {
        b: count,
        k,
        q,
        d_in,
        d_out,
        support_x: x(&batch.support_x, k)?,
        support_y: y(&batch.support_y, k)?,
        query_x: x(&batch.query_x, q)?,
        query_y: y(&batch.query_y, q)?,
    })
}

/// Bytes of task data a batch holds in memory.
fn batch_bytes(batch: &TaskBatch<f32>) -> usize {
    let t = |t: &Targets<f32>| match t {
        Targets::Values(v) => std::mem::size_of_val(v.as_slice()),
        Targets::Labels(l) => std::mem::size_of_val(l.as_slice()),
    };
    std::mem::size_of_val(batch.support_x.as_slice())
        + std::mem::size_of_val(batch.query_x.as_slice())
        + t(&batch.support_y)
        + t(&batch.query_y)
}

/// The `*.safetensors` files directly in `dir` (not hidden ones, as the shell glob), sorted
/// by name.
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir_error = |source| TaskError::Dir { dir: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        let visible = path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'));
        if visible && path.extension().is_some_and(|e| e == EXTENSION) && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err(TaskError::NoTaskFiles { dir: dir.to_path_buf() });
    }
    Ok(files)
}

/// A directory of task-batch files, all of the same sizes `B, K, Q`, validated against one
/// configuration; meta-step `s` uses file number `s % n_files` in name order.
#[derive(Debug, Clone)]
pub struct FileTasks {
    dir: PathBuf,
    config: Config,
    files: Vec<PathBuf>,
    /// `(B, K, Q)` shared by every file.
    shape: (usize, usize, usize),
    /// The files held in memory (`None`: read on demand).
    cached: Vec<Option<TaskBatch<f32>>>,
}

impl FileTasks {
    /// Opens the task directory `dir` for a model of configuration `config`: lists its
    /// `*.safetensors` files sorted by name, reads and validates each
    /// ([`metasched_formats::read_task_batch`]), checks they all have the same `B`, `K` and
    /// `Q`, and keeps up to [`DEFAULT_CACHE_BYTES`] of them in memory.
    ///
    /// Errors when the directory cannot be listed or holds no task file, when a file is
    /// invalid (naming it), or when a file's sizes differ from the first file's.
    pub fn open(dir: impl AsRef<Path>, config: &Config) -> Result<FileTasks> {
        Self::open_with_cache(dir, config, DEFAULT_CACHE_BYTES)
    }

    /// As [`FileTasks::open`], keeping files in memory (in name order) while their total size
    /// stays within `cache_bytes`; `0` reads every file again at each use.
    pub fn open_with_cache(dir: impl AsRef<Path>, config: &Config, cache_bytes: usize) -> Result<FileTasks> {
        let dir = dir.as_ref();
        let files = list(dir)?;
        let mut shape = None;
        let mut cached = Vec::with_capacity(files.len());
        let mut held = 0usize;
        for path in &files {
            let batch = read_task_batch(path, config)?;
            let got = (batch.b, batch.k, batch.q);
            let expected = *shape.get_or_insert(got);
            if got != expected {
                return Err(TaskError::FileShape {
                    path: path.clone(),
                    got,
                    reference: files[0].clone(),
                    expected,
                });
            }
            let size = batch_bytes(&batch);
            if held.saturating_add(size) <= cache_bytes {
                held += size;
                cached.push(Some(batch));
            } else {
                cached.push(None);
            }
        }
        let Some(shape) = shape else {
            return Err(TaskError::NoTaskFiles { dir: dir.to_path_buf() });
        };
        Ok(FileTasks { dir: dir.to_path_buf(), config: config.clone(), files, shape, cached })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The task files, in the order meta-steps use them.
    pub fn paths(&self) -> &[PathBuf] {
        &self.files
    }

    /// Number of task files (at least 1).
    pub fn n_files(&self) -> usize {
        self.files.len()
    }

    /// Tasks per file, `B`.
    pub fn tasks_per_file(&self) -> usize {
        self.shape.0
    }

    /// Support points per task, `K`.
    pub fn support_points(&self) -> usize {
        self.shape.1
    }

    /// Query points per task, `Q`.
    pub fn query_points(&self) -> usize {
        self.shape.2
    }

    /// Number of files held in memory (the others are read at each use).
    pub fn n_cached(&self) -> usize {
        self.cached.iter().filter(|c| c.is_some()).count()
    }

    /// The file meta-step `step` uses.
    pub fn path_for_step(&self, step: u64) -> &Path {
        &self.files[self.file_index(step)]
    }

    fn file_index(&self, step: u64) -> usize {
        // `files` is never empty; the remainder is below its length, hence fits a usize.
        (step % self.files.len() as u64) as usize
    }

    /// Reads (again) file `i`, checking it still has the directory's sizes.
    fn read(&self, i: usize) -> Result<TaskBatch<f32>> {
        let path = &self.files[i];
        let batch = read_task_batch(path, &self.config)?;
        let got = (batch.b, batch.k, batch.q);
        if got != self.shape {
            return Err(TaskError::FileShape {
                path: path.clone(),
                got,
                reference: self.files[0].clone(),
                expected: self.shape,
            });
        }
        Ok(batch)
    }

    /// Every task of file number `step % n_files`.
    pub fn batch_for_step(&self, step: u64) -> Result<TaskBatch<f32>> {
        let i = self.file_index(step);
        match &self.cached[i] {
            Some(batch) => Ok(batch.clone()),
            None => self.read(i),
        }
    }

    /// Tasks `first .. first + count` of file number `step % n_files`; an error naming the file
    /// when the range is not within `0..tasks_per_file()`.
    pub fn sample(&self, step: u64, first: u64, count: usize) -> Result<TaskBatch<f32>> {
        let i = self.file_index(step);
        let out_of_range =
            || TaskError::TaskRange { path: self.files[i].clone(), first, count, available: self.shape.0 };
        let start = usize::try_from(first).map_err(|_| out_of_range())?;
        if start.checked_add(count).is_none_or(|end| end > self.shape.0) {
            return Err(out_of_range());
        }
        let sliced = match &self.cached[i] {
            Some(batch) => slice_batch(batch, start, count),
            None => slice_batch(&self.read(i)?, start, count),
        };
        sliced.ok_or_else(out_of_range)
    }
}

#[cfg(test)]
mod tests {
    use metasched_engine::{Activation, LossKind};
    use metasched_formats::write_task_batch;

    use super::*;
    use crate::{Sinusoid, Split, random_batch};

    fn sinusoid_config() -> Config {
        Config::sinusoid_default()
    }

    /// A distinct sinusoid batch per step, `b` tasks of 5 + 4 points.
    fn batch(step: u64, b: usize) -> TaskBatch<f32> {
        Sinusoid::default().sample_split(Split::Train, 1, step, 0, b, 5, 4)
    }

    fn write(dir: &Path, name: &str, batch: &TaskBatch<f32>) {
        write_task_batch(dir.join(name), batch).expect("write task file");
    }

    fn msg(r: Result<FileTasks>) -> String {
        r.expect_err("must fail").to_string()
    }

    #[test]
    fn files_are_used_in_name_order_and_cycle() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Written out of order; names sort as b0 < b1 < b2.
        write(dir.path(), "b2.safetensors", &batch(2, 3));
        write(dir.path(), "b0.safetensors", &batch(0, 3));
        write(dir.path(), "b1.safetensors", &batch(1, 3));
        std::fs::write(dir.path().join("notes.txt"), "not a task file").expect("write");
        write(dir.path(), ".hidden.safetensors", &batch(9, 1));
        std::fs::create_dir(dir.path().join("sub.safetensors")).expect("mkdir");
        for cache in [DEFAULT_CACHE_BYTES, 0] {
            let tasks = FileTasks::open_with_cache(dir.path(), &sinusoid_config(), cache).expect("open");
            assert_eq!(tasks.n_files(), 3);
            assert_eq!(tasks.n_cached(), if cache == 0 { 0 } else { 3 });
            assert_eq!((tasks.tasks_per_file(), tasks.support_points(), tasks.query_points()), (3, 5, 4));
            let names: Vec<_> = tasks.paths().iter().filter_map(|p| p.file_name()).collect();
            assert_eq!(names, ["b0.safetensors", "b1.safetensors", "b2.safetensors"]);
            for step in 0..7 {
                assert_eq!(tasks.batch_for_step(step).expect("batch"), batch(step % 3, 3), "step {step}");
                assert!(tasks.path_for_step(step).ends_with(format!("b{}.safetensors", step % 3)));
            }
            assert_eq!(tasks.batch_for_step(u64::MAX).expect("batch"), batch(u64::MAX % 3, 3));
        }
    }

    #[test]
    fn the_cache_holds_files_up_to_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        for step in 0..3 {
            write(dir.path(), &format!("{step}.safetensors"), &batch(step, 2));
        }
        let one = batch_bytes(&batch(0, 2));
        let tasks = FileTasks::open_with_cache(dir.path(), &sinusoid_config(), 2 * one).expect("open");
        assert_eq!(tasks.n_cached(), 2);
        assert_eq!(tasks.batch_for_step(2).expect("read again"), batch(2, 2));
        assert_eq!(
            tasks.sample(5, 1, 1).expect("read again"),
            slice_batch(&batch(2, 2), 1, 1).expect("in range")
        );
    }

    #[test]
    fn slices_are_tasks_of_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.safetensors", &batch(0, 4));
        write(dir.path(), "b.safetensors", &batch(1, 4));
        for cache in [DEFAULT_CACHE_BYTES, 0] {
            let tasks = FileTasks::open_with_cache(dir.path(), &sinusoid_config(), cache).expect("open");
            // Step 3 uses b: tasks 2..4 of b are Sinusoid tasks 2..4 of step 1.
            let got = tasks.sample(3, 2, 2).expect("slice");
            assert_eq!(got, Sinusoid::default().sample(1, 1, 2, 2, 5, 4));
            assert_eq!(tasks.sample(0, 0, 4).expect("whole"), batch(0, 4));
            assert_eq!(tasks.sample(0, 4, 0).expect("empty").b, 0);
            for (first, count) in [(3, 2), (5, 0), (0, 5), (u64::MAX, 1), (1, usize::MAX)] {
                let e = tasks.sample(1, first, count).expect_err("out of range").to_string();
                assert!(e.contains("b.safetensors") && e.contains("it holds 4"), "{e}");
            }
        }
    }

    #[test]
    fn slice_batch_cuts_values_and_labels() {
        let mut config = Config::sinusoid_default();
        config.model = metasched_engine::ModelConfig {
            layers: vec![3, 4, 5],
            activation: Activation::Tanh,
            loss: LossKind::CrossEntropy,
        };
        let b = random_batch::<f32>(&config, 4, 2, 3, 7);
        let s = slice_batch(&b, 1, 2).expect("in range");
        assert_eq!((s.b, s.k, s.q, s.d_in, s.d_out), (2, 2, 3, 3, 5));
        assert_eq!(&s.support_x[..], &b.support_x[2 * 3..6 * 3]);
        assert_eq!(&s.query_x[..], &b.query_x[3 * 3..9 * 3]);
        let (Targets::Labels(all), Targets::Labels(part)) = (&b.query_y, &s.query_y) else {
            panic!("labels")
        };
        assert_eq!(&part[..], &all[3..9]);
        assert!(slice_batch(&b, 3, 2).is_none());
        assert!(slice_batch(&b, usize::MAX, 2).is_none());
        let v = batch(0, 3);
        let sv = slice_batch(&v, 2, 1).expect("in range");
        let (Targets::Values(all), Targets::Values(part)) = (&v.support_y, &sv.support_y) else {
            panic!("values")
        };
        assert_eq!(&part[..], &all[10..15]);
    }

    #[test]
    fn a_missing_or_empty_directory_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nowhere");
        let e = msg(FileTasks::open(&missing, &sinusoid_config()));
        assert!(
            e.starts_with("task directory ") && e.contains("nowhere") && e.contains("cannot list"),
            "{e}"
        );
        let e = msg(FileTasks::open(dir.path(), &sinusoid_config()));
        assert!(e.contains(&dir.path().display().to_string()) && e.contains("no *.safetensors"), "{e}");
        std::fs::write(dir.path().join("tasks.bin"), "x").expect("write");
        let e = msg(FileTasks::open(dir.path(), &sinusoid_config()));
        assert!(e.contains("no *.safetensors"), "{e}");
    }

    #[test]
    fn mismatched_sizes_are_an_error_naming_the_file() {
        for (name, other) in [
            ("b.safetensors", batch(1, 2)),
            ("c.safetensors", { Sinusoid::default().sample(1, 1, 0, 3, 6, 4) }),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            write(dir.path(), "a.safetensors", &batch(0, 3));
            write(dir.path(), name, &other);
            let e = msg(FileTasks::open(dir.path(), &sinusoid_config()));
            assert!(e.starts_with("task file ") && e.contains(name) && e.contains("a.safetensors"), "{e}");
        }
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.safetensors", &batch(0, 3));
        std::fs::write(dir.path().join("b.safetensors"), b"garbage").expect("write");
        let e = msg(FileTasks::open(dir.path(), &sinusoid_config()));
        assert!(e.contains("b.safetensors"), "{e}");
        // A valid file that does not fit the configuration (2 inputs instead of 1).
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::sinusoid_default();
        config.model.layers = vec![2, 8, 1];
        write(dir.path(), "wide.safetensors", &random_batch::<f32>(&config, 2, 3, 3, 1));
        let e = msg(FileTasks::open(dir.path(), &sinusoid_config()));
        assert!(e.contains("wide.safetensors") && e.contains("support.x"), "{e}");
    }

    #[test]
    fn a_file_changed_after_opening_is_checked_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "a.safetensors", &batch(0, 3));
        write(dir.path(), "b.safetensors", &batch(1, 3));
        let tasks = FileTasks::open_with_cache(dir.path(), &sinusoid_config(), 0).expect("open");
        write(dir.path(), "b.safetensors", &batch(1, 2));
        let e = tasks.batch_for_step(1).expect_err("changed").to_string();
        assert!(e.contains("b.safetensors") && e.contains("2, 5, 4"), "{e}");
        std::fs::remove_file(dir.path().join("b.safetensors")).expect("rm");
        let e = tasks.sample(1, 0, 1).expect_err("gone").to_string();
        assert!(e.contains("b.safetensors"), "{e}");
        assert_eq!(tasks.batch_for_step(0).expect("a is intact"), batch(0, 3));
    }
}
