/* Checks that under the system's THP mode "always" a small program's slab regions stay on 4 KiB pages with either backend, and that the hugepages backend still gives a dense heap transparent huge pages (root only: sets the mode, and vm.nr_hugepages to 0, and restores both). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"

#define THP_PATH "/sys/kernel/mm/transparent_hugepage/enabled"
#define NR_PATH "/proc/sys/vm/nr_hugepages"

static char saved[64], saved_nr[32];

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static void restore(void)
{
    if (saved[0])
        write_file(THP_PATH, saved);
    if (saved_nr[0])
        write_file(NR_PATH, saved_nr);
}

static void on_signal(int sig)
{
    restore();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Sum of one smaps field (kB) over the mappings that hold addresses in
 * [lo, hi]: the slab regions the blocks came from. */
static long smaps_kb(const char *field, unsigned long lo, unsigned long hi)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return -1;
    char line[256];
    unsigned long a = 0, b = 0;
    bool in = false;
    long sum = 0;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
            in = b > lo && a <= hi;
        else if (in && !strncmp(line, field, n))
            sum += atol(line + n);
    }
    fclose(f);
    return sum;
}

/* Huge pages of either kind in [lo, hi]: THP and MAP_HUGETLB pages. */
static long huge_kb(unsigned long lo, unsigned long hi)
{
    return smaps_kb("AnonHugePages:", lo, hi) + smaps_kb("Private_Hugetlb:", lo, hi);
}

/* The address range the blocks came from, widened to hold p. */
static void widen(unsigned long *lo, unsigned long *hi, const void *p)
{
    unsigned long a = (unsigned long)p;
    *lo = a < *lo ? a : *lo;
    *hi = a > *hi ? a : *hi;
}

/* 1 MiB in 16 B-16 KiB blocks, one byte written in each: with huge pages on
 * first touch this would make every slab region a 2 MiB page. */
static int child(void)
{
    enum { N = 600 };
    static char *v[N];
    unsigned long lo = ~0ul, hi = 0;
    size_t total = 0;
    for (int i = 0; i < N && total < (1u << 20); i++) {
        size_t size = 16u << (i % 11);
        v[i] = hak_malloc(size);
        if (!v[i])
            return 2;
        v[i][0] = 1;
        total += size;
        widen(&lo, &hi, v[i]);
    }
    long huge = huge_kb(lo, hi), rss = smaps_kb("Rss:", lo, hi);
    printf("thp-always: %zu KiB in blocks; their regions: Rss %ld KiB, huge pages %ld KiB\n", total / 1024, rss,
           huge);
    return huge == 0 ? 0 : 1;
}

/* 48 MiB of 64 B blocks, all written: dense enough for the hugepages
 * backend to put its later regions on huge pages. */
static int child_dense(void)
{
    enum { SIZE = 64, N = (48 << 20) / SIZE };
    static char *v[N];
    unsigned long lo = ~0ul, hi = 0;
    for (size_t i = 0; i < N; i++) {
        if (!(v[i] = hak_malloc(SIZE)))
            return 2;
        memset(v[i], 1, SIZE);
        widen(&lo, &hi, v[i]);
    }
    long huge = smaps_kb("AnonHugePages:", lo, hi);
    printf("thp-always: 48 MiB of 64 B blocks; AnonHugePages %ld KiB in their regions\n", huge);
    return huge >= 8 * 2048 ? 0 : 1;
}

static int run_child(const char *self, const char *mode)
{
    /* A fresh process, so that the regions are mapped under the new mode. */
    pid_t pid = fork();
    if (pid == 0) {
        execl(self, self, mode, (char *)NULL);
        _exit(3);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 4;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--child"))
        return child();
    if (argc > 1 && !strcmp(argv[1], "--dense"))
        return child_dense();
    bool hugepages = strstr(hak_version(), "backend=hugepages") != NULL;
    FILE *f = fopen(THP_PATH, "r");
    if (!f || !fgets(saved, sizeof saved, f) || geteuid() != 0) {
        printf("thp-always: needs root and %s: skipped\n", THP_PATH);
        return 77;
    }
    fclose(f);
    /* "always [madvise] never" -> "madvise" */
    char *l = strchr(saved, '['), *r = l ? strchr(l, ']') : NULL;
    if (!l || !r)
        return 77;
    memmove(saved, l + 1, (size_t)(r - l - 1));
    saved[r - l - 1] = 0;
    atexit(restore);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    /* With pages reserved the hugepages backend would rightly take hugetlb
     * pages for the dense heap, and the THP opt-in would go untested. */
    bool no_hugetlb = true;
    FILE *nr = fopen(NR_PATH, "r");
    if (nr) {
        if (fgets(saved_nr, sizeof saved_nr, nr) && atol(saved_nr) != 0 && write_file(NR_PATH, "0") != 0)
            no_hugetlb = false;
        if (!no_hugetlb || atol(saved_nr) == 0)
            saved_nr[0] = 0; /* nothing to restore */
        fclose(nr);
    }
    if (write_file(THP_PATH, "always") != 0) {
        printf("thp-always: cannot set THP to always: skipped\n");
        saved[0] = 0;
        return 77;
    }
    int small = run_child(argv[0], "--child");
    int dense = 0;
    if (hugepages && no_hugetlb)
        dense = run_child(argv[0], "--dense");
    else if (hugepages)
        printf("thp-always: cannot set %s to 0: dense heap not checked\n", NR_PATH);
    restore();
    saved[0] = saved_nr[0] = 0;
    if (small != 0) {
        printf("thp-always: a small program's slab regions took huge pages (or the child failed: status %d)\n", small);
        return 1;
    }
    if (dense != 0) {
        printf("thp-always: a dense heap got no huge pages from the hugepages backend (or the child failed: "
               "status %d)\n", dense);
        return 1;
    }
    return 0;
}
