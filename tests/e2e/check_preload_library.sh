#!/bin/sh
# The preload library exports exactly the names generated from interpose/hooks.def (plus dlsym),
# and depends on nothing but the C library: it is injected into other people's processes.
# usage: check_preload_library.sh LIBRARY EXPECTED_SYMBOL...
set -eu
library=$1
shift
expected=$(printf '%s\n' "$@" | sort)
actual=$(nm -D --defined-only "$library" | awk '{print $3}' | sed 's/@.*//' | sort)
if [ "$expected" != "$actual" ]; then
  echo "exported symbols differ from hooks.def:"
  printf '%s\n' "$expected" >/tmp/expected.$$
  printf '%s\n' "$actual" | diff /tmp/expected.$$ - || true
  rm -f /tmp/expected.$$
  exit 1
fi
needed=$(readelf -d "$library" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -v -E '^(libc\.so\.6|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1)$' || true)
if [ -n "$needed" ]; then
  echo "unexpected shared-library dependencies: $needed"
  exit 1
fi
echo "exports: $(echo "$actual" | wc -l) symbols, as hooks.def says; dependencies: C library only"
