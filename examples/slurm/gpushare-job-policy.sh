#!/usr/bin/env bash
# Slurm Prolog and Epilog (slurmd, as root) for gpushare's isolation mode: each job that was given
# a GPU on this node becomes one tenant of the node agent, known by its cgroup, with limits from
# its shards. Installed as /etc/slurm/gpushare-job-policy.sh and run through the two wrappers
# gpushare-prolog.sh ("prolog") and gpushare-epilog.sh ("epilog"): slurm.conf names a program, not
# a command line.
#
#   prolog: writes /etc/gpushare/policy.d/job_<ID>.toml, a [tenant."job_<ID>"] table whose member
#           is the job's cgroup (<stepd scope>/job_<ID>/*: every step and task of the job), then
#           rebuilds /etc/gpushare/policy.toml from policy.base.toml and every job_*.toml, and
#           reloads the agent.
#   epilog: removes the job's table, rebuilds and reloads.
#
# Limits (site settings in /etc/gpushare/slurm.conf, NAME=value lines, parsed, not sourced):
#   a job with N shards (SLURM_SHARDS_ON_NODE=N): memory N x GPUSHARE_SLURM_SHARD_MEMORY and a share
#     of N x 100 / GPUSHARE_SLURM_SHARDS_PER_GPU percent (each when set);
#   a job with whole GPUs: memory GPUSHARE_SLURM_GPU_MEMORY (default unlimited), no share;
#   a job without a GPU on this node: nothing (the agent's [default] decides; refused by default).
# slurmd builds this program's environment itself from the allocation (SLURM_JOB_ID, SLURM_JOB_GPUS,
# CUDA_VISIBLE_DEVICES and the GRES variables); nothing of the job's own environment reaches it.
#
# Any failure exits 1, which makes Slurm drain the node and requeue the job: a job that started
# without its table would have its processes refused by the agent.
#
# For tests, these paths may be replaced through the environment (slurmd sets none of them):
# GPUSHARE_SLURM_CONFIG, GPUSHARE_SLURM_POLICY, GPUSHARE_SLURM_POLICY_BASE, GPUSHARE_SLURM_POLICY_DIR,
# and GPUSHARE_SLURM_RELOAD (the reload command; default: `systemctl reload gpushare-agent` when
# the unit is active).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
umask 022
shopt -s nullglob

action=${1:-}
job=${SLURM_JOB_ID:-}
config=${GPUSHARE_SLURM_CONFIG:-/etc/gpushare/slurm.conf}
policy=${GPUSHARE_SLURM_POLICY:-/etc/gpushare/policy.toml}
base=${GPUSHARE_SLURM_POLICY_BASE:-/etc/gpushare/policy.base.toml}
fragments=${GPUSHARE_SLURM_POLICY_DIR:-/etc/gpushare/policy.d}

die() {
  echo "gpushare ${action:-job-policy} (job ${job:-?}): $*" >&2
  exit 1
}

[[ $action == prolog || $action == epilog ]] || die "usage: gpushare-job-policy.sh prolog|epilog"
[[ $job =~ ^[0-9]{1,10}$ ]] || die "SLURM_JOB_ID '$job' is not a job number"

# The site's settings: only these names, each NAME=value, '#' starts a comment.
shard_memory="" shards_per_gpu="" gpu_memory="" stepd_scope=/system.slice/slurmstepd.scope
if [[ -e $config ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    [[ $line =~ ^[[:space:]]*$ ]] && continue
    [[ $line =~ ^[[:space:]]*([A-Z_]+)[[:space:]]*=[[:space:]]*([^[:space:]]*)[[:space:]]*$ ]] ||
      die "$config: '$line' is not NAME=value"
    value=${BASH_REMATCH[2]}
    case ${BASH_REMATCH[1]} in
      GPUSHARE_SLURM_SHARD_MEMORY) shard_memory=$value ;;
      GPUSHARE_SLURM_SHARDS_PER_GPU) shards_per_gpu=$value ;;
      GPUSHARE_SLURM_GPU_MEMORY) gpu_memory=$value ;;
      GPUSHARE_SLURM_STEPD_SCOPE) stepd_scope=$value ;;
      GPUSHARE_SLURM_PRELOAD | GPUSHARE_SLURM_SOCKET) ;;  # the task prolog's
      *) die "$config: unknown setting '${BASH_REMATCH[1]}'" ;;
    esac
  done <"$config"
fi

# SIZE ("10GiB", "512Mi", "1073741824") as bytes, at most 1 PiB; status 1 when it is not one.
# The same binary suffixes gpushare takes; "10G" (decimal or binary?) is refused, as there.
size_in_bytes() {
  [[ $1 =~ ^([0-9]{1,16})(B|KiB|Ki|MiB|Mi|GiB|Gi|TiB|Ti|PiB|Pi)?$ ]] || return 1
  local number=$((10#${BASH_REMATCH[1]})) shift=0
  case ${BASH_REMATCH[2]} in
    KiB | Ki) shift=10 ;;
    MiB | Mi) shift=20 ;;
    GiB | Gi) shift=30 ;;
    TiB | Ti) shift=40 ;;
    PiB | Pi) shift=50 ;;
  esac
  ((number <= (1 << (50 - shift)))) || return 1
  printf '%s' $((number << shift))
}
# A shard count: 1 to 4096 (so that shards x 1 PiB stays below 2^63).
count() { [[ $1 =~ ^[0-9]{1,4}$ ]] && ((10#$1 >= 1 && 10#$1 <= 4096)); }

tenant=job_$job
fragment=$fragments/$tenant.toml

# Serialises the prologs and epilogs of concurrent jobs, which all rewrite the one policy file.
lock() {
  [[ -d $fragments ]] || die "the folder $fragments is missing (see examples/slurm/README.md)"
  exec {lock_fd}>"$fragments/.lock"
  flock -w 60 "$lock_fd" || die "waited 60 s for $fragments/.lock"
}

# policy.toml = the base file, then every job's table; written beside it and renamed over it, so
# the agent never reads half a file.
rebuild() {
  [[ -f $base ]] || die "the base policy $base is missing (see examples/slurm/README.md)"
  local temporary
  temporary=$(mktemp "$(dirname "$policy")/.policy.toml.XXXXXX") || die "cannot write beside $policy"
  {
    echo "# Written by gpushare-job-policy.sh from $base and $fragments/job_*.toml: edit those."
    cat "$base"
    for table in "$fragments"/job_*.toml; do
      echo
      cat "$table"
    done
  } >"$temporary" || die "cannot write $temporary"
  chmod 0644 "$temporary"
  mv -f "$temporary" "$policy" || die "cannot replace $policy"
}

reload_agent() {
  if [[ -n ${GPUSHARE_SLURM_RELOAD:-} ]]; then
    local -a command
    read -r -a command <<<"$GPUSHARE_SLURM_RELOAD"
    "${command[@]}" || die "'$GPUSHARE_SLURM_RELOAD' failed"
  elif systemctl is-active --quiet gpushare-agent; then
    systemctl reload gpushare-agent || die "systemctl reload gpushare-agent failed"
  else
    echo "gpushare $action (job $job): gpushare-agent is not running; it reads $policy when it starts" >&2
  fi
}

if [[ $action == epilog ]]; then
  [[ -e $fragment ]] || exit 0  # not a GPU job here: nothing to undo, no reload
  lock
  rm -f "$fragment" || die "cannot remove $fragment"
  rebuild
  reload_agent
  exit 0
fi

# Only jobs given a GPU (or shards of one) on this node.
shards=${SLURM_SHARDS_ON_NODE:-}
if [[ -z $shards${SLURM_JOB_GPUS:-}${CUDA_VISIBLE_DEVICES:-} ]]; then
  exit 0
fi

[[ $stepd_scope =~ ^(/[A-Za-z0-9_.@:-]+)+$ && $stepd_scope/ != */./* && $stepd_scope/ != */../* ]] ||
  die "$config: GPUSHARE_SLURM_STEPD_SCOPE '$stepd_scope' is not a cgroup path"
memory=unlimited share=""
if [[ -n $shards ]]; then
  count "$shards" || die "SLURM_SHARDS_ON_NODE '$shards' is not a shard count"
  shards=$((10#$shards))
  detail="$shards shard(s)"
  if [[ -n $shard_memory ]]; then
    per_shard=$(size_in_bytes "$shard_memory") ||
      die "$config: GPUSHARE_SLURM_SHARD_MEMORY '$shard_memory' is not a size up to 1PiB (e.g. 10GiB)"
    memory=$((shards * per_shard))
  fi
  if [[ -n $shards_per_gpu ]]; then
    count "$shards_per_gpu" || die "$config: GPUSHARE_SLURM_SHARDS_PER_GPU '$shards_per_gpu' is not a shard count"
    share=$((shards * 100 / 10#$shards_per_gpu))
    ((share >= 1)) || share=1
    ((share <= 100)) || share=100
  fi
else
  detail="GPU(s) ${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES}}"
  if [[ -n $gpu_memory ]]; then
    memory=$(size_in_bytes "$gpu_memory") ||
      die "$config: GPUSHARE_SLURM_GPU_MEMORY '$gpu_memory' is not a size up to 1PiB (e.g. 80GiB)"
  fi
fi

lock
temporary=$(mktemp "$fragments/.job.XXXXXX") || die "cannot write in $fragments"
{
  echo "# job $job (uid ${SLURM_JOB_UID:-?}): $detail"
  echo "[tenant.\"$tenant\"]"
  echo "cgroups = [\"$stepd_scope/job_$job/*\"]"
  echo "memory = \"$memory\""
  [[ -z $share ]] || echo "share = $share"
} >"$temporary" || die "cannot write $temporary"
chmod 0644 "$temporary"
mv -f "$temporary" "$fragment" || die "cannot write $fragment"
rebuild
reload_agent
