//! The `--device` flag of `train`, `metagrad` and `eval`: where the coordinator computes in
//! its standalone mode (the parsing, the probe and the device code live in
//! `metasched_compute`, shared with `meta-worker`).
//!
//! Why the coordinator computes at all: `meta-coord` keeps in-process device work as its
//! standalone mode — it runs the real [`metasched_compute::Executor`], the one `meta-worker`
//! runs behind a socket — so one command trains or evaluates on one machine with no worker
//! processes. The coordinator process opens a device (a GPU, or the emulator) only when the
//! user asks for it this way; otherwise device work goes through worker processes
//! (`train --listen` / `--spawn-workers` with `--worker-device`).

pub use metasched_compute::Device;
use metasched_compute::{Compute, ComputeError};

/// Opens the device `--device` names with `--threads` threads. A device that cannot be opened
/// here (no CUDA driver, no such GPU) is bad input: exit 2 with the probe's one-line reason.
pub fn open(device: Device, threads: usize) -> anyhow::Result<Compute> {
    crate::settings::check_threads("--threads", threads).map_err(crate::exit::BadInput)?;
    match Compute::open(device, threads) {
        Ok(c) => Ok(c),
        Err(ComputeError::DeviceUnavailable(why)) => Err(crate::exit::BadInput(why).into()),
        Err(e) => Err(anyhow::anyhow!("--device {device}: {e}")),
    }
}
