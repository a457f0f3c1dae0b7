//! The training configuration: one serde struct that a TOML file (`--config run.toml`), the
//! command-line flags (which override the file) and a resumed checkpoint all fill.

use super::remote_pool::CollectiveMode;
use std::path::{Path, PathBuf};

use clap::Args;
use metasched_engine::{
    Activation, Config, InnerConfig, LossKind, ModelConfig, SchedulerConfig, SchedulerKind,
};
use metasched_proto::{TaskFamily, TaskSpec};
use serde::{Deserialize, Serialize};

use crate::exit::BadInput;

/// Everything that defines a training run. Stored in every checkpoint (`metasched.config`,
/// key `train`) so a resumed run continues with exactly the same settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Task family: `sinusoid`, `digits` or `file:PATH` (a directory of task files).
    pub task: String,
    /// Support points per task (per class for `digits`).
    pub shots: usize,
    /// Query points per task (per class for `digits`).
    pub query: usize,
    /// Classes per task (`digits`).
    pub ways: usize,
    /// Learner widths; empty = the task family's default.
    pub layers: Vec<usize>,
    /// Learner nonlinearity.
    pub activation: Activation,
    /// Learner loss; `None` = the task family's (mse for sinusoid, cross-entropy for digits).
    pub loss: Option<LossKind>,
    /// Scheduler kind.
    pub scheduler: SchedulerKind,
    /// LSTM hidden size.
    pub hidden: usize,
    /// Inner SGD steps T.
    pub inner_steps: usize,
    /// Lower rate bound.
    pub lr_min: f64,
    /// Upper rate bound.
    pub lr_max: f64,
    /// Initial rate of learned schedulers.
    pub lr_init: f64,
    /// Rate of the `fixed` scheduler.
    pub lr_fixed: f64,
    /// First-order meta-gradient.
    pub first_order: bool,
    /// Meta-learn the initialisation theta.
    pub learn_init: bool,
    /// Tasks per meta-step B.
    pub meta_batch: usize,
    /// Adam learning rate.
    pub meta_lr: f64,
    /// Global-norm clipping of the meta-gradient (0: off).
    pub clip_norm: f64,
    /// Number of meta-steps.
    pub steps: u64,
    /// Seed of the initialisation and of every task.
    pub seed: u64,
    /// Local workers (0 or 1: one worker using every core).
    pub workers: usize,
    /// Engine threads per worker (0: cores / workers).
    pub threads: usize,
    /// Evaluate every this many steps (0: off).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end and on SIGINT).
    pub checkpoint_every: u64,
    /// Write a metrics line every this many steps.
    pub log_every: u64,
    /// Tasks of each periodic evaluation.
    pub eval_tasks: usize,
    /// Tasks of the final evaluation.
    pub final_eval_tasks: usize,
    /// Query points of evaluation tasks (0: 100 for sinusoid, `query` otherwise).
    pub eval_query: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: "sinusoid".into(),
            shots: 10,
            query: 10,
            ways: 5,
            layers: Vec::new(),
            activation: Activation::Relu,
            loss: None,
            scheduler: SchedulerKind::Lstm,
            hidden: 20,
            inner_steps: 5,
            lr_min: 0.0,
            lr_max: 0.1,
            lr_init: 0.01,
            lr_fixed: 0.01,
            first_order: false,
            learn_init: true,
            meta_batch: 25,
            meta_lr: 1e-3,
            clip_norm: 10.0,
            steps: 20_000,
            seed: 0,
            workers: 0,
            threads: 0,
            eval_every: 1000,
            checkpoint_every: 1000,
            log_every: 10,
            eval_tasks: 100,
            final_eval_tasks: 600,
            eval_query: 0,
        }
    }
}

/// `meta-coord train` flags. Every field is optional: a flag given overrides `--config`,
/// which overrides the defaults (see [`TrainConfig::default`]).
#[derive(Debug, Clone, Default, Args)]
pub struct TrainArgs {
    /// TOML file with any `TrainConfig` fields (flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory: checkpoint, metrics.jsonl, plots, eval.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its checkpoint.
    #[arg(long, conflicts_with = "config")]
    pub resume: Option<PathBuf>,
    /// Task family: sinusoid, digits or file:PATH.
    #[arg(long)]
    pub task: Option<String>,
    /// Support points per task (per class for digits).
    #[arg(long)]
    pub shots: Option<usize>,
    /// Query points per task (per class for digits).
    #[arg(long)]
    pub query: Option<usize>,
    /// Classes per task (digits).
    #[arg(long)]
    pub ways: Option<usize>,
    /// Learner widths, comma-separated (default depends on the task).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// relu or tanh.
    #[arg(long, value_parser = parse_activation)]
    pub activation: Option<Activation>,
    /// mse or cross_entropy (default depends on the task).
    #[arg(long, value_parser = parse_loss)]
    pub loss: Option<LossKind>,
    /// lstm, lslr or fixed.
    #[arg(long)]
    pub scheduler: Option<SchedulerKind>,
    /// LSTM hidden size.
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Inner SGD steps T.
    #[arg(long)]
    pub inner_steps: Option<usize>,
    /// Lower rate bound.
    #[arg(long)]
    pub lr_min: Option<f64>,
    /// Upper rate bound.
    #[arg(long)]
    pub lr_max: Option<f64>,
    /// Initial rate of learned schedulers.
    #[arg(long)]
    pub lr_init: Option<f64>,
    /// Rate of the fixed scheduler.
    #[arg(long)]
    pub lr_fixed: Option<f64>,
    /// First-order meta-gradient.
    #[arg(long)]
    pub first_order: bool,
    /// Do not meta-learn the initialisation.
    #[arg(long)]
    pub no_learn_init: bool,
    /// Tasks per meta-step.
    #[arg(long)]
    pub meta_batch: Option<usize>,
    /// Adam learning rate.
    #[arg(long)]
    pub meta_lr: Option<f64>,
    /// Global-norm clipping (0: off).
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Number of meta-steps.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Local workers (default 1, using every core).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Engine threads per worker (0: cores / workers).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Evaluate every N steps (0: off).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long)]
    pub checkpoint_every: Option<u64>,
    /// Metrics line every N steps.
    #[arg(long)]
    pub log_every: Option<u64>,
    /// Tasks per periodic evaluation.
    #[arg(long)]
    pub eval_tasks: Option<usize>,
    /// Tasks of the final evaluation.
    #[arg(long)]
    pub final_eval_tasks: Option<usize>,
    /// Query points of evaluation tasks (0: 100 for sinusoid, --query otherwise).
    #[arg(long)]
    pub eval_query: Option<usize>,
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

fn parse_activation(s: &str) -> Result<Activation, String> {
    crate::cli::parse_activation(s)
}

fn parse_loss(s: &str) -> Result<LossKind, String> {
    crate::cli::parse_loss(s)
}

macro_rules! override_fields {
    ($cfg:expr, $args:expr, $($f:ident),*) => {
        $( if let Some(v) = $args.$f.clone() { $cfg.$f = v; } )*
    };
}

/// Copies the trajectory-neutral fields (those a resumed run may change) from `from`.
pub fn copy_runtime(to: &mut TrainConfig, from: &TrainConfig) {
    to.steps = from.steps;
    to.workers = from.workers;
    to.threads = from.threads;
    to.eval_every = from.eval_every;
    to.checkpoint_every = from.checkpoint_every;
    to.log_every = from.log_every;
    to.eval_tasks = from.eval_tasks;
    to.final_eval_tasks = from.final_eval_tasks;
    to.eval_query = from.eval_query;
}

impl TrainConfig {
    /// The fields that determine the training trajectory, with the others at their
    /// defaults: what a checkpoint stores, so the number of workers, the logging cadence or
    /// the planned length never change a checkpoint's bytes.
    pub fn trajectory(&self) -> TrainConfig {
        let mut t = self.clone();
        copy_runtime(&mut t, &TrainConfig::default());
        t
    }
}

impl TrainArgs {
    /// Applies the trajectory-neutral flags (those a resumed run may change).
    pub fn apply_runtime(&self, cfg: &mut TrainConfig) {
        override_fields!(
            cfg,
            self,
            steps,
            workers,
            threads,
            eval_every,
            checkpoint_every,
            log_every,
            eval_tasks,
            final_eval_tasks,
            eval_query
        );
    }

    /// Whether a flag that changes the training trajectory was given (refused on resume).
    pub fn trajectory_flags(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! given {
            ($($f:ident => $name:literal),*) => { $( if self.$f.is_some() { v.push($name); } )* };
        }
        given!(task => "--task", shots => "--shots", query => "--query", ways => "--ways", layers => "--layers",
            activation => "--activation", loss => "--loss", scheduler => "--scheduler", hidden => "--hidden",
            inner_steps => "--inner-steps", lr_min => "--lr-min", lr_max => "--lr-max", lr_init => "--lr-init",
            lr_fixed => "--lr-fixed", meta_batch => "--meta-batch", meta_lr => "--meta-lr",
            clip_norm => "--clip-norm", seed => "--seed");
        if self.first_order {
            v.push("--first-order");
        }
        if self.no_learn_init {
            v.push("--no-learn-init");
        }
        v
    }

    /// The configuration of a new run: defaults, then `--config`, then flags.
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut cfg = match &self.config {
            Some(path) => load_toml(path)?,
            None => TrainConfig::default(),
        };
        override_fields!(
            cfg,
            self,
            task,
            shots,
            query,
            ways,
            layers,
            activation,
            scheduler,
            hidden,
            inner_steps,
            lr_min,
            lr_max,
            lr_init,
            lr_fixed,
            meta_batch,
            meta_lr,
            clip_norm,
            seed
        );
        if let Some(l) = self.loss {
            cfg.loss = Some(l);
        }
        if self.first_order {
            cfg.first_order = true;
        }
        if self.no_learn_init {
            cfg.learn_init = false;
        }
        self.apply_runtime(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Reads a TOML run file; unknown keys are an error (a typo must not silently train with a
/// default).
pub fn load_toml(path: &Path) -> anyhow::Result<TrainConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("config file {}: cannot read: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        BadInput(format!("config file {}: {}", path.display(), e.to_string().replace('\n', " "))).into()
    })
}

fn bad(field: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    BadInput(format!("training option `{field}`: {reason}")).into()
}

impl TrainConfig {
    /// The task family this configuration names.
    pub fn family(&self) -> anyhow::Result<TaskFamily> {
        self.task.parse::<TaskFamily>().map_err(|e| bad("task", e))
    }

    /// The task specification handed to workers.
    pub fn task_spec(&self) -> anyhow::Result<TaskSpec> {
        Ok(TaskSpec {
            family: self.family()?,
            shots: self.shots,
            query: self.query,
            ways: self.ways,
            seed: self.seed,
        })
    }

    /// Query points of evaluation tasks.
    pub fn eval_query(&self) -> usize {
        match (self.eval_query, self.family()) {
            (0, Ok(TaskFamily::Sinusoid)) => 100,
            (0, _) => self.query,
            (q, _) => q,
        }
    }

    /// The contract-level model configuration (spec §5).
    pub fn model_config(&self) -> anyhow::Result<Config> {
        let family = self.family()?;
        let layers = if self.layers.is_empty() {
            match family {
                TaskFamily::Sinusoid => vec![1, 40, 40, 1],
                TaskFamily::Digits => vec![64, 64, 64, self.ways],
                TaskFamily::File { .. } => return Err(bad("layers", "file tasks need --layers")),
            }
        } else {
            self.layers.clone()
        };
        let loss = self.loss.unwrap_or(match family {
            TaskFamily::Digits => LossKind::CrossEntropy,
            _ => LossKind::Mse,
        });
        let config = Config {
            model: ModelConfig { layers, activation: self.activation, loss },
            inner: InnerConfig {
                steps: self.inner_steps,
                first_order: self.first_order,
                learn_init: self.learn_init,
            },
            scheduler: SchedulerConfig {
                kind: self.scheduler,
                hidden: self.hidden,
                lr_min: self.lr_min,
                lr_max: self.lr_max,
                lr_fixed: self.lr_fixed,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that no other layer checks.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.model_config()?;
        if self.meta_batch == 0 {
            return Err(bad("meta_batch", "must be at least 1"));
        }
        if !(self.meta_lr.is_finite() && self.meta_lr > 0.0) {
            return Err(bad("meta_lr", "must be a positive number"));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return Err(bad("clip_norm", "must be >= 0"));
        }
        if self.shots == 0 || self.query == 0 {
            return Err(bad("shots", "--shots and --query must be at least 1"));
        }
        if self.log_every == 0 {
            return Err(bad("log_every", "must be at least 1"));
        }
        if self.scheduler != SchedulerKind::Fixed
            && !(self.lr_init > self.lr_min && self.lr_init < self.lr_max)
        {
            return Err(bad(
                "lr_init",
                format!("{} must lie strictly inside ({}, {})", self.lr_init, self.lr_min, self.lr_max),
            ));
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
