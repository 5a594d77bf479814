#!/usr/bin/env bash
# gpushare on a real GPU, in two steps (the GPU machine has no Boost, fmt or CLI11):
#
#   bench/device/run.sh prepare   here: build and install into .device/ (ignored by git), with the
#                                 probe, the benchmark and its one shared library
#   bench/device/run.sh [SECTION...]  on the GPU machine, from the repository root, .device/
#                                 carried: checks and prints a table (under 5 minutes). Sections:
#                                 memory, compute, matmul, graphs, overhead (default: all five)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.device"

if [[ "${1:-}" == "prepare" ]]; then
  cmake -S "$root" -B "$root/build-device" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$bundle/install" >/dev/null
  cmake --build "$root/build-device" --target gpushare gpushare_preload gpushare_nvml gpushare_real_nvml gpushare_exporter \
    alloc_probe hook_bench
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

sections=" ${*:-memory compute matmul graphs overhead} "
want() { [[ $sections == *" $1 "* ]]; }
spin="$work/spin"
# The spin benchmark (a CUDA C++ kernel loop), compiled once for the sections that use it.
need_spin() { [[ -x "$spin" ]] || nvcc -O2 -arch=sm_90 -o "$spin" "$root/bench/device/spin.cu"; }

echo "== card"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
date -u +%Y-%m-%dT%H:%MZ

if want memory; then
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

fi

if want compute; then
echo "== time-slicing (spin: every SM busy ~1 ms per kernel; 5 s per run)"
need_spin
kernels() { sed -n 's/.*kernels=\([0-9]*\).*/\1/p' "$1"; }
percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * a / b }'; }
# tenants NAME:OPTIONS... : runs them side by side under gpushare, prints each one's share
tenants() {
  local i=0 pids=() names=()
  for spec in "$@"; do
    local name=${spec%%:*} options=${spec#*:}
    # shellcheck disable=SC2086
    "$gpushare" run --tenant "$name-$$" --state "$state" $options -- "$spin" saturate 5 1000 >"$work/$name.out" &
    pids+=($!); names+=("$name")
  done
  wait "${pids[@]}"
  local total=0
  for name in "${names[@]}"; do total=$((total + $(kernels "$work/$name.out"))); done
  for name in "${names[@]}"; do
    printf '  %-10s %6d kernels  %5s %%\n' "$name" "$(kernels "$work/$name.out")" \
      "$(percent "$(kernels "$work/$name.out")" "$total")"
  done
  echo "  together $total kernels = $(percent "$total" "$solo") % of one alone"
}
"$spin" saturate 5 1000 >"$work/solo.out"
solo=$(kernels "$work/solo.out")
echo "one alone, native: $solo kernels in 5 s"
echo "two at once, native time-slicing:"
"$spin" saturate 5 1000 >"$work/n1.out" & "$spin" saturate 5 1000 >"$work/n2.out"; wait
echo "  $(kernels "$work/n1.out") / $(kernels "$work/n2.out") kernels = $(percent $(($(kernels "$work/n1.out") + $(kernels "$work/n2.out"))) "$solo") % of one alone"
echo "gpushare --share 30 / --share 70:"; tenants "a30:--share 30" "b70:--share 70"
echo "gpushare 10/20/30/40:"; tenants "t10:--share 10" "t20:--share 20" "t30:--share 30" "t40:--share 40"
echo "gpushare --limit 30 alone:"; tenants "cap30:--limit 30"
# Launches longer than the handover grace (whole captured steps): the holder's drain must be
# charged to it, not run into the other tenant's slice. Shares in GPU time (kernels x length).
echo "gpushare --share 50 / --share 50, 50 ms kernels against 1 ms ones:"
"$gpushare" run --tenant long-$$ --share 50 --state "$state" -- "$spin" saturate 5 50000 >"$work/long.out" &
"$gpushare" run --tenant short-$$ --share 50 --state "$state" -- "$spin" saturate 5 1000 >"$work/short.out"; wait
long_ms=$(($(kernels "$work/long.out") * 50)); short_ms=$(kernels "$work/short.out")
echo "  50 ms kernels: $long_ms ms = $(percent "$long_ms" $((long_ms + short_ms))) %;" \
  "1 ms kernels: $short_ms ms = $(percent "$short_ms" $((long_ms + short_ms))) %"
echo "== priority: short kernel + sync every 2 ms, p50/p99 (3 s)"
printf '  alone:                     '; "$spin" latency 3 2000
"$spin" saturate 4 1000 >/dev/null & sleep 0.5
printf '  beside a saturating one:   '; "$spin" latency 3 2000; wait
"$gpushare" run --tenant low-$$ --priority low --state "$state" -- "$spin" saturate 4 1000 >"$work/low.out" & sleep 0.5
printf '  gpushare high beside low:  '; "$gpushare" run --tenant high-$$ --priority high --state "$state" -- "$spin" latency 3 2000; wait
# The price: low runs before and after the high tenant (its pauses, ~2 ms, are kept for it).
echo "  low meanwhile: $(kernels "$work/low.out") kernels in 4 s ($(percent "$(kernels "$work/low.out")" $((solo * 4 / 5))) % of one alone)"
fi

if want matmul; then
echo "== PyTorch bf16 8192^3 matmul loops (5 s)"
printf '  alone:               '; python3 "$root/bench/device/matmul.py" 5
"$gpushare" run --tenant m30-$$ --share 30 --state "$state" -- python3 "$root/bench/device/matmul.py" 5 >"$work/m30.out" &
"$gpushare" run --tenant m70-$$ --share 70 --state "$state" -- python3 "$root/bench/device/matmul.py" 5 >"$work/m70.out"; wait
echo "  --share 30: $(cat "$work/m30.out")"
echo "  --share 70: $(cat "$work/m70.out")"
"$gpushare" status --state "$state" | grep -E "tenant|gpu time" | head -40

fi

if want graphs; then
echo "== CUDA graph capture (torch.cuda.graph, 200 kernels a graph) under gpushare, beside a saturating tenant"
need_spin
"$gpushare" run --tenant busy-$$ --state "$state" -- "$spin" saturate 6 1000 >/dev/null & sleep 0.5
printf '  '; "$gpushare" run --tenant graphs-$$ --state "$state" -- python3 "$root/bench/device/torch_graph.py" 20; wait
fi

if want overhead; then
echo "== hook overhead, real driver: alloc+free pair (1 MiB), cuMemGetInfo_v2, cuLaunchKernel (empty)"
GPUSHARE_BENCH_DRIVER=libcuda.so.1 GPUSHARE_BENCH_PRELOAD="$bundle/install/lib/gpushare/libgpushare-preload.so" \
  "$bundle/bin/hook_bench" --benchmark_min_time=1 --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  2>&1 | grep -v WARNING
# The launch alone, with the in-flight bound at other sizes (0: off), to attribute its cost: the
# bound's checkpoint (an event record and a wait) comes every GPUSHARE_INFLIGHT_LAUNCHES / 2 launches
# (2: every launch, so the added time is about one checkpoint's cost).
for launches in 0 2 32 128; do
  echo "-- the same launch with GPUSHARE_INFLIGHT_LAUNCHES=$launches (default 64)"
  GPUSHARE_INFLIGHT_LAUNCHES=$launches GPUSHARE_BENCH_DRIVER=libcuda.so.1 \
    GPUSHARE_BENCH_PRELOAD="$bundle/install/lib/gpushare/libgpushare-preload.so" \
    "$bundle/bin/hook_bench" --benchmark_filter=Launch --benchmark_min_time=1 --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true 2>&1 | grep ratio
done
fi
rm -rf "$work"
