//! [`InProcessGroup`]: a group of threads of one process, for tests and single-host runs.

use std::sync::{Arc, Barrier, Mutex};

use crate::collective::Collective;
use crate::error::{CollectiveError, Result};

#[derive(Debug, Default)]
struct Shared {
    sum: Vec<i64>,
    len: Option<usize>,
    mismatch: bool,
}

/// A member of a group of threads of one process ([`InProcessGroup::new`] makes them all).
#[derive(Debug)]
pub struct InProcessGroup {
    rank: usize,
    world: usize,
    shared: Arc<Mutex<Shared>>,
    barrier: Arc<Barrier>,
}

impl InProcessGroup {
    /// The `world` members of a new group, rank `i` at index `i` (move each to its thread).
    pub fn new(world: usize) -> Vec<Self> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let barrier = Arc::new(Barrier::new(world.max(1)));
        (0..world)
            .map(|rank| Self { rank, world, shared: Arc::clone(&shared), barrier: Arc::clone(&barrier) })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A member that panicked while holding the lock left a consistent state (plain adds).
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Collective for InProcessGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_sum_i64(&mut self, data: &mut [i64]) -> Result<()> {
        {
            let mut s = self.lock();
            match s.len {
                None => {
                    s.len = Some(data.len());
                    s.sum = vec![0; data.len()];
                }
                Some(n) if n != data.len() => s.mismatch = true,
                Some(_) => {}
            }
            for (acc, &x) in s.sum.iter_mut().zip(data.iter()) {
                *acc = acc.wrapping_add(x);
            }
        }
        self.barrier.wait();
        let result = {
            let s = self.lock();
            if s.mismatch {
                Err(CollectiveError::LengthMismatch(format!("rank {} passed {}", self.rank, data.len())))
            } else {
                data.copy_from_slice(&s.sum);
                Ok(())
            }
        };
        if self.barrier.wait().is_leader() {
            *self.lock() = Shared::default();
        }
        self.barrier.wait();
        result
    }
}
