//! `meta-coord metagrad` (spec §6): J, per-task losses, rates and every `grad.NAME`.

use std::time::Instant;

use anyhow::Result;
use metasched_formats::write_tensors;

use crate::cli::MetagradArgs;
use crate::commands::{load_inputs, output_metadata};

/// Runs `metagrad`.
pub fn run(args: &MetagradArgs) -> Result<()> {
    let inputs = load_inputs(&args.checkpoint, &args.tasks, &args.compute)?;
    let (ckpt, batch) = (&inputs.ckpt, &inputs.batch);
    let config = &ckpt.config;
    let start = Instant::now();
    let mg = inputs.compute.meta_gradient(config, &ckpt.params, batch)?;
    let elapsed = start.elapsed();
    let (steps, groups) = (config.inner.steps, config.groups());
    let mut tensors = vec![
        ("J".to_string(), vec![], vec![mg.j]),
        ("outer_loss".to_string(), vec![batch.b], mg.outer_loss.clone()),
        ("lr".to_string(), vec![batch.b, steps, groups], mg.lr.clone()),
    ];
    let mut norms = Vec::new();
    for spec in ckpt.params.present_slots(config) {
        let g = mg.grad.slot(config, spec.slot).unwrap_or(&[]).to_vec();
        norms.push((spec.name.clone(), g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()));
        tensors.push((format!("grad.{}", spec.name), spec.shape, g));
    }
    if !mg.j.is_finite() {
        tracing::warn!(j = mg.j, "J is not finite: the inner loop diverged on some task");
    }
    crate::commands::ensure_parent(&args.out)?;
    write_tensors(&args.out, &tensors, &output_metadata(ckpt, "metagrad")?)?;
    println!(
        "J = {:.6e}   ({} tasks, {:.1} ms, {:.0} tasks/s)",
        mg.j,
        batch.b,
        elapsed.as_secs_f64() * 1e3,
        batch.b as f64 / elapsed.as_secs_f64()
    );
    println!("{:<28} {:>14}", "gradient", "L2 norm");
    for (name, n) in norms {
        println!("{:<28} {:>14.6e}", format!("grad.{name}"), n);
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
