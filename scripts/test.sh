#!/usr/bin/env bash
# Builds gpushare with warnings as errors and runs every test (unit, end-to-end on the fake
# driver) and a short benchmark. No GPU needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build="$root/build"
# Release (-O3), as packages and bench/device/run.sh build it: some GCC warnings appear only there.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPUSHARE_WERROR=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
echo "== benchmark: added cost of the hooked allocation path (fake driver)"
"$build/bench/hook_bench" --benchmark_min_time=0.2 2>&1 | tail -n 2
ctest --test-dir "$build" --output-on-failure -j 2 --timeout 300
