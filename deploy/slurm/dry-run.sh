#!/usr/bin/env bash
# Dry run of metasched.sbatch's control flow on a machine WITHOUT Slurm: stub `srun`,
# `scontrol`, `squeue` and `scancel` run everything locally, and stub `meta-coord` /
# `meta-worker` record their command lines and react to signals the way the real ones are
# specified to (meta-coord: first SIGTERM -> checkpoint, exit 130; finishing -> tells the
# workers to stop). Nothing is submitted and no real binary runs.
#
#   bash deploy/slurm/dry-run.sh        (check.sh runs it)
#
# Scenarios: a new run (token creation, --config/--out, worker count, device, stop);
# a requeued run (--resume, no --config); the time-limit path (SIGUSR1 to the batch shell ->
# exactly one SIGTERM to the coordinator -> exit 130 -> `scontrol requeue`); SIGTERM to the
# batch shell (not forwarded a second time); a worker that never leaves (ended after the grace).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="${SBATCH_SCRIPT:-$here/metasched.sbatch}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

stubs="$work/stubs"
bin="$work/bin"
mkdir -p "$stubs" "$bin"

# ----------------------------------------------------------------------------- stubs
cat > "$stubs/scontrol" <<'EOF'
#!/usr/bin/env bash
case "$1" in
  show) printf 'node01\nnode02\n' ;;                       # show hostnames node[01-02]
  requeue) echo "$2" >> "$STUB_DIR/requeued" ;;
  *) exit 1 ;;
esac
EOF
cat > "$stubs/squeue" <<'EOF'
#!/usr/bin/env bash
echo "$SLURM_JOB_ID.0 metasched-coord"
echo "$SLURM_JOB_ID.1 metasched-workers"
EOF
cat > "$stubs/scancel" <<'EOF'
#!/usr/bin/env bash
# scancel --signal=TERM JOB.STEP: deliver to the step's task (here: the stub coordinator).
sig="${1#--signal=}"
echo "scancel $*" >> "$STUB_DIR/scancel.log"
kill -"$sig" "$(cat "$STUB_DIR/task.metasched-coord.0")"
EOF
cat > "$stubs/srun" <<'EOF'
#!/usr/bin/env bash
# Runs the step's tasks locally; forwards SIGTERM to them like srun does.
name=step nodes=1 ntasks="" per_node=""
while [[ $# -gt 0 && "$1" == -* ]]; do
  case "$1" in
    --job-name=*) name="${1#*=}" ;;
    --nodes=*) nodes="${1#*=}" ;;
    --ntasks=*) ntasks="${1#*=}" ;;
    --ntasks-per-node=*) per_node="${1#*=}" ;;
  esac
  echo "$1" >> "$STUB_DIR/srun.$name.opts"
  shift
done
echo "SLURM_GPUS_PER_NODE=${SLURM_GPUS_PER_NODE-unset}" >> "$STUB_DIR/srun.$name.opts"
count="${ntasks:-$((nodes * ${per_node:-1}))}"
pids=()
for ((i = 0; i < count; i++)); do
  SLURM_PROCID=$i "$@" &
  pids+=($!)
  echo "$!" > "$STUB_DIR/task.$name.$i"
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM
rc=0
for p in "${pids[@]}"; do
  while :; do
    if wait "$p"; then break; else r=$?; fi
    if kill -0 "$p" 2>/dev/null; then continue; fi
    [[ $r -gt $rc ]] && rc=$r
    break
  done
done
exit "$rc"
EOF
cat > "$bin/meta-coord" <<'EOF'
#!/usr/bin/env bash
# Stub coordinator: trains for STUB_COORD_TICKS x 0.1 s; first SIGTERM -> save, exit 130.
printf '%s\n' "$@" > "$STUB_DIR/coord.args"
dir=""
prev=""
for a in "$@"; do
  if [[ "$prev" == --out || "$prev" == --resume ]]; then dir="$a"; fi
  prev="$a"
done
terms=0
trap 'terms=$((terms + 1)); echo TERM >> "$STUB_DIR/coord.signals"' TERM
for ((i = 0; i < ${STUB_COORD_TICKS:-20}; i++)); do
  sleep 0.1
  if [[ $terms -gt 0 ]]; then
    sleep 0.3   # finish the step; a second SIGTERM arriving now would be recorded
    mkdir -p "$dir" && : > "$dir/checkpoint.safetensors"
    exit 130
  fi
done
mkdir -p "$dir" && : > "$dir/checkpoint.safetensors"
: > "$STUB_DIR/stop"   # the real coordinator tells its workers to stop
exit 0
EOF
cat > "$bin/meta-worker" <<'EOF'
#!/usr/bin/env bash
# Stub worker: serves until the coordinator says stop (or SIGTERM); STUB_WORKER_STUCK=1
# ignores the stop message, like a worker retrying to reach a coordinator that is gone.
printf '%s\n' "$*" >> "$STUB_DIR/worker.args"
trap 'exit 0' TERM
while :; do
  if [[ -e "$STUB_DIR/stop" && "${STUB_WORKER_STUCK:-0}" != 1 ]]; then exit 0; fi
  sleep 0.1
done
EOF
chmod +x "$stubs"/* "$bin"/*

# ----------------------------------------------------------------------------- helpers
failures=0
pass() { echo "  ok: $*"; }
fail() { echo "  FAIL: $*"; failures=$((failures + 1)); }
check() { local what="$1"; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# Fresh submit directory and stub state; runs the script in the background; sets $job_pid.
start_job() {
  submit="$work/submit-$1"
  export STUB_DIR="$work/state-$1"
  rm -rf "$STUB_DIR"
  mkdir -p "$submit" "$STUB_DIR" "$submit/deploy/examples"
  cp "$here/../examples/sinusoid.toml" "$submit/deploy/examples/"
  if [[ "${2:-}" == resume ]]; then
    mkdir -p "$submit/runs/sinusoid-slurm"
    : > "$submit/runs/sinusoid-slurm/checkpoint.safetensors"
  fi
  (
    cd "$submit"
    exec env PATH="$stubs:$PATH" SLURM_JOB_ID=4242 SLURM_JOB_NUM_NODES=2 SLURM_NTASKS_PER_NODE=2 \
      SLURM_CPUS_PER_TASK=3 SLURM_JOB_NODELIST='node[01-02]' SLURM_SUBMIT_DIR="$submit" \
      SLURM_GPUS_PER_NODE=2 METASCHED_BIN_DIR="$bin" METASCHED_WORKER_GRACE_S=1 \
      bash "$script" > "$STUB_DIR/job.out" 2>&1
  ) &
  job_pid=$!
}
finish_job() { job_rc=0; wait "$job_pid" || job_rc=$?; }
wait_for() { local i; for ((i = 0; i < 50; i++)); do [[ -e "$1" ]] && return 0; sleep 0.1; done; return 1; }
has_line() { grep -qxF -- "$2" "$1"; }
# The bash running the batch script (what Slurm's --signal=B: reaches): the subshell of
# start_job execs env, which execs bash, so it is $job_pid itself.
batch_shell() { echo "$job_pid"; }

# ----------------------------------------------------------------------------- scenarios
echo "scenario 1: new run"
STUB_COORD_TICKS=10 start_job new
finish_job
tok="$submit/.metasched-token"
check "script exits 0" test "$job_rc" -eq 0
check "token file created" test -s "$tok"
check "token mode 600" test "$(stat -c %a "$tok")" = 600
check "token is 64 hex digits, no newline" grep -qxE '[0-9a-f]{64}' <(cat "$tok"; echo)
check "token has no trailing newline" test "$(wc -l < "$tok")" -eq 0
check "coordinator: train --config --out" bash -c "head -5 '$STUB_DIR/coord.args' | tr '\n' ' ' | grep -q '^train --config $submit/deploy/examples/sinusoid.toml --out $submit/runs/sinusoid-slurm '"
check "coordinator: --listen 0.0.0.0:PORT" has_line "$STUB_DIR/coord.args" "0.0.0.0:$((20000 + 4242 % 20000))"
check "coordinator: --expect-workers 4" grep -qx -- '--expect-workers' "$STUB_DIR/coord.args"
check "coordinator: expects 4 workers" bash -c "grep -A1 -x -- '--expect-workers' '$STUB_DIR/coord.args' | tail -1 | grep -qx 4"
check "coordinator: --token-file" has_line "$STUB_DIR/coord.args" "$tok"
check "coordinator step: --overlap --gres=none on node01" bash -c "grep -qx -- --overlap '$STUB_DIR/srun.metasched-coord.opts' && grep -qx -- --gres=none '$STUB_DIR/srun.metasched-coord.opts' && grep -qx -- --nodelist=node01 '$STUB_DIR/srun.metasched-coord.opts'"
check "4 workers started" test "$(wc -l < "$STUB_DIR/worker.args")" -eq 4
check "worker command line" has_line "$STUB_DIR/worker.args" "--coord node01:$((20000 + 4242 % 20000)) --device cuda:0 --threads 3 --token-file $tok --give-up-after 900"
check "worker step: --gpus-per-task=1, 2 per node" bash -c "grep -qx -- --gpus-per-task=1 '$STUB_DIR/srun.metasched-workers.opts' && grep -qx -- --ntasks-per-node=2 '$STUB_DIR/srun.metasched-workers.opts'"
check "no requeue" test ! -e "$STUB_DIR/requeued"
check "job's SLURM_GPUS_PER_NODE not passed to the steps" grep -qx 'SLURM_GPUS_PER_NODE=unset' "$STUB_DIR/srun.metasched-workers.opts"

echo "scenario 2: requeued job resumes"
STUB_COORD_TICKS=5 start_job new resume
finish_job
check "script exits 0" test "$job_rc" -eq 0
check "coordinator: train --resume DIR" bash -c "head -3 '$STUB_DIR/coord.args' | tr '\n' ' ' | grep -q '^train --resume $submit/runs/sinusoid-slurm '"
check "no --config with --resume" bash -c "! grep -qx -- --config '$STUB_DIR/coord.args'"

echo "scenario 3: time limit near (SIGUSR1 to the batch shell)"
STUB_COORD_TICKS=100 start_job usr1
wait_for "$STUB_DIR/task.metasched-coord.0" || fail "coordinator did not start"
sleep 0.5
kill -USR1 "$(batch_shell)"
finish_job
check "script exits 130" test "$job_rc" -eq 130
check "coordinator got exactly one SIGTERM" test "$(wc -l < "$STUB_DIR/coord.signals" 2>/dev/null || echo 0)" -eq 1
check "signal went through scancel to the coordinator step" grep -q 'scancel --signal=TERM 4242.0' "$STUB_DIR/scancel.log"
check "checkpoint written" test -e "$submit/runs/sinusoid-slurm/checkpoint.safetensors"
check "job requeued" has_line "$STUB_DIR/requeued" 4242

echo "scenario 4: SIGTERM to the batch shell is not forwarded again"
STUB_COORD_TICKS=15 start_job term
wait_for "$STUB_DIR/task.metasched-coord.0" || fail "coordinator did not start"
sleep 0.3
# Only the batch shell (bash), as Slurm's own SIGTERM to the step is delivered separately.
kill -TERM "$(batch_shell)"
finish_job
check "the batch shell got the SIGTERM" grep -q 'SIGTERM received' "$STUB_DIR/job.out"
check "script still waits and exits with the coordinator's status 0" test "$job_rc" -eq 0
check "coordinator got no SIGTERM from the script" test ! -e "$STUB_DIR/coord.signals"
check "no requeue" test ! -e "$STUB_DIR/requeued"

echo "scenario 5: a worker that never leaves is ended after the grace period"
STUB_WORKER_STUCK=1 STUB_COORD_TICKS=5 start_job stuck
t0=$SECONDS
finish_job
check "script exits 0" test "$job_rc" -eq 0
check "ended within 10 s" test $((SECONDS - t0)) -lt 10

echo "scenario 6: bad device is refused"
METASCHED_DEVICE=tpu start_job baddev
finish_job
check "exit 2" test "$job_rc" -eq 2

if [[ $failures -ne 0 ]]; then
  echo "dry run: $failures check(s) failed; job output of the last scenario:"
  cat "$STUB_DIR/job.out"
  exit 1
fi
echo "dry run: all checks passed"
