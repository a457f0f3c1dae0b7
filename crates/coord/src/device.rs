//! The `--device` flag: where the meta-gradient is computed.

use std::str::FromStr;

/// A compute device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU engine on a thread pool.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "cpu" {
            return Ok(Self::Cpu);
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n.parse().map(Self::Cuda).map_err(|_| format!("bad CUDA device index in `{s}`"));
        }
        if s == "cuda" {
            return Ok(Self::Cuda(0));
        }
        Err(format!("unknown device `{s}` (expected cpu or cuda:N)"))
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Refuses devices this build cannot drive, with a message saying why.
pub fn require_supported(device: Device) -> Result<(), crate::exit::BadInput> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(n) => Err(crate::exit::BadInput(format!(
            "--device cuda:{n}: this build of meta-coord has no CUDA backend yet; use --device cpu"
        ))),
    }
}
