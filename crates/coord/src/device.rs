//! The `--device` flag of `metagrad` and `eval`: where the computation runs (the parsing, the
//! probe and the device code live in `metasched_worker::compute`, shared with `meta-worker`).

pub use metasched_worker::Device;
use metasched_worker::{Compute, WorkerError};

/// Opens the device `--device` names with `--threads` threads. A device that cannot be opened
/// here (no CUDA driver, no such GPU) is bad input: exit 2 with the probe's one-line reason.
pub fn open(device: Device, threads: usize) -> anyhow::Result<Compute> {
    match Compute::open(device, threads) {
        Ok(c) => Ok(c),
        Err(WorkerError::DeviceUnavailable(why)) => Err(crate::exit::BadInput(why).into()),
        Err(e) => Err(anyhow::anyhow!("--device {device}: {e}")),
    }
}
