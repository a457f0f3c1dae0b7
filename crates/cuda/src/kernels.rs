//! The kernel registry: every kernel of `kernels/*.cu`, its source, its parameter list, and
//! its launch contract (the buffer lengths, block shape, grid and shared memory its
//! arguments imply), which every [`crate::Runtime`] checks before launching.

use crate::error::{CudaError, Result};
use crate::runtime::{Dim3, LaunchConfig};

/// Scheduler input features per step (`METASCHED_FEATURES` in `common.cuh`).
pub const FEATURES: usize = 3;

/// Side of the square tiles of the GEMM-like kernels in `mlp.cu` (their block is
/// `(TILE, TILE, 1)`).
pub const TILE: u32 = 16;

/// Block size of the one-dimensional kernels' default launch.
pub const DEFAULT_BLOCK: u32 = 256;

/// `common.cuh`, the helpers every kernel includes.
pub const COMMON_SOURCE: &str = include_str!("../../../kernels/common.cuh");

/// Every kernel entry point of `kernels/*.cu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelId {
    /// `lstm_cell_forward_f32`: one LSTM step for every task.
    LstmCellForward,
    /// `lstm_cell_backward_f32`: its backward step, accumulating per-task weight gradients.
    LstmCellBackward,
    /// `sgd_update_forward_f32`: `theta' = theta − a[group] · g`.
    SgdUpdateForward,
    /// `sgd_update_backward_f32`: `dJ/da` per group and `u = a[group] · v`.
    SgdUpdateBackward,
    /// `linear_forward_f32`: `out = act(in Wᵀ + b)`.
    LinearForward,
    /// `linear_backward_f32`: weight and bias gradients, and the input delta.
    LinearBackward,
    /// `linear_rop_f32`: the R-operator of a layer's forward pass.
    LinearRop,
    /// `linear_rop_backward_f32`: the R-operator of a layer's backward pass.
    LinearRopBackward,
    /// `activation_forward_f32`: `out = act(in)`.
    ActivationForward,
    /// `activation_backward_f32`: `delta = dh ⊙ act'(h)`.
    ActivationBackward,
    /// `mse_forward_backward_f32`: mse per task and its output gradient.
    MseForwardBackward,
    /// `cross_entropy_forward_backward_f32`: cross-entropy per task, softmax, output gradient.
    CrossEntropyForwardBackward,
    /// `mse_rop_f32`: R-operator of the mse output gradient.
    MseRop,
    /// `cross_entropy_rop_f32`: R-operator of the cross-entropy output gradient.
    CrossEntropyRop,
    /// `scheduler_features_f32`: the scheduler's input features of one step, per task.
    SchedulerFeatures,
    /// `scheduler_head_forward_f32`: `a = lr_min + span·σ(W h + b)` per task.
    SchedulerHeadForward,
    /// `scheduler_head_backward_f32`: `dJ/dz`, the head gradients and `dJ/dh` per task.
    SchedulerHeadBackward,
    /// `task_sum_f32`: sum of per-task arrays in task order.
    TaskSum,
    /// `vector_axpy_f32`: `y += alpha·x`.
    VectorAxpy,
    /// `vector_scale_f32`: `y *= alpha`.
    VectorScale,
}

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

const fn p(name: &'static str, ty: ParamType) -> Param {
    Param { name, ty }
}

use ParamType::{I32, PtrF32 as F, PtrI32 as PI, PtrU32 as PU};

const LSTM_FORWARD: &[Param] = &[
    p("h_new", F),
    p("c_new", F),
    p("gates", F),
    p("tanh_c", F),
    p("w_ih", F),
    p("w_hh", F),
    p("b_ih", F),
    p("b_hh", F),
    p("x", F),
    p("h", F),
    p("c", F),
    p("tasks", I32),
    p("hidden", I32),
];
const LSTM_BACKWARD: &[Param] = &[
    p("dh", F),
    p("dc", F),
    p("dgates", F),
    p("gw_ih", F),
    p("gw_hh", F),
    p("gb_ih", F),
    p("gb_hh", F),
    p("w_ih", F),
    p("w_hh", F),
    p("x", F),
    p("h", F),
    p("c", F),
    p("gates", F),
    p("tanh_c", F),
    p("dh_new", F),
    p("dc_new", F),
    p("tasks", I32),
    p("hidden", I32),
];
const SGD_FORWARD: &[Param] = &[
    p("theta_new", F),
    p("theta", F),
    p("grad", F),
    p("rates", F),
    p("group_offsets", PI),
    p("tasks", I32),
    p("params", I32),
    p("groups", I32),
];
const SGD_BACKWARD: &[Param] = &[
    p("da", F),
    p("u", F),
    p("v", F),
    p("grad", F),
    p("rates", F),
    p("group_offsets", PI),
    p("tasks", I32),
    p("params", I32),
    p("groups", I32),
];
const LINEAR_FORWARD: &[Param] = &[
    p("out", F),
    p("in", F),
    p("theta", F),
    p("tasks", I32),
    p("rows", I32),
    p("din", I32),
    p("dout", I32),
    p("param_stride", I32),
    p("w_off", I32),
    p("b_off", I32),
    p("act", I32),
];
const LINEAR_BACKWARD: &[Param] = &[
    p("grad", F),
    p("dh", F),
    p("delta_prev", F),
    p("delta", F),
    p("in", F),
    p("theta", F),
    p("tasks", I32),
    p("rows", I32),
    p("din", I32),
    p("dout", I32),
    p("param_stride", I32),
    p("w_off", I32),
    p("b_off", I32),
    p("act", I32),
    p("want_dinput", I32),
];
const LINEAR_ROP: &[Param] = &[
    p("rz", F),
    p("rh_out", F),
    p("rh_in", F),
    p("in", F),
    p("h_out", F),
    p("theta", F),
    p("u", F),
    p("tasks", I32),
    p("rows", I32),
    p("din", I32),
    p("dout", I32),
    p("param_stride", I32),
    p("w_off", I32),
    p("b_off", I32),
    p("act", I32),
    p("has_rh_in", I32),
];
const LINEAR_ROP_BACKWARD: &[Param] = &[
    p("hv", F),
    p("rdelta_prev", F),
    p("rdelta", F),
    p("delta", F),
    p("in", F),
    p("rh_in", F),
    p("dh_in", F),
    p("rz_prev", F),
    p("theta", F),
    p("u", F),
    p("tasks", I32),
    p("rows", I32),
    p("din", I32),
    p("dout", I32),
    p("param_stride", I32),
    p("w_off", I32),
    p("b_off", I32),
    p("act", I32),
    p("has_prev", I32),
];
const ACTIVATION_FORWARD: &[Param] = &[p("out", F), p("in", F), p("count", I32), p("act", I32)];
const ACTIVATION_BACKWARD: &[Param] = &[p("delta", F), p("dh", F), p("h", F), p("count", I32), p("act", I32)];
const MSE_FB: &[Param] =
    &[p("loss", F), p("dout", F), p("out", F), p("y", F), p("tasks", I32), p("rows", I32), p("cols", I32)];
const CE_FB: &[Param] = &[
    p("loss", F),
    p("dout", F),
    p("probs", F),
    p("out", F),
    p("labels", PU),
    p("tasks", I32),
    p("rows", I32),
    p("cols", I32),
];
const SCHED_FEATURES: &[Param] = &[
    p("x", F),
    p("loss", F),
    p("grad", F),
    p("tasks", I32),
    p("params", I32),
    p("step", I32),
    p("steps", I32),
];
const SCHED_HEAD_FORWARD: &[Param] = &[
    p("sig", F),
    p("rates", F),
    p("h", F),
    p("head_w", F),
    p("head_b", F),
    p("tasks", I32),
    p("hidden", I32),
    p("groups", I32),
    p("lr_min", ParamType::F32),
    p("lr_span", ParamType::F32),
];
const SCHED_HEAD_BACKWARD: &[Param] = &[
    p("dh", F),
    p("gw", F),
    p("gb", F),
    p("da", F),
    p("sig", F),
    p("h", F),
    p("head_w", F),
    p("dh_carry", F),
    p("tasks", I32),
    p("hidden", I32),
    p("groups", I32),
    p("lr_span", ParamType::F32),
];
const TASK_SUM: &[Param] = &[p("out", F), p("per_task", F), p("tasks", I32), p("count", I32)];
const VECTOR_AXPY: &[Param] = &[p("y", F), p("x", F), p("alpha", ParamType::F32), p("count", I32)];
const VECTOR_SCALE: &[Param] = &[p("y", F), p("alpha", ParamType::F32), p("count", I32)];
const MSE_ROP: &[Param] = &[p("rdout", F), p("rout", F), p("tasks", I32), p("rows", I32), p("cols", I32)];
const CE_ROP: &[Param] =
    &[p("rdout", F), p("probs", F), p("rout", F), p("tasks", I32), p("rows", I32), p("cols", I32)];

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
    /// Minimum elements of each buffer parameter, by parameter index (0 where unused).
    pub min_len: Vec<usize>,
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
struct Contract<'a> {
    kernel: KernelId,
    args: &'a [ArgValue],
    min_len: Vec<usize>,
}

impl Contract<'_> {
    fn err(&self, reason: String) -> CudaError {
        CudaError::InvalidArgument { kernel: self.kernel.entry_point().to_string(), reason }
    }

    fn index(&self, name: &str) -> usize {
        self.kernel.params().iter().position(|p| p.name == name).unwrap_or_else(|| {
            panic!("{} has no parameter `{name}` (contract table out of date)", self.kernel.entry_point())
        })
    }

    fn int(&self, name: &str) -> i64 {
        match self.args[self.index(name)] {
            ArgValue::I32(v) => i64::from(v),
            ArgValue::U32(v) => i64::from(v),
            _ => unreachable!("types were checked first"),
        }
    }

    /// A size argument, at least `min`.
    fn size(&self, name: &str, min: i64) -> Result<u64> {
        let v = self.int(name);
        if v < min {
            return Err(self.err(format!("`{name}` = {v}, must be at least {min}")));
        }
        Ok(v as u64)
    }

    fn flag(&self, name: &str) -> Result<bool> {
        match self.int(name) {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.err(format!("`{name}` = {v}, must be 0 or 1"))),
        }
    }

    fn act(&self, name: &str) -> Result<i64> {
        match self.int(name) {
            v @ 0..=2 => Ok(v),
            v => Err(self.err(format!("`{name}` = {v}, must be 0 (none), 1 (relu) or 2 (tanh)"))),
        }
    }

    /// Requires buffer `name` to hold at least `len` elements (an index the kernel computes in
    /// `int` arithmetic, so below `i32::MAX`).
    fn need(&mut self, name: &str, len: u64) -> Result<()> {
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
    fn fits(&self, what: &str, v: u64) -> Result<u64> {
        if v >= i32::MAX as u64 {
            return Err(self.err(format!("{what} = {v} overflows the kernels' int indexing")));
        }
        Ok(v)
    }
}

fn grid_u32(kernel: KernelId, v: u64) -> Result<u32> {
    u32::try_from(v).map_err(|_| CudaError::InvalidLaunch {
        kernel: kernel.entry_point().to_string(),
        reason: format!("{v} blocks do not fit a grid dimension"),
    })
}

fn tiles(m: u64, n: u64) -> u64 {
    m.div_ceil(u64::from(TILE)) * n.div_ceil(u64::from(TILE))
}

impl KernelId {
    /// Every kernel, in source order.
    pub const ALL: [KernelId; 20] = [
        KernelId::LstmCellForward,
        KernelId::LstmCellBackward,
        KernelId::SgdUpdateForward,
        KernelId::SgdUpdateBackward,
        KernelId::LinearForward,
        KernelId::LinearBackward,
        KernelId::LinearRop,
        KernelId::LinearRopBackward,
        KernelId::ActivationForward,
        KernelId::ActivationBackward,
        KernelId::MseForwardBackward,
        KernelId::CrossEntropyForwardBackward,
        KernelId::MseRop,
        KernelId::CrossEntropyRop,
        KernelId::SchedulerFeatures,
        KernelId::SchedulerHeadForward,
        KernelId::SchedulerHeadBackward,
        KernelId::TaskSum,
        KernelId::VectorAxpy,
        KernelId::VectorScale,
    ];

    /// Short name, `<op>_<pass>` (the entry point without its `_f32` suffix).
    pub fn name(self) -> &'static str {
        let e = self.entry_point();
        &e[..e.len() - 4]
    }

    /// The `extern "C" __global__` function, `<op>_<pass>_f32`.
    pub fn entry_point(self) -> &'static str {
        match self {
            KernelId::LstmCellForward => "lstm_cell_forward_f32",
            KernelId::LstmCellBackward => "lstm_cell_backward_f32",
            KernelId::SgdUpdateForward => "sgd_update_forward_f32",
            KernelId::SgdUpdateBackward => "sgd_update_backward_f32",
            KernelId::LinearForward => "linear_forward_f32",
            KernelId::LinearBackward => "linear_backward_f32",
            KernelId::LinearRop => "linear_rop_f32",
            KernelId::LinearRopBackward => "linear_rop_backward_f32",
            KernelId::ActivationForward => "activation_forward_f32",
            KernelId::ActivationBackward => "activation_backward_f32",
            KernelId::MseForwardBackward => "mse_forward_backward_f32",
            KernelId::CrossEntropyForwardBackward => "cross_entropy_forward_backward_f32",
            KernelId::MseRop => "mse_rop_f32",
            KernelId::CrossEntropyRop => "cross_entropy_rop_f32",
            KernelId::SchedulerFeatures => "scheduler_features_f32",
            KernelId::SchedulerHeadForward => "scheduler_head_forward_f32",
            KernelId::SchedulerHeadBackward => "scheduler_head_backward_f32",
            KernelId::TaskSum => "task_sum_f32",
            KernelId::VectorAxpy => "vector_axpy_f32",
            KernelId::VectorScale => "vector_scale_f32",
        }
    }

    /// The kernel's source file, relative to `kernels/`.
    pub fn source_file(self) -> &'static str {
        match self {
            KernelId::LstmCellForward | KernelId::LstmCellBackward => "lstm_cell.cu",
            KernelId::SgdUpdateForward | KernelId::SgdUpdateBackward => "sgd_update.cu",
            KernelId::LinearForward
            | KernelId::LinearBackward
            | KernelId::LinearRop
            | KernelId::LinearRopBackward
            | KernelId::ActivationForward
            | KernelId::ActivationBackward => "mlp.cu",
            KernelId::MseForwardBackward
            | KernelId::CrossEntropyForwardBackward
            | KernelId::MseRop
            | KernelId::CrossEntropyRop => "loss.cu",
            KernelId::SchedulerFeatures
            | KernelId::SchedulerHeadForward
            | KernelId::SchedulerHeadBackward
            | KernelId::TaskSum
            | KernelId::VectorAxpy
            | KernelId::VectorScale => "scheduler.cu",
        }
    }

    /// The kernel with entry point `name`, if any.
    pub fn from_entry_point(name: &str) -> Option<KernelId> {
        KernelId::ALL.into_iter().find(|k| k.entry_point() == name)
    }

    /// The parameters, in order (outputs first).
    pub fn params(self) -> &'static [Param] {
        match self {
            KernelId::LstmCellForward => LSTM_FORWARD,
            KernelId::LstmCellBackward => LSTM_BACKWARD,
            KernelId::SgdUpdateForward => SGD_FORWARD,
            KernelId::SgdUpdateBackward => SGD_BACKWARD,
            KernelId::LinearForward => LINEAR_FORWARD,
            KernelId::LinearBackward => LINEAR_BACKWARD,
            KernelId::LinearRop => LINEAR_ROP,
            KernelId::LinearRopBackward => LINEAR_ROP_BACKWARD,
            KernelId::ActivationForward => ACTIVATION_FORWARD,
            KernelId::ActivationBackward => ACTIVATION_BACKWARD,
            KernelId::MseForwardBackward => MSE_FB,
            KernelId::CrossEntropyForwardBackward => CE_FB,
            KernelId::MseRop => MSE_ROP,
            KernelId::CrossEntropyRop => CE_ROP,
            KernelId::SchedulerFeatures => SCHED_FEATURES,
            KernelId::SchedulerHeadForward => SCHED_HEAD_FORWARD,
            KernelId::SchedulerHeadBackward => SCHED_HEAD_BACKWARD,
            KernelId::TaskSum => TASK_SUM,
            KernelId::VectorAxpy => VECTOR_AXPY,
            KernelId::VectorScale => VECTOR_SCALE,
        }
    }

    /// One letter per parameter (see [`ParamType::code`]), as the emulator registers it.
    pub fn signature(self) -> String {
        self.params().iter().map(|p| p.ty.code()).collect()
    }

    /// What launching this kernel with `args` requires: checks the argument count and types
    /// and the values of the scalar arguments, and derives the minimum buffer lengths, block
    /// shape, grid and dynamic shared memory.
    pub fn requirements(self, args: &[ArgValue]) -> Result<Requirements> {
        let params = self.params();
        if args.len() != params.len() {
            return Err(CudaError::Signature(format!(
                "{} takes {} arguments, got {}",
                self.entry_point(),
                params.len(),
                args.len()
            )));
        }
        for (i, (p, a)) in params.iter().zip(args).enumerate() {
            if p.ty != a.ty() {
                return Err(CudaError::Signature(format!(
                    "{}: argument {i} (`{}`) must be {}, got {}",
                    self.entry_point(),
                    p.name,
                    p.ty.c_type(),
                    a.ty().c_type()
                )));
            }
        }
        let mut c = Contract { kernel: self, args, min_len: vec![0; params.len()] };
        let k = self;
        let blocks = |x: u64, y: u64| -> Result<GridNeed> {
            Ok(GridNeed::Blocks(Dim3::xy(grid_u32(k, x)?, grid_u32(k, y)?)))
        };
        let linear = |block: Dim3, grid: GridNeed, shared_bytes: usize, c: Contract<'_>| Requirements {
            min_len: c.min_len,
            block: BlockShape::Linear,
            default_block: block,
            grid,
            shared_bytes,
        };
        let tile = |grid: GridNeed, c: Contract<'_>| Requirements {
            min_len: c.min_len,
            block: BlockShape::Tile,
            default_block: Dim3::xy(TILE, TILE),
            grid,
            shared_bytes: 0,
        };
        let req = match self {
            KernelId::LstmCellForward | KernelId::LstmCellBackward => {
                let b = c.size("tasks", 1)?;
                let h = c.size("hidden", 1)?;
                let f = FEATURES as u64;
                let (bh, b4h) = (c.fits("tasks·hidden", b * h)?, c.fits("tasks·4·hidden", b * 4 * h)?);
                c.need("w_ih", 4 * h * f)?;
                c.need("w_hh", 4 * h * h)?;
                c.need("x", b * f)?;
                c.need("h", bh)?;
                c.need("c", bh)?;
                let shared = if self == KernelId::LstmCellForward {
                    for n in ["h_new", "c_new", "tanh_c"] {
                        c.need(n, bh)?;
                    }
                    c.need("gates", b4h)?;
                    c.need("b_ih", 4 * h)?;
                    c.need("b_hh", 4 * h)?;
                    (h + 4) * 4
                } else {
                    for n in ["dh", "dc", "tanh_c", "dh_new", "dc_new"] {
                        c.need(n, bh)?;
                    }
                    for n in ["dgates", "gates", "gb_ih", "gb_hh"] {
                        c.need(n, b4h)?;
                    }
                    c.need("gw_ih", b4h * f)?;
                    c.need("gw_hh", c.fits("tasks·4·hidden²", b4h * h)?)?;
                    (5 * h + 4) * 4
                };
                let block = (h.div_ceil(32) * 32).min(u64::from(DEFAULT_BLOCK)) as u32;
                linear(Dim3::x(block), blocks(b, 1)?, shared as usize, c)
            }
            KernelId::SgdUpdateForward | KernelId::SgdUpdateBackward => {
                let b = c.size("tasks", 1)?;
                let np = c.size("params", 1)?;
                let g = c.size("groups", 1)?;
                let bp = c.fits("tasks·params", b * np)?;
                let bg = c.fits("tasks·groups", b * g)?;
                c.need("grad", bp)?;
                c.need("rates", bg)?;
                c.need("group_offsets", g + 1)?;
                if self == KernelId::SgdUpdateForward {
                    c.need("theta_new", bp)?;
                    c.need("theta", bp)?;
                } else {
                    c.need("da", bg)?;
                    c.need("u", bp)?;
                    c.need("v", bp)?;
                }
                linear(Dim3::x(DEFAULT_BLOCK), blocks(g, b)?, 0, c)
            }
            KernelId::LinearForward
            | KernelId::LinearBackward
            | KernelId::LinearRop
            | KernelId::LinearRopBackward => {
                let b = c.size("tasks", 1)?;
                let n = c.size("rows", 1)?;
                let din = c.size("din", 1)?;
                let dout = c.size("dout", 1)?;
                let s = c.size("param_stride", 1)?;
                let w_off = c.size("w_off", 0)?;
                let b_off = c.size("b_off", 0)?;
                let act = c.act("act")?;
                if w_off + din * dout > s || b_off + dout > s {
                    return Err(c.err(format!(
                        "weight [{w_off}, +{}) or bias [{b_off}, +{dout}) outside a task's {s} parameters",
                        din * dout
                    )));
                }
                let bs = c.fits("tasks·param_stride", b * s)?;
                let x_len = c.fits("tasks·rows·din", b * n * din)?;
                let z_len = c.fits("tasks·rows·dout", b * n * dout)?;
                let grid = match self {
                    KernelId::LinearForward => {
                        c.need("out", z_len)?;
                        c.need("in", x_len)?;
                        c.need("theta", bs)?;
                        tiles(n, dout)
                    }
                    KernelId::LinearBackward => {
                        let want = c.flag("want_dinput")?;
                        c.need("grad", bs)?;
                        c.need("delta", z_len)?;
                        c.need("in", x_len)?;
                        if want {
                            c.need("dh", x_len)?;
                            c.need("delta_prev", x_len)?;
                            c.need("theta", bs)?;
                        }
                        tiles(dout, din + 1) + if want { tiles(n, din) } else { 0 }
                    }
                    KernelId::LinearRop => {
                        let has = c.flag("has_rh_in")?;
                        c.need("rz", z_len)?;
                        c.need("in", x_len)?;
                        c.need("u", bs)?;
                        if act != 0 {
                            c.need("rh_out", z_len)?;
                            c.need("h_out", z_len)?;
                        }
                        if has {
                            c.need("rh_in", x_len)?;
                            c.need("theta", bs)?;
                        }
                        tiles(n, dout)
                    }
                    _ => {
                        let has = c.flag("has_prev")?;
                        c.need("hv", bs)?;
                        c.need("rdelta", z_len)?;
                        c.need("in", x_len)?;
                        if has {
                            for name in ["rdelta_prev", "rh_in"] {
                                c.need(name, x_len)?;
                            }
                            c.need("delta", z_len)?;
                            c.need("theta", bs)?;
                            c.need("u", bs)?;
                            if act == 2 {
                                c.need("dh_in", x_len)?;
                                c.need("rz_prev", x_len)?;
                            }
                        }
                        tiles(dout, din + 1) + if has { tiles(n, din) } else { 0 }
                    }
                };
                tile(blocks(grid, b)?, c)
            }
            KernelId::ActivationForward | KernelId::ActivationBackward => {
                let count = c.fits("count", c.size("count", 1)?)?;
                c.act("act")?;
                let names: &[&str] =
                    if self == KernelId::ActivationForward { &["out", "in"] } else { &["delta", "dh", "h"] };
                for n in names {
                    c.need(n, count)?;
                }
                linear(Dim3::x(DEFAULT_BLOCK), GridNeed::Threads(count), 0, c)
            }
            KernelId::MseForwardBackward
            | KernelId::CrossEntropyForwardBackward
            | KernelId::MseRop
            | KernelId::CrossEntropyRop => {
                let b = c.size("tasks", 1)?;
                let n = c.size("rows", 1)?;
                let d = c.size("cols", 1)?;
                let all = c.fits("tasks·rows·cols", b * n * d)?;
                match self {
                    KernelId::MseForwardBackward => {
                        c.need("loss", b)?;
                        for name in ["dout", "out", "y"] {
                            c.need(name, all)?;
                        }
                        linear(Dim3::x(DEFAULT_BLOCK), blocks(b, 1)?, 0, c)
                    }
                    KernelId::CrossEntropyForwardBackward => {
                        c.need("loss", b)?;
                        for name in ["dout", "probs", "out"] {
                            c.need(name, all)?;
                        }
                        c.need("labels", b * n)?;
                        linear(Dim3::x(DEFAULT_BLOCK), blocks(b, 1)?, 0, c)
                    }
                    KernelId::MseRop => {
                        c.need("rdout", all)?;
                        c.need("rout", all)?;
                        linear(Dim3::x(DEFAULT_BLOCK), GridNeed::Threads(all), 0, c)
                    }
                    _ => {
                        for name in ["rdout", "probs", "rout"] {
                            c.need(name, all)?;
                        }
                        linear(Dim3::x(DEFAULT_BLOCK), GridNeed::Threads(b * n), 0, c)
                    }
                }
            }
            KernelId::SchedulerFeatures => {
                let b = c.size("tasks", 1)?;
                let np = c.size("params", 1)?;
                c.size("step", 0)?;
                c.size("steps", 1)?;
                c.need("x", c.fits("tasks·features", b * FEATURES as u64)?)?;
                c.need("loss", b)?;
                c.need("grad", c.fits("tasks·params", b * np)?)?;
                linear(Dim3::x(DEFAULT_BLOCK), blocks(b, 1)?, 0, c)
            }
            KernelId::SchedulerHeadForward | KernelId::SchedulerHeadBackward => {
                let b = c.size("tasks", 1)?;
                let h = c.size("hidden", 0)?;
                let g = c.size("groups", 1)?;
                let (bg, bh) = (c.fits("tasks·groups", b * g)?, c.fits("tasks·hidden", b * h)?);
                c.need("h", bh)?;
                c.need("head_w", c.fits("groups·hidden", g * h)?)?;
                c.need("sig", bg)?;
                let (wide, shared) = if self == KernelId::SchedulerHeadForward {
                    c.need("rates", bg)?;
                    c.need("head_b", g)?;
                    (g, 0)
                } else {
                    c.need("gb", bg)?;
                    c.need("da", bg)?;
                    c.need("gw", c.fits("tasks·groups·hidden", bg * h)?)?;
                    c.need("dh", bh)?;
                    c.need("dh_carry", bh)?;
                    (g.max(h), g as usize * 4)
                };
                let block = (wide.div_ceil(32) * 32).min(u64::from(DEFAULT_BLOCK)) as u32;
                linear(Dim3::x(block), blocks(b, 1)?, shared, c)
            }
            KernelId::TaskSum => {
                let b = c.size("tasks", 1)?;
                let n = c.size("count", 1)?;
                c.need("out", n)?;
                c.need("per_task", c.fits("tasks·count", b * n)?)?;
                linear(Dim3::x(DEFAULT_BLOCK), GridNeed::Threads(n), 0, c)
            }
            KernelId::VectorAxpy | KernelId::VectorScale => {
                let n = c.size("count", 1)?;
                c.need("y", n)?;
                if self == KernelId::VectorAxpy {
                    c.need("x", n)?;
                }
                linear(Dim3::x(DEFAULT_BLOCK), GridNeed::Threads(n), 0, c)
            }
        };
        Ok(req)
    }

    /// Checks a launch: the arguments (see [`KernelId::requirements`]), every buffer long
    /// enough, and the grid, block and shared memory able to run the kernel.
    pub fn check(self, config: &LaunchConfig, args: &[ArgValue]) -> Result<Requirements> {
        let req = self.requirements(args)?;
        for (i, (param, arg)) in self.params().iter().zip(args).enumerate() {
            if let ArgValue::Buffer { len, .. } = arg {
                match len {
                    None => {
                        return Err(CudaError::InvalidArgument {
                            kernel: self.entry_point().to_string(),
                            reason: format!(
                                "argument {i} (`{}`): offset past the end of the buffer",
                                param.name
                            ),
                        });
                    }
                    Some(len) if *len < req.min_len[i] => {
                        return Err(CudaError::InvalidArgument {
                            kernel: self.entry_point().to_string(),
                            reason: format!(
                                "argument {i} (`{}`) needs at least {} elements, the buffer holds {len}",
                                param.name, req.min_len[i]
                            ),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        let bad =
            |reason: String| CudaError::InvalidLaunch { kernel: self.entry_point().to_string(), reason };
        let (g, b) = (config.grid, config.block);
        match req.block {
            BlockShape::Tile if b != Dim3::xy(TILE, TILE) => {
                return Err(bad(format!("block ({},{},{}) must be ({TILE},{TILE},1)", b.x, b.y, b.z)));
            }
            BlockShape::Linear if b.y != 1 || b.z != 1 || b.x == 0 || b.x > 1024 => {
                return Err(bad(format!("block ({},{},{}) must be (1..=1024, 1, 1)", b.x, b.y, b.z)));
            }
            _ => {}
        }
        match req.grid {
            GridNeed::Blocks(need) if g.x < need.x || g.y != need.y || g.z != need.z => {
                return Err(bad(format!(
                    "grid ({},{},{}) must be ({}.., {}, {}) for these arguments (extra blocks along x \
                     do nothing; y and z are exact, as a duplicate task block would add its \
                     gradients twice)",
                    g.x, g.y, g.z, need.x, need.y, need.z
                )));
            }
            GridNeed::Threads(need) if g.count() * b.count() < need || g.y != 1 || g.z != 1 => {
                return Err(bad(format!(
                    "grid ({},{},{}) × block {} does not cover the {need} threads the arguments need \
                     (one-dimensional grid)",
                    g.x, g.y, g.z, b.x
                )));
            }
            _ => {}
        }
        if config.shared_bytes < req.shared_bytes {
            return Err(bad(format!(
                "{} bytes of dynamic shared memory, the kernel needs {}",
                config.shared_bytes, req.shared_bytes
            )));
        }
        Ok(req)
    }

    /// The launch shape documented at the top of the kernel's source, for these arguments.
    pub fn default_config(self, args: &[ArgValue]) -> Result<LaunchConfig> {
        let req = self.requirements(args)?;
        let grid = match req.grid {
            GridNeed::Blocks(d) => d,
            GridNeed::Threads(n) => {
                Dim3::x(grid_u32(self, n.div_ceil(u64::from(req.default_block.x)).max(1))?)
            }
        };
        Ok(LaunchConfig { grid, block: req.default_block, shared_bytes: req.shared_bytes })
    }
}

/// The CUDA C++ source of the file that defines `id` (it includes `common.cuh`, see
/// [`COMMON_SOURCE`]).
pub fn kernel_source(id: KernelId) -> &'static str {
    match id.source_file() {
        "lstm_cell.cu" => include_str!("../../../kernels/lstm_cell.cu"),
        "sgd_update.cu" => include_str!("../../../kernels/sgd_update.cu"),
        "mlp.cu" => include_str!("../../../kernels/mlp.cu"),
        "loss.cu" => include_str!("../../../kernels/loss.cu"),
        "scheduler.cu" => include_str!("../../../kernels/scheduler.cu"),
        other => unreachable!("source_file returns a known file, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i32) -> ArgValue {
        ArgValue::I32(v)
    }

    fn buf(len: usize) -> ArgValue {
        ArgValue::Buffer { ty: ParamType::PtrF32, len: Some(len) }
    }

    #[test]
    fn entry_points_and_names() {
        for k in KernelId::ALL {
            assert_eq!(format!("{}_f32", k.name()), k.entry_point());
            assert_eq!(k.signature().len(), k.params().len());
        }
    }

    #[test]
    fn default_launch_shapes() {
        // The sinusoid scheduler: H = 20 -> one warp, (H + 4) floats of shared memory.
        let mut args = vec![buf(1 << 20); 11];
        args.extend([int(4), int(20)]);
        let c = KernelId::LstmCellForward.default_config(&args).expect("valid");
        assert_eq!((c.grid, c.block, c.shared_bytes), (Dim3::x(4), Dim3::x(32), 96));
        // Layer 1 -> 40 of 10 points, 3 tasks: weight-gradient tiles 3 x 1 (40 x 2 columns),
        // no input gradient for the first layer.
        let mut args = vec![buf(1 << 20); 6];
        args.extend([3, 10, 1, 40, 1761, 0, 40, 1, 0].map(int));
        let c = KernelId::LinearBackward.default_config(&args).expect("valid");
        assert_eq!((c.grid, c.block), (Dim3::xy(3, 3), Dim3::xy(16, 16)));
        // Elementwise: ceil(1000 / 256) blocks.
        let c = KernelId::ActivationForward
            .default_config(&[buf(1000), buf(1000), int(1000), int(2)])
            .expect("valid");
        assert_eq!(c.grid, Dim3::x(4));
    }

    #[test]
    fn extra_task_blocks_are_refused() {
        let mut args = vec![buf(1 << 20); 11];
        args.extend([int(4), int(20)]);
        let mut c = KernelId::LstmCellForward.default_config(&args).expect("valid");
        c.grid.x = 9;
        assert!(KernelId::LstmCellForward.check(&c, &args).is_ok());
        c.grid.y = 2;
        assert!(KernelId::LstmCellForward.check(&c, &args).is_err());
    }
}
