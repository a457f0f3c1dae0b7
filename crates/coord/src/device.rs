//! The `--device` flag: where the meta-gradient is computed.

use std::str::FromStr;

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU engine on a thread pool.
    Cpu,
    /// The CPU emulator of the CUDA kernels (`metasched_cuda::EmuRuntime`): the device code
    /// path without a GPU (`metagrad` only).
    Emu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        if s == "emu" {
            return Ok(Self::Emu);
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n.parse().map(Self::Cuda).map_err(|_| format!("bad CUDA device index in `{s}`"));
        }
        if s == "cuda" {
            return Ok(Self::Cuda(0));
        }
        Err(format!("unknown device `{s}` (expected cpu, emu or cuda:N)"))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Emu => write!(f, "emu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Refuses devices this build cannot drive, with a message saying why.
pub fn require_supported(device: Device) -> Result<(), crate::exit::BadInput> {
    match device {
        Device::Cpu | Device::Emu => Ok(()),
        Device::Cuda(n) => Err(crate::exit::BadInput(cuda_refusal(n))),
    }
}

/// Why `--device cuda:N` cannot run, in one line: no driver (naming the library), no such
/// device, or the CUDA runtime this build lacks. The probe runs first, so a machine without a
/// driver never reaches cudarc.
fn cuda_refusal(n: usize) -> String {
    match metasched_cuda::probe::cuda_devices() {
        Err(e @ metasched_cuda::CudaError::LibraryMissing { .. }) => {
            format!("--device cuda:{n}: no CUDA driver: {e}")
        }
        Err(e) => format!("--device cuda:{n}: {e}"),
        Ok(0) => format!("--device cuda:{n}: the CUDA driver loaded but reports no devices"),
        Ok(count) if n >= count => {
            format!(
                "--device cuda:{n}: the CUDA driver reports {count} device(s) (cuda:0..cuda:{})",
                count - 1
            )
        }
        Ok(count) => format!(
            "--device cuda:{n}: driver found ({count} device(s)), but this build of meta-coord has no CUDA \
             runtime yet; use --device cpu (or emu for the device code path on the CPU)"
        ),
    }
}
