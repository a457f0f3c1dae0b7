#!/usr/bin/env bash
# The device check: everything worth knowing about metasched on one GPU, in one run of at most
# 8 minutes, written as a report (markdown + one log per check) into OUTDIR.
#
#   kernels/gpu_check.sh OUTDIR [--device emu|cuda:0] [--small]
#
# Binaries: $METASCHED_BIN (a directory with meta-coord and meta-worker), else
# target/gpu-bundle/bin (kernels/gpu_bundle.sh), else target/release. Kernels for cuda:N: the
# bundle's kernels/ directory (or $METASCHED_KERNELS_DIR) when present, else NVRTC at run time.
#
# Checks (each PASS, FAIL or SKIP with the reason; nothing is reported passed that did not run):
#   inventory    nvidia-smi, libcuda / libnvrtc / libnccl locations and versions (information)
#   selftest     meta-worker selftest --device DEV (every kernel and the whole meta-gradient;
#                its host-path counters per meta-step are copied into the report)
#   sanitizer    compute-sanitizer memcheck, racecheck, synccheck over the selftest (GPU only)
#   metagrad     meta-coord metagrad on DEV vs the CPU engine: schedulers lstm, lslr, fixed x
#                losses mse (sinusoid), cross_entropy (digits) x second / first order, every
#                output tensor (J, outer_loss, lr, every grad.*), |dev-cpu| <= ATOL + RTOL*|cpu|
#   determinism  the same metagrad on DEV twice: files cmp-equal
#   workers      meta-coord train --device DEV --workers 1 vs --workers 3: checkpoints bitwise equal
#   timing       ms per meta-gradient at B = 25, 250, 1000, 10000 on DEV and on the CPU engine
#                (--small: B = 4, 16, 64)
#   collective   2 worker processes on DEV reducing in a group (cuda: NCCL, both ranks on the
#                one GPU, told apart by NCCL_HOSTID, socket transport over loopback; emu: the
#                TCP stand-in NCCL is replaced by there), against coordinator-side reduction
#                (meta-coord train --device DEV --workers 1): checkpoints bitwise equal, and
#                steps reduced by the group (metrics.jsonl group_reduced: all on emu, >= 1 on cuda)
# Exit status: 0 when no check failed, 1 otherwise, 2 on bad usage.
set -uo pipefail

usage() { echo "usage: $0 OUTDIR [--device emu|cuda:N] [--small]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT="$1"; shift
DEV="cuda:0"; SMALL=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) [ $# -ge 2 ] || usage; DEV="$2"; shift 2 ;;
        --device=*) DEV="${1#--device=}"; shift ;;
        --small) SMALL=1; shift ;;
        *) usage ;;
    esac
done
case "$DEV" in emu|cuda:[0-9]*) ;; *) echo "--device must be emu or cuda:N, not $DEV" >&2; exit 2 ;; esac

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${METASCHED_BIN:-}" ]; then bin="$METASCHED_BIN"
elif [ -x "$root/target/gpu-bundle/bin/meta-coord" ]; then bin="$root/target/gpu-bundle/bin"
else bin="$root/target/release"; fi
COORD="$bin/meta-coord"; WORKER="$bin/meta-worker"
for b in "$COORD" "$WORKER"; do
    [ -x "$b" ] || { echo "gpu_check: no $b (run kernels/gpu_bundle.sh, or cargo build --release)" >&2; exit 2; }
done
if [ "${DEV%%:*}" = cuda ] && [ -z "${METASCHED_KERNELS_DIR:-}" ] && [ -f "$bin/../kernels/manifest.tsv" ]; then
    METASCHED_KERNELS_DIR="$(cd "$bin/../kernels" && pwd)"
    export METASCHED_KERNELS_DIR
fi

BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"   # 8 minutes, all checks together
ATOL="${GPU_CHECK_ATOL:-1e-5}"; RTOL="${GPU_CHECK_RTOL:-1e-4}"
mkdir -p "$OUT/logs" "$OUT/work" || exit 2
OUT="$(cd "$OUT" && pwd)"
REPORT="$OUT/report.md"; ROWS="$OUT/work/rows.md"; : > "$ROWS"
W="$OUT/work"; L="$OUT/logs"
START=$SECONDS
DEADLINE=$(( $(date +%s) + BUDGET_S ))
export COORD WORKER DEV ATOL RTOL W L DEADLINE SMALL
FAILS=0; PASSES=0; SKIPS=0

row() { # status name seconds detail
    printf '| %s | %s | %s | %s |\n' "$2" "$1" "$3" "$4" >> "$ROWS"
    printf '%-5s %-46s %6ss  %s\n' "$1" "$2" "$3" "$4"
    case "$1" in PASS) PASSES=$((PASSES+1)) ;; FAIL) FAILS=$((FAILS+1)) ;; *) SKIPS=$((SKIPS+1)) ;; esac
}
left() { echo $(( DEADLINE - $(date +%s) )); }
# check NAME LIMIT_S CMD...: runs CMD with its output in logs/NAME.log; PASS on exit 0.
check() {
    local name="$1" limit="$2"; shift 2
    local log="$L/$name.log" t0=$SECONDS rc
    if [ "$(left)" -lt 5 ]; then row SKIP "$name" 0 "time budget (${BUDGET_S}s) spent"; return 1; fi
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    { echo "\$ $*"; } > "$log"
    if declare -F "$1" >/dev/null; then
        # A function of this script: run it in a child bash that knows every function.
        timeout --kill-after=5 "$limit" bash -c "set -o pipefail; $(declare -f); \"\$@\"" _ "$@" >> "$log" 2>&1
    else
        timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
    fi
    rc=$?
    local dt=$((SECONDS - t0))
    if [ $rc -eq 0 ]; then row PASS "$name" "$dt" "[log](logs/$name.log)"; return 0; fi
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        row FAIL "$name" "$dt" "timed out after ${limit}s, did not complete ([log](logs/$name.log))"
    else
        local why
        why=$(grep -E '^error' "$log" | tail -1)
        [ -n "$why" ] || why=$(grep -m1 -iE 'error|FAIL|differ' "$log")
        row FAIL "$name" "$dt" "exit $rc: $(printf '%s' "$why" | cut -c1-200 | tr '|' '/') ([log](logs/$name.log))"
    fi
    return 1
}

echo "gpu_check: device $DEV, binaries $bin, out $OUT, budget ${BUDGET_S}s$( [ $SMALL = 1 ] && echo ', --small')"

# ---- inventory (information, never a failure)
inv="$L/inventory.log"
{
    echo "date: $(date -u +%FT%TZ)   host: $(hostname 2>/dev/null || echo ?)   kernel: $(uname -r)"
    echo "binaries: $bin ($("$COORD" --version 2>&1))"
    echo "METASCHED_KERNELS_DIR: ${METASCHED_KERNELS_DIR:-unset (NVRTC at run time for cuda:N)}"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total,mig.mode.current --format=csv 2>&1 || true
        nvidia-smi 2>&1 || true
    else
        echo "nvidia-smi: not installed here (skipped)"
    fi
    for lib in libcuda.so libnvrtc.so libnccl.so; do
        found=$( { ldconfig -p 2>/dev/null | awk -v l="$lib" 'index($1, l) == 1 {print $NF}';
                   ldp="${LD_LIBRARY_PATH:-}"; for d in ${ldp//:/ } /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
                       ls "$d/$lib"* 2>/dev/null; done;
                   python3 - 2>/dev/null <<'PY'
import glob, site, sys
dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
for d in dirs:
    for p in glob.glob(d + "/nvidia/*/lib/lib*.so*"):
        print(p)
PY
                 } | grep -F "$lib" | sort -u)
        if [ -z "$found" ]; then echo "$lib: not found (ldconfig, LD_LIBRARY_PATH, /usr/local/cuda, pip wheels)"; continue; fi
        while read -r f; do echo "$lib: $f -> $(readlink -f "$f" 2>/dev/null)"; done <<< "$found"
    done
    if command -v compute-sanitizer >/dev/null 2>&1; then compute-sanitizer --version 2>&1 | tail -1; else echo "compute-sanitizer: not installed"; fi
} > "$inv" 2>&1
row INFO inventory 0 "[log](logs/inventory.log)"
SKIPS=$((SKIPS-1))

# ---- selftest
check selftest 150 "$WORKER" selftest --device "$DEV"

# ---- metagrad on the device vs the CPU engine
if [ $SMALL = 1 ]; then MB=3; else MB=25; fi
"$COORD" sample-tasks --task sinusoid --tasks "$MB" --seed 7 --out "$W/sin.safetensors" > "$L/sample-tasks.log" 2>&1
"$COORD" sample-tasks --task digits --ways 5 --shots 1 --query 2 --tasks "$MB" --seed 7 --out "$W/dig.safetensors" >> "$L/sample-tasks.log" 2>&1
metagrad_pair() { # name loss sched order
    local name="$1" loss="$2" sched="$3" order="$4" tasks layers
    if [ "$loss" = mse ]; then tasks="$W/sin.safetensors"; layers=1,40,40,1
    else tasks="$W/dig.safetensors"; layers=64,32,5; fi
    local ck="$W/$name.ckpt.safetensors"
    local flags=(--layers "$layers" --loss "$loss" --scheduler "$sched")
    [ "$loss" = cross_entropy ] && flags+=(--lr-max 1.0 --lr-init 0.1 --lr-fixed 0.1)
    [ "$order" = first ] && flags+=(--first-order)
    "$COORD" init --out "$ck" --seed 3 "${flags[@]}" &&
    "$COORD" metagrad --checkpoint "$ck" --tasks "$tasks" --device cpu --out "$W/$name.cpu.safetensors" &&
    "$COORD" metagrad --checkpoint "$ck" --tasks "$tasks" --device "$DEV" --out "$W/$name.dev.safetensors" &&
    "$COORD" compare "$W/$name.dev.safetensors" "$W/$name.cpu.safetensors" --atol "$ATOL" --rtol "$RTOL"
}
for sched in lstm lslr fixed; do
    for loss in mse cross_entropy; do
        for order in second first; do
            check "metagrad-$sched-$loss-$order" 60 metagrad_pair "mg-$sched-$loss-$order" "$loss" "$sched" "$order"
        done
    done
done

# ---- determinism: the same device metagrad twice, files cmp-equal
det() {
    "$COORD" metagrad --checkpoint "$W/mg-lstm-mse-second.ckpt.safetensors" --tasks "$W/sin.safetensors" \
        --device "$DEV" --out "$W/det.again.safetensors" &&
    cmp "$W/mg-lstm-mse-second.dev.safetensors" "$W/det.again.safetensors" && echo "cmp-equal"
}
if [ -f "$W/mg-lstm-mse-second.dev.safetensors" ]; then check determinism-metagrad 60 det
else row SKIP determinism-metagrad 0 "no first device metagrad output (metagrad-lstm-mse-second failed)"; fi

# ---- 1 vs 3 in-process workers: bitwise-equal checkpoints
if [ $SMALL = 1 ]; then STEPS=2; TB=6; else STEPS=20; TB=25; fi
export STEPS TB
train_run() { # workers dir
    "$COORD" train --device "$DEV" --workers "$1" --steps "$STEPS" --meta-batch "$TB" --eval-every 100000 \
        --checkpoint-every 100000 --eval-tasks 3 --final-eval-tasks 3 --log-every 1 --out "$2"
}
workers_eq() {
    rm -rf "$W/train-w1" "$W/train-w3"
    train_run 1 "$W/train-w1" && train_run 3 "$W/train-w3" &&
    "$COORD" compare --exact "$W/train-w3/checkpoint.safetensors" "$W/train-w1/checkpoint.safetensors"
}
check workers-1-vs-3 150 workers_eq

# ---- timing: one meta-coord metagrad call per size, device and CPU engine
if [ $SMALL = 1 ]; then SIZES="4 16 64"; else SIZES="25 250 1000 10000"; fi
TIMES="$W/timing.md"
export SIZES TIMES
{
    echo "| B | $DEV ms | cpu ms | $DEV / cpu |"
    echo "| ---: | ---: | ---: | ---: |"
} > "$TIMES"
ms_of() { sed -n 's/.*tasks, \([0-9.]*\) ms.*/\1/p' "$1" | head -1; }
timing() {
    local ok=0
    "$COORD" init --out "$W/time.ckpt.safetensors" --seed 1 > /dev/null || return 1
    for b in $SIZES; do
        [ "$(left)" -lt 20 ] && { echo "time budget spent before B = $b"; ok=1; break; }
        "$COORD" sample-tasks --tasks "$b" --seed 11 --out "$W/time-$b.safetensors" > /dev/null || return 1
        "$COORD" metagrad --checkpoint "$W/time.ckpt.safetensors" --tasks "$W/time-$b.safetensors" --device "$DEV" \
            --out "$W/time-$b.dev.safetensors" > "$W/time-$b.dev.txt" || return 1
        "$COORD" metagrad --checkpoint "$W/time.ckpt.safetensors" --tasks "$W/time-$b.safetensors" --device cpu \
            --out "$W/time-$b.cpu.safetensors" > "$W/time-$b.cpu.txt" || return 1
        local d c
        d=$(ms_of "$W/time-$b.dev.txt"); c=$(ms_of "$W/time-$b.cpu.txt")
        echo "| $b | $d | $c | $(awk -v d="$d" -v c="$c" 'BEGIN { if (c > 0) printf "%.2f", d / c; else print "-" }') |" >> "$TIMES"
        echo "B = $b: $DEV $d ms, cpu $c ms"
    done
    return $ok
}
check timing 200 timing

# ---- compute-sanitizer (last: racecheck is slow; the budget goes to the checks above first)
for tool in memcheck racecheck synccheck; do
    if [ "$DEV" = emu ]; then
        row SKIP "sanitizer-$tool" 0 "needs a GPU (on the emulator, selftest itself checks barriers, shuffles and shared memory)"
    elif ! command -v compute-sanitizer >/dev/null 2>&1; then
        row SKIP "sanitizer-$tool" 0 "compute-sanitizer not installed"
    else
        check "sanitizer-$tool" 90 compute-sanitizer --tool "$tool" --error-exitcode 1 "$WORKER" selftest --device "$DEV"
    fi
done

# ---- 2-rank reduction group on one device vs coordinator-side reduction
# Two meta-worker processes on DEV join `meta-coord train --listen`; they form a group (NCCL on
# cuda: NCCL refuses two ranks of one GPU on one host, so each rank gets its own NCCL_HOSTID and
# the ranks talk over sockets on loopback, P2P and SHM off; emu: the TCP all-reduce), each step
# is all-reduced among them, and the checkpoint must equal, bit for bit, that of one in-process
# worker (no group: the coordinator reduces).
group_pair() { # collective-name
    local dir="$W/group-2" ref="$W/group-ref" tok pids=() r rc=0 addr="" n
    rm -rf "$dir" "$ref"
    tok=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    train_run 1 "$ref" > "$L/group-ref.log" 2>&1 || { echo "reference run failed (logs/group-ref.log)"; return 1; }
    METASCHED_TOKEN="$tok" RUST_LOG=info "$COORD" train --listen 127.0.0.1:0 --expect-workers 2 \
        --steps "$STEPS" --meta-batch "$TB" --eval-every 100000 --checkpoint-every 100000 \
        --eval-tasks 3 --final-eval-tasks 3 --log-every 1 --worker-timeout 60 --out "$dir" \
        > "$L/group-coord.log" 2>&1 &
    local coord=$!
    for _ in $(seq 1 300); do
        [ -s "$dir/coordinator.addr" ] && { addr=$(cat "$dir/coordinator.addr"); break; }
        sleep 0.1
    done
    [ -n "$addr" ] || { echo "the coordinator did not listen"; kill "$coord" 2>/dev/null; return 1; }
    for r in 0 1; do
        METASCHED_TOKEN="$tok" RUST_LOG=info NCCL_HOSTID="metasched-gpu-check-rank$r" \
            NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_IB_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
            NCCL_DEBUG="${NCCL_DEBUG:-WARN}" \
            "$WORKER" --coord "$addr" --device "$DEV" --give-up-after 15 > "$L/group-worker$r.log" 2>&1 &
        pids+=($!)
    done
    wait "$coord" || rc=$?
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    [ $rc -eq 0 ] || { echo "meta-coord train exited $rc (logs/group-coord.log)"; tail -5 "$L/group-coord.log"; return 1; }
    n=$(tail -1 "$dir/metrics.jsonl" | grep -o '"group_reduced":[0-9]*' | cut -d: -f2)
    echo "group-reduced steps: ${n:-none} of $STEPS ($1)"
    # Every step on the emulator; on a GPU a slow first NCCL join may leave a step to the
    # coordinator (then redone there, bitwise the same), so at least one grouped step is required.
    if [ "$DEV" = emu ]; then [ "${n:-0}" = "$STEPS" ]; else [ "${n:-0}" -ge 1 ]; fi ||
        { echo "error: the group reduced ${n:-no} of $STEPS steps (worker logs: logs/group-worker*.log)"; return 1; }
    "$COORD" compare --exact "$dir/checkpoint.safetensors" "$ref/checkpoint.safetensors"
}
if [ "$DEV" = emu ]; then
    check collective-2-ranks-tcp 150 group_pair "tcp stand-in (emu has no NCCL)"
    row SKIP nccl-2-ranks-one-gpu 0 "no NCCL on the emulator: collective-2-ranks-tcp ran the same check over the TCP stand-in"
elif ! grep -q '^libnccl.so: /' "$inv"; then
    row SKIP nccl-2-ranks-one-gpu 0 "no libnccl.so.2 found (ldconfig, LD_LIBRARY_PATH, wheels; see the inventory)"
else
    check nccl-2-ranks-one-gpu 150 group_pair "NCCL"
fi

# ---- report
{
    echo "# metasched device check"
    echo
    echo "device \`$DEV\`$( [ $SMALL = 1 ] && echo ' (--small)'), $(date -u +%FT%TZ), $((SECONDS - START)) s of ${BUDGET_S} s;"
    echo "binaries \`$bin\`; kernels: ${METASCHED_KERNELS_DIR:-NVRTC at run time (cuda) / built into the emulator (emu)};"
    echo "metagrad tolerance |dev - cpu| <= $ATOL + $RTOL * |cpu| elementwise, every output tensor."
    echo
    echo "**$PASSES passed, $FAILS failed, $SKIPS skipped.**"
    echo
    echo "| check | status | s | detail |"
    echo "| --- | --- | ---: | --- |"
    cat "$ROWS"
    echo
    echo "## ms per meta-gradient (one \`meta-coord metagrad\` call each, no warm-up; cuda with"
    echo "## precompiled kernels loads modules before the clock starts, with NVRTC the first launches compile)"
    echo
    if [ -s "$TIMES" ]; then cat "$TIMES"; fi
    echo
    echo "## host path per meta-step (meta-worker selftest: the runtime's counters)"
    echo
    echo '```'
    sed -n '/^host path per meta-step/,$p' "$L/selftest.log" 2>/dev/null | grep -E '^(host path|  )' || echo "(selftest printed no counters)"
    echo '```'
    echo
    echo "## inventory"
    echo
    echo '```'
    cat "$inv"
    echo '```'
} > "$REPORT"
echo "gpu_check: $PASSES passed, $FAILS failed, $SKIPS skipped in $((SECONDS - START)) s; report $REPORT"
[ "$FAILS" -eq 0 ]
