//! A worker's part of a meta-step replayed as one captured graph ([`MetaStepGraphs`],
//! [`device_meta_gradient_sum_graphed`]): the ~120 launches, memsets and device copies
//! between the uploads and the download of [`crate::device_meta_gradient_sum`] become one
//! graph launch per meta-step once the shape has been seen.
//!
//! A graph bakes in the buffer pointers and the scalar arguments it was captured with, so it
//! is only replayed when both are those of the meta-step at hand:
//!
//! - the scalars (sizes, step indices, `lr_min`, `lr_span`) are functions of the config and
//!   the batch shape, which form the cache key ([`StepKey`]);
//! - the buffers are a per-shape arena: the cache entry owns every buffer the graph uses, so
//!   each meta-step of that shape uploads into the very buffers captured; the entry also keeps
//!   their identities from the capture, and a replay with any other set of buffers recaptures
//!   (the runtimes refuse a graph whose buffers are not all handed to [`Runtime::replay`]).
//!
//! The uploads (parameters and inputs) happen before the replay and the download after it,
//! outside the graph; the result is bit for bit what [`crate::device_meta_gradient_sum`]
//! computes (`tests/graph_replay.rs` checks it on the emulator).

use metasched_engine::{Config, Params, Targets, TaskBatch};

use crate::device_metagrad::{DeviceGradientSum, SumStep};
use crate::error::Result;
use crate::graph::BufferId;
use crate::runtime::Runtime;

/// What a captured meta-step depends on besides the buffers: the config (every scalar
/// argument derives from it) and the batch's shape.
#[derive(Debug, Clone, PartialEq)]
struct StepKey {
    config: Config,
    /// `b, k, q, d_in, d_out` and the lengths of the four inputs.
    shape: [usize; 9],
    /// Whether the support and query targets are labels.
    labels: [bool; 2],
}

impl StepKey {
    fn of(config: &Config, batch: &TaskBatch<f32>) -> Self {
        let targets = |t: &Targets<f32>| match t {
            Targets::Values(v) => (v.len(), false),
            Targets::Labels(l) => (l.len(), true),
        };
        let (sy, sl) = targets(&batch.support_y);
        let (qy, ql) = targets(&batch.query_y);
        Self {
            config: config.clone(),
            shape: [
                batch.b,
                batch.k,
                batch.q,
                batch.d_in,
                batch.d_out,
                batch.support_x.len(),
                sy,
                batch.query_x.len(),
                qy,
            ],
            labels: [sl, ql],
        }
    }
}

/// One shape's arena and the graph captured on it.
struct Entry<R: Runtime> {
    key: StepKey,
    step: SumStep<R>,
    /// The graph and the identities of the arena's buffers when it was captured.
    graph: Option<(R::Graph, Vec<BufferId>)>,
}

/// What [`MetaStepGraphs`] has done: how often it captured and replayed, and why it
/// recaptured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GraphStats {
    /// Graphs captured (the first meta-step of each shape, and every recapture).
    pub captures: u64,
    /// Meta-steps run by replaying a graph.
    pub replays: u64,
    /// Recaptures because the arena's buffers were no longer those captured.
    pub stale: u64,
    /// Shapes dropped to make room for another ([`MetaStepGraphs::with_capacity`]).
    pub evictions: u64,
}

/// The graphs of recent meta-step shapes, each with the buffers it was captured on: what a
/// caller keeps between meta-steps to run them with [`device_meta_gradient_sum_graphed`].
/// Opt-in: the buffers of every cached shape stay allocated (instead of going back to the
/// runtime's pool) until evicted or [`MetaStepGraphs::clear`]ed.
pub struct MetaStepGraphs<R: Runtime> {
    /// Most recently used last.
    entries: Vec<Entry<R>>,
    capacity: usize,
    stats: GraphStats,
}

impl<R: Runtime> std::fmt::Debug for MetaStepGraphs<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetaStepGraphs({} shapes, {:?})", self.entries.len(), self.stats)
    }
}

impl<R: Runtime> Default for MetaStepGraphs<R> {
    fn default() -> Self {
        Self::with_capacity(4)
    }
}

impl<R: Runtime> MetaStepGraphs<R> {
    /// A cache of at most `shapes` shapes (at least 1); the least recently used is evicted.
    pub fn with_capacity(shapes: usize) -> Self {
        Self { entries: Vec::new(), capacity: shapes.max(1), stats: GraphStats::default() }
    }

    /// Captures, replays, recaptures and evictions so far.
    pub fn stats(&self) -> GraphStats {
        self.stats
    }

    /// How many shapes are cached.
    pub fn shapes(&self) -> usize {
        self.entries.len()
    }

    /// Drops every graph and gives every arena's buffers back to `rt`'s pool.
    pub fn clear(&mut self, rt: &R) {
        for e in self.entries.drain(..) {
            drop(e.graph);
            e.step.recycle(rt);
        }
    }

    fn take(&mut self, key: &StepKey) -> Option<Entry<R>> {
        let at = self.entries.iter().position(|e| e.key == *key)?;
        Some(self.entries.remove(at))
    }

    fn put(&mut self, rt: &R, entry: Entry<R>) {
        while self.entries.len() >= self.capacity {
            let old = self.entries.remove(0);
            drop(old.graph);
            old.step.recycle(rt);
            self.stats.evictions += 1;
        }
        self.entries.push(entry);
    }

    /// Swaps one buffer of the cached arena of `batch`'s shape for a fresh one (tests: a
    /// buffer set that changed under a captured graph).
    #[cfg(test)]
    pub(crate) fn replace_a_buffer(
        &mut self,
        rt: &R,
        config: &Config,
        batch: &TaskBatch<f32>,
    ) -> Result<bool> {
        let key = StepKey::of(config, batch);
        match self.entries.iter_mut().find(|e| e.key == key) {
            Some(e) => e.step.replace_v(rt).map(|()| true),
            None => Ok(false),
        }
    }
}

/// [`crate::device_meta_gradient_sum`] through a graph: the first meta-step of a shape
/// allocates the arena, uploads, captures the launches and replays the graph; later ones of
/// the same shape upload into the same buffers and replay (one graph launch, no kernel
/// launch from the host). On a runtime without graphs it is the plain path. Bit for bit the
/// same results either way.
pub fn device_meta_gradient_sum_graphed<R: Runtime>(
    rt: &R,
    graphs: &mut MetaStepGraphs<R>,
    config: &Config,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<DeviceGradientSum> {
    if !rt.supports_graphs() {
        return crate::device_metagrad::plain_sum(rt, config, params, batch);
    }
    let key = StepKey::of(config, batch);
    let mut entry = match graphs.take(&key) {
        Some(mut e) => {
            batch.validate(config).map_err(|e| crate::CudaError::InvalidArgument {
                kernel: "device_meta_gradient".into(),
                reason: e.to_string(),
            })?;
            e.step.repack(config, params)?;
            e
        }
        None => Entry { key, step: SumStep::alloc(rt, config, params, batch)?, graph: None },
    };
    let result = run(rt, &mut graphs.stats, &mut entry, params, batch);
    match result {
        Ok(sum) => {
            graphs.put(rt, entry);
            Ok(sum)
        }
        Err(e) => {
            drop(entry.graph);
            entry.step.recycle(rt);
            Err(e)
        }
    }
}

/// Uploads, replays the entry's graph (capturing it first when there is none, or when the
/// arena's buffers changed since), downloads.
fn run<R: Runtime>(
    rt: &R,
    stats: &mut GraphStats,
    entry: &mut Entry<R>,
    params: &Params<f32>,
    batch: &TaskBatch<f32>,
) -> Result<DeviceGradientSum> {
    entry.step.upload(rt, batch)?;
    let ids: Vec<BufferId> = entry.step.bound().iter().map(|b| b.id()).collect();
    if let Some((_, captured)) = &entry.graph
        && *captured != ids
    {
        entry.graph = None;
        stats.stale += 1;
    }
    let graph = match entry.graph.take() {
        Some((g, _)) => {
            stats.replays += 1;
            g
        }
        None => {
            stats.captures += 1;
            rt.capture(|rt| entry.step.record(rt))?
        }
    };
    let replayed = rt.replay(&graph, &entry.step.bound());
    entry.graph = Some((graph, ids));
    replayed?;
    entry.step.finish(rt, params)
}

#[cfg(test)]
mod tests {
    use metasched_engine::init::init_params;

    use super::*;
    use crate::EmuRuntime;

    /// A batch of `b` sinusoid-shaped tasks with fixed contents.
    fn batch(config: &Config, b: usize) -> TaskBatch<f32> {
        let (k, q, d_in, d_out) = (5, 6, config.d_in(), config.d_out());
        let vals = |n: usize, s: f32| (0..n).map(|i| ((i as f32) * s).sin()).collect::<Vec<f32>>();
        TaskBatch {
            b,
            k,
            q,
            d_in,
            d_out,
            support_x: vals(b * k * d_in, 0.37),
            support_y: Targets::Values(vals(b * k * d_out, 0.91)),
            query_x: vals(b * q * d_in, 0.53),
            query_y: Targets::Values(vals(b * q * d_out, 0.29)),
        }
    }

    #[test]
    fn changed_buffers_are_recaptured_not_replayed() {
        let c = Config::sinusoid_default();
        let p = init_params(&c, 3, 0.05).expect("params");
        let tasks = batch(&c, 3);
        let rt = EmuRuntime::new();
        let want = crate::device_meta_gradient_sum(&rt, &c, &p, &tasks).expect("plain");
        let mut graphs = MetaStepGraphs::default();
        for _ in 0..2 {
            device_meta_gradient_sum_graphed(&rt, &mut graphs, &c, &p, &tasks).expect("graph");
        }
        assert!(graphs.replace_a_buffer(&rt, &c, &tasks).expect("swap"), "the shape is cached");
        let got = device_meta_gradient_sum_graphed(&rt, &mut graphs, &c, &p, &tasks).expect("recaptured");
        assert_eq!(got.sum, want.sum);
        assert_eq!(got.lr, want.lr);
        let s = graphs.stats();
        assert_eq!((s.captures, s.replays, s.stale), (2, 1, 1), "{s:?}");
    }
}
