#!/usr/bin/env bash
# The manifests run the image of this release: every ghcr.io/gpushare/gpushare reference under
# deploy/kubernetes/ (kustomization images: entries included) names the project's version.
# usage: image_tag_test.sh SOURCE_DIR VERSION
set -euo pipefail
source=$1 version=$2
references=$(grep -rhoE --include='*.yaml' 'ghcr\.io/gpushare/gpushare:[^"[:space:]]+' "$source/deploy/kubernetes" || true)
tags=$(grep -rhE --include='*.yaml' '^\s*newTag:' "$source/deploy/kubernetes" | awk '{print $2}' | tr -d '"' || true)
[[ -n $references ]] || { echo "FAIL: no image reference under deploy/kubernetes" >&2; exit 1; }
status=0
for reference in $references; do
  [[ $reference == "ghcr.io/gpushare/gpushare:$version" ]] || { echo "FAIL: $reference, not $version" >&2; status=1; }
done
for tag in $tags; do
  [[ $tag == "$version" ]] || { echo "FAIL: kustomization newTag $tag, not $version" >&2; status=1; }
done
[[ $status -ne 0 ]] || echo "every image reference is ghcr.io/gpushare/gpushare:$version"
exit "$status"
