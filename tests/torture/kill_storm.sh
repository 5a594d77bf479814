# shellcheck shell=bash disable=SC2154,SC2034  # variables shared with scripts/torture.sh and its parts
# The kill storm (sourced by scripts/torture.sh). Three tenants with quotas run at once, each with
# a process holding memory, an allocate-until-refused-then-free loop and a launch spinner that
# takes the time slice. $kills times a random participant is killed with SIGKILL at a random
# moment (holding the slice, inside the ledger or registry mutex, joining: timing decides) and
# started again. Then everything is asked to stop: every process must end within $hang_bound, and
# `gpushare status` must show 0 bytes used by every tenant and no live process.

storm_tenants=(storm-a storm-b storm-c)
# Each tenant's `gpushare run` options: shares, and a hard cap for the third.
declare -A storm_options=(
  [storm-a]="--memory 1GiB --share 20"
  [storm-b]="--memory 1GiB --share 30"
  [storm-c]="--memory 1GiB --limit 50")
storm_quota=$((1 << 30))
declare -A storm_pid storm_kind storm_tenant
storm_names=()
storm_problems=()  # one line per crash, failure or wedge

# Starts (again) the participant NAME.
storm_start() {
  local name=$1 options run
  read -ra options <<<"${storm_options[${storm_tenant[$name]}]}"
  run=("$gpushare" run --state "$storm_dir/state" --tenant "${storm_tenant[$name]}" "${options[@]}" --)
  case ${storm_kind[$name]} in
    holder) spawn "$storm_dir/$name" -- "${run[@]}" "$probe" linked hold $((256 << 20)) "$storm_dir/$name.ready" ;;
    filler) spawn "$storm_dir/$name" -- "${run[@]}" "$probe" procaddress fill $((4 << 20)) ;;
    spinner)
      spawn "$storm_dir/$name" "WORKLOAD_STOP_FILE=$storm_dir/stop" -- \
        "${run[@]}" "$workload" linked saturate 3600 1000
      ;;
  esac
  storm_pid[$name]=$last_pid
}

# A participant ended without being killed: fillers do (exit 0 expected); holders and spinners
# never should while the storm lasts.
storm_ended_itself() {
  local name=$1
  describe_exit "$exit_status" "$storm_dir/$name.err"
  if [[ ${storm_kind[$name]} != filler || $verdict != ok ]]; then
    storm_problems+=("$name ended by itself: $description")
    ((storm_crashed += 1))
  else
    ((storm_fills += 1))
  fi
}

# Every tenant's bytes stay within its quota, in the middle of the storm too.
storm_check_quotas() {
  local json line used limit
  json=$(status_json "$storm_dir/state") || {
    storm_problems+=("gpushare status failed during the storm (exit $?): $(head -c 300 "$work/status.err")")
    return
  }
  while read -r line; do
    used=$(grep -o '"memory_used_bytes":[0-9]*' <<<"$line" | cut -d: -f2)
    limit=$(grep -o '"memory_limit_bytes":[0-9]*' <<<"$line" | cut -d: -f2)
    if [[ -n $limit ]] && ((used > limit)); then storm_problems+=("over quota during the storm: $line"); fi
  done < <(grep -o '{"tenant":"[^"]*","live":[a-z]*,"memory_used_bytes":[0-9]*,"memory_limit_bytes":[0-9a-z]*' <<<"$json")
}

kill_storm() {
  storm_dir=$work/kill-storm
  mkdir -p "$storm_dir"
  export FAKE_CUDA_ENGINE=$storm_dir/engine
  local tenant kind name
  for tenant in "${storm_tenants[@]}"; do
    for kind in holder filler spinner; do
      name=${tenant#storm-}-$kind
      storm_names+=("$name")
      storm_kind[$name]=$kind
      storm_tenant[$name]=$tenant
    done
  done
  echo "== kill storm: ${#storm_tenants[@]} tenants with 1 GiB quotas, ${#storm_names[@]} participants" \
    "(holders of 256 MiB, fill-and-free loops, launch spinners), $kills kills"
  storm_kills=0 storm_restarts=0 storm_fills=0 storm_crashed=0 storm_wedged=0
  for name in "${storm_names[@]}"; do storm_start "$name"; done

  # The storm. Each round reaps and restarts the fillers that finished, waits a random moment
  # (0-30 ms), then kills one participant. Bounded: a round takes at most $hang_bound seconds more.
  local victim pid started=$SECONDS
  while ((storm_kills < kills)); do
    for name in "${storm_names[@]}"; do
      if ! alive "${storm_pid[$name]}"; then
        wait_exit "${storm_pid[$name]}" 1
        storm_ended_itself "$name"
        storm_start "$name"
        ((storm_restarts += 1))
      fi
    done
    random_ms 0 30
    pause_ms "$ms"
    victim=${storm_names[RANDOM % ${#storm_names[@]}]}
    pid=${storm_pid[$victim]}
    alive "$pid" || continue  # ended by itself meanwhile: reaped next round
    kill -KILL "$pid" 2>/dev/null
    if ! wait_exit "$pid" "$hang_bound"; then
      storm_problems+=("$victim (pid $pid) did not end within ${hang_bound}s of SIGKILL")
      ((storm_wedged += 1))
      continue
    fi
    if ((exit_status != 128 + 9)); then
      storm_ended_itself "$victim"  # it ended just before the signal
    fi
    ((storm_kills += 1))
    storm_start "$victim"
    ((storm_restarts += 1))
    if ((storm_kills % 100 == 0)); then
      storm_check_quotas
      echo "  $storm_kills kills, $((SECONDS - started)) s"
    fi
  done

  # Everything is asked to stop: spinners by their stop file (so they must get through the gate to
  # see it), fillers by finishing their fill, holders by SIGTERM.
  touch "$storm_dir/stop"
  for name in "${storm_names[@]}"; do
    pid=${storm_pid[$name]}
    local sent=
    if [[ ${storm_kind[$name]} == holder ]]; then
      sent=15
      kill -TERM "$pid" 2>/dev/null
    fi
    if ! wait_exit "$pid" "$hang_bound"; then
      local wchan
      wchan=$(cat "/proc/$pid/wchan" 2>/dev/null)
      storm_problems+=("$name (pid $pid) is wedged: still running ${hang_bound}s after being asked to stop (in the kernel at: $wchan)")
      ((storm_wedged += 1))
      kill -KILL "$pid" 2>/dev/null
      wait_exit "$pid" 5
      continue
    fi
    describe_exit "$exit_status" "$storm_dir/$name.err" "$sent"
    if [[ $verdict != ok ]]; then
      storm_problems+=("$name, asked to stop: $description")
      ((storm_crashed += 1))
    fi
  done
  started_pids=()

  # Nothing runs now: the ledger must be empty.
  local json rc=0
  json=$(status_json "$storm_dir/state") || rc=$?
  if ((rc != 0)); then
    storm_problems+=("gpushare status after the storm: exit $rc: $(head -c 300 "$work/status.err")")
    storm_leaked=unknown
    storm_live=unknown
  else
    storm_leaked=$(used_bytes_total "$json")
    storm_live=$(live_processes "$json")
  fi

  # And usable: each tenant gets its whole quota again, and a new spinner runs.
  local after=()
  for tenant in "${storm_tenants[@]}"; do
    local allocated
    allocated=$(timeout -s KILL "$hang_bound" "$gpushare" run --state "$storm_dir/state" --tenant "$tenant" \
      --memory 1GiB -- "$probe" linked fill $((64 << 20)) 2>&1 | grep -o '^allocated=[0-9]*' | cut -d= -f2)
    after+=("$tenant: ${allocated:-nothing} bytes")
    if [[ $allocated != "$storm_quota" ]]; then
      storm_problems+=("after the storm $tenant could allocate ${allocated:-nothing} bytes, not its quota $storm_quota")
    fi
  done
  local spin
  spin=$(timeout -s KILL "$hang_bound" "$gpushare" run --state "$storm_dir/state" --tenant storm-a -- \
    "$workload" linked saturate 0.2 1000 2>&1) || storm_problems+=("a new spinner after the storm: $spin")

  echo "  kills done: $storm_kills; restarts: $storm_restarts; fills completed: $storm_fills;" \
    "time: $((SECONDS - started)) s"
  echo "  after the storm: ${after[*]}"
  echo "  bytes leaked: $storm_leaked"
  echo "  live processes left in the state: $storm_live"
  echo "  wedged processes: $storm_wedged"
  echo "  crashed or failed processes: $storm_crashed"
  local problem
  for problem in "${storm_problems[@]:0:20}"; do echo "  ! $problem"; done
  if [[ $storm_leaked == 0 && $storm_live == 0 && $storm_wedged == 0 && $storm_crashed == 0 &&
    ${#storm_problems[@]} == 0 ]]; then
    summary+=("kill storm: PASS: $storm_kills kills, 0 bytes leaked, 0 wedged, 0 crashed")
  else
    local line="kill storm: FAIL: $storm_kills kills, bytes leaked $storm_leaked, wedged $storm_wedged,"
    summary+=("$line crashed/failed $storm_crashed, live left $storm_live, ${#storm_problems[@]} problem(s)")
    failed_parts+=(kill)
  fi
}
