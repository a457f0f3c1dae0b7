//! `kernels/mlp.cu`: the learner's dense layers (forward, backward, and the R-operator of
//! both, for the Hessian-vector product) and activations, batched over tasks. CPU twins: the
//! dense products and activations of `Mlp::forward`, `Mlp::loss_and_grad` and `Mlp::hvp`
//! (`crates/engine/src/mlp.rs`), one layer at a time. Contract, cost and check together; the
//! parameter lists come from the `.cu` signatures (`build.rs`).

use super::contract::{Contract, GridNeed, Requirements, tiles};
use super::cost::{Cost, Scalars};
use super::{DEFAULT_BLOCK, KernelId};
use crate::error::Result;
use crate::runtime::Dim3;

/// Buffer lengths and launch shape: the layer kernels take `(TILE, TILE)` blocks over output
/// tiles, grid y = tasks; the activations one thread per element.
pub(crate) fn requirements(kernel: KernelId, mut c: Contract<'_>) -> Result<Requirements> {
    if matches!(kernel, KernelId::ActivationForward | KernelId::ActivationBackward) {
        let count = c.fits("count", c.size("count", 1)?)?;
        c.act("act")?;
        let names: &[&str] =
            if kernel == KernelId::ActivationForward { &["out", "in"] } else { &["delta", "dh", "h"] };
        for n in names {
            c.need(n, count)?;
        }
        return Ok(c.linear(Dim3::x(DEFAULT_BLOCK), GridNeed::Threads(count), 0));
    }
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
    let grid = match kernel {
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
    let grid = c.blocks(grid, b)?;
    Ok(c.tile(grid))
}

/// Bytes and FLOPs (the formulas at the top of `mlp.cu`).
pub(crate) fn cost(kernel: KernelId, s: &Scalars<'_>) -> Result<Cost> {
    match kernel {
        KernelId::ActivationForward => {
            let n = s.get("count")?;
            return Ok(Cost::floats(2 * n, n));
        }
        KernelId::ActivationBackward => {
            let n = s.get("count")?;
            return Ok(Cost::floats(3 * n, 3 * n));
        }
        _ => {}
    }
    let (b, n) = (s.get("tasks")?, s.get("rows")?);
    let (din, dout) = (s.get("din")?, s.get("dout")?);
    let act = u64::from(s.get("act")? != 0);
    Ok(match kernel {
        KernelId::LinearForward => {
            Cost::floats(b * (n * din + n * dout + dout * din + dout), 2 * b * n * din * dout + b * n * dout)
        }
        KernelId::LinearBackward => {
            let want = s.get("want_dinput")?;
            Cost::floats(
                b * (n * dout + n * din + dout * (din + 1) + want * (dout * din + 3 * n * din)),
                2 * b * n * dout * (din + 1) + want * (2 * b * n * dout * din + b * n * din),
            )
        }
        KernelId::LinearRop => {
            let has = s.get("has_rh_in")?;
            Cost::floats(
                b * ((1 + has) * (n * din + dout * din) + dout + 2 * n * dout + act * 2 * n * dout),
                2 * (1 + has) * b * n * din * dout + 2 * b * n * dout,
            )
        }
        _ => {
            let has = s.get("has_prev")?;
            Cost::floats(
                b * ((1 + has) * (n * dout + n * din)
                    + dout * (din + 1)
                    + has * (2 * dout * din + 4 * n * din)),
                2 * (1 + has) * b * n * dout * (din + 1) + has * (4 * b * n * dout * din + 5 * b * n * din),
            )
        }
    })
}

#[cfg(feature = "checks")]
pub(crate) use check::check;

/// The checks against the engine's layer arithmetic: four layer shapes, every activation,
/// every flag, outputs that must not be written compared with what they started as.
#[cfg(feature = "checks")]
mod check {
    use metasched_engine::linalg::{add_row, col_sum_acc, gemm_nn_acc, gemm_nt_acc, gemm_tn_acc};
    use metasched_engine::{Activation, ThetaLayout};

    use crate::checks::harness::{In, launch};
    use crate::checks::{Comparison, randn};
    use crate::error::Result;
    use crate::kernels::KernelId;
    use crate::learner::act_code;
    use crate::runtime::Runtime;

    /// `(tasks, rows, din, dout)`: a 1-wide input (another engine path), sizes that are not
    /// multiples of the 16-wide tiles, several tiles in every direction.
    const SHAPES: [(usize, usize, usize, usize); 4] =
        [(3, 10, 1, 40), (2, 37, 40, 40), (2, 5, 33, 17), (1, 50, 7, 3)];

    /// Width of the layer in front of the checked one: the checked layer is layer 1 of
    /// `[FRONT, din, dout]`, so its weights start at a non-zero offset inside a larger
    /// per-task parameter vector whose other entries the kernels must leave alone.
    const FRONT: usize = 3;

    /// Element counts of the elementwise kernels: several blocks with a partial last one,
    /// less than a warp, a single value.
    const ELEMENTWISE_COUNTS: [usize; 3] = [1000, 37, 1];

    /// An activation code of the kernels (`0` none, `1` relu, `2` tanh) and its engine twin
    /// (`None`: the identity, which the engine has no name for).
    #[derive(Debug, Clone, Copy)]
    struct Act(Option<Activation>);

    impl Act {
        const NONE: Act = Act(None);
        const RELU: Act = Act(Some(Activation::Relu));
        const TANH: Act = Act(Some(Activation::Tanh));

        fn code(self) -> i32 {
            self.0.map_or(0, act_code)
        }

        fn apply(self, z: f32) -> f32 {
            self.0.map_or(z, |a| a.apply(z))
        }

        fn d1(self, h: f32) -> f32 {
            self.0.map_or(1.0, |a| a.d1(h))
        }

        fn d2(self, h: f32) -> f32 {
            self.0.map_or(0.0, |a| a.d2(h))
        }

        fn label(self) -> &'static str {
            match self.0 {
                None => "none",
                Some(Activation::Relu) => "relu",
                Some(Activation::Tanh) => "tanh",
            }
        }
    }

    /// One dense layer's data for every task: per-task parameters and direction `[B, P]`
    /// (fan-in scaled), its input (an activation output), and random `[B, n, din]` /
    /// `[B, n, dout]` arrays for the other operands.
    struct Layer {
        tasks: usize,
        rows: usize,
        din: usize,
        dout: usize,
        layout: ThetaLayout,
        theta: Vec<f32>,
        u: Vec<f32>,
        /// Pre-activation of the input, `[B, n, din]`.
        z_in: Vec<f32>,
        /// Random `[B, n, din]` operands (R{H}, dL/dH, R{Z} of the input side).
        side_in: [Vec<f32>; 3],
        /// Random `[B, n, dout]` operands (δ, R{δ}, pre-activations of the output side).
        side_out: [Vec<f32>; 3],
        /// Garbage `[B, P]`, `[B, n, din]` and `[B, n, dout]` that outputs start as.
        junk_params: Vec<f32>,
        junk_in: Vec<f32>,
        junk_out: [Vec<f32>; 2],
    }

    impl Layer {
        fn new(tasks: usize, rows: usize, din: usize, dout: usize, seed: u64) -> Self {
            let layout = ThetaLayout::from_widths(&[FRONT, din, dout]);
            let p = layout.len();
            let scaled = |id: u64| {
                let mut t = randn(seed, &[id], tasks * p, 1.0);
                for b in 0..tasks {
                    for l in 0..layout.n_linear() {
                        let s = 1.0 / (layout.widths[l] as f32).sqrt();
                        for i in layout.weight(l).chain(layout.bias(l)) {
                            t[b * p + i] *= s;
                        }
                    }
                }
                t
            };
            let (xin, xout) = (tasks * rows * din, tasks * rows * dout);
            Self {
                theta: scaled(0),
                u: scaled(1),
                z_in: randn(seed, &[2], xin, 1.0),
                side_in: [
                    randn(seed, &[3], xin, 1.0),
                    randn(seed, &[4], xin, 1.0),
                    randn(seed, &[5], xin, 1.0),
                ],
                side_out: [
                    randn(seed, &[6], xout, 1.0),
                    randn(seed, &[7], xout, 1.0),
                    randn(seed, &[8], xout, 1.0),
                ],
                junk_params: randn(seed, &[9], tasks * p, 5.0),
                junk_in: randn(seed, &[10], xin, 5.0),
                junk_out: [randn(seed, &[11], xout, 5.0), randn(seed, &[12], xout, 5.0)],
                tasks,
                rows,
                din,
                dout,
                layout,
            }
        }

        fn p(&self) -> usize {
            self.layout.len()
        }

        /// The input `H = act(z_in)` (for `Act::NONE` the input of the first layer).
        fn input(&self, act: Act) -> Vec<f32> {
            self.z_in.iter().map(|&z| act.apply(z)).collect()
        }

        fn case(&self) -> String {
            format!("B={} n={} {}->{}", self.tasks, self.rows, self.din, self.dout)
        }

        /// Task `b`'s `[B, n, din]`-shaped slice.
        fn xin(&self, b: usize) -> std::ops::Range<usize> {
            let m = self.rows * self.din;
            b * m..(b + 1) * m
        }

        /// Task `b`'s `[B, n, dout]`-shaped slice.
        fn xout(&self, b: usize) -> std::ops::Range<usize> {
            let m = self.rows * self.dout;
            b * m..(b + 1) * m
        }

        /// Task `b`'s `[B, P]`-shaped slice.
        fn params(&self, b: usize) -> std::ops::Range<usize> {
            let p = self.p();
            b * p..(b + 1) * p
        }

        /// The launch arguments `[outputs and inputs..., tasks, rows, din, dout,
        /// param_stride, w_off, b_off, act, flag]` of the layer kernels.
        fn args<'a>(&self, buffers: &[In<'a>], act: Act, flag: Option<bool>) -> Vec<In<'a>> {
            let mut v = buffers.to_vec();
            v.extend([
                In::Int(self.tasks),
                In::Int(self.rows),
                In::Int(self.din),
                In::Int(self.dout),
                In::Int(self.p()),
                In::Int(self.layout.weight(1).start),
                In::Int(self.layout.bias(1).start),
                In::I32(act.code()),
            ]);
            v.extend(flag.map(|f| In::I32(i32::from(f))));
            v
        }
    }

    fn layers() -> impl Iterator<Item = Layer> {
        SHAPES.into_iter().map(|(b, n, din, dout)| Layer::new(b, n, din, dout, (n + din) as u64))
    }

    /// Runs `kernel`'s check on `rt` into `cmp`.
    pub(crate) fn check<R: Runtime>(rt: &R, kernel: KernelId, cmp: &mut Comparison) -> Result<()> {
        match kernel {
            KernelId::LinearForward => linear_forward(rt, cmp),
            KernelId::LinearBackward => linear_backward(rt, cmp),
            KernelId::LinearRop => linear_rop(rt, cmp),
            KernelId::LinearRopBackward => linear_rop_backward(rt, cmp),
            KernelId::ActivationForward => activation_forward(rt, cmp),
            _ => activation_backward(rt, cmp),
        }
    }

    /// `out = act(x Wᵀ + b)` per task.
    fn linear_forward_ref(out: &mut [f32], x: &[f32], k: &Layer, act: Act) {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        for b in 0..k.tasks {
            let th = &k.theta[k.params(b)];
            let o = &mut out[k.xout(b)];
            gemm_nt_acc(o, &x[k.xin(b)], &th[k.layout.weight(1)], n, din, dout);
            add_row(o, &th[k.layout.bias(1)], n, dout);
            for v in o.iter_mut() {
                *v = act.apply(*v);
            }
        }
    }

    fn linear_forward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in layers() {
            let x = k.input(Act::TANH);
            for act in [Act::NONE, Act::RELU, Act::TANH] {
                let mut want = vec![0.0; k.tasks * k.rows * k.dout];
                linear_forward_ref(&mut want, &x, &k, act);
                let args = k.args(&[In::F(&k.junk_out[0]), In::F(&x), In::F(&k.theta)], act, None);
                let out = launch(rt, KernelId::LinearForward, None, &args)?;
                out.compare(cmp, &format!("{} {}", k.case(), act.label()), &[("out", &want)])?;
            }
        }
        Ok(())
    }

    /// The layer's weight and bias gradients (the rest of `grad` kept), `dh = δ W` and
    /// `delta_prev = dh ⊙ act'(h_in)` per task.
    fn linear_backward_ref(
        grad: &mut [f32],
        dh: &mut [f32],
        delta_prev: &mut [f32],
        h_in: &[f32],
        k: &Layer,
        act: Act,
    ) {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let delta = &k.side_out[0];
        for b in 0..k.tasks {
            let g = &mut grad[k.params(b)];
            g[k.layout.weight(1)].fill(0.0);
            g[k.layout.bias(1)].fill(0.0);
            gemm_tn_acc(&mut g[k.layout.weight(1)], &delta[k.xout(b)], &h_in[k.xin(b)], n, dout, din);
            col_sum_acc(&mut g[k.layout.bias(1)], &delta[k.xout(b)], n, dout);
            let th = &k.theta[k.params(b)];
            gemm_nn_acc(&mut dh[k.xin(b)], &delta[k.xout(b)], &th[k.layout.weight(1)], n, dout, din);
        }
        for ((p, &g), &h) in delta_prev.iter_mut().zip(dh.iter()).zip(h_in) {
            *p = g * act.d1(h);
        }
    }

    fn linear_backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in layers() {
            let xin = k.tasks * k.rows * k.din;
            for act in [Act::RELU, Act::TANH] {
                let h_in = k.input(act);
                // grad starts as garbage: the layer's weight and bias are written, the rest kept.
                let mut want_grad = k.junk_params.clone();
                let (mut want_dh, mut want_dprev) = (vec![0.0; xin], vec![0.0; xin]);
                linear_backward_ref(&mut want_grad, &mut want_dh, &mut want_dprev, &h_in, &k, act);
                for want_dinput in [true, false] {
                    let buffers = [
                        In::F(&k.junk_params),
                        In::F(&k.junk_in),
                        In::F(&k.junk_in),
                        In::F(&k.side_out[0]),
                        In::F(&h_in),
                        In::F(&k.theta),
                    ];
                    let out = launch(
                        rt,
                        KernelId::LinearBackward,
                        None,
                        &k.args(&buffers, act, Some(want_dinput)),
                    )?;
                    let case = format!("{} {} want_dinput={want_dinput}", k.case(), act.label());
                    if want_dinput {
                        out.compare(
                            cmp,
                            &case,
                            &[("grad", &want_grad), ("dh", &want_dh), ("delta_prev", &want_dprev)],
                        )?;
                    } else {
                        out.compare(cmp, &case, &[("grad", &want_grad), ("dh (not written)", &k.junk_in)])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `rz = rh_in Wᵀ (if has_rh_in) + in Uᵀ + u_b` and `rh_out = act'(h_out) ⊙ rz` per task.
    fn linear_rop_ref(
        rz: &mut [f32],
        rh_out: &mut [f32],
        input: &[f32],
        h_out: &[f32],
        has_rh_in: bool,
        k: &Layer,
        act: Act,
    ) {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let rh_in = &k.side_in[0];
        for b in 0..k.tasks {
            let (th, u) = (&k.theta[k.params(b)], &k.u[k.params(b)]);
            let rzb = &mut rz[k.xout(b)];
            if has_rh_in {
                gemm_nt_acc(rzb, &rh_in[k.xin(b)], &th[k.layout.weight(1)], n, din, dout);
            }
            gemm_nt_acc(rzb, &input[k.xin(b)], &u[k.layout.weight(1)], n, din, dout);
            add_row(rzb, &u[k.layout.bias(1)], n, dout);
        }
        if act.0.is_some() {
            for ((o, &r), &h) in rh_out.iter_mut().zip(rz.iter()).zip(h_out) {
                *o = act.d1(h) * r;
            }
        }
    }

    fn linear_rop<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in layers() {
            for act in [Act::NONE, Act::RELU, Act::TANH] {
                let input = k.input(Act::TANH);
                let h_out: Vec<f32> = k.side_out[2].iter().map(|&z| act.apply(z)).collect();
                for has_rh_in in [true, false] {
                    let mut want_rz = vec![0.0; k.tasks * k.rows * k.dout];
                    // rh_out is not written without an activation: it keeps its garbage.
                    let mut want_rh = k.junk_out[1].clone();
                    linear_rop_ref(&mut want_rz, &mut want_rh, &input, &h_out, has_rh_in, &k, act);
                    let buffers = [
                        In::F(&k.junk_out[0]),
                        In::F(&k.junk_out[1]),
                        In::F(&k.side_in[0]),
                        In::F(&input),
                        In::F(&h_out),
                        In::F(&k.theta),
                        In::F(&k.u),
                    ];
                    let out = launch(rt, KernelId::LinearRop, None, &k.args(&buffers, act, Some(has_rh_in)))?;
                    let case = format!("{} {} has_rh_in={has_rh_in}", k.case(), act.label());
                    out.compare(cmp, &case, &[("rz", &want_rz), ("rh_out", &want_rh)])?;
                }
            }
        }
        Ok(())
    }

    /// The layer's rows of `hv` (the rest kept) and `rdelta_prev` per task (written only with
    /// `has_prev`).
    fn linear_rop_backward_ref(
        hv: &mut [f32],
        rdelta_prev: &mut [f32],
        input: &[f32],
        has_prev: bool,
        k: &Layer,
        act: Act,
    ) {
        let (n, din, dout) = (k.rows, k.din, k.dout);
        let [rdelta, delta, _] = &k.side_out;
        let [rh_in, dh_in, rz_prev] = &k.side_in;
        for b in 0..k.tasks {
            let (th, u) = (&k.theta[k.params(b)], &k.u[k.params(b)]);
            let hvb = &mut hv[k.params(b)];
            hvb[k.layout.weight(1)].fill(0.0);
            hvb[k.layout.bias(1)].fill(0.0);
            let (xi, xo) = (k.xin(b), k.xout(b));
            gemm_tn_acc(&mut hvb[k.layout.weight(1)], &rdelta[xo.clone()], &input[xi.clone()], n, dout, din);
            if has_prev {
                gemm_tn_acc(
                    &mut hvb[k.layout.weight(1)],
                    &delta[xo.clone()],
                    &rh_in[xi.clone()],
                    n,
                    dout,
                    din,
                );
            }
            col_sum_acc(&mut hvb[k.layout.bias(1)], &rdelta[xo.clone()], n, dout);
            if !has_prev {
                continue;
            }
            let mut rdh = vec![0.0; n * din];
            gemm_nn_acc(&mut rdh, &rdelta[xo.clone()], &th[k.layout.weight(1)], n, dout, din);
            gemm_nn_acc(&mut rdh, &delta[xo], &u[k.layout.weight(1)], n, dout, din);
            for (i, e) in xi.enumerate() {
                let h = input[e];
                rdelta_prev[e] = rdh[i] * act.d1(h) + dh_in[e] * act.d2(h) * rz_prev[e];
            }
        }
    }

    fn linear_rop_backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for k in layers() {
            for act in [Act::RELU, Act::TANH] {
                // `in` is H_l = act(Z_{l−1}), the activation the kernel differentiates.
                let input = k.input(act);
                for has_prev in [true, false] {
                    let mut want_hv = k.junk_params.clone();
                    // rdelta_prev keeps its garbage without has_prev.
                    let mut want_rprev =
                        if has_prev { vec![0.0; k.tasks * k.rows * k.din] } else { k.junk_in.clone() };
                    linear_rop_backward_ref(&mut want_hv, &mut want_rprev, &input, has_prev, &k, act);
                    let [rdelta, delta, _] = &k.side_out;
                    let [rh_in, dh_in, rz_prev] = &k.side_in;
                    let buffers = [
                        In::F(&k.junk_params),
                        In::F(&k.junk_in),
                        In::F(rdelta),
                        In::F(delta),
                        In::F(&input),
                        In::F(rh_in),
                        In::F(dh_in),
                        In::F(rz_prev),
                        In::F(&k.theta),
                        In::F(&k.u),
                    ];
                    let out = launch(
                        rt,
                        KernelId::LinearRopBackward,
                        None,
                        &k.args(&buffers, act, Some(has_prev)),
                    )?;
                    let case = format!("{} {} has_prev={has_prev}", k.case(), act.label());
                    out.compare(cmp, &case, &[("hv", &want_hv), ("rdelta_prev", &want_rprev)])?;
                }
            }
        }
        Ok(())
    }

    fn activation_forward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for count in ELEMENTWISE_COUNTS {
            let z = randn(21, &[count as u64], count, 1.5);
            let junk = randn(22, &[count as u64], count, 5.0);
            for act in [Act::NONE, Act::RELU, Act::TANH] {
                let want: Vec<f32> = z.iter().map(|&v| act.apply(v)).collect();
                let args = [In::F(&junk), In::F(&z), In::Int(count), In::I32(act.code())];
                let out = launch(rt, KernelId::ActivationForward, None, &args)?;
                out.compare(cmp, &format!("count={count} {}", act.label()), &[("out", &want)])?;
            }
        }
        Ok(())
    }

    fn activation_backward<R: Runtime>(rt: &R, cmp: &mut Comparison) -> Result<()> {
        for count in ELEMENTWISE_COUNTS {
            let z = randn(23, &[count as u64], count, 1.5);
            let dh = randn(24, &[count as u64], count, 1.0);
            let junk = randn(25, &[count as u64], count, 5.0);
            for act in [Act::NONE, Act::RELU, Act::TANH] {
                let h: Vec<f32> = z.iter().map(|&v| act.apply(v)).collect();
                let want: Vec<f32> = dh.iter().zip(&h).map(|(&g, &h)| g * act.d1(h)).collect();
                let args = [In::F(&junk), In::F(&dh), In::F(&h), In::Int(count), In::I32(act.code())];
                let out = launch(rt, KernelId::ActivationBackward, None, &args)?;
                out.compare(cmp, &format!("count={count} {}", act.label()), &[("delta", &want)])?;
            }
        }
        Ok(())
    }
}
