#!/usr/bin/env python3
"""Interleaved A/B runs of a few commands under several preloaded builds: medians of ns_per_op (or the
process' wall time), user and system CPU time and minor page faults, each relative to the first arm.

On a shared machine wall time measures the neighbours as much as the allocator; CPU time and page
faults of the child (os.wait4) are less disturbed, and an arm that does the first arm's work (e.g. a
learning build with HAKMEM_LEARNING=0: fixed behaviour plus an event counter) shows how large the
noise is.

    python3 bench/ab.py --reps 11 --arm fixed=/tmp/f/libhakmem.so --arm learn=/tmp/l/libhakmem.so \\
        --arm learn0=/tmp/l/libhakmem.so:HAKMEM_LEARNING=0 "churn_4:build/bench-programs/bench_churn 2000 4 100"

A command is NAME:ARGV (split like a shell line); each rep runs every command under every arm, the
arms' order rotating from one rep to the next. Python 3 standard library only.
"""
import argparse
import os
import re
import shlex
import statistics
import subprocess
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--arm", action="append", required=True, help="NAME=LIB.so[:VAR=VALUE...]")
    ap.add_argument("commands", nargs="+", help="NAME:ARGV")
    a = ap.parse_args()
    arms = []
    for spec in a.arm:
        name, rest = spec.split("=", 1)
        lib, *env = rest.split(":")
        arms.append((name, lib, dict(e.split("=", 1) for e in env)))
    res = {}
    for r in range(a.reps):
        for cmd in a.commands:
            wl, argv = cmd.split(":", 1)
            for name, lib, env in arms[r % len(arms):] + arms[:r % len(arms)]:
                t0 = time.monotonic()
                p = subprocess.Popen(shlex.split(argv), env=dict(os.environ, LD_PRELOAD=lib, **env),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                out = p.stdout.read().decode()
                _, status, ru = os.wait4(p.pid, 0)
                if status:
                    raise SystemExit("%s under %s: exit status %d" % (wl, name, status))
                m = re.search(r"ns_per_op=([0-9.]+)", out)
                t = float(m.group(1)) if m else (time.monotonic() - t0) * 1e3
                res.setdefault((wl, name), []).append((t, ru.ru_utime, ru.ru_stime, ru.ru_minflt))
    print("%-20s %-8s %12s %7s %8s %7s %8s %7s %8s %s" % ("workload", "arm", "time", "ratio", "user_s", "ratio",
                                                       "sys_s", "ratio", "minflt", "time min-max"))
    for cmd in a.commands:
        wl = cmd.split(":", 1)[0]
        med = {n: [statistics.median(x[i] for x in res[(wl, n)]) for i in range(4)] for n, _, _ in arms}
        base = med[arms[0][0]]
        for n, _, _ in arms:
            v, ts = med[n], [x[0] for x in res[(wl, n)]]
            ratio = lambda i: v[i] / base[i] if base[i] else float("nan")
            print("%-20s %-8s %12.2f %7.3f %8.4f %7.3f %8.4f %7.3f %8d %.3g-%.3g" % (
                wl, n, v[0], ratio(0), v[1], ratio(1), v[2], ratio(2), v[3], min(ts), max(ts)))


if __name__ == "__main__":
    main()
