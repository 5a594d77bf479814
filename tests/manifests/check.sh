#!/usr/bin/env bash
# Runs validate.js on PATH... with the pinned npm packages (package-lock.json), installed once with
# `npm ci` into CACHE_DIR and again only when the lock file changes. With --expect-invalid, the
# validation must fail and name every file given: the proof that broken manifests are caught.
# usage: check.sh CACHE_DIR [--expect-invalid] PATH...     exit 77: node or npm is missing
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=$1
shift
expect_invalid=no
if [[ ${1:-} == --expect-invalid ]]; then expect_invalid=yes; shift; fi
for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed (scripts/install-deps.sh installs it)"; exit 77; }
done

mkdir -p "$cache"
# One installer at a time: two tests may share the cache.
exec 9>"$cache/.lock"
flock 9
if ! cmp -s "$here/package-lock.json" "$cache/package-lock.json" || [[ ! -d $cache/node_modules ]]; then
  cp "$here/package.json" "$here/package-lock.json" "$cache/"
  (cd "$cache" && npm ci --no-audit --no-fund --loglevel=error) || { echo "FAIL: npm ci" >&2; exit 1; }
fi
flock -u 9

set +e
output=$(NODE_PATH=$cache/node_modules node "$here/validate.js" "$@" 2>&1)
status=$?
set -e
echo "$output"
if [[ $expect_invalid == no ]]; then exit "$status"; fi
[[ $status -eq 1 ]] || { echo "FAIL: expected the validation to fail with status 1, got $status" >&2; exit 1; }
for target in "$@"; do
  grep -q "^INVALID $target" <<<"$output" || { echo "FAIL: no problem reported for $target" >&2; exit 1; }
done
echo "every broken manifest was refused"
