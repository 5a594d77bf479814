#!/usr/bin/env bash
# Two tenants on one GPU: a training run with an 8 GiB quota and 70 % of the GPU's time while both
# want it, and an evaluation job beside it with 4 GiB, 30 % and low priority. Waits for both, then
# shows `gpushare status`.
#
#   ./two_tenants.sh
#
# Environment (all optional):
#   GPUSHARE        the gpushare command (default: `gpushare` on PATH)
#   GPUSHARE_STATE  the state file both tenants meet in (default: gpushare's own default)
#   PYTHON          the Python with PyTorch (default: python3)
#   TRAIN_COMMAND   what the first tenant runs  (default: $PYTHON train.py --steps 300)
#   EVAL_COMMAND    what the second tenant runs (default: $PYTHON train.py --steps 300 --width 2048)
#   TRAIN_MEMORY, EVAL_MEMORY   their quotas (default: 8GiB, 4GiB)
# The commands are split into words at spaces (no quoting or globbing), so that CI can run this very
# script on the fake driver with a test program in place of Python.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gpushare=${GPUSHARE:-$(command -v gpushare || true)}
if [[ -z $gpushare || ! -x $gpushare ]]; then
  echo "two_tenants.sh: gpushare not found: put it on PATH or set GPUSHARE=/path/to/gpushare" >&2
  exit 1
fi
python=${PYTHON:-python3}
# TRAIN_COMMAND / EVAL_COMMAND are split at spaces; the defaults are arrays, so that a checkout
# path with a space in it still works.
train_command=("$python" "$here/train.py" --steps 300)
eval_command=("$python" "$here/train.py" --steps 300 --width 2048)
if [[ -n ${TRAIN_COMMAND+set} ]]; then read -r -a train_command <<<"$TRAIN_COMMAND"; fi
if [[ -n ${EVAL_COMMAND+set} ]]; then read -r -a eval_command <<<"$EVAL_COMMAND"; fi
if ((${#train_command[@]} == 0 || ${#eval_command[@]} == 0)); then
  echo "two_tenants.sh: TRAIN_COMMAND and EVAL_COMMAND must not be empty" >&2
  exit 2
fi

# Both tenants start at once; each is a `gpushare run`, so every process it starts (DataLoader
# workers, torchrun ranks) shares its tenant's quota.
echo "\$ gpushare run --memory ${TRAIN_MEMORY:-8GiB} --share 70 --tenant train -- ${train_command[*]} &"
"$gpushare" run --memory "${TRAIN_MEMORY:-8GiB}" --share 70 --tenant train -- "${train_command[@]}" &
train_pid=$!
echo "\$ gpushare run --memory ${EVAL_MEMORY:-4GiB} --share 30 --priority low --tenant eval -- ${eval_command[*]} &"
"$gpushare" run --memory "${EVAL_MEMORY:-4GiB}" --share 30 --priority low --tenant eval -- "${eval_command[@]}" &
eval_pid=$!

# Stopping this script stops both tenants (their quotas return as soon as they exit).
trap 'kill "$train_pid" "$eval_pid" 2>/dev/null || true' INT TERM

# Wait for both even when the first fails, so that status shows the whole story.
train_status=0
eval_status=0
wait "$train_pid" || train_status=$?
wait "$eval_pid" || eval_status=$?
trap - INT TERM

echo "\$ gpushare status"
"$gpushare" status || true  # the tenants' exit statuses below matter more
echo "train exited with status $train_status, eval with status $eval_status"
if ((train_status != 0 || eval_status != 0)); then
  exit 1
fi
