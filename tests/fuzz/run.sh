#!/usr/bin/env bash
# Builds the libFuzzer target tests/fuzz/fuzz_hakmem.c with clang, replays tests/fuzz/regressions/, then fuzzes for N seconds (default 60).
#
#   bash tests/fuzz/run.sh          # 60 s
#   bash tests/fuzz/run.sh 600      # 10 minutes
#
# Exits 0 when the regressions replay cleanly and the run finds nothing;
# non-zero on a crash (the input is left in build/fuzz/artifacts/: copy it to
# tests/fuzz/regressions/ once the bug is understood).
#
# How it is built:
#  - hakmem with -Doverride=false: only hak_* is exported, so libFuzzer's and
#    ASan's own malloc stay glibc's (ASan's allocator) and hakmem is just a
#    library under test.
#  - hakmem's own code is compiled with -fsanitize=fuzzer-no-link (coverage
#    feedback from inside the allocator: that is what lets the fuzzer steer
#    toward new size classes, refills, purges, the large cache...) plus
#    address and undefined. ASan does not know hakmem's blocks (they come from
#    mmap, which ASan leaves addressable), so it cannot see a use-after-free
#    *between* hakmem blocks - the shadow patterns in the target do that - but
#    it does catch hakmem overrunning its own globals, stack and any glibc
#    memory, and UBSan catches shifts, overflows and misaligned accesses in
#    the size-class arithmetic. Neither needs hakmem to stop using mmap.
#  - The target itself: -fsanitize=fuzzer,address,undefined.
set -u
cd "$(dirname "$0")/../.."
secs="${1:-60}"

# --- tools -------------------------------------------------------------------
fuzzer_rt() { ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; }
if ! command -v clang-14 >/dev/null 2>&1 || ! fuzzer_rt || ! command -v meson >/dev/null 2>&1 ||
   ! command -v ninja >/dev/null 2>&1; then
    . .ci/need_pkgs.sh
    need_pkgs tests/fuzz/run.sh clang-14 libclang-rt-14-dev meson ninja-build pkg-config || exit 2
fi
CC=clang-14

# --- build ---------------------------------------------------------------------
dir=build/fuzz
san='-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -g'
mkdir -p build
if [ ! -f "$dir/build.ninja" ]; then
    rm -rf "$dir"
    CC=$CC CXX=clang++-14 meson setup "$dir" -Doverride=false -Dtests=disabled -Db_lundef=false \
        -Dbuildtype=debugoptimized -Dc_args="$san" -Dcpp_args="$san" --wrap-mode=nofallback \
        >build/fuzz.setup.log 2>&1 || { tail -30 build/fuzz.setup.log; echo "fuzz: meson setup FAILED"; exit 2; }
fi
ninja -C "$dir" libhakmem.a >build/fuzz.build.log 2>&1 || { tail -40 build/fuzz.build.log; echo "fuzz: building libhakmem.a FAILED"; exit 2; }
$CC -O2 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-builtin \
    -Iinclude tests/fuzz/fuzz_hakmem.c "$dir/libhakmem.a" -lpthread -o "$dir/fuzz_hakmem" \
    >>build/fuzz.build.log 2>&1 || { tail -40 build/fuzz.build.log; echo "fuzz: building fuzz_hakmem FAILED"; exit 2; }

# --- run -------------------------------------------------------------------------
# rss_limit: 64 slots of at most 1 MiB (a few up to 8 MiB or 1 MiB-aligned),
# hakmem's caches and ASan's own overhead stay far below 1.5 GiB; a leak across
# inputs does not. -len_control=0: long operation sequences from the start
# (the default grows the length limit too slowly for a 60 s run);
# -max_len=1024 is ~200 operations. -timeout: even the slowest input (8 MiB
# patterns) takes well under a second.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
opts=(-rss_limit_mb=1536 -timeout=30 -max_len=1024 -len_control=0 -print_final_stats=1)

mapfile -t regs < <(find tests/fuzz/regressions -type f ! -name 'README*' 2>/dev/null | sort)
if [ ${#regs[@]} -gt 0 ]; then
    echo "fuzz: replaying ${#regs[@]} regression input(s)"
    if ! "$dir/fuzz_hakmem" "${opts[@]}" "${regs[@]}" >build/fuzz.replay.log 2>&1; then
        tail -40 build/fuzz.replay.log
        echo "fuzz: a regression input FAILED (full log: build/fuzz.replay.log)"
        exit 1
    fi
    echo "fuzz: regressions ok"
fi

corpus=build/fuzz-corpus
mkdir -p "$corpus" "$dir/artifacts"
echo "fuzz: running for ${secs}s (corpus $corpus, $(find "$corpus" -type f | wc -l) inputs)"
start=$(date +%s)
"$dir/fuzz_hakmem" "${opts[@]}" -max_total_time="$secs" -artifact_prefix="$dir/artifacts/" \
    "$corpus" >build/fuzz.log 2>&1
rc=$?
end=$(date +%s)
grep -E '^#[0-9]+.*(DONE|pulse)|stat::' build/fuzz.log | tail -8
if [ $rc -ne 0 ]; then
    tail -60 build/fuzz.log
    echo "fuzz: CRASH (exit $rc) after $((end - start))s; inputs: $(ls "$dir"/artifacts/ 2>/dev/null | tr '\n' ' ')"
    echo "fuzz: reproduce with $dir/fuzz_hakmem $dir/artifacts/<file>; full log build/fuzz.log"
    exit 1
fi
echo "fuzz: no crash in $((end - start))s; corpus now $(find "$corpus" -type f | wc -l) inputs"
