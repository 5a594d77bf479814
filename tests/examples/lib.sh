# shellcheck shell=bash
# Shared by the examples' tests (sourced, not run). ctest passes the build's paths in EXAMPLES_*:
#   EXAMPLES_SOURCE_DIR  the repository      EXAMPLES_GPUSHARE  the gpushare command
#   EXAMPLES_PRELOAD     the preload library  EXAMPLES_PROBE     alloc_probe
#   EXAMPLES_WORKLOAD    gpu_workload         EXAMPLES_FAKE_DIR  the folder of the fake libcuda.so.1
# and each test runs the example scripts as a user would, on the fake driver, in a folder of its own.

for required in EXAMPLES_SOURCE_DIR EXAMPLES_GPUSHARE EXAMPLES_PRELOAD EXAMPLES_PROBE EXAMPLES_WORKLOAD EXAMPLES_FAKE_DIR; do
  if [[ -z ${!required:-} ]]; then
    echo "FAIL: $required is not set (run through ctest)" >&2
    exit 1
  fi
done

# Nothing from the caller's environment may steer gpushare, HAMi's aliases or the fake driver.
for name in $(compgen -e); do
  case $name in
    GPUSHARE* | CUDA_DEVICE_* | FAKE_CUDA_* | LD_PRELOAD | SLURM_* | CUDA_VISIBLE_DEVICES) unset "$name" ;;
  esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/gpushare-example-test.XXXXXX")
cleanup_hooks=()
cleanup() {
  local hook
  for hook in "${cleanup_hooks[@]}"; do eval "$hook" || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The fake driver: an 8 GiB card whose simulated engine is shared by this test's processes only.
export GPUSHARE_REAL_LIBCUDA=$EXAMPLES_FAKE_DIR/libcuda.so.1
export FAKE_CUDA_DEVICE_MEMORY=$((8 << 30))
export FAKE_CUDA_ENGINE=$work/engine

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
pass() { echo "ok: $*"; }
# check WHAT CMD...: passes when CMD succeeds.
check() {
  local what=$1
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# expect_contains WHAT TEXT NEEDLE
expect_contains() {
  if [[ $2 == *"$3"* ]]; then pass "$1"; else fail "$1: expected '$3' in: $2"; fi
}
expect_not_contains() {
  if [[ $2 != *"$3"* ]]; then pass "$1"; else fail "$1: did not expect '$3' in: $2"; fi
}
expect_eq() {
  if [[ $2 == "$3" ]]; then pass "$1"; else fail "$1: expected '$3', got '$2'"; fi
}
# One tenant's object from `gpushare status --json` (its per-GPU entry or its policy entry): the
# report is one line of JSON without nested braces inside these objects but for "processes".
tenant_json() {
  local json=$1 key=$2 name=$3
  grep -o "{\"$key\":\"$name\",[^{}]*" <<<"$json" | head -n1
}
status_json() {
  "$EXAMPLES_GPUSHARE" status --json --state "$1"
}
finish() {
  if ((failures > 0)); then
    echo "$failures check(s) failed" >&2
    exit 1
  fi
  echo "all checks passed"
}
