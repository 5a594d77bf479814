#!/usr/bin/env bash
# examples/slurm/daemonless/gpushare-task-prolog.sh with a fake job's environment: its output is applied as
# slurmstepd applies it, the job's tasks run under it on the fake driver, and the quota, the
# policy and the tenant's name show in `gpushare status --json`. Bad values: a message and no
# export at all.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

prolog=$EXAMPLES_SOURCE_DIR/examples/slurm/daemonless/gpushare-task-prolog.sh
if [[ -e /etc/gpushare/slurm-task-prolog.conf ]]; then
  echo "FAIL: /etc/gpushare/slurm-task-prolog.conf exists here and would override this test's settings" >&2
  exit 1
fi
mkdir "$work/run"
state=$work/run/gpushare.state
chunk=$((64 << 20))

# run_prolog VAR=VALUE...: the prolog in a job's environment (only these variables and the site's
# settings); sets $out (stdout: what Slurm reads), $err and $rc.
run_prolog() {
  rc=0
  out=$(env GPUSHARE="$EXAMPLES_GPUSHARE" GPUSHARE_PROLOG_STATE="$state" "$@" "$prolog" 2>"$work/stderr") || rc=$?
  err=$(<"$work/stderr")
}

# as_task CMD...: runs CMD in the environment the prolog's output gives a task, applying each line
# the way slurmstepd does (export NAME=value, unset NAME, print TEXT). Call it in a subshell, $(...)
# or with &: it changes the environment and then execs CMD in place of the shell (so that $! is
# CMD's process).
as_task() {
  while IFS= read -r line; do
    case $line in
      "export "*)
        line=${line#export }
        export "${line%%=*}=${line#*=}"
        ;;
      "unset "*) unset "${line#unset }" ;;
      "print "*) ;;
      "") ;;
      *)
        echo "unexpected prolog line: $line" >&2
        exit 99
        ;;
    esac
  done <<<"$out"
  exec "$@"
}

# A job with 2 of a GPU's 8 shards, 128 MiB of memory each on this site. It asks for more memory
# than its shards give, low priority, and carries a HAMi variable that must not apply.
run_prolog SLURM_JOB_ID=4242 SLURM_SHARDS_ON_NODE=2 GPUSHARE_PROLOG_SHARD_MEMORY=128MiB \
  GPUSHARE_PROLOG_SHARDS_PER_GPU=8 GPUSHARE_MEMORY_LIMIT=1GiB GPUSHARE_PRIORITY=low CUDA_DEVICE_SM_LIMIT=20
echo "$out"
expect_eq "shards: exit status" "$rc" 0
expect_contains "shards: LD_PRELOAD is the preload library" "$out" "export LD_PRELOAD=$EXAMPLES_PRELOAD"
expect_contains "shards: one tenant per job" "$out" "export GPUSHARE_TENANT=slurm-job-4242"
expect_contains "shards: the node's state file" "$out" "export GPUSHARE_STATE=$state"
expect_contains "shards: memory lowered to 2 shards" "$out" "export GPUSHARE_MEMORY_LIMIT=268435456"
expect_contains "shards: 2 of 8 shards is a 25 % share" "$out" "export GPUSHARE_COMPUTE_SHARE=25"
expect_contains "shards: the job's priority" "$out" "export GPUSHARE_PRIORITY=low"
expect_contains "shards: HAMi's cap is removed" "$out" "unset CUDA_DEVICE_SM_LIMIT"
expect_contains "shards: the lowering is reported" "$err" "memory lowered"

# Two tasks of the job share its quota: one holds 128 MiB, the other fills up to the rest.
ready=$work/ready
as_task "$EXAMPLES_PROBE" linked hold $((128 << 20)) "$ready" >/dev/null &
holder=$!
cleanup_hooks+=("kill -9 $holder 2>/dev/null; wait $holder 2>/dev/null")
for _ in $(seq 500); do
  [[ -e $ready ]] && break
  sleep 0.01
done
[[ -e $ready ]] || fail "the first task did not start"
task=$(as_task "$EXAMPLES_PROBE" linked fill "$chunk" 2>&1) || fail "the second task failed: $task"
expect_contains "shards: the second task gets what the first left of 256 MiB" "$task" "allocated=134217728 error=2"
expect_contains "shards: and sees a 256 MiB GPU" "$task" "total=268435456"
json=$(status_json "$state")
gpu=$(tenant_json "$json" tenant slurm-job-4242)
expect_contains "status: the job's quota" "$gpu" '"memory_limit_bytes":268435456'
expect_contains "status: the first task's memory is in use" "$gpu" '"memory_used_bytes":134217728'
expect_contains "status: the job's policy" "$(tenant_json "$json" name slurm-job-4242)" \
  '"share_pct":25,"limit_pct":null,"priority":"low"'
kill -9 "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true

# Without shards: the job's own values, and a job's existing LD_PRELOAD stays after gpushare's.
run_prolog SLURM_JOB_ID=77 CUDA_VISIBLE_DEVICES=0 GPUSHARE_MEMORY_LIMIT=192MiB GPUSHARE_COMPUTE_LIMIT=40 \
  LD_PRELOAD=libfoo.so GPUSHARE_MEMORY_LIMIT_0=1GiB
expect_eq "job values: exit status" "$rc" 0
expect_contains "job values: the quota in bytes" "$out" "export GPUSHARE_MEMORY_LIMIT=201326592"
expect_contains "job values: the cap" "$out" "export GPUSHARE_COMPUTE_LIMIT=40"
expect_contains "job values: preloads kept" "$out" "export LD_PRELOAD=$EXAMPLES_PRELOAD:libfoo.so"
expect_contains "job values: per-device quota removed" "$out" "unset GPUSHARE_MEMORY_LIMIT_0"
expect_not_contains "job values: no share chosen" "$out" "GPUSHARE_COMPUTE_SHARE"
out=${out//:libfoo.so/}  # libfoo.so does not exist: leave it out of the task's preloads
task=$(as_task "$EXAMPLES_PROBE" linked fill "$chunk" 2>&1) || fail "job values: the task failed: $task"
expect_contains "job values: fill stops at 192 MiB" "$task" "allocated=201326592 error=2"
expect_contains "job values: status names the job" "$(tenant_json "$(status_json "$state")" name slurm-job-77)" \
  '"limit_pct":40'

# A job without a GPU is left alone.
run_prolog SLURM_JOB_ID=78 GPUSHARE_MEMORY_LIMIT=1GiB
expect_eq "no GPU: exit status" "$rc" 0
expect_eq "no GPU: no output" "$out" ""

# Bad values: no export (nor unset) at all, a message on stderr and one in the job's output.
bad_cases=(
  "GPUSHARE_MEMORY_LIMIT=8GB"
  "GPUSHARE_MEMORY_LIMIT="
  "GPUSHARE_COMPUTE_SHARE=150"
  "GPUSHARE_COMPUTE_LIMIT=abc"
  "GPUSHARE_PRIORITY=urgent"
  "GPUSHARE_PRIORITY="
  "SLURM_SHARDS_ON_NODE=two"
  "SLURM_JOB_ID=12;rm"
  "GPUSHARE_PROLOG_SHARD_MEMORY=unlimited SLURM_SHARDS_ON_NODE=1"
  "GPUSHARE_PROLOG_SHARDS_PER_GPU=0 SLURM_SHARDS_ON_NODE=1"
  "GPUSHARE_PROLOG_STATE=$work/missing/gpushare.state"
  "GPUSHARE=$work/no-gpushare"
)
for case in "${bad_cases[@]}"; do
  read -r -a assignments <<<"$case"
  run_prolog SLURM_JOB_ID=99 CUDA_VISIBLE_DEVICES=0 CUDA_DEVICE_SM_LIMIT=20 "${assignments[@]}"
  expect_eq "bad '$case': exit status (the job still starts)" "$rc" 0
  expect_eq "bad '$case': nothing exported or unset" "$(grep -cE '^(export|unset) ' <<<"$out" || true)" 0
  expect_contains "bad '$case': told in the job's output" "$out" "print gpushare: "
  expect_contains "bad '$case': message on stderr" "$err" "gpushare task prolog (job "
done
# The site's file (here a copy of the prolog that reads it from the test's folder) wins over the
# job's environment: a job cannot raise its shards' memory by setting the site's names itself.
sed "s#^config=/etc/gpushare/slurm-task-prolog.conf\$#config=$work/prolog.conf#" "$prolog" >"$work/prolog.sh"
chmod +x "$work/prolog.sh"
grep -q "^config=$work/prolog.conf\$" "$work/prolog.sh" || fail "the prolog's config line has changed: update this test"
prolog=$work/prolog.sh
printf '%s\n' "# the site's settings" "GPUSHARE_PROLOG_SHARD_MEMORY = 64MiB  # per shard" \
  "GPUSHARE_PROLOG_SHARDS_PER_GPU=4" >"$work/prolog.conf"
run_prolog SLURM_JOB_ID=5 SLURM_SHARDS_ON_NODE=3 GPUSHARE_PROLOG_SHARD_MEMORY=1GiB GPUSHARE_PROLOG_SHARDS_PER_GPU=1
expect_contains "site file: its shard memory wins" "$out" "export GPUSHARE_MEMORY_LIMIT=201326592"
expect_contains "site file: its shards per GPU win" "$out" "export GPUSHARE_COMPUTE_SHARE=75"
echo "GPUSHARE_MEMORY_LIMIT=1TiB" >>"$work/prolog.conf"
run_prolog SLURM_JOB_ID=5 SLURM_SHARDS_ON_NODE=3
expect_eq "site file: an unknown name exports nothing" "$(grep -c '^export ' <<<"$out" || true)" 0
expect_contains "site file: an unknown name is reported" "$err" "unknown setting 'GPUSHARE_MEMORY_LIMIT'"
prolog=$EXAMPLES_SOURCE_DIR/examples/slurm/daemonless/gpushare-task-prolog.sh

# A line break in a value cannot smuggle a line to Slurm.
run_prolog SLURM_JOB_ID=99 CUDA_VISIBLE_DEVICES=0 GPUSHARE_MEMORY_LIMIT=$'1GiB\nexport LD_PRELOAD=/tmp/x.so'
expect_eq "line break: nothing exported" "$(grep -c '^export ' <<<"$out" || true)" 0
expect_eq "line break: one line of output" "$(wc -l <<<"$out")" 1
finish
