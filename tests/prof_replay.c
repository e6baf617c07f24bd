/* The heap profiler's replayed stacks are the real ones: call paths that reach malloc at the same stack depth and differ one, two or more frames up (also through a frame-pointer frame and a realigned one), taken in turn and in runs by three threads (the last gets the second's recycled memo), each get exactly the stack glibc's backtrace sees, and runs of one path are replayed (run at HAKMEM_PROF_SAMPLE=1, with each walker). */
#define _GNU_SOURCE
#include <execinfo.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { MAXF = 64, PATHS = 8, THREADS = 3, SITES = THREADS * (PATHS + 1), ROUNDS = 120 };
/* Site s < THREADS PATHS is path s % PATHS in thread s / PATHS (0 the main
 * one); the last THREADS are path 4 through one more frame, one a thread.
 * Site s allocates 17 + s bytes: below 64, each its own line. */
static void *seen[SITES][MAXF + 2];
static int nseen[SITES];
static unsigned long made[SITES];
static void *keep[SITES][ROUNDS * 3];
void *volatile sink;

__attribute__((noinline)) static void leaf(int s)
{
    void *bt[MAXF + 2];
    /* the two calls next to each other: the profile's first frame is a few
     * bytes after backtrace's (also with a sanitizer's checks in the build) */
    int n = backtrace(bt, MAXF + 2);
    void *p = T_MALLOC(17 + (size_t)s);
    if (!made[s]) {
        memcpy(seen[s], bt, sizeof bt);
        nseen[s] = n;
    } else if (n != nseen[s] || memcmp(bt + 1, seen[s] + 1, (size_t)(n - 1) * sizeof bt[0]))
        FAIL("site %d: backtrace itself saw another stack", s);
    keep[s][made[s]++] = p;
    sink = p; /* not a tail call */
}

/* Twins: the same code, so the same frame size and malloc at the same depth;
 * only the return address into each tells their stacks apart. */
__attribute__((noinline)) static void twin_a(int s)
{
    leaf(s);
    sink = (void *)(uintptr_t)s;
}
__attribute__((noinline)) static void twin_b(int s)
{
    leaf(s);
    sink = (void *)(uintptr_t)(s + 1); /* not the same code: not folded into twin_a */
}
/* Two frames up: outer_a and outer_b both call twin_a. */
__attribute__((noinline)) static void outer_a(int s)
{
    twin_a(s);
    sink = (void *)(uintptr_t)s;
}
__attribute__((noinline)) static void outer_b(int s)
{
    twin_a(s);
    sink = (void *)(uintptr_t)(s + 1);
}
/* A variable-length array: rbp holds the CFA, so the walk uses a saved rbp. */
__attribute__((noinline)) static void framed_a(int s, int n)
{
    volatile char a[n];
    a[0] = 1;
    leaf(s);
    __asm__ volatile("" : : "r"(a) : "memory");
}
__attribute__((noinline)) static void framed_b(int s, int n)
{
    volatile char a[n];
    a[0] = 2;
    leaf(s);
    __asm__ volatile("" : : "r"(a) : "memory");
}
/* Realigned stacks: the CFA is read through an expression (a deref). */
__attribute__((noinline)) static void realigned_a(int s)
{
    char a[64] __attribute__((aligned(64)));
    __asm__ volatile("" : : "r"(a) : "memory");
    leaf(s);
    __asm__ volatile("" : : "r"(a) : "memory");
}
__attribute__((noinline)) static void realigned_b(int s)
{
    char a[64] __attribute__((aligned(64)));
    __asm__ volatile("" : : "r"(a) : "memory");
    leaf(s);
    __asm__ volatile("" : "+r"(s) : "r"(a) : "memory");
}
__attribute__((noinline)) static void via_framed(int s, int n)
{
    framed_a(s, n);
    sink = (void *)(uintptr_t)s;
}

/* Allocations whose path is the thread's previous one's: each may be a replay. */
static volatile int vla_n = 100; /* read at run time: the arrays stay variable */
static int last_path[THREADS] = {-1, -1, -1};
static unsigned long repeats[THREADS];

static void take_path(int base, int k)
{
    int s = base + k, n = vla_n, th = base / PATHS;
    repeats[th] += last_path[th] == k;
    last_path[th] = k;
    switch (k) {
    case 0: twin_a(s); break;
    case 1: twin_b(s); break;
    case 2: outer_a(s); break;
    case 3: outer_b(s); break;
    case 4: framed_a(s, n); break;
    case 5: framed_b(s, n); break;
    case 6: realigned_a(s); break;
    case 7: realigned_b(s); break;
    }
}

/* Every path in turn, in runs of one to three (replays), up and down the
 * list by turns: each twin follows the other, which a replay must tell
 * apart (same stack pointer, same words but one). */
static void run_paths(int base)
{
    for (int r = 0; r < ROUNDS; r++) {
        for (int j = 0; j < PATHS; j++) {
            int k = (r + (r & 1 ? PATHS - j : j)) % PATHS;
            for (int t = 0; t < 1 + (r + j) % 3; t++)
                take_path(base, k);
        }
    }
    via_framed(THREADS * PATHS + base / PATHS, vla_n); /* path 4 through one more frame */
}

static void *thread_main(void *arg)
{
    run_paths((int)(intptr_t)arg * PATHS);
    return NULL;
}

/* Checks every line of size 17 + s made at leaf's call: one, with backtrace's frames, counting
 * every allocation of the site. */
static void check_site(const char *path, int s, const char *name)
{
    FILE *f = fopen(path, "r");
    if (!f)
        FAIL("cannot open %s", path);
    char line[8192];
    unsigned long total = 0, lines = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long ln, lb, an, ab;
        if (sscanf(line, "%lu: %lu [%lu: %lu]", &ln, &lb, &an, &ab) != 4 || !an || ab != an * (17 + (unsigned long)s))
            continue;
        char *at = strchr(line, '@');
        if (!at)
            continue;
        uintptr_t got[MAXF + 2];
        int n = 0;
        for (char *t = strtok(at + 1, " \n"); t && n < MAXF + 2; t = strtok(NULL, " \n"))
            got[n++] = (uintptr_t)strtoull(t, NULL, 16);
        /* leaf's call to malloc, just after its call to backtrace: a line of
         * the test's (libc allocates blocks of these sizes too) */
        if (!n || got[0] <= (uintptr_t)seen[s][0] || got[0] > (uintptr_t)seen[s][0] + 256)
            continue;
        int want = nseen[s] < MAXF ? nseen[s] : MAXF;
        bool same = n == want;
        for (int i = 1; same && i < n; i++)
            same = got[i] == (uintptr_t)seen[s][i];
        if (same) {
            total += an;
            lines++;
        } else {
            FAIL("%s (site %d): a line of %lu allocations of its size has another stack (%d frames, frame 1 %#lx; "
                 "backtrace: %d frames, frame 1 %p)",
                 name, s, an, n, n > 1 ? (unsigned long)got[1] : 0ul, nseen[s], seen[s][1]);
        }
    }
    fclose(f);
    if (lines != 1 || total != made[s])
        FAIL("%s (site %d): %lu lines with its stack counting %lu allocations, made %lu", name, s, lines, total,
             made[s]);
}

int main(void)
{
    struct hak_stats before = {.version = HAK_STATS_VERSION}, after = before;
    if (hak_stats_get(&before) != 0)
        FAIL("hak_stats_get");
    run_paths(0);
    for (intptr_t th = 1; th < THREADS; th++) { /* one after the other: the second's memo is recycled */
        pthread_t t;
        if (pthread_create(&t, NULL, thread_main, (void *)th) || pthread_join(t, NULL))
            FAIL("pthread");
    }
    if (hak_stats_get(&after) != 0)
        FAIL("hak_stats_get");

    char path[64];
    snprintf(path, sizeof path, "/tmp/hakmem-prof-replay.%d.heap", (int)getpid());
    if (hak_prof_dump(path) != 0)
        FAIL("hak_prof_dump: %m (run with HAKMEM_PROF_SAMPLE=1)");
    static const char *const names[PATHS + 1] = {"twin a",   "twin b",      "outer a",     "outer b",   "framed a",
                                                 "framed b", "realigned a", "realigned b", "via framed"};
    for (int s = 0; s < SITES; s++) {
        const char *name = names[s < THREADS * PATHS ? s % PATHS : PATHS];
        check_site(path, s, name);
        printf("%-11s thread %d %3lu allocations, one line, backtrace's %d frames\n", name,
               s < THREADS * PATHS ? s / PATHS : s - THREADS * PATHS, made[s], nseen[s]);
    }
    unlink(path);

    /* Runs of one path: every allocation after the first of a run could be
     * a replay. hakmem's walker must replay most of them (and nothing else
     * here allocates twice in a row from one stack); glibc's none. */
    unsigned long runs_after_first = 0;
    for (int th = 0; th < THREADS; th++)
        runs_after_first += repeats[th];
    unsigned long replayed = (unsigned long)(after.prof_replayed - before.prof_replayed);
    const char *w = getenv("HAKMEM_PROF_WALKER");
    bool glibc = w && !strcmp(w, "glibc");
    printf("%lu of %lu allocations that repeat the previous one's stack replayed (walker: %s)\n", replayed,
           runs_after_first, glibc ? "glibc" : "hakmem's");
    if (glibc ? replayed != 0 : replayed < runs_after_first / 2 || replayed > runs_after_first + 8)
        FAIL("replays: %lu, expected %s", replayed, glibc ? "none" : "at least half of those, and hardly more");
    for (int s = 0; s < SITES; s++)
        for (unsigned long i = 0; i < made[s]; i++)
            T_FREE(keep[s][i]);
    return 0;
}
