"""The JAX peer benchmark of metasched (issue 13 items 1-2).

  python bench.py                      # peer alone, default config: ms per meta-step + XLA FLOPs
  python bench.py --check CKPT TASKS METAGRAD_OUT   # same math as `meta-coord metagrad`?
  python bench.py --check-long CKPT TRAJECTORY [GRAD]   # long peer replays a recorded run
  python bench.py --compare RUST_BIN   # metasched vs peer, interleaved, + GEMM peak

`long` / `long100` are the long-horizon train-mlp meta-step of
deploy/examples/digits-long.toml (metastep_long.py): 8 pre-drawn runs of H = 1000 / 100 steps.

Timing: a fixed pre-sampled batch of B = 25 tasks (or the 8 runs); the jitted meta-step (meta-gradient,
global-norm clip 10, Adam lr 1e-3) is compiled and warmed up first (compile time
excluded), then each repetition is the median of `steps` calls (block_until_ready);
the figure printed is the median over repetitions.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import metastep as ms
import metastep_long as msl

WORKLOADS = {
    # name: (cfg kwargs, kind, k, q, steps per repetition)
    "default": (dict(layers=(1, 40, 40, 1)), "sinusoid", 10, 10, 40),
    "wide": (dict(layers=(1, 256, 256, 1)), "sinusoid", 10, 10, 10),
    "digits": (dict(layers=(64, 128, 128, 5), loss="cross_entropy"), "digits", 25, 50, 10),
}
# The long-horizon train-mlp meta-step (deploy/examples/digits-long.toml, metastep_long.py):
# name: (horizon H, steps per repetition, warm-up steps). One step of `long` is about 1 s.
LONG_WORKLOADS = {
    "long": (1000, 3, 1),
    "long100": (100, 10, 2),
}
B = 25
# Seconds of idle before each measured side (see `compare`).
IDLE_S = float(os.environ.get("PEER_IDLE_S", "1.0"))


def compiled_flops(compiled):
    """XLA's own FLOP count of a compiled computation (NaN where it gives none)."""
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float(ca.get("flops", float("nan"))) if ca else float("nan")


def timer(compiled, state, data):
    """`run(n)`: the median ms of n calls of the compiled meta-step, carrying its state."""

    def run(n):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            p, o, j = compiled(state["params"], state["opt"], data)
            jax.block_until_ready((p, o, j))
            times.append((time.perf_counter() - t) * 1e3)
            state["params"], state["opt"] = p, o
        return statistics.median(times)

    return run


def build_long(name):
    """A long-horizon workload: the pre-drawn runs, the compiled meta-step, its FLOP counts."""
    horizon, steps, warmup = LONG_WORKLOADS[name]
    cfg = msl.LongCfg(horizon=horizon)
    data = msl.sample_runs(cfg)
    phi = msl.init_phi(cfg)
    opt = ms.adam_init(phi)
    t0 = time.perf_counter()
    compiled = jax.jit(msl.make_meta_step(cfg)).lower(phi, opt, data).compile()
    compile_s = time.perf_counter() - t0
    run = timer(compiled, {"params": phi, "opt": opt}, data)
    run(warmup)
    xla, (c1, c2) = msl.xla_flops(cfg, (phi, opt, data), compiled_flops)
    print(f"{name}: XLA counts {c1 / 1e6:.2f} M FLOPs as compiled (loop bodies once), "
          f"{c2 / 1e6:.2f} M with the scan unrolled twice: {xla / 1e6:.1f} M per meta-step",
          flush=True)
    return dict(cfg=cfg, run=run, steps=steps, warmup=warmup, compile_s=compile_s,
                xla_flops=xla,
                shape_flops=msl.shape_flops(cfg, data["val_x"].shape[0]))


def build(name):
    """Config `name`, compiled and warmed up: its timer, FLOP counts and steps per repetition."""
    if name in LONG_WORKLOADS:
        return build_long(name)
    kw, kind, k, q, steps = WORKLOADS[name]
    cfg = ms.Cfg(**kw)
    rng = np.random.default_rng(0)
    if kind == "sinusoid":
        batch = ms.sample_sinusoid(rng, B, k, q)
    else:  # 5-way 5-shot, 10 query points per class
        batch = ms.sample_classification(rng, B, 5, 5, 10, cfg.layers[0])
    params = ms.init_params(cfg)
    _, meta_step = ms.make_fns(cfg)
    opt = ms.adam_init(params)
    t0 = time.perf_counter()
    compiled = jax.jit(meta_step).lower(params, opt, batch).compile()
    compile_s = time.perf_counter() - t0
    run = timer(compiled, {"params": params, "opt": opt}, batch)
    run(10)  # warm-up
    return dict(cfg=cfg, run=run, steps=steps, warmup=3, compile_s=compile_s,
                xla_flops=compiled_flops(compiled), shape_flops=ms.shape_flops(cfg, k, q, B))


def gemm_peak(n=1024, reps=15):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


def run_rust(binary, name, steps, warmup=3):
    """metasched's median ms per meta-step of config `name` (its `peer_step` binary)."""
    out = subprocess.run([binary, name, "--steps", str(steps), "--warmup", str(warmup)],
                         check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("peer_step")][-1]
    return float(line.split("median_ms=")[1].split()[0]), line


def peer_only(reps):
    w = build("default")
    ms_list = [w["run"](w["steps"]) for _ in range(reps)]
    print(f"jax {jax.__version__} devices {jax.devices()}")
    print(f"compile: {w['compile_s']:.1f} s (excluded)")
    print(f"peer default: {statistics.median(ms_list):.3f} ms per meta-step "
          f"(median of {reps} repetitions x {w['steps']} steps: {[round(x, 3) for x in ms_list]})")
    print(f"FLOPs per meta-step: XLA cost_analysis {w['xla_flops']:.4g}, "
          f"from the shapes (dense products) {w['shape_flops']:.4g}")


def compare(binary, reps, names):
    print(f"jax {jax.__version__}; numpy {np.__version__}")
    built = {n: build(n) for n in names}
    res = {n: {"ours": [], "jax": []} for n in names}
    peaks = []
    for r in range(reps):
        time.sleep(IDLE_S)
        peaks.append(gemm_peak())
        for n in names:
            w = built[n]
            # Both cores idle before each side: OpenBLAS's and XLA's worker threads spin for a
            # while after their last call and would steal a core from whichever runs next.
            time.sleep(IDLE_S)
            ours, line = run_rust(binary, n, w["steps"], w["warmup"])
            res[n]["ours"].append(ours)
            time.sleep(IDLE_S)
            res[n]["jax"].append(w["run"](w["steps"]))
            print(f"  rep {r + 1}/{reps} {n}: metasched {ours:.3f} ms, jax {res[n]['jax'][-1]:.3f} ms",
                  flush=True)
    # The peak is the best repetition (each the median of 15 products): on a shared host the
    # median would understate what the machine can do and so flatter the %-of-peak figures.
    peak = max(peaks)
    print(f"\nsgemm 1024^2 (numpy, this venv): peak {peak:.1f} GFLOP/s (best of {reps}; median "
          f"{statistics.median(peaks):.1f}; all {[round(p, 1) for p in peaks]})")
    hdr = ("config", "metasched ms", "JAX ms", "JAX/ours", "FLOPs shapes", "FLOPs XLA",
           "ours GFLOP/s", "JAX GFLOP/s", "ours %peak", "JAX %peak")
    print("| " + " | ".join(hdr) + " |")
    print("|" + " --- |" * len(hdr))
    summary = {}
    for n in names:
        w = built[n]
        o, j = statistics.median(res[n]["ours"]), statistics.median(res[n]["jax"])
        f = w["shape_flops"]
        go, gj = f / o / 1e6, f / j / 1e6
        print(f"| {n} {'-'.join(map(str, w['cfg'].layers))} | {o:.3f} | {j:.3f} | {j / o:.2f} | "
              f"{f / 1e6:.1f} M | {w['xla_flops'] / 1e6:.1f} M | {go:.2f} | {gj:.2f} | "
              f"{100 * go / peak:.1f}% | {100 * gj / peak:.1f}% |")
        summary[n] = dict(ours_ms=res[n]["ours"], jax_ms=res[n]["jax"], shape_flops=f,
                          xla_flops=w["xla_flops"], compile_s=w["compile_s"])
    print("\nGFLOP/s use the shape count (docs/PERFORMANCE.md gives the formula); "
          "JAX/ours > 1 means metasched is faster.")
    print("raw: " + json.dumps({"gemm_gflops": peaks, **summary}))


def check(ckpt, tasks, out, tol):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(ckpt, "np") as f:
        meta = json.loads(f.metadata()["metasched.config"])
    c = ms.Cfg(layers=meta["model"]["layers"], activation=meta["model"]["activation"],
               loss=meta["model"]["loss"], steps=meta["inner"]["steps"],
               hidden=meta["scheduler"]["hidden"], lr_min=meta["scheduler"]["lr_min"],
               lr_max=meta["scheduler"]["lr_max"], first_order=meta["inner"]["first_order"],
               learn_init=meta["inner"]["learn_init"])
    assert meta["scheduler"]["kind"] == "lstm", "the peer implements the lstm scheduler"
    assert meta["inner"].get("optimizer", {"kind": "sgd"})["kind"] == "sgd", "sgd only"
    params = {k: jnp.asarray(v, jnp.float32) for k, v in load_file(ckpt).items()}
    t = load_file(tasks)
    if c.loss == "mse":
        batch = (t["support.x"], t["support.y"], t["query.x"], t["query.y"])
    else:
        batch = (t["support.x"], t["support.labels"].astype(np.int32), t["query.x"],
                 t["query.labels"].astype(np.int32))
    batch = tuple(jnp.asarray(a) for a in batch)
    meta_gradient, _ = ms.make_fns(c)
    j, losses, rates, grad = jax.jit(meta_gradient)(params, batch)
    ref = load_file(out)
    rows = [("J", np.asarray(j), ref["J"]), ("outer_loss", np.asarray(losses), ref["outer_loss"]),
            ("lr", np.asarray(rates), ref["lr"])]
    rows += [(f"grad.{k}", np.asarray(grad[k]), ref[f"grad.{k}"]) for k in sorted(params)]
    worst = 0.0
    for name, ours, theirs in rows:
        ours = np.asarray(ours, np.float64).reshape(theirs.shape)
        theirs = np.asarray(theirs, np.float64)
        rel = np.linalg.norm(ours - theirs) / max(np.linalg.norm(theirs), 1e-30)
        worst = max(worst, rel)
        print(f"  {name:28s} {str(list(theirs.shape)):12s} rel err {rel:.2e}")
    ok = worst < tol
    print(f"check: worst relative error {worst:.2e} (tolerance {tol:g}): {'OK' if ok else 'FAILED'}")
    return ok


def check_long(ckpt, traj, tol, grad=None):
    """The long-horizon peer's run against one metasched recorded (`meta-coord apply
    --record-trajectory`): rates, minibatch losses, final validation loss and, given metasched's
    meta-gradient of the run (`peer_step long-grad`), every phi gradient within `tol`."""
    r = msl.check_trajectory(ckpt, traj, grad)
    print(f"  H = {r['horizon']}: lr rel err {r['lr']:.2e}, train_loss {r['train_loss']:.2e}, "
          f"final val_loss {r['val_loss']:.2e} (peer {r['val'][0]:.6f}, metasched {r['val'][1]:.6f})")
    grads = {k: v for k, v in r.items() if k.startswith("grad.")}
    for k, v in grads.items():
        print(f"  {k:28s} rel err {v:.2e}")
    worst = max([r["lr"], r["train_loss"], r["val_loss"], *grads.values()])
    ok = worst < tol
    print(f"check-long: worst relative error {worst:.2e} (tolerance {tol:g}): {'OK' if ok else 'FAILED'}")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", nargs=3, metavar=("CKPT", "TASKS", "METAGRAD_OUT"))
    ap.add_argument("--check-long", nargs="+", metavar="CKPT TRAJECTORY [GRAD]")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--compare", metavar="RUST_BENCH_BINARY")
    ap.add_argument("--configs", default="default,wide,digits")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    if a.check:
        sys.exit(0 if check(*a.check, a.tol) else 1)
    if a.check_long:
        if len(a.check_long) not in (2, 3):
            ap.error("--check-long takes CKPT TRAJECTORY [GRAD]")
        ckpt, traj, *grad = a.check_long
        sys.exit(0 if check_long(ckpt, traj, a.tol, *grad) else 1)
    if a.compare:
        compare(a.compare, a.reps, a.configs.split(","))
    else:
        peer_only(a.reps)


if __name__ == "__main__":
    main()
