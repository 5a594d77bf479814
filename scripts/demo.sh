#!/usr/bin/env bash
# Builds gpushare and shows two tenants sharing a GPU with quotas: on the real GPU when there is
# one (and PyTorch), else on the fake driver the tests use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build="$root/build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target gpushare gpushare_preload alloc_probe gpu_workload >/dev/null
gpushare="$build/tools/gpushare"
state=$(mktemp -d)/gpushare.state
trap 'rm -rf "$(dirname "$state")"' EXIT

if nvidia-smi -L >/dev/null 2>&1 && python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "== on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1): two PyTorch tenants"
  "$gpushare" run --memory 2GiB --tenant train --state "$state" -- python3 "$root/bench/device/torch_oom.py" &
  "$gpushare" run --memory 1GiB --tenant serve --state "$state" -- python3 "$root/bench/device/torch_oom.py"
  wait
else
  echo "== no GPU here: the fake driver stands in for libcuda.so.1 (an 8 GiB card)"
  export GPUSHARE_REAL_LIBCUDA="$build/tests/fake_cuda/libcuda.so.1" FAKE_CUDA_DEVICE_MEMORY=$((8 << 30))
  probe="$build/tests/e2e/alloc_probe"
  ready="$(dirname "$state")/ready"
  echo "\$ gpushare run --memory 1GiB --tenant train -- alloc_probe hold 768MiB   (in the background)"
  "$gpushare" run --memory 1GiB --tenant train --state "$state" -- "$probe" linked hold $((768 << 20)) "$ready" >/dev/null &
  holder=$!
  until [[ -e "$ready" ]]; do sleep 0.05; done
  echo "\$ gpushare run --memory 1GiB --tenant train -- alloc_probe fill 64MiB     (same tenant: 256 MiB left)"
  "$gpushare" run --memory 1GiB --tenant train --state "$state" -- "$probe" procaddress fill $((64 << 20))
  echo "\$ gpushare run --memory 512MiB --tenant serve -- alloc_probe fill 64MiB   (its own quota)"
  "$gpushare" run --memory 512MiB --tenant serve --state "$state" -- "$probe" dlsym fill $((64 << 20))
  echo "\$ gpushare status"
  "$gpushare" status --state "$state"
  kill -9 "$holder"
  wait "$holder" 2>/dev/null || true
  echo "\$ kill -9 the holder; gpushare status   (its 768 MiB go back to 'train')"
  "$gpushare" status --state "$state" | grep -E "^  (TENANT|train) "
  echo
  echo "== time: two tenants saturating the (simulated) GPU for 3 s with 1 ms kernels, --share 30 and 70"
  export FAKE_CUDA_ENGINE="$(dirname "$state")/engine"
  workload="$build/tests/e2e/gpu_workload"
  echo "\$ gpushare run --share 30 --tenant batch -- gpu_workload saturate 3 1000 &"
  echo "\$ gpushare run --share 70 --tenant online -- gpu_workload saturate 3 1000 &"
  "$gpushare" run --share 30 --tenant batch --state "$state" -- "$workload" linked saturate 3 1000 &
  "$gpushare" run --share 70 --tenant online --state "$state" -- "$workload" linked saturate 3 1000 &
  sleep 1
  echo "\$ gpushare top -n 2   (second frame: rates over the last second)"
  "$gpushare" top -n 2 --state "$state" | tail -n 8
  wait
  echo "\$ gpushare status"
  "$gpushare" status --state "$state"
fi
