/* The heap profiler's stacks against glibc's backtrace, frame for frame: sites reached by recursion, through a frame-pointer frame, stack-realigning frames (one through a scratch register), libc's qsort, a thread and a stack deeper than 64 frames each record the same callers backtrace sees (run at HAKMEM_PROF_SAMPLE=1, with each walker). */
#define _GNU_SOURCE
#include <execinfo.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { MAXF = 64, SITES = 7 };
/* What backtrace saw just before each site's allocation; the site's size
 * (17 + k bytes, below 64: each its own line in the profile) names it. */
static void *seen[SITES][MAXF + 2];
static int nseen[SITES];
static void *keep[SITES];
void *volatile sink;

__attribute__((noinline)) static void site(int k)
{
    nseen[k] = backtrace(seen[k], MAXF + 2);
    keep[k] = T_MALLOC(17 + (size_t)k);
    sink = keep[k]; /* not a tail call */
}

__attribute__((noinline)) static void recurse(int k, int depth)
{
    if (depth)
        recurse(k, depth - 1);
    else
        site(k);
    sink = (void *)(uintptr_t)depth;
}

/* rbp holds the CFA: a variable-length array */
__attribute__((noinline)) static void with_vla(int n)
{
    volatile char a[n];
    a[0] = 1;
    site(1);
    __asm__ volatile("" : : "r"(a) : "memory");
}

/* realigns its stack: the CFA is read through an expression (a deref) */
__attribute__((noinline)) static void realigned(void)
{
    char a[64] __attribute__((aligned(64)));
    __asm__ volatile("" : : "r"(a) : "memory");
    site(2);
    __asm__ volatile("" : : "r"(a) : "memory");
}

/* realigns through a scratch register (DRAP): the CFA is the word at rbp - 8,
 * rbp's own slot found from rbp */
__attribute__((noinline)) static void realigned_vla(int n)
{
    char a[64] __attribute__((aligned(64)));
    volatile char b[n];
    b[0] = 1;
    __asm__ volatile("" : : "r"(a), "r"(b) : "memory");
    site(6);
    __asm__ volatile("" : : "r"(a), "r"(b) : "memory");
}

static int cmp(const void *a, const void *b)
{
    static int done;
    if (!done++)
        site(3);
    return *(const int *)a - *(const int *)b;
}

static void *thread_main(void *arg)
{
    (void)arg;
    recurse(4, 3);
    return NULL;
}

/* the profile's line for size 17 + k: its frames (the first one as written, minus 1) */
static int profile_stack(const char *path, int k, uintptr_t *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        FAIL("cannot open %s", path);
    char line[8192];
    int n = -1;
    while (n < 0 && fgets(line, sizeof line, f)) {
        unsigned long ln, lb;
        if (sscanf(line, "%lu: %lu [", &ln, &lb) != 2 || ln != 1 || lb != 17 + (unsigned long)k)
            continue;
        char *at = strchr(line, '@');
        if (!at)
            continue;
        n = 0;
        for (char *t = strtok(at + 1, " \n"); t && n < MAXF + 2; t = strtok(NULL, " \n"))
            out[n++] = (uintptr_t)strtoull(t, NULL, 16);
    }
    fclose(f);
    return n;
}

int main(void)
{
    int ints[64];
    for (int i = 0; i < 64; i++)
        ints[i] = (i * 37) % 64;

    recurse(0, 5);
    with_vla(100 + (int)(uintptr_t)sink % 7);
    realigned();
    realigned_vla(50 + (int)(uintptr_t)sink % 5);
    qsort(ints, 64, sizeof ints[0], cmp);
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) || pthread_join(t, NULL))
        FAIL("pthread");
    recurse(5, 80);

    char path[64];
    snprintf(path, sizeof path, "/tmp/hakmem-prof-stacks.%d.heap", (int)getpid());
    if (hak_prof_dump(path) != 0)
        FAIL("hak_prof_dump: %m (run with HAKMEM_PROF_SAMPLE=1)");
    static const char *const names[SITES] = {"recursion", "VLA frame", "realigned frame", "qsort comparator",
                                             "thread", "deep recursion", "realigned VLA"};
    for (int k = 0; k < SITES; k++) {
        uintptr_t got[MAXF + 2];
        int n = profile_stack(path, k, got);
        if (n <= 0)
            FAIL("%s: no stack for its block in %s", names[k], path);
        /* backtrace's first frame is site's call to backtrace, the profile's
         * its call to malloc: the same function, then the same callers */
        if (got[0] <= (uintptr_t)seen[k][0] || got[0] > (uintptr_t)seen[k][0] + 256) /* sanitizers add code */
            FAIL("%s: first frame %#lx is not in site()", names[k], (unsigned long)got[0]);
        int want = nseen[k] < MAXF ? nseen[k] : MAXF;
        if (n != want)
            FAIL("%s: %d frames, backtrace saw %d (the profile keeps %d)", names[k], n, nseen[k], MAXF);
        for (int i = 1; i < n; i++)
            if (got[i] != (uintptr_t)seen[k][i])
                FAIL("%s: frame %d is %#lx, backtrace says %p", names[k], i, (unsigned long)got[i], seen[k][i]);
        printf("%-17s %2d frames, as backtrace\n", names[k], n);
    }
    unlink(path);
    for (int k = 0; k < SITES; k++)
        T_FREE(keep[k]);
    return 0;
}
