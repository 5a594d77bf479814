#!/usr/bin/env bash
# Slurm TaskProlog for gpushare's isolation mode: puts gpushare's library into every task that was
# given a GPU, and points it at the node agent. Slurm runs it as the job's user, in the task's
# environment, and applies the `export` lines it prints:
#
#   export LD_PRELOAD=<libgpushare-preload.so>[:what the task had]
#   export GPUSHARE_AGENT=<the agent's socket>
#
# It grants nothing: the job's tenant and limits are in the agent's policy, written by the root
# Prolog (gpushare-job-policy.sh), and the agent knows each process by its cgroup. A task that
# removes the library escapes accounting, not detection (docs/security.md).
#
# Site settings, read from /etc/gpushare/slurm.conf (the Prolog's file; only these two names are
# read here): GPUSHARE_SLURM_PRELOAD, the library (default: the first installed one found);
# GPUSHARE_SLURM_SOCKET, the agent's socket (default /run/gpushare/agent.sock).
# GPUSHARE_SLURM_CONFIG names another file (for tests).
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

fail() {
  # One line each: a value with a line break in it must not become a line Slurm would act on.
  local why=${*//[$'\n\r']/ }
  echo "gpushare task prolog (job ${SLURM_JOB_ID:-?}): $why" >&2
  echo "print gpushare: $why; this task runs without gpushare"
  exit 0
}

if [[ -z ${CUDA_VISIBLE_DEVICES:-}${SLURM_SHARDS_ON_NODE:-}${SLURM_JOB_GPUS:-}${SLURM_STEP_GPUS:-} ]]; then
  exit 0
fi

config=${GPUSHARE_SLURM_CONFIG:-/etc/gpushare/slurm.conf}
preload="" socket=/run/gpushare/agent.sock
if [[ -r $config ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    if [[ $line =~ ^[[:space:]]*(GPUSHARE_SLURM_PRELOAD|GPUSHARE_SLURM_SOCKET)[[:space:]]*=[[:space:]]*([^[:space:]]*)[[:space:]]*$ ]]; then
      if [[ ${BASH_REMATCH[1]} == GPUSHARE_SLURM_PRELOAD ]]; then preload=${BASH_REMATCH[2]}; else socket=${BASH_REMATCH[2]}; fi
    fi
  done <"$config"
fi
if [[ -z $preload ]]; then
  for candidate in /usr/lib/gpushare /usr/lib64/gpushare /usr/lib/x86_64-linux-gnu/gpushare /usr/lib/aarch64-linux-gnu/gpushare \
    /usr/local/lib/gpushare /usr/local/lib64/gpushare /opt/gpushare/lib/gpushare /opt/gpushare/lib64/gpushare; do
    if [[ -f $candidate/libgpushare-preload.so ]]; then
      preload=$candidate/libgpushare-preload.so
      break
    fi
  done
fi
[[ -n $preload && -f $preload ]] || fail "libgpushare-preload.so is not installed on ${HOSTNAME:-this node} (set GPUSHARE_SLURM_PRELOAD in $config)"
# The loader splits LD_PRELOAD at spaces and colons.
[[ $preload == /* && $preload != *[[:space:]:]* ]] || fail "the library path '$preload' must be absolute, without spaces or colons"
[[ $socket == /* && $socket != *[[:space:]]* ]] || fail "the agent's socket '$socket' must be an absolute path without spaces"
# A missing agent is the library's to handle (GPUSHARE_ON_ERROR); say so in the job's output.
[[ -S $socket ]] || echo "print gpushare: the node agent's socket $socket is missing; GPU allocations follow GPUSHARE_ON_ERROR"

existing=${LD_PRELOAD:-}
existing=${existing//[$'\n\r']/}
echo "export LD_PRELOAD=$preload${existing:+:$existing}"
echo "export GPUSHARE_AGENT=$socket"
