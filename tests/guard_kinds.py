#!/usr/bin/env python3
"""Guarded sampling, one bug at a time: runs tests/guard_kinds.c for each kind and size with
HAKMEM_GUARD_SAMPLE=1 and checks the report (its kind, how the program died, and stacks that
addr2line resolves to the test's own functions), then with guarding off checks that no report
appears and a clean run still survives.

    guard_kinds.py --prog build/tests/guard_kinds [--preload build/libhakmem.so]
"""
import argparse
import os
import re
import resource
import signal
import subprocess
import sys

SIZES = [0, 8, 4096, 32768, 262144]

# kind -> (what the report says, how the program dies) for a size; None: not caught (survives).
def expected(kind, n):
    seg, abrt = -signal.SIGSEGV, -signal.SIGABRT
    in_padding = n % 16 != 0  # the bytes up to the next 16 hold a canary, checked at free
    page_start = n % 4096 == 0  # the block starts a page (0 bytes: ends one): below it is inaccessible
    if kind == "ok":
        return None
    if kind in ("overflow-1", "overflow-memcpy-1"):
        return ("overflow", abrt if in_padding else seg)
    if kind == "overflow-read-1":
        return None if in_padding else ("overflow", seg)  # a read of the padding cannot be seen
    if kind in ("overflow-32", "overflow-memcpy-32"):
        return ("overflow", seg)
    if kind in ("underflow-1", "underflow-32"):
        return ("underflow", seg if page_start else abrt)
    if kind in ("read-after-free", "write-after-free"):
        return ("use after free", seg)
    if kind == "double-free":
        return ("double free", abrt)
    if kind == "realloc-after-free":
        return ("use after free", abrt)
    raise ValueError(kind)


# The function of tests/guard_kinds.c that makes the access, for faults.
BAD_FUNCTION = {"overflow-1": "overflow_write", "overflow-32": "overflow_write", "overflow-read-1": "overflow_read",
                "underflow-1": "underflow_write", "underflow-32": "underflow_write",
                "read-after-free": "read_after_free", "write-after-free": "write_after_free"}

KINDS = ["ok", "overflow-1", "overflow-read-1", "overflow-32", "overflow-memcpy-1", "overflow-memcpy-32",
         "underflow-1", "underflow-32", "read-after-free", "write-after-free", "double-free",
         "realloc-after-free"]


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run(prog, kind, n, env):
    p = subprocess.run([prog, kind, str(n)], env=env, capture_output=True, text=True, timeout=60,
                       preexec_fn=no_core)
    return p.returncode, p.stdout, p.stderr


def symbolize(lines, prog):
    """Function names of the report's frames that are in prog (addr2line on module+offset)."""
    out = []
    for l in lines:
        m = re.search(r"#\d+ 0x[0-9a-f]+ (\S+)\+(0x[0-9a-f]+)", l)
        if not m:
            continue
        if os.path.realpath(m.group(1)) != os.path.realpath(prog):
            out.append("?")
            continue
        r = subprocess.run(["addr2line", "-f", "-e", prog, m.group(2)], capture_output=True, text=True)
        out.append(r.stdout.split("\n")[0])
    return out


def stack_after(stderr, header):
    """The frame lines following the line containing header."""
    lines = stderr.split("\n")
    for i, l in enumerate(lines):
        if header in l:
            frames = []
            for f in lines[i + 1:]:
                if "    #" not in f:
                    break
                frames.append(f)
            return frames
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prog", required=True)
    ap.add_argument("--preload")
    a = ap.parse_args()
    base = dict(os.environ)
    base.pop("HAKMEM_GUARD_SAMPLE", None)
    if a.preload:
        base["LD_PRELOAD"] = a.preload
    on = dict(base, HAKMEM_GUARD_SAMPLE="1")
    fails = 0

    def fail(msg):
        nonlocal fails
        fails += 1
        print("FAIL: " + msg)

    for kind in KINDS:
        for n in SIZES:
            want = expected(kind, n)
            rc, out, err = run(a.prog, kind, n, on)
            tag = f"{kind} {n} B"
            if want is None:
                if rc != 0 or "survived" not in out or "guarded block" in err:
                    fail(f"{tag}: expected to run through, got status {rc}: {err.strip()[:300]}")
                else:
                    print(f"ok   {tag}: not caught, as documented" if kind != "ok" else f"ok   {tag}: clean")
                continue
            what, status = want
            head = [l for l in err.split("\n") if "hakmem: guarded block: " in l]
            if rc != status or not head or f"guarded block: {what}" not in head[0]:
                fail(f"{tag}: expected '{what}' and status {status}, got {rc}: {err.strip()[:400]}")
                continue
            alloc = stack_after(err, "allocated by thread")
            names = symbolize(alloc or [], a.prog)
            if not names or names[0] != "alloc_site":
                fail(f"{tag}: allocation stack {names} does not start in alloc_site")
                continue
            if what in ("use after free", "double free") or status == -signal.SIGABRT:
                freed = symbolize(stack_after(err, "freed by thread") or [], a.prog)
                if not freed or freed[0] != "free_site":
                    fail(f"{tag}: free stack {freed} does not start in free_site")
                    continue
            if status == -signal.SIGSEGV and "memcpy" not in kind:
                # memcpy's frame is libc's (and the caller's a tail call): only the others are named
                at = symbolize(stack_after(err, "the access, in thread") or [], a.prog)
                if not at or at[0] != BAD_FUNCTION[kind]:
                    fail(f"{tag}: the access's stack {at} does not start in {BAD_FUNCTION[kind]}")
                    continue
            print(f"ok   {tag}: {head[0].split('guarded block: ')[1][:90]}")
    # Off: the same programs, no report (a clean one survives; the others do what they did before).
    for kind in KINDS:
        for n in (8, 4096):
            rc, out, err = run(a.prog, kind, n, base)
            if "guarded block" in err or (kind == "ok" and (rc != 0 or "survived" not in out)):
                fail(f"off: {kind} {n} B: status {rc}: {err.strip()[:200]}")
    print(f"off: {len(KINDS) * 2} runs without guarding, no report")
    print("PASS" if not fails else f"{fails} FAILED")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
