#!/usr/bin/env bash
# gpushare on a real GPU, in two steps (the GPU machine has no Boost, fmt or CLI11):
#
#   bench/device/run.sh prepare   here: build and install into .device/ (ignored by git), with the
#                                 probe, the benchmark and its one shared library
#   bench/device/run.sh           on the GPU machine, from the repository root, .device/ carried:
#                                 checks and prints a table (under 5 minutes)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.device"

if [[ "${1:-}" == "prepare" ]]; then
  cmake -S "$root" -B "$root/build-device" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$bundle/install" >/dev/null
  cmake --build "$root/build-device" --target gpushare gpushare_preload alloc_probe hook_bench
  rm -rf "$bundle"
  cmake --install "$root/build-device" >/dev/null
  mkdir -p "$bundle/bin" "$bundle/lib"
  cp "$root/build-device/tests/e2e/alloc_probe" "$root/build-device/bench/hook_bench" "$bundle/bin/"
  cp -L /usr/lib/x86_64-linux-gnu/libbenchmark.so.1debian "$bundle/lib/"
  du -sh "$bundle"
  exit 0
fi

[[ -x "$bundle/install/bin/gpushare" ]] || { echo "run 'bench/device/run.sh prepare' first and carry .device" >&2; exit 2; }
gpushare="$bundle/install/bin/gpushare"
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
work=$(mktemp -d)
state="$work/state"
out="${OUT:-$work}"

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
date -u +%Y-%m-%dT%H:%MZ

echo "== the three lookup paths of a driver-API program (quota 1 GiB, 16 MiB chunks)"
for lookup in linked procaddress dlsym; do
  printf '%-12s ' "$lookup"
  "$gpushare" run --memory 1GiB --state "$state" -- "$bundle/bin/alloc_probe" "$lookup" fill $((16 << 20)) | tr '\n' ' '
  echo
done
printf '%-12s ' "vmm"
"$gpushare" run --memory 1GiB --state "$state" -- "$bundle/bin/alloc_probe" linked vmm $((20 << 20)) | tr '\n' ' '
echo

echo "== PyTorch until OOM under gpushare run --memory 8GiB (256 MiB tensors)"
for conf in "" "expandable_segments:True" "backend:cudaMallocAsync"; do
  PYTORCH_CUDA_ALLOC_CONF="$conf" "$gpushare" run --memory 8GiB --state "$state" -- \
    python3 "$root/bench/device/torch_oom.py" | tee -a "$out/torch_oom.jsonl"
done

echo "== allocation overhead, real driver (cuMemAlloc_v2 + cuMemFree_v2 of 1 MiB)"
GPUSHARE_BENCH_DRIVER=libcuda.so.1 GPUSHARE_BENCH_PRELOAD="$bundle/install/lib/gpushare/libgpushare-preload.so" \
  "$bundle/bin/hook_bench" --benchmark_min_time=1 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  2>&1 | grep -v WARNING
rm -rf "$work"
