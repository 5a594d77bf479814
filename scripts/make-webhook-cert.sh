#!/usr/bin/env bash
# TLS for gpushare's admission webhook on a cluster without cert-manager: makes a CA and a serving
# certificate for the webhook's Service, the Secret the Deployment mounts, and the patch that gives
# the MutatingWebhookConfiguration the CA. It only writes files and prints the kubectl commands that
# use them; it changes nothing in the cluster itself.
#
#   scripts/make-webhook-cert.sh [--out DIR] [--namespace NS] [--service NAME] [--days N]
#
# Defaults: DIR ./gpushare-webhook-tls, NS gpushare-system, NAME gpushare-webhook, N 825.
# In DIR: ca.crt ca.key (keep ca.key private, or delete it: it only signs), tls.crt tls.key,
# secret.yaml (Secret gpushare-webhook-tls, type kubernetes.io/tls) and cabundle-patch.json (a JSON
# patch setting caBundle on both webhooks). Before N days are up, run it again and apply both.
# docs/kubernetes-webhook.md, TLS, has the whole procedure.
set -euo pipefail

out=./gpushare-webhook-tls
namespace=gpushare-system
service=gpushare-webhook
days=825
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --out) out=${2:?--out needs a folder}; shift 2 ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --service) service=${2:?--service needs a name}; shift 2 ;;
    --days) days=${2:?--days needs a number}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "make-webhook-cert.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[[ $days =~ ^[1-9][0-9]*$ ]] || { echo "make-webhook-cert.sh: --days must be a positive number" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-webhook-cert.sh: needs the openssl command" >&2; exit 1; }

host="$service.$namespace.svc"
mkdir -p "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The CA: a self-signed certificate that may sign others, nothing else.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days "$days" \
  -subj "/CN=$service CA" -keyout "$out/ca.key" -out "$out/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
# The serving certificate: the names the API server calls the Service by.
cat >"$work/serving.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$host,DNS:$host.cluster.local
EXT
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$host" \
  -keyout "$out/tls.key" -out "$work/tls.csr" 2>/dev/null
openssl x509 -req -in "$work/tls.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -CAserial "$work/ca.srl" -days "$days" -extfile "$work/serving.ext" -out "$out/tls.crt" 2>/dev/null
openssl verify -CAfile "$out/ca.crt" "$out/tls.crt" >/dev/null

b64() { openssl base64 -A -in "$1"; }
cat >"$out/secret.yaml" <<YAML
# The webhook's serving certificate (scripts/make-webhook-cert.sh): kubectl apply -f secret.yaml
apiVersion: v1
kind: Secret
metadata:
  name: $service-tls
  namespace: $namespace
  labels:
    app.kubernetes.io/name: $service
    app.kubernetes.io/part-of: gpushare
type: kubernetes.io/tls
data:
  tls.crt: $(b64 "$out/tls.crt")
  tls.key: $(b64 "$out/tls.key")
YAML
ca_bundle=$(b64 "$out/ca.crt")
cat >"$out/cabundle-patch.json" <<JSON
[{"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "$ca_bundle"},
 {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": "$ca_bundle"}]
JSON
chmod 0644 "$out/ca.crt" "$out/tls.crt" "$out/cabundle-patch.json"

cat <<TEXT
Made in $out: ca.crt, ca.key, tls.crt, tls.key (for $host, $days days), secret.yaml, cabundle-patch.json.
Then (deploy/kubernetes/webhook without certificate.yaml and the cert-manager.io/inject-ca-from annotation):
  kubectl apply -f $out/secret.yaml
  kubectl apply -k deploy/kubernetes/webhook
  kubectl patch mutatingwebhookconfiguration gpushare --type=json --patch-file $out/cabundle-patch.json
TEXT
