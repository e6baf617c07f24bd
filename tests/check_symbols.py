# Checks symbols: every global symbol of libhakmem.a carries the hk_/hak_ prefix or is a standard allocator name, libhakmem.so exports only hak_* and those names, and no part's static library calls a part its floor may not use (docs/design.md).

import subprocess
import sys

import floors

STANDARD = {
    "malloc", "free", "calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc",
    "memalign", "valloc", "pvalloc", "malloc_usable_size", "malloc_trim", "mallopt",
    "mallinfo", "mallinfo2", "malloc_stats", "malloc_info",
}
# Emitted by the toolchain into every shared object, not chosen by hakmem.
LINKER_DYNAMIC = {"_init", "_fini", "_edata", "_end", "__bss_start"}


def nm(args, path):
    out = subprocess.run(["nm"] + args + [path], check=True, capture_output=True, text=True).stdout
    syms = []
    for line in out.splitlines():
        parts = line.split()
        # "addr TYPE name" for defined symbols; archive member headers end with ':'.
        if len(parts) < 2 or line.endswith(":"):
            continue
        name, kind = parts[-1], parts[-2]
        syms.append((name.split("@")[0], kind))
    return syms


def layering(parts, defined, undefined):
    """defined/undefined: {part: set of hk_/hak_ names}. Returns (violations,
    edges): a call into a part outside the caller's uses is a violation."""
    violations, edges = [], {}
    for user in sorted(undefined):
        for name in sorted(undefined[user]):
            owners = sorted(p for p in defined if name in defined[p] and p != user)
            if not owners or name in defined.get(user, ()):
                continue  # defined in the part itself, or by nothing of hakmem
            for o in owners:
                edges.setdefault(user, set()).add(o)
            if not any(floors.may_use(parts, user, o) for o in owners):
                o = owners[0]
                way = ("up" if parts[o].floor > parts[user].floor else
                       "sideways" if parts[o].floor == parts[user].floor else "down, but not in its uses")
                violations.append(f"{user} (floor {parts[user].floor}) uses {name} of {o} "
                                  f"(floor {parts[o].floor}): {way}")
    return violations, edges


def self_test():
    """The layering judge must pass a clean set and catch an up and a sideways call."""
    parts = floors.parse("""<!-- floors -->
| floor | part | directories | owns | uses |
|---|---|---|---|---|
| 3 | tls | t | box 1 | refill base |
| 2 | refill | r | box 2 | base |
| 2 | backend | b | os | base |
| 1 | base | x | bottom | |
<!-- /floors -->""")
    defined = {"tls": {"hk_tls_refill"}, "refill": {"hk_refill_take"}, "backend": {"hk_os_reserve"},
               "base": {"hk_lock_slow"}}
    clean = {"tls": {"hk_refill_take", "hk_lock_slow"}, "refill": {"hk_lock_slow"}, "backend": set()}
    errors = []
    v, e = layering(parts, defined, clean)
    if v or e.get("tls") != {"refill", "base"}:
        errors.append(f"self-test: clean set judged {v} {e}")
    v, _ = layering(parts, defined, {"refill": {"hk_tls_refill", "hk_os_reserve"}, "tls": {"hk_os_reserve"}})
    for want in ("refill (floor 2) uses hk_tls_refill of tls (floor 3): up",
                 "refill (floor 2) uses hk_os_reserve of backend (floor 2): sideways",
                 "tls (floor 3) uses hk_os_reserve of backend (floor 2): down, but not in its uses"):
        if want not in v:
            errors.append(f"self-test: not reported: {want} (got {v})")
    return errors


def part_symbols(args):
    """PART=LIB arguments -> ({part: defined hk_ names}, {part: undefined hk_ names})."""
    defined, undefined = {}, {}
    for arg in args:
        part, lib = arg.split("=", 1)
        mine = lambda n: n.startswith(("hk_", "hak_"))
        defined[part] = {n for n, _ in nm(["-g", "--defined-only"], lib) if mine(n)}
        undefined[part] = {n for n, _ in nm(["-u"], lib) if mine(n)}
    return defined, undefined


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--self-test":
        return floors.report_self_test("symbol layering self-test", self_test())
    if len(sys.argv) < 4 or sys.argv[3] not in ("override", "no-override"):
        print("usage: check_symbols.py libhakmem.a libhakmem.so override|no-override [SRCROOT PART=LIB.a ...]"
              " | --self-test", file=sys.stderr)
        return 2
    static_lib, shared_lib, mode = sys.argv[1:4]
    override = mode == "override"
    errors = []

    static_syms = nm(["-g", "--defined-only"], static_lib)
    if not static_syms:
        errors.append(f"{static_lib}: no defined global symbols at all")
    for name, kind in static_syms:
        if name.startswith(("hk_", "hak_")):
            continue
        if name in STANDARD:
            if not override:
                errors.append(f"{static_lib}: defines standard name {name} ({kind}) in a -Doverride=false build")
            continue
        errors.append(f"{static_lib}: global symbol {name} ({kind}) lacks the hk_/hak_ prefix")

    dyn_syms = nm(["-D", "--defined-only"], shared_lib)
    exported = set()
    for name, kind in dyn_syms:
        exported.add(name)
        if kind == "A" or name in LINKER_DYNAMIC:
            continue  # version nodes and linker-provided markers
        if name.startswith("hak_"):
            continue
        if name in STANDARD and override:
            continue
        errors.append(f"{shared_lib}: exports {name} ({kind})")
    for needed in ("hak_malloc", "hak_free", "hak_calloc", "hak_realloc", "hak_malloc_usable_size"):
        if needed not in exported:
            errors.append(f"{shared_lib}: does not export {needed}")
    if override:
        for needed in ("malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "malloc_usable_size"):
            if needed not in exported:
                errors.append(f"{shared_lib}: override build does not export {needed}")

    if len(sys.argv) > 4:
        errors += self_test()
        try:
            parts = floors.load(sys.argv[4])
        except (OSError, ValueError) as e:
            errors.append(f"floors table: {e}")
        else:
            defined, undefined = part_symbols(sys.argv[5:])
            missing = sorted(set(parts) - set(defined))
            if missing:
                errors.append(f"no static library given for part(s) {', '.join(missing)}")
            violations, edges = layering(parts, defined, undefined)
            errors += violations
            print(floors.table(parts, edges))

    for e in errors:
        print(e)
    print(f"symbols: {len(static_syms)} in .a, {len(dyn_syms)} exported from .so, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
