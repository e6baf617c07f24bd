/* A program that uses SIGSEGV on purpose (a page it unprotects in its own handler) keeps working with guarded sampling on, whether its handler came before hakmem's (faults not in guarded memory are passed on to it) or after (it replaces hakmem's); and with its handler first, a use after free of a guarded block is still reported and kills it by SIGSEGV; threads given an alternate signal stack for their guarded blocks take it with them. Run with HAKMEM_GUARD_SAMPLE=1; `guard_handler rate` with HAKMEM_GUARD_SAMPLE=100 checks that about one allocation in 100 is guarded. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stdout, "FAIL: " __VA_ARGS__); fputc('\n', stdout); exit(1); } while (0)

static char *page;
static volatile int handled;

static void own_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    char *a = si->si_addr;
    if (a >= page && a < page + 4096) {
        mprotect(page, 4096, PROT_READ | PROT_WRITE);
        handled++;
        return;
    }
    signal(sig, SIG_DFL); /* not ours: die of it */
}

static void install_own(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = own_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL))
        FAIL("sigaction");
}

/* Faults on purpose n times; each must reach own_handler. */
static void use_faults(int n)
{
    handled = 0;
    for (int i = 0; i < n; i++) {
        mprotect(page, 4096, PROT_NONE);
        ((volatile char *)page)[i % 4096] = (char)i;
    }
    if (handled != n)
        FAIL("the program's own handler saw %d of %d faults", handled, n);
}

void *volatile sink;

/* A line of /proc/self/status in KiB ("VmSize:", "VmRSS:"), or -1. */
static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n))
            kib = atol(line + n);
    if (f)
        fclose(f);
    return kib;
}

static void *guarded_thread(void *arg)
{
    (void)arg;
    void *p = T_MALLOC(64); /* guarded: the thread gets an alternate signal stack */
    sink = p;
    T_FREE(p);
    return NULL;
}

/* 300 threads, one after another, each with a guarded block: their
 * alternate stacks must go with them (address space does not pile up). */
static void threads_leave_no_stacks(void)
{
    pthread_t t0; /* the first thread maps a stack glibc then keeps for the next ones */
    if (pthread_create(&t0, NULL, guarded_thread, NULL) || pthread_join(t0, NULL))
        FAIL("pthread");
    long before = status_kib("VmSize:");
    for (int i = 0; i < 300; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, guarded_thread, NULL) || pthread_join(t, NULL))
            FAIL("pthread");
    }
    long after = status_kib("VmSize:");
    /* 300 stacks of 64 KiB left behind would be 19200 KiB */
    if (after - before > 4096)
        FAIL("300 threads with guarded blocks left %ld KiB more address space", after - before);
    printf("300 threads with guarded blocks: address space %ld KiB before, %ld after\n", before, after);
}

/* A guarded block's usable size is its request; realloc moves it (shrunk
 * or grown) keeping its bytes; aligned requests are aligned and exact. */
static void api_on_guarded_blocks(void)
{
    char *p = T_MALLOC(13);
    if (hak_malloc_usable_size(p) != 13)
        FAIL("usable size of a guarded 13-byte block: %zu", hak_malloc_usable_size(p));
    memcpy(p, "guarded bytes", 13);
    char *q = T_REALLOC(p, 7);
    if (q == p || memcmp(q, "guarded", 7) || hak_malloc_usable_size(q) != 7)
        FAIL("realloc shrinking a guarded block: %p -> %p", (void *)p, (void *)q);
    char *r = T_REALLOC(q, 5000);
    if (r == q || memcmp(r, "guarded", 7) || hak_malloc_usable_size(r) != 5000)
        FAIL("realloc growing a guarded block: %p -> %p", (void *)q, (void *)r);
    T_FREE(r);
    static const size_t aligns[] = {32, 64, 4096, 65536};
    for (unsigned i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        void *a = NULL;
        if (hak_posix_memalign(&a, aligns[i], 100) || ((uintptr_t)a & (aligns[i] - 1)) ||
            hak_malloc_usable_size(a) != 100)
            FAIL("posix_memalign(%zu, 100): %p, usable %zu", aligns[i], a, a ? hak_malloc_usable_size(a) : 0);
        memset(a, 1, 100);
        hak_free(a);
    }
    char *z = T_MALLOC(0);
    if (!z || hak_malloc_usable_size(z) != 0)
        FAIL("malloc(0) guarded: %p", (void *)z);
    T_FREE(z);
    printf("guarded blocks: usable size exact, realloc moves them with their bytes, aligned requests aligned\n");
}

/* hak_stats counts guarded blocks, the ones the full pool could not take,
 * and the pool's address space; RSS stays within the pool's size however
 * many guarded blocks come and go. */
static void stats_count_guarded(void)
{
    enum { N = 100 };
    static void *p[N];
    struct hak_stats a = {.version = HAK_STATS_VERSION}, b = a, c = a;
    long rss0 = status_kib("VmRSS:");
    if (hak_stats_get(&a))
        FAIL("hak_stats_get");
    for (int i = 0; i < N; i++)
        p[i] = T_MALLOC(64);
    if (hak_stats_get(&b))
        FAIL("hak_stats_get");
    /* the pool's 56 slots take some (the rest of them already hold blocks), the others are not guarded */
    if (b.guard_allocs - a.guard_allocs < 30 || b.guard_skipped - a.guard_skipped < 44 ||
        b.guard_live - a.guard_live != b.guard_allocs - a.guard_allocs ||
        b.guard_allocs - a.guard_allocs + b.guard_skipped - a.guard_skipped != N)
        FAIL("100 mallocs: %llu guarded, %llu live more, %llu skipped", (unsigned long long)(b.guard_allocs - a.guard_allocs),
             (unsigned long long)(b.guard_live - a.guard_live), (unsigned long long)(b.guard_skipped - a.guard_skipped));
    if (b.guard_mapped < 56 * 36 * 1024 || b.mapped < b.guard_mapped)
        FAIL("guard_mapped %llu, mapped %llu", (unsigned long long)b.guard_mapped, (unsigned long long)b.mapped);
    for (int i = 0; i < N; i++)
        T_FREE(p[i]);
    for (int r = 0; r < 200; r++) /* slots used over and over, up to 32 KiB each */
        for (int i = 0; i < N; i++)
            T_FREE(T_MALLOC((size_t)(i * 331 % 32768)));
    if (hak_stats_get(&c))
        FAIL("hak_stats_get");
    long rss1 = status_kib("VmRSS:");
    if (c.guard_live != a.guard_live)
        FAIL("guard_live %llu after all were freed, %llu before", (unsigned long long)c.guard_live,
             (unsigned long long)a.guard_live);
    if (rss1 - rss0 > 2600)
        FAIL("RSS grew %ld KiB with the pool at 56 slots of 32 KiB", rss1 - rss0);
    printf("hak_stats: %llu guarded, %llu skipped (pool full), %.1f MiB mapped; RSS +%ld KiB after 20,100 guarded mallocs\n",
           (unsigned long long)(b.guard_allocs - a.guard_allocs), (unsigned long long)(b.guard_skipped - a.guard_skipped),
           b.guard_mapped / 1048576.0, rss1 - rss0);
}

/* No guarded block shares a 2 MiB chunk with a large block: free() finds a
 * large block's header through the chunk, and a concurrent mremap of that
 * block (its reuse, grown) left the header unmapped under a free of the
 * guarded block beside it (a SIGSEGV seen in guard-fork-threads). With
 * every big guard entry in use, each round frees one, maps a large block
 * and a guarded block: the kernel places the guarded mapping in the highest
 * hole, the unmapped rest of the large block's last chunk unless guarded
 * mappings own whole chunks. */
static void guarded_own_their_chunks(void)
{
    enum { MAXG = 256, ROUNDS = 20 };
    static void *g[MAXG];
    static char *big[ROUNDS], *late[ROUNDS];
    const size_t gn = 65536 + 7, ln = (9u << 18) + 5, late_n = 200000 + 3;
    const uintptr_t chunk = (uintptr_t)2 << 20;
    int ng = 0, beside = 0;
    for (int r = 0; r < ROUNDS; r++) {
        while (ng < MAXG) { /* until the big entries are all in use */
            g[ng] = T_MALLOC(gn);
            if (hak_malloc_usable_size(g[ng]) != gn)
                break;
            ng++;
        }
        T_FREE(g[ng]);
        if (ng == 0 || ng == MAXG)
            FAIL("%d big guarded blocks live at once", ng);
        big[r] = T_MALLOC(ln);
        if (hak_malloc_usable_size(big[r]) == ln)
            FAIL("round %d: the large block is guarded although every entry is in use", r);
        T_FREE(g[--ng]);
        late[r] = T_MALLOC(late_n);
        if (hak_malloc_usable_size(late[r]) != late_n)
            FAIL("round %d: the block after a freed entry is not guarded", r);
        memset(late[r], 1, late_n);
    }
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < ROUNDS; k++) {
            uintptr_t lo = (uintptr_t)big[k] & ~(chunk - 1);
            uintptr_t hi = ((uintptr_t)big[k] + hak_malloc_usable_size(big[k]) - 1) & ~(chunk - 1);
            uintptr_t at = (uintptr_t)late[r] & ~(chunk - 1);
            beside += at >= lo && at <= hi;
        }
    if (beside)
        FAIL("%d of %d guarded blocks in a 2 MiB chunk of a large block's mapping", beside, ROUNDS);
    for (int r = 0; r < ROUNDS; r++) {
        T_FREE(late[r]);
        T_FREE(big[r]);
    }
    while (ng)
        T_FREE(g[--ng]);
    printf("%d guarded blocks mapped between large blocks: none in a large block's 2 MiB chunk\n", ROUNDS);
}

int main(int argc, char **argv)
{
    /* A handler before main (a sanitizer's runtime, or hakmem's after a
     * guarded allocation made before main) leaves no "program's handler
     * first" order to test. */
    struct sigaction cur;
    sigaction(SIGSEGV, NULL, &cur);
    bool handler_before_main = cur.sa_handler != SIG_DFL;
    page = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        FAIL("mmap");
    if (argc == 2 && !strcmp(argv[1], "before")) {
        /* the program's handler first, then the first guarded allocation */
        install_own();
        char *p = T_MALLOC(100);
        sigaction(SIGSEGV, NULL, &cur);
        if (cur.sa_sigaction == own_handler)
            FAIL("no guarded allocation: run with HAKMEM_GUARD_SAMPLE=1");
        use_faults(100);
        T_FREE(p);
        ((volatile char *)p)[0] = 'x'; /* a use after free: hakmem reports, then the default action */
        FAIL("the use after free went unseen");
    }
    if (argc == 2 && !strcmp(argv[1], "rate")) {
        /* HAKMEM_GUARD_SAMPLE=100: about one allocation in 100 is guarded,
         * whatever the sizes (here 8 B to 1 KiB and one in 50 of 100 KiB) */
        enum { ALLOCS = 200000 };
        struct hak_stats a = {.version = HAK_STATS_VERSION}, b = a;
        hak_stats_get(&a);
        uint64_t r = 88172645463325252ull;
        for (int i = 0; i < ALLOCS; i++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            size_t n = r % 50 == 0 ? 100000 : 8 + r % 1017;
            void *p = T_MALLOC(n);
            sink = p;
            T_FREE(p);
        }
        hak_stats_get(&b);
        uint64_t due = b.guard_allocs - a.guard_allocs + b.guard_skipped - a.guard_skipped;
        /* the countdown counts bytes; the mean-size estimate that turns them
         * into allocations is noisy (run with a fixed HAKMEM_PROF_SEED) */
        if (due < ALLOCS / 100 * 3 / 4 || due > ALLOCS / 100 * 5 / 4)
            FAIL("%llu of %d allocations guarded at one in 100", (unsigned long long)due, ALLOCS);
        printf("%llu of %d allocations guarded at one in 100\n", (unsigned long long)due, ALLOCS);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "after")) {
        sink = T_MALLOC(100); /* hakmem's handler goes in */
        install_own();        /* and the program's replaces it */
        use_faults(100);
        printf("survived\n");
        return 0;
    }
    threads_leave_no_stacks();
    api_on_guarded_blocks();
    stats_count_guarded();
    guarded_own_their_chunks();
    /* The driver: each order in a child, stderr read back. */
    const char *orders[] = {"before", "after"};
    for (int k = 0; k < 2; k++) {
        if (k == 0 && handler_before_main) {
            printf("note: handler before hakmem's not tested in this build: a SIGSEGV handler is installed "
                   "before main (a sanitizer's runtime, or a guarded allocation before main)\n");
            continue;
        }
        int fds[2];
        if (pipe(fds))
            FAIL("pipe");
        pid_t pid = fork();
        if (pid == 0) {
            setrlimit(RLIMIT_CORE, &(struct rlimit){0, 0});
            dup2(fds[1], 2);
            dup2(fds[1], 1);
            close(fds[0]);
            execl("/proc/self/exe", argv[0], orders[k], (char *)NULL);
            _exit(127);
        }
        close(fds[1]);
        char buf[16384] = {0};
        size_t n = 0;
        ssize_t r;
        while (n < sizeof buf - 1 && (r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0)
            n += (size_t)r;
        close(fds[0]);
        int status;
        waitpid(pid, &status, 0);
        if (k == 0) {
            if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV || !strstr(buf, "guarded block: use after free"))
                FAIL("handler first: expected the report and SIGSEGV, got status %#x and:\n%s", status, buf);
            printf("handler before hakmem's: its 100 faults handled, then the use after free reported, SIGSEGV\n");
        } else {
            if (!WIFEXITED(status) || WEXITSTATUS(status) || !strstr(buf, "survived"))
                FAIL("handler after: status %#x:\n%s", status, buf);
            printf("handler after hakmem's: it replaced hakmem's, its 100 faults handled\n");
        }
    }
    return 0;
}
