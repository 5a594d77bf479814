#!/usr/bin/env bash
# Builds gpushare with warnings as errors and runs every test (unit, end-to-end on the fake
# driver, the short torture run) and a short benchmark, then the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer and under ThreadSanitizer (the `asan` and `tsan`
# presets of CMakePresets.json, in build-asan and build-tsan). No GPU needed. A failing test step
# does not stop the next ones; the script fails at the end if any did.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
build="$root/build"
# Release (-O3), as packages and bench/device/run.sh build it: some GCC warnings appear only there.
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGPUSHARE_WERROR=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
echo "== benchmark: added cost of the hooked allocation path (fake driver)"
"$build/bench/hook_bench" --benchmark_min_time=0.2 2>&1 | tail -n 2

failed=()
# step NAME CMD...: runs one test step and notes whether it failed.
step() {
  local name=$1 started=$SECONDS
  shift
  echo "== $name"
  if "$@"; then
    echo "== $name: passed ($((SECONDS - started)) s)"
  else
    echo "== $name: FAILED ($((SECONDS - started)) s)"
    failed+=("$name")
  fi
}

# The core and the unit tests built and run under a sanitizer preset (Debug, ~2 minutes each on
# 2 cores). A report fails the test: UBSan and ASan stop at the first, TSan exits non-zero.
sanitized_unit_tests() (
  cd "$root" &&
    cmake --preset "$1" >/dev/null &&
    cmake --build --preset "$1" -j "$(nproc)" &&
    ctest --preset "$1" -j 2 --timeout 300 --output-on-failure
)
export UBSAN_OPTIONS=print_stacktrace=1 TSAN_OPTIONS=second_deadlock_stack=1

step "tests: unit, end-to-end, torture" ctest --test-dir "$build" --output-on-failure -j 2 --timeout 300
step "unit tests under ASan + UBSan" sanitized_unit_tests asan
step "unit tests under TSan" sanitized_unit_tests tsan

if ((${#failed[@]} > 0)); then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "all tests passed"
