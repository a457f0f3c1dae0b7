//! `meta-coord eval` (spec §6): query loss per task after the inner loop.

use anyhow::Result;
use metasched_formats::write_tensors;

use crate::cli::EvalArgs;
use crate::commands::{load_inputs, mean_ci95, output_metadata};

/// Runs `eval`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let inputs = load_inputs(&args.checkpoint, &args.tasks, &args.compute)?;
    let (ckpt, batch) = (&inputs.ckpt, &inputs.batch);
    let config = &ckpt.config;
    let ev = inputs.engine.evaluate(config, &ckpt.params, batch)?;
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
            "tasks": batch.b, "mean": mean, "ci95": ci, "outer_loss": ev.outer_loss,
        });
        println!("{obj}");
    } else {
        println!("{:>6} {:>14}", "task", "query loss");
        for (i, l) in ev.outer_loss.iter().enumerate() {
            println!("{i:>6} {l:>14.6e}");
        }
        println!("mean query loss over {} tasks: {mean:.6e} ± {ci:.2e} (95% CI)", batch.b);
    }
    if let Some(out) = &args.out {
        println!("wrote {}", out.display());
    }
    Ok(())
}
