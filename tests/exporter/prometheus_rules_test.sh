#!/usr/bin/env bash
# The PrometheusRule's alerts through promtool: `check rules` on its spec, then `test rules` with
# prometheus_rules_test.yaml (series as the exporter emits them, the alerts and their exact
# annotations). Exit 77 (skipped) only when promtool is missing: Debian's `prometheus` package has it.
# Usage: prometheus_rules_test.sh PROMETHEUS_RULE_YAML RULES_TEST_YAML
set -euo pipefail
rule_file=$1
unit_tests=$2
if ! command -v promtool >/dev/null; then
  echo "promtool not found (Debian package prometheus): skipped"
  exit 77
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The PrometheusRule's `spec:` is a Prometheus rules file indented by two spaces.
grep -q '^spec:$' "$rule_file" || { echo "no top-level spec: in $rule_file" >&2; exit 1; }
sed -n '/^spec:$/,$p' "$rule_file" | tail -n +2 | sed 's/^  //' >"$work/rules.yaml"
grep -q '^groups:$' "$work/rules.yaml" || { echo "spec: of $rule_file does not begin with groups:" >&2; exit 1; }
cp "$unit_tests" "$work/rules_test.yaml"
promtool check rules "$work/rules.yaml"
# Every alert of the file has at least one test.
for alert in $(sed -n 's/^ *- alert: *//p' "$work/rules.yaml"); do
  grep -q "alertname: $alert\$" "$work/rules_test.yaml" || { echo "no promtool test for alert $alert" >&2; exit 1; }
done
cd "$work"
promtool test rules rules_test.yaml
