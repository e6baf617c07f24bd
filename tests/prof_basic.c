/* The heap profiler's file, read back: at HAKMEM_PROF_SAMPLE=1 every site's live and cumulative counts are exact and its stack starts in the site's function; sampled at 64 KiB, the un-sampled estimate of a 32 MiB site is within 15%; with sampling off hak_prof_dump says so. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { KEEP = 1000, FREED = 1000, LEAK = 10, BIG = 32768 };
static void *keep[KEEP], *leak[LEAK], *big[BIG];
void *volatile sink;

/* Each site is its own exported function: the profile's first frame names it. */
__attribute__((noinline)) void site_keep(void)
{
    for (int i = 0; i < KEEP; i++)
        keep[i] = T_MALLOC(1000);
}
__attribute__((noinline)) void site_freed(void)
{
    for (int i = 0; i < FREED; i++) {
        sink = T_MALLOC(65536);
        T_FREE(sink);
    }
}
__attribute__((noinline)) void site_leak(void)
{
    for (int i = 0; i < LEAK; i++)
        leak[i] = T_MALLOC(4u << 20);
}
__attribute__((noinline)) void site_calloc(void) { sink = T_CALLOC(10, 300); }
__attribute__((noinline)) void site_aligned(void) { sink = hak_aligned_alloc(65536, 70000); }
__attribute__((noinline)) void *site_realloc(void)
{
    void *p = T_MALLOC(3000);
    sink = p; /* not a tail call: the site keeps its frame */
    return p;
}
__attribute__((noinline)) void site_big(void)
{
    for (int i = 0; i < BIG; i++)
        big[i] = T_MALLOC(1024);
}

/* Allocates and frees while the main thread forks: the profiler's lock must
 * not be inherited held. */
static volatile int stop;
static void *churner(void *arg)
{
    (void)arg;
    while (!stop) {
        void *p = T_MALLOC(200);
        sink = p;
        T_FREE(p);
    }
    return NULL;
}

struct site {
    const char *name;
    uint64_t ln, lb, an, ab;
};
static struct site sites[] = {
    {.name = "site_keep"},   {.name = "site_freed"},   {.name = "site_leak"}, {.name = "site_calloc"},
    {.name = "site_aligned"}, {.name = "site_realloc"}, {.name = "site_big"},
};
#define NSITES (sizeof sites / sizeof sites[0])

static struct site *site_named(const char *name)
{
    for (unsigned i = 0; i < NSITES; i++)
        if (!strcmp(sites[i].name, name))
            return &sites[i];
    return NULL;
}

/* Reads the file: checks the header, sums each line into the site its first
 * frame names, returns the sampling rate (0: "heapprofile", every block). */
static uint64_t read_profile(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        FAIL("no profile at %s", path);
    char line[8192];
    if (!fgets(line, sizeof line, f))
        FAIL("empty profile");
    uint64_t n1, b1, n2, b2, rate = 0;
    char kind[32];
    if (sscanf(line, "heap profile: %" SCNu64 ": %" SCNu64 " [%" SCNu64 ": %" SCNu64 "] @ %31s", &n1, &b1, &n2, &b2,
               kind) != 5)
        FAIL("bad header: %s", line);
    if (!strncmp(kind, "heap_v2/", 8))
        rate = strtoull(kind + 8, NULL, 10);
    else if (strcmp(kind, "heapprofile"))
        FAIL("unknown profile type %s", kind);
    bool maps = false;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "MAPPED_LIBRARIES:", 17)) {
            maps = true;
            break;
        }
        if (line[0] == '\n')
            continue;
        char *at = strstr(line, "@ ");
        if (sscanf(line, "%" SCNu64 ": %" SCNu64 " [%" SCNu64 ": %" SCNu64 "]", &n1, &b1, &n2, &b2) != 4 || !at)
            FAIL("bad line: %s", line);
        uintptr_t pc = (uintptr_t)strtoull(at + 2, NULL, 16);
        Dl_info di;
        if (!dladdr((void *)pc, &di) || !di.dli_sname)
            continue; /* a stack from elsewhere (libc's own allocations) */
        struct site *s = site_named(di.dli_sname);
        if (!s) {
            if (!strncmp(di.dli_sname, "hak_", 4) || !strcmp(di.dli_sname, "malloc") || !strcmp(di.dli_sname, "calloc"))
                FAIL("a stack starts in hakmem (%s)", di.dli_sname);
            continue;
        }
        s->ln += n1, s->lb += b1, s->an += n2, s->ab += b2;
    }
    fclose(f);
    if (!maps)
        FAIL("no MAPPED_LIBRARIES section");
    return rate;
}

static void expect(const char *name, uint64_t ln, uint64_t lb, uint64_t an, uint64_t ab)
{
    struct site *s = site_named(name);
    printf("%-13s live %6" PRIu64 " blocks %10" PRIu64 " B, allocated %6" PRIu64 " blocks %10" PRIu64 " B\n", name,
           s->ln, s->lb, s->an, s->ab);
    if (s->ln != ln || s->lb != lb || s->an != an || s->ab != ab)
        FAIL("%s: expected live %" PRIu64 "/%" PRIu64 " allocated %" PRIu64 "/%" PRIu64, name, ln, lb, an, ab);
}

/* pprof's un-sampling of one line: count and bytes scaled by 1/(1-e^(-avg/rate)). */
static double unsampled(uint64_t n, uint64_t b, uint64_t rate)
{
    return n ? (double)b / (1 - exp(-((double)b / (double)n) / (double)rate)) : 0;
}

int main(void)
{
    const char *sample = getenv("HAKMEM_PROF_SAMPLE");
    char path[64];
    snprintf(path, sizeof path, "prof_basic.%d.heap", (int)getpid());
    if (!sample) {
        if (hak_prof_dump(path) != -1 || errno != ENOTSUP)
            FAIL("hak_prof_dump with sampling off: expected -1 and ENOTSUP");
        struct hak_stats st = {.version = HAK_STATS_VERSION};
        if (hak_stats_get(&st) != 0 || st.prof_mapped || st.prof_live || st.prof_dropped)
            FAIL("the profiler's stats are not 0 while it is off");
        printf("prof-basic: sampling off, hak_prof_dump says ENOTSUP\n");
        return 0;
    }
    if (!strcmp(sample, "1")) {
        site_keep();
        site_freed();
        site_leak();
        site_calloc();
        site_aligned();
        void *r = site_realloc();
        r = T_REALLOC(r, 2000); /* in place: the record shrinks with it */
        if (hak_prof_dump(path) != 0)
            FAIL("hak_prof_dump: %s", strerror(errno));
        if (read_profile(path) != 0)
            FAIL("rate 1 must be written as an exact profile (heapprofile)");
        expect("site_keep", KEEP, KEEP * 1000ull, KEEP, KEEP * 1000ull);
        expect("site_freed", 0, 0, FREED, FREED * 65536ull);
        expect("site_leak", LEAK, LEAK * (4ull << 20), LEAK, LEAK * (4ull << 20));
        expect("site_calloc", 1, 3000, 1, 3000);
        expect("site_aligned", 1, 70000, 1, 70000);
        expect("site_realloc", 1, 2000, 1, 3000);
        static struct hak_stats st = {.version = HAK_STATS_VERSION};
        if (hak_stats_get(&st) != 0)
            FAIL("hak_stats_get");
        printf("stats: %" PRIu64 " sampled blocks live, tables %" PRIu64 " B, %" PRIu64 " dropped\n", st.prof_live,
               st.prof_mapped, st.prof_dropped);
        /* Every live block is sampled at rate 1: the sites' and the C library's. */
        if (st.prof_live < KEEP + LEAK + 3 || !st.prof_mapped || st.prof_dropped)
            FAIL("the profiler's stats do not match what it holds");
        T_FREE(r);
        /* fork with other threads sampling: the child keeps the records of
         * the blocks it inherited, frees half of them, and profiles. */
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            pthread_create(&th[i], NULL, churner, NULL);
        for (int round = 0; round < 20; round++) {
            pid_t pid = fork();
            if (pid < 0)
                FAIL("fork");
            if (pid == 0) {
                alarm(10); /* an inherited lock shows as a hang */
                for (int i = 0; i < KEEP / 2; i++)
                    T_FREE(keep[i]);
                snprintf(path, sizeof path, "prof_basic.%d.heap", (int)getpid());
                for (unsigned i = 0; i < NSITES; i++)
                    sites[i].ln = sites[i].lb = sites[i].an = sites[i].ab = 0;
                if (hak_prof_dump(path) != 0)
                    _exit(3);
                read_profile(path);
                unlink(path);
                struct site *k = site_named("site_keep");
                _exit(k->ln == KEEP / 2 && k->an == KEEP ? 0 : 4);
            }
            int status;
            if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
                FAIL("fork %d: the child's profile was wrong or it hung (status %#x)", round, status);
        }
        stop = 1;
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        printf("fork: 20 children with sampling threads kept their inherited records and freed half\n");
    } else {
        /* 32 MiB in 1 KiB blocks at a 64 KiB mean: ~500 samples expected. */
        site_big();
        if (hak_prof_dump(path) != 0)
            FAIL("hak_prof_dump: %s", strerror(errno));
        uint64_t rate = read_profile(path);
        struct site *s = site_named("site_big");
        double est = unsampled(s->ln, s->lb, rate), want = BIG * 1024.0;
        printf("site_big: %" PRIu64 " samples, estimate %.0f B of %.0f (%+.1f%%) at rate %" PRIu64 "\n", s->ln, est, want,
               100 * (est / want - 1), rate);
        if (rate != strtoull(sample, NULL, 10))
            FAIL("header rate %" PRIu64 ", HAKMEM_PROF_SAMPLE=%s", rate, sample);
        if (fabs(est / want - 1) > 0.15)
            FAIL("estimate off by more than 15%%");
        for (int i = 0; i < BIG; i++)
            T_FREE(big[i]);
    }
    unlink(path);
    printf("prof-basic: ok\n");
    return 0;
}
