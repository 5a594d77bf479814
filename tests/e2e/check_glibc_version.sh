#!/bin/sh
# What gpushare ships must load on glibc 2.34 (RHEL 9; Ubuntu 22.04, the base of most PyTorch
# images, has 2.35), though it is built on Debian 12's 2.36: no binary may ask the loader for a
# newer GLIBC_ symbol version (compat/glibc_compat.cpp keeps the static C++ runtime from doing so).
# usage: check_glibc_version.sh BINARY...
set -eu
limit=2.34
status=0
for binary in "$@"; do
  newest=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
  if [ "$(printf '%s\n%s\n' "$newest" "$limit" | sort -V | tail -n 1)" != "$limit" ]; then
    echo "$binary needs GLIBC_$newest (more than $limit):"
    objdump -T "$binary" | grep -E "GLIBC_$newest\b" | sed 's/^/  /'
    status=1
  else
    echo "$binary: newest glibc symbol version $newest"
  fi
done
exit $status
