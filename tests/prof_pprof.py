#!/usr/bin/env python3
# Reads hakmem's heap profiles with google-pprof: the four sites of prof_sites within 15% when sampled and exact at rate 1, the freed GiB only in alloc_space; python3 and sqlite3 profiled with their output unchanged and their sampled memory attributed to their own code.

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

MIB = 1 << 20


def run_profiled(cmd, so, prefix, env_extra, stdin=None):
    env = dict(os.environ, LD_PRELOAD=so, HAKMEM_PROF=prefix, **env_extra)
    r = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=600)
    files = glob.glob(prefix + ".*.heap")
    return r, files


def pprof(binary, profile, mode):
    r = subprocess.run(["google-pprof", "--text", "--" + mode, binary, profile], capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0:
        sys.exit("FAIL: google-pprof %s: %s" % (mode, r.stderr[-500:]))
    flat = {}
    for line in r.stdout.splitlines():
        # "    23.6  91.1%  91.1%     23.6  91.1% site_a" (MB, pprof's MiB)
        m = re.match(r"\s*([0-9.]+)\s+[0-9.]+%\s+[0-9.]+%\s+([0-9.]+)\s+[0-9.]+%\s+(\S+)", line)
        if m:
            flat[m.group(3)] = float(m.group(1))
    return flat, r.stdout


def check(name, got, want, tol, what):
    ok = abs(got - want) <= tol
    print("%-18s %-12s %8.1f MiB, expected %8.1f (%s)" % (name, what, got, want, "ok" if ok else "FAIL"))
    return ok


def accuracy(args, tmp):
    ok = True
    exp_inuse = {"keep_1k_blocks": 64.0, "keep_64b_blocks": 16.0, "leak_4m_blocks": 64.0}
    for rate, tol in (("32768", 0.15), ("1", 0.0)):
        prefix = os.path.join(tmp, "sites" + rate)
        r, files = run_profiled([args.sites], args.so, prefix,
                                {"HAKMEM_PROF_SAMPLE": rate, "HAKMEM_PROF_SEED": "1"})
        if r.returncode != 0 or len(files) != 1:
            sys.exit("FAIL: prof_sites at rate %s: exit %d, files %s, stderr %s" % (rate, r.returncode, files, r.stderr))
        if not re.search(r"hakmem: heap profile .*\.heap: \d+ sampled blocks still live", r.stderr):
            sys.exit("FAIL: no exit line on stderr: %r" % r.stderr)
        print("rate %s: %s" % (rate, r.stderr.strip()))
        inuse, text_inuse = pprof(args.sites, files[0], "inuse_space")
        alloc, _ = pprof(args.sites, files[0], "alloc_space")
        # At rate 1 pprof prints one decimal: exact means within its rounding.
        for site, want in exp_inuse.items():
            t = max(tol * want, 0.051)
            ok &= check(site, inuse.get(site, 0.0), want, t, "in use")
        ok &= check("churn_64k_blocks", inuse.get("churn_64k_blocks", 0.0), 0.0, 0.051, "in use")
        ok &= check("churn_64k_blocks", alloc.get("churn_64k_blocks", 0.0), 1024.0, max(tol * 1024, 0.051), "allocated")
        if not ok:
            print(text_inuse)
    return ok


def first_frames(profile):
    """(sampled bytes allocated, first frame address) per line, and the mappings."""
    lines, maps = [], []
    with open(profile) as f:
        text = f.read()
    body, _, tail = text.partition("MAPPED_LIBRARIES:")
    for line in body.splitlines()[1:]:
        m = re.match(r"\s*(\d+):\s+(\d+)\s+\[\s*(\d+):\s+(\d+)\]\s+@\s+(0x[0-9a-f]+)", line)
        if m:
            lines.append((int(m.group(4)), int(m.group(5), 16) + 1))
    for line in tail.splitlines():
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$", line)
        if m:
            maps.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
    return lines, maps


def real(args, tmp, name, cmd, stdin, env_extra, own, rate="65536"):
    """The program's output is the same with the profiler on, and most sampled bytes (all
    allocations: a program may free everything before it exits) have their first frame
    in the program's own code (`own`: path substrings)."""
    base = subprocess.run(cmd, env=dict(os.environ, LD_PRELOAD=args.so, **env_extra), input=stdin,
                          capture_output=True, text=True, timeout=600)
    prefix = os.path.join(tmp, name)
    r, files = run_profiled(cmd, args.so, prefix, dict(env_extra, HAKMEM_PROF_SAMPLE=rate, HAKMEM_PROF_SEED="1"),
                            stdin)
    if base.returncode != 0 or r.returncode != 0 or base.stdout != r.stdout:
        print("FAIL: %s: exit %d/%d, output %s" % (name, base.returncode, r.returncode,
                                                     "same" if base.stdout == r.stdout else "differs"))
        return False
    if len(files) != 1:
        print("FAIL: %s: %d profiles" % (name, len(files)))
        return False
    lines, maps = first_frames(files[0])
    total = sum(b for b, _ in lines)
    mine = 0
    for b, pc in lines:
        for lo, hi, path in maps:
            if lo <= pc < hi:
                if any(o in path for o in own):
                    mine += b
                break
    share = mine / total if total else 0.0
    print("%-8s output unchanged, %d stacks, %.1f MiB sampled, %.0f%% of it first in %s" % (
        name, len(lines), total / MIB, 100 * share, "/".join(own)))
    if share < 0.9:
        print("FAIL: %s: its own code allocated under 90%% of the sampled bytes" % name)
        return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so", required=True)
    ap.add_argument("--sites", required=True)
    ap.add_argument("mode", choices=["accuracy", "real"])
    args = ap.parse_args()
    if not shutil.which("google-pprof"):
        print("SKIP: google-pprof is not installed (Debian: google-perftools); tests/run.sh installs it")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "accuracy":
            ok = accuracy(args, tmp)
        else:
            ok = True
            # Debian's interpreter (one binary: its frames are python3.11's own), else PATH's.
            py = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else shutil.which("python3")
            script = ("import json\nd = {str(i): [i] * (i % 50) for i in range(40000)}\n"
                      "s = json.dumps(d)\nprint(len(s), sum(len(v) for v in json.loads(s).values()))\n")
            ok &= real(args, tmp, "python3", [py, "-c", script], None,
                       {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"},
                       [os.path.realpath(py), "libpython3"])
            sq = shutil.which("sqlite3")
            if sq:
                # Rows, an index and a sort with no index: sqlite's page cache and sorter.
                sql = ("create table t(a integer primary key, b text, c integer);\n"
                       "with recursive n(x) as (select 1 union all select x + 1 from n where x < 200000)\n"
                       "insert into t select x, printf('row %08d', x * 7919 % 200000), x % 977 from n;\n"
                       "create index tb on t(b);\n"
                       "select count(*), sum(length(b)) from t;\n"
                       "select sum(c) from (select c from t order by c desc, b limit 1000);\n")
                ok &= real(args, tmp, "sqlite3", [sq, ":memory:"], sql, {}, ["sqlite3", "libsqlite3"], rate="4096")
            else:
                print("sqlite3 not installed: its part is left out")
    print("prof-pprof %s: %s" % (args.mode, "ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
