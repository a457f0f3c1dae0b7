//! The kernel registry: every kernel of `kernels/*.cu` ([`KernelId`]), its source, its
//! parameter list (generated from the `.cu` signatures by `build.rs`) and its launch contract
//! (the buffer lengths, block shape, grid and shared memory its arguments imply), which every
//! [`crate::Runtime`] checks before launching.
//!
//! One module per kernel file holds what that family's kernels *are*: [`lstm_cell`],
//! [`sgd_update`], [`mlp`], [`loss`] and [`scheduler`] each define the contract
//! (`requirements`), the cost formula (`cost`, see [`cost`]) and, with the `checks` feature,
//! the check against the CPU twin (`check`, see [`crate::checks`]) of their kernels.

pub mod contract;
pub mod cost;
pub mod loss;
pub mod lstm_cell;
pub mod mlp;
pub mod scheduler;
pub mod sgd_update;

pub use contract::{ArgValue, BlockShape, GridNeed, Param, ParamType, Requirements};

use crate::error::{CudaError, Result};
use crate::runtime::{Dim3, LaunchConfig};
use contract::{Contract, grid_u32};

/// Scheduler input features per step (`METASCHED_FEATURES` in `common.cuh`).
pub const FEATURES: usize = 3;

/// Side of the square tiles of the GEMM-like kernels in `mlp.cu` (their block is
/// `(TILE, TILE, 1)`).
pub const TILE: u32 = 16;

/// The most parameters any kernel takes (a test checks every kernel against it): launches
/// validate their arguments in arrays of this size on the stack, without allocating.
pub const MAX_PARAMS: usize = 20;

/// Block size of the one-dimensional kernels' default launch.
pub const DEFAULT_BLOCK: u32 = 256;

/// `common.cuh`, the helpers every kernel includes.
pub const COMMON_SOURCE: &str = include_str!("../../../../kernels/common.cuh");

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

/// The kernel files, one module of this crate each: what a kernel's contract, cost and check
/// dispatch on, so that a new `.cu` file without its module fails to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `lstm_cell.cu`, [`lstm_cell`].
    LstmCell,
    /// `sgd_update.cu`, [`sgd_update`].
    SgdUpdate,
    /// `mlp.cu`, [`mlp`].
    Mlp,
    /// `loss.cu`, [`loss`].
    Loss,
    /// `scheduler.cu`, [`scheduler`].
    Scheduler,
}

// `entry_point`, `source_file`, `family` and `params`, generated from the `.cu` signatures.
include!(concat!(env!("OUT_DIR"), "/kernel_table.rs"));

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

    /// Position in [`KernelId::ALL`]: an index into per-kernel tables (the GPU runtime's
    /// loaded functions), so a launch finds its function without a lock or a hash.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Short name, `<op>_<pass>` (the entry point without its `_f32` suffix).
    pub fn name(self) -> &'static str {
        let e = self.entry_point();
        &e[..e.len() - 4]
    }

    /// The kernel with entry point `name`, if any.
    pub fn from_entry_point(name: &str) -> Option<KernelId> {
        KernelId::ALL.into_iter().find(|k| k.entry_point() == name)
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
        if params.len() > MAX_PARAMS {
            return Err(CudaError::Signature(format!(
                "{} declares {} parameters, more than MAX_PARAMS = {MAX_PARAMS}",
                self.entry_point(),
                params.len()
            )));
        }
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
        let c = Contract::new(self, args);
        match self.family() {
            Family::LstmCell => lstm_cell::requirements(self, c),
            Family::SgdUpdate => sgd_update::requirements(self, c),
            Family::Mlp => mlp::requirements(self, c),
            Family::Loss => loss::requirements(self, c),
            Family::Scheduler => scheduler::requirements(self, c),
        }
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
        "lstm_cell.cu" => include_str!("../../../../kernels/lstm_cell.cu"),
        "sgd_update.cu" => include_str!("../../../../kernels/sgd_update.cu"),
        "mlp.cu" => include_str!("../../../../kernels/mlp.cu"),
        "loss.cu" => include_str!("../../../../kernels/loss.cu"),
        "scheduler.cu" => include_str!("../../../../kernels/scheduler.cu"),
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
    fn every_kernel_fits_the_launch_tables() {
        for (i, k) in KernelId::ALL.into_iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
            assert!(k.params().len() <= MAX_PARAMS, "{k:?} has {} parameters", k.params().len());
        }
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
