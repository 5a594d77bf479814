#!/bin/sh
# cuda.h for an image's build stage (gpushare needs it at build time only; nothing links libcuda):
# from NVIDIA's CUDA apt repository for Debian 12, whose CUDA runtime headers package holds it and is
# small where the full toolkit is gigabytes. Leaves /usr/local/cuda/include/cuda.h, where
# install-deps.sh and CMake look. Usage: install-cuda-headers.sh [PACKAGE] (default cuda-cudart-dev-13-0).
set -eu
package=${1:-cuda-cudart-dev-13-0}
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl
curl -fsSL -o /tmp/cuda-keyring.deb \
  https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb
dpkg -i /tmp/cuda-keyring.deb
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$package"
header=$(find /usr/local -path '*/include/cuda.h' -print -quit)
test -n "$header" || { echo "install-cuda-headers: $package holds no cuda.h" >&2; exit 1; }
if [ ! -e /usr/local/cuda/include/cuda.h ]; then
  mkdir -p /usr/local/cuda/include
  ln -s "$header" /usr/local/cuda/include/cuda.h
fi
rm -rf /tmp/cuda-keyring.deb /var/lib/apt/lists/*
