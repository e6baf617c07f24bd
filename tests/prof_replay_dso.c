/* Replayed stacks and shared objects: allocations through a library the program needs at start-up are replayed, those through a dlopen'ed module never (dlclose may unload it), and both get glibc's backtrace as their stack, also after the module is closed and opened again (run at HAKMEM_PROF_SAMPLE=1; argv[1] is the module). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { MAXF = 64, N = 64 };
typedef int (*alloc_fn)(void **out, int n, size_t size, void **bt, int maxbt);
int replay_lib_alloc(void **out, int n, size_t size, void **bt, int maxbt);

static uint64_t replayed(void)
{
    struct hak_stats st = {.version = HAK_STATS_VERSION};
    if (hak_stats_get(&st) != 0)
        FAIL("hak_stats_get");
    return st.prof_replayed;
}

/* The profile's lines of blocks of `size` bytes from the site just after
 * bt's first frame: exactly one, of N allocations, whose frames are bt's. */
static void check_line(int size, void *const *bt, int nbt, const char *what)
{
    char path[80];
    snprintf(path, sizeof path, "/tmp/hakmem-prof-replay-dso.%d.heap", (int)getpid());
    if (hak_prof_dump(path) != 0)
        FAIL("hak_prof_dump: %m (run with HAKMEM_PROF_SAMPLE=1)");
    FILE *f = fopen(path, "r");
    if (!f)
        FAIL("cannot open %s", path);
    char line[8192];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long ln, lb, an, ab;
        if (sscanf(line, "%lu: %lu [%lu: %lu]", &ln, &lb, &an, &ab) != 4 || !an || ab != an * (unsigned long)size)
            continue;
        char *at = strchr(line, '@');
        uintptr_t got[MAXF + 2];
        int n = 0;
        for (char *t = at ? strtok(at + 1, " \n") : NULL; t && n < MAXF + 2; t = strtok(NULL, " \n"))
            got[n++] = (uintptr_t)strtoull(t, NULL, 16);
        /* only lines from the site: the loader's own blocks of this size
         * (a module path of size - 1 characters) are not ours */
        if (!n || got[0] <= (uintptr_t)bt[0] || got[0] > (uintptr_t)bt[0] + 256)
            continue;
        bool same = an == N && n == nbt;
        for (int i = 1; same && i < n; i++)
            same = got[i] == (uintptr_t)bt[i];
        if (!same)
            FAIL("%s: a line of %lu blocks of %d B with %d frames is not the %d allocations backtrace saw (%d frames)",
                 what, an, size, n, N, nbt);
        lines++;
    }
    fclose(f);
    unlink(path);
    if (lines != 1)
        FAIL("%s: %d lines for its blocks of %d B, not 1", what, lines, size);
}

/* n allocations from one site through fn: returns how many were replays. */
static uint64_t run(alloc_fn fn, int size, const char *what)
{
    static void *keep[N];
    void *bt[MAXF + 2];
    uint64_t before = replayed();
    int nbt = fn(keep, N, (size_t)size, bt, MAXF + 2);
    uint64_t got = replayed() - before;
    check_line(size, bt, nbt, what);
    for (int i = 0; i < N; i++)
        T_FREE(keep[i]);
    printf("%-32s %d allocations from one site, one line with backtrace's %d frames, %llu replayed\n", what, N, nbt,
           (unsigned long long)got);
    return got;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        FAIL("usage: prof_replay_dso MODULE.so");
    const char *w = getenv("HAKMEM_PROF_WALKER");
    bool glibc = w && !strcmp(w, "glibc");
    uint64_t r = run(replay_lib_alloc, 41, "a library linked at start-up");
    if (glibc ? r != 0 : r < N / 2 || r > N - 1)
        FAIL("library linked at start-up: %llu replays, expected %s", (unsigned long long)r,
             glibc ? "none" : "most of the 63 after the first");
    for (int round = 0; round < 2; round++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h)
            FAIL("dlopen %s: %s", argv[1], dlerror());
        alloc_fn fn = (alloc_fn)(uintptr_t)dlsym(h, "replay_mod_alloc");
        if (!fn)
            FAIL("dlsym: %s", dlerror());
        r = run(fn, 42 + round, round ? "the module, opened again" : "a dlopen'ed module");
        if (r != 0)
            FAIL("dlopen'ed module: %llu replays; code dlclose may unload is never replayed", (unsigned long long)r);
        dlclose(h);
    }
    return 0;
}
