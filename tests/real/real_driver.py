# Runs real programs nobody wrote for hakmem (Python's regression tests,
# sqlite3, git, gcc) plainly and under LD_PRELOAD=libhakmem.so on generated
# workloads, and fails unless their results agree.
#
# Unlike tests/preload_driver.py, which compares raw stdout, each case here
# compares a normalised result (per-module test outcomes, query output, object
# hashes), because raw output carries timings and temporary paths. Each case
# also proves that the program itself mapped libhakmem.so: the check reads
# /proc/<pid>/maps of the real program's own process (in-process for Python,
# from a child it spawns for sqlite3 and git, through cc1 preprocessing its own
# /proc/self/maps for gcc). A preloaded run whose stderr has a "hakmem:" line,
# or whose exit is a signal, fails.
#
# Usage: real_driver.py --so build/libhakmem.so {pytests,sqlite,git,gcc}
# Exit 77 (meson's "skipped") only when the program is not installed.

import argparse
import collections
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

SKIP = 77

# Debian's interpreter: its libpython3.11-testsuite holds the tests. Not the
# python3 that may come first on PATH (e.g. pyenv's), which has no such tests.
SYSTEM_PYTHON = "/usr/bin/python3.11"

# Core-type modules that each run in a few seconds (measured ~25 s in all).
PY_MODULES = [
    "test_dict", "test_list", "test_set", "test_tuple", "test_unicode",
    "test_bytes", "test_int", "test_long", "test_float", "test_json",
    "test_re", "test_collections", "test_itertools", "test_functools",
    "test_heapq", "test_bisect", "test_array", "test_struct", "test_deque",
    "test_sort",
]

# Runs regrtest in this very process after recording whether libhakmem.so is
# mapped in it, so the check is about the interpreter that runs the tests.
PY_WRAPPER = r"""
import sys
with open('/proc/self/maps') as f:
    mapped = 'libhakmem' in f.read()
with open(sys.argv[1], 'w') as f:
    f.write('mapped' if mapped else 'absent')
del sys.argv[1]
from test.libregrtest.main import main
main()
"""


class Case:
    """One real-program comparison: collects mismatches and the verdict."""

    def __init__(self, name, so):
        self.name = name
        self.so = so
        self.problems = []
        self.tmp = tempfile.mkdtemp(prefix=f"hakmem-real-{name}-")

    def env(self, preload, extra=None):
        e = {k: v for k, v in os.environ.items()
             if k != "LD_PRELOAD" and not k.startswith("HAKMEM_")
             and not k.startswith("PYTHON") and not k.startswith("GIT_")}
        e.update({"LC_ALL": "C", "TZ": "UTC"})
        e.update(extra or {})
        if preload:
            e["LD_PRELOAD"] = self.so
        return e

    def fail(self, msg):
        self.problems.append(msg)
        print(f"{self.name}: {msg}")

    def run(self, cmd, preload, cwd, extra_env=None, stdin_data=None, timeout=300, check=True,
            watch=None):
        """Runs cmd; with watch (a dict), polls the maps of its descendants
        while it runs and records, per command name, whether libhakmem.so was
        mapped in it."""
        t0 = time.monotonic()
        if watch is None:
            try:
                r = subprocess.run(cmd, cwd=cwd, env=self.env(preload, extra_env), input=stdin_data,
                                   capture_output=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                self.fail(f"{'preloaded' if preload else 'plain'} {cmd[:3]} timed out after {timeout} s")
                raise
        else:
            with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
                p = subprocess.Popen(cmd, cwd=cwd, env=self.env(preload, extra_env), stdin=subprocess.DEVNULL,
                                     stdout=fo, stderr=fe)
                while p.poll() is None:
                    for pid in [p.pid] + descendants(p.pid):
                        seen = maps_of(pid)
                        if seen is not None:
                            watch[seen[0]] = watch.get(seen[0], False) or seen[1]
                    if time.monotonic() - t0 > timeout:
                        p.kill()
                        self.fail(f"{cmd[:3]} timed out after {timeout} s")
                    time.sleep(0.02)
                fo.seek(0)
                fe.seek(0)
                r = subprocess.CompletedProcess(cmd, p.returncode, fo.read(), fe.read())
        dt = time.monotonic() - t0
        tag = "preloaded" if preload else "plain"
        err = r.stderr.decode(errors="replace")
        if preload:
            bad = [l for l in err.splitlines() if "hakmem:" in l or "cannot be preloaded" in l]
            if bad:
                self.fail(f"preloaded {' '.join(cmd[:3])} wrote on stderr: " + " | ".join(bad[:5]))
        if r.returncode < 0:
            self.fail(f"{tag} {' '.join(cmd[:3])} killed by signal {-r.returncode}\n{err[-3000:]}")
        elif check and r.returncode != 0:
            self.fail(f"{tag} {' '.join(cmd[:3])} exited {r.returncode}\n{err[-3000:]}")
        return r, dt

    def same(self, what, plain, loaded):
        if plain != loaded:
            self.fail(f"{what} differs")
            show = lambda b: (b if isinstance(b, str) else b.decode(errors="replace"))[:1500]
            print(f"--- plain {what} (head) ---\n{show(plain)}\n--- preloaded {what} (head) ---\n{show(loaded)}")
            return False
        return True

    def finish(self, summary):
        shutil.rmtree(self.tmp, ignore_errors=True)
        verdict = "same results" if not self.problems else f"MISMATCH ({len(self.problems)} problems)"
        print(f"{self.name}: {verdict}; {summary}")
        return 0 if not self.problems else 1


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            pass
    return out


def maps_of(pid):
    """(command name, libhakmem.so mapped?) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
        # A process caught between fork and exec still shows its parent's
        # image: name it by what it runs.
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None
    return f"{comm}({exe})" if exe != comm else comm, "libhakmem" in maps


def sha(b):
    return hashlib.sha256(b).hexdigest()


# --- Python's regression tests ------------------------------------------------

def junit_results(path, modules):
    """{module: {testcase: outcome}} from regrtest's --junit-xml output.

    regrtest writes one <testsuite> per module, in the order run, without the
    module's name (doctests' names do not carry it either), so the suites are
    matched with the modules by position when their numbers agree."""
    per = collections.defaultdict(dict)
    suites = ET.parse(path).getroot().findall("testsuite")
    for i, suite in enumerate(suites):
        module = modules[i] if len(suites) == len(modules) else f"suite{i}"
        for tc in suite.iter("testcase"):
            kinds = [ch.tag for ch in tc if ch.tag in ("failure", "error", "skipped")]
            per[module][tc.get("name", "")] = kinds[0] if kinds else "passed"
    return per


def regrtest_summary(out):
    """Module names per regrtest verdict ('OK', 'failed', ...), from stdout."""
    verdicts = {}
    text = out.decode(errors="replace")
    # "20 tests OK." / "2 tests failed:\n    test_a test_b" / "1 test skipped:" ...
    for m in re.finditer(r"^(?:All )?(\d+) tests? ([a-z ]+?)[.:]\s*\n((?:    .*\n)*)", text, re.M):
        verdicts[m.group(2)] = int(m.group(1)), sorted(m.group(3).split())
    res = re.search(r"^Tests result: (.*)$", text, re.M)
    return verdicts, res.group(1) if res else None


def case_pytests(so, modules):
    c = Case("pytests", so)
    if not os.path.exists(SYSTEM_PYTHON):
        print(f"{SYSTEM_PYTHON} not installed (Debian package python3.11): skipped")
        return SKIP
    have = subprocess.run([SYSTEM_PYTHON, "-c", "import test.test_dict"], capture_output=True)
    if have.returncode != 0:
        print("Python's test package missing (Debian package libpython3.11-testsuite): skipped")
        return SKIP
    results = {}
    for preload in (False, True):
        tag = "preloaded" if preload else "plain"
        d = os.path.join(c.tmp, tag)
        os.mkdir(d)
        probe = os.path.join(d, "probe")
        xml = os.path.join(d, "junit.xml")
        # Serial, in-process, fixed hash seed, no random order: the same tests
        # run in the same order both times.
        cmd = [SYSTEM_PYTHON, "-E", "-c", PY_WRAPPER, probe, "--junit-xml", xml, *modules]
        r, dt = c.run(cmd, preload, d, extra_env={"TMPDIR": d, "PYTHONHASHSEED": "0"}, timeout=600,
                      check=False)
        mapped = open(probe).read() if os.path.exists(probe) else "no probe"
        if mapped != ("mapped" if preload else "absent"):
            c.fail(f"{tag} run: libhakmem.so {mapped} in the interpreter's /proc/self/maps")
        per = junit_results(xml, modules) if os.path.exists(xml) else {}
        if not per:
            c.fail(f"{tag} run wrote no junit results (exit {r.returncode})\n"
                   + r.stdout.decode(errors="replace")[-3000:] + r.stderr.decode(errors="replace")[-3000:])
        verdicts, overall = regrtest_summary(r.stdout)
        results[tag] = (r.returncode, verdicts, overall, per, dt)
        counts = {m: collections.Counter(v.values()) for m, v in per.items()}
        total = sum(sum(x.values()) for x in counts.values())
        print(f"{tag}: exit {r.returncode}, {overall}, {len(per)} modules, {total} test cases, {dt:.1f} s")
        if r.returncode != 0:
            print(r.stdout.decode(errors="replace")[-3000:])
    (prc, pver, pov, pper, pdt), (lrc, lver, lov, lper, ldt) = results["plain"], results["preloaded"]
    if prc != 0:
        c.fail(f"plain run did not pass (exit {prc}, {pov}): the comparison needs a clean baseline")
    c.same("exit code", str(prc), str(lrc))
    c.same("regrtest verdicts", repr(pver), repr(lver))
    print(f"{'module':<20} {'plain':>30} {'preloaded':>30}")
    for m in sorted(set(pper) | set(lper)):
        pc = dict(collections.Counter(pper.get(m, {}).values()))
        lc = dict(collections.Counter(lper.get(m, {}).values()))
        fmt = lambda d: " ".join(f"{k}={d[k]}" for k in sorted(d)) or "missing"
        print(f"{m:<20} {fmt(pc):>30} {fmt(lc):>30}")
        if pper.get(m) != lper.get(m):
            diff = sorted(n for n in set(pper.get(m, {})) | set(lper.get(m, {}))
                          if pper.get(m, {}).get(n) != lper.get(m, {}).get(n))
            c.fail(f"{m}: per-test outcomes differ: " + ", ".join(
                f"{n} {pper.get(m, {}).get(n)}->{lper.get(m, {}).get(n)}" for n in diff[:10]))
    if set(pper) != set(modules) and prc == 0:
        c.fail(f"modules in the results {sorted(pper)} are not those asked for")
    total = sum(len(v) for v in lper.values())
    return c.finish(f"{len(lper)} modules, {total} test cases; plain {pdt:.1f} s, preloaded {ldt:.1f} s")


# --- sqlite3 ------------------------------------------------------------------

def sqlite_script():
    """A deterministic insert/update/select workload with rows of many sizes."""
    rnd = random.Random(8)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(1, 12)))
             for _ in range(2000)]
    out = [
        # Writes a file the driver reads: is libhakmem.so mapped in this
        # sqlite3 process ($PPID of the shell that .shell starts)?
        ".shell grep -c libhakmem /proc/$PPID/maps > probe.txt",
        "PRAGMA journal_mode=WAL;", "PRAGMA cache_size=-32768;",
        "CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, age INT, bio TEXT);",
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, person INT REFERENCES person(id), item TEXT,"
        " qty INT, price REAL, note BLOB);",
        "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;",
    ]
    out.append("BEGIN;")
    for i in range(1, 20001):
        bio = " ".join(rnd.choice(words) for _ in range(rnd.choice([0, 1, 3, 10, 40, 200])))
        out.append(f"INSERT INTO person VALUES({i}, '{rnd.choice(words)} {rnd.choice(words)}', "
                   f"'{rnd.choice(words[:50])}', {rnd.randint(1, 99)}, '{bio}');")
    for i in range(1, 40001):
        out.append(f"INSERT INTO orders VALUES({i}, {rnd.randint(1, 20000)}, '{rnd.choice(words)}', "
                   f"{rnd.randint(1, 9)}, {rnd.randint(1, 99999) / 100}, "
                   f"zeroblob({rnd.choice([0, 16, 100, 1000, 5000])}));")
    out.append("COMMIT;")
    out += [
        "INSERT INTO kv WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 30000)"
        " SELECT printf('key%06d', i), printf('%.*c', i % 700, 'x') FROM n;",
        "CREATE INDEX person_city ON person(city, age);",
        "CREATE INDEX orders_person ON orders(person);",
        "UPDATE person SET bio = bio || ' ' || name WHERE id % 7 = 0;",
        "DELETE FROM orders WHERE qty = 5 AND price > 500;",
        "UPDATE kv SET v = upper(v) || k WHERE k LIKE 'key%3';",
        ".headers on",
        "SELECT count(*), sum(length(bio)), max(length(bio)) FROM person;",
        "SELECT city, count(*), avg(age), group_concat(id, ',') FILTER (WHERE id < 200) FROM person"
        " GROUP BY city ORDER BY city;",
        "SELECT p.city, count(o.id), round(sum(o.qty * o.price), 2), sum(length(o.note)) FROM person p"
        " JOIN orders o ON o.person = p.id GROUP BY p.city ORDER BY 3 DESC;",
        "SELECT id, name, rank() OVER (PARTITION BY city ORDER BY age DESC, id) AS r FROM person"
        " WHERE id % 97 = 0 ORDER BY city, r;",
        "SELECT item, count(*) AS n, group_concat(DISTINCT person) FROM orders GROUP BY item"
        " HAVING n > 25 ORDER BY n DESC, item LIMIT 40;",
        "SELECT k, length(v), substr(v, 1, 20) FROM kv WHERE k LIKE 'key%3' ORDER BY length(v) DESC LIMIT 50;",
        "SELECT json_group_array(json_object('id', id, 'name', name)) FROM person WHERE id % 500 = 1;",
        "SELECT sum(length(group_concat_all)) FROM (SELECT group_concat(bio) AS group_concat_all FROM person"
        " GROUP BY age);",
        "SELECT a.id, b.id FROM person a JOIN person b ON a.name = b.name AND a.id < b.id ORDER BY 1, 2 LIMIT 100;",
        "VACUUM;",
        "PRAGMA integrity_check;",
        "PRAGMA foreign_key_check;",
        "SELECT count(*) FROM person; SELECT count(*) FROM orders; SELECT count(*) FROM kv;",
    ]
    return ("\n".join(out) + "\n").encode()


def case_sqlite(so):
    c = Case("sqlite", so)
    exe = shutil.which("sqlite3")
    if not exe:
        print("sqlite3 not installed (Debian package sqlite3): skipped")
        return SKIP
    script = sqlite_script()
    outs, times = {}, {}
    for preload in (False, True):
        tag = "preloaded" if preload else "plain"
        d = os.path.join(c.tmp, tag)
        os.mkdir(d)
        r, dt = c.run([exe, "-bail", "test.db"], preload, d, stdin_data=script)
        # A second process re-opens the file: what the first wrote must read back.
        r2, dt2 = c.run([exe, "test.db", "PRAGMA integrity_check;",
                         "SELECT count(*), sum(length(bio)) FROM person;"], preload, d)
        probe = open(os.path.join(d, "probe.txt")).read().strip() if os.path.exists(
            os.path.join(d, "probe.txt")) else "no probe"
        if (probe not in ("", "0", "no probe")) != preload:
            c.fail(f"{tag}: libhakmem lines in sqlite3's maps: {probe}")
        outs[tag] = r.stdout + b"--- reopened ---\n" + r2.stdout
        times[tag] = dt + dt2
        print(f"{tag}: {len(r.stdout)} bytes of query output, {dt + dt2:.1f} s, sha256 {sha(outs[tag])[:16]}")
    if b"integrity_check\nok\n" not in outs["plain"]:
        c.fail("plain integrity_check did not say ok")
    c.same("query output", outs["plain"], outs["preloaded"])
    return c.finish(f"{len(script)} bytes of SQL; plain {times['plain']:.1f} s, preloaded {times['preloaded']:.1f} s")


# --- git --------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Real Test", "GIT_AUTHOR_EMAIL": "real@example.invalid",
    "GIT_COMMITTER_NAME": "Real Test", "GIT_COMMITTER_EMAIL": "real@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0",
}

HOOK = "#!/bin/sh\ngrep -c libhakmem /proc/$PPID/maps >> \"$PROBE_FILE\" || true\n"


def gen_file(rnd, n):
    lines = []
    for i in range(n):
        lines.append(f"line {i} " + " ".join(f"w{rnd.randint(0, 500)}" for _ in range(rnd.randint(0, 14))))
    return "\n".join(lines) + "\n"


def case_git(so, commits):
    c = Case("git", so)
    exe = shutil.which("git")
    if not exe:
        print("git not installed (Debian package git): skipped")
        return SKIP
    results, times = {}, {}
    for preload in (False, True):
        tag = "preloaded" if preload else "plain"
        d = os.path.join(c.tmp, tag)
        repo = os.path.join(d, "repo")
        hooks = os.path.join(d, "hooks")
        os.makedirs(repo)
        os.makedirs(hooks)
        with open(os.path.join(hooks, "post-commit"), "w") as f:
            f.write(HOOK)
        os.chmod(os.path.join(hooks, "post-commit"), 0o755)
        probe = os.path.join(d, "probe")
        open(probe, "w").close()
        env = dict(GIT_ENV, HOME=d, PROBE_FILE=probe)
        out = []
        t0 = time.monotonic()

        def git(*args, stdin=None, when=None, keep=True):
            e = dict(env)
            if when is not None:
                e["GIT_AUTHOR_DATE"] = e["GIT_COMMITTER_DATE"] = f"@{1600000000 + when * 3600} +0000"
            r, _ = c.run([exe, *args], preload, repo, extra_env=e, stdin_data=stdin)
            if keep:
                out.append(f"$ git {' '.join(args)}\n".encode() + r.stdout)
            return r.stdout

        git("init", "-q", "-b", "main")
        for k, v in [("core.hooksPath", hooks), ("pack.threads", "1"), ("gc.auto", "0"),
                     ("core.autocrlf", "false"), ("user.useConfigOnly", "false")]:
            git("config", k, v, keep=False)
        rnd = random.Random(3)
        files = []
        for i in range(commits):
            # Add, edit, rename and delete files of assorted sizes.
            op = rnd.random()
            if op < 0.35 or len(files) < 5:
                name = f"dir{rnd.randint(0, 9)}/f{i}.txt"
                os.makedirs(os.path.join(repo, os.path.dirname(name)), exist_ok=True)
                with open(os.path.join(repo, name), "w") as f:
                    f.write(gen_file(rnd, rnd.choice([1, 10, 100, 1000, 3000])))
                files.append(name)
            for name in rnd.sample(files, min(len(files), rnd.randint(1, 4))):
                path = os.path.join(repo, name)
                with open(path) as f:
                    lines = f.read().splitlines()
                for _ in range(rnd.randint(1, 20)):
                    pos = rnd.randint(0, len(lines))
                    if lines and rnd.random() < 0.4:
                        del lines[min(pos, len(lines) - 1)]
                    else:
                        lines.insert(pos, f"edit {i} " + "x" * rnd.randint(0, 90))
                with open(path, "w") as f:
                    f.write("\n".join(lines) + "\n")
            if op > 0.93 and len(files) > 8:
                victim = files.pop(rnd.randrange(len(files)))
                git("rm", "-q", victim, keep=False)
            elif op > 0.88 and len(files) > 8:
                j = rnd.randrange(len(files))
                new = files[j].replace(".txt", f"-r{i}.txt")
                git("mv", files[j], new, keep=False)
                files[j] = new
            if i == commits // 2:
                git("branch", "side", keep=False)
            git("add", "-A", keep=False)
            git("commit", "-q", "-m", f"commit {i}\n\nbody of commit {i}\n", when=i, keep=False)
            if i % 25 == 0:
                git("tag", "-a", f"v{i}", "-m", f"release {i}", when=i, keep=False)
        # A side branch from the middle of history, touching only its own
        # directory, merged back.
        git("checkout", "-q", "side", keep=False)
        os.makedirs(os.path.join(repo, "side"), exist_ok=True)
        for i in range(15):
            with open(os.path.join(repo, "side", f"s{i % 6}.txt"), "a") as f:
                f.write(gen_file(rnd, rnd.choice([5, 50, 500])))
            git("add", "-A", keep=False)
            git("commit", "-q", "-m", f"side {i}", when=commits + i, keep=False)
        git("checkout", "-q", "main", keep=False)
        git("merge", "-q", "--no-edit", "-X", "ours", "side", "-m", "merge side", when=commits + 20)
        git("log", "--stat", "--format=%H %an %ad %s", "--date=iso", "--all")
        log_p = git("log", "-p", "--all", keep=False)
        out.append(f"log -p sha256 {sha(log_p)}\n".encode())
        git("log", "--graph", "--oneline", "--all", "--decorate")
        git("diff", "--stat", "v0", "HEAD")
        git("diff", "--numstat", "-M", "v25", "side", "--")
        git("blame", "--line-porcelain", files[0], keep=False)
        git("shortlog", "-sn", "--all")
        git("grep", "-c", "w42", "HEAD")
        git("gc", "-q", "--prune=now")
        git("repack", "-adf", "-q")
        git("count-objects", "-v")
        git("fsck", "--full", "--strict", "--no-dangling")
        git("rev-list", "--objects", "--all")
        for ref in ("HEAD", "side", "v25"):
            tar = git("archive", "--format=tar", ref, keep=False)
            out.append(f"archive {ref} sha256 {sha(tar)} ({len(tar)} bytes)\n".encode())
        git("verify-pack", "-s", *[os.path.join(".git/objects/pack", p) for p in
                                   sorted(os.listdir(os.path.join(repo, ".git/objects/pack")))
                                   if p.endswith(".idx")])
        times[tag] = time.monotonic() - t0
        marks = open(probe).read().split()
        loaded = [m for m in marks if m != "0"]
        if len(marks) < commits + 15:
            c.fail(f"{tag}: post-commit hook ran {len(marks)} times for {commits} commits")
        elif preload and len(loaded) != len(marks):
            c.fail(f"preloaded: libhakmem.so absent from git's maps in {len(marks) - len(loaded)} commits")
        elif not preload and loaded:
            c.fail("plain: libhakmem.so mapped in git without LD_PRELOAD")
        results[tag] = b"".join(out)
        print(f"{tag}: {commits} commits, {len(results[tag])} bytes of output, {times[tag]:.1f} s, "
              f"sha256 {sha(results[tag])[:16]}")
    if b"fsck" not in results["plain"]:
        c.fail("plain run did not get to fsck")
    c.same("git output", results["plain"], results["preloaded"])
    return c.finish(f"plain {times['plain']:.1f} s, preloaded {times['preloaded']:.1f} s")


# --- gcc ----------------------------------------------------------------------

def c_source(nfuncs):
    """A few thousand lines of C that gcc -O2 has real work with."""
    rnd = random.Random(5)
    out = ["#include <stdio.h>", "#include <string.h>", "#include <stdint.h>", ""]
    out.append("struct rec { uint32_t a, b; char name[24]; double w; };")
    out.append("static const char *const words[] = {" + ", ".join(
        f'"{"".join(rnd.choice("abcdefghij") for _ in range(rnd.randint(1, 10)))}"' for _ in range(200)) + "};")
    for i in range(nfuncs):
        kind = i % 4
        out.append(f"__attribute__((noinline)) static uint64_t f{i}(uint64_t x, struct rec *r)")
        out.append("{")
        out.append(f"    uint64_t acc = {rnd.randint(1, 1 << 30)}u;")
        if kind == 0:
            out.append(f"    for (int i = 0; i < {rnd.randint(3, 40)}; i++) {{")
            out.append(f"        acc = acc * {rnd.randint(3, 99)}u + (x >> (i & 7)) + r->a;")
            out.append(f"        if (acc & {1 << rnd.randint(0, 9)}u) acc ^= r->b;")
            out.append("    }")
        elif kind == 1:
            out.append("    switch (x % 16) {")
            for k in range(16):
                out.append(f"    case {k}: acc += {rnd.randint(1, 999)}u * x + {rnd.randint(0, 9)}u; break;")
            out.append("    }")
        elif kind == 2:
            out.append("    char buf[64];")
            out.append(f"    snprintf(buf, sizeof buf, \"%s-%u-%s\", words[x % 200], (unsigned)r->a, "
                       f"words[{rnd.randint(0, 199)}]);")
            out.append("    for (size_t i = 0; buf[i]; i++) acc = acc * 31u + (unsigned char)buf[i];")
            out.append("    memcpy(r->name, buf, sizeof r->name - 1);")
        else:
            out.append(f"    double d = (double)x / {rnd.randint(2, 50)}.0 + r->w;")
            out.append(f"    for (int i = 0; i < {rnd.randint(2, 12)}; i++) d = d * 0.5 + i;")
            out.append("    r->w = d;")
            out.append("    acc += (uint64_t)d;")
        if i > 0:
            out.append(f"    if ((x & 3u) == 1u) acc += f{rnd.randrange(i)}(x / 3u, r);")
        out.append("    r->a += (uint32_t)acc; r->b ^= (uint32_t)(acc >> 7);")
        out.append("    return acc;")
        out.append("}")
        out.append("")
    out.append("int main(void)")
    out.append("{")
    out.append("    struct rec r = { 1, 2, \"\", 0.25 };")
    out.append("    uint64_t total = 0;")
    for i in range(nfuncs):
        out.append(f"    total += f{i}({rnd.randint(0, 1 << 20)}u, &r);")
    out.append("    printf(\"%llu %u %u %.3f %s\\n\", (unsigned long long)total, r.a, r.b, r.w, r.name);")
    out.append("    return 0;")
    out.append("}")
    return "\n".join(out) + "\n"


def case_gcc(so, nfuncs):
    c = Case("gcc", so)
    exe = shutil.which("gcc")
    objdump = shutil.which("objdump")
    if not exe or not objdump:
        print("gcc or objdump not installed (Debian packages gcc, binutils): skipped")
        return SKIP
    src = c_source(nfuncs)
    res, times = {}, {}
    for preload in (False, True):
        tag = "preloaded" if preload else "plain"
        d = os.path.join(c.tmp, tag)
        os.mkdir(d)
        with open(os.path.join(d, "gen.c"), "w") as f:
            f.write(src)
        t0 = time.monotonic()
        flags = ["-O2", "-g", f"-fdebug-prefix-map={d}=.", "-Wall", "-Wno-unused-function"]
        # The driver watches the compile's processes: cc1, the compiler
        # proper, runs for seconds and must have libhakmem.so mapped.
        seen = {}
        c.run([exe, *flags, "-c", "gen.c", "-o", "gen.o"], preload, d, watch=seen)
        print(f"{tag}: processes seen during the compile (libhakmem mapped?): {seen}")
        if seen.get("cc1") is not preload:
            c.fail(f"{tag}: libhakmem.so mapped in cc1: {seen.get('cc1', 'cc1 not seen')}")
        c.run([exe, "-O2", "-fdump-tree-optimized", "-S", "gen.c", "-o", "gen.s"], preload, d)
        c.run([exe, "-O2", "gen.o", "-o", "gen"], preload, d)
        times[tag] = time.monotonic() - t0
        dis, _ = c.run([objdump, "-d", "--no-show-raw-insn", "gen.o"], False, d)
        run, _ = c.run(["./gen"], False, d)
        files = {}
        for name in ("gen.o", "gen.s", "gen.c.254t.optimized", "gen"):
            path = os.path.join(d, name)
            if not os.path.exists(path):
                cand = [p for p in os.listdir(d) if p.endswith(".optimized")]
                path = os.path.join(d, cand[0]) if cand else path
            files[name] = sha(open(path, "rb").read()) if os.path.exists(path) else "missing"
        res[tag] = (files, dis.stdout, run.stdout)
        print(f"{tag}: {src.count(chr(10))} lines compiled and linked in {times[tag]:.1f} s; "
              f"program printed {run.stdout.decode(errors='replace').strip()!r}")
    for name in res["plain"][0]:
        c.same(f"{name} sha256", res["plain"][0][name], res["preloaded"][0][name])
    c.same("objdump -d", res["plain"][1], res["preloaded"][1])
    c.same("program output", res["plain"][2], res["preloaded"][2])
    if not res["plain"][2]:
        c.fail("the compiled program printed nothing")
    return c.finish(f"plain {times['plain']:.1f} s, preloaded {times['preloaded']:.1f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--so", required=True, help="path to libhakmem.so")
    ap.add_argument("case", choices=["pytests", "sqlite", "git", "gcc"])
    ap.add_argument("--modules", help="comma-separated regrtest modules (pytests)")
    ap.add_argument("--commits", type=int, default=120, help="commits to make (git)")
    ap.add_argument("--funcs", type=int, default=300, help="functions to generate (gcc)")
    a = ap.parse_args()
    so = os.path.abspath(a.so)
    if not os.path.exists(so):
        print(f"{so} does not exist")
        return 1
    if a.case == "pytests":
        return case_pytests(so, a.modules.split(",") if a.modules else PY_MODULES)
    if a.case == "sqlite":
        return case_sqlite(so)
    if a.case == "git":
        return case_git(so, a.commits)
    return case_gcc(so, a.funcs)


if __name__ == "__main__":
    sys.exit(main())
