//! Every setting of a run, declared once, grouped by concern.
//!
//! Each struct here is at the same time a set of command-line flags (`clap`, flattened into
//! a command) and a set of flat snake_case keys of `run.toml` and of the checkpoint
//! (`serde`, flattened into [`crate::train::TrainConfig`]). A setting is one field: its doc
//! line is the flag's help, its value in the struct's `Default` impl is the default of the
//! flag and of the file (clap reads it through `default_value_t = <Struct>::default().field`),
//! and which struct it sits in says whether a resumed run may change it:
//! [`Trajectory`]'s settings come from the checkpoint, [`RunSettings`] may change.
//!
//! `init`, `train` (and later `apply`) flatten the same [`LearnerSettings`],
//! [`SchedulerSettings`] and [`InnerSettings`], so the model flags mean the same everywhere.

use std::collections::BTreeSet;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use metasched_engine::horizon::{Estimator, ObjectiveMode};
use metasched_engine::{
    Activation, Config, InnerConfig, InnerOptimizer, LossKind, ModelConfig, SchedulerConfig, SchedulerKind,
};
use metasched_proto::{LongRuns, TaskFamily};
use metasched_tasks::TrainMlpData;

/// The `--task` of whole training runs.
pub const TRAIN_MLP: &str = "train-mlp";
use serde::{Deserialize, Serialize};

use crate::exit::BadInput;

/// Parses `relu` / `tanh`.
pub fn parse_activation(s: &str) -> Result<Activation, String> {
    match s {
        "relu" => Ok(Activation::Relu),
        "tanh" => Ok(Activation::Tanh),
        _ => Err(format!("unknown activation `{s}` (expected relu or tanh)")),
    }
}

/// Parses `mse` / `cross_entropy`.
pub fn parse_loss(s: &str) -> Result<LossKind, String> {
    match s {
        "mse" => Ok(LossKind::Mse),
        "cross_entropy" | "cross-entropy" | "ce" => Ok(LossKind::CrossEntropy),
        _ => Err(format!("unknown loss `{s}` (expected mse or cross_entropy)")),
    }
}

/// The flag spelling of an activation, so clap can show and use the `Default` impl's value
/// (the engine's enum has no `Display`).
pub fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::Tanh => "tanh",
    }
}

/// The tasks meta-training learns from. Part of the [`Trajectory`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Task")]
pub struct TaskSettings {
    /// Task family: sinusoid, digits, file:PATH (a directory of task files) or train-mlp
    /// (whole training runs, see the long-run settings).
    #[arg(long, default_value_t = TaskSettings::default().task)]
    pub task: String,
    /// Support points per task (per class for digits).
    #[arg(long, default_value_t = TaskSettings::default().shots)]
    pub shots: usize,
    /// Query points per task (per class for digits).
    #[arg(long, default_value_t = TaskSettings::default().query)]
    pub query: usize,
    /// Classes per task (digits).
    #[arg(long, default_value_t = TaskSettings::default().ways)]
    pub ways: usize,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self { task: "sinusoid".into(), shots: 10, query: 10, ways: 5 }
    }
}

impl TaskSettings {
    /// The task family this names.
    pub fn family(&self) -> anyhow::Result<TaskFamily> {
        self.task.parse::<TaskFamily>().map_err(|e| bad("task", e))
    }

    /// Whether the task is `train-mlp` (whole training runs, described by
    /// [`LongRunSettings`] rather than by the task's name).
    pub fn is_long_runs(&self) -> bool {
        self.task == TRAIN_MLP
    }
}

/// The learner network the inner loop trains. Part of the [`Trajectory`]; shared by `init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Learner")]
pub struct LearnerSettings {
    /// Learner layer widths, input to output, comma-separated (default: the task family's,
    /// 1,40,40,1 for sinusoid, 64,64,64,WAYS for digits).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<usize>,
    /// Nonlinearity between layers: relu or tanh.
    #[arg(long, value_parser = parse_activation,
          default_value = activation_name(LearnerSettings::default().activation))]
    pub activation: Activation,
    /// Learner loss: mse or cross_entropy (default: the task family's, mse for sinusoid,
    /// cross_entropy for digits).
    #[arg(long, value_parser = parse_loss)]
    pub loss: Option<LossKind>,
}

impl Default for LearnerSettings {
    fn default() -> Self {
        Self { layers: Vec::new(), activation: Activation::Relu, loss: None }
    }
}

/// The learning-rate scheduler. Part of the [`Trajectory`]; shared by `init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Scheduler")]
pub struct SchedulerSettings {
    /// Scheduler kind: lstm, lslr or fixed.
    #[arg(long, default_value = SchedulerSettings::default().scheduler.as_str())]
    pub scheduler: SchedulerKind,
    /// LSTM hidden size.
    #[arg(long, default_value_t = SchedulerSettings::default().hidden)]
    pub hidden: usize,
    /// Lower bound of every learned rate.
    #[arg(long, default_value_t = SchedulerSettings::default().lr_min)]
    pub lr_min: f64,
    /// Upper bound of every learned rate.
    #[arg(long, default_value_t = SchedulerSettings::default().lr_max)]
    pub lr_max: f64,
    /// Initial rate of the learned schedulers (head bias / LSLR table set to its logit).
    #[arg(long, default_value_t = SchedulerSettings::default().lr_init)]
    pub lr_init: f64,
    /// The rate of the `fixed` scheduler.
    #[arg(long, default_value_t = SchedulerSettings::default().lr_fixed)]
    pub lr_fixed: f64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::Lstm,
            hidden: 20,
            lr_min: 0.0,
            lr_max: 0.1,
            lr_init: 0.01,
            lr_fixed: 0.01,
        }
    }
}

/// The inner loop every task runs. Part of the [`Trajectory`]; shared by `init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Inner loop")]
pub struct InnerSettings {
    /// Inner SGD steps T.
    #[arg(long, default_value_t = InnerSettings::default().inner_steps)]
    pub inner_steps: usize,
    /// Use the first-order meta-gradient (no Hessian term).
    #[arg(long)]
    pub first_order: bool,
    /// Meta-learn the initialisation theta; `--no-learn-init` turns it off (its gradient is
    /// still reported).
    #[arg(long = "no-learn-init", action = clap::ArgAction::SetFalse)]
    pub learn_init: bool,
    /// Inner optimiser whose rate the scheduler sets: sgd, momentum or adam (spec §3.1).
    #[arg(long, value_enum, default_value_t = InnerSettings::default().inner_optimizer)]
    pub inner_optimizer: OptimizerName,
    /// Momentum coefficient of `--inner-optimizer momentum`.
    #[arg(long, default_value_t = InnerSettings::default().momentum)]
    pub momentum: f64,
    /// First-moment decay of `--inner-optimizer adam`.
    #[arg(long, default_value_t = InnerSettings::default().adam_beta1)]
    pub adam_beta1: f64,
    /// Second-moment decay of `--inner-optimizer adam`.
    #[arg(long, default_value_t = InnerSettings::default().adam_beta2)]
    pub adam_beta2: f64,
    /// Epsilon of `--inner-optimizer adam` (added to the root of the second moment).
    #[arg(long, default_value_t = InnerSettings::default().adam_eps)]
    pub adam_eps: f64,
}

impl Default for InnerSettings {
    fn default() -> Self {
        // `first_order` and `learn_init` are switches: their defaults are clap's (off for
        // `--first-order`, on for `--no-learn-init`'s field), checked by the parse tests.
        Self {
            inner_steps: 5,
            first_order: false,
            learn_init: true,
            inner_optimizer: OptimizerName::Sgd,
            momentum: 0.9,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
        }
    }
}

/// The inner optimiser's name on the command line and in `run.toml` (its constants are
/// settings of their own, so each has one flag and one default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    /// `d_t = g_t`.
    Sgd,
    /// Heavy ball with `--momentum`.
    Momentum,
    /// Adam with `--adam-beta1`, `--adam-beta2`, `--adam-eps`.
    Adam,
}

impl InnerSettings {
    /// The engine's inner optimiser these settings name.
    pub fn optimizer(&self) -> InnerOptimizer {
        match self.inner_optimizer {
            OptimizerName::Sgd => InnerOptimizer::Sgd,
            OptimizerName::Momentum => InnerOptimizer::Momentum { mu: self.momentum },
            OptimizerName::Adam => {
                InnerOptimizer::Adam { beta1: self.adam_beta1, beta2: self.adam_beta2, eps: self.adam_eps }
            }
        }
    }
}

/// The outer loop: how meta-steps update theta and phi. Part of the [`Trajectory`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Outer loop")]
pub struct OuterSettings {
    /// Tasks per meta-step B.
    #[arg(long, default_value_t = OuterSettings::default().meta_batch)]
    pub meta_batch: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = OuterSettings::default().meta_lr)]
    pub meta_lr: f64,
    /// Global-norm clipping of the meta-gradient (0: off).
    #[arg(long, default_value_t = OuterSettings::default().clip_norm)]
    pub clip_norm: f64,
    /// Seed of the initialisation and of every task.
    #[arg(long, default_value_t = OuterSettings::default().seed)]
    pub seed: u64,
}

impl Default for OuterSettings {
    fn default() -> Self {
        Self { meta_batch: 25, meta_lr: 1e-3, clip_norm: 10.0, seed: 0 }
    }
}

/// Whole training runs (`--task train-mlp`, spec §7-8). Part of the [`Trajectory`]; the
/// horizon `H` is `--inner-steps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Long runs (--task train-mlp; the horizon H is --inner-steps)")]
pub struct LongRunSettings {
    /// Dataset of train-mlp runs: digits[:CLASSES], sinusoid[:TRAIN[:VAL]] or file:PATH.
    #[arg(long, default_value_t = LongRunSettings::default().dataset)]
    pub dataset: String,
    /// Minibatch size b of every train-mlp step.
    #[arg(long, default_value_t = LongRunSettings::default().batch_size)]
    pub batch_size: usize,
    /// Meta-gradient estimator: full (exact, whole run), tbptt (exact over a window) or pes.
    #[arg(long, value_enum, default_value_t = LongRunSettings::default().estimator)]
    pub estimator: EstimatorName,
    /// Window W: steps each run advances per meta-step (tbptt, pes).
    #[arg(long, default_value_t = LongRunSettings::default().window)]
    pub window: usize,
    /// Objective of a window: end (validation loss at its end) or mean (over its steps).
    #[arg(long, value_enum, default_value_t = LongRunSettings::default().objective)]
    pub objective: ObjectiveName,
    /// PES perturbation scale σ.
    #[arg(long, default_value_t = LongRunSettings::default().pes_sigma)]
    pub pes_sigma: f64,
}

impl Default for LongRunSettings {
    fn default() -> Self {
        Self {
            dataset: "digits".into(),
            batch_size: 32,
            estimator: EstimatorName::Tbptt,
            window: 20,
            objective: ObjectiveName::End,
            pes_sigma: 0.01,
        }
    }
}

/// `--estimator`'s spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EstimatorName {
    /// Exact gradient through the whole run.
    Full,
    /// Exact gradient through each window (truncated backpropagation through time).
    Tbptt,
    /// Persistent evolution strategies (antithetic pairs).
    Pes,
}

/// `--objective`'s spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveName {
    /// Validation loss at the window's end.
    End,
    /// Mean validation loss over the window's steps.
    Mean,
}

impl LongRunSettings {
    /// The dataset these settings name.
    pub fn data(&self) -> anyhow::Result<TrainMlpData> {
        self.dataset.parse::<TrainMlpData>().map_err(|e| bad("dataset", e))
    }

    /// The estimator with its constants.
    pub fn estimator(&self) -> Estimator {
        match self.estimator {
            EstimatorName::Full => Estimator::Full,
            EstimatorName::Tbptt => Estimator::Tbptt,
            EstimatorName::Pes => Estimator::Pes { sigma: self.pes_sigma },
        }
    }

    /// What workers need to make and advance the runs (`remat` is a runtime setting).
    pub fn long_runs(&self, remat: bool) -> anyhow::Result<LongRuns> {
        Ok(LongRuns {
            data: self.data()?,
            batch: self.batch_size,
            estimator: self.estimator(),
            window: self.window,
            objective: match self.objective {
                ObjectiveName::End => ObjectiveMode::End,
                ObjectiveName::Mean => ObjectiveMode::Mean,
            },
            remat,
        })
    }

    /// Checks each setting on its own; `horizon` is `--inner-steps` (the checks across
    /// settings: `W <= H`; `b` against the data is checked when the data is opened).
    pub fn validate(&self, horizon: usize) -> anyhow::Result<()> {
        self.data()?;
        if self.batch_size == 0 {
            return Err(bad("batch_size", "must be at least 1"));
        }
        if self.window == 0 {
            return Err(bad("window", "must be at least 1"));
        }
        if self.estimator != EstimatorName::Full && self.window > horizon {
            return Err(bad(
                "window",
                format!("{} is longer than the horizon --inner-steps {horizon}", self.window),
            ));
        }
        if !(self.pes_sigma.is_finite() && self.pes_sigma > 0.0) {
            return Err(bad("pes_sigma", format!("{} is not a finite value > 0", self.pes_sigma)));
        }
        Ok(())
    }
}

/// What defines a run's trajectory: stored in its checkpoint, and a resumed run keeps it
/// (changing any of it by flag or in `run.toml` is refused), so it ends bitwise the same.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Args)]
pub struct Trajectory {
    /// The tasks.
    #[serde(flatten)]
    #[command(flatten)]
    pub task: TaskSettings,
    /// The learner.
    #[serde(flatten)]
    #[command(flatten)]
    pub learner: LearnerSettings,
    /// The scheduler.
    #[serde(flatten)]
    #[command(flatten)]
    pub scheduler: SchedulerSettings,
    /// The inner loop.
    #[serde(flatten)]
    #[command(flatten)]
    pub inner: InnerSettings,
    /// The outer loop.
    #[serde(flatten)]
    #[command(flatten)]
    pub outer: OuterSettings,
    /// Whole training runs (`--task train-mlp`).
    #[serde(flatten)]
    #[command(flatten)]
    pub long: LongRunSettings,
}

/// What only changes how a run is carried out, never its numbers: a resumed run may change
/// any of it (more steps, other workers, another logging cadence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default)]
#[command(next_help_heading = "Running")]
pub struct RunSettings {
    /// Number of meta-steps (a resumed run may extend it).
    #[arg(long, default_value_t = RunSettings::default().steps)]
    pub steps: u64,
    /// Local workers (0 or 1: one worker using every core).
    #[arg(long, default_value_t = RunSettings::default().workers)]
    pub workers: usize,
    /// Engine threads per worker (0: cores / workers).
    #[arg(long, default_value_t = RunSettings::default().threads)]
    pub threads: usize,
    /// Evaluate every this many steps (0: off).
    #[arg(long, default_value_t = RunSettings::default().eval_every)]
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end and on SIGINT).
    #[arg(long, default_value_t = RunSettings::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Write a metrics line every this many steps.
    #[arg(long, default_value_t = RunSettings::default().log_every)]
    pub log_every: u64,
    /// Tasks of each periodic evaluation.
    #[arg(long, default_value_t = RunSettings::default().eval_tasks)]
    pub eval_tasks: usize,
    /// Tasks of the final evaluation.
    #[arg(long, default_value_t = RunSettings::default().final_eval_tasks)]
    pub final_eval_tasks: usize,
    /// Query points of evaluation tasks (0: 100 for sinusoid, --query otherwise).
    #[arg(long, default_value_t = RunSettings::default().eval_query)]
    pub eval_query: usize,
    /// Keep every ⌈√n⌉-th state of a window and recompute the rest in the backward pass
    /// (train-mlp): O(√n) memory, the same bits.
    #[arg(long)]
    pub remat: bool,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            steps: 20_000,
            workers: 0,
            threads: 0,
            eval_every: 1000,
            checkpoint_every: 1000,
            log_every: 10,
            eval_tasks: 100,
            final_eval_tasks: 600,
            eval_query: 0,
            remat: false,
        }
    }
}

/// The engine's configuration (spec §5) of a learner, scheduler and inner loop, with the
/// learner's layers and loss defaulting to those of `family`'s tasks.
pub fn model_config(
    learner: &LearnerSettings,
    scheduler: &SchedulerSettings,
    inner: &InnerSettings,
    family: &TaskFamily,
    ways: usize,
) -> anyhow::Result<Config> {
    let layers = if learner.layers.is_empty() {
        match family {
            TaskFamily::Sinusoid => vec![1, 40, 40, 1],
            TaskFamily::Digits => vec![64, 64, 64, ways],
            TaskFamily::File { .. } => return Err(bad("layers", "file tasks need --layers")),
            TaskFamily::TrainMlp(runs) => match &runs.data {
                TrainMlpData::Digits { classes } => vec![64, 32, *classes],
                TrainMlpData::Sinusoid { .. } => vec![1, 40, 40, 1],
                TrainMlpData::File { .. } => return Err(bad("layers", "a dataset file needs --layers")),
            },
        }
    } else {
        learner.layers.clone()
    };
    let loss = learner.loss.unwrap_or(match family {
        TaskFamily::Digits => LossKind::CrossEntropy,
        TaskFamily::TrainMlp(runs) if matches!(runs.data, TrainMlpData::Digits { .. }) => {
            LossKind::CrossEntropy
        }
        _ => LossKind::Mse,
    });
    // A long run starts from a fresh learner: there is no shared initialisation to learn.
    let learn_init = inner.learn_init && !matches!(family, TaskFamily::TrainMlp(_));
    let config = Config {
        model: ModelConfig { layers, activation: learner.activation, loss },
        inner: InnerConfig {
            steps: inner.inner_steps,
            first_order: inner.first_order,
            learn_init,
            optimizer: inner.optimizer(),
        },
        scheduler: SchedulerConfig {
            kind: scheduler.scheduler,
            hidden: scheduler.hidden,
            lr_min: scheduler.lr_min,
            lr_max: scheduler.lr_max,
            lr_fixed: scheduler.lr_fixed,
        },
    };
    config.validate()?;
    Ok(config)
}

/// An error naming the setting at fault, by its file key and its flag (exit 2).
pub fn bad(field: &str, reason: impl std::fmt::Display) -> anyhow::Error {
    let flag = format!("--{}", field.replace('_', "-"));
    BadInput(format!("training option `{field}` ({flag}): {reason}")).into()
}

/// The largest learning rate (`--lr-min`, `--lr-max`, `--lr-init`, `--lr-fixed`) a run
/// accepts: far above any rate that trains, low enough that a typo (`1e30`) is caught.
pub const MAX_RATE: f64 = 100.0;
/// The largest Adam learning rate (`--meta-lr`) a run accepts.
pub const MAX_META_LR: f64 = 1.0;
/// The most engine threads a process may start (`--threads`, and `--workers` × `--threads`):
/// far above any machine's cores, well below what stalls thread creation.
pub const MAX_THREADS: usize = 1024;

/// Refuses a rate outside `[0, MAX_RATE]` (NaN included).
fn check_rate(field: &str, v: f64) -> anyhow::Result<()> {
    if !(v.is_finite() && (0.0..=MAX_RATE).contains(&v)) {
        return Err(bad(field, format!("{v} is out of range: a rate must lie in [0, {MAX_RATE}]")));
    }
    Ok(())
}

impl TaskSettings {
    /// Checks the task sizes (the family's own limits are checked when its tasks are
    /// opened; the memory they need by [`crate::train::TrainConfig::validate`]).
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.is_long_runs() {
            self.family()?;
        }
        if self.shots == 0 {
            return Err(bad("shots", "must be at least 1"));
        }
        if self.query == 0 {
            return Err(bad("query", "must be at least 1"));
        }
        if self.ways == 0 {
            return Err(bad("ways", "must be at least 1"));
        }
        Ok(())
    }
}

impl LearnerSettings {
    /// Checks the widths (the engine checks the rest of the model).
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(pos) = self.layers.iter().position(|&d| d == 0) {
            return Err(bad("layers", format!("width {pos} is 0: every width must be at least 1")));
        }
        if !self.layers.is_empty() && self.layers.len() < 2 {
            return Err(bad("layers", "needs at least an input and an output width"));
        }
        Ok(())
    }
}

impl SchedulerSettings {
    /// Checks every rate against `[0, MAX_RATE]` and their order.
    pub fn validate(&self) -> anyhow::Result<()> {
        check_rate("lr_min", self.lr_min)?;
        check_rate("lr_max", self.lr_max)?;
        check_rate("lr_init", self.lr_init)?;
        check_rate("lr_fixed", self.lr_fixed)?;
        if self.lr_max <= self.lr_min {
            return Err(bad(
                "lr_max",
                format!("{} must be greater than lr_min = {}", self.lr_max, self.lr_min),
            ));
        }
        if self.scheduler == SchedulerKind::Lstm && self.hidden == 0 {
            return Err(bad("hidden", "the lstm scheduler needs at least 1"));
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

impl InnerSettings {
    /// Checks the number of inner steps and every inner-optimiser constant (also those of an
    /// optimiser not chosen: a typo there is still a typo).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.inner_steps == 0 {
            return Err(bad("inner_steps", "must be at least 1"));
        }
        for (key, x) in
            [("momentum", self.momentum), ("adam_beta1", self.adam_beta1), ("adam_beta2", self.adam_beta2)]
        {
            if !(0.0..1.0).contains(&x) {
                return Err(bad(key, format!("{x} is not in [0, 1)")));
            }
        }
        if !(self.adam_eps.is_finite() && self.adam_eps > 0.0 && self.adam_eps <= 1.0) {
            return Err(bad("adam_eps", format!("{} is not in (0, 1]", self.adam_eps)));
        }
        Ok(())
    }
}

impl OuterSettings {
    /// Checks the batch, the Adam rate and the clipping norm.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.meta_batch == 0 {
            return Err(bad("meta_batch", "must be at least 1"));
        }
        if !(self.meta_lr.is_finite() && self.meta_lr > 0.0 && self.meta_lr <= MAX_META_LR) {
            return Err(bad(
                "meta_lr",
                format!("{} is out of range: the Adam rate must lie in (0, {MAX_META_LR}]", self.meta_lr),
            ));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return Err(bad(
                "clip_norm",
                format!("{} must be a finite number >= 0 (0: off)", self.clip_norm),
            ));
        }
        Ok(())
    }
}

impl Trajectory {
    /// Every trajectory setting's own check (see [`crate::train::TrainConfig::validate`]
    /// for the checks across settings).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.task.validate()?;
        self.learner.validate()?;
        self.scheduler.validate()?;
        self.inner.validate()?;
        self.outer.validate()?;
        if self.task.is_long_runs() {
            self.long.validate(self.inner.inner_steps)?;
        }
        Ok(())
    }
}

/// The cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Refuses a thread count above [`MAX_THREADS`], naming `flag`.
pub fn check_threads(flag: &str, threads: usize) -> Result<(), String> {
    if threads > MAX_THREADS {
        return Err(format!(
            "{flag} {threads}: at most {MAX_THREADS} threads (this machine has {} cores)",
            cores()
        ));
    }
    Ok(())
}

impl RunSettings {
    /// Checks the cadences and the thread counts.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.log_every == 0 {
            return Err(bad("log_every", "must be at least 1"));
        }
        check_threads("--threads", self.threads).map_err(|e| bad("threads", e))?;
        check_threads("--workers", self.workers).map_err(|e| bad("workers", e))?;
        let total = self.workers.max(1).saturating_mul(self.threads.max(1));
        if total > MAX_THREADS {
            return Err(bad(
                "threads",
                format!(
                    "--workers {} × --threads {} = {total} engine threads: at most {MAX_THREADS}",
                    self.workers, self.threads
                ),
            ));
        }
        if self.eval_every > 0 && self.eval_tasks == 0 {
            return Err(bad("eval_tasks", "must be at least 1 when --eval-every is on"));
        }
        if self.final_eval_tasks == 0 {
            return Err(bad("final_eval_tasks", "must be at least 1"));
        }
        Ok(())
    }
}

/// The ids (= field names = file keys) of the arguments given on the command line rather
/// than defaulted, so settings from a file or a checkpoint are overridden only by flags the
/// user actually typed. Flatten it into a command next to the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenFlags(pub BTreeSet<String>);

impl GivenFlags {
    /// Whether the argument with this id was typed.
    pub fn contains(&self, id: &str) -> bool {
        self.0.contains(id)
    }
}

impl FromArgMatches for GivenFlags {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Self::default();
        given.update_from_arg_matches(m)?;
        Ok(given)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for id in m.ids() {
            if m.value_source(id.as_str()) == Some(ValueSource::CommandLine) {
                self.0.insert(id.as_str().to_string());
            }
        }
        Ok(())
    }
}

impl Args for GivenFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd
    }
}
