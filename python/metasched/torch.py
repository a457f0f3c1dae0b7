"""metasched's learned learning-rate schedulers as a PyTorch learning-rate scheduler.

Typical use (the learner and its optimiser as the checkpoint was meta-trained for)::

    import torch
    from metasched.torch import LearnedLR, mlp_from_checkpoint, per_tensor_groups, learner_loss

    model = mlp_from_checkpoint("checkpoint.safetensors")            # theta_0 loaded
    opt = torch.optim.SGD(per_tensor_groups(model), lr=0.0)           # one group per tensor
    # (or optimizer_for("checkpoint.safetensors", per_tensor_groups(model)) for momentum/adam)
    sched = LearnedLR(opt, "checkpoint.safetensors")
    loss_fn = learner_loss("checkpoint.safetensors")
    for t in range(sched.horizon):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        sched.step(loss)      # AFTER backward, BEFORE opt.step(): sets this step's rates
        opt.step()

The order differs from most PyTorch schedulers on purpose: the rate ``a_t`` of spec §3 is
computed from the loss and gradient at ``theta_t``, the parameters the optimiser is about to
update, so the scheduler must see them before ``optimizer.step()`` moves them.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint

__all__ = [
    "LearnedLR",
    "CheckpointError",
    "load_checkpoint",
    "mlp_from_checkpoint",
    "per_tensor_groups",
    "learner_loss",
    "optimizer_for",
]

_EPS = 1e-8

try:  # the protocol's base class (torch >= 2.0); only for isinstance checks by frameworks
    _Base = torch.optim.lr_scheduler.LRScheduler
except AttributeError:  # pragma: no cover - older torch
    _Base = torch.optim.lr_scheduler._LRScheduler


def _as_checkpoint(c: Union[str, os.PathLike, Checkpoint]) -> Checkpoint:
    return c if isinstance(c, Checkpoint) else load_checkpoint(c)


def mlp_from_checkpoint(checkpoint, dtype: torch.dtype = torch.float32, load_theta: bool = True) -> nn.Sequential:
    """The learner of spec §2 as ``nn.Sequential(Linear, act, Linear, act, ..., Linear)``.

    Its ``parameters()`` come in the checkpoint's group order (``layers.0.weight,
    layers.0.bias, layers.1.weight, ...``). With ``load_theta`` (the default) they hold the
    checkpoint's ``theta`` (the meta-learned initialisation); otherwise PyTorch's default
    initialisation."""
    ck = _as_checkpoint(checkpoint)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[ck.activation]
    mods: List[nn.Module] = []
    n = len(ck.layers) - 1
    for l in range(n):
        mods.append(nn.Linear(ck.layers[l], ck.layers[l + 1], dtype=dtype))
        if l + 1 < n:
            mods.append(act())
    model = nn.Sequential(*mods)
    if load_theta:
        with torch.no_grad():
            for p, a in zip(model.parameters(), ck.theta()):
                p.copy_(torch.from_numpy(a).to(dtype))
    return model


def per_tensor_groups(model: nn.Module, **options) -> List[dict]:
    """One optimiser param group per parameter tensor, in ``model.parameters()`` order
    (``torch.optim.SGD(per_tensor_groups(model), lr=0.0)``): the layout in which
    :class:`LearnedLR` sets one learned rate per tensor."""
    return [dict(params=[p], **options) for p in model.parameters()]


def learner_loss(checkpoint):
    """The checkpoint's learner loss (spec §2): ``F.mse_loss`` (mean over every output entry)
    or ``F.cross_entropy`` (mean over points; integer labels)."""
    ck = _as_checkpoint(checkpoint)
    return {"mse": F.mse_loss, "cross_entropy": F.cross_entropy}[ck.loss]


def optimizer_for(checkpoint, params, lr: float = 0.0) -> torch.optim.Optimizer:
    """The torch optimiser doing the checkpoint's inner optimiser (spec §3.1): ``SGD`` for
    ``sgd``, ``SGD(momentum=mu, dampening=0)`` for ``momentum``, ``Adam(betas, eps)`` for
    ``adam``. ``lr`` is only the initial value: :class:`LearnedLR` sets it at every step."""
    o = _as_checkpoint(checkpoint).optimizer
    if o.kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if o.kind == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=o.mu, dampening=0.0)
    return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), eps=o.eps)


def _optimizer_problems(optimizer: torch.optim.Optimizer, ck: Checkpoint) -> List[str]:
    """Ways in which ``optimizer`` does not do the checkpoint's inner optimiser (spec §3.1)."""
    want = ck.optimizer
    name = type(optimizer).__name__
    problems: List[str] = []

    def close(a, b):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)

    if want.kind in ("sgd", "momentum"):
        if not isinstance(optimizer, torch.optim.SGD):
            return [f"the checkpoint's inner optimiser is {want.kind} (torch.optim.SGD), the optimizer is {name}"]
        mu = 0.0 if want.kind == "sgd" else want.mu
        for i, g in enumerate(optimizer.param_groups):
            if not close(g.get("momentum", 0.0), mu):
                problems.append(f"param group {i}: momentum={g.get('momentum')}, the checkpoint's inner optimiser "
                                f"is {want.kind}" + (f" with mu={mu}" if want.kind == "momentum" else " (momentum=0)"))
            if want.kind == "momentum" and g.get("dampening", 0.0) != 0:
                problems.append(f"param group {i}: dampening={g['dampening']}, spec §3.1 momentum has dampening 0")
            if want.kind == "momentum" and g.get("nesterov", False):
                problems.append(f"param group {i}: nesterov=True, spec §3.1 momentum is heavy ball")
            if g.get("weight_decay", 0) != 0:
                problems.append(f"param group {i}: weight_decay={g['weight_decay']}, the checkpoint has none")
            if g.get("maximize", False):
                problems.append(f"param group {i}: maximize=True")
    elif want.kind == "adam":
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            return [f"the checkpoint's inner optimiser is adam (torch.optim.Adam), the optimizer is {name}"]
        for i, g in enumerate(optimizer.param_groups):
            b1, b2 = g.get("betas", (None, None))
            if not (close(b1, want.beta1) and close(b2, want.beta2)):
                problems.append(f"param group {i}: betas=({b1}, {b2}), the checkpoint's adam has "
                                f"({want.beta1}, {want.beta2})")
            if not close(g.get("eps"), want.eps):
                problems.append(f"param group {i}: eps={g.get('eps')}, the checkpoint's adam has {want.eps}")
            if g.get("weight_decay", 0) != 0:
                problems.append(f"param group {i}: weight_decay={g['weight_decay']}, the checkpoint has none")
            if g.get("amsgrad", False):
                problems.append(f"param group {i}: amsgrad=True, spec §3.1 adam has no amsgrad")
            if g.get("maximize", False):
                problems.append(f"param group {i}: maximize=True")
    return problems


class LearnedLR(_Base):
    """A meta-trained metasched scheduler setting the learning rates of a PyTorch optimiser.

    ``LearnedLR(optimizer, checkpoint_path, horizon=None, strict=True)`` reads the checkpoint
    (spec §5; :class:`~metasched.checkpoint.CheckpointError` for a bad file), loads phi into a
    ``torch.nn.LSTMCell(3, H)`` and a ``torch.nn.Linear(H, G)`` (float64; the rates it computes
    are those of the float32 engine to ~1e-7 relative) and at every ``step(loss)`` computes
    spec §3's rates ``a_t = lr_min + (lr_max - lr_min) * sigmoid(z_t)`` from the features
    ``[ln(loss + 1e-8), ln(||g||_2 + 1e-8), t / horizon]``, ``g`` being the ``.grad`` of every
    parameter of the optimiser concatenated, and writes them into the param groups' ``lr``.

    **Call order.** ``loss.backward()``, then ``scheduler.step(loss)``, then
    ``optimizer.step()``: the rate of step ``t`` is computed from the loss and gradient at the
    parameters that step updates. ``loss`` is the training loss at those parameters (a tensor
    or a float); kinds ``lslr`` and ``fixed`` do not read it (``step()`` is enough).

    **Param groups.** The checkpoint has ``G = 2L`` groups, one per learner tensor in the
    order ``layers.0.weight, layers.0.bias, layers.1.weight, ...``. The optimiser must have
    either ``G`` param groups, each holding exactly the one tensor of that group (see
    :func:`per_tensor_groups`), which then get one rate each; or **one** param group holding
    the ``G`` tensors in that order, which then gets the **arithmetic mean of the G rates**
    (the features are the same in both layouts: loss and whole-gradient norm). Any other
    layout, or a tensor whose shape differs from the checkpoint's ``model.layers``, is refused
    with ``ValueError``: the scheduler was trained on that learner.

    **Inner optimiser.** The checkpoint's ``inner.optimizer`` (spec §3.1) must be what the
    torch optimiser does: ``sgd`` = ``torch.optim.SGD`` with ``momentum=0``; ``momentum`` =
    ``SGD(momentum=mu, dampening=0, nesterov=False)``; ``adam`` = ``torch.optim.Adam`` (or
    ``AdamW`` with ``weight_decay=0``) with the checkpoint's betas and eps, no amsgrad; no
    weight decay anywhere. A mismatch raises ``ValueError`` (``strict=False``: a warning
    instead, and the rates are still those the scheduler was trained to give).

    **Horizon.** ``horizon`` (default: the checkpoint's ``inner.steps``, the ``T`` it was
    trained with) is the length of the run; the progress feature is ``t / horizon``. An
    ``lstm`` scheduler given a horizon other than ``inner.steps`` warns (``UserWarning``) and
    stretches its progress feature over the new horizon, which it was not trained for; an
    ``lslr`` one refuses it (its table has ``inner.steps`` rows). Stepping past the horizon
    raises ``RuntimeError`` for ``lslr`` and warns once for ``lstm`` (progress > 1).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, checkpoint_path, horizon: Optional[int] = None,
                 strict: bool = True):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer")
        ck = _as_checkpoint(checkpoint_path)
        self.checkpoint = ck
        self.optimizer = optimizer
        self.kind = ck.kind
        self.lr_min, self.lr_max, self.lr_fixed = ck.lr_min, ck.lr_max, ck.lr_fixed
        self._fingerprint = self._fingerprint_of(ck)

        # Horizon.
        if horizon is None:
            horizon = ck.steps
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon must be a positive int, got {horizon!r}")
        if horizon != ck.steps:
            if ck.kind == "lslr":
                raise ValueError(
                    f"{ck.path}: an lslr scheduler has a rate table of inner.steps = {ck.steps} rows; "
                    f"it cannot run a horizon of {horizon} steps"
                )
            if ck.kind == "lstm":
                warnings.warn(
                    f"{ck.path}: the scheduler was trained for inner.steps = {ck.steps}, used with "
                    f"horizon = {horizon}: its progress feature t/horizon is stretched accordingly",
                    UserWarning,
                    stacklevel=2,
                )
        self.horizon = horizon

        # Param groups against the checkpoint's learner.
        shapes = ck.group_shapes()
        groups = optimizer.param_groups
        g = ck.groups
        names = ck.group_names()
        if len(groups) == g:
            for k, grp in enumerate(groups):
                ps = grp["params"]
                if len(ps) != 1:
                    raise ValueError(
                        f"param group {k} holds {len(ps)} tensors; with {g} param groups each must hold "
                        f"exactly one learner tensor (group {k} = {names[k]})"
                    )
                if tuple(ps[0].shape) != shapes[k]:
                    raise ValueError(
                        f"param group {k} ({names[k]}) has shape {list(ps[0].shape)}, "
                        f"the checkpoint's learner {ck.layers} has {list(shapes[k])}"
                    )
            self.per_group = True
        elif len(groups) == 1:
            got = [tuple(p.shape) for p in groups[0]["params"]]
            if got != shapes:
                raise ValueError(
                    f"the optimizer's single param group holds tensors of shapes {[list(s) for s in got]}, "
                    f"the checkpoint's learner {ck.layers} has {[list(s) for s in shapes]} (in that order)"
                )
            self.per_group = False
        else:
            raise ValueError(
                f"the optimizer has {len(groups)} param groups; the checkpoint (layers {ck.layers}) has "
                f"{g} groups: pass {g} groups (one per tensor, per_tensor_groups(model)) or 1 group"
            )
        self._params = [p for grp in groups for p in grp["params"]]

        problems = _optimizer_problems(optimizer, ck)
        if problems:
            msg = f"{ck.path}: the optimizer does not match the checkpoint's inner optimiser: " + "; ".join(problems)
            if strict:
                raise ValueError(msg + " (strict=False makes this a warning)")
            warnings.warn(msg, UserWarning, stacklevel=2)

        # phi.
        self.cell: Optional[nn.LSTMCell] = None
        self.head: Optional[nn.Linear] = None
        self.table: Optional[torch.Tensor] = None
        t = ck.tensors
        if ck.kind == "lstm":
            h = ck.hidden
            self.cell = nn.LSTMCell(3, h, dtype=torch.float64)
            self.head = nn.Linear(h, g, dtype=torch.float64)
            with torch.no_grad():
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(self.cell, name).copy_(torch.from_numpy(t["phi.lstm." + name]).double())
                self.head.weight.copy_(torch.from_numpy(t["phi.head.weight"]).double())
                self.head.bias.copy_(torch.from_numpy(t["phi.head.bias"]).double())
            for p in list(self.cell.parameters()) + list(self.head.parameters()):
                p.requires_grad_(False)
        elif ck.kind == "lslr":
            self.table = torch.from_numpy(t["phi.lslr.z"]).double()

        self.base_lrs = [float(grp["lr"]) for grp in groups]
        self._last_lr = list(self.base_lrs)
        self.last_rates: Optional[List[float]] = None
        self.features: List[List[float]] = []
        self.reset()

    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _fingerprint_of(ck: Checkpoint) -> str:
        h = hashlib.sha256()
        h.update(ck.kind.encode())
        for name in sorted(ck.tensors):
            if name.startswith("phi."):
                h.update(name.encode())
                h.update(np.ascontiguousarray(ck.tensors[name]).tobytes())
        return h.hexdigest()

    def reset(self):
        """Starts a new run: step 0, LSTM state zero (the optimiser's own state is the
        caller's; spec §3.1 starts it at zero too)."""
        self.t = 0
        self.last_epoch = 0
        self._warned_past = False
        if self.cell is not None:
            self.h = torch.zeros(1, self.cell.hidden_size, dtype=torch.float64)
            self.c = torch.zeros(1, self.cell.hidden_size, dtype=torch.float64)
        else:
            self.h = self.c = None
        self.features = []

    def _gradient_norm(self) -> float:
        sq = torch.zeros((), dtype=torch.float64)
        for i, p in enumerate(self._params):
            if p.grad is None:
                raise RuntimeError(
                    f"parameter {i} (shape {list(p.shape)}) has no .grad: call scheduler.step(loss) "
                    "after loss.backward() and before optimizer.step()"
                )
            sq = sq + p.grad.detach().double().pow(2).sum()
        return math.sqrt(float(sq))

    def _rates(self, loss) -> List[float]:
        t = self.t
        if self.kind == "fixed":
            return [self.lr_fixed] * self.checkpoint.groups
        if self.kind == "lslr":
            if t >= self.table.shape[0]:
                raise RuntimeError(
                    f"step {t} is past the lslr scheduler's horizon of {self.table.shape[0]} steps "
                    "(call reset() to start a new run)"
                )
            z = self.table[t]
        else:
            if loss is None:
                raise TypeError("an lstm LearnedLR needs the loss: scheduler.step(loss) after loss.backward()")
            lv = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            norm = self._gradient_norm()
            if not (math.isfinite(lv) and lv + _EPS > 0):
                raise ValueError(f"step {t}: the loss {lv} is not finite and non-negative")
            if not math.isfinite(norm):
                raise ValueError(f"step {t}: the gradient norm is {norm}")
            if t >= self.horizon and not self._warned_past:
                warnings.warn(
                    f"step {t} is past the horizon of {self.horizon} steps: the progress feature exceeds 1",
                    UserWarning,
                    stacklevel=3,
                )
                self._warned_past = True
            x = [math.log(lv + _EPS), math.log(norm + _EPS), t / self.horizon]
            self.features.append(x)
            with torch.no_grad():
                self.h, self.c = self.cell(torch.tensor([x], dtype=torch.float64), (self.h, self.c))
                z = self.head(self.h)[0]
        s = torch.sigmoid(z)
        return [float(v) for v in (self.lr_min + (self.lr_max - self.lr_min) * s)]

    def step(self, loss=None, epoch=None):
        """Computes the rates of the current step and writes them into the optimiser's param
        groups. Call after ``loss.backward()`` and before ``optimizer.step()``."""
        if epoch is not None:
            raise TypeError("LearnedLR.step takes the loss, not an epoch")
        rates = self._rates(loss)
        self.last_rates = rates
        lrs = rates if self.per_group else [sum(rates) / len(rates)]
        for grp, lr in zip(self.optimizer.param_groups, lrs):
            if isinstance(grp["lr"], torch.Tensor):
                grp["lr"].fill_(lr)
            else:
                grp["lr"] = lr
        self._last_lr = list(lrs)
        self.t += 1
        self.last_epoch = self.t

    def get_last_lr(self) -> List[float]:
        """The rates last written into the param groups (before the first ``step``, their
        initial values)."""
        return list(self._last_lr)

    def get_lr(self) -> List[float]:
        return self.get_last_lr()

    def state_dict(self) -> dict:
        """Step counter, LSTM state, horizon, last rates and a fingerprint of phi (a state is
        only loaded into a scheduler made from the same checkpoint)."""
        return {
            "t": self.t,
            "horizon": self.horizon,
            "kind": self.kind,
            "phi_sha256": self._fingerprint,
            "h": None if self.h is None else self.h.clone(),
            "c": None if self.c is None else self.c.clone(),
            "last_lr": list(self._last_lr),
            "last_rates": None if self.last_rates is None else list(self.last_rates),
            "features": [list(x) for x in self.features],
        }

    def load_state_dict(self, state: dict):
        """Restores :meth:`state_dict`; ``ValueError`` if it comes from another checkpoint,
        kind or horizon."""
        for key, mine in (("kind", self.kind), ("phi_sha256", self._fingerprint), ("horizon", self.horizon)):
            if state.get(key) != mine:
                raise ValueError(f"state_dict {key} = {state.get(key)!r} does not match this scheduler's {mine!r}")
        self.t = int(state["t"])
        self.last_epoch = self.t
        self.h = None if state["h"] is None else state["h"].clone().to(torch.float64)
        self.c = None if state["c"] is None else state["c"].clone().to(torch.float64)
        self._last_lr = list(state["last_lr"])
        self.last_rates = None if state["last_rates"] is None else list(state["last_rates"])
        self.features = [list(x) for x in state.get("features", [])]
        self._warned_past = self.t > self.horizon
