#!/usr/bin/env bash
# examples/container/gpushare-entrypoint.sh run directly (as the container would run it, without
# docker): the variables become the wrapped program's quota and policy, HAMi's names work as
# aliases, and a bad value stops the container with status 2 before the program runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

entrypoint=$EXAMPLES_SOURCE_DIR/examples/container/gpushare-entrypoint.sh
export GPUSHARE=$EXAMPLES_GPUSHARE
state=$work/gpushare.state
chunk=$((64 << 20))

# run_entrypoint VAR=VALUE... -- CMD...: the entrypoint with only these variables (and the fake
# driver's); sets $out and $rc.
run_entrypoint() {
  local assignments=()
  while [[ $1 != -- ]]; do
    assignments+=("$1")
    shift
  done
  shift
  rc=0
  out=$(env "${assignments[@]}" "$entrypoint" "$@" 2>&1) || rc=$?
}

# gpushare's variables: the program's allocations stop at the quota, and it is told the quota.
run_entrypoint GPUSHARE_STATE="$state" GPUSHARE_MEMORY_LIMIT=256MiB GPUSHARE_TENANT=web-0 \
  GPUSHARE_COMPUTE_SHARE=40 GPUSHARE_COMPUTE_LIMIT=50 GPUSHARE_PRIORITY=high -- "$EXAMPLES_PROBE" linked fill "$chunk"
expect_eq "quota: exit status" "$rc" 0
expect_contains "quota: fill stops at 256 MiB" "$out" "allocated=268435456 error=2"
expect_contains "quota: the program sees a 256 MiB GPU" "$out" "total=268435456 device_total=268435456"
json=$(status_json "$state")
expect_contains "quota: the tenant's limit" "$(tenant_json "$json" tenant web-0)" '"memory_limit_bytes":268435456'
expect_contains "quota: the tenant's policy" "$(tenant_json "$json" name web-0)" \
  '"share_pct":40,"limit_pct":50,"priority":"high"'

# A per-device quota beats the tenant-wide one on that device.
run_entrypoint GPUSHARE_STATE="$state" GPUSHARE_MEMORY_LIMIT=1GiB GPUSHARE_MEMORY_LIMIT_0=192MiB -- \
  "$EXAMPLES_PROBE" linked fill "$chunk"
expect_contains "device quota: fill stops at 192 MiB" "$out" "allocated=201326592 error=2"

# HAMi's names, as its device plugin sets them (MiB with an m, 0 = no cap, a per-container path).
run_entrypoint CUDA_DEVICE_MEMORY_LIMIT_0=128m CUDA_DEVICE_SM_LIMIT=0 \
  CUDA_DEVICE_MEMORY_SHARED_CACHE=/usr/local/vgpu/0f1e2d3c.cache HOSTNAME=train-0 GPUSHARE_STATE="$state" -- \
  "$EXAMPLES_PROBE" linked fill "$chunk"
expect_eq "HAMi: exit status" "$rc" 0
expect_contains "HAMi: fill stops at 128 MiB" "$out" "allocated=134217728 error=2"
json=$(status_json "$state")
# Named after the pod (HOSTNAME) and a hash of the cache path.
expect_contains "HAMi: the container's tenant" "$(tenant_json "$json" name 'train-0-[0-9a-f]\{8\}')" \
  '"limit_pct":null'
run_entrypoint CUDA_DEVICE_MEMORY_LIMIT=96m CUDA_DEVICE_SM_LIMIT=25 GPUSHARE_TENANT=hami-cap \
  GPUSHARE_STATE="$state" -- "$EXAMPLES_PROBE" linked fill $((32 << 20))
expect_contains "HAMi: CUDA_DEVICE_MEMORY_LIMIT" "$out" "allocated=100663296 error=2"
expect_contains "HAMi: CUDA_DEVICE_SM_LIMIT is the cap" "$(tenant_json "$(status_json "$state")" name hami-cap)" \
  '"limit_pct":25'
# gpushare's name wins over HAMi's.
run_entrypoint GPUSHARE_MEMORY_LIMIT=64MiB CUDA_DEVICE_MEMORY_LIMIT=1g GPUSHARE_STATE="$state" -- \
  "$EXAMPLES_PROBE" linked fill $((32 << 20))
expect_contains "gpushare's variable wins" "$out" "allocated=67108864 error=2"

# Without a tenant name every container run is a tenant of its own, named after the command.
run_entrypoint GPUSHARE_STATE="$state" -- "$EXAMPLES_PROBE" linked info
expect_eq "no variables: exit status" "$rc" 0
expect_contains "no variables: a generated tenant" "$(status_json "$state")" '"name":"alloc_probe-'

# Bad input: status 2, a message, and the program never starts (it would print meminfo_rc).
for bad in GPUSHARE_MEMORY_LIMIT=8GB GPUSHARE_MEMORY_LIMIT= GPUSHARE_COMPUTE_SHARE=0 GPUSHARE_COMPUTE_LIMIT=101 \
  GPUSHARE_PRIORITY=urgent GPUSHARE_SLICE_MS=5000 "GPUSHARE_TENANT=two words" GPUSHARE_MEMORY_LIMIT_0=lots \
  GPUSHARE_MEMORY_LIMIT_99=1GiB CUDA_DEVICE_MEMORY_LIMIT=8XB CUDA_DEVICE_SM_LIMIT=200 GPUSHARE_LOG=loud; do
  run_entrypoint GPUSHARE_STATE="$state" "$bad" -- "$EXAMPLES_PROBE" linked info
  expect_eq "bad input '$bad': exit status" "$rc" 2
  expect_not_contains "bad input '$bad': the program did not run" "$out" "meminfo_rc="
  expect_contains "bad input '$bad': says why" "$out" "gpushare"
done
run_entrypoint GPUSHARE_STATE="$state" --
expect_eq "no command: exit status" "$rc" 2
expect_contains "no command: says why" "$out" "no command given"
finish
