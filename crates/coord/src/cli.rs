//! Command-line interface of `meta-coord`.

use std::path::PathBuf;

use crate::device::Device;
use crate::settings::{InnerSettings, LearnerSettings, SchedulerSettings};
use clap::{Args, Parser, Subcommand};

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
    /// Compare every tensor of two tensor files (a device's output against the CPU engine's).
    Compare(CompareArgs),
    /// Meta-train a learned learning-rate scheduler (and initialisation).
    Train(Box<crate::train::TrainArgs>),
    /// Train with a learned scheduler and with tuned baselines on the same held-out runs.
    Apply(crate::commands::apply::ApplyArgs),
}

pub use crate::settings::{parse_activation, parse_loss};

/// `meta-coord init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// The learner (layers and loss default to the sinusoid task's, as for `train`).
    #[command(flatten)]
    pub learner: LearnerSettings,
    /// The scheduler.
    #[command(flatten)]
    pub scheduler: SchedulerSettings,
    /// The inner loop.
    #[command(flatten)]
    pub inner: InnerSettings,
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
    /// With --device cuda:N: precompiled kernels (`meta-worker compile-kernels --out DIR`)
    /// instead of NVRTC at run time (default: $METASCHED_KERNELS_DIR, else NVRTC).
    #[arg(long, value_name = "DIR")]
    pub kernels: Option<PathBuf>,
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

/// `meta-coord compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The file checked (e.g. a device's `metagrad` output).
    pub a: PathBuf,
    /// The reference (e.g. the CPU engine's output): same tensor names and shapes.
    pub b: PathBuf,
    /// Absolute tolerance: |a - b| <= atol + rtol * |b|.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    /// Relative tolerance.
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// Require bitwise equality instead.
    #[arg(long)]
    pub exact: bool,
}

/// The task families `sample-tasks` can write task files of: a flag value, unlike
/// [`metasched_proto::TaskFamily`], which names what a training run's workers generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleFamily {
    /// MAML's sinusoid regression (1 input, 1 output, mse).
    Sinusoid,
    /// N-way K-shot classification of the embedded 8x8 digits (64 inputs, N outputs,
    /// cross_entropy; --shots and --query per class), from the meta-train split.
    Digits,
}

/// `meta-coord sample-tasks`.
#[derive(Debug, Args)]
pub struct SampleTasksArgs {
    /// Task family.
    #[arg(long, value_enum, default_value = "sinusoid")]
    pub task: SampleFamily,
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
    /// Classes per task (digits only).
    #[arg(long, default_value_t = 5)]
    pub ways: usize,
    /// Where to write the task file.
    #[arg(long)]
    pub out: PathBuf,
}

/// A command-line error as one line (clap writes the usage and a hint on further lines):
/// bad input is one line on stderr, like every other error of the binaries.
pub fn one_line_clap_error(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .collect();
    lines.join(" ")
}

/// Parses the command line of a binary whose commands are `C`: negative numbers are taken
/// as values (`--lr-fixed -1` is refused by the setting's own check, naming it, rather than
/// taken for an unknown flag); `--help` and `--version` print as usual; any other error is
/// one line on stderr and exit code 2.
pub fn parse_or_exit<C: clap::Parser>() -> C {
    fn negative_numbers(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        names.into_iter().fold(cmd.allow_negative_numbers(true), |c, n| c.mut_subcommand(n, negative_numbers))
    }
    let result = negative_numbers(C::command()).try_get_matches().and_then(|m| C::from_arg_matches(&m));
    match result {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            eprintln!("{}", one_line_clap_error(&e));
            std::process::exit(crate::exit::EXIT_BAD_INPUT);
        }
    }
}
