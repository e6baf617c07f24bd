#!/usr/bin/env bash
# The README's main job: installs what it needs, builds hakmem, and runs the side-by-side benchmark against glibc, jemalloc, mimalloc and tcmalloc.
#
#   bash bench/main.sh            # the default suite (about 10 min on 2 cores), prints the table
#   bash bench/main.sh --quick    # any run.py flags pass through
set -eu
cd "$(dirname "$0")/.."

# python3 and sqlite3 are also workloads ("real programs" run under each allocator).
. .ci/need_pkgs.sh
need_pkgs bench/main.sh meson ninja-build gcc g++ pkg-config python3 sqlite3 gnuplot-nox \
    libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4

# The default build, and for comparison: the shared-pool build (-Dpool_tls=false),
# the hugepages backend (-Dmem_backend=hugepages: MAP_HUGETLB if vm.nr_hugepages
# is set, else THP) and the learning build (-Dlearning=true, Box 3 ACE).
for cfg in "bench|" "bench-pool|-Dpool_tls=false" "bench-huge|-Dmem_backend=hugepages" "bench-learning|-Dlearning=true"; do
    IFS='|' read -r dir opts <<<"$cfg"
    # shellcheck disable=SC2086
    if [ -d "build/$dir" ]; then
        meson setup --reconfigure "build/$dir" -Dtests=disabled $opts >/dev/null
    else
        meson setup "build/$dir" -Dtests=disabled $opts >/dev/null
    fi
    ninja -C "build/$dir" >/dev/null
done
exec python3 bench/run.py --hakmem hakmem=build/bench/libhakmem.so \
    --hakmem hakmem-pool=build/bench-pool/libhakmem.so --hakmem hakmem-huge=build/bench-huge/libhakmem.so \
    --hakmem hakmem-ace=build/bench-learning/libhakmem.so \
    --build-dir build/bench-programs "$@"
