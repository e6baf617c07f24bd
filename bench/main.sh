#!/usr/bin/env bash
# The README's main job: installs what it needs, builds hakmem, and runs the side-by-side benchmark against glibc, jemalloc, mimalloc and tcmalloc.
#
#   bash bench/main.sh            # the default suite (~5 min on 2 cores), prints the table
#   bash bench/main.sh --quick    # any run.py flags pass through
set -eu
cd "$(dirname "$0")/.."

need_pkgs=(meson ninja-build gcc g++ pkg-config python3 gnuplot-nox
           libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4)
missing=()
for p in "${need_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench/main.sh: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -d build/bench ]; then
    meson setup --reconfigure build/bench -Dtests=disabled >/dev/null
else
    meson setup build/bench -Dtests=disabled >/dev/null
fi
ninja -C build/bench >/dev/null
exec python3 bench/run.py --hakmem hakmem=build/bench/libhakmem.so --build-dir build/bench-programs "$@"
