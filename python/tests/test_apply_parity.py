"""LearnedLR in a real PyTorch training run against `meta-coord apply` on a long train-mlp run
(spec §7.2): `apply --record-trajectory` writes the learned scheduler's run on a held-out Test
run of the digits dataset (theta_0, the run's splits, every step's minibatch indices, rates
and minibatch loss, the validation curve); PyTorch then trains the same MLP from that theta_0
on those minibatches with the torch optimiser + LearnedLR, and must give the same rates at
every step (1e-6 relative) and the same minibatch losses and validation-loss curve (1e-4
relative) over all H = 100 steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import randomize_phi, record, rel_err
from metasched import load_checkpoint, read_safetensors
from metasched.torch import LearnedLR, learner_loss, mlp_from_checkpoint, optimizer_for, per_tensor_groups

H = 100
RATE_TOL = 1e-6
LOSS_TOL = 1e-4

# Per inner optimiser: the rate bound (high enough that the run moves a lot in 100 steps) and
# the loss tolerance.
SETTINGS = {
    "sgd": {"lr_max": 1.0, "loss_tol": LOSS_TOL},
    "adam": {"lr_max": 0.02, "loss_tol": LOSS_TOL},
}


@pytest.fixture(scope="session")
def applied(run, work):
    """`applied(opt)` -> (checkpoint, trajectory file): a short `meta-coord train --task
    train-mlp --dataset digits` checkpoint for H = 100 (phi then randomised, so that the rates
    move with the step and the features), applied with `--record-trajectory` on Test run 0,
    the validation loss measured after every step."""
    cache = {}

    def get(opt):
        if opt not in cache:
            lr_max = SETTINGS[opt]["lr_max"]
            out = work / f"apply-parity-{opt}"
            run("train", "--task", "train-mlp", "--dataset", "digits", "--inner-steps", H, "--window", 20,
                "--steps", 3, "--meta-batch", 2, "--inner-optimizer", opt, "--lr-max", lr_max,
                "--lr-init", lr_max / 3, "--seed", 7, "--out", out, "--eval-every", 0,
                "--final-eval-tasks", 2, "--checkpoint-every", 0, "--log-every", 1000, "--threads", 1)
            ckpt = randomize_phi(out / "checkpoint.safetensors", seed=21, lr_max=lr_max)
            traj = out / "trajectory.safetensors"
            run("apply", "--checkpoint", ckpt, "--seeds", 2, "--tune-seeds", 1, "--curve-every", 1,
                "--record-trajectory", traj, "--record-run", 1, "--threads", 1, "--out", out / "apply")
            cache[opt] = (ckpt, traj)
        return cache[opt]

    return get


def replay_apply(ckpt_path, traj_path):
    """The recorded run in PyTorch: returns (rates [H, G], lrs written into the groups [H, G],
    minibatch loss [H], validation loss after every step [H], loss on the whole training split
    at theta_H), and the trajectory's tensors and description."""
    t, meta = read_safetensors(traj_path)
    about = json.loads(meta["metasched.trajectory"])
    ck = load_checkpoint(ckpt_path)
    assert about["layers"] == ck.layers and about["horizon"] == ck.steps == H
    model = mlp_from_checkpoint(ck, load_theta=False)
    with torch.no_grad():
        for p, name in zip(model.parameters(), ck.group_names()):
            p.copy_(torch.from_numpy(t["theta." + name]))
    opt = optimizer_for(ck, per_tensor_groups(model))
    sched = LearnedLR(opt, ck)
    loss_fn = learner_loss(ck)
    target = "labels" if ck.loss == "cross_entropy" else "y"
    x, y = torch.from_numpy(t["train.x"]), torch.from_numpy(t[f"train.{target}"])
    xv, yv = torch.from_numpy(t["val.x"]), torch.from_numpy(t[f"val.{target}"])
    idx = torch.from_numpy(t["batch.indices"])
    assert idx.shape == (H, about["batch_size"])
    rates, lrs, train_loss, val_loss = [], [], [], []
    for step in range(H):
        b = idx[step]
        opt.zero_grad()
        loss = loss_fn(model(x[b]), y[b])
        loss.backward()
        sched.step(loss)
        rates.append(sched.last_rates)
        lrs.append([g["lr"] for g in opt.param_groups])
        train_loss.append(float(loss.detach()))
        opt.step()
        with torch.no_grad():
            val_loss.append(float(loss_fn(model(xv), yv)))
    with torch.no_grad():
        final_train = float(loss_fn(model(x), y))
    return (np.array(rates), np.array(lrs), np.array(train_loss), np.array(val_loss), final_train), t, about


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_pytorch_run_reproduces_apply(opt, applied):
    ckpt, traj = applied(opt)
    (rates, lrs, train_loss, val_loss, final_train), t, about = replay_apply(ckpt, traj)
    ck = load_checkpoint(ckpt)
    assert about["run"] == 1 and about["stream"] == "test" and about["inner_optimizer"]["kind"] == opt
    lr_ref = t["lr"].astype(np.float64)
    assert rates.shape == lr_ref.shape == (H, ck.groups)
    # The rates written into the param groups are those computed.
    np.testing.assert_array_equal(lrs, rates)
    # The rates move with the step and differ between groups (else a wrong order could pass).
    assert np.ptp(lr_ref) > 0.1 * (ck.lr_max - ck.lr_min)
    assert np.max(np.abs(lr_ref[0] - lr_ref[H // 2])) > 1e-3 * ck.lr_max
    # Every step's validation loss was recorded (--curve-every 1), and the run learns.
    np.testing.assert_array_equal(t["val_step"], np.arange(1, H + 1))
    val_ref = t["val_loss"].astype(np.float64)
    assert val_ref[-1] < 0.7 * val_ref[0]

    label = f"apply digits {opt} (H={H})"
    errs = {
        f"rate  {label}, every step": rel_err(rates, lr_ref),
        f"loss  {label}, minibatch loss every step": rel_err(train_loss, t["train_loss"]),
        f"loss  {label}, validation curve every step": rel_err(val_loss, val_ref),
        f"loss  {label}, final training-split loss": rel_err(final_train, t["final_train_loss"]),
    }
    for name, err in errs.items():
        record(name, err)
    tol = SETTINGS[opt]["loss_tol"]
    for name, err in errs.items():
        assert err < (RATE_TOL if name.startswith("rate") else tol), f"{name}: {err:.3e} relative"


def test_recorded_run_follows_spec_7_1(applied):
    """The recorded theta_0 and minibatches are spec §7.1's for the run seed ρ, computed here
    from the spec's text (tests/spec_runs.py), so the PyTorch replay above trains on the run
    the spec defines and not merely on what the Rust wrote. ρ itself is checked too."""
    from spec_runs import Stream, batch_indices, init_theta

    ckpt, traj = applied("sgd")
    t, meta = read_safetensors(traj)
    about = json.loads(meta["metasched.trajectory"])
    rho = int(about["run_seed"])
    assert rho == Stream(about["seed"], [0x747261696E2D6D6C, 2, about["run"]]).next()
    ck = load_checkpoint(ckpt)
    for name, want in zip(ck.group_names(), init_theta(rho, ck.layers)):
        np.testing.assert_array_equal(t["theta." + name], want, err_msg=name)
    n, b = about["n_train"], about["batch_size"]
    assert t["train.x"].shape[0] == n and n * 2 < H * b  # the run goes through several epochs
    idx = t["batch.indices"]
    for step in range(H):
        assert idx[step].tolist() == batch_indices(rho, n, b, step), f"minibatch {step}"
