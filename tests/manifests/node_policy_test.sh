#!/usr/bin/env bash
# The node DaemonSet's policy (the ConfigMap gpushare-node-policy, key policy.toml) loads with the
# agent's own loader and refuses processes that no rule names.
# usage: node_policy_test.sh POLICY_CHECK SOURCE_DIR
set -euo pipefail
policy_check=$1 source=$2
configmap=$source/deploy/kubernetes/node/policy-configmap.yaml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
# The block scalar under `policy.toml: |`, its four spaces of indentation removed.
sed -n '/^  policy.toml: |$/,$p' "$configmap" | tail -n +2 | sed 's/^    //' >"$work/policy.toml"
[[ -s $work/policy.toml ]] || { echo "FAIL: no policy.toml block in $configmap" >&2; exit 1; }
chmod 0644 "$work/policy.toml"
out=$("$policy_check" "$work/policy.toml") || { echo "FAIL: the agent refuses the ConfigMap's policy" >&2; exit 1; }
echo "$out"
grep -qx "default refuse" <<<"$out" || { echo "FAIL: the default is not to refuse" >&2; exit 1; }
