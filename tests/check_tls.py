# Checks that libhakmem.so's PT_TLS segment is under 1 KiB, so dlopen of it cannot exhaust glibc's static TLS surplus.

import subprocess
import sys

LIMIT = 1024


def main():
    if len(sys.argv) != 2:
        print("usage: check_tls.py libhakmem.so", file=sys.stderr)
        return 2
    out = subprocess.run(["readelf", "-lW", sys.argv[1]], check=True, capture_output=True, text=True).stdout
    if "Program Headers" not in out:
        print("readelf printed no program headers:\n" + out)
        return 1
    memsz = 0
    for line in out.splitlines():
        parts = line.split()
        # Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align
        if parts and parts[0] == "TLS":
            memsz = int(parts[5], 16)
    print(f"PT_TLS MemSiz = {memsz} bytes (limit < {LIMIT})")
    return 0 if memsz < LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
