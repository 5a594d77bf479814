#!/usr/bin/env bash
# examples/systemd: the agent's unit has what the README promises (its runtime folder, reload by
# SIGHUP, restart on failure, a read-only system but for /run/gpushare), `systemd-analyze verify`
# accepts it where that command exists (with ExecStart pointed at this build's gpushare), and the
# example policy loads with the agent's own loader.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [[ -z ${EXAMPLES_POLICY_CHECK:-} ]]; then
  echo "FAIL: EXAMPLES_POLICY_CHECK is not set (run through ctest)" >&2
  exit 1
fi

unit_file=$EXAMPLES_SOURCE_DIR/examples/systemd/gpushare-agent.service
unit=$(<"$unit_file")$'\n'
for line in "Type=simple" "RuntimeDirectory=gpushare" "RuntimeDirectoryMode=0755" 'ExecReload=/bin/kill -HUP $MAINPID' \
  "Restart=on-failure" "NoNewPrivileges=yes" "ProtectSystem=strict" "ReadWritePaths=/run/gpushare" \
  "ProtectHome=read-only" "PrivateTmp=yes" "WantedBy=multi-user.target"; do
  expect_contains "unit: $line" "$unit" $'\n'"$line"$'\n'
done
expect_contains "unit: the agent with the default paths" "$unit" \
  "ExecStart=/usr/bin/gpushare agent --state /run/gpushare/gpushare.state --socket /run/gpushare/agent.sock --policy /etc/gpushare/policy.toml"
# Settings that would hide other users' processes or the GPUs from the agent.
for setting in ProtectProc=invisible PrivateDevices=yes DevicePolicy=closed PrivatePIDs=yes User=; do
  expect_not_contains "unit: no $setting" "$unit" $'\n'"$setting"
done

if command -v systemd-analyze >/dev/null; then
  sed "s#^ExecStart=/usr/bin/gpushare #ExecStart=$EXAMPLES_GPUSHARE #" "$unit_file" >"$work/gpushare-agent.service"
  if verify=$(systemd-analyze verify "$work/gpushare-agent.service" 2>&1); then
    pass "systemd-analyze verify accepts the unit"
  else
    fail "systemd-analyze verify: $verify"
  fi
else
  echo "SKIP: systemd-analyze is not installed here; the unit was not verified by systemd"
fi

# The example policy, installed as the agent wants it: a file of the agent's user, not writable by
# others, in such a folder.
mkdir -m 0755 "$work/etc"
install -m 0644 "$EXAMPLES_SOURCE_DIR/examples/systemd/policy.toml" "$work/etc/policy.toml"
policy=$("$EXAMPLES_POLICY_CHECK" "$work/etc/policy.toml" /system.slice/train-3.scope /user.slice 2>&1) ||
  fail "the example policy does not load: $policy"
echo "$policy"
expect_contains "policy: train" "$policy" "tenant train cgroups=/system.slice/train-*.scope memory=$((40 << 30)) share=70 limit=0"
expect_contains "policy: notebooks" "$policy" "tenant notebooks cgroups= memory=$((8 << 30)) share=20 limit=50"
expect_contains "policy: a train unit is train" "$policy" "cgroup /system.slice/train-3.scope -> train"
expect_contains "policy: others are refused" "$policy" "default refuse"
chmod 0666 "$work/etc/policy.toml"
check "policy: refused when others may write it" bash -c "! '$EXAMPLES_POLICY_CHECK' '$work/etc/policy.toml' 2>/dev/null"
finish
