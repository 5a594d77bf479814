#!/usr/bin/env bash
# examples/pytorch/two_tenants.sh on the fake driver, with gpu_workload in place of Python: both
# tenants start with their options, run, and show up in `gpushare status` with them.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

unset PYTHON TRAIN_MEMORY EVAL_MEMORY
export GPUSHARE=$EXAMPLES_GPUSHARE GPUSHARE_STATE=$work/gpushare.state
# One second of 1 ms kernels each: train (normal priority) has the GPU while it runs, eval (low)
# gets it in the gaps and after train is done, so both finish within about 2 s.
export TRAIN_COMMAND="$EXAMPLES_WORKLOAD linked saturate 1 1000"
export EVAL_COMMAND="$EXAMPLES_WORKLOAD linked saturate 1 1000"

status=0
output=$("$EXAMPLES_SOURCE_DIR/examples/pytorch/two_tenants.sh" 2>&1) || status=$?
echo "$output"
expect_eq "two_tenants.sh exit status" "$status" 0
expect_contains "train started with its options" "$output" "--memory 8GiB --share 70 --tenant train"
expect_contains "eval started with its options" "$output" "--memory 4GiB --share 30 --priority low --tenant eval"
expect_contains "both exited successfully" "$output" "train exited with status 0, eval with status 0"
# Each workload prints its GPU time; both must have got some.
kernels=$(grep -c '^kernel_us=[1-9]' <<<"$output" || true)
expect_eq "both workloads ran kernels" "$kernels" 2
expect_contains "the script shows gpushare status" "$output" "\$ gpushare status"

json=$(status_json "$GPUSHARE_STATE")
train_gpu=$(tenant_json "$json" tenant train)
eval_gpu=$(tenant_json "$json" tenant eval)
expect_contains "train's quota" "$train_gpu" '"memory_limit_bytes":8589934592'
expect_contains "eval's quota" "$eval_gpu" '"memory_limit_bytes":4294967296'
expect_contains "train launched on the GPU" "$train_gpu" '"launches":'
expect_not_contains "train launched kernels" "$train_gpu" '"launches":0,'
expect_not_contains "eval launched kernels" "$eval_gpu" '"launches":0,'
expect_contains "train's policy" "$(tenant_json "$json" name train)" '"share_pct":70,"limit_pct":null,"priority":"normal"'
expect_contains "eval's policy" "$(tenant_json "$json" name eval)" '"share_pct":30,"limit_pct":null,"priority":"low"'

# A tenant that fails makes the script fail, after status.
status=0
output=$(EVAL_COMMAND="$EXAMPLES_WORKLOAD linked no-such-mode 1 1000" TRAIN_COMMAND="true" \
  "$EXAMPLES_SOURCE_DIR/examples/pytorch/two_tenants.sh" 2>&1) || status=$?
expect_eq "a failing tenant fails the script" "$status" 1
expect_contains "and is reported" "$output" "train exited with status 0, eval with status"
finish
