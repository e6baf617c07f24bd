#!/usr/bin/env bash
# Sets up a fresh Debian machine for hakmem's tests, runs them on every build configuration, and prints "N passed, N failed".
#
#   bash tests/run.sh            # full suite on the default build, a lighter pass on the others
#   HAKMEM_TEST_CONFIGS=default bash tests/run.sh   # only some parts (names below: default, shared-pool,
#                                                   # no-override, hardened, hugepages, learning, sanitizers, fuzzer, bench-quick)
set -u
cd "$(dirname "$0")/.."

. .ci/need_pkgs.sh
need_pkgs tests/run.sh meson ninja-build gcc g++ pkg-config python3 libcriterion-dev sqlite3 gzip binutils \
    libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 gnuplot-nox python3.11 libpython3.11-testsuite git ||
    { echo "0 passed, 1 failed"; exit 1; }

# name | meson options | suites to run ("" = all)
configs=(
    "default||"
    "shared-pool|-Dpool_tls=false|"
    "no-override|-Doverride=false|api misuse threads layout"
    "hardened|-Dhardened=true|api stats misuse threads preload"
    # Every suite but the 3-minute soak (the plateau runs are the default build's job).
    "hugepages|-Dmem_backend=hugepages|api stats misuse oom threads cxx preload real layout glibc hugepages"
    # The same for the learning policy (Box 3).
    "learning|-Dlearning=true|api stats misuse oom threads cxx preload real layout glibc hugepages ace"
)
only="${HAKMEM_TEST_CONFIGS:-}"

total_pass=0
total_fail=0
for entry in "${configs[@]}"; do
    IFS='|' read -r name opts suites <<<"$entry"
    if [ -n "$only" ] && ! grep -qw "$name" <<<"$only"; then continue; fi
    dir="build/test-$name"
    echo "=== configuration $name ${opts:-(defaults)} ==="
    # shellcheck disable=SC2086
    if ! { [ -d "$dir" ] && meson setup --reconfigure "$dir" $opts --wrap-mode=nofallback >/dev/null ||
           meson setup "$dir" $opts --wrap-mode=nofallback >/dev/null; } ||
       ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
        cat "$dir.build.log" 2>/dev/null | tail -40
        echo "configuration $name: build FAILED"
        total_fail=$((total_fail + 1))
        continue
    fi
    suite_args=()
    for s in $suites; do suite_args+=(--suite "$s"); done
    rm -f "$dir/meson-logs/testlog.json"
    meson test -C "$dir" --print-errorlogs "${suite_args[@]}" 2>&1 | tail -n 60
    read -r p f < <(python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r != "SKIP":
            bad += 1
except OSError:
    bad += 1
print(ok, bad)
PY
)
    echo "configuration $name: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done

# Sanitizers (UBSan over the suite, TSan over the threaded programs) and the
# fuzzer; each script ends with its own "N passed, N failed" line.
# The benchmark's --quick pass checks every workload runs under every
# allocator (no timing assertions).
extra=(
    "sanitizers|bash tests/sanitize/run.sh"
    "fuzzer|bash tests/fuzz/run.sh ${HAKMEM_FUZZ_SECONDS:-60}"
    "bench-quick|python3 bench/run.py --quick --hakmem hakmem=build/test-default/libhakmem.so --hakmem hakmem-pool=build/test-shared-pool/libhakmem.so --hakmem hakmem-huge=build/test-hugepages/libhakmem.so --hakmem hakmem-ace=build/test-learning/libhakmem.so --build-dir build/bench-quick-programs --out build/bench-quick"
)
for entry in "${extra[@]}"; do
    IFS='|' read -r name cmd <<<"$entry"
    if [ -n "$only" ] && ! grep -qw "$name" <<<"$only"; then continue; fi
    echo "=== $name ==="
    log="build/test-$name.log"
    mkdir -p build
    $cmd >"$log" 2>&1
    rc=$?
    tail -n 25 "$log"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
        f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    else # one check, judged by its exit code (the fuzzer)
        p=$((rc == 0)); f=$((rc != 0))
    fi
    # A script that failed without counting a failure still fails the run.
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    echo "$name: $p passed, $f failed"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
