//! A TCP all-reduce between worker processes: NCCL's stand-in where there is no GPU (workers on
//! the emulated device, CI), behind the same [`Collective`] interface, so the coordinator's
//! group protocol (id from rank 0, join, all-reduce, one reduced gradient) runs end to end
//! without NCCL.
//!
//! Rank 0 listens on an ephemeral port; its communicator id is a random 32-byte session key
//! followed by `IP:PORT`. The other ranks connect and prove the key (a peer without it is
//! dropped). An all-reduce is a star: every rank sends `len` and its `i64` values to rank 0,
//! which adds them (wrapping, so exactly and in any order) and sends the sum back. Every read
//! and write has a deadline, and [`TcpCollective::aborter`] shuts the sockets down from another
//! thread, so a member blocked on a dead peer returns an error instead of hanging.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::collective::Collective;
use crate::error::{CollectiveError, Result};

/// Bytes of the session key at the start of a communicator id.
pub const KEY_LEN: usize = 32;

/// Largest vector an all-reduce accepts (values), so a corrupt length cannot allocate much.
const MAX_VALUES: u64 = 1 << 26;

fn err(msg: impl Into<String>) -> CollectiveError {
    CollectiveError::Tcp(msg.into())
}

/// Rank 0's listening socket, between creating the id and joining.
#[derive(Debug)]
pub struct Rendezvous {
    listener: TcpListener,
    key: [u8; KEY_LEN],
}

/// Creates a communicator id (key and address) with rank 0 listening on `ip`.
pub fn create(ip: IpAddr) -> Result<(Vec<u8>, Rendezvous)> {
    let listener =
        TcpListener::bind(SocketAddr::new(ip, 0)).map_err(|e| err(format!("cannot listen: {e}")))?;
    let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
    let mut key = [0u8; KEY_LEN];
    getrandom::fill(&mut key).map_err(|e| err(format!("no randomness for the key: {e}")))?;
    let mut id = key.to_vec();
    id.extend_from_slice(addr.to_string().as_bytes());
    Ok((id, Rendezvous { listener, key }))
}

/// The key and rank 0's address in a communicator id.
fn parse_id(id: &[u8]) -> Result<([u8; KEY_LEN], SocketAddr)> {
    if id.len() <= KEY_LEN || id.len() > KEY_LEN + 64 {
        return Err(err(format!("malformed communicator id of {} bytes", id.len())));
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&id[..KEY_LEN]);
    let addr = std::str::from_utf8(&id[KEY_LEN..])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("malformed address in the communicator id"))?;
    Ok((key, addr))
}

/// One member of a TCP group.
#[derive(Debug)]
pub struct TcpCollective {
    rank: usize,
    world: usize,
    /// Rank 0: a stream per rank `1..world` (index `r - 1`); others: the stream to rank 0.
    peers: Vec<TcpStream>,
}

/// Shuts a member's sockets down from another thread (see [`TcpCollective::aborter`]).
#[derive(Debug)]
pub struct Aborter(Vec<TcpStream>);

impl Aborter {
    /// Makes every blocked or later operation of the member fail at once.
    pub fn abort(&self) {
        for s in &self.0 {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl TcpCollective {
    /// Joins the group of `id` as `rank` of `world`. Rank 0 passes the [`Rendezvous`] from
    /// [`create`] and waits for every other rank; the others connect (retrying until
    /// `timeout`). `timeout` also bounds every later read and write.
    pub fn join(
        id: &[u8],
        rank: usize,
        world: usize,
        rendezvous: Option<Rendezvous>,
        timeout: Duration,
    ) -> Result<Self> {
        Self::join_cancellable(id, rank, world, rendezvous, timeout, &AtomicBool::new(false))
    }

    /// [`TcpCollective::join`] that also ends, with an error, as soon as `cancel` is set (the
    /// group was left while members were still joining).
    pub fn join_cancellable(
        id: &[u8],
        rank: usize,
        world: usize,
        rendezvous: Option<Rendezvous>,
        timeout: Duration,
        cancel: &AtomicBool,
    ) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(err(format!("rank {rank} of a group of {world}")));
        }
        let (key, addr) = parse_id(id)?;
        let deadline = Instant::now() + timeout;
        let peers = if rank == 0 {
            let r = rendezvous.ok_or_else(|| err("rank 0 needs the rendezvous it created"))?;
            if r.key != key {
                return Err(err("the communicator id is not the one this rank created"));
            }
            accept_peers(&r, world, deadline, timeout, cancel)?
        } else {
            vec![connect_root(addr, &key, rank, deadline, timeout, cancel)?]
        };
        Ok(Self { rank, world, peers })
    }

    /// A handle that aborts this member's operations from another thread.
    pub fn aborter(&self) -> Result<Aborter> {
        let clones = self.peers.iter().map(TcpStream::try_clone).collect::<std::io::Result<Vec<_>>>();
        clones.map(Aborter).map_err(|e| err(e.to_string()))
    }
}

fn set_timeouts(s: &TcpStream, timeout: Duration) -> Result<()> {
    let t = Some(timeout.max(Duration::from_millis(1)));
    s.set_read_timeout(t).and_then(|_| s.set_write_timeout(t)).map_err(|e| err(e.to_string()))?;
    s.set_nodelay(true).map_err(|e| err(e.to_string()))
}

fn accept_peers(
    r: &Rendezvous,
    world: usize,
    deadline: Instant,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<Vec<TcpStream>> {
    let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    r.listener.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
    while slots.iter().any(Option::is_none) {
        if cancel.load(Ordering::SeqCst) {
            return Err(err("join cancelled (the group was left)"));
        }
        if Instant::now() > deadline {
            let missing = slots.iter().filter(|s| s.is_none()).count();
            return Err(err(format!(
                "{missing} member(s) did not join within {:.1} s",
                timeout.as_secs_f64()
            )));
        }
        let (stream, _) = match r.listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(err(format!("accept failed: {e}"))),
        };
        let mut stream = stream;
        stream.set_nonblocking(false).map_err(|e| err(e.to_string()))?;
        set_timeouts(&stream, Duration::from_secs(5).min(timeout))?;
        let mut hello = [0u8; KEY_LEN + 4];
        if stream.read_exact(&mut hello).is_err() || hello[..KEY_LEN] != r.key {
            tracing::warn!("tcp collective: a connection without the session key was dropped");
            continue;
        }
        let peer_rank = u32::from_le_bytes([hello[32], hello[33], hello[34], hello[35]]) as usize;
        match slots.get_mut(peer_rank.wrapping_sub(1)) {
            Some(slot @ None) if peer_rank >= 1 => {
                set_timeouts(&stream, timeout)?;
                *slot = Some(stream);
            }
            _ => tracing::warn!(rank = peer_rank, "tcp collective: a duplicate or invalid rank was dropped"),
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

fn connect_root(
    addr: SocketAddr,
    key: &[u8; KEY_LEN],
    rank: usize,
    deadline: Instant,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<TcpStream> {
    loop {
        if cancel.load(Ordering::SeqCst) {
            return Err(err("join cancelled (the group was left)"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // At most a second per attempt, so a cancellation is seen promptly.
        match TcpStream::connect_timeout(&addr, left.clamp(Duration::from_millis(10), Duration::from_secs(1)))
        {
            Ok(mut s) => {
                set_timeouts(&s, timeout)?;
                let mut hello = key.to_vec();
                hello.extend_from_slice(&(rank as u32).to_le_bytes());
                s.write_all(&hello).map_err(|e| err(format!("cannot greet rank 0: {e}")))?;
                return Ok(s);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(err(format!("cannot reach rank 0 at {addr}: {e}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn send(s: &mut TcpStream, data: &[i64]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8 + 8 * data.len());
    buf.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for v in data {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&buf)
}

fn recv(s: &mut TcpStream, want: usize) -> Result<Vec<i64>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len).map_err(|e| err(format!("peer lost: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_VALUES || len != want as u64 {
        return Err(err(format!("a member sent {len} values, this one has {want}")));
    }
    let mut bytes = vec![0u8; 8 * want];
    s.read_exact(&mut bytes).map_err(|e| err(format!("peer lost: {e}")))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> Result<()> {
        if self.rank == 0 {
            for peer in &mut self.peers {
                let theirs = recv(peer, data.len())?;
                for (a, b) in data.iter_mut().zip(theirs) {
                    *a = a.wrapping_add(b);
                }
            }
            for peer in &mut self.peers {
                send(peer, data).map_err(|e| err(format!("peer lost: {e}")))?;
            }
        } else {
            let root = self.peers.first_mut().ok_or_else(|| err("no connection to rank 0"))?;
            send(root, data).map_err(|e| err(format!("rank 0 lost: {e}")))?;
            let sum = recv(root, data.len())?;
            data.copy_from_slice(&sum);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn group(world: usize) -> Vec<TcpCollective> {
        let (id, rv) = create(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("create");
        let mut rv = Some(rv);
        let handles: Vec<_> = (1..world)
            .map(|rank| {
                let id = id.clone();
                std::thread::spawn(move || {
                    TcpCollective::join(&id, rank, world, None, Duration::from_secs(10))
                })
            })
            .collect();
        let root = TcpCollective::join(&id, 0, world, rv.take(), Duration::from_secs(10)).expect("root");
        let mut all = vec![root];
        all.extend(handles.into_iter().map(|h| h.join().expect("thread").expect("join")));
        all
    }

    #[test]
    fn sums_exactly_across_members() {
        let members = group(3);
        let handles: Vec<_> = members
            .into_iter()
            .map(|mut m| {
                std::thread::spawn(move || {
                    let r = m.rank() as i64;
                    let mut data = vec![r, i64::MAX - 1 + r, -7 * r];
                    m.all_reduce_sum_i64(&mut data).map(|_| data)
                })
            })
            .collect();
        for h in handles {
            let got = h.join().expect("thread").expect("all-reduce");
            // 0+1+2; three values near i64::MAX wrap exactly; -7·(0+1+2).
            assert_eq!(got, vec![3, (i64::MAX - 1).wrapping_mul(3).wrapping_add(3), -21]);
        }
    }

    #[test]
    fn a_wrong_key_is_refused_and_an_abort_unblocks() {
        let (mut id, rv) = create(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("create");
        let good = id.clone();
        id[0] ^= 1;
        let bad = std::thread::spawn(move || TcpCollective::join(&id, 1, 2, None, Duration::from_secs(2)));
        // Rank 0 drops the impostor and times out waiting for the real rank 1.
        let root = TcpCollective::join(&good, 0, 2, Some(rv), Duration::from_millis(600));
        assert!(root.is_err(), "rank 0 must not accept a peer without the key");
        let _ = bad.join();

        let mut members = group(2);
        let mut m1 = members.pop().expect("rank 1");
        let abort = m1.aborter().expect("aborter");
        let blocked = std::thread::spawn(move || m1.all_reduce_sum_i64(&mut [1, 2]));
        std::thread::sleep(Duration::from_millis(100));
        abort.abort();
        assert!(blocked.join().expect("thread").is_err(), "an aborted all-reduce fails");
    }

    #[test]
    fn malformed_ids_are_errors() {
        assert!(parse_id(&[0; 10]).is_err());
        let mut id = vec![0u8; KEY_LEN];
        id.extend_from_slice(b"not an address");
        assert!(parse_id(&id).is_err());
    }
}
