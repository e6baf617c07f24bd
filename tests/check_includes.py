# Enforces the floors (docs/design.md) and contract D on includes: a part includes only its own headers and the public headers of the parts it may use; never another part's private header or a path with "..".

import os
import re
import sys
import tempfile

import floors

ROOTS = ("base", "boxes", "policies", "backends", "include")
SOURCE_EXT = (".c", ".h", ".cc", ".cpp", ".inc", ".S")
# Comments may stand between '#' and 'include'; an include of a macro hides
# what it names, so it is reported (MACRO_INCLUDE_RE) rather than trusted.
INCLUDE_RE = re.compile(r'^\s*#\s*(?:/\*.*?\*/\s*)*include\s*([<"])([^>"]+)[>"]')
MACRO_INCLUDE_RE = re.compile(r'^\s*#\s*(?:/\*.*?\*/\s*)*include\s*[A-Za-z_]')


def collect(srcroot):
    """Returns (sources, headers): sources to scan and every header in the
    tree, as paths relative to srcroot."""
    sources, headers = [], []
    for root in ROOTS:
        top = os.path.join(srcroot, root)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                rel = os.path.relpath(os.path.join(dirpath, f), srcroot).replace(os.sep, "/")
                if f.endswith(SOURCE_EXT):
                    sources.append(rel)
                if f.endswith((".h", ".inc")):
                    headers.append(rel)
    return sources, headers


def is_public(header):
    return os.path.basename(os.path.dirname(header)) == "include"


def check(srcroot, parts):
    """Returns (files scanned, violations, edges {part: set of parts it includes})."""
    sources, headers = collect(srcroot)
    violations, edges = [], {}
    for src in sorted(sources):
        part = floors.part_of(parts, src)
        if part is None:
            violations.append(f"{src}: in no part of the floors table")
            continue
        with open(os.path.join(srcroot, src), encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()
        for lineno, line in enumerate(lines, 1):
            if MACRO_INCLUDE_RE.match(line):
                violations.append(f"{src}:{lineno}: {line.strip()} ({part.name}): an include through a macro")
                continue
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            kind, name = m.group(1), m.group(2).strip()
            where = f"{src}:{lineno}: #include {kind}{name}{'>' if kind == '<' else kind} ({part.name})"
            parts_of_name = name.replace("\\", "/").split("/")
            if ".." in parts_of_name or name.startswith("/"):
                violations.append(f"{where}: a relative or absolute path escapes the part")
                continue
            beside = os.path.join(os.path.dirname(src), name).replace(os.sep, "/")
            found = [beside] if beside in headers else [h for h in headers if h == name or h.endswith("/" + name)]
            if not found:
                if kind == '"' and "/" in name:
                    violations.append(f"{where}: a quoted path that is no header of the tree")
                continue  # a system header, or a generated one (no part's file)
            owners = {floors.part_of(parts, h).name for h in found if floors.part_of(parts, h)}
            if part.name in owners:
                continue  # its own header: public or private, a part's files are one
            mine = [h for h in found if is_public(h)]
            if not mine:
                violations.append(f"{where}: private header of another part ({', '.join(found)})")
                continue
            owner = floors.part_of(parts, mine[0]).name
            edges.setdefault(part.name, set()).add(owner)
            if not floors.may_use(parts, part.name, owner):
                way = "up" if parts[owner].floor > part.floor else "sideways" if parts[owner].floor == part.floor else "down, but not in its uses"
                violations.append(f"{where}: {owner}'s header points {way} (floor {part.floor} -> {parts[owner].floor})")
    return len(sources), violations, edges


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


SELF_TABLE = """<!-- floors -->
| floor | part | directories | owns | uses |
|---|---|---|---|---|
| 4 | front | boxes/front include | api | tls refill base |
| 3 | tls | boxes/tls | box 1 | refill base |
| 2 | refill | boxes/refill | box 2 | base |
| 2 | backend | backends | os | base |
| 1 | base | base | bottom | |
<!-- /floors -->
"""


def self_test():
    """The checker must accept a clean tree and report each kind of crossing."""
    parts = floors.parse(SELF_TABLE)
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp, "include/hakmem.h", "#include <stddef.h>\n")
        write(tmp, "base/include/hak_base.h", "#include <stdint.h>\n")
        write(tmp, "boxes/tls/include/hak_tls.h", '#include "hak_base.h"\n')
        write(tmp, "boxes/tls/src/tls_priv.h", "#pragma once\n")
        write(tmp, "boxes/tls/src/tls.c", '#include "tls_priv.h"\n#include "hak_tls.h"\n#include "hak_refill.h"\n')
        write(tmp, "boxes/refill/include/hak_refill.h", '#include "hak_base.h"\n')
        write(tmp, "boxes/refill/src/refill.c", '# include "hak_refill.h"\n#include "hak_config.h"\n')
        write(tmp, "boxes/front/src/api.c", '#include "hakmem.h"\n#include "hak_tls.h"\n')
        write(tmp, "backends/include/hak_backend.h", "#pragma once\n")
        write(tmp, "backends/common/shared.h", "#pragma once\n")
        write(tmp, "backends/mmap/os.c", '#include "shared.h"\n#include "hak_backend.h"\n')
        n, v, _ = check(tmp, parts)
        if v:
            return [f"clean tree reported violations: {v}"]
        if n != 11:
            return [f"clean tree: expected 11 files scanned, got {n}"]

        bad = {
            "boxes/refill/src/bad_up.c": '#include "hak_tls.h"\n',             # refill -> tls: up
            "backends/mmap/bad_side.c": '#include "hak_refill.h"\n',           # backend -> refill: sideways
            "boxes/tls/src/bad_skip.c": '#include "hak_backend.h"\n',          # tls -> backend: down, not in uses
            "boxes/front/src/bad_priv.c": '#include "tls_priv.h"\n',          # another part's private header
            "boxes/refill/src/bad_rel.c": '#include "../../tls/src/tls_priv.h"\n',
            "boxes/front/src/bad_path.c": '#include "src/tls_priv.h"\n',
            "base/src/bad_base.c": '#include <hak_tls.h>\n',                   # angle include of a tree header
            "boxes/stray/x.c": "int x;\n",                                      # in no part
            "boxes/tls/src/bad_comment.c": '#/**/include "../../front/src/x.h"\n',
            "boxes/tls/src/bad_macro.c": '#define P "hak_refill.h"\n#include P\n',
        }
        for rel, text in bad.items():
            write(tmp, rel, text)
        n, v, _ = check(tmp, parts)
        errors = []
        for rel in bad:
            if not any(rel in x for x in v):
                errors.append(f"self-test: violation in {rel} not reported")
        if len(v) != len(bad):
            errors.append(f"self-test: expected {len(bad)} violations, got {len(v)}: {v}")
        return errors


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--self-test":
        return floors.report_self_test("include checker self-test", self_test())
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--graph"):
        print("usage: check_includes.py SOURCE_ROOT [--graph] | --self-test", file=sys.stderr)
        return 2
    errors = self_test()
    if errors:
        for e in errors:
            print(e)
        return 1
    try:
        parts = floors.load(sys.argv[1])
    except (OSError, ValueError) as e:
        print(f"floors table: {e}")
        return 1
    n, violations, edges = check(sys.argv[1], parts)
    if n == 0:
        print("no sources found under", ", ".join(ROOTS), "- nothing was checked")
        return 1
    for v in violations:
        print(v)
    if len(sys.argv) == 3:
        print(floors.table(parts, edges))
    print(f"floors (includes): {n} files scanned, {len(violations)} violations")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
