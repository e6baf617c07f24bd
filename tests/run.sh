#!/usr/bin/env bash
# Sets up a fresh Debian machine for hakmem's tests, runs them on every build configuration, and prints "N passed, N failed".
#
#   bash tests/run.sh            # full suite on the default build, a lighter pass on the others
#   HAKMEM_TEST_CONFIGS=default bash tests/run.sh   # only some parts (names below: default, shared-pool,
#                                                   # no-override, hardened, hugepages, learning, sanitizers, fuzzer, bench-quick)
#
# It prints as it goes: a line per test as it finishes, then per part "configuration NAME: N passed,
# N failed (T s)" or "NAME: N passed, N failed (T s; log FILE)". Each part's whole output is in
# build/test-NAME.test.log (configurations) or build/test-NAME.log (the others).
set -u
cd "$(dirname "$0")/.."

. .ci/need_pkgs.sh
need_pkgs tests/run.sh meson ninja-build gcc g++ pkg-config python3 libcriterion-dev sqlite3 gzip binutils \
    libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 gnuplot-nox python3.11 libpython3.11-testsuite git google-perftools ||
    { echo "0 passed, 1 failed"; exit 1; }

# name | meson options | suites to run ("" = all)
configs=(
    "default||"
    "shared-pool|-Dpool_tls=false|"
    "no-override|-Doverride=false|api misuse threads layout"
    "hardened|-Dhardened=true|api stats misuse threads preload layout"
    # Every suite but the 3-minute soak (the plateau runs are the default build's job).
    "hugepages|-Dmem_backend=hugepages|api stats misuse oom threads cxx preload real layout glibc hugepages"
    # The same for the learning policy (Box 3).
    "learning|-Dlearning=true|api stats misuse oom threads cxx preload real layout glibc hugepages ace"
)
only="${HAKMEM_TEST_CONFIGS:-}"

# A line per test of `meson test` as it finishes ("  12/58 hakmem:api / test_api  OK  0.52s"),
# the lines the sanitizer script prints for its own meson runs included.
progress='^ *[0-9]+/[0-9]+ '

# explain_expected_fail NAME: a test declared should_fail passes by failing,
# which its EXPECTEDFAIL line (often with SIGABRT) does not say.
explain_expected_fail() {
    case $1 in
    ace-no-malloc-selfcheck)
        echo "note: ace-no-malloc-selfcheck EXPECTEDFAIL is a pass: it checks ace-no-malloc's trap (a malloc" \
             "that aborts while Box 3 runs) by calling malloc inside it on purpose, so it must abort (should_fail;" \
             "docs/testing.md)" ;;
    *)
        echo "note: $1 EXPECTEDFAIL is a pass: the test is declared should_fail, and it failed as required." ;;
    esac
}

total_pass=0
total_fail=0
t_run=$SECONDS
for entry in "${configs[@]}"; do
    IFS='|' read -r name opts suites <<<"$entry"
    if [ -n "$only" ] && ! grep -qw "$name" <<<"$only"; then continue; fi
    dir="build/test-$name"
    t0=$SECONDS
    echo "=== configuration $name ${opts:-(defaults)} ==="
    # shellcheck disable=SC2086
    if ! { [ -d "$dir" ] && meson setup --reconfigure "$dir" $opts --wrap-mode=nofallback >/dev/null ||
           meson setup "$dir" $opts --wrap-mode=nofallback >/dev/null; } ||
       ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
        cat "$dir.build.log" 2>/dev/null | tail -40
        echo "configuration $name: build FAILED ($((SECONDS - t0)) s)"
        total_fail=$((total_fail + 1))
        continue
    fi
    echo "configuration $name: built in $((SECONDS - t0)) s"
    suite_args=()
    for s in $suites; do suite_args+=(--suite "$s"); done
    rm -f "$dir/meson-logs/testlog.json"
    # The whole output goes to a file; the screen gets each test's line as it
    # finishes (meson flushes them one by one), so a long suite shows progress.
    meson test -C "$dir" --print-errorlogs "${suite_args[@]}" 2>&1 | tee "$dir.test.log" |
        grep --line-buffered -E "$progress|^Summary of Failures:"
    read -r p f xfail < <(python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
ok = bad = 0
xfail = []
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if r["result"] in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r["result"] != "SKIP":
            bad += 1
        if r["result"] == "EXPECTEDFAIL":
            xfail.append(r["name"].split(" / ")[-1])
except OSError:
    bad += 1
print(ok, bad, " ".join(xfail))
PY
)
    # What the progress lines leave out: each failed test's output (meson
    # prints it under the test's line), or meson's own error if it ran none.
    if [ "$f" != 0 ]; then
        echo "--- output of what failed (whole log: $dir.test.log) ---"
        awk -v p="$progress" '
            /^Summary of Failures:/ { exit }
            $0 ~ p { started = 1; show = / (FAIL|TIMEOUT|UNEXPECTEDPASS|ERROR) /; if (show) print; next }
            started ? show : !/^ninja: / { print }' "$dir.test.log" | head -n 150
    fi
    for x in $xfail; do explain_expected_fail "$x"; done
    echo "configuration $name: $p passed, $f failed ($((SECONDS - t0)) s)"
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
    t0=$SECONDS
    mkdir -p build
    # What to show live. The sanitizer and fuzzer scripts print progress and
    # verdicts only: all of it. The benchmark prints a line per run (hundreds)
    # and its tables, whose lines are too wide to read here: a line per
    # workload and rep, the runs that failed (with their stderr's end), the
    # check verdict and where the tables are; its count is repeated in "bench-quick: ...".
    case $name in
    bench-quick) show='^rep [0-9]+/[0-9]+ |^allocators: |: skipped| FAILED \(exit |check mismatch|^Result checks|^results: ' ;;
    *) show='' ;;
    esac
    $cmd 2>&1 | tee "$log" | grep --line-buffered -E "$show"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$line" ]; then
        p=$(sed -E 's/^([0-9]+) passed.*/\1/' <<<"$line")
        f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    else # one check, judged by its exit code (the fuzzer)
        p=$((rc == 0)); f=$((rc != 0))
    fi
    # A script that failed without counting a failure still fails the run.
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
    # A filtered script that stopped before its count (a missing library, a
    # build error) said why in lines the filter hid.
    if [ -n "$show" ] && [ "$rc" != 0 ] && [ -z "$line" ]; then tail -n 20 "$log"; fi
    if [ "$name" = sanitizers ]; then
        grep -E "$progress" "$log" | grep -w EXPECTEDFAIL | sed -E 's/.* \/ ([^ ]+) .*/\1/' | sort -u |
            while read -r x; do explain_expected_fail "$x"; done
    fi
    echo "$name: $p passed, $f failed ($((SECONDS - t0)) s; log $log)"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
done

echo "total time $((SECONDS - t_run)) s"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
