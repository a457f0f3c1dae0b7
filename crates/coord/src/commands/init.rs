//! `meta-coord init`: a fresh checkpoint.

use anyhow::{Context, Result};
use metasched_engine::init::init_params;
use metasched_engine::{Config, InnerConfig, ModelConfig, SchedulerConfig};
use metasched_formats::{Checkpoint, write_checkpoint};

use crate::cli::{InitArgs, ModelArgs};
use crate::exit::BadInput;

impl ModelArgs {
    /// The contract-level configuration these flags describe.
    pub fn to_config(&self) -> Config {
        Config {
            model: ModelConfig { layers: self.layers.clone(), activation: self.activation, loss: self.loss },
            inner: InnerConfig {
                steps: self.inner_steps,
                first_order: self.first_order,
                learn_init: !self.no_learn_init,
            },
            scheduler: SchedulerConfig {
                kind: self.scheduler,
                hidden: self.hidden,
                lr_min: self.lr_min,
                lr_max: self.lr_max,
                lr_fixed: self.lr_fixed,
            },
        }
    }
}

/// Runs `init`.
pub fn run(args: &InitArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(BadInput(format!(
            "{} already exists (pass --force to overwrite it)",
            args.out.display()
        ))
        .into());
    }
    let config = args.model.to_config();
    crate::commands::ensure_parent(&args.out)?;
    let params = init_params(&config, args.seed, args.model.lr_init)?;
    let ckpt = Checkpoint::new(config, params);
    write_checkpoint(&args.out, &ckpt).with_context(|| "cannot write the checkpoint".to_string())?;
    let n: usize = ckpt.tensors().iter().map(|(_, _, v)| v.len()).sum();
    println!(
        "wrote {} ({} tensors, {} parameters, scheduler {})",
        args.out.display(),
        ckpt.tensors().len(),
        n,
        ckpt.config.scheduler.kind.as_str()
    );
    Ok(())
}
