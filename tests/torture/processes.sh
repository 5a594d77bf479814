# shellcheck shell=bash disable=SC2154,SC2034  # variables shared with scripts/torture.sh and its parts
# Process helpers of the torture run, sourced by scripts/torture.sh: start participants in the
# background, wait for them with a deadline, tell how they ended, read `gpushare status --json`.
# Needs $work (the run's folder) and $never_fd (a descriptor that never has data: pause_s).

started_pids=()  # every background process started, for the cleanup
last_pid=        # set by spawn
exit_status=     # set by wait_exit
now=             # set by now_us

# The wall clock in microseconds (as gpu_workload's gap reports), without a fork.
now_us() { now=${EPOCHREALTIME/./}; }

# Sleeps SECONDS (fractions allowed) without a fork: a read that times out.
pause_s() { read -rt "$1" -u "$never_fd" _ || true; }

# Sleeps MS milliseconds.
pause_ms() {
  local seconds
  printf -v seconds '%d.%03d' $(($1 / 1000)) $(($1 % 1000))
  pause_s "$seconds"
}

# A random number in [LOW, HIGH] in $ms (a variable, not output: $RANDOM must advance here).
ms=
random_ms() { ms=$(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }

# spawn LOG [VAR=VALUE...] -- CMD...: starts CMD in the background with the variables set, its
# output in LOG.out and LOG.err; its pid in $last_pid. `env` execs CMD, and `gpushare run` execs
# its command, so the pid is the participant's own.
spawn() {
  local log=$1
  shift
  local vars=()
  while [[ $1 != -- ]]; do
    vars+=("$1")
    shift
  done
  shift
  env "${vars[@]}" "$@" >"$log.out" 2>"$log.err" &
  last_pid=$!
  started_pids+=("$last_pid")
}

# Whether PID is a child of this script that has not ended (stopped counts as alive). The parent
# check keeps a reused PID from ever being taken for ours.
alive() {
  local stat fields
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -ra fields <<<"${stat##*) }"
  [[ ${fields[1]} == "$$" && ${fields[0]} != Z ]]
}

# wait_until PID DEADLINE_US: waits until the wall clock DEADLINE_US (as now_us) for our child
# PID to end; then sets $exit_status (128+N for signal N) and returns 0. Returns 1, leaving it
# running, at the deadline.
wait_until() {
  local pid=$1 deadline=$2
  while alive "$pid"; do
    now_us
    ((now < deadline)) || return 1
    pause_s 0.002
  done
  { wait "$pid"; } 2>/dev/null
  exit_status=$?
}

# wait_exit PID SECONDS: the same, at most SECONDS from now.
wait_exit() {
  now_us
  wait_until "$1" $((now + $2 * 1000000))
}

# Waits at most SECONDS for FILE to exist.
wait_file() {
  local file=$1 deadline
  now_us
  deadline=$(($2 * 1000000 + now))
  until [[ -e $file ]]; do
    now_us
    ((now < deadline)) || return 1
    pause_s 0.002
  done
}

# Ends every process this script started and that still runs (continued first, in case it was
# stopped). Used by the trap and between parts.
end_all_started() {
  local pid
  for pid in "${started_pids[@]}"; do
    if alive "$pid"; then
      kill -CONT "$pid" 2>/dev/null
      kill -KILL "$pid" 2>/dev/null
    fi
  done
  for pid in "${started_pids[@]}"; do
    wait_exit "$pid" 5 || echo "torture: process $pid did not end after SIGKILL" >&2
  done
  started_pids=()
}

# The first line of FILE that gpushare wrote ("gpushare: ..." or "gpushare run: ..."), cut short.
gpushare_message() {
  local line
  line=$(grep -m1 'gpushare' "$1" 2>/dev/null) || return 1
  echo "${line:0:150}"
}

# describe_exit STATUS ERRFILE [SENT]: how a process ended. Sets $description (in words) and
# $verdict:
#   ok        exit status 0, or the signal SENT (what we asked for)
#   refused   a non-zero status with a gpushare message: a refusal, which is allowed
#   crashed   killed by a signal we did not send (SIGSEGV, SIGABRT, SIGBUS, ...)
#   failed    a non-zero status without a gpushare message
verdict=
description=
describe_exit() {
  local status=$1 err=$2 sent=${3:-} message
  message=$(gpushare_message "$err") || message=
  if ((status == 0)) || [[ -n $sent && $status == $((128 + sent)) ]]; then
    verdict=ok
    description="ok${message:+, said: $message}"
  elif ((status > 128 && status < 160)); then
    verdict=crashed
    description="CRASHED (SIG$(kill -l $((status - 128)))): $(tail -c 300 "$err" | tr '\n' ' ')"
  elif [[ -n $message ]]; then
    verdict=refused
    description="refused (exit $status): $message"
  else
    verdict=failed
    description="FAILED (exit $status, no gpushare message): $(tail -c 300 "$err" | tr '\n' ' ')"
  fi
}

# status_json STATE: `gpushare status --json` within a bound; the report on stdout. Returns its
# exit status, 124 when it hung, 128+N when it crashed.
status_json() {
  timeout -s KILL "$hang_bound" "$gpushare" status --json --state "$1" 2>"$work/status.err"
}

# Sum of every tenant's memory_used_bytes in a status report.
used_bytes_total() {
  local sum=0 value
  while read -r value; do
    sum=$((sum + value))
  done < <(grep -o '"memory_used_bytes":[0-9]*' <<<"$1" | cut -d: -f2)
  echo "$sum"
}

# How many distinct processes a status report shows alive.
live_processes() { grep -o '"pid":[0-9]*,"alive":true' <<<"$1" | sort -u | wc -l; }
