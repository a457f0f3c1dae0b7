//! The training configuration: the concern structs of [`crate::settings`] put together.
//! A TOML file (`--config run.toml`), the command-line flags (which override the file) and a
//! resumed checkpoint all fill the same [`TrainConfig`]; on `--resume` its [`Trajectory`]
//! comes from the checkpoint and only its [`RunSettings`] may change.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use metasched_engine::Config;
use metasched_proto::{TaskFamily, TaskSpec};
use serde::{Deserialize, Serialize};

use super::remote_pool::CollectiveMode;
use crate::exit::BadInput;
pub use crate::settings::bad;
use crate::settings::{GivenFlags, RunSettings, Trajectory};

/// Everything that defines a training run, as flat snake_case keys (the shape of `run.toml`
/// and of the checkpoint's `metasched.config` key `train.config`). The trajectory part is
/// stored in every checkpoint so a resumed run continues with exactly the same settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Args)]
pub struct TrainConfig {
    /// What the run computes: fixed for its whole life.
    #[serde(flatten)]
    #[command(flatten)]
    pub trajectory: Trajectory,
    /// How it is carried out: may change on resume.
    #[serde(flatten)]
    #[command(flatten)]
    pub run: RunSettings,
}

/// `meta-coord train` flags: the settings of [`TrainConfig`] (a flag given overrides
/// `--config`, which overrides the defaults), the run directory and the transport.
#[derive(Debug, Clone, Default, Args)]
pub struct TrainArgs {
    /// Which of the settings' flags were typed (first: clap hands the later fields' values
    /// out by removing them from the matches).
    #[command(flatten)]
    pub given: GivenFlags,
    /// TOML file with any `TrainConfig` keys (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory: checkpoint, metrics.jsonl, plots, eval.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its checkpoint.
    #[arg(long, conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// The settings, with the flags' defaults where none was given.
    #[command(flatten)]
    pub settings: TrainConfig,
    /// Distributed training: where workers connect.
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// How workers reach the coordinator. Not part of the run's configuration: a resumed run
/// may use a different transport and still ends bitwise the same.
#[derive(Debug, Clone, Default, Args)]
pub struct TransportArgs {
    /// Listen for `meta-worker` processes on [ADDR:]PORT; the address defaults to 127.0.0.1
    /// (loopback only; give 0.0.0.0:7878 for a cluster), `--listen` alone means
    /// 127.0.0.1:7878, port 0 picks a free one.
    #[arg(long, conflicts_with = "spawn_workers", num_args = 0..=1, default_missing_value = "127.0.0.1:7878")]
    pub listen: Option<String>,
    /// With --listen: workers to wait for before training (more may join later).
    #[arg(long, default_value_t = 1)]
    pub expect_workers: usize,
    /// Start N local `meta-worker` processes on loopback and train with them.
    #[arg(long)]
    pub spawn_workers: Option<usize>,
    /// File holding the shared token (else METASCHED_TOKEN); required with --listen.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Seconds to wait for workers when none is connected, before saving and stopping.
    #[arg(long, default_value_t = 300.0)]
    pub worker_timeout: f64,
    /// Seconds of silence after which a worker is considered dead.
    #[arg(long, default_value_t = 30.0)]
    pub heartbeat_timeout: f64,
    /// Seconds after which a pending part is also sent to another worker.
    #[arg(long, default_value_t = 600.0)]
    pub step_deadline: f64,
    /// auto: workers that all offer the same collective (NCCL on GPUs, its TCP stand-in on
    /// the emulator) reduce each meta-step among themselves and one sends the result; off:
    /// every worker sends its part and the coordinator reduces.
    #[arg(long, value_enum, default_value_t = CollectiveMode::Auto)]
    pub collective: CollectiveMode,
    /// Device of the in-process workers: cpu, emu (the CUDA kernels on the CPU emulator) or
    /// cuda:N (for --spawn-workers use --worker-device).
    #[arg(long, default_value = "cpu", conflicts_with_all = ["listen", "spawn_workers"])]
    pub device: crate::device::Device,
    /// Device of the workers --spawn-workers starts: cpu, emu, or cuda (worker i gets
    /// cuda:i).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "emu", "cuda"])]
    pub worker_device: String,
}

/// A configuration as a flat TOML table (the shape of `run.toml`).
pub fn to_table(cfg: &TrainConfig) -> anyhow::Result<toml::Table> {
    toml::Table::try_from(cfg)
        .map_err(|e| BadInput(format!("the run configuration cannot be written as TOML: {e}")).into())
}

/// The keys of a settings struct's flat form.
fn keys_of<T: Serialize + Default>() -> BTreeSet<String> {
    match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// Every key a configuration may hold.
pub fn known_keys() -> BTreeSet<String> {
    keys_of::<TrainConfig>()
}

/// The keys a resumed run must keep.
pub fn trajectory_keys() -> BTreeSet<String> {
    keys_of::<Trajectory>()
}

/// Refuses keys that are no setting: a typo must not silently train with a default.
pub fn check_keys<'a>(keys: impl IntoIterator<Item = &'a String>, origin: &str) -> anyhow::Result<()> {
    let known = known_keys();
    if let Some(k) = keys.into_iter().find(|k| !known.contains(k.as_str())) {
        let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        return Err(BadInput(format!(
            "{origin}: unknown field `{k}`, expected one of {}",
            expected.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// A configuration from a flat table; missing keys take their defaults, and a bad value is
/// reported with its key.
pub fn from_table(table: toml::Table, origin: &str) -> anyhow::Result<TrainConfig> {
    check_keys(table.keys(), origin)?;
    if let Ok(cfg) = toml::Value::Table(table.clone()).try_into::<TrainConfig>() {
        return Ok(cfg);
    }
    for (key, value) in &table {
        let one: toml::Table = [(key.clone(), value.clone())].into_iter().collect();
        if let Err(e) = toml::Value::Table(one).try_into::<TrainConfig>() {
            let e = e.to_string().replace('\n', " ");
            return Err(BadInput(format!("{origin}: field `{key}`: {}", e.trim())).into());
        }
    }
    toml::Value::Table(table)
        .try_into::<TrainConfig>()
        .map_err(|e| BadInput(format!("{origin}: {}", e.to_string().replace('\n', " "))).into())
}

/// Reads a TOML run file as a table of known keys.
pub fn read_toml(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("config file {}: cannot read: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        BadInput(format!("config file {}: {}", path.display(), e.to_string().replace('\n', " ")))
    })?;
    check_keys(table.keys(), &format!("config file {}", path.display()))?;
    Ok(table)
}

/// Reads a TOML run file; unknown keys are an error.
pub fn load_toml(path: &Path) -> anyhow::Result<TrainConfig> {
    from_table(read_toml(path)?, &format!("config file {}", path.display()))
}

/// The command-line spelling of the setting `id` (`learn_init` is `--no-learn-init`).
pub fn flag_name(id: &str) -> String {
    let cmd = TrainArgs::augment_args(clap::Command::new("train"));
    cmd.get_arguments()
        .find(|a| a.get_id().as_str() == id)
        .and_then(|a| a.get_long())
        .map_or_else(|| format!("--{}", id.replace('_', "-")), |l| format!("--{l}"))
}

fn show(v: Option<&toml::Value>) -> String {
    v.map_or_else(|| "unset".to_string(), ToString::to_string)
}

impl TrainArgs {
    /// The settings whose flags were typed, as (key, value given; `None`: an optional
    /// setting left unset).
    fn typed(&self) -> anyhow::Result<Vec<(String, Option<toml::Value>)>> {
        let flags = to_table(&self.settings)?;
        let known = known_keys();
        Ok(known
            .into_iter()
            .filter(|k| self.given.contains(k))
            .map(|k| {
                let v = flags.get(&k).cloned();
                (k, v)
            })
            .collect())
    }

    /// The configuration of a new run: defaults, then `--config`, then flags.
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let cfg = match &self.config {
            None => self.settings.clone(),
            Some(path) => {
                let mut table = to_table(&load_toml(path)?)?;
                for (key, value) in self.typed()? {
                    match value {
                        Some(v) => table.insert(key, v),
                        None => table.remove(&key),
                    };
                }
                from_table(table, "the flags")?
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration of a resumed run: the trajectory `stored` in its checkpoint, the
    /// runtime settings of the run's `run.toml` (when there is one), then the flags. A
    /// trajectory setting that differs, in the file or in a flag, is refused naming it.
    pub fn resume(&self, stored: &TrainConfig, run_toml: Option<&Path>) -> anyhow::Result<TrainConfig> {
        let stored = to_table(stored)?;
        let trajectory = trajectory_keys();
        let mut merged = stored.clone();
        let mut refused = Vec::new();
        if let Some(path) = run_toml {
            let raw = read_toml(path)?;
            let file = to_table(&from_table(raw.clone(), &format!("config file {}", path.display()))?)?;
            for key in raw.keys() {
                let (was, now) = (stored.get(key), file.get(key));
                if trajectory.contains(key) {
                    if was != now {
                        refused.push(format!(
                            "`{key}` = {} in {} (the checkpoint has {})",
                            show(now),
                            path.display(),
                            show(was)
                        ));
                    }
                } else if let Some(v) = now {
                    merged.insert(key.clone(), v.clone());
                }
            }
        }
        for (key, now) in self.typed()? {
            let was = stored.get(&key);
            if trajectory.contains(&key) {
                if was != now.as_ref() {
                    refused.push(format!(
                        "{} (`{key}` = {}; the checkpoint has {})",
                        flag_name(&key),
                        show(now.as_ref()),
                        show(was)
                    ));
                }
            } else if let Some(v) = now {
                merged.insert(key, v);
            }
        }
        if !refused.is_empty() {
            return Err(BadInput(format!(
                "--resume continues a run exactly; these would change it: {} (start a new run with --out instead)",
                refused.join(", ")
            ))
            .into());
        }
        let cfg = from_table(merged, "the resumed configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }
}

impl TrainConfig {
    /// The trajectory with the runtime settings at their defaults: what a checkpoint
    /// stores, so the number of workers, the logging cadence or the planned length never
    /// change a checkpoint's bytes.
    pub fn for_checkpoint(&self) -> TrainConfig {
        TrainConfig { trajectory: self.trajectory.clone(), run: RunSettings::default() }
    }

    /// The task family this configuration names.
    pub fn family(&self) -> anyhow::Result<TaskFamily> {
        let t = &self.trajectory;
        if t.task.is_long_runs() {
            return Ok(TaskFamily::TrainMlp(t.long.long_runs(self.run.remat)?));
        }
        t.task.family()
    }

    /// The task specification handed to workers.
    pub fn task_spec(&self) -> anyhow::Result<TaskSpec> {
        let t = &self.trajectory.task;
        Ok(TaskSpec {
            family: self.family()?,
            shots: t.shots,
            query: t.query,
            ways: t.ways,
            seed: self.trajectory.outer.seed,
        })
    }

    /// Query points of evaluation tasks.
    pub fn eval_query(&self) -> usize {
        match (self.run.eval_query, self.family()) {
            (0, Ok(TaskFamily::Sinusoid)) => 100,
            (0, _) => self.trajectory.task.query,
            (q, _) => q,
        }
    }

    /// The contract-level model configuration (spec §5).
    pub fn model_config(&self) -> anyhow::Result<Config> {
        let t = &self.trajectory;
        crate::settings::model_config(&t.learner, &t.scheduler, &t.inner, &self.family()?, t.task.ways)
    }

    /// Checks every setting (each concern's own `validate`, then the model, then what the
    /// run would need of the machine), for flags, `--config`, `run.toml` and checkpoints
    /// alike, before anything is allocated or written.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.trajectory.validate()?;
        self.run.validate()?;
        self.check_memory()?;
        self.model_config()?;
        Ok(())
    }

    /// Refuses a run whose dominant buffers cannot fit in this machine's memory. The
    /// estimate (bytes, in `f64` so that no request overflows) adds:
    /// - the parameters `P` (theta: `Σ d_l d_{l+1} + d_{l+1}`; phi: `4h (3 + h + 2) + G (h + 1)`
    ///   for the LSTM, `T G` for LSLR), which the coordinator holds as values, gradient and
    ///   Adam's two moments (4 bytes each) and as one fixed-point part sum per worker (16
    ///   bytes each);
    /// - the task data of a meta-step, `B (K + Q) (d_in + d_out)` values, and its per-task
    ///   outputs `B (T G + 1)`;
    /// - the working memory of each task in flight (one per engine thread, at most `B`): the
    ///   unrolled inner loop keeps, per inner step, the learner's parameters and gradients
    ///   (`3 P_theta`) and the activations of the support and query points
    ///   (`2 (K + Q) Σ d`), counted as 8-byte values;
    /// - the larger evaluation (`--eval-tasks` / `--final-eval-tasks` tasks of `K + Q_eval`
    ///   points, sampled at once, and their rates `n (T G + 2)`).
    ///
    /// It is an order of magnitude, not an exact account: it exists to refuse requests that
    /// cannot possibly fit, not to tune the borderline.
    pub fn memory_needs(&self) -> Vec<crate::resources::Need> {
        use crate::resources::Need;
        let t = &self.trajectory;
        let f = |v: usize| v as f64;
        let layers: Vec<f64> = if t.learner.layers.is_empty() {
            match self.family() {
                Ok(TaskFamily::Digits) => vec![64.0, 64.0, 64.0, f(t.task.ways)],
                _ => vec![1.0, 40.0, 40.0, 1.0],
            }
        } else {
            t.learner.layers.iter().map(|&d| f(d)).collect()
        };
        let theta: f64 = layers.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
        let widths: f64 = layers.iter().sum();
        let (d_in, d_out) = (layers.first().copied().unwrap_or(1.0), layers.last().copied().unwrap_or(1.0));
        let g = 2.0 * (layers.len().max(1) - 1) as f64;
        let (h, steps) = (f(t.scheduler.hidden), f(t.inner.inner_steps));
        let phi = match t.scheduler.scheduler {
            metasched_engine::SchedulerKind::Lstm => 4.0 * h * (3.0 + h + 2.0) + g * (h + 1.0),
            metasched_engine::SchedulerKind::Lslr => steps * g,
            metasched_engine::SchedulerKind::Fixed => 0.0,
        };
        let params = theta + phi;
        let workers = f(self.run.workers.max(1));
        let threads = if self.run.threads == 0 { f(crate::settings::cores()) } else { f(self.run.threads) };
        let (b, k, q) = (f(t.outer.meta_batch), f(t.task.shots), f(t.task.query));
        let eval_q = f(self.eval_query());
        let eval_n =
            f(self.run.final_eval_tasks.max(if self.run.eval_every > 0 { self.run.eval_tasks } else { 0 }));
        let in_flight = |n: f64| n.min(workers * threads);
        let per_task = |points: f64| (steps + 1.0) * (3.0 * theta + 2.0 * points * widths) * 8.0;
        let step =
            b * (k + q) * (d_in + d_out) * 4.0 + b * (steps * g + 1.0) * 4.0 + in_flight(b) * per_task(k + q);
        let eval = eval_n * (k + eval_q) * (d_in + d_out) * 4.0
            + eval_n * (steps * g + 2.0) * 4.0
            + in_flight(eval_n) * per_task(k + eval_q);
        vec![
            Need {
                bytes: params * (16.0 + 16.0 * workers),
                what: "the parameters (--layers, --hidden)".into(),
            },
            if step >= eval {
                Need {
                    bytes: step,
                    what: "the tasks of a meta-step (--meta-batch × --shots, --query, --inner-steps, --layers; one in flight per --threads)".into(),
                }
            } else {
                Need {
                    bytes: eval,
                    what: "the evaluation tasks (--final-eval-tasks, --eval-tasks × --shots, --eval-query, --inner-steps, --layers)".into(),
                }
            },
        ]
    }

    /// [`TrainConfig::memory_needs`] against this machine's memory.
    pub fn check_memory(&self) -> anyhow::Result<()> {
        crate::resources::check_memory(&self.memory_needs())
            .map_err(|e| BadInput(format!("training options: {e}")).into())
    }
}

/// The most seconds a timeout flag accepts (about 11.6 days).
pub const MAX_SECONDS: f64 = 1e6;
/// The most worker processes `--spawn-workers` starts.
pub const MAX_SPAWN: usize = 256;
/// The most workers `--expect-workers` waits for.
pub const MAX_EXPECT: usize = 100_000;

/// Refuses seconds outside `(0, MAX_SECONDS]` (NaN included), naming `flag`.
pub fn check_seconds(flag: &str, v: f64) -> Result<std::time::Duration, String> {
    if !(v.is_finite() && v > 0.0 && v <= MAX_SECONDS) {
        return Err(format!("{flag} {v}: out of range: seconds must lie in (0, {MAX_SECONDS}]"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

impl TransportArgs {
    /// Checks the transport flags before anything is written: timeouts in range, worker
    /// counts, a listen address that parses, and a token where one is needed.
    pub fn validate(&self) -> anyhow::Result<()> {
        let bad = |e: String| anyhow::Error::from(BadInput(e));
        check_seconds("--worker-timeout", self.worker_timeout).map_err(bad)?;
        check_seconds("--heartbeat-timeout", self.heartbeat_timeout).map_err(bad)?;
        check_seconds("--step-deadline", self.step_deadline).map_err(bad)?;
        if let Some(n) = self.spawn_workers
            && !(1..=MAX_SPAWN).contains(&n)
        {
            return Err(bad(format!(
                "--spawn-workers {n}: out of range: start between 1 and {MAX_SPAWN} workers"
            )));
        }
        if self.expect_workers > MAX_EXPECT {
            return Err(bad(format!(
                "--expect-workers {}: out of range: wait for at most {MAX_EXPECT} workers",
                self.expect_workers
            )));
        }
        if let Some(spec) = &self.listen {
            use std::net::ToSocketAddrs;
            let addr = listen_address(spec);
            match addr.to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(bad(format!("--listen {spec}: `{addr}` resolves to no address"))),
                Err(e) => {
                    return Err(bad(format!(
                        "--listen {spec}: `{addr}` is not an address ([ADDR:]PORT, port 0-65535): {e}"
                    )));
                }
            }
            if metasched_proto::Token::resolve(self.token_file.as_deref())?.is_none() {
                return Err(
                    bad("--listen needs a shared token: --token-file FILE or METASCHED_TOKEN".into()),
                );
            }
        }
        Ok(())
    }
}

/// `[ADDR:]PORT` with the address defaulting to loopback.
pub fn listen_address(spec: &str) -> String {
    let spec = spec.trim();
    if let Some(port) = spec.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if spec.parse::<u16>().is_ok() {
        format!("127.0.0.1:{spec}")
    } else {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::settings::{InnerSettings, LearnerSettings, SchedulerSettings};

    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn parse(args: &[&str]) -> TrainArgs {
        Train::try_parse_from(std::iter::once("train").chain(args.iter().copied())).expect("parses").args
    }

    /// The keys and values a checkpoint written before the settings were split held, and
    /// `run.toml` files of that version: the on-disk contract.
    const OLD_JSON: &str = r#"{"task":"sinusoid","shots":10,"query":10,"ways":5,"layers":[1,8,1],
        "activation":"relu","loss":null,"scheduler":"lstm","hidden":4,"inner_steps":5,"lr_min":0.0,
        "lr_max":0.1,"lr_init":0.01,"lr_fixed":0.02,"first_order":false,"learn_init":true,
        "meta_batch":3,"meta_lr":0.001,"clip_norm":10.0,"steps":20000,"seed":2,"workers":0,
        "threads":0,"eval_every":1000,"checkpoint_every":1000,"log_every":10,"eval_tasks":100,
        "final_eval_tasks":600,"eval_query":0}"#;

    #[test]
    fn clap_defaults_are_the_default_impls() {
        let a = parse(&[]);
        assert_eq!(a.settings, TrainConfig::default());
        assert!(a.given.0.is_empty(), "{:?}", a.given);
        #[derive(Parser)]
        struct Model {
            #[command(flatten)]
            learner: LearnerSettings,
            #[command(flatten)]
            scheduler: SchedulerSettings,
            #[command(flatten)]
            inner: InnerSettings,
        }
        let m = Model::try_parse_from(["init"]).expect("parses");
        assert_eq!(m.learner, LearnerSettings::default());
        assert_eq!(m.scheduler, SchedulerSettings::default());
        assert_eq!(m.inner, InnerSettings::default());
    }

    #[test]
    fn every_key_is_a_flag_and_either_trajectory_or_runtime() {
        let run = keys_of::<RunSettings>();
        let trajectory = trajectory_keys();
        assert!(run.is_disjoint(&trajectory));
        let all: BTreeSet<String> = run.union(&trajectory).cloned().collect();
        assert_eq!(all, known_keys());
        let cmd = TrainArgs::augment_args(clap::Command::new("train"));
        for key in &all {
            assert!(cmd.get_arguments().any(|a| a.get_id().as_str() == key), "no flag for `{key}`");
        }
        assert_eq!(flag_name("learn_init"), "--no-learn-init");
        assert_eq!(flag_name("meta_lr"), "--meta-lr");
    }

    #[test]
    fn flags_typed_are_recorded_and_override_the_file() {
        let a = parse(&["--hidden", "7", "--no-learn-init", "--first-order", "--steps", "3"]);
        for id in ["hidden", "learn_init", "first_order", "steps"] {
            assert!(a.given.contains(id), "{id}: {:?}", a.given);
        }
        assert!(!a.given.contains("seed"));
        assert_eq!(a.settings.trajectory.scheduler.hidden, 7);
        assert!(!a.settings.trajectory.inner.learn_init);
        assert!(a.settings.trajectory.inner.first_order);
        let dir = std::env::temp_dir().join(format!("metasched-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("run.toml");
        std::fs::write(&file, "hidden = 9\nseed = 4\nsteps = 8\nloss = \"mse\"\n").expect("write");
        let mut a = parse(&["--hidden", "7", "--layers", "1,8,1"]);
        a.config = Some(file.clone());
        let cfg = a.resolve().expect("resolves");
        assert_eq!(cfg.trajectory.scheduler.hidden, 7, "flag over file");
        assert_eq!(cfg.trajectory.outer.seed, 4, "file over default");
        assert_eq!(cfg.run.steps, 8);
        assert_eq!(cfg.trajectory.learner.loss, Some(metasched_engine::LossKind::Mse));
        assert_eq!(cfg.trajectory.learner.layers, vec![1, 8, 1]);
        assert_eq!(cfg.run.log_every, RunSettings::default().log_every);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn old_checkpoints_and_run_files_read_and_write_back_the_same() {
        let old: serde_json::Value = serde_json::from_str(OLD_JSON).expect("json");
        let cfg: TrainConfig = serde_json::from_value(old.clone()).expect("reads");
        assert_eq!(cfg.trajectory.scheduler.lr_fixed, 0.02);
        assert_eq!(cfg.trajectory.outer.seed, 2);
        // Every old key keeps its value; settings added since (the inner optimiser's) are
        // written at their defaults, which reproduce what old runs did.
        let written = serde_json::to_value(&cfg).expect("json");
        let (written, old_map) = (written.as_object().expect("object"), old.as_object().expect("object"));
        for (key, value) in old_map {
            assert_eq!(written.get(key), Some(value), "{key} keeps its value");
        }
        let added: Vec<&str> =
            written.keys().filter(|k| !old_map.contains_key(*k)).map(String::as_str).collect();
        assert_eq!(
            added,
            [
                "adam_beta1",
                "adam_beta2",
                "adam_eps",
                "batch_size",
                "dataset",
                "estimator",
                "inner_optimizer",
                "momentum",
                "objective",
                "pes_sigma",
                "remat",
                "window"
            ]
        );
        assert_eq!(written["inner_optimizer"], "sgd");
        let table = to_table(&cfg).expect("toml");
        let text = toml::to_string(&cfg).expect("toml");
        let back: toml::Table = toml::from_str(&text).expect("parses");
        assert_eq!(back, table);
        assert!(!table.contains_key("loss"), "an unset loss is left out of run.toml, as before");
        assert_eq!(from_table(back, "test").expect("reads"), cfg);
    }

    #[test]
    fn resume_keeps_the_trajectory_and_takes_runtime_changes() {
        let stored: TrainConfig = serde_json::from_str(OLD_JSON).expect("json");
        let cfg = parse(&["--steps", "9", "--hidden", "4"]).resume(&stored, None).expect("same hidden");
        assert_eq!(cfg.run.steps, 9);
        assert_eq!(cfg.trajectory, stored.trajectory);
        let err = parse(&["--meta-lr", "0.1"]).resume(&stored, None).expect_err("refused");
        assert!(err.downcast_ref::<BadInput>().is_some());
        assert!(err.to_string().contains("--meta-lr") && err.to_string().contains("`meta_lr`"), "{err}");
    }
}
