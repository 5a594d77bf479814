#!/usr/bin/env bash
# A lint of examples/kubernetes: every gpushare or HAMi variable the manifests use is one that
# docs/configuration.md documents, every document has the shape Kubernetes needs, tenants keep the
# image's entrypoint, and GPUSHARE_STATE points into a mounted host folder. Parses the YAML too
# when Python with PyYAML is there (it is not on a fresh Debian 12, so the shell checks stand alone).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

docs=$EXAMPLES_SOURCE_DIR/docs/configuration.md
mapfile -t manifests < <(find "$EXAMPLES_SOURCE_DIR/examples/kubernetes" -name '*.yaml' | sort)
check "found ${#manifests[@]} manifests" test "${#manifests[@]}" -ge 4

# 1. Variables: GPUSHARE_MEMORY_LIMIT_0 is documented as GPUSHARE_MEMORY_LIMIT_<i>.
mapfile -t variables < <(grep -ohE '\b(GPUSHARE|CUDA_DEVICE)_[A-Z0-9_]*[A-Z0-9]\b' "${manifests[@]}" | sort -u)
check "variables used: ${variables[*]}" test "${#variables[@]}" -ge 5
for variable in "${variables[@]}"; do
  documented=$(sed -E 's/_[0-9]+$/_<i>/' <<<"$variable")
  if grep -qF "\`$documented\`" "$docs"; then
    pass "$variable is documented"
  else
    fail "$variable (as $documented) is not in docs/configuration.md"
  fi
done

no_command() { ! grep -qE '^[[:space:]]+command:' "$1"; }

# 2. Each document on its own: split at '---' lines.
split=$work/documents
mkdir "$split"
index=0
for manifest in "${manifests[@]}"; do
  index=$((index + 1))
  base=$index-$(basename "$manifest" .yaml)
  awk -v out="$split/$base" 'BEGIN { n = 0 } /^---[[:space:]]*$/ { n++; next } { print > (out "." n ".yaml") }' "$manifest"
  if grep -q $'\t' "$manifest"; then fail "$manifest: tabs are not allowed in YAML"; fi
done
for document in "$split"/*.yaml; do
  name=$(basename "$document")
  # Comments only (e.g. before a leading ---): nothing to check.
  grep -qvE '^[[:space:]]*(#.*)?$' "$document" || continue
  for key in apiVersion kind metadata; do
    check "$name has a top-level $key" grep -qE "^$key:" "$document"
  done
  check "$name has a metadata.name that is a DNS name" grep -qE '^  name: [a-z0-9]([-a-z0-9.]*[a-z0-9])?$' "$document"

  # 3. Tenants keep the image's ENTRYPOINT (gpushare-entrypoint.sh): `command:` would replace it.
  if grep -qE 'GPUSHARE_|nvidia\.com/gpumem' "$document"; then
    check "$name: tenants keep the entrypoint (args, no command)" no_command "$document"
  fi

  # 4. GPUSHARE_STATE lies in a host folder mounted at the same path.
  state=$(grep -A1 -E '^[[:space:]]*- name: GPUSHARE_STATE$' "$document" | sed -nE 's/^[[:space:]]*value: "?([^"]*)"?$/\1/p' || true)
  if [[ -n $state ]]; then
    folder=$(dirname "$state")
    check "$name: GPUSHARE_STATE's folder $folder is a mountPath" grep -qE "^[[:space:]]+mountPath: $folder\$" "$document"
    check "$name: $folder is a hostPath volume" grep -qE '^[[:space:]]+hostPath:' "$document"
    check "$name: the host folder is $folder too" grep -qE "^[[:space:]]+path: $folder\$" "$document"
  fi
done

# 5. The YAML itself, where a parser is at hand.
if python3 -c 'import yaml' 2>/dev/null; then
  if python3 - "${manifests[@]}" <<'PY'; then pass "the manifests parse as YAML"; else fail "YAML parse errors (above)"; fi
import sys, yaml
ok = True
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc is None:
            continue
        if not all(key in doc for key in ("apiVersion", "kind", "metadata")):
            print(f"{path}: a document without apiVersion, kind and metadata", file=sys.stderr)
            ok = False
        pod = doc.get("spec", {}).get("template", {}).get("spec") if doc["kind"] in ("Job", "Deployment") else doc.get("spec")
        for container in (pod or {}).get("containers", []) if doc["kind"] in ("Job", "Deployment", "Pod") else []:
            for entry in container.get("env", []):
                if set(entry) not in ({"name", "value"}, {"name", "valueFrom"}) or not isinstance(entry.get("value", ""), str):
                    print(f"{path}: env entry {entry} needs a name and a string value (or valueFrom)", file=sys.stderr)
                    ok = False
sys.exit(0 if ok else 1)
PY
else
  echo "skip: no python3 with PyYAML; the shell checks above stand"
fi
finish
