#!/usr/bin/env python3
"""Train a small PyTorch MLP on the 8x8 digits with a meta-trained metasched scheduler.

It draws a few-shot classification problem from the digits data (N classes, K training images
per class, the rest of those classes' images as the test set), builds the checkpoint's learner
with its meta-learned initialisation, and trains it in PyTorch for the scheduler's horizon with
`metasched.torch.LearnedLR` setting one learning rate per tensor at every step; then the same
from the same initialisation with the checkpoint's fixed rate (`scheduler.lr_fixed`), for
comparison.

A checkpoint for it (10-way, learner 64-64-64-10, 10 inner steps; ~2 minutes on 2 busy cores):

    target/release/meta-coord train --task digits --ways 10 --shots 5 --query 5 \\
        --layers 64,64,64,10 --lr-max 1.0 --lr-init 0.1 --lr-fixed 0.1 --inner-steps 10 \\
        --steps 500 --eval-every 0 --out runs/digits10
    python python/examples/digits_mlp.py runs/digits10/checkpoint.safetensors

Any `--inner-optimizer` works (the torch optimiser is chosen to match). Checkpoints of the
long-horizon `meta-coord train --task train-mlp` family are the intended input once it exists;
this few-shot checkpoint is the stand-in. The data is the repository's `data/digits.csv.gz`
(the file `meta-coord` embeds: 64 pixels 0..16 then the label, per line); `--data PATH` reads
another copy. The problems are drawn from all 1,797 images, so their test images include some
that `meta-coord train` met during meta-training (its meta-train split is 70% of each class):
the comparison shows the drop-in working, not a held-out benchmark.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch

from metasched import load_checkpoint
from metasched.torch import LearnedLR, learner_loss, mlp_from_checkpoint, optimizer_for, per_tensor_groups

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "digits.csv.gz"


def load_digits(path: Path):
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return rows[:, :64] / 16.0, rows[:, 64].astype(np.int64)


def problem(x, y, ways: int, shots: int, seed: int):
    """`ways` random classes relabelled 0..ways-1; `shots` training images each, the rest test."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(10, size=ways, replace=False)
    tr, te = [], []
    for label, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == c))
        tr += [(i, label) for i in idx[:shots]]
        te += [(i, label) for i in idx[shots:]]

    def tensors(pairs):
        i, l = zip(*pairs)
        return torch.from_numpy(x[list(i)]), torch.tensor(l)

    return classes, tensors(tr), tensors(te)


def train(ckpt, train_set, test_set, horizon, learned: bool, lr_fixed: float, quiet=False):
    model = mlp_from_checkpoint(ckpt)
    opt = optimizer_for(ckpt, per_tensor_groups(model), lr=lr_fixed)
    sched = LearnedLR(opt, ckpt.path, horizon=horizon) if learned else None
    loss_fn = learner_loss(ckpt)
    (xs, ys), (xt, yt) = train_set, test_set
    for t in range(horizon):
        opt.zero_grad()
        loss = loss_fn(model(xs), ys)
        loss.backward()
        if sched is not None:
            sched.step(loss)  # after backward, before opt.step()
        if not quiet:
            lrs = sched.get_last_lr() if sched else [g["lr"] for g in opt.param_groups]
            print(f"  step {t:3d}  train loss {loss.item():.4f}  lr per tensor "
                  + " ".join(f"{v:.4f}" for v in lrs))
        opt.step()
    with torch.no_grad():
        out = model(xt)
        return loss_fn(out, yt).item(), (out.argmax(1) == yt).float().mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a metasched checkpoint whose learner is 64-...-N, cross_entropy")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"digits csv.gz (default {DEFAULT_DATA})")
    ap.add_argument("--shots", type=int, default=5, help="training images per class (default 5)")
    ap.add_argument("--horizon", type=int, default=None, help="training steps (default: the checkpoint's inner.steps)")
    ap.add_argument("--problems", type=int, default=20, help="problems to average over (default 20; the first is printed step by step)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    ck = load_checkpoint(args.checkpoint)
    if ck.layers[0] != 64 or ck.loss != "cross_entropy" or not 2 <= ck.layers[-1] <= 10:
        raise SystemExit(f"{args.checkpoint}: need a 64-...-N cross_entropy learner (N <= 10), got "
                         f"layers {ck.layers}, loss {ck.loss}")
    ways = ck.layers[-1]
    horizon = args.horizon or ck.steps
    x, y = load_digits(args.data)
    print(f"{args.checkpoint}: scheduler {ck.kind}, inner optimiser {ck.optimizer.kind}, layers {ck.layers}, "
          f"horizon {horizon}; {len(y)} images from {args.data}")
    results = {True: [], False: []}
    for p in range(args.problems):
        classes, tr, te = problem(x, y, ways, args.shots, args.seed + p)
        for learned in (True, False):
            if p == 0:
                print(f"{'learned schedule' if learned else f'fixed rate {ck.lr_fixed}'} on classes "
                      f"{classes.tolist()}, {len(tr[1])} training / {len(te[1])} test images:")
            results[learned].append(train(ck, tr, te, horizon, learned, ck.lr_fixed, quiet=p > 0))
    for learned in (True, False):
        r = np.array(results[learned])
        name = "learned schedule" if learned else f"fixed rate {ck.lr_fixed}"
        print(f"{name:>18s}: test loss {r[:, 0].mean():.4f}, test accuracy {100 * r[:, 1].mean():.2f}% "
              f"(mean of {args.problems} problems)")


if __name__ == "__main__":
    main()
