//! SIGINT/SIGTERM handling: the first signal asks the training loop to stop after the current
//! meta-step and save a checkpoint; a second one exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag raised by SIGINT or SIGTERM.
#[derive(Clone, Debug)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Installs the handler (once per process; later calls return a flag that is never
    /// raised by a signal, which only happens in tests that train twice in one process).
    pub fn install() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&flag);
        let installed = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("second interrupt: exiting without saving");
                std::process::exit(130);
            }
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
