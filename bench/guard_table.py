#!/usr/bin/env python3
"""Which memory bugs each allocator catches: tests/guard_kinds.c (built here as a plain program
that calls malloc) runs each bug at 8 B, 4 KiB and 256 KiB under glibc, hakmem (default and with
HAKMEM_GUARD_SAMPLE=1), jemalloc, mimalloc and tcmalloc, and prints a markdown table.

    python3 bench/guard_table.py --hakmem build/bench/libhakmem.so

A bug counts as caught at a size when the program stops with a message from the allocator about
it (hakmem's report, glibc's "free(): ..." checks, jemalloc's or tcmalloc's own), not when it runs
on or crashes without one. Cells: the sizes where it was caught, "all" or "-" (none).
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile

LIB = "/usr/lib/x86_64-linux-gnu/"
KINDS = ["overflow-1", "overflow-read-1", "overflow-32", "overflow-memcpy-32", "underflow-1", "underflow-32",
         "read-after-free", "write-after-free", "double-free", "realloc-after-free"]
SIZES = [8, 4096, 262144]
# Lines that are an allocator's own diagnosis (not a shell's "Segmentation fault").
MESSAGES = ["hakmem:", "free():", "double free", "malloc():", "realloc():", "corrupted", "<jemalloc>",
            "src/tcmalloc.cc", "Attempt to free invalid pointer", "mimalloc:", "munmap_chunk()"]


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hakmem", required=True)
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tmp = tempfile.mkdtemp()
    prog = os.path.join(tmp, "guard_kinds")
    subprocess.run(["cc", "-O1", "-fno-inline", "-U_FORTIFY_SOURCE", "-fno-builtin", "-DHAKMEM_TEST_OVERRIDE=1",
                    "-I" + os.path.join(root, "include"), os.path.join(root, "tests", "guard_kinds.c"), "-o", prog],
                   check=True)
    arms = [("glibc", None, {}), ("hakmem", a.hakmem, {}), ("hakmem, HAKMEM_GUARD_SAMPLE=1", a.hakmem,
            {"HAKMEM_GUARD_SAMPLE": "1"}), ("jemalloc", LIB + "libjemalloc.so.2", {}),
            ("mimalloc", LIB + "libmimalloc.so.2", {}), ("tcmalloc", LIB + "libtcmalloc_minimal.so.4", {})]
    table = {}
    for kind in KINDS:
        for name, lib, extra in arms:
            caught = []
            for n in SIZES:
                env = dict(os.environ)
                env.pop("LD_PRELOAD", None)
                env.update(extra)
                if lib:
                    env["LD_PRELOAD"] = os.path.abspath(lib)
                p = subprocess.run([prog, kind, str(n)], env=env, capture_output=True, text=True, timeout=60,
                                   preexec_fn=no_core)
                if p.returncode != 0 and any(m in p.stderr for m in MESSAGES):
                    caught.append(n)
            table[(kind, name)] = ("all" if len(caught) == len(SIZES) else
                                   ", ".join(f"{n // 1024} KiB" if n >= 1024 else f"{n} B" for n in caught) or "-")
        print(f"{kind}: done", file=sys.stderr)
    print("| bug (at 8 B, 4 KiB, 256 KiB) | " + " | ".join(n for n, _, _ in arms) + " |")
    print("|---|" + "---|" * len(arms))
    for kind in KINDS:
        print(f"| {kind} | " + " | ".join(table[(kind, n)] for n, _, _ in arms) + " |")


if __name__ == "__main__":
    main()
