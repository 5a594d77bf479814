#!/usr/bin/env bash
# gpushare on a real GPU, in two steps (the GPU machine has no Boost, fmt or CLI11):
#
#   bench/device/run.sh prepare   here: build and install into .device/ (ignored by git), with the
#                                 probe, the benchmark and its one shared library
#   bench/device/run.sh [SECTION...]  on the GPU machine, from the repository root, .device/
#                                 carried: checks and prints a table (under 8 minutes; trace alone
#                                 under 2). Sections: memory, compute, matmul, graphs, overhead,
#                                 trace (default: all six)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bundle="$root/.device"

if [[ "${1:-}" == "prepare" ]]; then
  cmake -S "$root" -B "$root/build-device" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$bundle/install" >/dev/null
  cmake --build "$root/build-device" --target gpushare gpushare_preload gpushare_nvml gpushare_real_nvml gpushare_exporter \
    gpushare_agent gpushare_webhook \
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
mps_pipe=""  # the private MPS control daemon's pipe folder while one runs (trace section)
mps_answers() { echo get_server_list | CUDA_MPS_PIPE_DIRECTORY="$mps_pipe" nvidia-cuda-mps-control >/dev/null 2>&1; }
# Asks the private daemon to quit (it stops its server) and waits up to 10 s for it to be gone.
stop_mps() {
  [[ -n $mps_pipe ]] || return 0
  echo quit | CUDA_MPS_PIPE_DIRECTORY="$mps_pipe" nvidia-cuda-mps-control >/dev/null 2>&1 || true
  local tries
  for tries in $(seq 100); do mps_answers || break; sleep 0.1; done
  mps_pipe=""
}
cleanup() { stop_mps; rm -rf "$work"; }
trap cleanup EXIT

sections=" ${*:-memory compute matmul graphs overhead trace} "
want() { [[ $sections == *" $1 "* ]]; }
spin="$work/spin"
# The spin benchmark (a CUDA C++ kernel loop), compiled once for the sections that use it.
need_spin() { [[ -x "$spin" ]] || nvcc -O2 -arch=sm_90 -o "$spin" "$root/bench/device/spin.cu"; }
# Kernels a `spin saturate` output file reports (0 when it reports none: the run failed).
kernels() { local count; count=$(sed -n 's/.*kernels=\([0-9]*\).*/\1/p' "$1" 2>/dev/null || true); echo "${count:-0}"; }
percent() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.1f", 100 * a / b }'; }

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
# tenants NAME:OPTIONS... : runs them side by side under gpushare, prints each one's share
tenants() {
  local pids=() names=()
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
    --benchmark_report_aggregates_only=true 2>&1 | grep ' ratio '
done
fi

if want trace; then
echo "== GPU timestamps: each run traced (gpushare run --trace), its trace summary beside the host figures"
need_spin
unset GPUSHARE_TRACE
traces="$work/trace"
rows="$traces/rows.tsv"
mkdir -p "$traces"
# traced RUN TENANT STATE [OPTION...] -- COMMAND...: COMMAND under gpushare, traced into $traces/RUN,
# its output in $traces/RUN.TENANT.out; a failure is reported and the bench goes on.
traced() {
  local run=$1 tenant=$2 state_file=$3
  shift 3
  "$gpushare" run --tenant "$tenant" --state "$state_file" --trace "$traces/$run" "$@" \
    >"$traces/$run.$tenant.out" || echo "  ($run, $tenant: exit $?)"
}
# Candidates for libcupti: GPUSHARE_CUPTI if set, nvcc's toolkit, PyTorch's nvidia wheels, the
# loader's cache; each once (by its real path).
cupti_candidates() {
  local dirs=() dir
  [[ -z ${GPUSHARE_CUPTI:-} ]] || echo "$GPUSHARE_CUPTI"
  if command -v nvcc >/dev/null; then dirs+=("$(dirname "$(command -v nvcc)")/.."); fi
  dirs+=(/usr/local/cuda)
  mapfile -t -O "${#dirs[@]}" dirs < <(python3 -c 'import nvidia; print("\n".join(nvidia.__path__))' 2>/dev/null || true)
  for dir in "${dirs[@]}"; do
    if [[ -d $dir ]]; then find "$dir/" -maxdepth 4 -name 'libcupti.so*' 2>/dev/null | sort; fi
  done
  ldconfig -p 2>/dev/null | awk '$1 ~ /^libcupti\.so/ { print $NF }'
}
has_kernels() { grep -Eqs '"k" ?: ?"kernel"' "$1"/*.gstrace; }
# The first candidate under which a short traced run records kernels (CUPTI must suit the driver).
cupti=""
tried=0
while read -r candidate && [[ -z $cupti && $tried -lt 4 ]]; do
  tried=$((tried + 1))
  GPUSHARE_CUPTI="$candidate" traced "probe$tried" probe "$traces/probe$tried.state" -- "$spin" latency 0.3 1000
  if has_kernels "$traces/probe$tried"; then
    cupti=$candidate
  else
    echo "  $candidate: no kernel recorded $(grep -hs '"note"' "$traces/probe$tried"/*.gstrace | head -n 1)"
  fi
done < <(cupti_candidates | xargs -r -d '\n' readlink -e | awk '!seen[$0]++')
[[ -n $cupti ]] || echo "no libcupti under which a traced run records kernels ($tried tried): trace section skipped"
fi

if want trace && [[ -n $cupti ]]; then
export GPUSHARE_CUPTI="$cupti"
echo "CUPTI: $cupti"
# row RUN TENANT HOST_FIGURE: one line of the table (summaries in $out/trace-RUN.json)
row() { printf '%s\t%s\t%s\t%s\n' "$1" "$out/trace-$1.json" "$2" "$3" >>"$rows"; }
summarize() {
  local run
  for run in "$@"; do
    "$gpushare" trace summary "$traces/$run" --json >"$out/trace-$run.json" 2>"$traces/$run.err" ||
      { echo "  $run: no trace summary: $(tail -n 1 "$traces/$run.err")"; rm -f "$out/trace-$run.json"; }
  done
}
latency() {
  local figures
  figures=$(sed -n 's/.*p50_us=\([0-9.]*\) p99_us=\([0-9.]*\).*/p50 \1 us, p99 \2 us/p' "$1" 2>/dev/null || true)
  echo "${figures:-no figures}"
}
# pair_rows RUN TENANT TENANT: each one's kernels and share of the two's; the two against one alone
pair_rows() {
  local run=$1 k1 k2
  k1=$(kernels "$traces/$run.$2.out")
  k2=$(kernels "$traces/$run.$3.out")
  row "$run" "$2" "$k1 kernels = $(percent "$k1" $((k1 + k2))) %"
  row "$run" "$3" "$k2 kernels = $(percent "$k2" $((k1 + k2))) %"
  echo "  $run: $2 + $3 = $((k1 + k2)) kernels = $(percent $((k1 + k2)) "$solo_kernels") % of one alone"
}
saturate=("$spin" saturate 5 1000)

echo "-- one alone (the baseline), a 30/70 pair, --limit 30 alone (5 s each)"
traced solo solo "$traces/solo.state" -- "${saturate[@]}"
solo_kernels=$(kernels "$traces/solo.solo.out")
row solo solo "$solo_kernels kernels"
traced pair a30 "$traces/pair.state" --share 30 -- "${saturate[@]}" &
traced pair b70 "$traces/pair.state" --share 70 -- "${saturate[@]}"
wait
pair_rows pair a30 b70
traced cap cap30 "$traces/cap.state" --limit 30 -- "${saturate[@]}"
cap_kernels=$(kernels "$traces/cap.cap30.out")
row cap cap30 "$cap_kernels kernels = $(percent "$cap_kernels" "$solo_kernels") % of one alone"

echo "-- high (short kernel + sync every 2 ms, 3 s) alone, and beside a saturating low tenant"
traced high-alone high "$traces/high-alone.state" --priority high -- "$spin" latency 3 2000
row high-alone high "$(latency "$traces/high-alone.high.out")"
traced high-low low "$traces/high-low.state" --priority low -- "$spin" saturate 4 1000 &
sleep 0.5
traced high-low high "$traces/high-low.state" --priority high -- "$spin" latency 3 2000
wait
row high-low high "$(latency "$traces/high-low.high.out")"
low_kernels=$(kernels "$traces/high-low.low.out")
row high-low low "$low_kernels kernels in 4 s = $(percent "$low_kernels" $((solo_kernels * 4 / 5))) % of one alone"

echo "-- native time-slicing: the pair, each under its own state (no arbitration), traced"
traced native n1 "$traces/native.n1.state" -- "${saturate[@]}" &
traced native n2 "$traces/native.n2.state" -- "${saturate[@]}"
wait
pair_rows native n1 n2
summarize solo pair cap high-alone high-low native

echo "-- launch cost of trace mode: hook_bench's Launch benchmarks, trace off / on alternating"
# launch_cost FILE: hook_bench's launch comparison lines into FILE (trace mode as GPUSHARE_TRACE says)
launch_cost() {
  GPUSHARE_BENCH_DRIVER=libcuda.so.1 GPUSHARE_BENCH_PRELOAD="$bundle/install/lib/gpushare/libgpushare-preload.so" \
    "$bundle/bin/hook_bench" --benchmark_filter=Launch --benchmark_min_time=0.5 --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true 2>&1 | grep ' ratio ' >"$1" || true
}
# hooked FILE WHAT: the through-gpushare ns of the comparison line WHAT
hooked() { awk -v what="$2" 'index($0, what) { for (i = 1; i < NF; i++) if ($i == "hooked") print $(i + 1) }' "$1"; }
# added ROUND WHAT: trace on minus trace off, through gpushare, in that round
added() {
  awk -v on="$(hooked "$traces/launch-on-$1.txt" "$2")" -v off="$(hooked "$traces/launch-off-$1.txt" "$2")" \
    'BEGIN { if (on == "" || off == "") print "?"; else printf "%.1f", on - off }'
}
for round in 1 2; do
  launch_cost "$traces/launch-off-$round.txt"
  mkdir -p "$traces/bench-$round"
  GPUSHARE_TRACE="$traces/bench-$round" launch_cost "$traces/launch-on-$round.txt"
  sed "s/^/  round $round off: /" "$traces/launch-off-$round.txt"
  sed "s/^/  round $round on:  /" "$traces/launch-on-$round.txt"
  echo "  round $round: trace mode adds $(added "$round" "(empty kernel)") ns to a launch through gpushare back" \
    "to back, $(added "$round" "batches of 16") ns in batches of 16 (host)"
  echo "  round $round: the trace holds $(cat "$traces/bench-$round"/*.gstrace 2>/dev/null | grep -Ec '"k" ?: ?"kernel"' || true)" \
    "kernel records, $(du -sh "$traces/bench-$round" | cut -f1)"
  rm -rf "$traces/bench-$round"
done | tee "$out/trace-launch.txt"

echo "-- MPS: the pair as two clients of a private MPS control daemon, traced"
start_mps() {
  local pipe="$work/mps/pipe" log="$work/mps/log" tries
  mkdir -p "$pipe" "$log"
  command -v nvidia-cuda-mps-control >/dev/null || return 1
  CUDA_MPS_PIPE_DIRECTORY="$pipe" CUDA_MPS_LOG_DIRECTORY="$log" nvidia-cuda-mps-control -d || return 1
  mps_pipe=$pipe
  for tries in $(seq 50); do
    mps_answers && return 0
    sleep 0.1
  done
  echo "  MPS control daemon not answering after $tries tries"
  return 1
}
if start_mps; then
  CUDA_MPS_PIPE_DIRECTORY="$mps_pipe" traced mps m1 "$traces/mps.m1.state" -- "${saturate[@]}" &
  CUDA_MPS_PIPE_DIRECTORY="$mps_pipe" traced mps m2 "$traces/mps.m2.state" -- "${saturate[@]}"
  wait
  stop_mps
  grep -hiE -m 3 'error|fail' "$work/mps/log"/*.log 2>/dev/null | sed 's/^/  MPS log: /' || true
  pair_rows mps m1 m2
  summarize mps
else
  stop_mps
  echo "  MPS did not start ($(tail -n 1 "$work/mps/log/control.log" 2>/dev/null || echo "no nvidia-cuda-mps-control")): MPS runs skipped"
fi

echo "-- the table (BUSY/WALL: the tenant's kernel time over its first to last record; GPU line: all tenants)"
python3 "$root/bench/device/trace_table.py" "$rows" | tee "$out/trace-table.txt"
if [[ -n ${OUT:-} ]]; then
  tar czf "$out/trace-runs.tgz" -C "$traces" --exclude='probe*' --exclude='*.state' . 2>/dev/null || true
fi
fi
