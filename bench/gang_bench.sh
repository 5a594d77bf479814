#!/bin/bash
# Multi-GPU ring jobs sharing GPUs under gpushare, on the fake driver's collectives (one engine file,
# FAKE_CUDA_DEVICE_COUNT=4): each rank is a ring_workload process; a job's ranks run as one tenant
# (`gpushare run --tenant jobN --share 50`). For steps of 200 us (150 compute + 50 collective), 1 ms
# (750 + 250) and 5 ms (3750 + 1250), SECONDS each (default 6):
#   (a) a 2-rank job alone on GPUs 0-1: its steps are the solo reference;
#   (b) two 2-rank jobs on GPUs 0-1: each job's steps as % of solo, and their sum (the aggregate);
#   (c) the same with 4-rank jobs on GPUs 0-3;
#   (d) a 2-rank job plus a single-GPU tenant (gpu_workload, 1 ms kernels) on GPU 0, both at share
#       50: the job's steps as % of solo, the tenant's kernel time as % of the wall time.
# Weighted shares, 1 ms steps only:
#   (e) two 2-rank jobs on GPUs 0-1 at --share 30 and --share 70 (after their own solo reference):
#       each job's steps as % of solo, and its part of the pair's steps;
#   (f) two tenants at --share 30 and --share 70, each running two independent gpu_workload
#       processes (1 ms kernels, no collectives), one on GPU 0 and one on GPU 1: each tenant's
#       kernel time as % of the wall time, per GPU.
#   bench/gang_bench.sh BUILD_DIR [SECONDS] [SECTIONS]
# SECTIONS: the letters of the sections to run (default abcdef; (a) runs whenever (b), (c) or (d)
# does). Builds nothing. Issue 16's targets (after gang slices): each job >= 47 % of solo, aggregate
# >= 95 % at 200 us; the single-GPU tenant 50 +- 3 %; weighted shares within 3 points of 30/70.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [SECONDS] [SECTIONS]}
seconds=${2:-6}
sections=${3:-abcdef}
ring=$build/tests/e2e/ring_workload
workload=$build/tests/e2e/gpu_workload
gpushare=$build/tools/gpushare
for program in "$ring" "$workload" "$gpushare"; do
  [ -x "$program" ] || { echo "missing $program: build first" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'jobs -p | xargs -r kill 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
export LD_LIBRARY_PATH=$build/tests/fake_cuda GPUSHARE_REAL_LIBCUDA=$build/tests/fake_cuda/libcuda.so.1
export FAKE_CUDA_DEVICE_COUNT=4 FAKE_CUDA_ENGINE=$work/engine
group=0  # every job gets a collective group of its own

# Whether section $1 is to run.
wanted() { [[ $sections == *$1* ]]; }

# job NAME WORLD COMPUTE_US COLLECTIVE_US [SHARE]: starts the job's ranks (tenant NAME, share SHARE,
# default 50) on GPUs 0..WORLD-1 in the background, each rank's output in $work/NAME.rank<r>.
job() {
  local name=$1 world=$2 compute=$3 collective=$4 share=${5:-50} rank
  group=$((group + 1))
  for rank in $(seq 0 $((world - 1))); do
    PROBE_DEVICE=$rank "$gpushare" run --tenant "$name" --share "$share" --state "$work/state" -- \
      "$ring" "$rank" "$world" "$group" "$seconds" "$compute" "$collective" >"$work/$name.rank$rank" 2>&1 &
  done
}
# The steps a job ran (rank 0's count; every rank runs the same), or a message and exit.
steps_of() {
  local value
  value=$(sed -n 's/.*steps=\([0-9]*\).*/\1/p' "$work/$1.rank0")
  [ -n "$value" ] || { echo "job $1 failed:" >&2; cat "$work/$1".rank* >&2; exit 1; }
  echo "$value"
}
percent() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * a / b }'; }
# A gpu_workload's kernel time as % of its wall time (file $1), or a message and exit.
kernel_percent() {
  local value
  value=$(awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
               END { if (v["wall_us"] > 0) printf "%.1f", 100 * v["kernel_us"] / v["wall_us"] }' "$1")
  [ -n "$value" ] || { echo "gpu_workload failed ($1):" >&2; cat "$1" >&2; exit 1; }
  echo "$value"
}

run=0
for sizes in "150 50" "750 250" "3750 1250"; do
  read -r compute collective <<<"$sizes"
  step_us=$((compute + collective))
  for world in 2 4; do
    if [ "$world" = 2 ]; then wanted b || wanted d || continue; else wanted c || continue; fi
    run=$((run + 1))
    job "solo$run" "$world" "$compute" "$collective"
    wait
    solo=$(steps_of "solo$run")
    if [ "$world" = 4 ] || wanted b; then
      job "a$run" "$world" "$compute" "$collective"
      job "b$run" "$world" "$compute" "$collective"
      wait
      a=$(steps_of "a$run") b=$(steps_of "b$run")
      printf '%4d us steps, two %d-rank jobs at 50/50: solo %6d steps; job1 %5s %%  job2 %5s %%  aggregate %5s %% of solo\n' \
        "$step_us" "$world" "$solo" "$(percent "$a" "$solo")" "$(percent "$b" "$solo")" "$(percent $((a + b)) "$solo")"
    fi
    [ "$world" = 2 ] && wanted d || continue
    # (d) against the same solo reference: the job and a single-GPU tenant on its GPU 0.
    job "g$run" 2 "$compute" "$collective"
    PROBE_DEVICE=0 "$gpushare" run --tenant single$run --share 50 --state "$work/state" -- \
      "$workload" linked saturate "$seconds" 1000 >"$work/single$run.out" 2>&1 &
    wait
    g=$(steps_of "g$run")
    single=$(kernel_percent "$work/single$run.out")
    printf '%4d us steps, a 2-rank job + a single-GPU tenant on GPU 0 at 50/50: job %5s %% of solo, tenant %5s %% of GPU 0\n' \
      "$step_us" "$(percent "$g" "$solo")" "$single"
  done
done

# (e) Two 2-rank jobs at 30/70, 1 ms steps, against a solo reference of their own.
if wanted e; then
  job weighted_solo 2 750 250
  wait
  solo=$(steps_of weighted_solo)
  job weighted30 2 750 250 30
  job weighted70 2 750 250 70
  wait
  low=$(steps_of weighted30) high=$(steps_of weighted70)
  printf '1000 us steps, two 2-rank jobs at 30/70: solo %6d steps; job30 %5s %% of solo, %5s %% of the pair;' \
    "$solo" "$(percent "$low" "$solo")" "$(percent "$low" $((low + high)))"
  printf ' job70 %5s %% of solo, %5s %% of the pair\n' "$(percent "$high" "$solo")" "$(percent "$high" $((low + high)))"
fi

# (f) Two tenants at 30/70, each with one independent gpu_workload process on GPU 0 and one on GPU 1.
if wanted f; then
  for share in 30 70; do
    for gpu in 0 1; do
      PROBE_DEVICE=$gpu "$gpushare" run --tenant "independent$share" --share "$share" --state "$work/state" -- \
        "$workload" linked saturate "$seconds" 1000 >"$work/independent$share.gpu$gpu" 2>&1 &
    done
  done
  wait
  for gpu in 0 1; do
    printf 'independent processes on GPUs 0 and 1 at 30/70, GPU %d: tenant30 %5s %%  tenant70 %5s %% of the wall time\n' \
      "$gpu" "$(kernel_percent "$work/independent30.gpu$gpu")" "$(kernel_percent "$work/independent70.gpu$gpu")"
  done
fi
