"""Checkpoints and set-ups LearnedLR cannot honour are refused with a clear error; every bad
file is refused by meta-coord too (exit 2), so both readers agree on what a bad file is."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from conftest import load_tasks, rewrite
from metasched import CheckpointError, load_checkpoint
from metasched.torch import LearnedLR, mlp_from_checkpoint, per_tensor_groups


@pytest.fixture(scope="module")
def good(checkpoint):
    return checkpoint("sinusoid", "lstm", "sgd")


def sgd_for(ckpt):
    return torch.optim.SGD(per_tensor_groups(mlp_from_checkpoint(ckpt)), lr=0.0)


def refused(path, match, run, task_file):
    """LearnedLR and meta-coord both refuse `path`; LearnedLR's message matches `match`."""
    # Build the optimiser from a good learner of the same shape, so that only the file is bad.
    model = torch.nn.Sequential(torch.nn.Linear(1, 40), torch.nn.ReLU(), torch.nn.Linear(40, 40),
                                torch.nn.ReLU(), torch.nn.Linear(40, 1))
    opt = torch.optim.SGD(per_tensor_groups(model), lr=0.0)
    with pytest.raises(CheckpointError, match=match) as e:
        LearnedLR(opt, path)
    assert str(path) in str(e.value)
    r = run("eval", "--checkpoint", path, "--tasks", task_file("sinusoid"), expect=None)
    assert r.returncode == 2, f"meta-coord accepted {path}: {r.stdout} {r.stderr}"
    return e.value


@pytest.mark.parametrize("cut", ["4", "header", "data-1", "half"])
def test_truncated_file(cut, good, work, run, task_file):
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    keep = {"4": 4, "header": 8 + n // 2, "data-1": len(data) - 1, "half": 8 + n + (len(data) - 8 - n) // 2}[cut]
    bad = work / f"truncated-{cut}.safetensors"
    bad.write_bytes(data[:keep])
    refused(bad, "truncated|not a safetensors|not valid JSON", run, task_file)


@pytest.mark.parametrize("name,shape", [("phi.head.weight", (7, 20)), ("phi.lstm.weight_ih", (80, 4)),
                                        ("theta.layers.1.weight", (40, 41))])
def test_wrong_shape(name, shape, good, work, run, task_file):
    def edit(t):
        t[name] = np.zeros(shape, np.float32)

    bad = rewrite(good, work / f"shape-{name}.safetensors", edit_tensors=edit)
    refused(bad, re.escape(f"tensor {name} has shape {list(shape)}, the config implies"), run, task_file)


@pytest.mark.parametrize("name", ["phi.lstm.bias_hh", "phi.head.bias", "theta.layers.2.bias"])
def test_missing_tensor(name, good, work, run, task_file):
    bad = rewrite(good, work / f"missing-{name}.safetensors", edit_tensors=lambda t: t.pop(name))
    refused(bad, f"missing tensor {name}", run, task_file)


def test_unknown_tensor(good, work, run, task_file):
    def edit(t):
        t["theta.layers.3.weight"] = np.zeros((1, 1), np.float32)

    bad = rewrite(good, work / "unknown-tensor.safetensors", edit_tensors=edit)
    refused(bad, "unknown tensor theta.layers.3.weight", run, task_file)


def test_wrong_dtype(good, work, run, task_file):
    def edit(t):
        t["phi.head.bias"] = t["phi.head.bias"].astype(np.float64)

    bad = rewrite(good, work / "dtype.safetensors", edit_tensors=edit)
    refused(bad, "phi.head.bias is float64, not float32", run, task_file)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_phi(value, good, work, run, task_file):
    def edit(t):
        w = t["phi.lstm.weight_hh"].copy()
        w[3, 5] = value
        t["phi.lstm.weight_hh"] = w

    bad = rewrite(good, work / f"nonfinite-{value}.safetensors", edit_tensors=edit)
    refused(bad, "phi.lstm.weight_hh holds a non-finite value", run, task_file)


@pytest.mark.parametrize("field,value,match", [
    (("scheduler", "kind"), "transformer", "unknown scheduler.kind 'transformer'"),
    (("inner", "optimizer"), {"kind": "rmsprop"}, "unknown inner.optimizer.kind 'rmsprop'"),
    (("model", "activation"), "gelu", "unknown model.activation"),
    (("model", "layers"), [1, 40, 1], "unknown tensor|shape"),
    (("scheduler", "hidden"), 21, "shape"),
])
def test_bad_config(field, value, match, good, work, run, task_file):
    def edit(cfg):
        cfg[field[0]][field[1]] = value

    bad = rewrite(good, work / f"config-{field[1]}.safetensors", edit_config=edit)
    refused(bad, match, run, task_file)


def test_missing_config(good, work, run, task_file):
    from metasched import read_safetensors, write_safetensors

    t, meta = read_safetensors(good)
    meta.pop("metasched.config")
    bad = work / "no-config.safetensors"
    write_safetensors(bad, t, meta)
    refused(bad, "no metasched.config", run, task_file)


def test_unknown_config_keys_are_ignored(good, work, run, task_file, evaluate):
    """Spec §5: a reader ignores keys it does not know; both readers give the same rates."""

    def edit(cfg):
        cfg["future_section"] = {"x": 1}
        cfg["scheduler"]["future_field"] = [1, 2]

    ok = rewrite(good, work / "extra-keys.safetensors", edit_config=edit)
    _, lr_ok = evaluate(ok, task_file("sinusoid"))
    _, lr_good = evaluate(good, task_file("sinusoid"))
    np.testing.assert_array_equal(lr_ok, lr_good)
    LearnedLR(sgd_for(ok), ok)


def test_group_count_mismatch(good):
    model = mlp_from_checkpoint(good)
    ps = list(model.parameters())
    # 3 groups for the checkpoint's 6.
    opt = torch.optim.SGD([{"params": ps[0:2]}, {"params": ps[2:4]}, {"params": ps[4:6]}], lr=0.0)
    with pytest.raises(ValueError, match="3 param groups; the checkpoint .* has 6 groups"):
        LearnedLR(opt, good)
    # 6 groups, but not one tensor each in order.
    opt = torch.optim.SGD([{"params": [p]} for p in reversed(ps)], lr=0.0)
    with pytest.raises(ValueError, match="param group 0 \\(layers.0.weight\\) has shape"):
        LearnedLR(opt, good)
    # A learner of other widths.
    other = torch.nn.Sequential(torch.nn.Linear(1, 30), torch.nn.ReLU(), torch.nn.Linear(30, 30),
                                torch.nn.ReLU(), torch.nn.Linear(30, 1))
    with pytest.raises(ValueError, match="has shape \\[30, 1\\]"):
        LearnedLR(torch.optim.SGD(per_tensor_groups(other), lr=0.0), good)
    with pytest.raises(ValueError, match="single param group holds tensors of shapes"):
        LearnedLR(torch.optim.SGD(other.parameters(), lr=0.0), good)
    # One group with the right tensors is accepted.
    LearnedLR(torch.optim.SGD(model.parameters(), lr=0.0), good)


def test_inner_optimizer_mismatch(checkpoint):
    adam_ck = checkpoint("sinusoid", "lstm", "adam")
    mom_ck = checkpoint("sinusoid", "lstm", "momentum")
    sgd_ck = checkpoint("sinusoid", "lstm", "sgd")

    def groups(c):
        return per_tensor_groups(mlp_from_checkpoint(c))

    cases = [
        (adam_ck, lambda: torch.optim.SGD(groups(adam_ck), lr=0.0), "inner optimiser is adam"),
        (adam_ck, lambda: torch.optim.Adam(groups(adam_ck), lr=0.0, betas=(0.8, 0.999)), "betas=\\(0.8"),
        (adam_ck, lambda: torch.optim.Adam(groups(adam_ck), lr=0.0, amsgrad=True), "amsgrad"),
        (adam_ck, lambda: torch.optim.AdamW(groups(adam_ck), lr=0.0), "weight_decay=0.01"),
        (sgd_ck, lambda: torch.optim.Adam(groups(sgd_ck), lr=0.0), "inner optimiser is sgd"),
        (sgd_ck, lambda: torch.optim.SGD(groups(sgd_ck), lr=0.0, momentum=0.9), "momentum=0.9"),
        (mom_ck, lambda: torch.optim.SGD(groups(mom_ck), lr=0.0), "with mu=0.9"),
        (mom_ck, lambda: torch.optim.SGD(groups(mom_ck), lr=0.0, momentum=0.9, nesterov=True), "nesterov"),
        (mom_ck, lambda: torch.optim.SGD(groups(mom_ck), lr=0.0, momentum=0.9, dampening=0.1), "dampening"),
    ]
    for ck, make, match in cases:
        with pytest.raises(ValueError, match=match):
            LearnedLR(make(), ck)
        with pytest.warns(UserWarning, match=match):
            LearnedLR(make(), ck, strict=False)
    # The matching optimisers are accepted without a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LearnedLR(torch.optim.Adam(groups(adam_ck), lr=0.0), adam_ck)
        LearnedLR(torch.optim.AdamW(groups(adam_ck), lr=0.0, weight_decay=0.0), adam_ck)
        LearnedLR(torch.optim.SGD(groups(mom_ck), lr=0.0, momentum=0.9), mom_ck)
        LearnedLR(torch.optim.SGD(groups(sgd_ck), lr=0.0), sgd_ck)


def test_lslr_horizon_and_past_the_end(checkpoint, task_file):
    ck = checkpoint("sinusoid", "lslr", "sgd")
    T = load_checkpoint(ck).steps
    with pytest.raises(ValueError, match="lslr scheduler has a rate table of inner.steps = 6 rows"):
        LearnedLR(sgd_for(ck), ck, horizon=T + 1)
    sched = LearnedLR(sgd_for(ck), ck)
    for _ in range(T):
        sched.step()
    with pytest.raises(RuntimeError, match="past the lslr scheduler's horizon"):
        sched.step()
    sched.reset()
    sched.step()


def test_lstm_needs_loss_and_gradients(good, task_file):
    model = mlp_from_checkpoint(good)
    opt = torch.optim.SGD(per_tensor_groups(model), lr=0.0)
    sched = LearnedLR(opt, good)
    with pytest.raises(RuntimeError, match="has no .grad: call scheduler.step\\(loss\\) after loss.backward"):
        sched.step(torch.tensor(1.0))
    with pytest.raises(TypeError, match="needs the loss"):
        sched.step()
    x, y = (a[0] for a in load_tasks(task_file("sinusoid"))["support"])
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    with pytest.raises(ValueError, match="not finite"):
        sched.step(float("nan"))
    sched.step(loss)
    assert sched.t == 1 and len(sched.get_last_lr()) == 6


def test_state_dict_of_another_checkpoint_refused(checkpoint):
    a = checkpoint("sinusoid", "lstm", "sgd")
    b = checkpoint("sinusoid", "lstm", "sgd", steps=10)
    sa = LearnedLR(sgd_for(a), a)
    sb = LearnedLR(sgd_for(b), b)
    with pytest.raises(ValueError, match="phi_sha256|horizon"):
        sb.load_state_dict(sa.state_dict())


def test_not_an_optimizer(good):
    with pytest.raises(TypeError):
        LearnedLR(mlp_from_checkpoint(good), good)
    with pytest.raises(CheckpointError, match="cannot read"):
        LearnedLR(sgd_for(good), good.parent / "does-not-exist.safetensors")


@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_optimizer_for_matches_the_checkpoint(opt, checkpoint):
    from metasched.torch import optimizer_for

    ck = checkpoint("digits", "lstm", opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LearnedLR(optimizer_for(ck, per_tensor_groups(mlp_from_checkpoint(ck))), ck)
