#!/usr/bin/env bash
# Slurm TaskProlog: makes every task of a job that uses a GPU a process of one gpushare tenant, so
# that jobs sharing a GPU (gres/shard) get memory quotas and shares of GPU time.
#
# Slurm runs it as the job's user, in the task's environment, before each task starts, and reads
# its standard output: `export NAME=value` lines enter the task's environment, `unset NAME` lines
# remove a variable and `print TEXT` lines go to the task's output. This script prints:
#
#   export LD_PRELOAD=<libgpushare-preload.so>[:what the job had]
#   export GPUSHARE_TENANT=slurm-job-<SLURM_JOB_ID>    one tenant per job, shared by all its tasks
#   export GPUSHARE_STATE=<the node's state file>
#   export GPUSHARE_MEMORY_LIMIT=<bytes>                and, when chosen, GPUSHARE_COMPUTE_SHARE,
#                                                       GPUSHARE_COMPUTE_LIMIT, GPUSHARE_PRIORITY
#
# The limits (README.md has examples):
#   - From the job's shards (gres/shard, SLURM_SHARDS_ON_NODE), when the site sets
#     GPUSHARE_PROLOG_SHARD_MEMORY (memory per shard) and/or GPUSHARE_PROLOG_SHARDS_PER_GPU (the
#     shards each GPU has in gres.conf): N shards give N x the shard memory and N/shards-per-GPU of
#     the GPU's time.
#   - From the job's own environment: GPUSHARE_MEMORY_LIMIT, GPUSHARE_COMPUTE_SHARE,
#     GPUSHARE_COMPUTE_LIMIT (0: none), GPUSHARE_PRIORITY (sbatch passes the submitting shell's
#     environment by default, or --export=ALL,GPUSHARE_MEMORY_LIMIT=8GiB). With shards they can
#     only lower what the shards give.
#   Per-device and HAMi-named variables in the job's environment are unset, so that nothing but
#   these limits applies.
#
# Every value is checked (by `gpushare run` itself, which parses exactly as the library does).
# Anything wrong: a message on stderr and in the job's output, and no export at all, so the job
# runs without gpushare rather than with half a configuration.
#
# Site settings, read from /etc/gpushare/slurm-task-prolog.conf (NAME=value lines; they override
# the job's environment, where the same names are read when the file does not set them):
#   GPUSHARE                        the gpushare command (default: the first installed one found)
#   GPUSHARE_PROLOG_STATE           the node's state file (default /run/gpushare/gpushare.state):
#                                   an empty file of mode 0666 made at boot (README.md), or in a
#                                   folder the jobs' users may write
#   GPUSHARE_PROLOG_SHARD_MEMORY    GPU memory per shard, e.g. 10GiB (default: none)
#   GPUSHARE_PROLOG_SHARDS_PER_GPU  shards per GPU in gres.conf, e.g. 8 (default: none)
set -euo pipefail
# Slurm starts prologs without a search path.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

job=${SLURM_JOB_ID:-?}
# Stops without exporting anything; the job runs as it would without gpushare, and says why.
fail() {
  # One line each: a value with a line break in it must not become a line Slurm would act on.
  local why=${*//[$'\n\r']/ }
  echo "gpushare task prolog (job $job): $why; the job runs without gpushare" >&2
  echo "print gpushare: $why; this job runs without GPU quotas"
  exit 0
}

# Only tasks that were given a GPU (or shards of one) are wrapped.
if [[ -z ${CUDA_VISIBLE_DEVICES:-}${SLURM_SHARDS_ON_NODE:-}${SLURM_JOB_GPUS:-}${SLURM_STEP_GPUS:-} ]]; then
  exit 0
fi

# The site's file wins over the job's environment: parsed, not sourced, since this runs as the
# job's user and only these names have any business there.
config=/etc/gpushare/slurm-task-prolog.conf
if [[ -r $config ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    line=${line#"${line%%[![:space:]]*}"}
    line=${line%"${line##*[![:space:]]}"}
    [[ -n $line ]] || continue
    [[ $line == *=* ]] || fail "$config: '$line' is not NAME=value"
    key=${line%%=*}
    key=${key%"${key##*[![:space:]]}"}
    value=${line#*=}
    value=${value#"${value%%[![:space:]]*}"}
    case $key in
      GPUSHARE | GPUSHARE_PROLOG_STATE | GPUSHARE_PROLOG_SHARD_MEMORY | GPUSHARE_PROLOG_SHARDS_PER_GPU)
        printf -v "$key" '%s' "$value"
        ;;
      *) fail "$config: unknown setting '$key'" ;;
    esac
  done <"$config"
fi
state=${GPUSHARE_PROLOG_STATE:-/run/gpushare/gpushare.state}
shard_memory=${GPUSHARE_PROLOG_SHARD_MEMORY:-}
shards_per_gpu=${GPUSHARE_PROLOG_SHARDS_PER_GPU:-}

gpushare=${GPUSHARE:-}
if [[ -z $gpushare ]]; then
  for candidate in /usr/bin/gpushare /usr/local/bin/gpushare /opt/gpushare/bin/gpushare; do
    if [[ -x $candidate ]]; then
      gpushare=$candidate
      break
    fi
  done
fi
[[ -n $gpushare && -x $gpushare ]] || fail "gpushare is not installed on ${HOSTNAME:-this node} (set GPUSHARE)"

[[ $job =~ ^[0-9]+$ ]] || fail "SLURM_JOB_ID '$job' is not a job number"
# The library would refuse every allocation if it could not create or open the state file: better
# to say so now.
state_dir=$(dirname "$state")
[[ $state == /* && $state != *[[:space:]]* ]] || fail "the state file '$state' must be an absolute path without spaces"
# Either the file is there for everyone to write (the site made it, see README.md), or this job may
# create it.
if [[ -e $state ]]; then
  [[ -f $state && -r $state && -w $state ]] || fail "the state file $state is not readable and writable (see README.md)"
else
  [[ -d $state_dir && -w $state_dir ]] || fail "the state folder $state_dir is missing or not writable (see README.md)"
fi

# A SIZE as exact bytes (or "unlimited"), parsed by gpushare itself, which prints what is wrong
# with a bad one. (Helpers return a status: `fail` inside $(...) would only end the subshell.)
size_in_bytes() {
  "$gpushare" run --state "$state" --memory "$1" -- printenv GPUSHARE_MEMORY_LIMIT
}
# A percentage 1-100 (optionally with %), checked by gpushare, as a plain number.
percent() {
  local value=$1
  "$gpushare" run --state "$state" --share "$value" -- true || return 1
  value=${value%\%}
  printf '%s' $((10#$value))
}

shards=${SLURM_SHARDS_ON_NODE:-}
if [[ -n $shards ]]; then
  if ! [[ $shards =~ ^[0-9]{1,6}$ ]] || ((10#$shards == 0)); then
    fail "SLURM_SHARDS_ON_NODE '$shards' is not a shard count"
  fi
  shards=$((10#$shards))
fi

# Memory: the job's own request, lowered to what its shards give.
memory=""
if [[ -n ${GPUSHARE_MEMORY_LIMIT+set} ]]; then
  memory=$(size_in_bytes "$GPUSHARE_MEMORY_LIMIT") || fail "GPUSHARE_MEMORY_LIMIT='$GPUSHARE_MEMORY_LIMIT' is not a size"
fi
if [[ -n $shards && -n $shard_memory ]]; then
  per_shard=$(size_in_bytes "$shard_memory") || fail "GPUSHARE_PROLOG_SHARD_MEMORY='$shard_memory' is not a size"
  # 2^50 bytes per shard and a million shards stay below 2^63: no overflow in shell arithmetic.
  if [[ $per_shard == unlimited ]] || ((per_shard > 1 << 50)); then
    fail "GPUSHARE_PROLOG_SHARD_MEMORY='$shard_memory' must be a size up to 1PiB"
  fi
  ceiling=$((shards * per_shard))
  if [[ -z $memory || $memory == unlimited ]] || ((memory > ceiling)); then
    [[ -z $memory ]] || echo "gpushare task prolog (job $job): memory lowered to the $shards shard(s) of the job: $ceiling bytes" >&2
    memory=$ceiling
  fi
fi

# Share of GPU time: likewise.
share=""
if [[ -n ${GPUSHARE_COMPUTE_SHARE+set} ]]; then
  share=$(percent "$GPUSHARE_COMPUTE_SHARE") ||
    fail "GPUSHARE_COMPUTE_SHARE='$GPUSHARE_COMPUTE_SHARE' is not a percentage from 1 to 100"
fi
if [[ -n $shards && -n $shards_per_gpu ]]; then
  if ! [[ $shards_per_gpu =~ ^[0-9]{1,6}$ ]] || ((10#$shards_per_gpu == 0)); then
    fail "GPUSHARE_PROLOG_SHARDS_PER_GPU '$shards_per_gpu' is not a shard count"
  fi
  share_ceiling=$((shards * 100 / 10#$shards_per_gpu))
  ((share_ceiling >= 1)) || share_ceiling=1
  ((share_ceiling <= 100)) || share_ceiling=100
  if [[ -z $share ]] || ((share > share_ceiling)); then
    share=$share_ceiling
  fi
fi

limit=""
# A hard cap of 0 means none, as for the library.
if [[ -n ${GPUSHARE_COMPUTE_LIMIT+set} && $GPUSHARE_COMPUTE_LIMIT != 0 ]]; then
  limit=$GPUSHARE_COMPUTE_LIMIT
fi
priority=${GPUSHARE_PRIORITY-}
[[ -z ${GPUSHARE_PRIORITY+set} || -n $priority ]] || fail "GPUSHARE_PRIORITY is empty"

tenant=slurm-job-$job
options=(--tenant "$tenant" --state "$state")
[[ -z $memory ]] || options+=(--memory "$memory")
[[ -z $share ]] || options+=(--share "$share")
[[ -z $limit ]] || options+=(--limit "$limit")
[[ -z $priority ]] || options+=(--priority "$priority")

# The whole configuration goes through `gpushare run`, which checks every option exactly as the
# library parses it and, only when all are good, execs the command with a tenant's environment:
# its LD_PRELOAD (the installed library first, then whatever the job preloads) is the one to export.
preload=$("$gpushare" run "${options[@]}" -- printenv LD_PRELOAD) || fail "invalid gpushare settings (see above)"
[[ -n $preload && $preload != *[$'\n\r']* ]] || fail "LD_PRELOAD cannot be exported as one line"

# Per-device quotas and HAMi's names would take precedence over, or add to, the limits above.
for name in $(compgen -e); do
  if [[ $name =~ ^(GPUSHARE_MEMORY_LIMIT_[0-9]+|CUDA_DEVICE_MEMORY_LIMIT(_[0-9]+)?|CUDA_DEVICE_SM_LIMIT|CUDA_DEVICE_MEMORY_SHARED_CACHE)$ ]]; then
    echo "unset $name"
  fi
done
# Every value below has been checked by gpushare run, so none can hold a line break.
echo "export LD_PRELOAD=$preload"
echo "export GPUSHARE_TENANT=$tenant"
echo "export GPUSHARE_STATE=$state"
[[ -z $memory ]] || echo "export GPUSHARE_MEMORY_LIMIT=$memory"
[[ -z $share ]] || echo "export GPUSHARE_COMPUTE_SHARE=$share"
[[ -z $limit ]] || echo "export GPUSHARE_COMPUTE_LIMIT=$limit"
[[ -z $priority ]] || echo "export GPUSHARE_PRIORITY=$priority"
