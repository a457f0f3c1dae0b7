#!/usr/bin/env bash
# Runs every experiment of experiments.txt for seeds 0 1 2 into runs/results/ID-sSEED,
# skipping finished runs and resuming interrupted ones; then writes docs/RESULTS.md tables
# with aggregate.py. Usage (from the repository root): bash docs/results/run.sh [ID-PATTERN]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked -q -p metasched-coord
bin=${META_COORD:-target/release/meta-coord}
pattern=${1:-}
grep -v '^#' docs/results/experiments.txt | while IFS='|' read -r id table label flags; do
  id=$(echo "$id" | xargs)
  [ -n "$id" ] || continue
  if [ -n "$pattern" ] && [[ "$id" != $pattern ]]; then continue; fi
  for seed in 0 1 2; do
    dir=runs/results/$id-s$seed
    if [ -f "$dir/eval.json" ]; then continue; fi
    if [ -f "$dir/checkpoint.safetensors" ]; then
      echo "== resume $dir"
      $bin train --resume "$dir" < /dev/null
    else
      echo "== $dir: meta-coord train $flags --seed $seed --out $dir"
      # shellcheck disable=SC2086
      $bin train $flags --seed "$seed" --workers 1 --out "$dir" < /dev/null
    fi
  done
done
python3 docs/results/aggregate.py
bash docs/results/apply.sh
