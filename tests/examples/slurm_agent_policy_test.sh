#!/usr/bin/env bash
# examples/slurm in isolation mode: the root Prolog and Epilog (gpushare-job-policy.sh) run with a
# made-up job's environment against a temporary /etc/gpushare, and the policy they write is read
# by the agent's own loader (example_policy_check): each GPU job is a tenant known by its cgroup,
# with its shards' limits; nothing in the environment raises them; the Epilog takes the job out;
# concurrent jobs all land. Also the agent-mode TaskProlog's output.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -z ${EXAMPLES_POLICY_CHECK:-} ]]; then
  echo "FAIL: EXAMPLES_POLICY_CHECK is not set (run through ctest)" >&2
  exit 1
fi

slurm=$EXAMPLES_SOURCE_DIR/examples/slurm
etc=$work/etc
mkdir -p "$etc/policy.d"
cp "$slurm/policy.base.toml" "$etc/policy.base.toml"
# The site's file as shipped, with its example values (10 GiB per shard, 8 shards per GPU) and a
# whole-GPU quota.
cp "$slurm/slurm.conf" "$etc/slurm.conf"
echo "GPUSHARE_SLURM_GPU_MEMORY=40GiB" >>"$etc/slurm.conf"
# The reload counts its calls and checks, like the agent would, that the policy loads.
cat >"$work/reload.sh" <<RELOAD
#!/usr/bin/env bash
echo reload >>"$work/reloads"
"$EXAMPLES_POLICY_CHECK" "$etc/policy.toml" >/dev/null
RELOAD
chmod +x "$work/reload.sh"
reloads() { if [[ -e $work/reloads ]]; then wc -l <"$work/reloads"; else echo 0; fi; }

# job_policy ACTION VAR=VALUE...: the script in the environment slurmd would give it (only these
# variables and the test's paths); sets $rc and $err.
job_policy() {
  local action=$1
  shift
  rc=0
  env -i PATH=/usr/bin:/bin GPUSHARE_SLURM_CONFIG="$etc/slurm.conf" GPUSHARE_SLURM_POLICY="$etc/policy.toml" \
    GPUSHARE_SLURM_POLICY_BASE="$etc/policy.base.toml" GPUSHARE_SLURM_POLICY_DIR="$etc/policy.d" \
    GPUSHARE_SLURM_RELOAD="$work/reload.sh" "$@" "$slurm/gpushare-$action.sh" 2>"$work/stderr" || rc=$?
  err=$(<"$work/stderr")
}
check_policy() { "$EXAMPLES_POLICY_CHECK" "$etc/policy.toml" "$@" 2>&1; }
scope=/system.slice/slurmstepd.scope

# A job with 2 of a GPU's 8 shards: 20 GiB and a 25 % share, for every process of its cgroup.
job_policy prolog SLURM_JOB_ID=4242 SLURM_JOB_UID=1000 SLURM_SHARDS_ON_NODE=2 CUDA_VISIBLE_DEVICES=0
expect_eq "shards: prolog exit status" "$rc" 0
expect_eq "shards: the agent reloaded" "$(reloads)" 1
policy=$(check_policy "$scope/job_4242/step_0/user/task_0" "$scope/job_4242/step_extern/user/task_0" \
  "$scope/job_4242" "$scope/job_42/step_0/user/task_0" /user.slice/user-1000.slice)
echo "$policy"
expect_contains "shards: the job's tenant, its cgroup, 2 x 10 GiB, 2/8 of the time" "$policy" \
  "tenant job_4242 cgroups=$scope/job_4242/* memory=$((20 << 30)) share=25 limit=0"
expect_contains "shards: a task of the job is the job's tenant" "$policy" "cgroup $scope/job_4242/step_0/user/task_0 -> job_4242"
expect_contains "shards: so is its extern step" "$policy" "cgroup $scope/job_4242/step_extern/user/task_0 -> job_4242"
expect_contains "shards: another job's task is not" "$policy" "cgroup $scope/job_42/step_0/user/task_0 -> refused"
expect_contains "shards: the user's login session is not" "$policy" "cgroup /user.slice/user-1000.slice -> refused"
expect_contains "shards: the base's default stays" "$policy" "default refuse"
expect_eq "policy: mode 0644" "$(stat -c %a "$etc/policy.toml")" 644
expect_eq "policy: no temporary file left" "$(find "$etc" -name '.*.*' -not -name .lock | wc -l)" 0

# Whole GPUs: the site's per-GPU memory, no share. And nothing the job's owner could set in an
# environment raises anything: the site's names and gpushare's own are not read from it.
job_policy prolog SLURM_JOB_ID=77 SLURM_JOB_GPUS=1,2 CUDA_VISIBLE_DEVICES=1,2 GPUSHARE_MEMORY_LIMIT=1TiB \
  GPUSHARE_SLURM_GPU_MEMORY=1TiB GPUSHARE_SLURM_SHARD_MEMORY=1TiB GPUSHARE_COMPUTE_SHARE=100
expect_eq "whole GPUs: prolog exit status" "$rc" 0
policy=$(check_policy "$scope/job_77/step_0/user/task_0")
expect_contains "whole GPUs: 40 GiB per GPU, no share, environment ignored" "$policy" \
  "tenant job_77 cgroups=$scope/job_77/* memory=$((40 << 30)) share=0 limit=0"
expect_contains "whole GPUs: the first job is still there" "$policy" "tenant job_4242 "
expect_contains "whole GPUs: its task" "$policy" "cgroup $scope/job_77/step_0/user/task_0 -> job_77"

# A job without a GPU here: no table, no reload; its Epilog does nothing either.
before=$(reloads)
job_policy prolog SLURM_JOB_ID=78
expect_eq "no GPU: prolog exit status" "$rc" 0
expect_eq "no GPU: no table" "$(find "$etc/policy.d" -name 'job_78*' | wc -l)" 0
job_policy epilog SLURM_JOB_ID=78
expect_eq "no GPU: epilog exit status" "$rc" 0
expect_eq "no GPU: no reload" "$(reloads)" "$before"

# The Epilog takes the job out and reloads.
job_policy epilog SLURM_JOB_ID=4242 SLURM_JOB_UID=1000
expect_eq "epilog: exit status" "$rc" 0
expect_eq "epilog: reloaded" "$(reloads)" $((before + 1))
policy=$(check_policy "$scope/job_4242/step_0/user/task_0")
expect_not_contains "epilog: the job's tenant is gone" "$policy" "tenant job_4242"
expect_contains "epilog: its processes are refused" "$policy" "cgroup $scope/job_4242/step_0/user/task_0 -> refused"
expect_contains "epilog: the other job stays" "$policy" "tenant job_77 "

# Bad input fails the Prolog (Slurm drains the node and requeues the job) and changes nothing.
cp "$etc/policy.toml" "$work/policy.before"
for case in "SLURM_JOB_ID=12;rm" "SLURM_JOB_ID=" "SLURM_JOB_ID=5 SLURM_SHARDS_ON_NODE=two" \
  "SLURM_JOB_ID=5 SLURM_SHARDS_ON_NODE=0" "SLURM_JOB_ID=5 SLURM_SHARDS_ON_NODE=99999"; do
  read -r -a assignments <<<"$case"
  job_policy prolog CUDA_VISIBLE_DEVICES=0 "${assignments[@]}"
  expect_eq "bad '$case': prolog fails" "$rc" 1
  expect_contains "bad '$case': says why" "$err" "gpushare prolog (job "
  check "bad '$case': policy unchanged" cmp -s "$etc/policy.toml" "$work/policy.before"
done
cp "$etc/slurm.conf" "$work/slurm.conf.good"
for setting in "GPUSHARE_SLURM_SHARD_MEMORY=10GB" "GPUSHARE_SLURM_SHARDS_PER_GPU=0" \
  'GPUSHARE_SLURM_STEPD_SCOPE=/system.slice/../x' "GPUSHARE_MEMORY_LIMIT=1TiB" "GPUSHARE_SLURM_SHARD_MEMORY = 1 GiB"; do
  { cat "$work/slurm.conf.good"; echo "$setting"; } >"$etc/slurm.conf"
  job_policy prolog SLURM_JOB_ID=6 SLURM_SHARDS_ON_NODE=1
  expect_eq "site '$setting': prolog fails" "$rc" 1
  check "site '$setting': policy unchanged" cmp -s "$etc/policy.toml" "$work/policy.before"
done
cp "$work/slurm.conf.good" "$etc/slurm.conf"
mv "$etc/policy.base.toml" "$work/base"
job_policy prolog SLURM_JOB_ID=7 SLURM_SHARDS_ON_NODE=1
expect_eq "no base file: prolog fails" "$rc" 1
expect_contains "no base file: says so" "$err" "policy.base.toml is missing"
mv "$work/base" "$etc/policy.base.toml"
rm -f "$etc/policy.d/job_7.toml"

# Eight jobs starting at once: the lock keeps every table.
pids=()
for id in $(seq 100 107); do
  job_policy prolog SLURM_JOB_ID="$id" SLURM_SHARDS_ON_NODE=1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || fail "a concurrent prolog failed"; done
policy=$(check_policy)
expect_eq "concurrent: every job's tenant" "$(grep -c '^tenant job_10[0-7] .* memory=10737418240 share=12 ' <<<"$policy" || true)" 8

# The agent-mode TaskProlog: the library and the socket, nothing else; no GPU, no output.
printf 'GPUSHARE_SLURM_PRELOAD=%s\nGPUSHARE_SLURM_SOCKET=%s\n' "$EXAMPLES_PRELOAD" "$work/agent.sock" >"$work/task.conf"
out=$(env -i PATH=/usr/bin:/bin GPUSHARE_SLURM_CONFIG="$work/task.conf" SLURM_JOB_ID=4242 CUDA_VISIBLE_DEVICES=0 \
  LD_PRELOAD=libfoo.so "$slurm/gpushare-task-prolog.sh" 2>/dev/null)
echo "$out"
expect_contains "task prolog: the library first" "$out" "export LD_PRELOAD=$EXAMPLES_PRELOAD:libfoo.so"
expect_contains "task prolog: the agent's socket" "$out" "export GPUSHARE_AGENT=$work/agent.sock"
expect_contains "task prolog: a missing agent is reported" "$out" "print gpushare: the node agent's socket"
expect_eq "task prolog: no limit exported" "$(grep -c 'GPUSHARE_MEMORY\|GPUSHARE_COMPUTE\|GPUSHARE_TENANT' <<<"$out" || true)" 0
out=$(env -i PATH=/usr/bin:/bin GPUSHARE_SLURM_CONFIG="$work/task.conf" SLURM_JOB_ID=4243 "$slurm/gpushare-task-prolog.sh")
expect_eq "task prolog: no GPU, no output" "$out" ""
finish
