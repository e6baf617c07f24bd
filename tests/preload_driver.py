# Runs real programs plainly and with LD_PRELOAD=libhakmem.so and fails unless stdout and exit codes match byte for byte.

import argparse
import os
import shutil
import subprocess
import sys

SKIP = 77  # meson's "skipped" exit code

PIPELINE = r"""
set -eo pipefail
awk 'BEGIN { for (i = 1; i <= 300000; i++) printf "%d line %d %s\n", (i * 7919) % 100003, i, substr("abcdefghijklmnopqrstuvwxyz", i % 26 + 1) }' \
  | LC_ALL=C sort -S 2M --parallel=2 \
  | gzip -c \
  | gunzip -c \
  | sha256sum
"""

# Under preload, malloc resolves to hakmem's and hak_malloc_usable_size exists;
# it aborts on a pointer hakmem does not own, so True proves the routing.
PROBE = r"""
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
usable = libc.hak_malloc_usable_size
usable.restype = ctypes.c_size_t
usable.argtypes = [ctypes.c_void_p]
p = libc.malloc(100)
print(usable(p) >= 100)
"""


def run(cmd, env, stdin_data=None, timeout=120):
    return subprocess.run(cmd, env=env, input=stdin_data, capture_output=True, timeout=timeout)


def compare(name, cmd, so, stdin_data=None, extra_env=None):
    base = dict(os.environ)
    base.pop("LD_PRELOAD", None)
    base.update(extra_env or {})
    pre = dict(base)
    pre["LD_PRELOAD"] = so
    plain = run(cmd, base, stdin_data)
    loaded = run(cmd, pre, stdin_data)
    ok = True
    err = loaded.stderr.decode(errors="replace")
    if "cannot be preloaded" in err or "hakmem:" in err:
        print(f"{name}: preloaded run reported on stderr:\n{err}")
        ok = False
    if plain.returncode != loaded.returncode:
        print(f"{name}: exit code {plain.returncode} plain vs {loaded.returncode} preloaded")
        ok = False
    if plain.stdout != loaded.stdout:
        print(f"{name}: stdout differs ({len(plain.stdout)} vs {len(loaded.stdout)} bytes)")
        print("--- plain (head) ---\n" + plain.stdout[:2000].decode(errors="replace"))
        print("--- preloaded (head) ---\n" + loaded.stdout[:2000].decode(errors="replace"))
        ok = False
    if not plain.stdout:
        print(f"{name}: the plain run printed nothing, so the comparison would prove nothing")
        ok = False
    if plain.returncode != 0:
        print(f"{name}: plain run failed ({plain.returncode}):\n" + plain.stderr.decode(errors="replace")[-2000:])
        ok = False
    if not ok and err:
        print(f"--- preloaded stderr (tail) ---\n{err[-2000:]}")
    print(f"{name}: {'same output' if ok else 'MISMATCH'} ({len(plain.stdout)} bytes of stdout)")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so", required=True, help="path to libhakmem.so")
    ap.add_argument("case", choices=["probe", "python", "cxx", "pipeline", "sqlite", "compare"])
    ap.add_argument("rest", nargs="*", help="case arguments")
    a = ap.parse_args()
    so = os.path.abspath(a.so)
    if not os.path.exists(so):
        print(f"{so} does not exist")
        return 1
    py = sys.executable or "python3"

    if a.case == "probe":
        env = dict(os.environ, LD_PRELOAD=so)
        r = run([py, "-c", PROBE], env)
        out = r.stdout.decode().strip()
        print(f"probe: {out!r} (exit {r.returncode}) {r.stderr.decode(errors='replace')[-1000:]}")
        return 0 if r.returncode == 0 and out == "True" else 1
    if a.case == "python":
        ok = compare("python", [py, a.rest[0]], so, extra_env={"PYTHONHASHSEED": "0"})
    elif a.case == "cxx":
        ok = compare("cxx", [a.rest[0]], so)
    elif a.case == "pipeline":
        bash = shutil.which("bash")
        # LD_PRELOAD is inherited by every process bash starts, so each stage
        # of the pipeline runs on hakmem.
        ok = compare("pipeline", [bash, "-c", PIPELINE], so, extra_env={"LC_ALL": "C"})
    elif a.case == "sqlite":
        sqlite = shutil.which("sqlite3")
        if not sqlite:
            print("sqlite3 not installed: skipped")
            return SKIP
        with open(a.rest[0], "rb") as fh:
            script = fh.read()
        ok = compare("sqlite", [sqlite, ":memory:"], so, stdin_data=script)
    else:
        # Two builds of one program (e.g. linked with hakmem vs not) must agree.
        r1 = run([a.rest[0]], dict(os.environ))
        r2 = run([a.rest[1]], dict(os.environ))
        ok = r1.returncode == 0 and r2.returncode == 0 and r1.stdout == r2.stdout and r1.stdout
        print(f"compare: {r1.stdout!r} (exit {r1.returncode}) vs {r2.stdout!r} (exit {r2.returncode})")
        if r1.stderr or r2.stderr:
            print((r1.stderr + r2.stderr).decode(errors="replace")[-2000:])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
