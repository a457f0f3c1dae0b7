#!/usr/bin/env bash
# The JAX peer of metasched's default meta-step (benches/peer/README.md).
#   bash benches/peer/run.sh            # ms per meta-step (compile excluded) + XLA FLOPs
#   bash benches/peer/run.sh --check    # same math as `meta-coord metagrad` (rel. err < 1e-4),
#                                       # and the long peer replays a recorded run
# Creates a throwaway virtualenv under target/peer-venv (jax[cpu], safetensors, numpy from
# PyPI) on first use. Not part of CI.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/target/peer-venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import jax, safetensors, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "jax[cpu]" safetensors numpy
fi
py="$venv/bin/python"
cd "$root/benches/peer"
if [ "${1:-}" = "--check" ]; then
    shift
    (cd "$root" && cargo build --release --quiet -p metasched-coord --bin meta-coord)
    mc="$root/target/release/meta-coord"
    dir="$root/target/peer-check"
    rm -rf "$dir" && mkdir -p "$dir"
    status=0
    # The default shape (two seeds) and a cross-entropy / tanh / first-order variant.
    for spec in "default 0 --layers 1,40,40,1" "default 7 --layers 1,40,40,1" \
                "tanh-first-order 3 --layers 1,32,1 --activation tanh --first-order"; do
        set -- $spec
        name="$1-seed$2"; seed="$2"; shift 2
        "$mc" init --out "$dir/$name.ckpt" --seed "$seed" "$@" >/dev/null
        "$mc" sample-tasks --task sinusoid --tasks 25 --shots 10 --query 10 --seed "$seed" \
            --out "$dir/$name.tasks" >/dev/null
        "$mc" metagrad --checkpoint "$dir/$name.ckpt" --tasks "$dir/$name.tasks" \
            --out "$dir/$name.out" >/dev/null
        echo "$name:"
        "$py" bench.py --check "$dir/$name.ckpt" "$dir/$name.tasks" "$dir/$name.out" || status=1
    done
    # The long-horizon peer (metastep_long.py) replays a run metasched recorded: one train
    # step of deploy/examples/digits-long.toml (a scheduler that reads its features), then
    # `apply --record-trajectory` of Test run 0 (H = 1000), and metasched's meta-gradient of
    # that run (`peer_step long-grad`) against the peer's jax.grad.
    "$mc" train --config "$root/deploy/examples/digits-long.toml" --steps 1 --eval-every 0 \
        --final-eval-tasks 2 --out "$dir/long" >/dev/null
    "$mc" apply --checkpoint "$dir/long/checkpoint.safetensors" --seeds 1 --tune-seeds 1 \
        --curve-every 1000 --record-trajectory "$dir/long.traj" --out "$dir/long" >/dev/null
    bin="$(bash "$root/benches/peer/peer_step_bin.sh" "$root" "$py")"
    "$bin" long-grad --checkpoint "$dir/long/checkpoint.safetensors" --grad-out "$dir/long.grad" >/dev/null
    echo "digits-long:"
    "$py" bench.py --check-long "$dir/long/checkpoint.safetensors" "$dir/long.traj" "$dir/long.grad" \
        || status=1
    exit $status
fi
exec "$py" bench.py "$@"
