//! One module per `meta-coord` subcommand.

pub mod eval;
pub mod init;
pub mod inspect;
pub mod metagrad;
pub mod sample_tasks;

use std::path::Path;

use anyhow::Result;
use metasched_engine::TaskBatch;
use metasched_formats::{Checkpoint, read_checkpoint, read_task_batch};

use metasched_compute::Compute;

use crate::cli::ComputeArgs;

/// The inputs of `metagrad` and `eval`: a checkpoint, the tasks checked against its config,
/// and the requested device, opened.
pub struct Inputs {
    /// The checkpoint.
    pub ckpt: Checkpoint,
    /// The task batch.
    pub batch: TaskBatch<f32>,
    /// Where to compute.
    pub compute: Compute,
}

/// Reads and validates everything before any computation, so a bad input fails fast.
pub fn load_inputs(checkpoint: &Path, tasks: &Path, compute: &ComputeArgs) -> Result<Inputs> {
    let device = crate::device::open(compute.device, compute.threads)?;
    let ckpt = read_checkpoint(checkpoint)?;
    let batch = read_task_batch(tasks, &ckpt.config)?;
    tracing::info!(
        checkpoint = %checkpoint.display(),
        tasks = %tasks.display(),
        b = batch.b, k = batch.k, q = batch.q,
        scheduler = ckpt.config.scheduler.kind.as_str(),
        device = %device.describe(),
        "inputs loaded"
    );
    Ok(Inputs { ckpt, batch, compute: device })
}

/// Creates the directory an output file goes into, so `--out runs/x.safetensors` works on a
/// fresh checkout.
pub fn ensure_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create the output directory {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Metadata written into output files: the checkpoint's configuration and what made them.
pub fn output_metadata(
    ckpt: &Checkpoint,
    command: &str,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut m = std::collections::BTreeMap::new();
    m.insert(metasched_formats::CONFIG_KEY.to_string(), ckpt.config_json_text()?);
    m.insert("metasched.command".to_string(), command.to_string());
    m.insert("metasched.version".to_string(), env!("CARGO_PKG_VERSION").to_string());
    Ok(m)
}

/// Mean and the half-width of its 95% normal confidence interval.
pub fn mean_ci95(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (var / n).sqrt())
}
