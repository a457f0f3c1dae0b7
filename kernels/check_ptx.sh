#!/usr/bin/env bash
# Compiles every kernel with the real NVRTC for sm_80 and sm_90, checks registers and spills
# with ptxas, and checks that a deliberately broken kernel is rejected with its compiler log.
# Needs Python 3 with venv + pip and access to PyPI (or a pip cache); no GPU, no toolkit.
#
#   kernels/check_ptx.sh            # venv in target/nvrtc-venv, PTX in target/ptx
#   NVRTC_VENV=DIR PTX_OUT=DIR kernels/check_ptx.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${NVRTC_VENV:-$root/target/nvrtc-venv}"
out="${PTX_OUT:-$root/target/ptx}"
# Pinned: NVRTC 12.4 matches cudarc's `cuda-12040` bindings; ptxas from the same release.
nvrtc_pkg="nvidia-cuda-nvrtc-cu12==12.4.127"
nvcc_pkg="nvidia-cuda-nvcc-cu12==12.4.131"

fail() { echo "check_ptx: FAIL: $*" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || fail "cannot create a venv in $venv (python3-venv installed?)"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$nvrtc_pkg" "$nvcc_pkg" \
    || fail "pip install $nvrtc_pkg $nvcc_pkg"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
nvrtc_lib="$site/nvidia/cuda_nvrtc/lib"
ptxas="$site/nvidia/cuda_nvcc/bin/ptxas"
[ -e "$nvrtc_lib/libnvrtc.so.12" ] || fail "no libnvrtc.so.12 in $nvrtc_lib"
[ -x "$ptxas" ] || fail "no ptxas at $ptxas"
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# $METASCHED_BIN (a directory holding meta-worker, e.g. the one `cargo test --workspace --release`
# just built: CI) saves a rebuild with `-p`'s different feature set; else build it here.
if [ -n "${METASCHED_BIN:-}" ]; then
    worker="$METASCHED_BIN/meta-worker"
else
    cargo build --release --locked -p metasched-worker --bin meta-worker --quiet || fail "cargo build meta-worker"
    worker="$root/target/release/meta-worker"
fi
[ -x "$worker" ] || fail "no meta-worker at $worker"

rm -rf "$out"
echo "== compile-kernels (built-in sources) for sm_80, sm_90 -> $out"
"$worker" compile-kernels --arch sm_80,sm_90 --out "$out" --ptxas "$ptxas" \
    || fail "compile-kernels on the built-in kernels"
echo "== compile-kernels --kernels-dir kernels/ (the sources on disk)"
"$worker" compile-kernels --arch sm_80,sm_90 --out "$out/from-disk" --kernels-dir "$root/kernels" --ptxas "$ptxas" >/dev/null \
    || fail "compile-kernels --kernels-dir kernels/"
# Every kernel file the worker builds in (compile::kernel_files), scheduler.cu included.
for f in lstm_cell sgd_update mlp loss scheduler; do
    for a in sm_80 sm_90; do
        [ -s "$out/$f.$a.ptx" ] || fail "missing $out/$f.$a.ptx"
        cmp -s "$out/$f.$a.ptx" "$out/from-disk/$f.$a.ptx" || fail "$f.$a.ptx differs between built-in and on-disk sources (rebuild meta-worker)"
    done
done

echo "== manifest.tsv: every file listed, fresh, loadable by the kernels-directory loader"
[ -s "$out/manifest.tsv" ] || fail "compile-kernels wrote no $out/manifest.tsv"
[ "$(grep -vc '^#' "$out/manifest.tsv")" -eq 20 ] || fail "$out/manifest.tsv: expected 20 files (5 sources x 2 archs x ptx+cubin)"
METASCHED_KERNELS_CHECK_DIR="$out" cargo test --release --locked --workspace --lib --quiet kernel_dir::tests \
    || fail "kernel_dir tests on the compile-kernels output in $out"

echo "== a broken kernel must be rejected"
set +e
log="$("$worker" compile-kernels --arch sm_80 --out "$out/broken" --kernels-dir "$root/kernels/fixtures/broken_compile.cu" 2>&1)"
rc=$?
set -e
printf '%s\n' "$log" | sed 's/^/    /'
[ "$rc" -eq 1 ] || fail "broken_compile.cu: expected exit 1, got $rc"
printf '%s\n' "$log" | grep -q 'broken_compile.cu(9): error' || fail "broken_compile.cu: the NVRTC log does not point at line 9"
[ ! -e "$out/broken/broken_compile.sm_80.ptx" ] || fail "broken_compile.cu: PTX written despite the error"

echo "== metasched-cuda compile tests with this NVRTC (the NVRTC-present branch, asserted)"
METASCHED_EXPECT_NVRTC=1 cargo test --release --locked --workspace --lib --quiet compile::tests \
    || fail "metasched-cuda compile tests with NVRTC from $nvrtc_lib"

echo "check_ptx: OK"
