#!/bin/bash
# The allocation path's added cost in isolation mode against the daemonless mode, in one run:
# hook_bench's cuMemAlloc_v2+cuMemFree_v2 pair (1 MiB, fake driver) through the preload library
# with a state file of its own (daemonless), then as a tenant of a node agent started here (leases),
# alternating ROUNDS times; prints each round's added nanoseconds and the ratio of the medians.
#   bench/agent_alloc_bench.sh BUILD_DIR [ROUNDS]
# The issue's target: the agent's added cost at most 2x the daemonless one.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [ROUNDS]}
rounds=${2:-5}
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill "$agent" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
printf '[tenant.bench]\nuids = [%s]\nmemory = "64GiB"\n' "$(id -u)" > "$work/policy.toml"
"$build/tools/gpushare" agent --socket "$work/agent.sock" --state "$work/agent.state" \
  --policy "$work/policy.toml" 2>"$work/agent.log" &
agent=$!
for _ in $(seq 100); do [ -S "$work/agent.sock" ] && break; sleep 0.05; done
[ -S "$work/agent.sock" ] || { cat "$work/agent.log"; exit 1; }

added() {  # the "added" ns of the allocation pair in one hook_bench run
  "$build/bench/hook_bench" --benchmark_filter='AllocFree' --benchmark_repetitions=5 \
    --benchmark_report_aggregates_only=true 2>/dev/null |
    awk '/cuMemAlloc_v2\+cuMemFree_v2/ { for (i = 1; i <= NF; i++) if ($i == "added") print $(i + 1) }'
}
daemonless=() agent_mode=()
for round in $(seq "$rounds"); do
  d=$(GPUSHARE_AGENT= added)  # empty: the daemonless mode, whatever socket exists
  a=$(GPUSHARE_AGENT="$work/agent.sock" added)
  daemonless+=("$d") agent_mode+=("$a")
  printf 'round %d: added ns  daemonless %8s  agent %8s\n' "$round" "$d" "$a"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
md=$(median "${daemonless[@]}") ma=$(median "${agent_mode[@]}")
awk -v d="$md" -v a="$ma" 'BEGIN { printf "median added ns: daemonless %.1f  agent %.1f  ratio %.2f (target <= 2)\n", d, a, a / d }'
grep -q "tenant bench" "$work/agent.log" || { echo "the agent never saw the benchmark: it did not run in isolation mode"; exit 1; }
