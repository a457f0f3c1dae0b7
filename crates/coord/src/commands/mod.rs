//! One module per `meta-coord` subcommand.

pub mod apply;
pub mod compare;
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
    if let Some(dir) = &compute.kernels {
        metasched_compute::set_kernels_dir(Some(dir.clone()));
    }
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
