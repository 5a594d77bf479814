#!/usr/bin/env bash
# Container entrypoint: runs the container's command as a gpushare tenant.
#
#   ENTRYPOINT ["gpushare-entrypoint.sh"]     docker run -e GPUSHARE_MEMORY_LIMIT=8GiB ... IMAGE CMD...
#
# It turns gpushare's documented variables (docs/configuration.md) into `gpushare run` options and
# execs `gpushare run OPTIONS -- CMD...`. Going through the options rather than leaving the
# variables to the preload library means every value is checked before CMD starts: a bad one is
# reported on stderr and the container exits with status 2, instead of CMD starting and having
# each allocation refused at its first CUDA call (the library's fail-closed policy).
#
#   GPUSHARE_MEMORY_LIMIT      --memory           GPUSHARE_COMPUTE_SHARE  --share
#   GPUSHARE_MEMORY_LIMIT_<i>  --device-memory    GPUSHARE_COMPUTE_LIMIT  --limit (0: none)
#   GPUSHARE_TENANT            --tenant           GPUSHARE_PRIORITY       --priority
#   GPUSHARE_STATE             --state            GPUSHARE_SLICE_MS       --slice-ms
#   GPUSHARE_CONTEXT_MEMORY    --context-memory   GPUSHARE_LOG            --log
#
# HAMi's device plugin sets its own names instead; each is used when gpushare's is not set:
# CUDA_DEVICE_MEMORY_LIMIT, CUDA_DEVICE_MEMORY_LIMIT_<i>, CUDA_DEVICE_SM_LIMIT (0 means none) and
# CUDA_DEVICE_MEMORY_SHARED_CACHE (the tenant's name). Other variables (GPUSHARE_ON_ERROR,
# GPUSHARE_REAL_LIBCUDA, ...) reach the library unchanged through the environment.
#
# GPUSHARE (optional) names the gpushare command; default: `gpushare` on PATH.
set -euo pipefail

gpushare=${GPUSHARE:-gpushare}
if (($# == 0)); then
  echo "gpushare-entrypoint: no command given (docker run IMAGE CMD [ARGS...])" >&2
  exit 2
fi

options=()
# Adds `FLAG VALUE` when the variable is set, even to an empty value: gpushare run refuses an empty
# value with a message, which is better than silently running without the limit someone meant.
add() {
  local flag=$1 name=$2
  if [[ -n ${!name+set} ]]; then
    options+=("$flag" "${!name}")
    return 0
  fi
  return 1
}
# gpushare's variable, else HAMi's alias.
add_either() {
  local flag=$1 name=$2 alias=$3
  add "$flag" "$name" || add "$flag" "$alias" || true
}

add_either --memory GPUSHARE_MEMORY_LIMIT CUDA_DEVICE_MEMORY_LIMIT
add --context-memory GPUSHARE_CONTEXT_MEMORY || true
add --share GPUSHARE_COMPUTE_SHARE || true
add --priority GPUSHARE_PRIORITY || true
add --slice-ms GPUSHARE_SLICE_MS || true
add --log GPUSHARE_LOG || true
add --state GPUSHARE_STATE || true

# The hard cap: 0 means "none" for both names (HAMi writes 0 when no gpucores were asked for), and
# `gpushare run --limit` takes 1-100 only.
cap=${GPUSHARE_COMPUTE_LIMIT-${CUDA_DEVICE_SM_LIMIT-}}
if [[ -n ${GPUSHARE_COMPUTE_LIMIT+set} || -n ${CUDA_DEVICE_SM_LIMIT+set} ]] && [[ $cap != 0 ]]; then
  options+=(--limit "$cap")
fi

# Per-device quotas, by the index the program sees: gpushare's names first, then HAMi's for the
# indices gpushare's do not cover.
declare -A device_seen=()
for name in $(compgen -e); do
  if [[ $name =~ ^GPUSHARE_MEMORY_LIMIT_([0-9]+)$ ]]; then
    device_seen[${BASH_REMATCH[1]}]=1
    options+=(--device-memory "${BASH_REMATCH[1]}=${!name}")
  fi
done
for name in $(compgen -e); do
  if [[ $name =~ ^CUDA_DEVICE_MEMORY_LIMIT_([0-9]+)$ ]] && [[ -z ${device_seen[${BASH_REMATCH[1]}]+set} ]]; then
    options+=(--device-memory "${BASH_REMATCH[1]}=${!name}")
  fi
done

# The tenant. Without a name `gpushare run` keeps the one the environment gives (HAMi's
# CUDA_DEVICE_MEMORY_SHARED_CACHE included, which the library shortens its own way), else it makes
# a new tenant for this container run.
if [[ -n ${GPUSHARE_TENANT+set} ]]; then
  options+=(--tenant "$GPUSHARE_TENANT")
fi

# exec: `gpushare run` takes this process's place; as PID 1 (a container without --init) it stays
# as CMD's init, forwarding signals to CMD and reaping zombies.
exec "$gpushare" run "${options[@]}" -- "$@"
