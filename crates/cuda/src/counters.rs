//! What a [`crate::Runtime`] has done since it was created: launches, device allocations,
//! copies and host synchronisations, counted by every backend alike (the emulator too), so
//! that the cost of the host path of a meta-step can be read and tested without a GPU
//! (`meta-worker selftest` prints it; `tests/host_path.rs` fails when it grows).

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a runtime's counters (see [`crate::Runtime::counters`]). Subtract two
/// snapshots ([`Counters::since`]) for the work of what ran between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Kernel launches.
    pub launches: u64,
    /// Device allocations that reached the driver (a buffer taken from the pool is not one).
    pub allocs: u64,
    /// Buffers taken from the runtime's pool instead of allocated.
    pub pool_hits: u64,
    /// Host-to-device copies.
    pub uploads: u64,
    /// Device-to-host copies.
    pub downloads: u64,
    /// Device-to-device copies.
    pub device_copies: u64,
    /// Asynchronous zero fills of buffer ranges.
    pub memsets: u64,
    /// Points where the host waits for the device (an explicit synchronisation, or the wait
    /// every download ends with).
    pub syncs: u64,
    /// Captured graphs launched ([`crate::Runtime::replay`]): one host call that runs every
    /// operation of the graph, none of which counts as a launch, memset or copy above.
    pub graph_launches: u64,
    /// Graphs captured ([`crate::Runtime::capture`]).
    pub captures: u64,
    /// Kernel launches, memsets and device copies recorded into a graph while capturing
    /// (not run then, and not counted as launches, memsets or copies).
    pub captured: u64,
}

impl Counters {
    /// What happened between `earlier` and `self` (field by field, saturating).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            launches: self.launches.saturating_sub(earlier.launches),
            allocs: self.allocs.saturating_sub(earlier.allocs),
            pool_hits: self.pool_hits.saturating_sub(earlier.pool_hits),
            uploads: self.uploads.saturating_sub(earlier.uploads),
            downloads: self.downloads.saturating_sub(earlier.downloads),
            device_copies: self.device_copies.saturating_sub(earlier.device_copies),
            memsets: self.memsets.saturating_sub(earlier.memsets),
            syncs: self.syncs.saturating_sub(earlier.syncs),
            graph_launches: self.graph_launches.saturating_sub(earlier.graph_launches),
            captures: self.captures.saturating_sub(earlier.captures),
            captured: self.captured.saturating_sub(earlier.captured),
        }
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} launches, {} allocs ({} from the pool), {} uploads, {} downloads, {} device copies, \
             {} memsets, {} host syncs",
            self.launches,
            self.allocs,
            self.pool_hits,
            self.uploads,
            self.downloads,
            self.device_copies,
            self.memsets,
            self.syncs
        )?;
        if self.graph_launches + self.captures + self.captured > 0 {
            write!(
                f,
                ", {} graph launches, {} captures ({} operations captured)",
                self.graph_launches, self.captures, self.captured
            )?;
        }
        Ok(())
    }
}

/// Which counter an event increments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// [`Counters::launches`].
    Launch,
    /// [`Counters::allocs`].
    Alloc,
    /// [`Counters::pool_hits`].
    PoolHit,
    /// [`Counters::uploads`].
    Upload,
    /// [`Counters::downloads`].
    Download,
    /// [`Counters::device_copies`].
    DeviceCopy,
    /// [`Counters::memsets`].
    Memset,
    /// [`Counters::syncs`].
    Sync,
    /// [`Counters::graph_launches`].
    GraphLaunch,
    /// [`Counters::captures`].
    Capture,
    /// [`Counters::captured`].
    Captured,
}

/// The live counters a runtime owns: relaxed atomics, so counting costs no lock and a
/// runtime shared between threads stays `Sync`.
#[derive(Debug, Default)]
pub struct CounterSet {
    cells: [AtomicU64; 11],
}

impl CounterSet {
    /// Counts one `event`.
    pub fn add(&self, event: Event) {
        self.cells[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Counters {
        let get = |e: Event| self.cells[e as usize].load(Ordering::Relaxed);
        Counters {
            launches: get(Event::Launch),
            allocs: get(Event::Alloc),
            pool_hits: get(Event::PoolHit),
            uploads: get(Event::Upload),
            downloads: get(Event::Download),
            device_copies: get(Event::DeviceCopy),
            memsets: get(Event::Memset),
            syncs: get(Event::Sync),
            graph_launches: get(Event::GraphLaunch),
            captures: get(Event::Capture),
            captured: get(Event::Captured),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_land_in_their_own_counter() {
        let c = CounterSet::default();
        for e in [
            Event::Launch,
            Event::Alloc,
            Event::PoolHit,
            Event::Upload,
            Event::Download,
            Event::DeviceCopy,
            Event::Memset,
            Event::Sync,
            Event::GraphLaunch,
            Event::Capture,
            Event::Captured,
        ] {
            c.add(e);
        }
        c.add(Event::Launch);
        let s = c.snapshot();
        assert_eq!(s.launches, 2);
        assert_eq!(
            s.since(&Counters { launches: 1, ..Counters::default() }),
            Counters {
                launches: 1,
                allocs: 1,
                pool_hits: 1,
                uploads: 1,
                downloads: 1,
                device_copies: 1,
                memsets: 1,
                syncs: 1,
                graph_launches: 1,
                captures: 1,
                captured: 1
            }
        );
    }
}
