//! `meta-coord sample-tasks`: a task-batch file from a task family.

use anyhow::Result;
use metasched_formats::write_task_batch;
use metasched_tasks::{Digits, Sinusoid, Split};

use crate::cli::{SampleFamily, SampleTasksArgs};
use crate::exit::BadInput;

/// Runs `sample-tasks`.
pub fn run(args: &SampleTasksArgs) -> Result<()> {
    if args.tasks == 0 || args.shots == 0 || args.query == 0 {
        return Err(BadInput("--tasks, --shots and --query must each be at least 1".into()).into());
    }
    let batch = match args.task {
        SampleFamily::Sinusoid => {
            Sinusoid::default().sample(args.seed, args.step, 0, args.tasks, args.shots, args.query)
        }
        SampleFamily::Digits => Digits::load()?
            .sample(Split::Train, args.seed, args.step, 0, args.tasks, args.ways, args.shots, args.query)
            .map_err(|e| BadInput(e.to_string()))?,
    };
    crate::commands::ensure_parent(&args.out)?;
    write_task_batch(&args.out, &batch)?;
    println!(
        "wrote {} ({} tasks, K = {}, Q = {}, seed {}, step {})",
        args.out.display(),
        batch.b,
        batch.k,
        batch.q,
        args.seed,
        args.step
    );
    Ok(())
}
