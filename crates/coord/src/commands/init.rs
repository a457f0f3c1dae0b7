//! `meta-coord init`: a fresh checkpoint.

use anyhow::{Context, Result};
use metasched_engine::init::init_params;
use metasched_formats::{Checkpoint, write_checkpoint};
use metasched_proto::TaskFamily;

use crate::cli::InitArgs;
use crate::exit::BadInput;

/// Runs `init`.
pub fn run(args: &InitArgs) -> Result<()> {
    if args.out.exists() && !args.force {
        return Err(BadInput(format!(
            "{} already exists (pass --force to overwrite it)",
            args.out.display()
        ))
        .into());
    }
    // The same checks as `train`'s: rates in range, and parameters that fit in memory
    // (checked before they are allocated).
    args.learner.validate()?;
    args.scheduler.validate()?;
    args.inner.validate()?;
    let sizes = crate::train::TrainConfig {
        trajectory: crate::settings::Trajectory {
            learner: args.learner.clone(),
            scheduler: args.scheduler.clone(),
            inner: args.inner.clone(),
            ..Default::default()
        },
        run: crate::settings::RunSettings::default(),
    };
    crate::resources::check_memory(&sizes.memory_needs()[..1]).map_err(|e| BadInput(format!("init: {e}")))?;
    // No task here: an unset --layers / --loss means the default task's (sinusoid), as for
    // `train`.
    let config = crate::settings::model_config(
        &args.learner,
        &args.scheduler,
        &args.inner,
        &TaskFamily::Sinusoid,
        crate::settings::TaskSettings::default().ways,
    )?;
    crate::commands::ensure_parent(&args.out)?;
    let params = init_params(&config, args.seed, args.scheduler.lr_init)?;
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
