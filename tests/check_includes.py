# Enforces contract D: a source file includes only headers beside it or other boxes' public headers (*/include/*.h).

import os
import re
import sys
import tempfile

ROOTS = ("boxes", "policies", "backends", "include")
SOURCE_EXT = (".c", ".h", ".cc", ".cpp", ".inc", ".S")
INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def collect(srcroot):
    """Returns (sources, public, private): sources to scan, and every header
    in the tree split into public (parent dir named `include`) and private."""
    sources, public, private = [], [], []
    for root in ROOTS:
        top = os.path.join(srcroot, root)
        if not os.path.isdir(top):
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                path = os.path.join(dirpath, f)
                if f.endswith(SOURCE_EXT):
                    sources.append(path)
                if f.endswith((".h", ".inc")):
                    if os.path.basename(dirpath) == "include":
                        public.append(path)
                    else:
                        private.append(path)
    return sources, public, private


def matches(header_path, name):
    """True when `#include name` could resolve to header_path via some -I."""
    header_path = header_path.replace(os.sep, "/")
    return header_path == name or header_path.endswith("/" + name)


def check(srcroot):
    """Returns (number of files scanned, list of violation strings)."""
    sources, public, private = collect(srcroot)
    violations = []
    for src in sorted(sources):
        rel = os.path.relpath(src, srcroot)
        here = os.path.dirname(src)
        with open(src, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
        for lineno, line in enumerate(lines, 1):
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            kind, name = m.group(1), m.group(2).strip()
            where = f"{rel}:{lineno}: #include {kind}{name}{'>' if kind == '<' else kind}"
            parts = name.replace("\\", "/").split("/")
            if ".." in parts or name.startswith("/"):
                violations.append(f"{where}: relative or absolute path escapes the box")
                continue
            same_dir = "/" not in name and os.path.isfile(os.path.join(here, name))
            is_public = any(matches(p, name) for p in public)
            if kind == '"':
                if same_dir or is_public:
                    continue
                owners = [os.path.relpath(p, srcroot) for p in private if matches(p, name)]
                if owners:
                    violations.append(f"{where}: private header of another directory ({', '.join(owners)})")
                elif "/" in name:
                    # Reaching into a subdirectory (e.g. "src/x.h") is a
                    # private path even when the file is generated.
                    violations.append(f"{where}: quoted include with a path that is not a public header")
                # A bare name found nowhere in the tree is a generated header
                # (configure_file in the build dir); it cannot be another
                # box's private file.
            else:
                # Angle includes are system headers unless they name a file
                # in the tree, in which case the same rule applies.
                if same_dir or is_public:
                    continue
                owners = [os.path.relpath(p, srcroot) for p in private if matches(p, name)]
                if owners:
                    violations.append(f"{where}: private header of another directory ({', '.join(owners)})")
    return len(sources), violations


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def self_test():
    """The checker must accept a clean tree and report each kind of crossing."""
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp, "include/hakmem.h", "#include <stddef.h>\n")
        write(tmp, "boxes/tls/include/hak_tls.h", '#include "hakmem.h"\n')
        write(tmp, "boxes/tls/src/tls_priv.h", "#pragma once\n")
        write(tmp, "boxes/tls/src/tls.c", '#include "tls_priv.h"\n#include "hak_tls.h"\n#include <stdint.h>\n')
        write(tmp, "boxes/refill/src/refill.c", '#include "hak_tls.h"\n# include "hakmem.h"\n#include "hak_config.h"\n')
        write(tmp, "policies/include/hak_policy.h", "#pragma once\n")
        write(tmp, "backends/include/hak_backend.h", "#pragma once\n")
        n, v = check(tmp)
        if v:
            return [f"clean tree reported violations: {v}"]
        if n != 7:
            return [f"clean tree: expected 7 files scanned, got {n}"]

        write(tmp, "boxes/refill/src/bad1.c", '#include "../../tls/src/tls_priv.h"\n')
        write(tmp, "boxes/refill/src/bad2.c", '#include "tls_priv.h"\n')
        write(tmp, "policies/ace/bad3.c", '#include "src/tls_priv.h"\n')
        write(tmp, "backends/mmap/bad4.c", '#include <tls_priv.h>\n')
        write(tmp, "backends/mmap/bad5.c", '#include "../include/hak_backend.h"\n')
        n, v = check(tmp)
        errors = []
        for bad in ("bad1.c", "bad2.c", "bad3.c", "bad4.c", "bad5.c"):
            if not any(bad in x for x in v):
                errors.append(f"self-test: violation in {bad} not reported")
        if len(v) != 5:
            errors.append(f"self-test: expected 5 violations, got {len(v)}: {v}")
        return errors


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--self-test":
        errors = self_test()
        for e in errors:
            print(e)
        print("include checker self-test:", "FAILED" if errors else "ok")
        return 1 if errors else 0
    if len(sys.argv) != 2:
        print("usage: check_includes.py SOURCE_ROOT | --self-test", file=sys.stderr)
        return 2
    errors = self_test()
    if errors:
        for e in errors:
            print(e)
        return 1
    n, violations = check(sys.argv[1])
    if n == 0:
        print("no sources found under", ", ".join(ROOTS), "- nothing was checked")
        return 1
    for v in violations:
        print(v)
    print(f"contract D: {n} files scanned, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
