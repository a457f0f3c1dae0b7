//! What a launch argument is and what a launch requires: the types the registry and every
//! [`crate::Runtime`] share, and [`Contract`], the reader each kernel family's contract
//! (`requirements` in `lstm_cell.rs`, `mlp.rs`, ...) is written with.

use super::{KernelId, TILE};
use crate::error::{CudaError, Result};
use crate::runtime::Dim3;

/// The type of a kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// `float`.
    F32,
    /// `int`.
    I32,
    /// `unsigned`.
    U32,
    /// `float*` (or `const float*`).
    PtrF32,
    /// `int*`.
    PtrI32,
    /// `unsigned*`.
    PtrU32,
}

impl ParamType {
    /// The letter the emulator's signatures use for this type.
    pub fn code(self) -> char {
        match self {
            ParamType::F32 => 'f',
            ParamType::I32 => 'i',
            ParamType::U32 => 'u',
            ParamType::PtrF32 => 'F',
            ParamType::PtrI32 => 'I',
            ParamType::PtrU32 => 'U',
        }
    }

    /// The C spelling.
    pub fn c_type(self) -> &'static str {
        match self {
            ParamType::F32 => "float",
            ParamType::I32 => "int",
            ParamType::U32 => "unsigned",
            ParamType::PtrF32 => "float*",
            ParamType::PtrI32 => "int*",
            ParamType::PtrU32 => "unsigned*",
        }
    }
}

/// One kernel parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param {
    /// Its name in the kernel source.
    pub name: &'static str,
    /// Its type.
    pub ty: ParamType,
}

/// A launch argument as validation sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgValue {
    /// A `float` value.
    F32(f32),
    /// An `int` value.
    I32(i32),
    /// An `unsigned` value.
    U32(u32),
    /// A buffer: its pointer type and the elements from the pointer to the buffer's end
    /// (`None` if the offset lies past the end).
    Buffer {
        /// Pointer type.
        ty: ParamType,
        /// Elements available.
        len: Option<usize>,
    },
}

impl ArgValue {
    /// The parameter type this argument passes.
    pub fn ty(&self) -> ParamType {
        match self {
            ArgValue::F32(_) => ParamType::F32,
            ArgValue::I32(_) => ParamType::I32,
            ArgValue::U32(_) => ParamType::U32,
            ArgValue::Buffer { ty, .. } => *ty,
        }
    }
}

/// The block shapes a kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockShape {
    /// Exactly `(TILE, TILE, 1)`.
    Tile,
    /// One-dimensional, any size from 1 to 1024.
    Linear,
}

/// How many blocks a launch needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridNeed {
    /// At least this many blocks along x (extra ones do nothing), exactly this many along y
    /// and z.
    Blocks(Dim3),
    /// A one-dimensional grid of at least this many threads in all (extra threads do
    /// nothing).
    Threads(u64),
}

/// What a launch of a kernel with given arguments requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// Minimum elements of each buffer parameter, by parameter index (0 where unused and
    /// past the last parameter): an array, so checking a launch allocates nothing.
    pub min_len: [usize; super::MAX_PARAMS],
    /// Accepted block shapes.
    pub block: BlockShape,
    /// The block of the default launch.
    pub default_block: Dim3,
    /// Blocks needed.
    pub grid: GridNeed,
    /// Minimum dynamic shared memory per block, bytes.
    pub shared_bytes: usize,
}

/// Reads scalar arguments by parameter name and collects buffer length requirements.
pub(crate) struct Contract<'a> {
    kernel: KernelId,
    args: &'a [ArgValue],
    min_len: [usize; super::MAX_PARAMS],
}

impl<'a> Contract<'a> {
    /// Starts reading `args` (already checked against `kernel`'s parameter types).
    pub(crate) fn new(kernel: KernelId, args: &'a [ArgValue]) -> Self {
        Self { kernel, args, min_len: [0; super::MAX_PARAMS] }
    }

    /// Grid of `x × y` blocks.
    pub(crate) fn blocks(&self, x: u64, y: u64) -> Result<GridNeed> {
        Ok(GridNeed::Blocks(Dim3::xy(grid_u32(self.kernel, x)?, grid_u32(self.kernel, y)?)))
    }

    /// The requirements of a one-dimensional-block kernel launched with `block` by default.
    pub(crate) fn linear(self, block: Dim3, grid: GridNeed, shared_bytes: usize) -> Requirements {
        Requirements {
            min_len: self.min_len,
            block: BlockShape::Linear,
            default_block: block,
            grid,
            shared_bytes,
        }
    }

    /// The requirements of a `(TILE, TILE)`-block kernel.
    pub(crate) fn tile(self, grid: GridNeed) -> Requirements {
        Requirements {
            min_len: self.min_len,
            block: BlockShape::Tile,
            default_block: Dim3::xy(TILE, TILE),
            grid,
            shared_bytes: 0,
        }
    }

    pub(crate) fn err(&self, reason: String) -> CudaError {
        CudaError::InvalidArgument { kernel: self.kernel.entry_point().to_string(), reason }
    }

    fn index(&self, name: &str) -> usize {
        self.kernel.params().iter().position(|p| p.name == name).unwrap_or_else(|| {
            panic!("{} has no parameter `{name}` (contract table out of date)", self.kernel.entry_point())
        })
    }

    pub(crate) fn int(&self, name: &str) -> i64 {
        match self.args[self.index(name)] {
            ArgValue::I32(v) => i64::from(v),
            ArgValue::U32(v) => i64::from(v),
            _ => unreachable!("types were checked first"),
        }
    }

    /// A size argument, at least `min`.
    pub(crate) fn size(&self, name: &str, min: i64) -> Result<u64> {
        let v = self.int(name);
        if v < min {
            return Err(self.err(format!("`{name}` = {v}, must be at least {min}")));
        }
        Ok(v as u64)
    }

    pub(crate) fn flag(&self, name: &str) -> Result<bool> {
        match self.int(name) {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("`{name}` = {v}, must be 0 or 1"))),
        }
    }

    pub(crate) fn act(&self, name: &str) -> Result<i64> {
        match self.int(name) {
            v @ 0..=2 => Ok(v),
            v => Err(self.err(format!("`{name}` = {v}, must be 0 (none), 1 (relu) or 2 (tanh)"))),
        }
    }

    /// Requires buffer `name` to hold at least `len` elements (an index the kernel computes in
    /// `int` arithmetic, so below `i32::MAX`).
    pub(crate) fn need(&mut self, name: &str, len: u64) -> Result<()> {
        if len >= i32::MAX as u64 {
            return Err(
                self.err(format!("`{name}` would need {len} elements, past the kernels' int indexing"))
            );
        }
        let i = self.index(name);
        self.min_len[i] = self.min_len[i].max(len as usize);
        Ok(())
    }

    /// A product of sizes that the kernel computes in `int`.
    pub(crate) fn fits(&self, what: &str, v: u64) -> Result<u64> {
        if v >= i32::MAX as u64 {
            return Err(self.err(format!("{what} = {v} overflows the kernels' int indexing")));
        }
        Ok(v)
    }
}

pub(crate) fn grid_u32(kernel: KernelId, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| CudaError::InvalidLaunch {
        kernel: kernel.entry_point().to_string(),
        reason: format!("{v} blocks do not fit a grid dimension"),
    })
}

pub(crate) fn tiles(m: u64, n: u64) -> u64 {
    m.div_ceil(u64::from(TILE)) * n.div_ceil(u64::from(TILE))
}
