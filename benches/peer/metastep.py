"""JAX peer of metasched's meta-step (docs/SPEC.md sections 2-4), float32.

The learner MLP, the LSTM learning-rate scheduler (features held constant), the unrolled
inner SGD loop, the exact second-order meta-gradient by `jax.grad` of the unrolled loss
(vmap over the B tasks), global-norm clipping and Adam (PyTorch's formulation), jit-compiled.
Parameters are a dict keyed by the checkpoint tensor names of SPEC section 5.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


class Cfg:
    def __init__(self, layers=(1, 40, 40, 1), activation="relu", loss="mse", steps=5,
                 hidden=20, lr_min=0.0, lr_max=0.1, first_order=False, learn_init=True):
        self.layers = tuple(layers)
        self.activation = activation
        self.loss = loss
        self.steps = steps
        self.hidden = hidden
        self.lr_min = lr_min
        self.lr_max = lr_max
        self.first_order = first_order
        self.learn_init = learn_init

    @property
    def n_linear(self):
        return len(self.layers) - 1

    def theta_names(self):
        out = []
        for l in range(self.n_linear):
            out += [f"theta.layers.{l}.weight", f"theta.layers.{l}.bias"]
        return out


PHI = ["phi.lstm.weight_ih", "phi.lstm.weight_hh", "phi.lstm.bias_ih", "phi.lstm.bias_hh",
       "phi.head.weight", "phi.head.bias"]


def init_params(cfg, seed=0, lr_init=0.01):
    """PyTorch-style initialisation (U(+-1/sqrt(fan_in))), head bias at the logit of lr_init."""
    rng = np.random.default_rng(seed)
    p = {}
    for l in range(cfg.n_linear):
        fi, fo = cfg.layers[l], cfg.layers[l + 1]
        bound = 1.0 / math.sqrt(fi)
        p[f"theta.layers.{l}.weight"] = rng.uniform(-bound, bound, (fo, fi))
        p[f"theta.layers.{l}.bias"] = rng.uniform(-bound, bound, (fo,))
    H, F, G = cfg.hidden, 3, 2 * cfg.n_linear
    b = 1.0 / math.sqrt(H)
    p["phi.lstm.weight_ih"] = rng.uniform(-b, b, (4 * H, F))
    p["phi.lstm.weight_hh"] = rng.uniform(-b, b, (4 * H, H))
    p["phi.lstm.bias_ih"] = rng.uniform(-b, b, (4 * H,))
    p["phi.lstm.bias_hh"] = rng.uniform(-b, b, (4 * H,))
    p["phi.head.weight"] = np.zeros((G, H))
    s = (lr_init - cfg.lr_min) / (cfg.lr_max - cfg.lr_min)
    p["phi.head.bias"] = np.full((G,), math.log(s / (1 - s)))
    return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}


def sample_sinusoid(rng, b, k, q):
    """amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]; y = A sin(x - phase)."""
    amp = rng.uniform(0.1, 5.0, (b, 1, 1))
    ph = rng.uniform(0.0, math.pi, (b, 1, 1))
    sx = rng.uniform(-5, 5, (b, k, 1))
    qx = rng.uniform(-5, 5, (b, q, 1))
    f = lambda x: amp * np.sin(x - ph)
    return tuple(jnp.asarray(a, jnp.float32) for a in (sx, f(sx), qx, f(qx)))


def sample_classification(rng, b, ways, shots, query, d_in):
    """Workload-shaped stand-in for N-way K-shot digits (random 8x8 'images', labels ordered)."""
    k, q = ways * shots, ways * query
    sx = rng.uniform(0, 16, (b, k, d_in))
    qx = rng.uniform(0, 16, (b, q, d_in))
    sy = np.tile(np.repeat(np.arange(ways), shots), (b, 1))
    qy = np.tile(np.repeat(np.arange(ways), query), (b, 1))
    return (jnp.asarray(sx, jnp.float32), jnp.asarray(sy, jnp.int32),
            jnp.asarray(qx, jnp.float32), jnp.asarray(qy, jnp.int32))


def make_fns(cfg):
    names = cfg.theta_names()
    act = jax.nn.relu if cfg.activation == "relu" else jnp.tanh
    T = cfg.steps

    def forward(theta, x):
        h = x
        for l in range(cfg.n_linear):
            z = h @ theta[f"theta.layers.{l}.weight"].T + theta[f"theta.layers.{l}.bias"]
            h = act(z) if l < cfg.n_linear - 1 else z
        return h

    def loss(theta, x, y):
        out = forward(theta, x)
        if cfg.loss == "mse":
            return jnp.mean((out - y) ** 2)
        lse = jax.nn.logsumexp(out, axis=-1)
        picked = jnp.take_along_axis(out, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
        return jnp.mean(lse - picked)

    def lstm(phi, x, h, c):
        gates = (phi["phi.lstm.weight_ih"] @ x + phi["phi.lstm.bias_ih"]
                 + phi["phi.lstm.weight_hh"] @ h + phi["phi.lstm.bias_hh"])
        i, f, g, o = jnp.split(gates, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, c

    def task_run(params, sx, sy, qx, qy):
        theta = {n: params[n] for n in names}
        phi = {n: params[n] for n in PHI}
        h = jnp.zeros((cfg.hidden,), jnp.float32)
        c = jnp.zeros((cfg.hidden,), jnp.float32)
        rates = []
        for t in range(T):  # unrolled: T is small and fixed
            l, g = jax.value_and_grad(loss)(theta, sx, sy)
            if cfg.first_order:
                g = jax.lax.stop_gradient(g)
            gnorm = jnp.sqrt(sum(jnp.sum(v * v) for v in g.values()))
            x = jax.lax.stop_gradient(jnp.stack(
                [jnp.log(l + 1e-8), jnp.log(gnorm + 1e-8), jnp.float32(t / T)]))
            h, c = lstm(phi, x, h, c)
            z = phi["phi.head.weight"] @ h + phi["phi.head.bias"]
            a = cfg.lr_min + (cfg.lr_max - cfg.lr_min) * jax.nn.sigmoid(z)
            rates.append(a)
            theta = {n: theta[n] - a[i] * g[n] for i, n in enumerate(names)}
        return loss(theta, qx, qy), jnp.stack(rates)

    def objective(params, batch):
        sx, sy, qx, qy = batch
        losses, rates = jax.vmap(task_run, in_axes=(None, 0, 0, 0, 0))(params, sx, sy, qx, qy)
        return jnp.mean(losses), (losses, rates)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def meta_gradient(params, batch):
        (j, (losses, rates)), grad = grad_fn(params, batch)
        return j, losses, rates, grad

    def meta_step(params, opt, batch, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, clip=10.0):
        (j, _), grad = grad_fn(params, batch)
        keys = [k for k in params if cfg.learn_init or not k.startswith("theta.")]
        norm = jnp.sqrt(sum(jnp.sum(grad[k].astype(jnp.float32) ** 2) for k in keys))
        scale = jnp.where(norm > clip, clip / (norm + 1e-12), 1.0)
        m, v, step = opt
        step = step + 1
        new_p, new_m, new_v = dict(params), dict(m), dict(v)
        for k in keys:
            gk = grad[k] * scale
            new_m[k] = b1 * m[k] + (1 - b1) * gk
            new_v[k] = b2 * v[k] + (1 - b2) * gk * gk
            mhat = new_m[k] / (1 - b1 ** step)
            vhat = new_v[k] / (1 - b2 ** step)
            new_p[k] = params[k] - lr * mhat / (jnp.sqrt(vhat) + eps)
        return new_p, (new_m, new_v, step), j

    return meta_gradient, meta_step


def adam_init(params):
    z = {k: jnp.zeros_like(v) for k, v in params.items()}
    return (z, dict(z), jnp.float32(0))


def shape_flops(cfg, k, q, b):
    """Dense-product FLOPs (2 per multiply-add) of one exact second-order meta-gradient,
    counted from the shapes; elementwise work and the LSTM (< 1%) left out.
    P = sum_l d_l d_{l+1} multiply-adds per point. Per inner step on K support points:
    forward 2KP, backward 4KP (input and weight gradients), exact Hessian-vector product
    (R-forward 4KP, R-backward 8KP) = 18KP; query forward + backward 6QP.
    Per task 18 T K P + 6 Q P (first order: 6 T K P + 6 Q P), times B."""
    P = sum(cfg.layers[i] * cfg.layers[i + 1] for i in range(cfg.n_linear))
    per_step = (6 if cfg.first_order else 18) * k * P
    return b * (cfg.steps * per_step + 6 * q * P)
