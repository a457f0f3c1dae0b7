//! SIGINT/SIGTERM handling: the first signal asks the training loop to stop after the current
//! meta-step and save a checkpoint; another one more than a second later exits at once
//! (signals arriving together, as Slurm's SIGTERM to the job and to the step do, count once).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A flag raised by SIGINT or SIGTERM.
#[derive(Clone, Debug)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Installs the handler (once per process; later calls return a flag that is never
    /// raised by a signal, which only happens in tests that train twice in one process).
    pub fn install() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        let first = Arc::new(AtomicU64::new(0));
        let installed = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                if now_ms().saturating_sub(first.load(Ordering::SeqCst)) > 1000 {
                    eprintln!("second interrupt: exiting without saving");
                    std::process::exit(130);
                }
                return;
            }
            first.store(now_ms(), Ordering::SeqCst);
            eprintln!(
                "interrupt: finishing the current meta-step and saving a checkpoint (interrupt again to abort)"
            );
        });
        if let Err(e) = installed {
            tracing::debug!("signal handler not installed: {e}");
        }
        Self(flag)
    }

    /// Whether a stop was requested.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
