"""LearnedLR in real PyTorch against `meta-coord eval` on recorded task batches: the rates of
every step (1e-6 relative) and the final query loss (1e-4 relative), for every scheduler kind,
inner optimiser and loss; and the query-loss curve over every step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import load_tasks, record, rel_err, replay, rewrite
from metasched import load_checkpoint

RATE_TOL = 1e-6
LOSS_TOL = 1e-4


def check_batch(ckpt, tasks_path, evaluate, label, **kw):
    outer, lr = evaluate(ckpt, tasks_path)
    tasks = load_tasks(tasks_path)
    worst_rate = worst_loss = 0.0
    for b in range(lr.shape[0]):
        rates, lrs, _, final = replay(ckpt, tasks, b, **kw)
        assert rates.shape == lr[b].shape
        # The rates written into the param groups are those computed.
        np.testing.assert_array_equal(lrs, rates)
        worst_rate = max(worst_rate, rel_err(rates, lr[b]))
        worst_loss = max(worst_loss, rel_err(final, outer[b]))
    record(f"rate  {label}", worst_rate)
    record(f"loss  {label}", worst_loss)
    assert worst_rate < RATE_TOL, f"{label}: rates differ by {worst_rate:.3e} relative"
    assert worst_loss < LOSS_TOL, f"{label}: final query loss differs by {worst_loss:.3e} relative"
    return lr


@pytest.mark.parametrize("task", ["sinusoid", "digits"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("kind", ["lstm", "lslr", "fixed"])
def test_rates_and_outer_loss_match_meta_coord(task, opt, kind, checkpoint, task_file, evaluate):
    ckpt = checkpoint(task, kind, opt)
    lr = check_batch(ckpt, task_file(task), evaluate, f"{task}/{kind}/{opt}")
    ck = load_checkpoint(ckpt)
    if kind == "fixed":
        assert np.all(lr == np.float32(ck.lr_fixed))
    else:
        # The randomised phi makes the rates vary across steps and groups (else the test
        # could not tell a wrong step or group order apart).
        assert np.ptp(lr[0]) > 0.1 * (ck.lr_max - ck.lr_min)
    if kind == "lstm":
        # ... and across tasks: the features (loss, gradient norm) matter.
        assert np.max(np.abs(lr[0] - lr[1])) > 1e-4 * ck.lr_max


@pytest.fixture(scope="session")
def trained(run, work):
    """Checkpoints of short `meta-coord train` runs (they also carry `optim.*` tensors)."""
    specs = {
        "sinusoid-lstm-sgd": ["--task", "sinusoid", "--inner-steps", 8, "--steps", 200],
        "sinusoid-lstm-momentum": ["--task", "sinusoid", "--inner-optimizer", "momentum",
                                   "--lr-max", 0.02, "--lr-init", 0.005, "--steps", 100],
        "digits-lstm-adam": ["--task", "digits", "--ways", 5, "--shots", 5, "--query", 5,
                             "--layers", "64,32,32,5", "--activation", "tanh", "--inner-optimizer", "adam",
                             "--lr-max", 0.02, "--lr-init", 0.005, "--steps", 50],
        "digits-lslr-sgd": ["--task", "digits", "--ways", 5, "--shots", 5, "--query", 5,
                            "--layers", "64,32,32,5", "--activation", "tanh", "--scheduler", "lslr",
                            "--lr-max", 1.0, "--lr-init", 0.1, "--steps", 50],
    }
    cache = {}

    def get(name):
        if name not in cache:
            out = work / f"train-{name}"
            run("train", *specs[name], "--out", out, "--eval-every", 0, "--final-eval-tasks", 10,
                "--checkpoint-every", 0, "--log-every", 1000, "--threads", 1)
            cache[name] = out / "checkpoint.safetensors"
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["sinusoid-lstm-sgd", "sinusoid-lstm-momentum", "digits-lstm-adam", "digits-lslr-sgd"])
def test_trained_checkpoints_match_meta_coord(name, trained, task_file, evaluate):
    ckpt = trained(name)
    assert any(k.startswith("optim.") for k in __import__("metasched").read_safetensors(ckpt)[0])
    check_batch(ckpt, task_file(name.split("-")[0]), evaluate, f"trained {name}")


def test_one_param_group_gets_the_mean_rate(checkpoint, task_file, evaluate):
    """With one param group, the rate is the mean of the G rates; at step 0 the features (and
    so the rates) are the same as with per-tensor groups, so it is the mean of meta-coord's."""
    ckpt = checkpoint("sinusoid", "lstm", "sgd")
    _, lr = evaluate(ckpt, task_file("sinusoid"))
    tasks = load_tasks(task_file("sinusoid"))
    rates, lrs, _, _ = replay(ckpt, tasks, 0, per_group=False)
    assert lrs.shape == (rates.shape[0], 1)
    np.testing.assert_allclose(lrs[:, 0], rates.mean(axis=1), rtol=1e-15)
    err = rel_err(lrs[0, 0], lr[0, 0].mean())
    record("rate  one group, step 0 = mean of meta-coord's", err)
    assert err < RATE_TOL


@pytest.mark.parametrize("task", ["sinusoid", "digits"])
def test_sgd_loss_curve_reproduced(task, checkpoint, task_file, evaluate, work):
    """The query loss after every step t = 1..T of the PyTorch run against meta-coord's: for
    each t a checkpoint with `inner.steps = t` whose progress weights (column 2 of weight_ih)
    are scaled by t/T, so that its feature t'/t times the weight equals the T-step run's
    t'/T times the original weight, reproduces the first t steps of the T-step run."""
    T = 10
    ckpt = checkpoint(task, "lstm", "sgd", steps=T)
    tasks_path = task_file(task)
    outer_T, lr_T = evaluate(ckpt, tasks_path)
    curve_ref = np.zeros((lr_T.shape[0], T))
    curve_ref[:, T - 1] = outer_T
    for t in range(1, T):
        def edit_t(tensors, t=t):
            w = tensors["phi.lstm.weight_ih"].astype(np.float64)
            w[:, 2] *= t / T
            tensors["phi.lstm.weight_ih"] = w.astype(np.float32)

        def edit_c(cfg, t=t):
            cfg["inner"]["steps"] = t

        sub = rewrite(ckpt, work / f"curve-{task}-{t}.safetensors", edit_tensors=edit_t, edit_config=edit_c)
        outer_t, lr_t = evaluate(sub, tasks_path)
        # The truncated runs give the T-step run's first t rates (up to the rounding of the
        # rescaled weights).
        assert rel_err(lr_t, lr_T[:, :t]) < 1e-5
        curve_ref[:, t - 1] = outer_t
    tasks = load_tasks(tasks_path)
    worst = 0.0
    for b in range(lr_T.shape[0]):
        _, _, curve, _ = replay(ckpt, tasks, b)
        worst = max(worst, rel_err(curve, curve_ref[b]))
        # The curve moves (a constant one would not test the steps).
        assert np.ptp(curve) > 0.01 * curve[0]
    record(f"loss  query-loss curve {task} sgd (T={T}, every step)", worst)
    assert worst < LOSS_TOL, f"query-loss curve differs by {worst:.3e} relative"


def test_state_dict_resumes_the_same_rates(checkpoint, task_file):
    """Half a run, state_dict, a fresh scheduler + load_state_dict, the other half: the same
    rates as one uninterrupted run."""
    from metasched.torch import LearnedLR, learner_loss, mlp_from_checkpoint, per_tensor_groups

    ckpt = checkpoint("sinusoid", "lstm", "momentum")
    tasks = load_tasks(task_file("sinusoid"))
    full, _, _, _ = replay(ckpt, tasks, 2)

    model = mlp_from_checkpoint(ckpt)
    loss_fn = learner_loss(ckpt)
    xs, ys = tasks["support"][0][2], tasks["support"][1][2]

    def make():
        opt = torch.optim.SGD(per_tensor_groups(model), lr=0.0, momentum=0.9)
        return opt, LearnedLR(opt, ckpt)

    opt, sched = make()
    got = []
    T = sched.horizon
    for t in range(T):
        if t == T // 2:
            state, ostate = sched.state_dict(), opt.state_dict()
            opt, sched = make()
            opt.load_state_dict(ostate)
            sched.load_state_dict(state)
            assert sched.t == T // 2
        opt.zero_grad()
        loss = loss_fn(model(xs), ys)
        loss.backward()
        sched.step(loss)
        got.append(sched.last_rates)
        opt.step()
    np.testing.assert_array_equal(np.array(got), full)


def test_horizon_argument(checkpoint, task_file):
    ckpt = checkpoint("sinusoid", "lstm", "sgd")
    tasks = load_tasks(task_file("sinusoid"))
    ck = load_checkpoint(ckpt)
    with pytest.warns(UserWarning, match="horizon"):
        rates, _, _, _ = replay(ckpt, tasks, 0, horizon=2 * ck.steps)
    assert rates.shape[0] == 2 * ck.steps
    base, _, _, _ = replay(ckpt, tasks, 0)
    # Step 0 has progress 0 either way; later steps see t/(2T) instead of t/T.
    np.testing.assert_array_equal(rates[0], base[0])
    assert not np.allclose(rates[1], base[1], rtol=1e-9, atol=0)
