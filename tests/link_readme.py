#!/usr/bin/env python3
"""The README's link line, run as written: a C program whose only allocation is inside libc (strdup) and a
C++ one that only uses new must get hakmem as their malloc (Debian's gcc links with --as-needed, which drops
a library the program never calls by name)."""
import os
import re
import shlex
import subprocess
import sys
import tempfile

# Neither program names a function hakmem defines: that is the case --as-needed gets wrong.
C_SRC = r'''
#include <stdio.h>
#include <string.h>
int main(void) { puts(strdup("x")); return 0; }
'''
CXX_SRC = r'''
#include <cstdio>
int main() { char *s = new char[2]; s[0] = 'x'; s[1] = 0; std::puts(s); delete[] s; return 0; }
'''


def main():
    readme, builddir = sys.argv[1], sys.argv[2]
    text = open(readme, encoding="utf-8").read()
    m = re.search(r"^cc prog\.c (.*)$", text, re.M)
    if not m:
        print("link-readme: no 'cc prog.c ...' line in README.md")
        return 1
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(builddir, "meson-uninstalled"))
    # The line's $(pkg-config ...) is expanded the way a shell would.
    flags = re.sub(r"\$\((pkg-config [^)]*)\)",
                   lambda p: subprocess.run(shlex.split(p.group(1)), env=env, check=True,
                                            capture_output=True, text=True).stdout.strip(), m.group(1))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for compiler, ext, src in (("cc", "c", C_SRC), ("c++", "cc", CXX_SRC)):
            path = os.path.join(tmp, "prog." + ext)
            open(path, "w").write(src)
            exe = os.path.join(tmp, "prog_" + ext)
            cmd = [compiler, path] + shlex.split(flags) + ["-o", exe]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(f"link-readme: {' '.join(cmd)} failed:\n{r.stderr}")
                failed = 1
                continue
            run = subprocess.run([exe], env=dict(os.environ, LD_LIBRARY_PATH=builddir, HAKMEM_STATS="1"),
                                 capture_output=True, text=True, timeout=30)
            # The statistics at exit count the 2-byte block in the 16-byte class.
            m16 = re.search(r"^\s*small\s+16\s+(\d+)", run.stderr, re.M)
            ok = run.returncode == 0 and run.stdout.strip() == "x" and m16 is not None and int(m16.group(1)) >= 1
            print(f"link-readme: {compiler} prog.{ext} {' '.join(shlex.split(flags))}: "
                  f"{'hakmem served the block' if ok else 'hakmem did NOT serve the block'}")
            failed |= not ok
    return failed


if __name__ == "__main__":
    sys.exit(main())
