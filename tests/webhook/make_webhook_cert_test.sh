#!/usr/bin/env bash
# scripts/make-webhook-cert.sh makes what it says: a serving certificate for the Service's names
# that its CA verifies, a key that matches it, a kubernetes.io/tls Secret holding exactly those
# files, and a JSON patch giving both webhooks the CA.
set -euo pipefail
script=${1:?usage: make_webhook_cert_test.sh path/to/make-webhook-cert.sh}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$script" --out "$out/tls" --namespace team-gpu --service hook --days 30 >"$out/printed"
grep -q "kubectl patch mutatingwebhookconfiguration gpushare --type=json --patch-file $out/tls/cabundle-patch.json" \
  "$out/printed" || fail "the patch command is not printed"
openssl verify -CAfile "$out/tls/ca.crt" "$out/tls/tls.crt" >/dev/null || fail "the CA does not verify tls.crt"
openssl x509 -in "$out/tls/tls.crt" -noout -ext subjectAltName |
  grep -q "DNS:hook.team-gpu.svc, DNS:hook.team-gpu.svc.cluster.local" || fail "wrong subjectAltName"
openssl x509 -in "$out/tls/tls.crt" -noout -checkend $((29 * 86400)) >/dev/null || fail "expires before --days"
[[ $(openssl x509 -in "$out/tls/tls.crt" -noout -pubkey) == $(openssl pkey -in "$out/tls/tls.key" -pubout) ]] ||
  fail "tls.key is not the key of tls.crt"
[[ $(stat -c %a "$out/tls/tls.key") == 600 ]] || fail "tls.key is readable by others"

secret_value() { sed -n "s/^  $1: //p" "$out/tls/secret.yaml" | openssl base64 -d -A; }
grep -q "^  name: hook-tls$" "$out/tls/secret.yaml" || fail "the Secret is not hook-tls"
grep -q "^  namespace: team-gpu$" "$out/tls/secret.yaml" || fail "the Secret is not in team-gpu"
grep -q "^type: kubernetes.io/tls$" "$out/tls/secret.yaml" || fail "the Secret is not of type kubernetes.io/tls"
[[ $(secret_value tls.crt) == "$(cat "$out/tls/tls.crt")" ]] || fail "the Secret's tls.crt differs"
[[ $(secret_value tls.key) == "$(cat "$out/tls/tls.key")" ]] || fail "the Secret's tls.key differs"

python3 - "$out/tls/cabundle-patch.json" "$out/tls/ca.crt" <<'PY' || fail "wrong caBundle patch"
import base64, json, sys
patch = json.load(open(sys.argv[1]))
ca = open(sys.argv[2], "rb").read()
assert [op["path"] for op in patch] == ["/webhooks/0/clientConfig/caBundle", "/webhooks/1/clientConfig/caBundle"]
assert all(op["op"] == "add" and base64.b64decode(op["value"]) == ca for op in patch)
PY

"$script" --days 0 2>/dev/null && fail "--days 0 accepted"
"$script" --unknown 2>/dev/null && fail "an unknown argument accepted"
echo "make-webhook-cert.sh: ok"
