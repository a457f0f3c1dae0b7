//! The training loop of `meta-coord train`: each meta-step hands the workers the current
//! parameters and a range of task indices, reduces their meta-gradients, skips the step if it
//! is not finite, clips, applies Adam; logs, evaluates, checkpoints and stops cleanly on
//! SIGINT.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metasched_compute::TaskSource;
use metasched_engine::FixedSum;
use metasched_engine::{UpdateMask, clip_grad_norm};
use metasched_proto::{RunSetup, Split, Token};
use metasched_tasks::{RunStream, TrainRun};

use super::config::{TrainArgs, TrainConfig};
use super::local_pool::LocalPool;
use super::metrics::{EvalLine, MetricsLine, MetricsWriter};
use super::outcome::Outcome;
use super::pool::{EvalOutput, EvalSpec, PartStats, WorkerPool};
use super::remote_pool::{RemotePool, RemoteTimeouts};
use super::signals::StopFlag;
use super::spawn::SpawnedWorkers;
use super::state::{TrainState, checkpoint_path};
use crate::exit::BadInput;
use crate::stats::{accuracy_summary, lr_stats, mean, mean_ci95};

/// The default run directory for a configuration.
pub fn default_out(cfg: &TrainConfig) -> PathBuf {
    let t = &cfg.trajectory;
    let task: String = t.task.task.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let task = if t.task.task.starts_with("file:") { "file".to_string() } else { task };
    let (kind, shots, seed) = (t.scheduler.scheduler.as_str(), t.task.shots, t.outer.seed);
    PathBuf::from("runs").join(format!("{task}-{kind}-k{shots}-seed{seed}"))
}

/// Builds or resumes the run `args` describe, checking everything that can be checked
/// before anything is written: the transport flags, every setting, and the tasks themselves
/// (opened and sampled once). Nothing is created here: [`write_run_files`] creates the
/// directory once the workers have started.
pub fn prepare(args: &TrainArgs) -> anyhow::Result<(PathBuf, TrainState)> {
    args.transport.validate()?;
    if let Some(dir) = &args.resume {
        let mut state = TrainState::load(dir, args)?;
        preflight(&mut state.meta.config, &args.given)?;
        return Ok((dir.clone(), state));
    }
    let mut cfg = args.resolve()?;
    preflight(&mut cfg, &args.given)?;
    let dir = args.out.clone().unwrap_or_else(|| default_out(&cfg));
    if checkpoint_path(&dir).exists() {
        return Err(BadInput(format!(
            "{} already holds a run: continue it with --resume {0}, or choose another --out",
            dir.display()
        ))
        .into());
    }
    if dir.exists() && !dir.is_dir() {
        return Err(BadInput(format!("--out {}: exists and is not a directory", dir.display())).into());
    }
    Ok((dir, TrainState::new(cfg)?))
}

/// Opens the run's tasks once and samples one training and one evaluation task, so that
/// every problem with them (a bad or missing task file, a learner of the wrong widths, more
/// digits classes or shots than the data holds, a meta-batch above the files' `B`) is
/// refused before anything is written. Task files fix `K` and `Q`: a run takes them from
/// the files unless `--shots` / `--query` were typed (a value typed that differs from the
/// files' is refused rather than reported wrongly); they change no number, only what the
/// reports say (a run resumed from before this rule is corrected the same way).
fn preflight(cfg: &mut TrainConfig, given: &crate::settings::GivenFlags) -> anyhow::Result<()> {
    let model = cfg.model_config()?;
    let source = TaskSource::open(&cfg.task_spec()?, &model)?;
    if let TaskSource::Files { files, .. } = &source {
        let (b, k, q) = (files.tasks_per_file(), files.support_points(), files.query_points());
        let dir = files.dir().display().to_string();
        let task = &mut cfg.trajectory.task;
        for (field, value, file) in [("shots", &mut task.shots, k), ("query", &mut task.query, q)] {
            if *value != file {
                if !given.contains(field) {
                    *value = file;
                } else {
                    return Err(super::config::bad(
                        field,
                        format!(
                            "{value}, but the task files in {dir} hold {file} per task (the files fix it)"
                        ),
                    ));
                }
            }
        }
        if cfg.run.eval_query != 0 && cfg.run.eval_query != q {
            return Err(super::config::bad(
                "eval_query",
                format!("{}, but the task files in {dir} hold {q} query points per task", cfg.run.eval_query),
            ));
        }
        let batch = cfg.trajectory.outer.meta_batch;
        if batch > b {
            return Err(super::config::bad(
                "meta_batch",
                format!("{batch} is more than the {b} tasks of each task file in {dir}"),
            ));
        }
        cfg.validate()?;
    }
    if let TaskSource::TrainMlp { runs, data, spec } = &source {
        // One run of each stream opened: the batch size against the split, the learner's
        // widths and loss against the data.
        for stream in [RunStream::Train, RunStream::Test] {
            TrainRun::<f32>::open(data, &model, spec.seed, stream, 0, runs.batch).map_err(|e| {
                super::config::bad(if e.to_string().contains("batch") { "batch_size" } else { "dataset" }, e)
            })?;
        }
        return Ok(());
    }
    let t = &cfg.trajectory.task;
    source.sample(Split::Train, 0, 0, 1)?;
    source.sample_with(Split::Test, 0, 0, 1, t.shots, cfg.eval_query())?;
    Ok(())
}

/// Creates the run directory and writes the resolved configuration, `run.toml`: done once
/// the workers have started, so that a run refused for its input leaves `--out` untouched.
fn write_run_files(dir: &Path, cfg: &TrainConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let toml = toml::to_string(cfg).context("cannot serialise the run configuration")?;
    let run_toml = dir.join(super::state::RUN_TOML);
    metasched_formats::write_atomic(&run_toml, toml.as_bytes())
        .with_context(|| format!("cannot write {}", run_toml.display()))
}

/// Workers and engine threads per worker for this machine: by default one worker whose
/// engine uses every core (work-stealing over the tasks balances best); with `--workers N`,
/// the cores are shared out among the workers.
pub fn parallelism(cfg: &TrainConfig) -> (usize, usize) {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = cfg.run.workers.max(1);
    let threads = if cfg.run.threads == 0 { (cores / workers).max(1) } else { cfg.run.threads };
    (workers, threads)
}

/// `meta-coord train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<Outcome> {
    let (dir, mut state) = prepare(args)?;
    let cfg = state.meta.config.clone();
    let (workers, threads) = parallelism(&cfg);
    let from_step = state.meta.step;
    let describe = |how: String| {
        println!(
            "training {} ({} scheduler, {} inner steps, B = {}) in {} from step {} to {} on {how}",
            cfg.trajectory.task.task,
            cfg.trajectory.scheduler.scheduler.as_str(),
            cfg.trajectory.inner.inner_steps,
            cfg.trajectory.outer.meta_batch,
            dir.display(),
            from_step,
            cfg.run.steps
        )
    };
    let stop = StopFlag::install();
    let t = &args.transport;
    if t.listen.is_none() && t.spawn_workers.is_none() {
        let mut pool = LocalPool::start_on(&state.model, &cfg.task_spec()?, workers, threads, t.device)?;
        write_run_files(&dir, &cfg)?;
        describe(format!("{workers} local worker(s) × {threads} thread(s) on {}", t.device));
        return train_loop(&mut state, &mut pool, &dir, &stop);
    }
    let (listen, token, expect) = match (&t.listen, t.spawn_workers) {
        (Some(addr), _) => {
            // Checked by `prepare` (`TransportArgs::validate`).
            let token = Token::resolve(t.token_file.as_deref())?.ok_or_else(|| {
                BadInput("--listen needs a shared token: --token-file FILE or METASCHED_TOKEN".into())
            })?;
            (super::config::listen_address(addr), token, t.expect_workers.max(1))
        }
        (None, Some(n)) => ("127.0.0.1:0".to_string(), Token::random(), n.max(1)),
        (None, None) => unreachable!("handled above"),
    };
    let secret = token.expose().to_string();
    let setup = RunSetup {
        config: state.model.clone(),
        tasks: cfg.task_spec()?,
        threads: if cfg.run.threads == 0 { 0 } else { cfg.run.threads as u32 },
        heartbeat_s: (t.heartbeat_timeout / 10.0).clamp(0.05, 2.0),
    };
    let seconds = |flag: &str, v: f64| super::config::check_seconds(flag, v).map_err(BadInput);
    let worker_timeout = seconds("--worker-timeout", t.worker_timeout)?;
    let timeouts = RemoteTimeouts {
        heartbeat: seconds("--heartbeat-timeout", t.heartbeat_timeout)?,
        heartbeat_interval: Duration::from_secs_f64(setup.heartbeat_s),
        step_deadline: seconds("--step-deadline", t.step_deadline)?,
        no_workers: worker_timeout,
        ..RemoteTimeouts::default()
    };
    let mut pool = RemotePool::start(&listen, token, setup, timeouts)?;
    write_run_files(&dir, &cfg)?;
    pool.set_stop_flag(stop.clone());
    pool.set_collective(t.collective);
    let addr = pool.local_addr();
    metasched_formats::write_atomic(dir.join("coordinator.addr"), addr.to_string().as_bytes())
        .with_context(|| format!("cannot write {}", dir.join("coordinator.addr").display()))?;
    println!("listening on {addr} for {expect} worker(s)");
    let spawned = match t.spawn_workers {
        Some(n) => {
            let per = (std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1) / n).max(1);
            let threads = if cfg.run.threads == 0 { per } else { cfg.run.threads };
            Some(SpawnedWorkers::start(n, &addr.to_string(), &secret, threads, &t.worker_device)?)
        }
        None => None,
    };
    let result = pool.wait_for_workers(expect, worker_timeout).and_then(|()| {
        describe(format!("{} remote worker(s) at {addr}", pool.size()));
        train_loop(&mut state, &mut pool, &dir, &stop)
    });
    let result = match result {
        Err(_) if stop.raised() => {
            state.save(&dir)?;
            println!(
                "interrupted: checkpoint saved at step {}; continue with --resume {}",
                state.meta.step,
                dir.display()
            );
            Ok(Outcome::Interrupted { step: state.meta.step })
        }
        other => other,
    };
    if result.is_err() {
        // A run that cannot go on (no workers left) keeps what it has.
        if let Err(e) = state.save(&dir) {
            tracing::error!("cannot save the checkpoint after the failure: {e:#}");
        } else {
            eprintln!(
                "checkpoint saved at step {}; continue with --resume {}",
                state.meta.step,
                dir.display()
            );
        }
    }
    pool.stop_all();
    drop(spawned);
    result
}

fn group_names(state: &TrainState) -> Vec<String> {
    (0..state.model.groups())
        .map(|k| metasched_engine::ThetaLayout::new(&state.model).group_tensor(k).0)
        .collect()
}

fn evaluate(
    pool: &mut dyn WorkerPool,
    state: &TrainState,
    stream: u64,
    tasks: usize,
) -> anyhow::Result<(EvalOutput, EvalLine)> {
    let cfg = &state.meta.config;
    let spec = EvalSpec {
        split: Split::Test,
        stream,
        tasks,
        shots: cfg.trajectory.task.shots,
        query: cfg.eval_query(),
    };
    let out = pool.evaluate(&Arc::new(state.params.clone()), spec)?;
    let (mean, ci95) = mean_ci95(&out.outer_loss);
    let (accuracy, accuracy_ci95) = accuracy_summary(&out.accuracy);
    Ok((out, EvalLine { mean, ci95, tasks, accuracy, accuracy_ci95 }))
}

/// What a meta-step's workers returned, whatever the task family.
struct StepParts {
    sum: FixedSum,
    /// Each task's query loss, or each long-run member's window objective.
    outer_loss: Vec<f32>,
    lr: Vec<f32>,
    parts: Vec<PartStats>,
    straggler_s: f64,
    redispatched: u32,
    group_reduced: bool,
}

/// The workers' part of meta-step `step`: `B` few-shot tasks, or one window of every member
/// of the long-run population (whose states are updated here, only once the step succeeded).
fn gradient_step(
    state: &mut TrainState,
    pool: &mut dyn WorkerPool,
    params: &Arc<metasched_engine::Params<f32>>,
    step: u64,
) -> anyhow::Result<StepParts> {
    let batch = state.meta.config.trajectory.outer.meta_batch;
    let horizon = state.model.inner.steps;
    match &mut state.population {
        None => {
            let out = pool.meta_step(params, step, step, batch)?;
            Ok(StepParts {
                sum: out.sum,
                outer_loss: out.outer_loss,
                lr: out.lr,
                parts: out.parts,
                straggler_s: out.straggler_s,
                redispatched: out.redispatched,
                group_reduced: out.group_reduced,
            })
        }
        Some(population) => {
            let out = pool.window_step(params, step, step, &population.jobs())?;
            population.update(out.members, horizon);
            Ok(StepParts {
                sum: out.sum,
                outer_loss: out.objective,
                lr: out.lr,
                parts: out.parts,
                straggler_s: out.straggler_s,
                redispatched: out.redispatched,
                group_reduced: false,
            })
        }
    }
}

/// Runs meta-steps from `state.meta.step` to the configured number, then the final
/// evaluation and plots.
pub fn train_loop(
    state: &mut TrainState,
    pool: &mut dyn WorkerPool,
    dir: &Path,
    stop: &StopFlag,
) -> anyhow::Result<Outcome> {
    let cfg = state.meta.config.clone();
    let mask = UpdateMask { theta: state.model.inner.learn_init };
    let groups = group_names(state);
    let mut metrics = MetricsWriter::open(dir, state.meta.step)?;
    let started = Instant::now();
    let bar = super::progress::bar(cfg.run.steps, state.meta.step);
    let mut last_log = (Instant::now(), state.meta.step);
    let mut redispatched = 0u64;
    let mut group_reduced = 0u64;
    while state.meta.step < cfg.run.steps {
        let step = state.meta.step;
        let _span = tracing::info_span!("step", step).entered();
        let params = Arc::new(state.params.clone());
        let out = gradient_step(state, pool, &params, step).with_context(|| format!("meta-step {step}"))?;
        redispatched += u64::from(out.redispatched);
        group_reduced += u64::from(out.group_reduced);
        let meta_loss = mean(&out.outer_loss);
        let grad_norm = match out.sum.to_params(&state.params, 1.0 / cfg.trajectory.outer.meta_batch as f64) {
            Some(mut grad) => {
                let norm = clip_grad_norm(&mut grad, cfg.trajectory.outer.clip_norm, mask);
                state.adam.step(&mut state.params, &grad, mask);
                Some(norm)
            }
            None => {
                state.meta.skipped += 1;
                tracing::warn!(
                    step,
                    meta_loss,
                    skipped = state.meta.skipped,
                    "non-finite meta-gradient: step skipped"
                );
                None
            }
        };
        state.meta.step += 1;
        let done = state.meta.step;
        let eval = if cfg.run.eval_every > 0 && done.is_multiple_of(cfg.run.eval_every) {
            let (_, line) = evaluate(pool, state, 0, cfg.run.eval_tasks)?;
            tracing::info!(step = done, mean = line.mean, ci95 = line.ci95, "evaluation");
            let acc = line.accuracy.map(|a| format!(", accuracy {:.2}%", 100.0 * a)).unwrap_or_default();
            bar.println(format!(
                "step {done}: eval query loss {:.4} ± {:.4}{acc} ({} tasks)",
                line.mean, line.ci95, line.tasks
            ));
            Some(line)
        } else {
            None
        };
        if done.is_multiple_of(cfg.run.log_every) || eval.is_some() || done == cfg.run.steps {
            let (t0, s0) = last_log;
            let steps_per_s = (done - s0) as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            last_log = (Instant::now(), done);
            metrics.write(&MetricsLine {
                step: done,
                meta_loss,
                grad_norm,
                lr: lr_stats(&out.lr, &groups),
                skipped: state.meta.skipped,
                wall_time: started.elapsed().as_secs_f64(),
                steps_per_s,
                parts: out.parts.clone(),
                straggler_wait_s: out.straggler_s,
                redispatched,
                group_reduced,
                eval,
            })?;
            let workers: std::collections::BTreeSet<u32> = out.parts.iter().map(|p| p.worker).collect();
            bar.set_message(format!(
                "meta-loss {meta_loss:.4}, {} worker(s), straggler {:.1} ms, re-dispatched {redispatched}",
                workers.len(),
                1e3 * out.straggler_s
            ));
        }
        bar.set_position(done);
        if cfg.run.checkpoint_every > 0 && done.is_multiple_of(cfg.run.checkpoint_every) {
            state.save(dir)?;
        }
        if stop.raised() {
            state.save(dir)?;
            bar.abandon();
            println!(
                "interrupted: checkpoint saved at step {done}; continue with --resume {}",
                dir.display()
            );
            return Ok(Outcome::Interrupted { step: done });
        }
    }
    bar.finish_and_clear();
    state.save(dir)?;
    let elapsed = started.elapsed().as_secs_f64();
    println!("trained to step {} in {elapsed:.1} s; {} step(s) skipped", state.meta.step, state.meta.skipped);
    super::report::finish(state, pool, dir, &groups)
}
