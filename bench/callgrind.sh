#!/usr/bin/env bash
# Counts the user-space instructions (callgrind, all threads) of each workload under each hakmem build: the repeatable half of an A/B.
#
#   bash bench/callgrind.sh PROGRAMS_DIR LIB.so [LIB.so ...]
#
# PROGRAMS_DIR holds the bench_* programs as bench/run.py builds them (its --build-dir).
# The arguments are the suite's, shortened (callgrind runs ~50x slower).
set -eu
if [ $# -lt 2 ]; then
    echo "usage: bash bench/callgrind.sh PROGRAMS_DIR LIB.so [LIB.so ...]  (needs valgrind)" >&2
    exit 2
fi
dir=$1
shift
workloads=(
    "pair_32|bench_pair 32 1 2000000"
    "pair_4096_rr64|bench_pair 4096 64 2000000"
    "loop_8_64|bench_loop 8 64 64 2000000"
    "loop_8_1024|bench_loop 8 1024 64 1000000"
    "loop_1024_32768|bench_loop 1024 32768 64 1000000"
    "loop_8192_32768|bench_loop 8192 32768 64 1000000"
    "loop_8192_32768_t2|bench_loop 8192 32768 64 500000 2"
    "loop_32769_1048576|bench_loop 32769 1048576 64 100000"
    "loop_1048577_8388608|bench_loop 1048577 8388608 64 10000"
    "threads_1|bench_threads 1 1024 1000000"
    "threads_2|bench_threads 2 1024 500000"
    "threads_4|bench_threads 4 1024 250000"
    "prodcons_1to1|bench_prodcons 500000 8 1024"
    "prodcons_1to3|bench_prodcons 500000 8 1024 1 3"
    "prodcons_3to1|bench_prodcons 500000 8 1024 3 1"
    "churn_1|bench_churn 500 1 100"
    "churn_4|bench_churn 2000 4 100"
    "realloc|bench_realloc 1 8388608 2097152"
    "frag|bench_frag 2 10 16 1"
    "falseshare_16|bench_falseshare 10000000 16 64"
    "phase|bench_phase 500000 20000 0"
    "randaccess_64m|bench_randaccess 64 64 300000"
)
printf "%-22s" workload
for lib in "$@"; do printf " %14s" "$(basename "$(dirname "$lib")")"; done
printf " %9s\n" "last/first"
for w in "${workloads[@]}"; do
    IFS='|' read -r name cmd <<<"$w"
    printf "%-22s" "$name"
    first= last=
    for lib in "$@"; do
        # shellcheck disable=SC2086
        n=$(valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=/dev/null \
            env LD_PRELOAD="$lib" "$dir"/$cmd 2>&1 >/dev/null | awk '/Collected/ { s += $4 } END { print s }')
        printf " %14s" "$n"
        first=${first:-$n}
        last=$n
    done
    awk -v a="$first" -v b="$last" 'BEGIN { printf " %9.4f\n", a ? b / a : 0 }'
done
