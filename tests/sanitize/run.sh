#!/usr/bin/env bash
# Runs hakmem's test suite under UndefinedBehaviorSanitizer and its multithreaded plain programs under ThreadSanitizer; prints "N passed, N failed".
#
#   bash tests/sanitize/run.sh              # all three parts ((a) and (b) about 5 minutes on 2 cores, (c) 2.5 more)
#   bash tests/sanitize/run.sh ubsan        # only (a)
#   bash tests/sanitize/run.sh tsan         # only (b)
#   bash tests/sanitize/run.sh ubsan-learning   # only (c)
#
# (a) UBSan: the whole suite (every meson test, Criterion ones included) in
#     build/sanitize-ubsan, built with -fsanitize=undefined and
#     -fno-sanitize-recover=all. UBSan reports go to files
#     (UBSAN_OPTIONS log_path) as well as failing the process: a test whose
#     child is *expected* to die (the misuse tests expect SIGABRT) could
#     otherwise swallow a finding, so any report file fails the run too.
#     abort_on_error=0 for the same reason: a finding exits 1 rather than
#     raising the SIGABRT a misuse test waits for. No suite is excluded.
# (b) TSan: stress_threads (also with guarded and profiled sampling on),
#     thread_churn, fork_threads and pool_flow built
#     with clang-14 (-fsanitize=thread) and -Doverride=false (they call hak_*
#     through test_alloc_names.h; the process malloc stays glibc's, which TSan
#     intercepts) in build/sanitize-tsan, and run with smaller counts.
#     clang, not gcc: under gcc 12's libtsan, a child forked from a
#     multithreaded process that starts a thread (fork_threads does) dies with
#     "ThreadSanitizer: dup thread with used id"; clang 14's runtime copes.
#     Criterion is not used here: it does not run under TSan.
#     halt_on_error=1 exitcode=66: the first race fails the program.
#     Nothing is suppressed. Not run: pool_flow purge, whose RSS check cannot
#     hold under TSan (TSan's shadow of the 256 MiB it touches stays resident
#     after hakmem gives the pages back: ~50 MiB against a limit of 8), and
#     thread_churn's RSS check is only kept trivially true (1,100 threads,
#     measured from 1,000), since TSan keeps ~7 KiB of its own per dead
#     thread; the leak check is the plain build's job.
# (c) UBSan over a learning build (-Dlearning=true, Box 3 ACE) in
#     build/sanitize-ubsan-learning, same flags and report files as (a), but
#     only the suites where Box 3 runs hard (ace, threads, api: rings, learner,
#     thread exits by the thousand), to keep it near 2.5 minutes (build included); the rest of
#     a learning build is the code (a) already covers.
#
# Environment: SANITIZE_TSAN_OPTIONS adds TSan options (e.g. halt_on_error=0
# to list every race in one run).
set -u
cd "$(dirname "$0")/../.."
what="${1:-all}"

. .ci/need_pkgs.sh
need_pkgs sanitize meson ninja-build gcc g++ pkg-config python3 libcriterion-dev sqlite3 gzip binutils libubsan1 \
    clang-14 libclang-rt-14-dev || { echo "0 passed, 1 failed"; exit 1; }

pass=0
fail=0
failed_names=()
ok() { pass=$((pass + 1)); }
ko() { fail=$((fail + 1)); failed_names+=("$1"); }

# setup_build DIR OPTIONS... : configures DIR afresh if it does not exist or its options changed.
setup_build() {
    local dir=$1; shift
    local stamp="$dir/.sanitize-options" want="CC=${CC:-default} $*"
    if [ -f "$dir/build.ninja" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    rm -rf "$dir"
    mkdir -p build
    if meson setup "$dir" "$@" --wrap-mode=nofallback >"$dir.setup.log" 2>&1; then
        echo "$want" >"$stamp"
        return 0
    fi
    tail -30 "$dir.setup.log"
    return 1
}

# ---- (a) and (c) UndefinedBehaviorSanitizer: the whole suite, or some suites --------
# run_ubsan NAME DIR "MESON OPTIONS" [SUITE...]: no suite named is the whole suite.
run_ubsan() {
    local name=$1 dir=$2 opts=$3 t0=$SECONDS
    shift 3
    local suites=()
    for x in "$@"; do suites+=(--suite "$x"); done
    echo "=== $name: ${*:-full test suite} ($dir) ==="
    # shellcheck disable=SC2086
    if ! setup_build "$dir" -Db_sanitize=undefined -Db_lundef=false -Dbuildtype=debugoptimized \
            -Dc_args=-fno-sanitize-recover=all -Dcpp_args=-fno-sanitize-recover=all $opts ||
       ! ninja -C "$dir" >"$dir.build.log" 2>&1; then
        tail -40 "$dir.build.log" 2>/dev/null
        echo "$name: build FAILED"
        ko "$name-build"
        return
    fi
    local reports="$PWD/$dir/ubsan-reports"
    rm -rf "$reports" && mkdir -p "$reports"
    rm -f "$dir/meson-logs/testlog.json"
    # Each test's line as it finishes (the whole output goes to the log): the
    # full suite runs for minutes under UBSan, which should not look like a hang.
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=0:exitcode=1:log_path=$reports/ubsan" \
        meson test -C "$dir" --print-errorlogs "${suites[@]}" 2>&1 | tee "$dir.test.log" |
        grep --line-buffered -E '^ *[0-9]+/[0-9]+ '
    # Those that did not plainly pass again, where they cannot be missed among the rest.
    local bad
    bad=$(grep -E '^ *[0-9]+/[0-9]+ ' "$dir.test.log" | grep -vE ' (OK|SKIP|EXPECTEDFAIL) ' | sort -u)
    [ -n "$bad" ] && printf '%s: not passed:\n%s\n' "$name" "$bad"
    local p f names
    read -r p f names < <(python3 - "$dir/meson-logs/testlog.json" "$name" <<'PY'
import json, sys
ok = bad = 0
names = []
try:
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if r["result"] in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r["result"] != "SKIP":
            bad += 1
            names.append(sys.argv[2] + ":" + r["name"].split(" / ")[-1])
except OSError:
    bad += 1
    names.append(sys.argv[2] + ":no-testlog")
print(ok, bad, " ".join(names))
PY
)
    pass=$((pass + p))
    fail=$((fail + f))
    # shellcheck disable=SC2206
    [ -n "$names" ] && failed_names+=($names)
    # Findings: one file per reporting process, whatever the test made of it.
    local nrep
    nrep=$(find "$reports" -type f | wc -l)
    if [ "$nrep" -gt 0 ]; then
        echo "$name: $nrep process(es) reported undefined behaviour:"
        find "$reports" -type f | head -5 | while read -r r; do echo "--- $r"; head -30 "$r"; done
        ko "$name:reports"
    else
        ok
    fi
    echo "$name: $p tests passed, $f failed, $nrep report file(s); $((SECONDS - t0)) s (log $dir.test.log)"
}

# ---- (b) ThreadSanitizer: the multithreaded plain programs ----------------------
tsan_run() { # name timeout-seconds command...
    local name=$1 limit=$2; shift 2
    local log="build/sanitize-tsan.$name.log" t0=$SECONDS rc
    timeout -k 10 "$limit" "$@" >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && ! grep -q 'WARNING: ThreadSanitizer' "$log"; then
        echo "tsan: $name ok ($((SECONDS - t0)) s): $(grep -v '^$' "$log" | tail -1)"
        ok
        return
    fi
    case $rc in
    66) echo "tsan: $name: ThreadSanitizer report (exit 66) after $((SECONDS - t0)) s" ;;
    124|137) echo "tsan: $name: TIMEOUT after ${limit}s" ;;
    *) echo "tsan: $name: exit $rc after $((SECONDS - t0)) s" ;;
    esac
    # The first report, whole (both stacks); the rest are in the log.
    awk '/^==================$/{n++} n>=1 && n<=2' "$log" | head -70
    grep -v 'ThreadSanitizer\|^ *#\|^$\|^==\|^  ' "$log" | tail -5
    echo "tsan: $name: full log $log"
    ko "tsan:$name"
}

run_tsan() {
    local dir=build/sanitize-tsan t0=$SECONDS
    local progs=(tests/stress_threads tests/thread_churn tests/fork_threads tests/pool_flow)
    echo "=== TSan: multithreaded programs, hak_* API ($dir) ==="
    if ! CC=clang-14 CXX=clang++-14 setup_build "$dir" -Db_sanitize=thread -Db_lundef=false -Doverride=false \
            -Dbuildtype=debugoptimized ||
       ! ninja -C "$dir" "${progs[@]}" >"$dir.build.log" 2>&1; then
        tail -40 "$dir.build.log" 2>/dev/null
        echo "tsan: build FAILED"
        ko "tsan-build"
        return
    fi
    # history_size=7: enough history that the *previous* access of a race
    # keeps its stack. die_after_fork=0: fork_threads' children start a
    # thread after a multithreaded fork, which TSan otherwise refuses.
    export TSAN_OPTIONS="halt_on_error=1 exitcode=66 history_size=7 second_deadlock_stack=1 die_after_fork=0 ${SANITIZE_TSAN_OPTIONS:-}"
    # Counts are cut to keep (b) near three minutes: TSan is 5-15x slower.
    tsan_run stress-threads 300 "$dir/tests/stress_threads" 30000
    # Both samplers, often: a free asks which guarded block an address is in,
    # without the guard's lock, while other threads set blocks up and release them.
    tsan_run stress-threads-sampled 300 env HAKMEM_GUARD_SAMPLE=20 HAKMEM_PROF_SAMPLE=4096 "$dir/tests/stress_threads" 30000
    # More than 1,000 threads: its RSS check compares 1,000 with the total.
    tsan_run thread-churn 300 "$dir/tests/thread_churn" 1100
    tsan_run fork-threads 300 "$dir/tests/fork_threads"
    # No count to cut: ~2 minutes under TSan, mostly page faults on TSan's shadow.
    tsan_run pool-cross-thread 400 "$dir/tests/pool_flow" cross
    echo "tsan: $((SECONDS - t0)) s"
}

ubsan_all() { run_ubsan ubsan build/sanitize-ubsan ""; }
ubsan_learning() { run_ubsan ubsan-learning build/sanitize-ubsan-learning -Dlearning=true ace threads api; }

case $what in
all) ubsan_all; ubsan_learning; run_tsan ;;
ubsan) ubsan_all ;;
ubsan-learning) ubsan_learning ;;
tsan) run_tsan ;;
*) echo "usage: tests/sanitize/run.sh [all|ubsan|ubsan-learning|tsan]"; exit 2 ;;
esac

[ ${#failed_names[@]} -gt 0 ] && echo "failed: ${failed_names[*]}"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
