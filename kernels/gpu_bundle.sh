#!/usr/bin/env bash
# Builds what a GPU machine needs to run metasched without a Rust toolchain or NVRTC, into an
# ignored folder of at most 20 MiB:
#
#   target/gpu-bundle/bin/meta-coord, meta-worker   stripped release binaries (cuda + selftest)
#   target/gpu-bundle/kernels/                       meta-worker compile-kernels output: PTX for
#                                                    compute_80/compute_90, cubins for sm_80/sm_90,
#                                                    manifest.tsv (source hashes, NVRTC version)
#
#   kernels/gpu_bundle.sh            # NVRTC + ptxas from target/nvrtc-venv (made as check_ptx.sh does)
#   GPU_BUNDLE_ARCH=sm_80,sm_90 GPU_BUNDLE_OUT=DIR GPU_BUNDLE_NO_KERNELS=1 kernels/gpu_bundle.sh
#
# GPU_BUNDLE_NO_KERNELS=1 makes a bundle without kernels when NVRTC cannot be installed here
# (the device then compiles with its own NVRTC, if it has one). Binaries are built for this
# machine's glibc: the device machine must have the same or a newer one.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${GPU_BUNDLE_OUT:-$root/target/gpu-bundle}"
arch="${GPU_BUNDLE_ARCH:-sm_80,sm_90}"
venv="${NVRTC_VENV:-$root/target/nvrtc-venv}"
limit_mib=20
# Pinned as in check_ptx.sh: NVRTC 12.4 matches cudarc's `cuda-12040` bindings.
nvrtc_pkg="nvidia-cuda-nvrtc-cu12==12.4.127"
nvcc_pkg="nvidia-cuda-nvcc-cu12==12.4.131"

fail() { echo "gpu_bundle: FAIL: $*" >&2; exit 1; }

echo "== cargo build --release meta-coord, meta-worker"
cargo build --release --locked -p metasched-coord -p metasched-worker --bins --quiet || fail "cargo build"
rm -rf "$out"
mkdir -p "$out/bin"
for b in meta-coord meta-worker; do
    cp "target/release/$b" "$out/bin/$b"
    if command -v strip >/dev/null 2>&1; then
        strip "$out/bin/$b" || fail "strip $b"
    else
        echo "gpu_bundle: strip not found: binaries keep their line tables" >&2
    fi
done

echo "== kernels ($arch) -> $out/kernels"
nvrtc_ok=0
if [ "${GPU_BUNDLE_NO_KERNELS:-0}" != 1 ]; then
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" || fail "cannot create a venv in $venv (python3-venv installed?)"
    fi
    if [ ! -d "$venv/lib" ] || ! "$venv/bin/python" -c 'import importlib.util as u, sys; sys.exit(0 if u.find_spec("nvidia") else 1)' 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$nvrtc_pkg" "$nvcc_pkg" \
            || fail "pip install $nvrtc_pkg $nvcc_pkg (or GPU_BUNDLE_NO_KERNELS=1)"
    fi
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    nvrtc_lib="$site/nvidia/cuda_nvrtc/lib"
    ptxas="$site/nvidia/cuda_nvcc/bin/ptxas"
    [ -e "$nvrtc_lib/libnvrtc.so.12" ] || fail "no libnvrtc.so.12 in $nvrtc_lib"
    LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        "$out/bin/meta-worker" compile-kernels --arch "$arch" --out "$out/kernels" --ptxas "$ptxas" \
        > "$out/kernels.log" 2>&1 || { cat "$out/kernels.log" >&2; fail "compile-kernels"; }
    [ -s "$out/kernels/manifest.tsv" ] || fail "compile-kernels wrote no manifest.tsv"
    nvrtc_ok=1
    grep -c . "$out/kernels/manifest.tsv" >/dev/null
else
    echo "GPU_BUNDLE_NO_KERNELS=1: no precompiled kernels (the device needs its own NVRTC)"
fi

bytes=$(du -sb "$out" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "== bundle: $out, $mib MiB"
ls -l "$out/bin"
[ $nvrtc_ok = 1 ] && echo "kernels: $(($(grep -vc '^#' "$out/kernels/manifest.tsv"))) files in manifest.tsv ($(ls "$out/kernels" | grep -c ptx) PTX, $(ls "$out/kernels" | grep -c cubin) cubin)"
[ "$bytes" -le $((limit_mib * 1048576)) ] || fail "bundle is $mib MiB, over the ${limit_mib} MiB limit"

rel="${out#"$root"/}"
cat <<EOF

To run the device check on the lent GPU machine, carry the bundle (an ignored path) with the
working tree; kernels/gpu_check.sh finds $rel/bin and $rel/kernels by itself:

  run(command = "bash kernels/gpu_check.sh \$OUT/gpu-check --device cuda:0",
      carry   = ["$rel"], timeout_s = 540)

The report comes back as \$OUT/gpu-check/report.md (logs in \$OUT/gpu-check/logs/). By hand on
any GPU host: copy $rel, then
  METASCHED_KERNELS_DIR=$rel/kernels $rel/bin/meta-worker selftest --device cuda:0
EOF
