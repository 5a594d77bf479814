#!/usr/bin/env bash
# Installs the build into a temporary prefix and uses it the three ways a user would: the CMake
# package (examples/cpp-linked), pkg-config from C, and `gpushare run` from the installed bin/.
# Everything runs on the fake driver.
# usage: install_test.sh BUILD_DIR SOURCE_DIR FAKE_LIBCUDA CUDA_INCLUDE_DIR ALLOC_PROBE
set -euo pipefail
build=$1 source=$2 fake_libcuda=$3 cuda_include=$4 alloc_probe=$5
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
export FAKE_CUDA_DEVICE_MEMORY=$((8 << 30)) GPUSHARE_STATE=$work/gpushare.state
unset LD_PRELOAD GPUSHARE_TENANT GPUSHARE_MEMORY_LIMIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_line() {  # expect_line OUTPUT LINE
  grep -qxF -- "$2" <<<"$1" || fail "expected the line '$2' in:"$'\n'"$1"
}

cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(cd "$prefix" && ls -d lib*/gpushare | head -n1 | xargs dirname)
for file in bin/gpushare "$libdir/gpushare/libgpushare-preload.so" include/gpushare/gpushare.h \
            include/gpushare/gpushare.hpp "$libdir/cmake/gpushare/gpushareConfig.cmake" \
            "$libdir/pkgconfig/gpushare.pc" "$libdir/gpushare/nvml/libnvidia-ml.so.1" \
            "$libdir/gpushare/nvml/real/libgpushare-real-nvml.so"; do
  [[ -f $prefix/$file ]] || fail "not installed: $file"
done
echo "layout: ok ($libdir)"

# 1. The CMake package: examples/cpp-linked, configured against the installed tree only.
cmake -S "$source/examples/cpp-linked" -B "$work/cpp-linked" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DCUDA_DRIVER_LIBRARY="$fake_libcuda" -DCUDA_DRIVER_INCLUDE_DIR="$cuda_include" >/dev/null
cmake --build "$work/cpp-linked" >/dev/null
out=$("$work/cpp-linked/quota_demo" 256)
expect_line "$out" "device_total_mib=256"
expect_line "$out" "allocated_mib=256 refused_with=CUDA_ERROR_OUT_OF_MEMORY"
expect_line "$out" "usage used_mib=256 limit_mib=256 peak_mib=256 oom_refusals=1"
expect_line "$out" "after_free used_mib=0"
echo "cmake package: ok"

# The same program linked with libcuda ahead of gpushare would bypass it: join must say so.
c++ -std=c++17 -Wall -Wextra -Werror -o "$work/wrong_order" "$source/examples/cpp-linked/main.cpp" -I"$prefix/include" -I"$cuda_include" \
  "$fake_libcuda" "$prefix/$libdir/gpushare/libgpushare-preload.so" \
  -Wl,-rpath,"$(dirname "$fake_libcuda")":"$prefix/$libdir/gpushare"
if err=$("$work/wrong_order" 256 2>&1); then fail "a wrongly ordered link was accepted: $err"; fi
grep -q "before gpushare" <<<"$err" || fail "unclear message for a wrong link order: $err"
echo "wrong link order: refused ($err)"

# 2. pkg-config from C.
export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
cc -std=c11 -Wall -Wextra -Werror -o "$work/c_api_probe" "$source/tests/install/c_api_probe.c" -I"$cuda_include" \
  $(pkg-config --cflags --libs gpushare) "$fake_libcuda" -Wl,-rpath,"$(dirname "$fake_libcuda")"
out=$("$work/c_api_probe")
expect_line "$out" "usage_before_join result=6"
expect_line "$out" "probe_before_join found=1"
grep -q "^bad_share result=1 message=gpushare_join: GPUSHARE_COMPUTE_SHARE" <<<"$out" || fail "bad share: $out"
expect_line "$out" "join result=0 tenant=c-api"
expect_line "$out" "second_join result=2"
expect_line "$out" "usage_before_cuinit result=5"
expect_line "$out" "alloc48=2 alloc16=0 usage result=0 used=16777216 limit=33554432 refusals=1 total=33554432"
echo "pkg-config and the C API: ok"

# 3. The installed command finds its installed preload library.
out=$(GPUSHARE_REAL_LIBCUDA=$fake_libcuda "$prefix/bin/gpushare" run --memory 64MiB --tenant installed -- \
  "$alloc_probe" dlsym fill $((16 << 20)))
grep -q "^allocated=67108864 " <<<"$out" || fail "installed gpushare run: $out"
echo "installed gpushare run: ok"
