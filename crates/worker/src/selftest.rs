//! `meta-worker selftest`: every kernel (the shared checks of
//! [`metasched_cuda::checks`], one row per [`metasched_cuda::KernelId`]) and the whole
//! device meta-gradient against their CPU twins on a [`Runtime`], with a table of the worst
//! deviations; then the host path of a meta-step (launches, allocations, copies and host
//! waits, from the runtime's counters), checked against what `metasched_cuda` promises,
//! with and without the part sum replayed from a captured graph.

use metasched_cuda::checks::meta_gradient_tensors;
use metasched_cuda::checks::{self, Check, Comparison, Tolerance};
use metasched_cuda::{
    Counters, MetaStepGraphs, Runtime, device_meta_gradient, device_meta_gradient_sum,
    device_meta_gradient_sum_graphed,
};
use metasched_engine::init::init_params;
use metasched_engine::{
    Activation, Config, Engine, InnerConfig, LossKind, ModelConfig, Params, SchedulerConfig, SchedulerKind,
    TaskBatch,
};
use metasched_tasks::random_batch;

/// Tolerance of the whole-meta-gradient rows (the kernel rows use
/// [`checks::tolerance`], the same for every kernel but one).
const METAGRAD_TOLERANCE: Tolerance = Tolerance::DEFAULT;

/// The whole meta-gradient on `rt` against `Engine::meta_gradient`, one row per tensor.
fn metagrad<R: Runtime>(rt: &R, label: &str, config: &Config, batch: &TaskBatch<f32>) -> Vec<Check> {
    let name = format!("metagrad {label}");
    let failed = |name: &str, e: &dyn std::fmt::Display| vec![Check::failed(name, METAGRAD_TOLERANCE, e)];
    let params = match init_params(config, 3, 0.05) {
        Ok(p) => p,
        Err(e) => return failed(&name, &e),
    };
    let cpu = match Engine::new(1).and_then(|e| e.meta_gradient(config, &params, batch)) {
        Ok(m) => m,
        Err(e) => return failed(&format!("{name} (cpu engine)"), &e),
    };
    let dev = match device_meta_gradient(rt, config, &params, batch) {
        Ok(m) => m,
        Err(e) => return failed(&name, &e),
    };
    let (want, got) = (meta_gradient_tensors(&cpu), meta_gradient_tensors(&dev));
    if want.len() != got.len() {
        return failed(&name, &"tensor sets differ");
    }
    want.iter()
        .zip(&got)
        .map(|((n, w), (_, g))| {
            let mut c = Comparison::new(&format!("{name} {n}"), METAGRAD_TOLERANCE);
            c.add(n, g, w);
            c.finish()
        })
        .collect()
}

/// What a worker sends and what evaluation reports, on `rt` against the engine: the part sum
/// of per-task gradients (`device_meta_gradient_sum` vs `Engine::meta_gradient_sum`, as the
/// mean), and `device_evaluate` vs `Engine::evaluate` (query losses, rates, accuracies).
fn worker_paths<R: Runtime>(rt: &R, label: &str, config: &Config, batch: &TaskBatch<f32>) -> Vec<Check> {
    let failed = |name: &str, e: &dyn std::fmt::Display| vec![Check::failed(name, METAGRAD_TOLERANCE, e)];
    let (sum_name, eval_name) = (format!("part sum {label}"), format!("evaluate {label}"));
    let params = match init_params(config, 4, 0.05) {
        Ok(p) => p,
        Err(e) => return failed(&sum_name, &e),
    };
    let engine = match Engine::new(1) {
        Ok(e) => e,
        Err(e) => return failed(&sum_name, &e),
    };
    let mut rows = Vec::new();
    let scale = 1.0 / batch.b as f64;
    let cpu = engine.meta_gradient_sum(config, &params, batch).map(|(s, _)| s.to_f32(scale));
    let dev =
        metasched_cuda::device_meta_gradient_sum(rt, config, &params, batch).map(|d| d.sum.to_f32(scale));
    rows.push(match (cpu, dev) {
        (Ok(Some(w)), Ok(Some(g))) => {
            let mut c = Comparison::new(&sum_name, METAGRAD_TOLERANCE);
            c.add("sum/B", &g, &w);
            c.finish()
        }
        (Err(e), _) => Check::failed(&sum_name, METAGRAD_TOLERANCE, &e),
        (_, Err(e)) => Check::failed(&sum_name, METAGRAD_TOLERANCE, &e),
        _ => Check::failed(&sum_name, METAGRAD_TOLERANCE, "a non-finite gradient"),
    });
    let cpu = engine.evaluate(config, &params, batch);
    let dev = metasched_cuda::device_evaluate(rt, config, &params, batch);
    rows.push(match (cpu, dev) {
        (Ok(w), Ok(g)) => {
            let mut c = Comparison::new(&eval_name, METAGRAD_TOLERANCE);
            c.add("outer_loss", &g.outer_loss, &w.outer_loss);
            c.add("lr", &g.lr, &w.lr);
            if let (Some(ga), Some(wa)) = (&g.accuracy, &w.accuracy) {
                c.add("accuracy", ga, wa);
            }
            c.finish()
        }
        (Err(e), _) => Check::failed(&eval_name, METAGRAD_TOLERANCE, &e),
        (_, Err(e)) => Check::failed(&eval_name, METAGRAD_TOLERANCE, &e),
    });
    rows
}

/// Runs every check on `rt`: one row per kernel, then one per meta-gradient tensor of the
/// default sinusoid shape and of a cross-entropy shape, then a worker's part sum and the
/// evaluation of both.
pub fn run<R: Runtime>(rt: &R) -> Vec<Check> {
    let mut rows = checks::all_kernel_checks(rt);
    let sinusoid = Config::sinusoid_default();
    let sinusoid_batch = random_batch(&sinusoid, 2, 10, 10, 5);
    rows.extend(metagrad(rt, "sinusoid", &sinusoid, &sinusoid_batch));
    let ce = Config {
        model: ModelConfig {
            layers: vec![3, 6, 4],
            activation: Activation::Tanh,
            loss: LossKind::CrossEntropy,
        },
        inner: InnerConfig { steps: 3, first_order: false, learn_init: true, optimizer: Default::default() },
        scheduler: SchedulerConfig {
            kind: SchedulerKind::Lslr,
            hidden: 5,
            lr_min: 0.01,
            lr_max: 0.5,
            lr_fixed: 0.2,
        },
    };
    let ce_batch = random_batch(&ce, 3, 4, 5, 11);
    rows.extend(metagrad(rt, "cross-entropy", &ce, &ce_batch));
    rows.extend(worker_paths(rt, "sinusoid", &sinusoid, &sinusoid_batch));
    rows.extend(worker_paths(rt, "cross-entropy", &ce, &ce_batch));
    rows
}

/// The host path of a meta-step on `rt`: a worker's part (`device_meta_gradient_sum`) and the
/// mean (`device_meta_gradient`) of the default sinusoid shape, each run twice; the counters of
/// the first (cold pool) and the second (warm) run, as lines to print, and a row per path
/// checking the warm run: no allocation, one download, one host wait.
pub fn host_path<R: Runtime>(rt: &R) -> (Vec<String>, Vec<Check>) {
    let config = Config::sinusoid_default();
    let batch = random_batch(&config, 4, 10, 10, 9);
    let (mut lines, mut rows) = (Vec::new(), Vec::new());
    let s = &config;
    lines.push(format!(
        "host path per meta-step (sinusoid default: {} linear layers, T = {}, {:?} scheduler, B = {}):",
        s.model.layers.len() - 1,
        s.inner.steps,
        s.scheduler.kind,
        batch.b
    ));
    let params = match init_params(&config, 3, 0.05) {
        Ok(p) => p,
        Err(e) => return (lines, vec![Check::failed("host path", METAGRAD_TOLERANCE, &e)]),
    };
    let paths: [(&str, &dyn Fn() -> metasched_cuda::Result<()>); 2] = [
        ("part sum", &|| device_meta_gradient_sum(rt, &config, &params, &batch).map(drop)),
        ("mean", &|| device_meta_gradient(rt, &config, &params, &batch).map(drop)),
    ];
    for (label, step) in paths {
        let name = format!("host path {label} (warm)");
        let mut counts: Vec<Counters> = Vec::new();
        for _ in 0..2 {
            let before = rt.counters();
            if let Err(e) = step() {
                rows.push(Check::failed(&name, METAGRAD_TOLERANCE, &e));
                break;
            }
            counts.push(rt.counters().since(&before));
        }
        if let [cold, warm] = counts[..] {
            lines.push(format!("  {label:<8} first: {cold}"));
            lines.push(format!("  {label:<8} warm:  {warm}"));
            let mut c = Comparison::new(&name, METAGRAD_TOLERANCE);
            let got = [warm.allocs as f32, warm.downloads as f32, warm.syncs as f32];
            c.add("allocs/downloads/syncs", &got, &[0.0, 1.0, 1.0]);
            rows.push(c.finish());
        }
    }
    if rt.supports_graphs() {
        rows.push(graph_path(rt, &config, &params, &batch, &mut lines));
    }
    (lines, rows)
}

/// The part sum replayed from a captured graph ([`device_meta_gradient_sum_graphed`]), three
/// meta-steps: the counters of the first (capture and replay) and of a warm one (one graph
/// launch, no kernel launch), as lines; the row checks the warm counts and that every step's
/// results are bitwise those of the plain launches.
fn graph_path<R: Runtime>(
    rt: &R,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
    lines: &mut Vec<String>,
) -> Check {
    let name = "host path part sum graph (warm)";
    let mut graphs = MetaStepGraphs::default();
    let mut counts: Vec<Counters> = Vec::new();
    let mut differing = 0usize;
    // Wall time of the warm steps (after the first), graph and launches, in seconds.
    let (mut t_graph, mut t_plain) = (0.0f64, 0.0f64);
    for step in 0..3 {
        let before = rt.counters();
        let start = std::time::Instant::now();
        let got = match device_meta_gradient_sum_graphed(rt, &mut graphs, config, params, batch) {
            Ok(s) => s,
            Err(e) => return Check::failed(name, METAGRAD_TOLERANCE, &e),
        };
        let graphed = start.elapsed().as_secs_f64();
        counts.push(rt.counters().since(&before));
        let start = std::time::Instant::now();
        let want = match device_meta_gradient_sum(rt, config, params, batch) {
            Ok(s) => s,
            Err(e) => return Check::failed(name, METAGRAD_TOLERANCE, &e),
        };
        if step > 0 {
            t_graph += graphed;
            t_plain += start.elapsed().as_secs_f64();
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        let same = got.sum == want.sum
            && bits(&got.lr) == bits(&want.lr)
            && bits(&got.outer_loss) == bits(&want.outer_loss);
        differing += usize::from(!same);
    }
    graphs.clear(rt);
    let (cold, warm) = (counts[0], counts[2]);
    lines.push(format!("  {:<8} first: {cold}", "graph"));
    lines.push(format!("  {:<8} warm:  {warm}", "graph"));
    lines.push(format!(
        "  graph launches {}, kernel launches {} on replay ({} operations captured once); \
         results bitwise those of the launches: {}",
        warm.graph_launches,
        warm.launches,
        cold.captured,
        if differing == 0 { "yes" } else { "NO" }
    ));
    lines.push(format!(
        "  graph    warm step {:.3} ms, launches {:.3} ms (wall time incl. uploads and download, \
         mean of 2)",
        t_graph * 500.0,
        t_plain * 500.0
    ));
    let mut c = Comparison::new(name, METAGRAD_TOLERANCE);
    let got =
        [warm.launches, warm.graph_launches, warm.allocs, warm.syncs, differing as u64].map(|x| x as f32);
    c.add("launches,graph_launches,allocs,syncs,differing_steps", &got, &[0.0, 1.0, 0.0, 1.0, 0.0]);
    c.finish()
}

/// Prints the table to stdout; true when every row passed.
pub fn print(device: &str, rows: &[Check]) -> bool {
    let d = Tolerance::DEFAULT;
    println!(
        "selftest on {device} (pass: |dev - cpu| <= atol + rtol*|cpu| elementwise; atol {:e}, rtol {:e} \
         unless the row says otherwise; used = worst |dev - cpu| / (atol + rtol*|cpu|))",
        d.atol, d.rtol
    );
    println!(
        "{:<44} {:>8} {:>10} {:>10} {:>6} {:>6}  worst element",
        "check", "values", "worst_abs", "worst_rel", "used", "result"
    );
    for r in rows {
        let mut notes = Vec::new();
        if r.tolerance != d {
            notes.push(format!("atol {:e}, rtol {:e}", r.tolerance.atol, r.tolerance.rtol));
        }
        if !r.note.is_empty() {
            notes.push(r.note.clone());
        }
        println!(
            "{:<44} {:>8} {:>10.3e} {:>10.3e} {:>6.3} {:>6}  {}{}",
            r.name,
            r.values,
            r.worst_abs,
            r.worst_rel,
            r.worst_used,
            if r.pass { "pass" } else { "FAIL" },
            r.worst_element(),
            if notes.is_empty() { String::new() } else { format!("  ({})", notes.join("; ")) }
        );
    }
    let failed = rows.iter().filter(|r| !r.pass).count();
    println!("{} check(s), {failed} failed", rows.len());
    failed == 0
}
