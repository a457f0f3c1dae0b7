"""JAX peer of metasched's long-horizon `train-mlp` meta-step (docs/SPEC.md sections 7-8),
float32: the meta-step of `meta-coord train --config deploy/examples/digits-long.toml`.

Per run a fresh 64-32-10 relu MLP (PyTorch's default init, not learned) trained by H = 1000
SGD steps on minibatches of 32 points of the run's training split; at every step the LSTM
scheduler reads the features [ln(l+1e-8), ln(||g||+1e-8), t/H] (under stop_gradient, spec
section 3) and sets one rate per learner tensor, lr_max * sigmoid(head). The meta-objective
of a run is the cross-entropy on its held-out split after the last step (`objective = end`);
the meta-gradient is `jax.grad` w.r.t. phi through the whole unroll (`full` estimator,
second order: the dependence of every g_t on theta_t is differentiated), with the step under
`jax.checkpoint` (`remat`), `lax.scan` over the steps and `vmap` over the 8 runs; then the
global-norm clip 10 and Adam (lr 0.01, PyTorch's formulation) on phi, as `train` does.

Data: the repository's own digits (`data/digits.csv.gz`, the file metasched embeds), split
like spec section 7.1 in sizes (per class 70% to the meta-train pool, of which 20% held out),
but by numpy's generator, not metasched's streams: the same distribution, not the same bits.
"""

import gzip
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

import metastep as ms

DIGITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data",
                      "digits.csv.gz")


class LongCfg:
    """The digits-long.toml settings the meta-step depends on (H is `horizon`)."""

    def __init__(self, horizon=1000, layers=(64, 32, 10), batch=32, runs=8, hidden=20,
                 lr_max=1.0, lr_init=0.3, meta_lr=0.01, clip=10.0, remat=True):
        self.horizon = horizon
        self.layers = tuple(layers)
        self.batch = batch
        self.runs = runs
        self.hidden = hidden
        self.lr_max = lr_max
        self.lr_init = lr_init
        self.meta_lr = meta_lr
        self.clip = clip
        self.remat = remat

    @property
    def n_linear(self):
        return len(self.layers) - 1


def load_digits():
    """The 1,797 8x8 digits of `data/digits.csv.gz`: inputs pixel/16 `[n, 64]`, labels `[n]`."""
    with gzip.open(DIGITS, "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return (a[:, :64] / 16.0).astype(np.float32), a[:, 64].astype(np.int32)


def split_digits(x, y, rng):
    """Training and held-out splits of the sizes of spec section 7.1: per class, 70%
    (rounded down) of a shuffled class to the meta-train pool, the last 20% (rounded down)
    of the shuffled pool held out; both listed class by class, as metasched lists them."""
    tr, va = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        pool = rng.permutation(idx[: len(idx) * 70 // 100])
        held = len(pool) * 20 // 100
        tr.append(np.sort(pool[: len(pool) - held]))
        va.append(np.sort(pool[len(pool) - held:]))
    tr, va = np.concatenate(tr), np.concatenate(va)
    return x[tr], y[tr], x[va], y[va]


def sample_runs(cfg, seed=0):
    """The fixed, pre-drawn runs of one meta-step: the shared splits, per run a random
    labelling of the 10 digits, its minibatch indices `[H, b]` (epochs of permutations of the
    training split, without replacement within an epoch, spec section 7.1) and its fresh
    learner (PyTorch default init U(+-1/sqrt(fan_in)) for weights and biases)."""
    rng = np.random.default_rng(seed)
    x, y = load_digits()
    tx, ty, vx, vy = split_digits(x, y, rng)
    n = len(ty)
    R, H, b = cfg.runs, cfg.horizon, cfg.batch
    perm = np.stack([rng.permutation(10) for _ in range(R)])  # digit -> label per run
    train_y = perm[np.arange(R)[:, None], ty[None, :]]
    val_y = perm[np.arange(R)[:, None], vy[None, :]]
    epochs = -(-H * b // n)
    order = np.stack([np.concatenate([rng.permutation(n) for _ in range(epochs)])[: H * b]
                      for _ in range(R)]).reshape(R, H, b)
    theta = {}
    for l in range(cfg.n_linear):
        fi, fo = cfg.layers[l], cfg.layers[l + 1]
        bound = 1.0 / math.sqrt(fi)
        theta[f"theta.layers.{l}.weight"] = rng.uniform(-bound, bound, (R, fo, fi))
        theta[f"theta.layers.{l}.bias"] = rng.uniform(-bound, bound, (R, fo))
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    i32 = lambda a: jnp.asarray(a, jnp.int32)
    return dict(theta0={k: f32(v) for k, v in theta.items()}, train_x=f32(tx),
                train_y=i32(train_y), val_x=f32(vx), val_y=i32(val_y), idx=i32(order))


def init_phi(cfg, seed=0):
    """The initial scheduler as `train` starts it: PyTorch LSTMCell init, head weight 0, head
    bias at the logit of lr_init / lr_max (a constant rate lr_init for every tensor)."""
    c = ms.Cfg(layers=cfg.layers, hidden=cfg.hidden, lr_min=0.0, lr_max=cfg.lr_max,
               learn_init=False)
    p = ms.init_params(c, seed, cfg.lr_init)
    return {k: p[k] for k in ms.PHI}


def make_run(cfg, unroll=1):
    """`run(phi, theta0, train_x, train_y, val_x, val_y, idx) -> (L_val, (rates, losses))`: one
    whole run (the function the meta-step differentiates, and `check_trajectory` replays);
    `unroll` steps per iteration of the scan's loop (only `xla_flops` uses more than 1)."""
    names = ms.Cfg(layers=cfg.layers).theta_names()
    L, H = cfg.n_linear, cfg.horizon

    def forward(theta, x):
        """The relu MLP of spec section 2 (PyTorch `nn.Linear` layout)."""
        h = x
        for l in range(L):
            z = h @ theta[f"theta.layers.{l}.weight"].T + theta[f"theta.layers.{l}.bias"]
            h = jax.nn.relu(z) if l < L - 1 else z
        return h

    def loss(theta, x, y):
        """Mean cross-entropy over the points."""
        out = forward(theta, x)
        picked = jnp.take_along_axis(out, y[:, None], axis=-1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(out, axis=-1) - picked)

    def lstm(phi, x, h, c):
        """PyTorch's LSTMCell, gates in the order i, f, g, o."""
        gates = (phi["phi.lstm.weight_ih"] @ x + phi["phi.lstm.bias_ih"]
                 + phi["phi.lstm.weight_hh"] @ h + phi["phi.lstm.bias_hh"])
        i, f, g, o = jnp.split(gates, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def run(phi, theta0, train_x, train_y, val_x, val_y, idx):
        """One whole run from theta0: H scheduled SGD steps, then the validation loss."""

        def step(carry, xs):
            """One inner step: minibatch loss and gradient, the scheduler's rates, SGD."""
            theta, h, c = carry
            t, ix = xs
            l, g = jax.value_and_grad(loss)(theta, train_x[ix], train_y[ix])
            gnorm = jnp.sqrt(sum(jnp.sum(v * v) for v in g.values()))
            feats = jax.lax.stop_gradient(
                jnp.stack([jnp.log(l + 1e-8), jnp.log(gnorm + 1e-8), t / H]))
            h, c = lstm(phi, feats, h, c)
            a = cfg.lr_max * jax.nn.sigmoid(phi["phi.head.weight"] @ h + phi["phi.head.bias"])
            theta = {n: theta[n] - a[i] * g[n] for i, n in enumerate(names)}
            return (theta, h, c), (a, l)

        body = jax.checkpoint(step) if cfg.remat else step
        z = jnp.zeros((cfg.hidden,), jnp.float32)
        ts = jnp.arange(H, dtype=jnp.float32)
        (theta, _, _), trace = jax.lax.scan(body, (theta0, z, z), (ts, idx), unroll=unroll)
        return loss(theta, val_x, val_y), trace

    return run


def make_meta_step(cfg, unroll=1):
    """The jit-able meta-step `(phi, opt, runs) -> (phi, opt, J)` of `cfg` (`unroll`: as
    `make_run`'s)."""
    run = make_run(cfg, unroll)

    def objective(phi, d):
        """J: the mean over the runs of their final validation loss."""
        per_run, _ = jax.vmap(run, in_axes=(None, 0, None, 0, None, 0, 0))(
            phi, d["theta0"], d["train_x"], d["train_y"], d["val_x"], d["val_y"], d["idx"])
        return jnp.mean(per_run)

    grad_fn = jax.value_and_grad(objective)

    def meta_step(phi, opt, d, b1=0.9, b2=0.999, eps=1e-8):
        """Meta-gradient, global-norm clip, one Adam step (PyTorch's formulation)."""
        j, grad = grad_fn(phi, d)
        norm = jnp.sqrt(sum(jnp.sum(g * g) for g in grad.values()))
        scale = jnp.where(norm > cfg.clip, cfg.clip / (norm + 1e-12), 1.0)
        m, v, t = opt
        t = t + 1
        new_p, new_m, new_v = {}, {}, {}
        for k in phi:
            gk = grad[k] * scale
            new_m[k] = b1 * m[k] + (1 - b1) * gk
            new_v[k] = b2 * v[k] + (1 - b2) * gk * gk
            mhat = new_m[k] / (1 - b1 ** t)
            vhat = new_v[k] / (1 - b2 ** t)
            new_p[k] = phi[k] - cfg.meta_lr * mhat / (jnp.sqrt(vhat) + eps)
        return new_p, (new_m, new_v, t), j

    return meta_step


def xla_flops(cfg, args, count):
    """XLA's FLOPs of one whole meta-step. XLA's cost analysis counts a loop's body once, not
    once per iteration, so the count of the scan as compiled (`c1`) holds one inner step
    (forward and backward) and everything outside the loops; with the scan unrolled twice
    (`c2`) the body holds two steps, so one step costs `c2 - c1` and the meta-step
    `c1 + (H - 1)(c2 - c1)`. `count(compiled)` reads XLA's count of a compiled function."""
    c = [count(jax.jit(make_meta_step(cfg, u)).lower(*args).compile()) for u in (1, 2)]
    return c[0] + (cfg.horizon - 1) * (c[1] - c[0]), c


def shape_flops(cfg, n_val):
    """Dense-product FLOPs (2 per multiply-add) of one meta-step from the shapes: per inner
    step on b points forward 2bP + backward 4bP + exact Hessian-vector product 12bP = 18bP,
    the validation loss forward + backward 6VP, times the runs:
    runs * (18 H b P + 6 V P), P = sum_l d_l d_{l+1}. Remat's recomputed forward (one more
    inner gradient per step, 6bP) and the LSTM are left out, as for the short configs."""
    P = sum(cfg.layers[i] * cfg.layers[i + 1] for i in range(cfg.n_linear))
    return cfg.runs * (18 * cfg.horizon * cfg.batch * P + 6 * n_val * P)


def check_trajectory(ckpt, traj, grad=None):
    """Replays a run metasched recorded (`meta-coord apply --record-trajectory`, spec 7.2)
    with the checkpoint's scheduler through `make_run`, on the recorded theta_0, splits and
    minibatches: returns the relative errors of the rates, the minibatch losses and the final
    validation loss against metasched's, and the run's horizon; with `grad` (metasched's
    meta-gradient of that run, `peer_step long-grad`), also the relative error of the peer's
    `jax.grad` of the run's final validation loss per phi tensor (`grad.NAME`)."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(traj, "np") as f:
        meta = json.loads(f.metadata()["metasched.trajectory"])
    rec = load_file(traj)
    cfg = LongCfg(horizon=int(meta["horizon"]), layers=meta["layers"],
                  batch=int(meta["batch_size"]))
    with safe_open(ckpt, "np") as f:
        c = json.loads(f.metadata()["metasched.config"])
    cfg.hidden, cfg.lr_max = c["scheduler"]["hidden"], c["scheduler"]["lr_max"]
    assert c["scheduler"]["lr_min"] == 0.0 and meta["inner_optimizer"]["kind"] == "sgd"
    phi = {k: jnp.asarray(v, jnp.float32) for k, v in load_file(ckpt).items() if k in ms.PHI}
    theta0 = {k: jnp.asarray(rec[k], jnp.float32) for k in ms.Cfg(layers=cfg.layers).theta_names()}
    args = (theta0, jnp.asarray(rec["train.x"]), jnp.asarray(rec["train.labels"], jnp.int32),
            jnp.asarray(rec["val.x"]), jnp.asarray(rec["val.labels"], jnp.int32),
            jnp.asarray(rec["batch.indices"], jnp.int32))
    run = make_run(cfg)
    (val_loss, (rates, losses)), g = jax.jit(jax.value_and_grad(run, has_aux=True))(phi, *args)
    rel = lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b)
                             / max(np.linalg.norm(np.asarray(b, np.float64)), 1e-30))
    at_h = rec["val_loss"][list(rec["val_step"]).index(cfg.horizon)]
    out = dict(lr=rel(rates, rec["lr"]), train_loss=rel(losses, rec["train_loss"]),
               val_loss=rel(val_loss, at_h), horizon=cfg.horizon,
               val=(float(val_loss), float(at_h)))
    if grad is not None:
        ref = load_file(grad)
        out.update({f"grad.{k}": rel(g[k], ref[k]) for k in sorted(ms.PHI)})
    return out
