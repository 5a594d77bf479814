# shellcheck shell=bash disable=SC2154,SC2034  # variables shared with scripts/torture.sh and its parts
# Damage of a live state file (sourced by scripts/torture.sh). For each kind of damage, on a fresh
# state file: two tenants run (dmg-a: a process holding 64 MiB and a launch spinner; dmg-b: a
# spinner), tests/torture/state_damage writes garbage into one field of the file, and then
#   - new processes start at once: a fill of each tenant and of a new tenant, a short spinner of
#     dmg-b, and `gpushare status`;
#   - the running ones are asked to stop (their stop file; SIGTERM for the holder).
# Each process must end within $hang_bound of being started or asked, none may crash, and a
# refusal (a non-zero exit) must say why in a gpushare message. A new tenant must either get memory
# or be told why not. Prints each kind's outcome, process by process.

# NAME|state_damage arguments. @HOLDER@ and @SPINNER@ stand for the pids of dmg-a's holder and
# spinner (the tool finds their slots by pid); GPU 0 is the fake card.
damage_catalogue=(
  "holder-token|holder 0 0x7ffffff0"
  "waiting-count|waiting 0 0xffffffff"
  "slice-never-ends|slice-end 0 0xffffffffffffffff"
  "used-max|used dmg-a 0 0xffffffffffffffff"
  "held-max|held pid:@HOLDER@ 0 0xffffffffffffffff"
  "tenant-index|tenant-index pid:@SPINNER@ 0x7fffffff"
  "slot-state|slot-state pid:@SPINNER@ 0x55"
  "tenant-state|tenant-state dmg-a 0x55"
  "threads-inside|activity pid:@SPINNER@ 0 0xffffff"
  "header-zero|header-zero"
  "registry-garbage|mutex registry garbage"
  "ledger-garbage|mutex ledger:0 garbage"
  "schedule-garbage|mutex schedule:0 garbage"
  "registry-ghost|mutex registry ghost"
  "ledger-ghost|mutex ledger:0 ghost"
  "schedule-ghost|mutex schedule:0 ghost"
)

# damage_outcome LABEL LOG PID DEADLINE_US [SENT]: waits for one process and adds a line on how it
# ended to $lines; a hang, a crash or a failure without a message fails the kind.
damage_outcome() {
  local label=$1 log=$2 pid=$3 deadline=$4 sent=${5:-}
  if ! wait_until "$pid" "$deadline"; then
    kill -KILL "$pid" 2>/dev/null
    wait_exit "$pid" 5
    lines+=("$label: HUNG (still running after ${hang_bound}s)")
    kind_failed=true
    return
  fi
  describe_exit "$exit_status" "$log.err" "$sent"
  local detail=
  if [[ $verdict == ok ]]; then
    local allocated
    allocated=$(grep -o '^allocated=[0-9]*' "$log.out" | cut -d= -f2)
    [[ -n $allocated ]] && detail=" (allocated $((allocated >> 20)) MiB)"
    # gpushare status: what it shows each tenant using.
    local used
    used=$(grep -o '{"tenant":"[^"]*","live":[a-z]*,"memory_used_bytes":[0-9]*' "$log.out" |
      sed 's/{"tenant":"\([^"]*\)".*:\([0-9]*\)$/\1 \2/' | awk '{ printf "%s%s %d MiB", sep, $1, $2 / 1048576; sep = ", " }')
    [[ -n $used ]] && detail=" (shows used: $used)"
    if [[ $label == "new tenant's fill" && $allocated == 0 && $description == ok ]]; then
      description="refused silently: no memory and no message"
      kind_failed=true
    fi
  elif [[ $verdict != refused ]]; then
    kind_failed=true
  fi
  lines+=("$label: $description$detail")
}

damage_one() {
  local kind=$1 args=$2
  local dir=$work/damage/$kind
  mkdir -p "$dir"
  export FAKE_CUDA_ENGINE=$dir/engine
  local state=$dir/state
  local run_a=("$gpushare" run --state "$state" --tenant dmg-a --memory 512MiB --)
  local run_b=("$gpushare" run --state "$state" --tenant dmg-b --memory 512MiB --)
  local lines=() kind_failed=false
  spawn "$dir/holder" -- "${run_a[@]}" "$probe" linked hold $((64 << 20)) "$dir/holder.ready"
  local holder=$last_pid
  spawn "$dir/spinner-a" "WORKLOAD_STOP_FILE=$dir/stop" "WORKLOAD_READY_FILE=$dir/spinner-a.ready" -- \
    "${run_a[@]}" "$workload" linked saturate 600 1000
  local spinner_a=$last_pid
  spawn "$dir/spinner-b" "WORKLOAD_STOP_FILE=$dir/stop" "WORKLOAD_READY_FILE=$dir/spinner-b.ready" -- \
    "${run_b[@]}" "$workload" linked saturate 600 1000
  local spinner_b=$last_pid
  local ready
  for ready in holder spinner-a spinner-b; do
    if ! wait_file "$dir/$ready.ready" "$hang_bound"; then
      echo "-- $kind: FAIL: $ready was not ready within ${hang_bound}s, before any damage: $(tail -c 300 "$dir/$ready.err")"
      damage_failed+=("$kind")
      end_all_started
      return
    fi
  done

  local damage_args applied
  args=${args//@HOLDER@/$holder}
  args=${args//@SPINNER@/$spinner_a}
  read -ra damage_args <<<"$args"
  if ! applied=$(timeout -s KILL "$hang_bound" "$damage" "$state" "${damage_args[@]}" 2>&1); then
    echo "-- $kind ($args): FAIL: state_damage could not apply it: $applied"
    damage_failed+=("$kind")
    end_all_started
    return
  fi

  # New processes, all at once, each given $hang_bound.
  spawn "$dir/fill-a" -- "${run_a[@]}" "$probe" linked fill $((16 << 20))
  local fill_a=$last_pid
  spawn "$dir/fill-b" -- "${run_b[@]}" "$probe" linked fill $((16 << 20))
  local fill_b=$last_pid
  spawn "$dir/fill-new" -- "$gpushare" run --state "$state" --tenant dmg-new --memory 512MiB -- \
    "$probe" linked fill $((16 << 20))
  local fill_new=$last_pid
  spawn "$dir/spin-new" -- "${run_b[@]}" "$workload" linked saturate 0.3 1000
  local spin_new=$last_pid
  spawn "$dir/status" -- "$gpushare" status --json --state "$state"
  local status=$last_pid
  now_us
  local deadline=$((now + hang_bound * 1000000))
  damage_outcome "new fill of dmg-a" "$dir/fill-a" "$fill_a" "$deadline"
  damage_outcome "new fill of dmg-b" "$dir/fill-b" "$fill_b" "$deadline"
  damage_outcome "new tenant's fill" "$dir/fill-new" "$fill_new" "$deadline"
  damage_outcome "new spinner of dmg-b" "$dir/spin-new" "$spin_new" "$deadline"
  damage_outcome "gpushare status" "$dir/status" "$status" "$deadline"

  # The running ones, asked to stop. The holder only sleeps: it must still be there.
  touch "$dir/stop"
  local holder_sent=15
  if alive "$holder"; then kill -TERM "$holder"; else holder_sent=; fi
  now_us
  deadline=$((now + hang_bound * 1000000))
  damage_outcome "running holder of dmg-a" "$dir/holder" "$holder" "$deadline" "$holder_sent"
  damage_outcome "running spinner of dmg-a" "$dir/spinner-a" "$spinner_a" "$deadline"
  damage_outcome "running spinner of dmg-b" "$dir/spinner-b" "$spinner_b" "$deadline"
  started_pids=()

  local result=PASS
  if $kind_failed; then
    result=FAIL
    damage_failed+=("$kind")
  fi
  echo "-- $kind ($args): $result"
  echo "     damage: $applied"
  local line
  for line in "${lines[@]}"; do echo "     $line"; done
}

state_damage() {
  local selected=() entry
  if [[ $damage_kinds == all ]]; then
    selected=("${damage_catalogue[@]}")
  else
    local wanted_kinds name
    IFS=, read -ra wanted_kinds <<<"$damage_kinds"
    for name in "${wanted_kinds[@]}"; do
      local found=
      for entry in "${damage_catalogue[@]}"; do [[ ${entry%%|*} == "$name" ]] && found=$entry; done
      if [[ -z $found ]]; then
        echo "torture: unknown damage kind $name; known: $(printf '%s ' "${damage_catalogue[@]%%|*}")" >&2
        exit 2
      fi
      selected+=("$found")
    done
  fi
  echo "== state damage: ${#selected[@]} kinds, each on a fresh state file while two tenants run"
  damage_failed=()
  local started=$SECONDS
  for entry in "${selected[@]}"; do damage_one "${entry%%|*}" "${entry#*|}"; done
  if ((${#damage_failed[@]} == 0)); then
    summary+=("state damage: PASS: ${#selected[@]} kinds, no crash, no hang ($((SECONDS - started)) s)")
  else
    summary+=("state damage: FAIL: ${#damage_failed[@]} of ${#selected[@]} kinds: ${damage_failed[*]}")
    failed_parts+=(damage)
  fi
}
