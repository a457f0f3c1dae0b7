//! The learner on a device: [`DeviceMlp`] runs the kernels of `mlp.cu` and `loss.cu` layer by
//! layer to compute, for a batch of tasks at once (each with its own parameters), what
//! `metasched_engine::mlp::Mlp` computes for one: the forward pass, the loss and its gradient,
//! and the exact Hessian-vector product by the R-operator.

use metasched_engine::{Activation, LossKind, ThetaLayout};

use crate::error::{CudaError, Result};
use crate::kernels::KernelId;
use crate::runtime::{Arg, DeviceBuffer, Runtime};

/// Activation code of the kernels (`ActCode` in `common.cuh`).
pub fn act_code(activation: Activation) -> i32 {
    match activation {
        Activation::Relu => 1,
        Activation::Tanh => 2,
    }
}

/// Targets of one set of points for every task, on the device.
pub enum DeviceTargets<'a, R: Runtime> {
    /// Regression targets `[B, n, d_L]` (loss `mse`).
    Values(&'a R::Buffer<f32>),
    /// Class labels `[B, n]` (loss `cross_entropy`).
    Labels(&'a R::Buffer<u32>),
}

/// Device memory for the passes of a [`DeviceMlp`] over sets of `rows` points of `tasks`
/// tasks: what the forward and backward passes keep for the Hessian-vector product
/// (activations, deltas, softmax) and the R-operator's scratch.
pub struct MlpWorkspace<R: Runtime> {
    tasks: usize,
    rows: usize,
    /// `H_l`, `l = 1..L-1` (entry `l-1`), `[B, n, d_l]`.
    hidden: Vec<R::Buffer<f32>>,
    /// Network output, `[B, n, d_L]`.
    out: R::Buffer<f32>,
    /// Softmax of the output (cross-entropy).
    probs: R::Buffer<f32>,
    /// `δ_l = dL/dZ_l`, `l = 0..L-1`.
    delta: Vec<R::Buffer<f32>>,
    /// `dL/dH_l`, `l = 1..L-1` (entry `l-1`).
    dh: Vec<R::Buffer<f32>>,
    /// Loss per task, `[B]`.
    loss: R::Buffer<f32>,
    /// `R{Z_l}`, `l = 0..L-1`.
    rz: Vec<R::Buffer<f32>>,
    /// `R{H_l}`, `l = 1..L-1` (entry `l-1`).
    rh: Vec<R::Buffer<f32>>,
    /// `R{δ_l}`, `l = 0..L-1`.
    rdelta: Vec<R::Buffer<f32>>,
}

impl<R: Runtime> MlpWorkspace<R> {
    /// Number of tasks.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Points per task.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The network output of the last forward pass, `[B, n, d_L]`.
    pub fn out(&self) -> &R::Buffer<f32> {
        &self.out
    }

    /// The loss per task of the last [`DeviceMlp::loss_and_grad`], `[B]`.
    pub fn loss(&self) -> &R::Buffer<f32> {
        &self.loss
    }

    /// Every buffer of the workspace, for a graph replay's check ([`Runtime::replay`]).
    pub fn buffers(&self) -> impl Iterator<Item = &R::Buffer<f32>> {
        let singles = [&self.out, &self.probs, &self.loss];
        self.hidden
            .iter()
            .chain(&self.delta)
            .chain(&self.dh)
            .chain(&self.rz)
            .chain(&self.rh)
            .chain(&self.rdelta)
            .chain(singles)
    }

    /// Gives every buffer back to `rt`'s pool, for the next meta-step.
    pub fn recycle(self, rt: &R) {
        let singles = [self.out, self.probs, self.loss];
        for buf in self.hidden.into_iter().chain(self.delta).chain(self.dh).chain(self.rz).chain(self.rh) {
            rt.recycle(buf);
        }
        for buf in self.rdelta.into_iter().chain(singles) {
            rt.recycle(buf);
        }
    }
}

/// The learner's architecture, driving its kernels on a [`Runtime`]. Parameter vectors
/// (`theta`, directions `u`, gradients, Hessian-vector products) are `[B, P]`, task `b` at
/// `b·P`, in the spec's flat layout; inputs are `[B, n, d_0]`.
#[derive(Debug, Clone)]
pub struct DeviceMlp {
    layout: ThetaLayout,
    activation: Activation,
    loss: LossKind,
}

impl DeviceMlp {
    /// The learner of the given widths `[d_0, ..., d_L]`, activation and loss.
    pub fn new(widths: &[usize], activation: Activation, loss: LossKind) -> Self {
        Self { layout: ThetaLayout::from_widths(widths), activation, loss }
    }

    /// The learner of a configuration.
    pub fn from_config(config: &metasched_engine::Config) -> Self {
        Self::new(&config.model.layers, config.model.activation, config.model.loss)
    }

    /// Where each tensor lives in a task's parameter vector.
    pub fn layout(&self) -> &ThetaLayout {
        &self.layout
    }

    fn width(&self, l: usize) -> usize {
        self.layout.widths[l]
    }

    fn n_linear(&self) -> usize {
        self.layout.n_linear()
    }

    /// Device memory for sets of `rows` points of `tasks` tasks (new, zero-filled buffers).
    pub fn workspace<R: Runtime>(&self, rt: &R, tasks: usize, rows: usize) -> Result<MlpWorkspace<R>> {
        self.workspace_with(tasks, rows, |len| rt.alloc::<f32>(len))
    }

    /// Device memory for sets of `rows` points of `tasks` tasks, from `rt`'s pool (contents
    /// left over: every pass writes what it reads first); give it back with
    /// [`MlpWorkspace::recycle`].
    pub fn workspace_pooled<R: Runtime>(&self, rt: &R, tasks: usize, rows: usize) -> Result<MlpWorkspace<R>> {
        self.workspace_with(tasks, rows, |len| rt.alloc_pooled::<f32>(len))
    }

    fn workspace_with<R: Runtime>(
        &self,
        tasks: usize,
        rows: usize,
        alloc: impl Fn(usize) -> Result<R::Buffer<f32>>,
    ) -> Result<MlpWorkspace<R>> {
        let l = self.n_linear();
        let w = &self.layout.widths;
        let act = |d: usize| alloc(tasks * rows * d);
        let many = |range: std::ops::Range<usize>| -> Result<Vec<R::Buffer<f32>>> {
            range.map(|i| alloc(tasks * rows * w[i])).collect()
        };
        Ok(MlpWorkspace {
            tasks,
            rows,
            hidden: many(1..l)?,
            out: act(w[l])?,
            probs: act(w[l])?,
            delta: many(1..l + 1)?,
            dh: many(1..l)?,
            loss: alloc(tasks)?,
            rz: many(1..l + 1)?,
            rh: many(1..l)?,
            rdelta: many(1..l + 1)?,
        })
    }

    fn check_params<R: Runtime>(&self, ws: &MlpWorkspace<R>, what: &str, len: usize) -> Result<()> {
        let need = ws.tasks * self.layout.len();
        if len < need {
            return Err(CudaError::InvalidArgument {
                kernel: "DeviceMlp".into(),
                reason: format!("`{what}` holds {len} values, {} tasks need {need}", ws.tasks),
            });
        }
        Ok(())
    }

    /// Scalars shared by the layer kernels: tasks, rows, din, dout, param_stride, w_off, b_off.
    fn layer_args<'a, R: Runtime>(&self, ws: &MlpWorkspace<R>, l: usize) -> [Arg<'a, R>; 7] {
        [
            Arg::int(ws.tasks),
            Arg::int(ws.rows),
            Arg::int(self.width(l)),
            Arg::int(self.width(l + 1)),
            Arg::int(self.layout.len()),
            Arg::int(self.layout.weight(l).start),
            Arg::int(self.layout.bias(l).start),
        ]
    }

    /// Forward pass of `x` (`[B, n, d_0]`) with per-task parameters `theta` (`[B, P]`); the
    /// output is [`MlpWorkspace::out`].
    pub fn forward<R: Runtime>(
        &self,
        rt: &R,
        ws: &mut MlpWorkspace<R>,
        theta: &R::Buffer<f32>,
        x: &R::Buffer<f32>,
    ) -> Result<()> {
        self.check_params(ws, "theta", theta.len())?;
        let last = self.n_linear() - 1;
        for l in 0..=last {
            let input = if l == 0 { x } else { &ws.hidden[l - 1] };
            let out = if l == last { &ws.out } else { &ws.hidden[l] };
            let act = if l == last { 0 } else { act_code(self.activation) };
            let [t, r, di, dout, ps, wo, bo] = self.layer_args(ws, l);
            rt.launch_default(
                KernelId::LinearForward,
                &[Arg::buf(out), Arg::buf(input), Arg::buf(theta), t, r, di, dout, ps, wo, bo, Arg::I32(act)],
            )?;
        }
        Ok(())
    }

    /// Forward pass, loss per task ([`MlpWorkspace::loss`]) and its gradient w.r.t. each task's
    /// parameters, written to `grad` (`[B, P]`). Leaves in `ws` what [`DeviceMlp::hvp`] needs at
    /// the same parameters.
    pub fn loss_and_grad<R: Runtime>(
        &self,
        rt: &R,
        ws: &mut MlpWorkspace<R>,
        grad: &R::Buffer<f32>,
        theta: &R::Buffer<f32>,
        x: &R::Buffer<f32>,
        y: DeviceTargets<'_, R>,
    ) -> Result<()> {
        self.check_params(ws, "grad", grad.len())?;
        self.forward(rt, ws, theta, x)?;
        let last = self.n_linear() - 1;
        let (b, n, d) = (Arg::int(ws.tasks), Arg::int(ws.rows), Arg::int(self.width(last + 1)));
        match (self.loss, y) {
            (LossKind::Mse, DeviceTargets::Values(y)) => rt.launch_default(
                KernelId::MseForwardBackward,
                &[Arg::buf(&ws.loss), Arg::buf(&ws.delta[last]), Arg::buf(&ws.out), Arg::buf(y), b, n, d],
            )?,
            (LossKind::CrossEntropy, DeviceTargets::Labels(labels)) => rt.launch_default(
                KernelId::CrossEntropyForwardBackward,
                &[
                    Arg::buf(&ws.loss),
                    Arg::buf(&ws.delta[last]),
                    Arg::buf(&ws.probs),
                    Arg::buf(&ws.out),
                    Arg::buf(labels),
                    b,
                    n,
                    d,
                ],
            )?,
            _ => {
                return Err(CudaError::InvalidArgument {
                    kernel: "DeviceMlp".into(),
                    reason: format!("targets do not match the {:?} loss", self.loss),
                });
            }
        }
        for l in (0..=last).rev() {
            let input = if l == 0 { x } else { &ws.hidden[l - 1] };
            // For l = 0 no input gradient is wanted; the unused output slots get any buffer.
            let (dh, delta_prev) =
                if l == 0 { (&ws.out, &ws.out) } else { (&ws.dh[l - 1], &ws.delta[l - 1]) };
            let [t, r, di, dout, ps, wo, bo] = self.layer_args(ws, l);
            rt.launch_default(
                KernelId::LinearBackward,
                &[
                    Arg::buf(grad),
                    Arg::buf(dh),
                    Arg::buf(delta_prev),
                    Arg::buf(&ws.delta[l]),
                    Arg::buf(input),
                    Arg::buf(theta),
                    t,
                    r,
                    di,
                    dout,
                    ps,
                    wo,
                    bo,
                    Arg::I32(act_code(self.activation)),
                    Arg::flag(l > 0),
                ],
            )?;
        }
        Ok(())
    }

    /// `hv = ∇²L(theta) · u` for every task (`[B, P]` each), exactly, by the R-operator. `ws`
    /// must hold the state of a [`DeviceMlp::loss_and_grad`] call at the same `theta` and `x`.
    pub fn hvp<R: Runtime>(
        &self,
        rt: &R,
        ws: &mut MlpWorkspace<R>,
        hv: &R::Buffer<f32>,
        theta: &R::Buffer<f32>,
        x: &R::Buffer<f32>,
        u: &R::Buffer<f32>,
    ) -> Result<()> {
        for (what, len) in [("hv", hv.len()), ("theta", theta.len()), ("u", u.len())] {
            self.check_params(ws, what, len)?;
        }
        let last = self.n_linear() - 1;
        let act = act_code(self.activation);
        // R-forward: R{Z_l} = R{H_l} W_lᵀ + H_l U_lᵀ + Ub_l;  R{H_{l+1}} = act'(Z_l) ⊙ R{Z_l}.
        for l in 0..=last {
            let input = if l == 0 { x } else { &ws.hidden[l - 1] };
            let rh_in = if l == 0 { x } else { &ws.rh[l - 1] };
            let (rh_out, h_out, a) =
                if l == last { (&ws.rz[l], &ws.rz[l], 0) } else { (&ws.rh[l], &ws.hidden[l], act) };
            let [t, r, di, dout, ps, wo, bo] = self.layer_args(ws, l);
            rt.launch_default(
                KernelId::LinearRop,
                &[
                    Arg::buf(&ws.rz[l]),
                    Arg::buf(rh_out),
                    Arg::buf(rh_in),
                    Arg::buf(input),
                    Arg::buf(h_out),
                    Arg::buf(theta),
                    Arg::buf(u),
                    t,
                    r,
                    di,
                    dout,
                    ps,
                    wo,
                    bo,
                    Arg::I32(a),
                    Arg::flag(l > 0),
                ],
            )?;
        }
        let (b, n, d) = (Arg::int(ws.tasks), Arg::int(ws.rows), Arg::int(self.width(last + 1)));
        match self.loss {
            LossKind::Mse => rt.launch_default(
                KernelId::MseRop,
                &[Arg::buf(&ws.rdelta[last]), Arg::buf(&ws.rz[last]), b, n, d],
            )?,
            LossKind::CrossEntropy => rt.launch_default(
                KernelId::CrossEntropyRop,
                &[Arg::buf(&ws.rdelta[last]), Arg::buf(&ws.probs), Arg::buf(&ws.rz[last]), b, n, d],
            )?,
        }
        // R-backward.
        for l in (0..=last).rev() {
            let input = if l == 0 { x } else { &ws.hidden[l - 1] };
            let (rdelta_prev, rh_in, dh_in, rz_prev) = if l == 0 {
                (&ws.rdelta[0], x, x, x)
            } else {
                (&ws.rdelta[l - 1], &ws.rh[l - 1], &ws.dh[l - 1], &ws.rz[l - 1])
            };
            let [t, r, di, dout, ps, wo, bo] = self.layer_args(ws, l);
            rt.launch_default(
                KernelId::LinearRopBackward,
                &[
                    Arg::buf(hv),
                    Arg::buf(rdelta_prev),
                    Arg::buf(&ws.rdelta[l]),
                    Arg::buf(&ws.delta[l]),
                    Arg::buf(input),
                    Arg::buf(rh_in),
                    Arg::buf(dh_in),
                    Arg::buf(rz_prev),
                    Arg::buf(theta),
                    Arg::buf(u),
                    t,
                    r,
                    di,
                    dout,
                    ps,
                    wo,
                    bo,
                    Arg::I32(act),
                    Arg::flag(l > 0),
                ],
            )?;
        }
        Ok(())
    }
}
