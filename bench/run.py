#!/usr/bin/env python3
"""Benchmark runner for hakmem: builds bench/*.c, runs every workload under every allocator
(interleaved, LD_PRELOAD), and writes results.csv, summary.md, machine.txt and plot.png.

Python 3 standard library only. See bench/README.md.
"""
import argparse
import csv
import datetime
import glob
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
CFLAGS = ["-O2", "-g", "-Wall", "-Wextra", "-fno-builtin-malloc", "-fno-builtin-free",
          "-fno-builtin-calloc", "-fno-builtin-realloc", "-pthread"]
PROGRAMS = ["bench_pair", "bench_loop", "bench_threads", "bench_prodcons", "bench_churn", "bench_realloc", "bench_frag",
            "bench_falseshare", "bench_phase", "bench_randaccess", "bench_manythreads", "bench_burst", "bench_queue",
            "bench_handoff", "bench_small"]

# Peers: name -> sonames to look for (ldconfig -p first, then a glob of the usual lib dirs,
# then a source build made by `meson setup -Dbench_peers=enabled` through subprojects/*.wrap).
PEERS = [
    ("jemalloc", ["libjemalloc.so.2"]),
    ("mimalloc", ["libmimalloc.so.2", "libmimalloc.so"]),
    ("tcmalloc", ["libtcmalloc_minimal.so.4"]),
]
LIB_DIRS = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib",
            "/usr/local/lib"]

# Workloads: (name, program, default args, quick args[, options]).  Iteration counts are tuned so
# that one run takes roughly 0.1-1.5 s on a 2-core VM and a full default run with 6 allocators
# stays under 10 min. quick args None = skipped by --quick.
# bench_pair: size live iterations (free then malloc of one size; live 1 = a LIFO pair, else round-robin)
# bench_loop: min max slots iterations
# bench_threads: threads slots_per_thread iterations_per_thread (total ops kept constant)
# bench_prodcons: items min max producers consumers;  bench_churn: threads concurrent blocks;  bench_realloc: rounds
# bench_frag: MiB_per_round rounds min_size passes;  bench_falseshare: writes_per_thread size objects
# bench_phase: small_iters mid_iters idle_ms;  bench_randaccess: live_MiB object_size accesses
# bench_manythreads: threads blocks_per_thread;  bench_burst: allocations [size n] (0 or absent = cycle)
# bench_queue: items producers consumers;  bench_handoff: generations ops_per_generation slots
# bench_small: live_bytes (up to 200: one block)
# A program "@NAME" is a real program (see REAL_PROGRAMS), timed by the launcher as a whole process
# (wall time); "{bench}" in its arguments is this directory; options["env"] is added to its env
# (a value None removes the variable); options["explicit"] runs it only when --only names it;
# options["runs"] runs it that many times a rep (each allocator in turn each time).
WORKLOADS = [
    # Free a block and allocate one at once: the hit paths' latency, with nothing else in the loop.
    ("pair_32",               "bench_pair",     [32, 1, 50_000_000],              [32, 1, 5_000_000]),
    ("pair_4096",             "bench_pair",     [4096, 1, 50_000_000],            [4096, 1, 5_000_000]),
    ("pair_32_rr64",          "bench_pair",     [32, 64, 50_000_000],             [32, 64, 5_000_000]),
    ("pair_4096_rr64",        "bench_pair",     [4096, 64, 20_000_000],           [4096, 64, 2_000_000]),
    ("loop_8_64",             "bench_loop",     [8, 64, 64, 30_000_000],          [8, 64, 64, 10_000_000]),
    ("loop_8_1024",           "bench_loop",     [8, 1024, 64, 30_000_000],        [8, 1024, 64, 10_000_000]),
    ("loop_1024_32768",       "bench_loop",     [1024, 32768, 64, 4_000_000],     [1024, 32768, 64, 1_000_000]),
    ("loop_8192_32768",       "bench_loop",     [8192, 32768, 64, 4_000_000],     [8192, 32768, 64, 1_000_000]),
    ("loop_8192_32768_t2",    "bench_loop",     [8192, 32768, 64, 2_000_000, 2],  [8192, 32768, 64, 500_000, 2]),
    ("loop_32769_1048576",    "bench_loop",     [32769, 1048576, 64, 600_000],    [32769, 1048576, 64, 150_000]),
    # Short-lived buffers of 32-256 KiB (a request's I/O buffer), 16 live: one thread, then two.
    ("loop_32769_262144",     "bench_loop",     [32769, 262144, 16, 1_000_000],   [32769, 262144, 16, 100_000]),
    ("loop_32769_262144_t2",  "bench_loop",     [32769, 262144, 16, 500_000, 2],  [32769, 262144, 16, 50_000, 2]),
    ("loop_1048577_8388608",  "bench_loop",     [1048577, 8388608, 64, 40_000],   [1048577, 8388608, 64, 10_000]),
    # Build a structure of N same-size blocks, free it (half oldest first, half newest first), again.
    ("bursts",                "bench_burst",    [40_000_000],                     [4_000_000]),
    ("threads_1",             "bench_threads",  [1, 1024, 6_000_000],             [1, 1024, 1_000_000]),
    ("threads_2",             "bench_threads",  [2, 1024, 3_000_000],             [2, 1024, 500_000]),
    ("threads_4",             "bench_threads",  [4, 1024, 1_500_000],             [4, 1024, 250_000]),
    ("prodcons_1to1",         "bench_prodcons", [2_000_000, 8, 1024, 1, 1],       [500_000, 8, 1024, 1, 1]),
    ("prodcons_1to3",         "bench_prodcons", [2_000_000, 8, 1024, 1, 3],       [500_000, 8, 1024, 1, 3]),
    ("prodcons_3to1",         "bench_prodcons", [2_000_000, 8, 1024, 3, 1],       [500_000, 8, 1024, 3, 1]),
    # A mutex/condvar work queue of 16-4000 B blocks, every byte written and checked.
    ("queue_1to1",            "bench_queue",    [2_000_000, 1, 1],                [200_000, 1, 1]),
    ("queue_2to2",            "bench_queue",    [500_000, 2, 2],                  [100_000, 2, 2]),
    ("churn_1",               "bench_churn",    [2000, 1, 100],                   [500, 1, 100]),
    ("churn_2",               "bench_churn",    [2000, 2, 100],                   [500, 2, 100]),
    ("churn_4",               "bench_churn",    [2000, 4, 100],                   [500, 4, 100]),
    # 1,000 threads alive at once, 64 blocks each (a thread-per-connection server): RSS per thread.
    ("manythreads_1000",      "bench_manythreads", [1000, 64],                    [200, 64]),
    # One worker at a time replaces blocks of a shared live set, then exits and hands it to the next.
    ("handoff",               "bench_handoff",  [40, 250_000, 4096],              [40, 25_000, 4096]),
    ("realloc",               "bench_realloc",  [4, 8 << 20, 2 << 20],            [1, 8 << 20, 2 << 20]),
    ("frag",                  "bench_frag",     [6, 10, 16, 1],                   [2, 10, 16, 1]),
    ("falseshare_16",         "bench_falseshare", [100_000_000, 16, 64],          [10_000_000, 16, 64]),
    ("falseshare_48",         "bench_falseshare", [100_000_000, 48, 64],          [10_000_000, 48, 64]),
    ("phase",                 "bench_phase",    [1_500_000, 40_000, 1000],        [500_000, 20_000, 200]),
    # Small programs: 100 B, and 2 MiB of 16-200 B blocks (half freed); their point is peak RSS.
    # A run takes milliseconds and its peak moves by ±5% with where the libraries land (ASLR decides
    # which 64 KiB windows of libc the kernel maps around a fault): 4 runs a rep, medians of 20.
    ("small_100",             "bench_small",    [100],                            [100], {"runs": 4}),
    ("small_2mb",             "bench_small",    [2_097_152],                      [2_097_152], {"runs": 4}),
    # A pointer chase through a live set far beyond the TLB's reach with 4 KiB pages (the case 2 MiB
    # pages are for). 256 MiB keeps a run near 3 s; the 1 GiB one (~12 s a run) runs when --only names it.
    ("randaccess_256m",       "bench_randaccess", [256, 64, 3_000_000],           [32, 64, 300_000]),
    ("randaccess_1g",         "bench_randaccess", [1024, 64, 3_000_000],          [64, 64, 300_000],
                                                {"explicit": True}),
    # PYTHONHASHSEED fixed: string hashes (hence dict/set layouts and their allocations) repeat.
    ("python3",               "@python3",       ["{bench}/prog_objects.py", 3, 10000],
                                                ["{bench}/prog_objects.py", 1, 5000],
                                                {"env": {"PYTHONHASHSEED": "0", "PYTHONMALLOC": None}}),
    # The same script with pymalloc off, so every object goes through the preloaded malloc.
    ("python3_malloc",        "@python3",       ["{bench}/prog_objects.py", 3, 10000],
                                                ["{bench}/prog_objects.py", 1, 5000],
                                                {"env": {"PYTHONHASHSEED": "0", "PYTHONMALLOC": "malloc"}}),
    ("sqlite3",               "@sqlite3",       [":memory:", ".read {bench}/prog_inserts.sql"],
                                                [":memory:", ".read {bench}/prog_inserts.sql"]),
]

# Real programs: name -> candidate executables. A real ELF is needed (not a pyenv shim or other
# script), because the preload and the peak RSS must be the program's own; Debian's python3 first.
REAL_PROGRAMS = {
    "python3": lambda: ["/usr/bin/python3", os.path.realpath(sys.executable)],
    "sqlite3": lambda: [shutil.which("sqlite3") or "", "/usr/bin/sqlite3"],
}

# Per-workload values (other than time and peak RSS) parsed from the result line, kept in the CSV
# and shown in the second table: (key, label, unit). "check" is compared across allocators.
EXTRA_KEYS = [
    ("final_rss_kb", "RSS at the end", "kb"),
    ("rss_small_kb", "RSS after small phase", "kb"),
    ("rss_mid_kb", "RSS after mid phase", "kb"),
    ("rss_free_kb", "RSS after free-all", "kb"),
    ("rss_idle_kb", "RSS after idle", "kb"),
    ("shared_lines", "objects sharing a cache line with the other thread's (of 64)", "count"),
    ("rss_per_thread_kb", "RSS per live thread", "kib"),
]
EXTRA_CSV = ["live_kb", "check"]

PROBE_SRC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
/* Prints which shared object malloc resolves to (checks that an LD_PRELOAD took effect). */
int main(void) {
    void *(*volatile m)(size_t) = malloc;
    Dl_info di;
    void *p = m(16);
    free(p);
    if (!dladdr((void *)m, &di) || !di.dli_fname) { puts("unknown"); return 1; }
    puts(di.dli_fname);
    return 0;
}
"""


# Why a launcher: on Linux, exec() records the *old* address space's RSS high-water mark in the
# process' ru_maxrss, so a workload spawned straight from Python (vfork/fork + exec) reports at
# least the runner's own ~15 MB. This tiny launcher (RSS ~1 MB, almost no anonymous memory) forks
# and execs the workload, waits for it with wait4() and prints its rusage, so ru_maxrss is the
# workload's own peak (floor: a few hundred KB). It also times fork..wait4 for "program" workloads,
# which print no timing of their own (the runner's poll loop is only 20 ms accurate).
# Peak memory is the larger of ru_maxrss and VmHWM read from /proc at the workload's exit (a
# ptrace exit stop, the only stop it adds besides exec's): since Linux 6.2 ru_maxrss reads the RSS
# counters' per-CPU parts without summing them, so it can fall short by up to 31 pages per counter
# (file, anon) and CPU (8% of a 1.5 MB program, whichever allocator runs), while /proc/PID/status
# sums them (bench/README.md). Without ptrace (a sandbox that forbids it) ru_maxrss alone is used.
LAUNCHER_SRC = r"""
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static long vm_hwm_kb(pid_t pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *h = strstr(buf, "VmHWM:");
    return h ? strtol(h + 6, NULL, 10) : 0;
}
int main(int argc, char **argv) {
    if (argc < 2) return 127;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 127; }
    if (pid == 0) {
        ptrace(PTRACE_TRACEME, 0, NULL, NULL); /* failing is fine: no exit stop then */
        execv(argv[1], argv + 1);
        perror("execv");
        _exit(127);
    }
    int st; struct rusage ru; long hwm = 0; int traced = 0;
    for (;;) {
        if (wait4(pid, &st, 0, &ru) < 0) { perror("wait4"); return 127; }
        if (!WIFSTOPPED(st)) break;
        int sig = WSTOPSIG(st);
        if (!traced && sig == SIGTRAP) { /* exec's stop: ask for the exit stop, and only that */
            traced = 1;
            ptrace(PTRACE_SETOPTIONS, pid, NULL, (void *)(long)(PTRACE_O_TRACEEXIT | PTRACE_O_EXITKILL));
            sig = 0;
        } else if (st >> 8 == (SIGTRAP | (PTRACE_EVENT_EXIT << 8))) {
            hwm = vm_hwm_kb(pid);
            sig = 0;
        }
        ptrace(PTRACE_CONT, pid, NULL, (void *)(long)sig); /* other signals go on to the workload */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "\n@@launcher maxrss_kb=%ld ru_maxrss_kb=%ld hwm_kb=%ld utime_s=%ld.%06ld stime_s=%ld.%06ld wall_s=%.6f\n",
            hwm > ru.ru_maxrss ? hwm : ru.ru_maxrss, ru.ru_maxrss, hwm,
            (long)ru.ru_utime.tv_sec, (long)ru.ru_utime.tv_usec, (long)ru.ru_stime.tv_sec, (long)ru.ru_stime.tv_usec,
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    if (WIFSIGNALED(st)) { fprintf(stderr, "killed by signal %d\n", WTERMSIG(st)); return 128 + WTERMSIG(st); }
    return WEXITSTATUS(st);
}
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ---------------------------------------------------------------------------- build
def build(build_dir):
    os.makedirs(build_dir, exist_ok=True)
    cc = os.environ.get("CC", "gcc")
    for prog in PROGRAMS:
        src = os.path.join(BENCH_DIR, prog + ".c")
        out = os.path.join(build_dir, prog)
        cmd = [cc] + CFLAGS + ["-o", out, src]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            log(r.stderr)
            sys.exit("build failed: " + " ".join(cmd))
        if r.stderr.strip():
            log(r.stderr.strip())
    for name, src, libs in (("probe_malloc", PROBE_SRC, ["-ldl"]), ("launcher", LAUNCHER_SRC, [])):
        c = os.path.join(build_dir, name + ".c")
        with open(c, "w") as f:
            f.write(src)
        r = subprocess.run([cc, "-O2", "-o", os.path.join(build_dir, name), c] + libs,
                           capture_output=True, text=True)
        if r.returncode != 0:
            log(r.stderr)
            if name == "launcher":
                sys.exit("could not build the launcher")
            log("warning: could not build the malloc probe; preloads are not verified")


# ---------------------------------------------------------------------------- allocators
def find_lib(sonames):
    cache = sh(["ldconfig", "-p"]) or sh(["/sbin/ldconfig", "-p"])
    for so in sonames:
        hits = re.findall(r"^\s*" + re.escape(so) + r" \(([^)]*)\) => (\S+)$", cache, re.M)
        hits.sort(key=lambda h: "x86-64" not in h[0])   # prefer the 64-bit entry
        if hits and os.path.exists(hits[0][1]):
            return hits[0][1]
        for d in LIB_DIRS:
            hits = sorted(glob.glob(os.path.join(d, so + "*")))
            if hits:
                return hits[0]
        hits = sorted(glob.glob(os.path.join(REPO_DIR, "build*", "**", "subprojects", "*", so), recursive=True))
        if hits:
            return hits[0]
    return None


def probe(build_dir, preload):
    """Return the object malloc resolves to under this preload (or None if unknown)."""
    exe = os.path.join(build_dir, "probe_malloc")
    if not os.path.exists(exe):
        return None, ""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    try:
        r = subprocess.run([exe], capture_output=True, text=True, env=env, timeout=20)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    return (r.stdout.strip() if r.returncode == 0 else "exit %d" % r.returncode), r.stderr.strip()


def collect_allocators(args, build_dir):
    """Ordered list of (name, preload_path_or_empty, is_hakmem)."""
    allocs = []
    hak = args.hakmem
    if not hak:
        default = os.path.join(REPO_DIR, "build", "libhakmem.so")
        if os.path.exists(default):
            log("hakmem: using %s (pass --hakmem PATH to choose)" % default)
            hak = [default]
        else:
            log("hakmem: %s not found and no --hakmem given: skipped" % default)
    for i, spec in enumerate(hak or []):
        if "=" in spec and not os.path.exists(spec):
            name, path = spec.split("=", 1)
        else:
            name, path = ("hakmem" if i == 0 else "hakmem%d" % (i + 1)), spec
        # NAME=PATH:VAR=VALUE...: the same library under settings of its own
        # (e.g. hakmem-prof=build/libhakmem.so:HAKMEM_PROF_SAMPLE=2097152).
        path, *settings = path.split(":")
        ALLOC_ENV[name] = dict(v.split("=", 1) for v in settings if "=" in v)
        path = os.path.abspath(path)
        if not os.path.exists(path):
            # A hakmem build asked for by name is what the run is for: never skip it quietly.
            sys.exit("%s: %s does not exist (build it first)" % (name, path))
        allocs.append((name, path, True))
    allocs.append(("glibc", "", False))
    for name, sonames in PEERS:
        path = find_lib(sonames)
        if path:
            allocs.append((name, path, False))
        else:
            log("%s: %s not found (ldconfig -p, %s): skipped" % (name, "/".join(sonames), ", ".join(LIB_DIRS)))
    if args.allocators:
        want = [a.strip() for a in args.allocators.split(",") if a.strip()]
        names = [a[0] for a in allocs]
        for w in want:
            if w not in names:
                log("%s: requested but not available: skipped" % w)
        allocs = [a for a in allocs if a[0] in want]
    # Verify every preload really replaces malloc (ld.so only warns when it cannot preload).
    ok = []
    for name, path, is_hak in allocs:
        where, err = probe(build_dir, path)
        if where is None:
            ok.append((name, path, is_hak))
            continue
        good = (os.path.realpath(where) == os.path.realpath(path)) if path else ("libc" in os.path.basename(where))
        if good:
            ok.append((name, path, is_hak))
        elif is_hak:
            sys.exit("%s: malloc resolves to %r, not %s%s" % (name, where, path, ("\n  " + err) if err else ""))
        else:
            log("%s: malloc resolves to %r, not %s: skipped%s" % (name, where, path or "libc",
                                                                 ("\n  " + err) if err else ""))
    return ok


# ---------------------------------------------------------------------------- running
def read_hugetlb_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("HugetlbPages:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def parse_line(out, program=False):
    """The workload's result line -> dict (last line that has ns_per_op=, or check= for programs)."""
    for line in reversed(out.splitlines()):
        if ("check=" if program else "ns_per_op=") in line:
            return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    return None


def child_pids(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return []


# Environment settings of a --hakmem entry, by allocator name.
ALLOC_ENV = {}


def run_one(launcher, exe, argv, preload, timeout, sample_s, env_extra=None, program=False):
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    for k, v in (env_extra or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    if preload:
        env["LD_PRELOAD"] = preload
    t0 = time.monotonic()
    # The preload applies to the launcher too; it only forks/execs/waits, which every malloc
    # must survive, and its own memory is not what is measured.
    p = subprocess.Popen([launcher, exe] + [str(a) for a in argv], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                         start_new_session=True)
    huge = 0
    status, ru, timed_out = 0, None, False
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            break
        for c in child_pids(p.pid):     # HugetlbPages of the workload (RSS doesn't count them)
            huge = max(huge, read_hugetlb_kb(c))
        if time.monotonic() - t0 > timeout:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                pass
            _, status, ru = os.wait4(p.pid, 0)
            timed_out = True
            break
        time.sleep(sample_s)
    p.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    wall = time.monotonic() - t0
    out = p.stdout.read().decode(errors="replace")
    err = p.stderr.read().decode(errors="replace")
    p.stdout.close()
    p.stderr.close()
    m = re.search(r"@@launcher maxrss_kb=(\d+).* wall_s=([0-9.]+)", err)
    maxrss = int(m.group(1)) if m else 0
    err = re.sub(r"\n?@@launcher[^\n]*\n?", "", err)
    res = parse_line(out, program) if p.returncode == 0 and not timed_out and m else None
    # The time metric: the workload's own ns_per_op, or for a program its wall time in ms.
    t = float("nan")
    if res:
        t = float(m.group(2)) * 1000.0 if program else float(res["ns_per_op"])
    extra = {k: (res.get(k, "") if res else "") for k, _, _ in EXTRA_KEYS}
    extra.update({k: (res.get(k, "") if res else "") for k in EXTRA_CSV})
    return dict(extra, **{
        "ok": res is not None,
        "exit": "timeout" if timed_out else p.returncode,
        "t": t,
        "launcher_wall_s": float(m.group(2)) if m else float("nan"),
        "ns_per_op": float(res["ns_per_op"]) if res and "ns_per_op" in res else float("nan"),
        "ops": res.get("ops", "") if res else "",
        "elapsed_s": res.get("elapsed_s", "") if res else "",
        "wall_s": round(wall, 4),
        "peak_rss_kb": maxrss,
        "hugetlb_kb": huge,
        "line": out.strip().splitlines()[-1] if out.strip() else "",
        "stderr": err.strip()[-300:],
    })


# ---------------------------------------------------------------------------- reporting
def median(xs):
    return statistics.median(xs) if xs else float("nan")


def fmt_t(x):
    if math.isnan(x):
        return "—"
    return "%.0f" % x if x >= 1000 else "%.1f" % x if x >= 10 else "%.2f" % x


def fmt_mb(kb):
    return "%.1f" % (kb / 1024.0) if kb < 100 * 1024 else "%.0f" % (kb / 1024.0)


def summarize(rows, allocs, workloads, programs=()):
    """Return (markdown text, ratio tables for the plot, reference name). Workloads in `programs`
    are timed in ms of wall time instead of ns/op."""
    names = [a[0] for a in allocs]
    stats = {}
    for w in workloads:
        for a in names:
            rs = [r for r in rows if r["workload"] == w and r["allocator"] == a]
            good = [r for r in rs if r["ok"]]
            t = [r["t"] for r in good]
            m = [r["peak_rss_kb"] + r["hugetlb_kb"] for r in good]
            stats[w, a] = dict(n=len(rs), ok=len(good), t=median(t), tmin=min(t) if t else float("nan"),
                               tmax=max(t) if t else float("nan"), mem=median(m) if m else float("nan"),
                               huge=max([r["hugetlb_kb"] for r in good] or [0]))
    # Reference: the first hakmem configuration that produced data, else glibc, else the first.
    ref = None
    for cand in [a[0] for a in allocs if a[2]] + ["glibc"] + names:
        if cand in names and any(stats[w, cand]["ok"] for w in workloads):
            ref = cand
            break
    tr, mr = {}, {}
    lines = []
    lines.append("Cells: **median ns/op** (min–max over reps) ×ratio-to-%s · median peak memory MB "
                 "×ratio. Ratio > 1 = slower / more memory than %s. Best time per row in bold. "
                 "Memory = peak RSS, the larger of ru_maxrss and VmHWM at exit (+ HugetlbPages if any). Rows marked [ms] are real programs: "
                 "their time is the whole process' wall time in ms." % (ref, ref))
    lines.append("")
    lines.append("| workload | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for w in workloads:
        valid = [stats[w, a]["t"] for a in names if stats[w, a]["ok"]]
        best = min(valid) if valid else None
        rt = stats[w, ref]["t"] if ref else float("nan")
        rm = stats[w, ref]["mem"] if ref else float("nan")
        cells = []
        for a in names:
            s = stats[w, a]
            if not s["ok"]:
                cells.append("FAIL (%d runs)" % s["n"] if s["n"] else "—")
                tr[w, a] = mr[w, a] = float("nan")
                continue
            tr[w, a] = s["t"] / rt if rt and not math.isnan(rt) else float("nan")
            mr[w, a] = s["mem"] / rm if rm and not math.isnan(rm) else float("nan")
            t = fmt_t(s["t"])
            if s["t"] == best:
                t = "**%s**" % t
            cell = "%s (%s–%s) ×%.2f · %s MB ×%.2f" % (t, fmt_t(s["tmin"]), fmt_t(s["tmax"]), tr[w, a],
                                                       fmt_mb(s["mem"]), mr[w, a])
            if s["ok"] < s["n"]:
                cell += " (%d/%d ok)" % (s["ok"], s["n"])
            if s["huge"]:
                cell += " (hugetlb %s MB)" % fmt_mb(s["huge"])
            cells.append(cell.replace("×nan", "×?"))
        lines.append("| %s | %s |" % (w + (" [ms]" if w in programs else ""), " | ".join(cells)))
    # Geometric mean of the ratios over workloads where both have data.
    cells = []
    for a in names:
        # Ratios of 0 (a time below the printed resolution in --quick runs)
        # have no logarithm: they are left out of the geometric mean.
        ts = [tr[w, a] for w in workloads if tr.get((w, a), 0) > 0]
        ms = [mr[w, a] for w in workloads if mr.get((w, a), 0) > 0]
        g = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
        cells.append(("time ×%.2f · mem ×%.2f" % (g(ts), g(ms))).replace("×nan", "×?"))
    lines.append("| *geomean ratio* | %s |" % " | ".join(cells))
    lines += extra_table(rows, names, workloads, ref)
    lines += check_report(rows, workloads)
    return "\n".join(lines) + "\n", tr, mr, ref


def extra_table(rows, names, workloads, ref):
    """Second table: the values in EXTRA_KEYS (RSS at the end / per phase, shared cache lines)."""
    out = []
    for w in workloads:
        for key, label, unit in EXTRA_KEYS:
            vals = {}
            for a in names:
                xs = [float(r[key]) for r in rows if r["workload"] == w and r["allocator"] == a
                      and r["ok"] and r.get(key, "") != ""]
                if xs:
                    vals[a] = median(xs)
            if not vals:
                continue
            live = [float(r["live_kb"]) for r in rows if r["workload"] == w and r["ok"] and r.get("live_kb")]
            lab = "%s: %s" % (w, label) + (" (live %s MB)" % fmt_mb(live[0]) if live else "")
            best = min(vals.values())
            rv = vals.get(ref)
            cells = []
            for a in names:
                if a not in vals:
                    cells.append("—")
                    continue
                v = vals[a]
                c = fmt_mb(v) + " MB" if unit == "kb" else "%.0f KiB" % v if unit == "kib" else "%g" % v
                if v == best:
                    c = "**%s**" % c
                if unit in ("kb", "kib") and rv:
                    c += " ×%.2f" % (v / rv)
                cells.append(c)
            out.append("| %s | %s |" % (lab, " | ".join(cells)))
    if not out:
        return []
    head = ["", "Other metrics, median over reps (lowest in bold; RSS ratios to %s). RSS values are "
            "the workload's own /proc/self/statm readings at the point named." % ref, "",
            "| workload: metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    return head + out


def check_failures(rows):
    """Runs whose `check` differs from the reference answer (glibc's, else the most common one)."""
    bad = 0
    for w in sorted({r["workload"] for r in rows}):
        got = [r for r in rows if r["workload"] == w and r["ok"] and r.get("check", "") != ""]
        if not got:
            continue
        ref = [r["check"] for r in got if r["allocator"] == "glibc"]
        values = [r["check"] for r in got]
        want = ref[0] if ref else max(set(values), key=values.count)
        bad += sum(1 for r in got if r["check"] != want)
    return bad


def check_report(rows, workloads):
    """Every allocator must produce the same `check` for a workload (same work, same answer)."""
    out = []
    for w in workloads:
        seen = {}
        for r in rows:
            if r["workload"] == w and r["ok"] and r.get("check", "") != "":
                seen.setdefault(r["check"], set()).add(r["allocator"])
        if len(seen) > 1:
            msg = "**check mismatch** in %s: %s" % (w, "; ".join(
                "%s from %s" % (c, ",".join(sorted(a))) for c, a in sorted(seen.items())))
            log(msg)
            out.append(msg)
    if out:
        return ["", "Result checks differ between allocators (a bug, or a non-deterministic workload):", ""] + \
               ["- " + m for m in out]
    return ["", "Result checks (`check=`) agreed across all allocators and reps."]


def machine_info(allocs, build_dir):
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else cpu
    except OSError:
        pass
    def rd(p):
        try:
            with open(p) as f:
                return f.read().strip()
        except OSError:
            return "n/a"
    out = [
        "date: %s" % datetime.datetime.now().isoformat(timespec="seconds"),
        "cpu: %s" % cpu,
        "cores (online): %s" % os.cpu_count(),
        "cores (usable by this process): %d" % len(os.sched_getaffinity(0)),
        "kernel: %s" % sh(["uname", "-r"]),
        "glibc: %s" % (sh(["ldd", "--version"]).splitlines() or ["?"])[0],
        "gcc: %s" % (sh([os.environ.get("CC", "gcc"), "--version"]).splitlines() or ["?"])[0],
        "python: %s" % platform.python_version(),
        "transparent_hugepage: %s" % rd("/sys/kernel/mm/transparent_hugepage/enabled"),
        "nr_hugepages: %s" % rd("/proc/sys/vm/nr_hugepages"),
        "loadavg at start: %s" % rd("/proc/loadavg"),
        "repo commit: %s%s" % (sh(["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"]) or "(none yet)",
                               " (dirty work tree)" if sh(["git", "-C", REPO_DIR, "status", "--porcelain"]) else ""),
        "cflags: %s" % " ".join(CFLAGS),
        "",
        "peer packages (dpkg-query -W):",
        sh(["dpkg-query", "-W", "libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4"]) or "n/a",
        "",
        "allocators:",
    ]
    for name, path, _ in allocs:
        out.append("  %-10s %s" % (name, path or "(no preload: glibc malloc)"))
    return "\n".join(out) + "\n"


def plot(outdir, tr, mr, allocs, workloads, ref):
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no plot.png")
        return
    # The reference's own ratios are all 1: a bar of height 1 says nothing and
    # crowds the others, so only the other allocators are drawn.
    names = [a[0] for a in allocs if a[0] != ref]
    if not names:
        log("only %s ran: nothing to plot against it" % ref)
        return
    for fname, table in (("plot_time.dat", tr), ("plot_mem.dat", mr)):
        with open(os.path.join(outdir, fname), "w") as f:
            # A comment, not a header: the plot numbers bars by row ($0), so every row must be data.
            f.write("# workload " + " ".join(names) + "\n")
            for w in workloads:
                vals = [table.get((w, a), float("nan")) for a in names]
                # A ratio of 0 (a time below the printed resolution) has no place on a log axis.
                f.write(w + " " + " ".join("NaN" if math.isnan(v) or v <= 0 else "%.4f" % v for v in vals) + "\n")
    # Bars are drawn from 1 to the ratio (boxxyerror: x, y, xlow, xhigh, ylow,
    # yhigh), not from the axis: a histogram's bars all grow from the bottom,
    # so 0.5x and 2x would look alike but for their height. On a log axis a
    # bar up is as long for 2x slower as a bar down is for 2x faster.
    n = len(names)
    width = 0.8 / n
    xtics = ", ".join('"%s" %d' % (w, i) for i, w in enumerate(workloads))
    def ytics(table):
        """Tics at 1 and the same distances above and below it (x2 and /2, ...): between the
        powers of two, 1.5 and 3 (and 1.25) where the panel spans few enough doublings for
        their labels not to overlap, so that a panel of ratios within 0.6-1.9 is not left
        with a single tic at 1."""
        vals = [v for (w, a), v in table.items() if a in names and w in workloads and v > 0 and not math.isnan(v)]
        lo, hi = min(vals + [1.0]), max(vals + [1.0])
        span = math.log2(hi) - math.log2(lo)
        step = 2 if span > 12 else 1
        ups = [2.0 ** k for k in range(step, int(math.ceil(math.log2(hi))) + step + 1, step)]
        ups += [1.5, 3] if span <= 7 else []
        ups += [1.25] if span <= 3 else []
        downs = [2.0 ** -k for k in range(step, int(math.ceil(-math.log2(lo))) + step + 1, step)]
        downs += [1 / 1.5, 1 / 3] if span <= 7 else []
        downs += [0.8] if span <= 3 else []
        label = lambda v: "1/%d" % round(1 / v) if v < 0.1 else "%d" % v if v >= 100 else "%.3g" % v
        return ", ".join('"%s" %r' % (label(v), v) for v in sorted([1.0] + ups + downs))
    seps = "\n".join("set arrow from %g, graph 0 to %g, graph 1 nohead lc rgb '#dddddd' back" % (i + 0.5, i + 0.5)
                     for i in range(len(workloads) - 1))
    bars = ", ".join(
        "'{dat}' using ($0+%.4f):%d:($0+%.4f):($0+%.4f):(column(%d) < 1 ? column(%d) : 1):"
        "(column(%d) > 1 ? column(%d) : 1) with boxxyerror title '%s'"
        % ((j - (n - 1) / 2) * width, j + 2, (j - n / 2) * width, (j + 1 - n / 2) * width,
           j + 2, j + 2, j + 2, j + 2, name) for j, name in enumerate(names))
    script = """
set terminal pngcairo size 1600,1000 noenhanced font ",9"
set output 'plot.png'
set multiplot layout 2,1
set style fill solid 0.85 border -1
set logscale y 2
set grid ytics
set key outside right top
set xtics ({xtics}) rotate by -30
set xrange [-0.6:{xmax}]
set autoscale yfix
# The data range and a margin, not widened to the next power of two (which can halve the
# bars): room above the tallest bar and below the lowest, so that none looks cut off by the frame.
set offsets 0, 0, graph 0.05, graph 0.05
{seps}
set arrow from graph 0, first 1 to graph 1, first 1 nohead lc rgb 'black' lw 1.5 front
set ytics ({time_ytics})
set title "time of each allocator relative to {ref} (median ns/op, or wall time for the [ms] programs)"
set ylabel "time / {ref}'s (log scale)\\nabove 1: slower than {ref}\\nbelow 1: faster"
plot {time_bars}
set ytics ({mem_ytics})
set title "peak memory of each allocator relative to {ref} (median peak RSS + HugetlbPages)"
set ylabel "peak memory / {ref}'s (log scale)\\nabove 1: more memory than {ref}\\nbelow 1: less"
plot {mem_bars}
unset multiplot
"""
    for key, val in (("{xtics}", xtics), ("{xmax}", "%.1f" % (len(workloads) - 0.4)), ("{seps}", seps),
                     ("{time_ytics}", ytics(tr)), ("{mem_ytics}", ytics(mr)),
                     ("{time_bars}", bars.replace("{dat}", "plot_time.dat")),
                     ("{mem_bars}", bars.replace("{dat}", "plot_mem.dat")), ("{ref}", ref or "?")):
        script = script.replace(key, val)
    with open(os.path.join(outdir, "plot.gp"), "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", "plot.gp"], cwd=outdir, capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed:\n" + r.stderr)


CSV_FIELDS = ["rep", "workload", "allocator", "ok", "exit", "ns_per_op", "ops", "elapsed_s", "wall_s",
              "launcher_wall_s", "peak_rss_kb", "hugetlb_kb"] + [k for k, _, _ in EXTRA_KEYS] + EXTRA_CSV + \
             ["args", "line", "stderr"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hakmem", action="append", metavar="[NAME=]PATH[:VAR=VALUE...]",
                    help="hakmem shared object to preload, with environment settings of its own after ':'; "
                         "repeatable (default: build/libhakmem.so if present)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5, --quick 3)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 3 reps, short iterations, every workload")
    ap.add_argument("--only", metavar="REGEX", help="run only workloads whose name matches REGEX")
    ap.add_argument("--allocators", metavar="A,B,C", help="subset of allocators (names as in the table)")
    ap.add_argument("--build-dir", default=os.path.join(REPO_DIR, "build-bench"))
    ap.add_argument("--out", metavar="DIR", help="results dir (default bench-results/<timestamp>/)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per run before it is killed")
    ap.add_argument("--sample-ms", type=float, default=20, help="HugetlbPages sampling period")
    ap.add_argument("--list", action="store_true", help="list workloads and exit")
    args = ap.parse_args()

    wl = []
    for name, prog, dflt, quick, *opt in WORKLOADS:
        if args.quick and quick is None:
            continue
        if args.only and not re.search(args.only, name):
            continue
        if opt and opt[0].get("explicit") and not args.only:
            continue
        a = [str(x).replace("{bench}", BENCH_DIR) for x in (quick if args.quick else dflt)]
        wl.append((name, prog, a, opt[0] if opt else {}))
    if args.list:
        for name, prog, a, opt in wl:
            env = " ".join("%s=%s" % kv for kv in opt.get("env", {}).items() if kv[1] is not None)
            print("%-22s %s%s %s" % (name, env + " " if env else "", prog, " ".join(map(str, a))))
        return 0
    # Real programs: find an executable, or skip the workload with a message (not fatal).
    exes = {}
    for name, prog, _, _ in wl:
        if prog.startswith("@"):
            found = [c for c in REAL_PROGRAMS[prog[1:]]() if c and os.path.isfile(c) and os.access(c, os.X_OK)]
            if found:
                exes[name] = os.path.realpath(found[0])
            else:
                log("%s: %s not found: skipped" % (name, prog[1:]))
    wl = [w for w in wl if not w[1].startswith("@") or w[0] in exes]
    if not wl:
        sys.exit("no workload matches")
    reps = args.reps or (3 if args.quick else 5)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = os.path.abspath(args.out or os.path.join(REPO_DIR, "bench-results", stamp))
    build_dir = os.path.abspath(args.build_dir)
    os.makedirs(outdir, exist_ok=True)

    build(build_dir)
    allocs = collect_allocators(args, build_dir)
    if not allocs:
        sys.exit("no allocator available")
    log("allocators: " + ", ".join("%s%s%s" % (n, " (" + p + ")" if p else "",
                                                 "".join(" %s=%s" % kv for kv in ALLOC_ENV.get(n, {}).items()))
                                   for n, p, _ in allocs))
    log("workloads: %s; %d reps; results -> %s" % (", ".join(w[0] for w in wl), reps, outdir))
    with open(os.path.join(outdir, "machine.txt"), "w") as f:
        f.write(machine_info(allocs, build_dir))
        if exes:
            f.write("\nreal programs:\n")
        for exe in sorted(set(exes.values())):
            ver = sh([exe, "--version"])
            f.write("  %s (%s)\n" % (exe, ver.splitlines()[0] if ver else "?"))

    launcher = os.path.join(build_dir, "launcher")
    rows = []
    t_start = time.monotonic()
    total = reps * sum(opt.get("runs", 1) for _, _, _, opt in wl) * len(allocs)
    done = 0
    with open(os.path.join(outdir, "results.csv"), "w", newline="") as fcsv:
        wr = csv.DictWriter(fcsv, fieldnames=CSV_FIELDS)
        wr.writeheader()
        try:
            for rep in range(1, reps + 1):
                for wname, prog, argv, opt in wl:
                    runs = opt.get("runs", 1)
                    for _ in range(runs):
                        for aname, path, _ in allocs:   # interleaved: every allocator in turn
                            exe = exes.get(wname) or os.path.join(build_dir, prog)
                            env = dict(opt.get("env") or {}, **ALLOC_ENV.get(aname, {}))
                            r = run_one(launcher, exe, argv, path, args.timeout, args.sample_ms / 1000.0,
                                        env, program=wname in exes)
                            r.update(rep=rep, workload=wname, allocator=aname, args=" ".join(map(str, argv)))
                            rows.append(r)
                            wr.writerow({k: r[k] for k in CSV_FIELDS})
                            fcsv.flush()
                            done += 1
                            el = time.monotonic() - t_start
                            status = "%s %s %s MB" % (fmt_t(r["t"]), "ms" if wname in exes else "ns/op",
                                                      fmt_mb(r["peak_rss_kb"])) if r["ok"] \
                                else "FAILED (exit %s) %s" % (r["exit"], r["stderr"][-120:])
                            log("[%d/%d rep %d] %-22s %-9s %s  %.2fs  (eta %.0fs)" % (
                                done, total, rep, wname, aname, status, r["wall_s"], el / done * (total - done)))
                    # One line per workload and rep as well: a reader who wants progress, not a line per
                    # allocator (tests/run.sh shows only these), sees what ran and what failed.
                    mine = rows[-len(allocs) * runs:]
                    bad = [r["allocator"] for r in mine if not r["ok"]]
                    el = time.monotonic() - t_start
                    log("rep %d/%d %-22s %d/%d ok%s  (%.0f s in, eta %.0f s)" % (
                        rep, reps, wname, len(mine) - len(bad), len(mine),
                        "; FAILED: " + ", ".join(sorted(set(bad))) if bad else "", el, el / done * (total - done)))
        except KeyboardInterrupt:
            log("interrupted: summarizing the runs done so far")
    wall = time.monotonic() - t_start

    names = [w[0] for w in wl]
    md, tr, mr, ref = summarize(rows, allocs, names, set(exes))
    head = "# hakmem benchmark summary\n\n%d reps, %s, total wall time %.0f s. Machine: see machine.txt.\n\n" % (
        reps, "quick" if args.quick else "default iterations", wall)
    with open(os.path.join(outdir, "summary.md"), "w") as f:
        f.write(head + md)
    with open(os.path.join(outdir, "machine.txt"), "a") as f:
        f.write("\nbenchmark wall time: %.1f s (%d runs)\n" % (wall, len(rows)))
    plot(outdir, tr, mr, allocs, names, ref)
    print(md)
    print("results: %s (wall %.0f s)" % (outdir, wall))
    # Every run counts: a workload that crashed, timed out or computed a
    # different answer under an allocator fails the command (that is what
    # --quick in CI checks).
    nfail = sum(1 for r in rows if not r["ok"]) + check_failures(rows)
    print("%d passed, %d failed" % (len(rows) - nfail, nfail))
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
