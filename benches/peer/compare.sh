#!/usr/bin/env bash
# metasched vs its JAX peer, side by side, in one run (docs/PERFORMANCE.md, "JAX peer").
#   bash benches/peer/compare.sh [--reps 5] [--configs default,wide,digits]
# Builds the `peer_step` bench binary (cargo bench --no-run), compiles the peer's meta-steps,
# then for each repetition measures a numpy sgemm 1024^2 (the machine's f32 GEMM peak) and,
# per config, metasched then JAX (each the median of N steps after warm-up). Prints medians
# over repetitions, the ratio, FLOPs per meta-step (shapes vs XLA) and GFLOP/s vs the peak.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bash "$root/benches/peer/run.sh" --help >/dev/null   # creates the venv if needed
bin="$(bash "$root/benches/peer/peer_step_bin.sh" "$root" "$root/target/peer-venv/bin/python")"
[ -x "$bin" ] || { echo "could not build the peer_step bench" >&2; exit 1; }
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%FT%TZ)"
cd "$root/benches/peer"
exec "$root/target/peer-venv/bin/python" bench.py --compare "$bin" "$@"
