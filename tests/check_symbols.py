# Checks symbol hygiene: every global symbol of libhakmem.a carries the hk_/hak_ prefix or is a standard allocator name, and libhakmem.so exports only hak_* and those names.

import subprocess
import sys

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


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("override", "no-override"):
        print("usage: check_symbols.py libhakmem.a libhakmem.so override|no-override", file=sys.stderr)
        return 2
    static_lib, shared_lib, mode = sys.argv[1:]
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

    for e in errors:
        print(e)
    print(f"symbols: {len(static_syms)} in .a, {len(dyn_syms)} exported from .so, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
