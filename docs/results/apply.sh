#!/usr/bin/env bash
# "Applying a learned schedule" (docs/RESULTS.md): trains two digits checkpoints (H = 1000,
# exact full-unroll meta-gradient with --remat, N = 8 runs per meta-step, 400 meta-steps;
# inner sgd and adam) into runs/apply/digits-OPT, then runs `meta-coord apply` against tuned
# baselines on the training setting and on the generalisation settings into
# runs/apply/NAME/. Skips what is already there. Usage (from the repository root):
#   bash docs/results/apply.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${META_COORD:-target/release/meta-coord}
[ -n "${META_COORD:-}" ] || cargo build --release --locked -q -p metasched-coord --bin meta-coord
mkdir -p runs/apply
for opt in sgd adam; do
  if [ "$opt" = sgd ]; then rates="--lr-max 1.0 --lr-init 0.3"; else rates="--lr-max 0.1 --lr-init 0.008"; fi
  dir=runs/apply/digits-$opt
  [ -f "$dir/eval.json" ] && continue
  # shellcheck disable=SC2086
  $bin train --task train-mlp --dataset digits --inner-steps 1000 --window 1000 --estimator full --remat \
    --meta-batch 8 --steps 400 --meta-lr 0.01 --inner-optimizer $opt $rates \
    --eval-every 100 --eval-tasks 20 --final-eval-tasks 100 --seed 0 --out "$dir" < /dev/null
done
# name | checkpoint | apply flags
while IFS='|' read -r name ckpt flags; do
  out=runs/apply/$name
  [ -f "$out/apply.json" ] && continue
  echo "== meta-coord apply --checkpoint runs/apply/$ckpt/checkpoint.safetensors $flags --out $out"
  # shellcheck disable=SC2086
  $bin apply --checkpoint "runs/apply/$ckpt/checkpoint.safetensors" $flags --out "$out" | tee "$out.txt"
done <<'LIST'
sgd-H1000|digits-sgd|--seeds 30
adam-H1000|digits-adam|--seeds 30
sgd-H2000|digits-sgd|--inner-steps 2000
sgd-H10000|digits-sgd|--inner-steps 10000
adam-H2000|digits-adam|--inner-steps 2000
adam-H10000|digits-adam|--inner-steps 10000
sgd-wide|digits-sgd|--layers 64,128,10
sgd-deep|digits-sgd|--layers 64,32,32,32,10
adam-wide|digits-adam|--layers 64,128,10
adam-deep|digits-adam|--layers 64,32,32,32,10
sgd-sinusoid|digits-sgd|--dataset sinusoid --layers 1,32,1
adam-sinusoid|digits-adam|--dataset sinusoid --layers 1,32,1
LIST
python3 docs/results/apply_tables.py
