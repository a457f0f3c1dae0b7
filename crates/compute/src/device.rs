//! The device a command line names (`--device cpu|emu|cuda:N`), before it is opened.

use std::str::FromStr;

/// A compute device named on the command line (`cpu`, `emu`, `cuda:N`): parsed, printed and
/// probed the same way by `meta-worker` and `meta-coord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU engine on a thread pool.
    #[default]
    Cpu,
    /// The CPU emulator of the CUDA kernels: the device code path (kernels, launches, the
    /// meta-gradient orchestration) without a GPU, bit for bit what CI runs.
    Emu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "emu" => Ok(Self::Emu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Self::Cuda).map_err(|_| format!("bad CUDA device index in `{s}`")),
                None => Err(format!("unknown device `{s}` (expected cpu, emu or cuda:N)")),
            },
        }
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
