#!/usr/bin/env bash
# A torture run of gpushare on the fake driver, as a hostile and unlucky user would do it. Parts:
#   kill    a kill storm under load: tenants with quotas hold memory, allocate and free, and launch
#           kernels while random participants are killed with SIGKILL at random moments and
#           started again; then, everything stopped, no byte may stay charged and no process may
#           be wedged (tests/torture/kill_storm.sh)
#   damage  garbage written into chosen fields of the live state file (tests/torture/state_damage):
#           no participant may crash or hang; a new process joins or refuses with a message
#           (tests/torture/damage.sh)
#   starve  one of three spinners is stopped and continued at random moments (and held to 20 % of
#           a CPU where cgroup v2 allows): the longest stall the other tenants see
#           (tests/torture/starvation.sh)
# It builds nothing: --build names a build tree with the tests built (cmake --build DIR).
#
#   scripts/torture.sh [--build DIR] [--parts kill,damage,starve] [--kills N] [--hang-bound S]
#                      [--stall-bound MS] [--holder-grace-ms MS] [--starve-seconds S]
#                      [--damage KIND,...] [--seed N] [--keep]
#
#   --build DIR          the build tree (default ./build)
#   --parts LIST         which parts to run, in order (default all three)
#   --kills N            SIGKILLs in the kill storm (default 1000)
#   --hang-bound S       seconds any process may take to end once asked, or to finish a short job;
#                        longer is a hang (default 5)
#   --stall-bound MS     the longest stall accepted in the starvation part (default 500)
#   --holder-grace-ms MS how much longer a stall may last when the stopped tenant held the slice
#                        inside a launch: the handover grace, docs/architecture.md (default 1000)
#   --starve-seconds S   how long the starvation part stops and continues its victim (default 20)
#   --damage KINDS       which kinds of damage (default all; the names are printed per kind)
#   --seed N             seeds the random choices ($RANDOM); timing stays random
#   --keep               keep the temporary folder (logs of every process) and print its path
#
# Exit status: 0 when every part passed; 1 when one failed (bytes leaked, a process wedged, crashed
# or failed without a message, a stall over the bound); 2 for bad usage or a missing build.
# shellcheck source-path=SCRIPTDIR/..
set -uo pipefail
export LC_ALL=C  # a '.' in $EPOCHREALTIME

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=./build
parts=kill,damage,starve
kills=1000
hang_bound=5      # seconds: the longest any process may take to end when asked, or any command
stall_bound=500   # ms: the longest stall the starvation part accepts
holder_grace_ms=1000  # ms more for a stall of a holder stopped inside a launch (the handover grace)
starve_seconds=20
damage_kinds=all
seed=$((RANDOM * 32768 + RANDOM))
keep=false

usage() {
  sed -n '2,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while (($# > 0)); do
  case $1 in
    --build) build=${2:?}; shift ;;
    --parts) parts=${2:?}; shift ;;
    --kills) kills=${2:?}; shift ;;
    --hang-bound) hang_bound=${2:?}; shift ;;
    --stall-bound) stall_bound=${2:?}; shift ;;
    --holder-grace-ms) holder_grace_ms=${2:?}; shift ;;
    --starve-seconds) starve_seconds=${2:?}; shift ;;
    --damage) damage_kinds=${2:?}; shift ;;
    --seed) seed=${2:?}; shift ;;
    --keep) keep=true ;;
    -h | --help) usage ;;
    *) echo "torture: unknown option $1" >&2; usage ;;
  esac
  shift
done
for number in "$kills" "$hang_bound" "$stall_bound" "$holder_grace_ms" "$starve_seconds" "$seed"; do
  [[ $number =~ ^[0-9]+$ ]] || { echo "torture: not a whole number: $number" >&2; exit 2; }
done
((hang_bound > 0)) || { echo "torture: --hang-bound must be at least 1" >&2; exit 2; }

build=$(cd "$build" 2>/dev/null && pwd) || { echo "torture: no build folder $build" >&2; exit 2; }
gpushare=$build/tools/gpushare
preload=$build/interpose/libgpushare-preload.so
probe=$build/tests/e2e/alloc_probe
workload=$build/tests/e2e/gpu_workload
damage=$build/tests/torture/state_damage
fake=$build/tests/fake_cuda/libcuda.so.1
for file in "$gpushare" "$preload" "$probe" "$workload" "$damage" "$fake"; do
  if [[ ! -e $file ]]; then
    echo "torture: $file is missing: build the tree first (cmake --build $build)" >&2
    exit 2
  fi
done

# Nothing from the caller's environment may steer gpushare, HAMi's aliases or the fake driver.
for name in $(compgen -e); do
  case $name in
    GPUSHARE* | CUDA_DEVICE_* | FAKE_CUDA_* | WORKLOAD_* | LD_PRELOAD | CUDA_VISIBLE_DEVICES) unset "$name" ;;
  esac
done
export GPUSHARE_REAL_LIBCUDA=$fake GPUSHARE_PRELOAD_LIBRARY=$preload
export FAKE_CUDA_DEVICE_MEMORY=$((8 << 30))  # an 8 GiB card; each part shares its own engine file

work=$(mktemp -d "${TMPDIR:-/tmp}/gpushare-torture.XXXXXX")
mkfifo "$work/never"
exec {never_fd}<>"$work/never"

# shellcheck source=tests/torture/processes.sh
source "$root/tests/torture/processes.sh"
# shellcheck source=tests/torture/kill_storm.sh
source "$root/tests/torture/kill_storm.sh"
# shellcheck source=tests/torture/damage.sh
source "$root/tests/torture/damage.sh"
# shellcheck source=tests/torture/starvation.sh
source "$root/tests/torture/starvation.sh"

cleanup() {
  end_all_started
  starvation_cleanup
  if $keep; then echo "torture: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

RANDOM=$seed
echo "torture: build $build, parts $parts, seed $seed, hang bound ${hang_bound}s"
summary=()
failed_parts=()
started_at=$SECONDS
IFS=, read -ra wanted <<<"$parts"
for part in "${wanted[@]}"; do
  case $part in
    kill) kill_storm ;;
    damage) state_damage ;;
    starve) cpu_starvation ;;
    *) echo "torture: unknown part $part (kill, damage, starve)" >&2; exit 2 ;;
  esac
  end_all_started  # whatever a part left behind after a failure
done

echo "== summary ($((SECONDS - started_at)) s, seed $seed)"
for line in "${summary[@]}"; do echo "$line"; done
((${#failed_parts[@]} == 0))
