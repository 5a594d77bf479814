#!/usr/bin/env bash
# Builds gpushare's packages, a .deb and a .tar.gz (CPack, cmake/packaging.cmake), into OUT_DIR
# (default: BUILD_DIR/packages). The configure and install steps are the container image's build stage
# (deploy/container/Dockerfile) with another prefix; docs/packaging.md describes the packages.
# usage: scripts/package.sh [OUT_DIR]
#   PREFIX=/usr       where the .deb installs (and the systemd unit's ExecStart points)
#   BUILD_DIR=build-package   JOBS=$(nproc)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${BUILD_DIR:-$root/build-package}")
out=$(realpath -m "${1:-$build/packages}")
prefix=${PREFIX:-/usr}

"$root/scripts/install-deps.sh" --build-only
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCMAKE_INSTALL_LIBDIR=lib -DGPUSHARE_BUILD_TESTS=OFF -DGPUSHARE_BUILD_BENCHMARKS=OFF -DGPUSHARE_WERROR=OFF
cmake --build "$build" -j"${JOBS:-$(nproc)}"
mkdir -p "$out"
for generator in DEB TGZ; do
  cpack --config "$build/CPackConfig.cmake" -G "$generator" -B "$out"
done
rm -rf "$out/_CPack_Packages"
echo "packages in $out:"
ls -1 "$out"
