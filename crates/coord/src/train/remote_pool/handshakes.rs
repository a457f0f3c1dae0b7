//! Connections still in their handshake, so that unauthenticated peers cannot lock real workers
//! out.
//!
//! A connection holds a slot from `accept` until its handshake ends. There are [`MAX_PENDING`]
//! slots, at most [`MAX_PENDING_PER_IP`] of them per source address. When a new connection finds
//! no room, it is never the one refused: the oldest pending connection (of its own address when
//! that address holds its share, else of any) is dropped instead, connections that have not sent
//! a byte yet first. Evictions are spaced by at least [`EVICT_EVERY`] (the accept loop waits,
//! new connections queue in the listen backlog), so evicted peers that reconnect at once cannot
//! churn the table faster than that: a new connection stays at least `share × EVICT_EVERY`
//! (320 ms on one address) in the table before it can become the oldest. A real worker sends
//! its hello as soon as it is connected and finishes in a few round trips, so it survives any
//! number of idle connections, however fast they are reopened; an idle peer is also dropped
//! after [`PRE_HELLO`] without a first byte, well before the handshake deadline. A flood from
//! one address only evicts its own connections once it holds its share, so workers on other
//! hosts are not slowed down by it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

/// Connections that may be in their handshake at once.
pub(super) const MAX_PENDING: usize = 64;

/// Of which from one source address.
pub(super) const MAX_PENDING_PER_IP: usize = 32;

/// Least time between two evictions.
pub(super) const EVICT_EVERY: Duration = Duration::from_millis(10);

/// How long a new connection may stay silent before its first byte (the worker's hello
/// follows the TCP connection at once).
pub(super) const PRE_HELLO: Duration = Duration::from_secs(3);

struct Entry {
    ip: IpAddr,
    /// Whether it has sent its first byte.
    speaking: bool,
    abort: AbortHandle,
}

#[derive(Default)]
struct Inner {
    next: u64,
    pending: BTreeMap<u64, Entry>,
    evicted: u64,
    last_warn: Option<Instant>,
    last_evict: Option<Instant>,
}

/// The connections in their handshake.
#[derive(Clone, Default)]
pub(super) struct Table {
    inner: Arc<Mutex<Inner>>,
}

/// One connection's slot, freed when dropped (the handshake ended, or the task was dropped).
pub(super) struct Slot {
    inner: Arc<Mutex<Inner>>,
    seq: u64,
}

impl Slot {
    /// The peer sent its first byte: it is evicted only after every silent connection.
    pub(super) fn speaking(&self) {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = g.pending.get_mut(&self.seq) {
            e.speaking = true;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).pending.remove(&self.seq);
    }
}

impl Inner {
    /// Drops the oldest pending connection (from `ip` only, when given), silent ones first.
    fn evict(&mut self, ip: Option<IpAddr>) {
        let victim = self
            .pending
            .iter()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip))
            .min_by_key(|(seq, e)| (e.speaking, **seq))
            .map(|(&seq, _)| seq);
        let Some(entry) = victim.and_then(|seq| self.pending.remove(&seq)) else { return };
        entry.abort.abort();
        self.evicted += 1;
        self.last_evict = Some(Instant::now());
        if self.last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.last_warn = Some(Instant::now());
            tracing::warn!(
                from = %entry.ip,
                total = self.evicted,
                "handshake slots full: dropped the oldest unauthenticated connection"
            );
        }
    }
}

impl Table {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// How long to wait before admitting a connection from `ip`, so that evictions stay
    /// [`EVICT_EVERY`] apart (zero when there is room).
    pub(super) fn wait_before_admitting(&self, ip: IpAddr) -> Duration {
        let g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let full = g.pending.len() >= MAX_PENDING
            || g.pending.values().filter(|e| e.ip == ip).count() >= MAX_PENDING_PER_IP;
        match g.last_evict {
            Some(t) if full => EVICT_EVERY.saturating_sub(t.elapsed()),
            _ => Duration::ZERO,
        }
    }

    /// Makes room for a connection from `peer` and starts its handshake with `spawn` (given the
    /// slot to hold until the handshake ends; it returns the task's abort handle).
    pub(super) fn admit(&self, peer: SocketAddr, spawn: impl FnOnce(Slot) -> AbortHandle) {
        let ip = peer.ip();
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if g.pending.values().filter(|e| e.ip == ip).count() >= MAX_PENDING_PER_IP {
            g.evict(Some(ip));
        } else if g.pending.len() >= MAX_PENDING {
            g.evict(None);
        }
        let seq = g.next;
        g.next += 1;
        // The task frees its slot under this lock, so it cannot do so before the insertion.
        let abort = spawn(Slot { inner: Arc::clone(&self.inner), seq });
        g.pending.insert(seq, Entry { ip, speaking: false, abort });
    }
}
