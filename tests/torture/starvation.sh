# shellcheck shell=bash disable=SC2154,SC2034  # variables shared with scripts/torture.sh and its parts
# A CPU-starved tenant (sourced by scripts/torture.sh). Three tenants each run a launch spinner of
# 1 ms kernels on the one fake GPU. The victim is stopped (SIGSTOP) and continued (SIGCONT) at
# random moments for $starve_seconds: running 20-300 ms, stopped 50-1500 ms (longer than the 1 s
# handover grace, sometimes). Where a cgroup v2 with the cpu controller can be made, it also runs
# held to 20 % of a CPU. The two others report each wait of more than 20 ms between two of their
# launches returning (gpu_workload's WORKLOAD_GAPS_US), and so does the victim; a stretch in which
# none of them made progress (no kernel came back) is a stall. Prints every stall over 100 ms with
# what the victim was doing then, and fails when the longest is over $stall_bound ms (plus the
# handover grace when the victim was stopped inside a launch holding the slice: starvation_report)
# or a spinner does not end cleanly.

starve_victim=  # the victim's pid while it may be stopped: continued by starvation_cleanup
stops=()        # one "START_US END_US DOING HELD_AT_END" per stop of the victim
starve_cgroup=  # the cgroup made for it: removed by starvation_cleanup

starvation_cleanup() {
  if [[ -n $starve_victim ]] && alive "$starve_victim"; then kill -CONT "$starve_victim" 2>/dev/null; fi
  if [[ -n $starve_cgroup ]]; then
    rmdir "$starve_cgroup" 2>/dev/null || echo "torture: could not remove the cgroup $starve_cgroup" >&2
    starve_cgroup=
  fi
}

# Puts PID in a new cgroup v2 limited to 20 % of one CPU, or says why it cannot. Tried under this
# script's own cgroup, then under the root of the hierarchy (which may have processes of its own).
starvation_cgroup() {
  local pid=$1 mount own parent group
  # mountinfo: the mount point is field 5; the file system type follows the "-" after the optional fields.
  mount=$(awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' \
    /proc/self/mountinfo)
  if [[ -z $mount ]]; then
    echo "  cgroup: skipped, no cgroup v2 is mounted"
    return
  fi
  own=$mount$(sed -n 's/^0:://p' /proc/self/cgroup)
  for parent in "$own" "$mount"; do
    if ! grep -qw cpu "$parent/cgroup.controllers" 2>/dev/null; then continue; fi
    group=$parent/gpushare-torture-$$
    mkdir "$group" 2>/dev/null || continue
    if grep -qw cpu "$parent/cgroup.subtree_control" 2>/dev/null ||
      echo +cpu 2>/dev/null >"$parent/cgroup.subtree_control"; then
      if echo "20000 100000" 2>/dev/null >"$group/cpu.max" && echo "$pid" 2>/dev/null >"$group/cgroup.procs"; then
        starve_cgroup=$group
        echo "  cgroup: the victim runs in $group, cpu.max 20000 100000 (20 % of a CPU)"
        return
      fi
    fi
    rmdir "$group" 2>/dev/null
  done
  echo "  cgroup: skipped, no writable cgroup v2 with the cpu controller here (under $own or $mount):" \
    "only SIGSTOP/SIGCONT"
}

# Waits (at most 1 s) until every thread of our child PID is stopped.
starvation_wait_stopped() {
  local task state deadline
  now_us
  deadline=$((now + 1000000))
  for task in /proc/"$1"/task/*; do
    while read -r state 2>/dev/null <"$task/stat" && state=${state##*) } && [[ ${state:0:1} != T ]]; do
      now_us
      ((now < deadline)) || return
      pause_s 0.001
    done
  done
}

# What the stopped victim was doing, from its slot in STATE: "waiting" for the slice (in the gate;
# it may be granted the slice while stopped, or have been just before: a grant not taken up yet),
# "handing-over" holding the slice while it drains its own work to hand it over, "in-launch"
# holding the slice with a thread inside a launch (blocked on the full queue), "idle-holder"
# holding it between launches, or "between" launches without the slice. A holder stopped in a
# launch or in its handover keeps the slice up to the handover grace: its own work may still run.
starvation_doing() {
  local peek
  peek=$(timeout -s KILL "$hang_bound" "$damage" "$1" peek "pid:$starve_victim" 0 2>&1)
  case $peek in
    *holds=1*waiting=1*untaken=0*) echo handing-over ;;
    *waiting=1*) echo waiting ;;
    *holds=1*inside=0) echo idle-holder ;;
    *holds=1*) echo in-launch ;;
    *holds=0*) echo between ;;
    *) echo "unknown($peek)" ;;
  esac
}

# Intersects the gap reports of two outputs (gpu_workload's "gap_us=N end_unix_us=T" lines, in
# time order): prints, in the same form, each stretch in which neither made progress.
starvation_common_gaps() {
  awk '
    FNR == 1 { file++ }
    /^gap_us=/ {
      split($1, g, "="); split($2, e, "=")
      n[file]++; s[file, n[file]] = e[2] - g[2]; t[file, n[file]] = e[2]
    }
    END {
      i = 1; j = 1
      while (i <= n[1] && j <= n[2]) {
        lo = s[1, i] > s[2, j] ? s[1, i] : s[2, j]
        hi = t[1, i] < t[2, j] ? t[1, i] : t[2, j]
        if (lo < hi) printf "gap_us=%.0f end_unix_us=%.0f\n", hi - lo, hi
        if (t[1, i] < t[2, j]) i++; else j++
      }
    }' "$1" "$2"
}

cpu_starvation() {
  local dir=$work/starvation
  mkdir -p "$dir"
  export FAKE_CUDA_ENGINE=$dir/engine
  echo "== CPU-starved tenant: 3 spinners share the GPU, the victim is stopped and continued" \
    "for ${starve_seconds}s; stall bound ${stall_bound} ms"
  local name pids=() names=(victim a b)
  for name in "${names[@]}"; do
    spawn "$dir/$name" "WORKLOAD_STOP_FILE=$dir/stop" "WORKLOAD_READY_FILE=$dir/$name.ready" \
      "WORKLOAD_GAPS_US=20000" -- \
      "$gpushare" run --state "$dir/state" --tenant "starve-$name" -- "$workload" linked saturate 600 1000
    pids+=("$last_pid")
  done
  starve_victim=${pids[0]}
  for name in "${names[@]}"; do
    if ! wait_file "$dir/$name.ready" "$hang_bound"; then
      echo "  FAIL: spinner $name did not launch within ${hang_bound}s: $(tail -c 300 "$dir/$name.err")"
      summary+=("cpu starvation: FAIL: the spinners did not start")
      failed_parts+=(starve)
      return
    fi
  done
  starvation_cgroup "$starve_victim"

  # Stop and continue the victim. Each stop is noted with what the victim was doing when it
  # stopped, read from its own slot (frozen while it is stopped), and whether it held the slice
  # when it was continued: "START_US END_US DOING HELD_AT_END".
  local t0 end
  stops=()
  now_us
  t0=$now
  end=$((now + starve_seconds * 1000000))
  while ((now < end)); do
    random_ms 20 300
    pause_ms "$ms"
    kill -STOP "$starve_victim"
    now_us
    local stopped_at=$now
    starvation_wait_stopped "$starve_victim"
    local doing
    doing=$(starvation_doing "$dir/state")
    random_ms 50 1500
    now_us
    ((ms * 1000 > end - now)) && ms=$((now < end ? (end - now) / 1000 + 1 : 0))
    pause_ms "$ms"
    local held_at_end
    held_at_end=$(timeout -s KILL "$hang_bound" "$damage" "$dir/state" peek "pid:$starve_victim" 0 2>&1 | grep -o 'holds=[01]')
    kill -CONT "$starve_victim"
    now_us
    stops+=("$stopped_at $now $doing ${held_at_end:-holds=?}")
  done

  # Everyone stops by the stop file, through the gate: a spinner left waiting forever is wedged.
  touch "$dir/stop"
  local i problems=()
  for i in 0 1 2; do
    if ! wait_exit "${pids[i]}" "$hang_bound"; then
      problems+=("spinner ${names[i]} is wedged: still running ${hang_bound}s after being asked to stop")
      kill -KILL "${pids[i]}" 2>/dev/null
      wait_exit "${pids[i]}" 5
      continue
    fi
    describe_exit "$exit_status" "$dir/${names[i]}.err"
    [[ $verdict == ok ]] || problems+=("spinner ${names[i]}: $description")
  done
  starve_victim=
  started_pids=()
  starvation_cleanup

  starvation_report "$dir" "$t0" "$now" "${problems[@]}"
}

# starvation_report DIR T0_US END_US [PROBLEM...]: the stalls, stretches in which no spinner made
# progress, the victim included (it may be behind in GPU time after a stop and catch up, which the
# others only see as a long wait); each over 100 ms printed with the stops it overlaps. A stall
# that began with the victim stopped inside a launch while holding the slice may last the handover
# grace ($holder_grace_ms, docs/architecture.md) more than $stall_bound ms: that holder is not idle,
# and is only taken when the grace is over.
starvation_report() {
  local dir=$1 t0=$2 finished=$3
  shift 3
  local problems=("$@")
  starvation_common_gaps "$dir/a.out" "$dir/b.out" >"$dir/a-and-b.gaps"
  starvation_common_gaps "$dir/a-and-b.gaps" "$dir/victim.out" >"$dir/stalls"
  local line length start end stop_line from to doing held_at_end
  local total=0 over=0 longest=0 longest_in_launch=0
  local -A over_by=()
  while read -r line; do
    length=${line%% *}
    length=$((${length#gap_us=} / 1000))
    end=${line##*=}
    start=$((end - length * 1000))
    total=$((total + length))
    # What the victim was doing when the first stop overlapping the stall began.
    local during=() category=not-stopped
    for stop_line in "${stops[@]}"; do
      read -r from to doing held_at_end <<<"$stop_line"
      if ((from < end && to > start)); then
        [[ $category == not-stopped ]] && category=$doing
        during+=("victim stopped at +$(((from - t0) / 1000)) ms for $(((to - from) / 1000)) ms, $doing, $held_at_end when continued")
      fi
    done
    if [[ $category == in-launch || $category == handing-over ]]; then
      ((length > longest_in_launch)) && longest_in_launch=$length
    else
      ((length > longest)) && longest=$length
    fi
    ((length > 100)) || continue
    over=$((over + 1))
    over_by[$category]=$((${over_by[$category]:-0} + 1))
    local joined
    joined=$(printf '%s; ' "${during[@]}")
    echo "  stall of $length ms at +$(((start - t0) / 1000)) ms: ${joined:-the victim was not stopped}"
  done <"$dir/stalls"

  local -A stopped_while=()
  for stop_line in "${stops[@]}"; do
    read -r from to doing held_at_end <<<"$stop_line"
    stopped_while[$doing]=$((${stopped_while[$doing]:-0} + 1))
  done
  local name kernels=() stop_kinds=() stall_kinds=()
  for name in victim a b; do
    kernels+=("$name $(($(grep -o 'kernel_us=[0-9]*' "$dir/$name.out" | cut -d= -f2 || echo 0) / 1000))")
  done
  for doing in "${!stopped_while[@]}"; do stop_kinds+=("${stopped_while[$doing]} $doing"); done
  for doing in "${!over_by[@]}"; do stall_kinds+=("${over_by[$doing]} $doing"); done
  local longest_wait=0 gap
  while read -r gap; do
    ((gap > longest_wait)) && longest_wait=$gap
  done < <(grep -o '^gap_us=[0-9]*' "$dir/a-and-b.gaps" | cut -d= -f2)
  local in_launch_bound=$((stall_bound + holder_grace_ms))
  echo "  victim stopped ${#stops[@]} times (${stop_kinds[*]}); GPU time in ms: ${kernels[*]}"
  echo "  stalls (no spinner progressed for over 20 ms): $total ms in all over $(((finished - t0) / 1000)) ms;" \
    "$over over 100 ms${stall_kinds[*]:+ (when the victim was stopped: ${stall_kinds[*]})}"
  echo "  longest stall: $longest ms (bound $stall_bound ms); with the victim stopped inside a launch" \
    "holding the slice: $longest_in_launch ms (bound $in_launch_bound ms: $stall_bound + the ${holder_grace_ms} ms grace)"
  echo "  longest wait of a and b together: $((longest_wait / 1000)) ms (the stalls, and the victim's turns," \
    "long when it catches up on GPU time after a stop)"
  local problem
  for problem in "${problems[@]}"; do echo "  ! $problem"; done
  local result="longest stall $longest ms (bound $stall_bound ms), stopped in a launch $longest_in_launch ms"
  result+=" (bound $in_launch_bound ms), $over over 100 ms, ${#problems[@]} spinner problem(s)"
  if ((longest <= stall_bound && longest_in_launch <= in_launch_bound && ${#problems[@]} == 0)); then
    summary+=("cpu starvation: PASS: $result")
  else
    summary+=("cpu starvation: FAIL: $result")
    failed_parts+=(starve)
  fi
}
