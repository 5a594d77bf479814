#!/bin/sh
# The shadow libnvidia-ml.so.1 exports exactly the NVML names it rewrites, is found under the name
# programs ask for, and depends only on the C library and its forwarder, which it finds through
# RUNPATH (after LD_LIBRARY_PATH). The forwarder has no code: only the real NVML as filters.
# usage: check_nvml_library.sh SHADOW FORWARDER EXPECTED_SYMBOL...
set -eu
shadow=$1
forwarder=$2
shift 2
fail() { echo "$*"; exit 1; }

expected=$(printf '%s\n' "$@" | sort)
actual=$(nm -D --defined-only "$shadow" | awk '{print $3}' | sed 's/@.*//' | sort)
[ "$expected" = "$actual" ] || fail "the shadow exports $(echo $actual), expected $(echo $expected)"

dynamic=$(readelf -d "$shadow")
echo "$dynamic" | grep -q '(SONAME).*\[libnvidia-ml\.so\.1\]' || fail "soname is not libnvidia-ml.so.1"
echo "$dynamic" | grep -q '(RUNPATH).*\[\$ORIGIN/real\]' || fail "no RUNPATH \$ORIGIN/real"
! echo "$dynamic" | grep -q '(RPATH)' || fail "an RPATH would be searched before LD_LIBRARY_PATH"
needed=$(echo "$dynamic" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "$needed" | grep -qx "$(basename "$forwarder")" || fail "the forwarder is not a dependency"
others=$(echo "$needed" | grep -v -x -E "$(basename "$forwarder")|libc\.so\.6|ld-linux-x86-64\.so\.2|ld-linux-aarch64\.so\.1" || true)
[ -z "$others" ] || fail "unexpected shared-library dependencies: $others"

[ -z "$(nm -D --defined-only "$forwarder" 2>/dev/null)" ] || fail "the forwarder exports symbols"
filters=$(readelf -d "$forwarder")
! echo "$filters" | grep -q '(NEEDED)' || fail "the forwarder has dependencies"
count=$(echo "$filters" | grep -c '(AUXILIARY).*/libnvidia-ml\.so\.1\]' || true)
[ "$count" -gt 0 ] || fail "the forwarder names no real NVML"
echo "shadow exports: $(echo $actual); forwarder: $count places for the real NVML"
