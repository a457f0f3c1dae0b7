"""Shared fixtures: the `meta-coord` binary, checkpoints and task files it writes, and the
PyTorch replay of one inner run with `LearnedLR`.

The binary is `$METASCHED_BIN` (a file, or a directory holding `meta-coord`), else
`target/release/meta-coord` of this repository. A missing binary FAILS the tests (CI builds it
before running them); nothing here skips.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from metasched import load_checkpoint, read_safetensors, write_safetensors
from metasched.torch import LearnedLR, learner_loss, mlp_from_checkpoint, per_tensor_groups

REPO = Path(__file__).resolve().parents[2]

# Worst relative errors seen, by check name, printed at the end of the session.
WORST: dict = {}


def record(name: str, err: float):
    WORST[name] = max(WORST.get(name, 0.0), float(err))


def pytest_terminal_summary(terminalreporter):
    if WORST:
        terminalreporter.write_sep("-", "worst relative errors (PyTorch LearnedLR vs meta-coord)")
        for name in sorted(WORST):
            terminalreporter.write_line(f"{name:60s} {WORST[name]:.3e}")
        terminalreporter.write_line(f"{'OVERALL rates':60s} {max((v for k, v in WORST.items() if 'rate' in k), default=0):.3e}")
        terminalreporter.write_line(f"{'OVERALL losses':60s} {max((v for k, v in WORST.items() if 'loss' in k), default=0):.3e}")


@pytest.fixture(scope="session")
def meta_coord() -> Path:
    env = os.environ.get("METASCHED_BIN")
    if env:
        p = Path(env)
        if p.is_dir():
            p = p / "meta-coord"
    else:
        p = REPO / "target" / "release" / "meta-coord"
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(
            f"meta-coord not found at {p}: build it with `cargo build --release -p metasched-coord "
            "--bin meta-coord` or point METASCHED_BIN at it"
        )
    return p


@pytest.fixture(scope="session")
def run(meta_coord):
    def _run(*args, expect=0):
        r = subprocess.run([str(meta_coord), *map(str, args)], capture_output=True, text=True, timeout=600)
        if expect is not None and r.returncode != expect:
            raise AssertionError(
                f"meta-coord {' '.join(map(str, args))} exited {r.returncode}, expected {expect}\n"
                f"stdout: {r.stdout}\nstderr: {r.stderr}"
            )
        return r

    return _run


@pytest.fixture(scope="session")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metasched")


# ---------------------------------------------------------------------------------------------
# Tasks and learners

TASKS = {
    # name: (sample-tasks args, layers, activation)
    "sinusoid": (["--task", "sinusoid", "--tasks", 4, "--shots", 10, "--query", 10, "--seed", 3], [1, 40, 40, 1], "relu"),
    "digits": (["--task", "digits", "--tasks", 4, "--ways", 5, "--shots", 5, "--query", 5, "--seed", 4], [64, 32, 32, 5], "tanh"),
}

# lr_max per (task, inner optimiser), so that no inner run diverges.
LR_MAX = {
    ("sinusoid", "sgd"): 0.1,
    ("sinusoid", "momentum"): 0.02,
    ("sinusoid", "adam"): 0.05,
    ("digits", "sgd"): 1.0,
    ("digits", "momentum"): 0.3,
    ("digits", "adam"): 0.02,
}


@pytest.fixture(scope="session")
def task_file(run, work):
    cache = {}

    def get(name):
        if name not in cache:
            args, _, _ = TASKS[name]
            out = work / f"tasks-{name}.safetensors"
            run("sample-tasks", *args, "--out", out)
            cache[name] = out
        return cache[name]

    return get


def logit(p):
    return math.log(p / (1 - p))


def rewrite(src: Path, dst: Path, edit_tensors=None, edit_config=None):
    """Copies a checkpoint, editing tensors (dict in place) and/or the config (dict in place)."""
    tensors, meta = read_safetensors(src)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        cfg = json.loads(meta["metasched.config"])
        edit_config(cfg)
        meta["metasched.config"] = json.dumps(cfg)
    write_safetensors(dst, tensors, meta)
    return dst


def randomize_phi(path: Path, seed: int, lr_max: float):
    """Gives phi values far from `init`'s near-constant rates, so that the rates depend on the
    step and on the features (and a wrong feature, order or formula shows)."""
    rng = np.random.default_rng(seed)

    def edit(t):
        if "phi.head.weight" in t:
            t["phi.lstm.weight_ih"] = (t["phi.lstm.weight_ih"] * 2).astype(np.float32)
            t["phi.head.weight"] = rng.normal(0, 1.0, t["phi.head.weight"].shape).astype(np.float32)
            t["phi.head.bias"] = rng.normal(0, 1.0, t["phi.head.bias"].shape).astype(np.float32)
        if "phi.lslr.z" in t:
            t["phi.lslr.z"] = rng.normal(0, 1.5, t["phi.lslr.z"].shape).astype(np.float32)

    return rewrite(path, path, edit_tensors=edit)


@pytest.fixture(scope="session")
def checkpoint(run, work):
    """`checkpoint(task, kind, opt, steps=T)`: `meta-coord init` for that task's learner, then
    phi randomised; `lr_min = lr_max / 10`, `lr_fixed = lr_max / 3`."""
    cache = {}

    def get(task, kind, opt, steps=6):
        key = (task, kind, opt, steps)
        if key not in cache:
            _, layers, act = TASKS[task]
            lr_max = LR_MAX[(task, opt)]
            out = work / f"init-{task}-{kind}-{opt}-{steps}.safetensors"
            run("init", "--out", out, "--layers", ",".join(map(str, layers)), "--activation", act,
                "--loss", "mse" if task == "sinusoid" else "cross_entropy", "--scheduler", kind,
                "--inner-steps", steps, "--lr-min", lr_max / 10, "--lr-max", lr_max,
                "--lr-init", lr_max / 2, "--lr-fixed", lr_max / 3, "--inner-optimizer", opt,
                "--seed", len(cache) + 1, "--force")
            randomize_phi(out, seed=len(cache) + 10, lr_max=lr_max)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def evaluate(run, work):
    """`evaluate(ckpt, tasks)` -> (outer_loss [B], lr [B,T,G]) from `meta-coord eval --out`."""
    counter = [0]

    def get(ckpt, tasks):
        counter[0] += 1
        out = work / f"eval-{counter[0]}.safetensors"
        run("eval", "--checkpoint", ckpt, "--tasks", tasks, "--out", out, "--threads", 1)
        t, _ = read_safetensors(out)
        return t["outer_loss"].astype(np.float64), t["lr"].astype(np.float64)

    return get


def load_tasks(path):
    t, _ = read_safetensors(path)
    out = {}
    for split in ("support", "query"):
        x = torch.from_numpy(t[f"{split}.x"])
        y = torch.from_numpy(t[f"{split}.labels"]) if f"{split}.labels" in t else torch.from_numpy(t[f"{split}.y"])
        out[split] = (x, y)
    return out


def make_optimizer(ck, params, lr=0.0):
    o = ck.optimizer
    if o.kind == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if o.kind == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=o.mu, dampening=0.0)
    return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), eps=o.eps)


def replay(ckpt_path, tasks, b, per_group=True, horizon=None):
    """Runs task `b`'s inner loop in PyTorch with `LearnedLR`: returns (rates [T, G] as the
    scheduler computed them, lrs written into the groups [T, n_groups], query loss after each
    step [T], final query loss)."""
    ck = load_checkpoint(ckpt_path)
    model = mlp_from_checkpoint(ck)
    params = per_tensor_groups(model) if per_group else model.parameters()
    opt = make_optimizer(ck, params)
    sched = LearnedLR(opt, ckpt_path, horizon=horizon)
    loss_fn = learner_loss(ck)
    xs, ys = tasks["support"]
    xq, yq = tasks["query"]
    xs, ys, xq, yq = xs[b], ys[b], xq[b], yq[b]
    rates, lrs, curve = [], [], []
    for _ in range(sched.horizon):
        opt.zero_grad()
        loss = loss_fn(model(xs), ys)
        loss.backward()
        sched.step(loss)
        rates.append(sched.last_rates)
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        with torch.no_grad():
            curve.append(float(loss_fn(model(xq), yq)))
    return np.array(rates), np.array(lrs), np.array(curve), curve[-1]


def rel_err(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-30)))
