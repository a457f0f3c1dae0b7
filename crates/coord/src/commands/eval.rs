//! `meta-coord eval` (spec §6): query loss per task after the inner loop, on a task file or
//! on fresh held-out tasks sampled from a task family.

use std::path::PathBuf;

use anyhow::Result;
use metasched_compute::{Compute, TaskSource};
use metasched_engine::TaskBatch;
use metasched_formats::{Checkpoint, read_checkpoint, write_tensors};
use metasched_proto::{Split, TaskSpec};

use crate::cli::EvalArgs;
use crate::commands::{Inputs, load_inputs, output_metadata};
use crate::exit::BadInput;
use crate::stats::mean_ci95;

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let inputs = match &args.task {
        None => load_inputs(&args.checkpoint, &PathBuf::from(&args.tasks), &args.compute)?,
        Some(task) => sampled_inputs(args, task)?,
    };
    report(args, &inputs.ckpt, &inputs.batch, &inputs.compute)
}

/// The checkpoint and `--tasks N` fresh test tasks of family `task` (the final-evaluation
/// stream of training, so `eval` reproduces what `train` reported for the same seed).
fn sampled_inputs(args: &EvalArgs, task: &str) -> Result<Inputs> {
    let compute = crate::device::open(args.compute.device, args.compute.threads)?;
    let n: usize = args
        .tasks
        .parse()
        .map_err(|_| BadInput(format!("--tasks `{}`: with --task it is a number of tasks", args.tasks)))?;
    if n == 0 {
        return Err(BadInput("--tasks must be at least 1".into()).into());
    }
    let ckpt = read_checkpoint(&args.checkpoint)?;
    check_memory(args, n, &ckpt.config)?;
    let family = task.parse().map_err(|e: String| BadInput(format!("--task: {e}")))?;
    let spec = TaskSpec { family, shots: args.shots, query: args.query, ways: args.ways, seed: args.seed };
    let source = TaskSource::open(&spec, &ckpt.config)?;
    let batch = source.sample_with(
        Split::Test,
        crate::train::report::FINAL_EVAL_STREAM,
        0,
        n,
        args.shots,
        args.query,
    )?;
    Ok(Inputs { ckpt, batch, compute })
}

/// Refuses `--tasks` × `--shots` / `--query` that cannot fit in memory: the tasks are
/// sampled at once (`n (K + Q) (d_in + d_out)` values and `n (T G + 2)` outputs, 4 bytes
/// each), and each task in flight (one per thread) keeps its unrolled inner loop
/// (`(T + 1) (3 P_theta + 2 (K + Q) Σ d)` values of 8 bytes), as
/// [`crate::train::TrainConfig::memory_needs`] estimates for training.
fn check_memory(args: &EvalArgs, n: usize, config: &metasched_engine::Config) -> Result<()> {
    use crate::resources::Need;
    let f = |v: usize| v as f64;
    let w: Vec<f64> = config.model.layers.iter().map(|&d| f(d)).collect();
    let theta: f64 = w.windows(2).map(|p| p[0] * p[1] + p[1]).sum();
    let (d_in, d_out) = (w.first().copied().unwrap_or(1.0), w.last().copied().unwrap_or(1.0));
    let (n, k, q, steps, g) = (f(n), f(args.shots), f(args.query), f(config.inner.steps), f(config.groups()));
    let threads =
        if args.compute.threads == 0 { f(crate::settings::cores()) } else { f(args.compute.threads) };
    let needs = [
        Need {
            bytes: n * (k + q) * (d_in + d_out) * 4.0 + n * (steps * g + 2.0) * 4.0,
            what: "the evaluation tasks (--tasks × --shots, --query)".into(),
        },
        Need {
            bytes: n.min(threads)
                * (steps + 1.0)
                * (3.0 * theta + 2.0 * (k + q) * w.iter().sum::<f64>())
                * 8.0,
            what: "the tasks in flight (--threads × --shots, --query)".into(),
        },
    ];
    crate::resources::check_memory(&needs).map_err(|e| BadInput(format!("eval: {e}")).into())
}

fn report(args: &EvalArgs, ckpt: &Checkpoint, batch: &TaskBatch<f32>, compute: &Compute) -> Result<()> {
    let config = &ckpt.config;
    let ev = compute.evaluate(config, &ckpt.params, batch)?;
    let (mean, ci) = mean_ci95(&ev.outer_loss);
    if let Some(out) = &args.out {
        let tensors = vec![
            ("outer_loss".to_string(), vec![batch.b], ev.outer_loss.clone()),
            ("lr".to_string(), vec![batch.b, config.inner.steps, config.groups()], ev.lr.clone()),
        ];
        crate::commands::ensure_parent(out)?;
        write_tensors(out, &tensors, &output_metadata(ckpt, "eval")?)?;
    }
    if args.json {
        let obj = serde_json::json!({
            "tasks": batch.b, "mean": mean, "ci95": ci, "outer_loss": ev.outer_loss, "accuracy": ev.accuracy,
        });
        println!("{obj}");
    } else {
        if batch.b <= 50 {
            println!("{:>6} {:>14}", "task", "query loss");
            for (i, l) in ev.outer_loss.iter().enumerate() {
                println!("{i:>6} {l:>14.6e}");
            }
        }
        println!("mean query loss over {} tasks: {mean:.6e} ± {ci:.2e} (95% CI)", batch.b);
        if let Some(acc) = &ev.accuracy {
            let (a, c) = mean_ci95(acc);
            println!("mean query accuracy: {:.2}% ± {:.2}% (95% CI)", 100.0 * a, 100.0 * c);
        }
    }
    if let Some(out) = &args.out {
        println!("wrote {}", out.display());
    }
    Ok(())
}
