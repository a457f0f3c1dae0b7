"""Reading and checking metasched checkpoints (docs/SPEC.md §5) with numpy only.

A checkpoint is one safetensors file: an 8-byte little-endian header length, a JSON header
(tensor name -> dtype, shape, byte offsets, plus ``__metadata__``), then the raw data. The
format is small enough to parse here with ``json`` + ``struct`` + ``numpy``, which keeps the
package's dependencies to torch and numpy and lets every defect be reported as one
:class:`CheckpointError` naming the file and the tensor or field at fault.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

CONFIG_KEY = "metasched.config"
FEATURES = 3
KINDS = ("lstm", "lslr", "fixed")
ACTIVATIONS = ("relu", "tanh")
LOSSES = ("mse", "cross_entropy")
INNER_OPTIMIZERS = ("sgd", "momentum", "adam")

_DTYPES = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
}
_HEADER_MAX = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint (or tensor file) that cannot be used, with the reason."""


# --------------------------------------------------------------------------------------------
# safetensors


def read_safetensors(path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Reads a safetensors file: ``({name: array}, metadata)``. Every structural defect
    (truncated file, bad header, offsets outside the data, size not matching the shape) raises
    :class:`CheckpointError`."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (truncated: {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _HEADER_MAX or 8 + n > len(data):
        raise CheckpointError(
            f"{path}: not a safetensors file or truncated (header of {n} bytes, file of {len(data)})"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: safetensors header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    body = memoryview(data)[8 + n :]
    tensors = {}
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = [int(s) for s in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name}: bad header entry {info!r}") from None
        if any(s < 0 for s in shape) or not 0 <= start <= end:
            raise CheckpointError(f"{path}: tensor {name}: bad shape or offsets {info!r}")
        if end > len(body):
            raise CheckpointError(
                f"{path}: truncated: tensor {name} ends at byte {end} of the data, "
                f"which holds {len(body)}"
            )
        count = math.prod(shape)
        if end - start != count * dtype.itemsize:
            raise CheckpointError(
                f"{path}: tensor {name}: {end - start} bytes for shape {shape} of {info['dtype']}"
            )
        tensors[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape).copy()
    return tensors, dict(meta)


def write_safetensors(path, tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None):
    """Writes ``tensors`` (numpy arrays, little-endian float32/float64/int64...) and string
    ``metadata`` as a safetensors file (tensors in name order, as metasched writes them)."""
    rev = {v: k for k, v in _DTYPES.items()}
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        key = rev.get(a.dtype)
        if key is None:
            raise ValueError(f"tensor {name}: dtype {a.dtype} has no safetensors name here")
        b = a.tobytes()
        header[name] = {"dtype": key, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# checkpoints


@dataclass
class InnerOptimizer:
    """The inner optimiser of spec §3.1: ``kind`` sgd | momentum | adam and its constants."""

    kind: str = "sgd"
    mu: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass
class Checkpoint:
    """A checked checkpoint: its configuration and its float32 ``theta.*``/``phi.*`` tensors."""

    path: str
    config: dict
    layers: List[int]
    activation: str
    loss: str
    steps: int
    kind: str
    hidden: Optional[int]
    lr_min: float
    lr_max: float
    lr_fixed: float
    optimizer: InnerOptimizer
    tensors: Dict[str, np.ndarray] = field(repr=False)

    @property
    def groups(self) -> int:
        """Number of parameter groups ``G = 2L``."""
        return 2 * (len(self.layers) - 1)

    def group_names(self) -> List[str]:
        """``layers.0.weight, layers.0.bias, ...``: the groups in order."""
        return [f"layers.{l}.{w}" for l in range(len(self.layers) - 1) for w in ("weight", "bias")]

    def group_shapes(self) -> List[Tuple[int, ...]]:
        """Shapes of the learner tensors, in group order."""
        out = []
        for l in range(len(self.layers) - 1):
            out.append((self.layers[l + 1], self.layers[l]))
            out.append((self.layers[l + 1],))
        return out

    def theta(self) -> List[np.ndarray]:
        """The learner tensors ``theta.layers.*``, in group order."""
        return [self.tensors["theta." + n] for n in self.group_names()]


def _field(path, cfg, section, key, kind, default=None, required=True):
    sec = cfg.get(section)
    if not isinstance(sec, dict):
        raise CheckpointError(f"{path}: {CONFIG_KEY}: missing or non-object section {section!r}")
    if key not in sec:
        if required:
            raise CheckpointError(f"{path}: {CONFIG_KEY}: missing field {section}.{key}")
        return default
    v = sec[key]
    ok = {
        "int": isinstance(v, int) and not isinstance(v, bool),
        "num": isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "str": isinstance(v, str),
        "bool": isinstance(v, bool),
    }[kind]
    if not ok:
        raise CheckpointError(f"{path}: {CONFIG_KEY}: field {section}.{key} = {v!r} is not a {kind}")
    return v


def _parse_optimizer(path, cfg) -> InnerOptimizer:
    raw = cfg.get("inner", {}).get("optimizer")
    if raw is None:
        return InnerOptimizer("sgd")
    if isinstance(raw, str):
        raw = {"kind": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("kind"), str):
        raise CheckpointError(f"{path}: {CONFIG_KEY}: inner.optimizer {raw!r} has no kind")
    kind = raw["kind"]
    if kind not in INNER_OPTIMIZERS:
        raise CheckpointError(
            f"{path}: {CONFIG_KEY}: unknown inner.optimizer.kind {kind!r} (known: {', '.join(INNER_OPTIMIZERS)})"
        )
    opt = InnerOptimizer(kind)
    names = {"momentum": ("mu",), "adam": ("beta1", "beta2", "eps")}.get(kind, ())
    for n in names:
        v = raw.get(n, getattr(opt, n))
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise CheckpointError(f"{path}: {CONFIG_KEY}: inner.optimizer.{n} = {v!r} is not a number")
        setattr(opt, n, float(v))
    return opt


def load_checkpoint(path) -> Checkpoint:
    """Reads and checks a checkpoint (spec §5). Raises :class:`CheckpointError` for an
    unreadable or truncated file, a missing or invalid ``metasched.config``, an unknown
    scheduler kind, activation, loss or inner optimiser, a ``theta.*``/``phi.*`` tensor that is
    missing, unknown, not float32, of the wrong shape, or holding NaN/Inf. Keys of the config
    unknown to this reader are ignored, as are tensors outside ``theta.*``/``phi.*`` (outer
    optimiser state ``optim.*`` and the like)."""
    path = os.fspath(path)
    raw, meta = read_safetensors(path)
    text = meta.get(CONFIG_KEY)
    if text is None:
        raise CheckpointError(f"{path}: no {CONFIG_KEY} in the safetensors __metadata__")
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: {CONFIG_KEY} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: {CONFIG_KEY} is not a JSON object")

    model = cfg.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: {CONFIG_KEY}: missing or non-object section 'model'")
    layers = model.get("layers")
    if (
        not isinstance(layers, list)
        or len(layers) < 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in layers)
    ):
        raise CheckpointError(f"{path}: {CONFIG_KEY}: model.layers = {layers!r} is not a list of >= 2 positive ints")
    activation = _field(path, cfg, "model", "activation", "str")
    if activation not in ACTIVATIONS:
        raise CheckpointError(f"{path}: {CONFIG_KEY}: unknown model.activation {activation!r}")
    loss = _field(path, cfg, "model", "loss", "str")
    if loss not in LOSSES:
        raise CheckpointError(f"{path}: {CONFIG_KEY}: unknown model.loss {loss!r}")
    steps = _field(path, cfg, "inner", "steps", "int")
    if steps < 1:
        raise CheckpointError(f"{path}: {CONFIG_KEY}: inner.steps = {steps} must be >= 1")
    kind = _field(path, cfg, "scheduler", "kind", "str")
    if kind not in KINDS:
        raise CheckpointError(
            f"{path}: {CONFIG_KEY}: unknown scheduler.kind {kind!r} (known: {', '.join(KINDS)})"
        )
    lr_min = float(_field(path, cfg, "scheduler", "lr_min", "num", 0.0, required=False))
    lr_max = float(_field(path, cfg, "scheduler", "lr_max", "num", 0.1, required=False))
    lr_fixed = float(_field(path, cfg, "scheduler", "lr_fixed", "num", 0.01, required=kind == "fixed"))
    hidden = _field(path, cfg, "scheduler", "hidden", "int", None, required=kind == "lstm")
    if kind in ("lstm", "lslr") and not (0.0 <= lr_min < lr_max):
        raise CheckpointError(f"{path}: {CONFIG_KEY}: need 0 <= lr_min < lr_max, got {lr_min}, {lr_max}")
    if hidden is not None and hidden < 1:
        raise CheckpointError(f"{path}: {CONFIG_KEY}: scheduler.hidden = {hidden} must be >= 1")
    optimizer = _parse_optimizer(path, cfg)

    n_layers = len(layers) - 1
    g = 2 * n_layers
    expected: Dict[str, Tuple[int, ...]] = {}
    for l in range(n_layers):
        expected[f"theta.layers.{l}.weight"] = (layers[l + 1], layers[l])
        expected[f"theta.layers.{l}.bias"] = (layers[l + 1],)
    required = set(expected)
    lstm_names = {
        "phi.lstm.weight_ih": lambda h: (4 * h, FEATURES),
        "phi.lstm.weight_hh": lambda h: (4 * h, h),
        "phi.lstm.bias_ih": lambda h: (4 * h,),
        "phi.lstm.bias_hh": lambda h: (4 * h,),
        "phi.head.weight": lambda h: (g, h),
        "phi.head.bias": lambda h: (g,),
    }
    if kind == "lstm":
        for n, f in lstm_names.items():
            expected[n] = f(hidden)
            required.add(n)
    elif hidden is not None and hidden >= 1:
        # phi of another kind may be carried along unused; check it against the config anyway.
        for n, f in lstm_names.items():
            expected[n] = f(hidden)
    expected["phi.lslr.z"] = (steps, g)
    if kind == "lslr":
        required.add("phi.lslr.z")

    tensors: Dict[str, np.ndarray] = {}
    for name in sorted(required - set(raw)):
        raise CheckpointError(f"{path}: missing tensor {name} (scheduler kind {kind}, layers {layers})")
    for name, a in raw.items():
        if not (name.startswith("theta.") or name.startswith("phi.")):
            continue
        if name not in expected:
            raise CheckpointError(f"{path}: unknown tensor {name} for layers {layers}, scheduler kind {kind}")
        if a.dtype != np.dtype("<f4"):
            raise CheckpointError(f"{path}: tensor {name} is {a.dtype}, not float32")
        if tuple(a.shape) != expected[name]:
            raise CheckpointError(
                f"{path}: tensor {name} has shape {list(a.shape)}, the config implies {list(expected[name])}"
            )
        if not np.all(np.isfinite(a)):
            bad = int(np.flatnonzero(~np.isfinite(a.ravel()))[0])
            raise CheckpointError(f"{path}: tensor {name} holds a non-finite value ({a.ravel()[bad]} at flat index {bad})")
        tensors[name] = a
    return Checkpoint(
        path=path,
        config=cfg,
        layers=list(layers),
        activation=activation,
        loss=loss,
        steps=steps,
        kind=kind,
        hidden=hidden,
        lr_min=lr_min,
        lr_max=lr_max,
        lr_fixed=lr_fixed,
        optimizer=optimizer,
        tensors=tensors,
    )
