//! Command-line interface of `meta-coord`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use metasched_engine::{Activation, LossKind, SchedulerKind};

use crate::device::Device;

/// The metasched coordinator: creates checkpoints, computes meta-gradients and evaluates
/// learned learning-rate schedulers (spec: docs/SPEC.md).
#[derive(Debug, Parser)]
#[command(name = "meta-coord", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a freshly initialised checkpoint.
    Init(InitArgs),
    /// Compute J, per-task query losses, rates and dJ/dNAME for every checkpoint tensor.
    Metagrad(MetagradArgs),
    /// Run the inner loop on each task and report the query losses.
    Eval(EvalArgs),
    /// Print a checkpoint's configuration and a table of its tensors.
    Inspect(InspectArgs),
    /// Write a task-batch file sampled from a task family.
    SampleTasks(SampleTasksArgs),
    /// Meta-train a learned learning-rate scheduler (and initialisation).
    Train(Box<crate::train::TrainArgs>),
}

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

/// Model and scheduler options shared by every command that creates a configuration.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Learner layer widths, input to output, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,40,40,1")]
    pub layers: Vec<usize>,
    /// Nonlinearity between layers: relu or tanh.
    #[arg(long, value_parser = parse_activation, default_value = "relu")]
    pub activation: Activation,
    /// Learner loss: mse or cross_entropy.
    #[arg(long, value_parser = parse_loss, default_value = "mse")]
    pub loss: LossKind,
    /// Scheduler kind: lstm, lslr or fixed.
    #[arg(long, default_value = "lstm")]
    pub scheduler: SchedulerKind,
    /// LSTM hidden size.
    #[arg(long, default_value_t = 20)]
    pub hidden: usize,
    /// Inner SGD steps T.
    #[arg(long, default_value_t = 5)]
    pub inner_steps: usize,
    /// Lower bound of every learned rate.
    #[arg(long, default_value_t = 0.0)]
    pub lr_min: f64,
    /// Upper bound of every learned rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr_max: f64,
    /// Initial rate of the learned schedulers (head bias / LSLR table set to its logit).
    #[arg(long, default_value_t = 0.01)]
    pub lr_init: f64,
    /// The rate of the `fixed` scheduler.
    #[arg(long, default_value_t = 0.01)]
    pub lr_fixed: f64,
    /// Use the first-order meta-gradient (no Hessian term).
    #[arg(long)]
    pub first_order: bool,
    /// Do not meta-learn the initialisation theta (its gradient is still reported).
    #[arg(long)]
    pub no_learn_init: bool,
}

/// `meta-coord init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// Model and scheduler.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Where and how to compute.
#[derive(Debug, Clone, Args)]
pub struct ComputeArgs {
    /// cpu, emu (the CUDA kernels on the CPU emulator) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// CPU threads (0: one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// `meta-coord metagrad`.
#[derive(Debug, Args)]
pub struct MetagradArgs {
    /// Checkpoint (safetensors, spec §5).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Task batch (safetensors, spec §6).
    #[arg(long)]
    pub tasks: PathBuf,
    /// Output file (safetensors): J, outer_loss, lr, grad.NAME.
    #[arg(long)]
    pub out: PathBuf,
    /// Device and threads.
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `meta-coord eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint (safetensors, spec §5).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A task-batch file (spec §6); with --task, the number of fresh test tasks to sample.
    #[arg(long)]
    pub tasks: String,
    /// Sample fresh held-out tasks of this family (sinusoid, digits) instead of reading a file.
    #[arg(long)]
    pub task: Option<String>,
    /// With --task: support points per task (per class for digits).
    #[arg(long, default_value_t = 10)]
    pub shots: usize,
    /// With --task: query points per task (per class for digits).
    #[arg(long, default_value_t = 100)]
    pub query: usize,
    /// With --task digits: classes per task.
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// With --task: seed of the sampled test tasks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Optional output file (safetensors): outer_loss, lr.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Device and threads.
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `meta-coord inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Checkpoint to describe.
    pub checkpoint: PathBuf,
}

/// Task families `sample-tasks` can draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskFamily {
    /// MAML's sinusoid regression (1 input, 1 output, mse).
    Sinusoid,
}

/// `meta-coord sample-tasks`.
#[derive(Debug, Args)]
pub struct SampleTasksArgs {
    /// Task family.
    #[arg(long, value_enum, default_value = "sinusoid")]
    pub task: TaskFamily,
    /// Number of tasks B.
    #[arg(long, default_value_t = 25)]
    pub tasks: usize,
    /// Support points per task K.
    #[arg(long, default_value_t = 10)]
    pub shots: usize,
    /// Query points per task Q.
    #[arg(long, default_value_t = 10)]
    pub query: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Meta-step whose tasks to draw (tasks are a function of seed, step and index).
    #[arg(long, default_value_t = 0)]
    pub step: u64,
    /// Where to write the task file.
    #[arg(long)]
    pub out: PathBuf,
}
