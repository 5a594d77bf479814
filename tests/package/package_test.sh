#!/usr/bin/env bash
# Builds the .tar.gz and the .deb with CPack, unpacks each into a temporary root (dpkg-deb -x) and
# uses what they installed: the layout, the systemd unit's ExecStart, the .deb's Depends, then real
# processes on the fake driver: `gpushare run` with the packaged preload library, the packaged agent
# with one tenant through it, and `gpushare node-install` into a host folder whose `current` a
# tenant then preloads from. Also checks that the container image's runtime packages
# (deploy/container/Dockerfile) cover every library the packaged programs need.
# usage: package_test.sh BUILD_DIR SOURCE_DIR PREFIX LIBDIR VERSION FAKE_CUDA_DIR ALLOC_PROBE
# exit 77 (skipped): dpkg-deb or dpkg-shlibdeps is missing.
set -euo pipefail
trap 'echo "FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
build=$1 source=$2 prefix=$3 libdir=$4 version=$5 fake_dir=$6 alloc_probe=$7
for tool in dpkg-deb dpkg-shlibdeps; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is missing (Debian's dpkg-dev builds the .deb)"; exit 77; }
done
work=$(mktemp -d)
agent_pid=""
cleanup() {
  [[ -z $agent_pid ]] || kill "$agent_pid" 2>/dev/null || true
  [[ -z $agent_pid ]] || wait "$agent_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
chmod 0755 "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
export FAKE_CUDA_DEVICE_MEMORY=$((8 << 30)) GPUSHARE_REAL_LIBCUDA=$fake_dir/libcuda.so.1
unset LD_PRELOAD GPUSHARE_TENANT GPUSHARE_MEMORY_LIMIT GPUSHARE_AGENT GPUSHARE_STATE

# 1. Both packages, as scripts/package.sh makes them.
for generator in TGZ DEB; do
  cpack --config "$build/CPackConfig.cmake" -G "$generator" -B "$work/packages" >"$work/cpack-$generator.log" 2>&1 ||
    { cat "$work/cpack-$generator.log" >&2; fail "cpack -G $generator"; }
done
tarball=$work/packages/gpushare-$version-Linux.tar.gz
deb=$(ls "$work/packages"/gpushare_"$version"_*.deb)
[[ -f $tarball ]] || fail "no $tarball: $(ls "$work/packages")"
mkdir "$work/tgz" "$work/deb"
tar -xzf "$tarball" -C "$work/tgz"
dpkg-deb -x "$deb" "$work/deb"
echo "packages: $(basename "$tarball") $(basename "$deb")"

# 2. The layout of both: the .tar.gz relative to its top folder, the .deb at the build's prefix.
check_layout() {  # check_layout ROOT_OF_PREFIX PREFIX_FOR_THE_UNIT
  local root=$1 unit_prefix=$2
  for file in bin/gpushare "$libdir/gpushare/libgpushare-preload.so" "$libdir/gpushare/gpushare-agent" \
              "$libdir/gpushare/nvml/libnvidia-ml.so.1" "$libdir/gpushare/nvml/real/libgpushare-real-nvml.so" \
              include/gpushare/gpushare.h "$libdir/cmake/gpushare/gpushareConfig.cmake" \
              "$libdir/pkgconfig/gpushare.pc" share/doc/gpushare/LICENSE share/doc/gpushare/CHANGELOG.md \
              share/doc/gpushare/examples/policy.toml lib/systemd/system/gpushare-agent.service; do
    [[ -f $root/$file ]] || fail "not packaged: $file (in $root)"
  done
  cmp -s "$root/share/doc/gpushare/LICENSE" "$source/LICENSE" || fail "LICENSE differs"
  grep -qxF "ExecStart=$unit_prefix/bin/gpushare agent --state /run/gpushare/gpushare.state --socket /run/gpushare/agent.sock --policy /etc/gpushare/policy.toml" \
    "$root/lib/systemd/system/gpushare-agent.service" || fail "the unit's ExecStart is not $unit_prefix/bin/gpushare"
}
tgz_root=$work/tgz/gpushare-$version-Linux
check_layout "$tgz_root" "$prefix"
deb_root=$work/deb$prefix
check_layout "$deb_root" "$prefix"
echo "layout: ok ($libdir, unit runs $prefix/bin/gpushare)"

# 3. The .deb's control: its version, and Depends computed from the programs' libraries.
control_version=$(dpkg-deb -f "$deb" Version)
[[ $control_version == "$version" ]] || fail "package version $control_version, expected $version"
depends=$(dpkg-deb -f "$deb" Depends)
for package in libc6 libtomlplusplus3; do
  grep -q "\b$package\b" <<<"$depends" || fail "Depends lacks $package: $depends"
done
if [[ -f $deb_root/$libdir/gpushare/gpushare-exporter ]]; then
  grep -q "libcpp-httplib" <<<"$depends" || fail "Depends lacks the exporter's libcpp-httplib: $depends"
fi
echo "control: Version $control_version, Depends $depends"

# 4. The packaged gpushare finds its packaged preload library (fake driver).
out=$("$deb_root/bin/gpushare" version)
grep -q "^gpushare $version " <<<"$out" || fail "gpushare version: $out"
out=$(GPUSHARE_STATE=$work/plain.state LD_LIBRARY_PATH=$fake_dir "$deb_root/bin/gpushare" run --memory 64MiB \
  --tenant packaged -- "$alloc_probe" dlsym fill $((16 << 20)))
grep -q "^allocated=67108864 " <<<"$out" || fail "packaged gpushare run: $out"
echo "packaged gpushare run: ok"

# 5. node-install from the unpacked .tar.gz (relocated: it runs from wherever it lies) into a host
# folder, as the DaemonSet's init container does.
host=$work/host/usr/local/gpushare
set +e
"$tgz_root/bin/gpushare" node-install >/dev/null 2>&1; missing_option=$?
"$tgz_root/bin/gpushare" node-install --host-dir "$host" --bogus >/dev/null 2>&1; bad_option=$?
touch "$work/a-file"
err=$("$tgz_root/bin/gpushare" node-install --host-dir "$work/a-file/gpushare" 2>&1 >/dev/null); cannot_create=$?
set -e
[[ $missing_option -eq 2 && $bad_option -eq 2 ]] || fail "bad options: exit $missing_option and $bad_option, not 2"
[[ $cannot_create -eq 1 ]] || fail "a host folder that cannot be made: exit $cannot_create, not 1"
grep -q "^gpushare node-install: cannot create $work/a-file/gpushare" <<<"$err" || fail "unclear failure: $err"
out=$("$tgz_root/bin/gpushare" node-install --host-dir "$host")
grep -q "^installed release $version " <<<"$out" || fail "node-install: $out"
[[ $(readlink "$host/current") == "releases/$version" ]] || fail "current -> $(readlink "$host/current")"
cmp -s "$host/current/$libdir/gpushare/libgpushare-preload.so" "$tgz_root/$libdir/gpushare/libgpushare-preload.so" ||
  fail "the host folder's preload library differs from the package's"
[[ -f $host/current/$libdir/gpushare/nvml/libnvidia-ml.so.1 && -x $host/current/bin/gpushare ]] ||
  fail "node-install left out the NVML shadow or bin/gpushare"
out=$("$tgz_root/bin/gpushare" node-install --host-dir "$host")
grep -q "^kept release $version " <<<"$out" || fail "an identical release was not kept: $out"
echo "node-install: ok"

# 6. The packaged agent (isolation mode needs root) and one tenant through it, preloaded from the
# host folder's `current`.
if [[ $(id -u) -ne 0 ]]; then
  echo "agent: skipped (the agent runs as root)"
else
  run=$work/run
  mkdir -m 0755 "$run"
  printf '[tenant.packaged]\nuids = [0]\nmemory = "32MiB"\n\n[default]\nrefuse = true\n' >"$work/policy.toml"
  chmod 0644 "$work/policy.toml"
  "$deb_root/bin/gpushare" agent --state "$run/gpushare.state" --socket "$run/agent.sock" \
    --policy "$work/policy.toml" 2>"$work/agent.log" &
  agent_pid=$!
  for _ in $(seq 1 1000); do
    [[ -S $run/agent.sock ]] && break
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; fail "the agent exited"; }
    sleep 0.01
  done
  [[ -S $run/agent.sock ]] || { cat "$work/agent.log" >&2; fail "the agent's socket never appeared"; }
  out=$(LD_PRELOAD=$host/current/$libdir/gpushare/libgpushare-preload.so GPUSHARE_AGENT=$run/agent.sock \
    LD_LIBRARY_PATH=$fake_dir GPUSHARE_MEMORY_LIMIT=1GiB "$alloc_probe" linked fill $((1 << 20)))
  grep -q "^allocated=$((32 << 20)) " <<<"$out" || fail "tenant of the packaged agent: $out"
  status=$("$deb_root/bin/gpushare" status --state "$run/gpushare.state")
  grep -q "packaged" <<<"$status" || fail "the agent's state does not show the tenant: $status"
  kill "$agent_pid"
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=""
  echo "packaged agent with a tenant: ok"
fi

# 7. The container image's runtime packages hold every library the packaged programs link.
runtime_packages=$(sed -n 's/^ARG RUNTIME_PACKAGES="\(.*\)"$/\1/p' "$source/deploy/container/Dockerfile")
[[ -n $runtime_packages ]] || fail "no ARG RUNTIME_PACKAGES=\"...\" line in deploy/container/Dockerfile"
for program in "$deb_root/bin/gpushare" "$deb_root/$libdir/gpushare"/gpushare-* \
               "$deb_root/$libdir/gpushare/libgpushare-preload.so"; do
  [[ -f $program ]] || continue
  for needed in $(objdump -p "$program" | awk '$1 == "NEEDED" {print $2}'); do
    library=$(ldconfig -p | awk -v name="$needed" '$1 == name && !found {print $NF; found = 1}')
    [[ -n $library ]] || fail "$program needs $needed, which is not installed here"
    owner=""
    for candidate in "$library" "$(readlink -f "$library")" "${library#/usr}"; do
      owner=$(dpkg -S "$candidate" 2>/dev/null | sed -n "1s/:.*//p" || true)
      [[ -z $owner ]] || break
    done
    [[ -n $owner ]] || fail "no Debian package owns $library ($needed of $program)"
    case " $runtime_packages libc6 libgcc-s1 " in
      *" $owner "*) ;;
      *) fail "$(basename "$program") needs $needed from $owner, not in the image's RUNTIME_PACKAGES ($runtime_packages)" ;;
    esac
  done
done
echo "image runtime packages cover the programs: ok ($runtime_packages)"
