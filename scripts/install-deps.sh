#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build gpushare and its tests. Idempotent: asks
# apt only for packages that are missing. `--build-only`: only what building and packaging need
# (the images' build stages, scripts/package.sh), not the tests' tools (openssl, promtool, node).
set -euo pipefail
build_only=no
[[ ${1-} == --build-only ]] && build_only=yes
# dpkg-dev: dpkg-shlibdeps, with which CPack computes the .deb's Depends (scripts/package.sh).
# The exporter finds libcpp-httplib-dev through pkg-config (pkgconf), whose Cflags make httplib.h include the
# openssl, zlib and brotli headers: those are listed too, though the package depends on them.
packages=(cmake ninja-build g++ libboost-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev libgmock-dev
          libbenchmark-dev libcpp-httplib-dev pkgconf libssl-dev zlib1g-dev libbrotli-dev libtomlplusplus-dev
          binutils dpkg-dev)
if [[ $build_only == no ]]; then
  packages+=(openssl)     # the command: the webhook's and the pod watch's tests, scripts/make-webhook-cert.sh
  packages+=(prometheus)  # promtool: the alert rules' tests (deploy/kubernetes/monitoring)
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
# The Kubernetes manifests' check (tests/manifests) runs on node and npm: Debian's, unless some are
# installed already (another node, e.g. NodeSource's, carries its own npm).
if [[ $build_only == no ]]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# cuda.h (build time only): from a CUDA toolkit in /usr/local/cuda, else Debian's non-free package.
have_cuda_h=no
for header in /usr/local/cuda/include/cuda.h /usr/local/cuda-*/include/cuda.h /usr/include/cuda.h; do
  [[ -f "$header" ]] && have_cuda_h=yes
done
if [[ $have_cuda_h == no ]]; then
  echo "cuda.h not found: installing nvidia-cuda-dev (needs the non-free component in apt sources)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nvidia-cuda-dev >/dev/null || {
    echo "error: no cuda.h; install the CUDA toolkit (headers are enough) or enable Debian non-free" >&2
    exit 1
  }
fi
