/* Checks that hakmem detects invalid and double frees: the process aborts with one "hakmem:" line naming the pointer. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hakmem.h"

struct child_result {
    int status;
    char err[8192];
};

/* Runs fn(arg) in a forked child whose stderr is a pipe, so the parent can
 * see both how it died and exactly what it printed. Core dumps are disabled:
 * an aborting child would otherwise spend seconds writing one. */
static void run_child(void (*fn)(void *), void *arg, struct child_result *r)
{
    int fds[2];
    cr_assert(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        signal(SIGABRT, SIG_DFL);
        close(fds[0]);
        dup2(fds[1], 2);
        close(fds[1]);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fds[0], r->err + len, sizeof r->err - 1 - len);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        len += (size_t)k;
        if (len == sizeof r->err - 1) break;
    }
    r->err[len] = 0;
    close(fds[0]);
    while (waitpid(pid, &r->status, 0) < 0 && errno == EINTR) {
    }
}

/* Asserts the child died of SIGABRT and printed exactly one "hakmem:" line,
 * which starts with `prefix` and names `ptr` exactly as %p prints it. */
static void expect_report(const struct child_result *r, const char *prefix, const void *ptr)
{
    cr_assert(WIFSIGNALED(r->status) && WTERMSIG(r->status) == SIGABRT,
              "child did not die by SIGABRT (status 0x%x); stderr:\n%s", r->status, r->err);
    char want[64];
    snprintf(want, sizeof want, "%p", ptr);
    int lines = 0;
    const char *line = r->err, *found = NULL;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        if (n >= 7 && strncmp(line, "hakmem:", 7) == 0) {
            lines++;
            found = line;
            /* The pointer must appear as a whole token, not as a prefix of a
             * longer hex number. */
            const char *hit = NULL, *s = line;
            while ((s = strstr(s, want)) && s < line + n) {
                if (!isxdigit((unsigned char)s[strlen(want)])) {
                    hit = s;
                    break;
                }
                s++;
            }
            cr_assert(hit != NULL, "report line does not contain %s: %.*s", want, (int)n, line);
            cr_assert(strncmp(line, prefix, strlen(prefix)) == 0, "report line does not start with \"%s\": %.*s", prefix,
                      (int)n, line);
        }
        line += n;
        if (*line == '\n') line++;
    }
    cr_assert(lines == 1, "expected exactly one hakmem: line, got %d; stderr:\n%s", lines, r->err);
    (void)found;
}

/* Pointers are handed to children through volatile globals so the compiler
 * sees nothing wrong (no -Wfree-nonheap-object) and cannot drop the call. */
static void *volatile g_target;

static void do_hak_free(void *arg)
{
    (void)arg;
    hak_free(g_target);
}

static void do_hak_double_free(void *arg)
{
    (void)arg;
    hak_free(g_target);
    hak_free(g_target);
}

static void do_hak_usable_size(void *arg)
{
    (void)arg;
    volatile size_t s = hak_malloc_usable_size(g_target);
    (void)s;
}

static void do_hak_realloc(void *arg)
{
    (void)arg;
    void *volatile q = hak_realloc(g_target, 200);
    (void)q;
}

Test(misuse, free_stack_address)
{
    char buf[64];
    memset(buf, 0, sizeof buf);
    g_target = buf + 16;
    struct child_result r;
    run_child(do_hak_free, NULL, &r);
    expect_report(&r, "hakmem: invalid free(0x", buf + 16);
}

/* A child frees block p + offset (twice when `twice`): the report must
 * start with `prefix` and name exactly that pointer. */
static void expect_block_report(size_t n, size_t offset, void (*fn)(void *), const char *prefix)
{
    char *p = hak_malloc(n);
    cr_assert(p);
    g_target = p + offset;
    struct child_result r;
    run_child(fn, NULL, &r);
    expect_report(&r, prefix, p + offset);
    hak_free(p);
}
static void expect_bad_free(size_t n, size_t offset, int twice, const char *prefix)
{
    expect_block_report(n, offset, twice ? do_hak_double_free : do_hak_free, prefix);
}

/* Interior pointers and double frees in every size range: small, mid
 * (16 KiB), medium (100 KiB) and large (3-4 MiB). */
Test(misuse, free_interior_pointer) { expect_bad_free(100, 16, 0, "hakmem: invalid free(0x"); }
Test(misuse, free_interior_pointer_medium) { expect_bad_free(100 * 1024, 4096, 0, "hakmem: invalid free(0x"); }
Test(misuse, free_interior_pointer_large) { expect_bad_free(3 << 20, 4096, 0, "hakmem: invalid free(0x"); }
/* 32 bytes before a block: with every block sampled, the head holding the
 * block's profile record (docs/profiling.md), which must not pass for a
 * block (it once did, and the block was handed out twice). */
Test(misuse, free_32_before_a_block) { expect_bad_free(40, (size_t)-32, 0, "hakmem: invalid free(0x"); }
Test(misuse, double_free_small) { expect_bad_free(32, 0, 1, "hakmem: double free(0x"); }
Test(misuse, double_free_mid) { expect_bad_free(16 * 1024, 0, 1, "hakmem: double free(0x"); }
Test(misuse, double_free_100k) { expect_bad_free(100 * 1024, 0, 1, "hakmem: double free(0x"); }
Test(misuse, double_free_large) { expect_bad_free(4 << 20, 0, 1, "hakmem: double free(0x"); }

/* Medium blocks of up to 256 KiB wait in the freeing thread's cache (two a
 * class at first, one more each time the class is full after a miss); a
 * second free must abort wherever the first one put the block. */
enum { HELD = 100 * 1024, HELD_CLASS = 104 * 1024 /* the class serving HELD */ };

/* The first free reaches the slab (the class's cache is full), a hit makes
 * room, and the second free then meets the cache. */
static void do_double_free_slab_then_cache(void *arg)
{
    (void)arg;
    char *a = hak_malloc(HELD), *b = hak_malloc(HELD), *c = hak_malloc(HELD), *d = hak_malloc(HELD); /* misses */
    hak_free(a);
    hak_free(b);
    hak_free(c);        /* full after a miss: the class holds three now */
    hak_free(g_target); /* full, no miss since: to the slab */
    if (hak_malloc(HELD) != c)
        return; /* exits quietly: the test fails */
    hak_free(g_target);
    hak_free(d);
}
Test(misuse, double_free_medium_slab_then_cache)
{
    expect_block_report(HELD, 0, do_double_free_slab_then_cache, "hakmem: double free(0x");
}

static sem_t held_sem;
static void *free_and_stay(void *arg)
{
    (void)arg;
    hak_free(hak_malloc(16)); /* this thread's caches exist from here on */
    hak_free(g_target);       /* held by its cache while it lives */
    struct hak_stats st = {.version = HAK_STATS_VERSION};
    hak_stats_get(&st);
    for (unsigned i = 0; i < st.nclass; i++)
        if (st.cls[i].kind == HAK_STATS_MEDIUM && st.cls[i].block_size == HELD_CLASS && st.cls[i].cached_blocks == 1)
            sem_post(&held_sem); /* else the child exits quietly: the test fails */
    for (;;)
        pause();
    return NULL;
}
/* The first free from a thread that stays alive holding the block. */
static void do_double_free_held_elsewhere(void *arg)
{
    (void)arg;
    pthread_t t;
    sem_init(&held_sem, 0, 0);
    if (pthread_create(&t, NULL, free_and_stay, NULL) != 0)
        return;
    struct timespec limit;
    clock_gettime(CLOCK_MONOTONIC, &limit);
    limit.tv_sec += 10;
    if (sem_clockwait(&held_sem, CLOCK_MONOTONIC, &limit) == 0)
        hak_free(g_target);
}
Test(misuse, double_free_medium_held_by_another_thread)
{
    expect_block_report(HELD, 0, do_double_free_held_elsewhere, "hakmem: double free(0x");
}

static void do_usable_size_after_free(void *arg)
{
    (void)arg;
    hak_free(g_target);
    volatile size_t s = hak_malloc_usable_size(g_target);
    (void)s;
}
Test(misuse, usable_size_of_held_medium_block)
{
    expect_block_report(HELD, 0, do_usable_size_after_free, "hakmem: invalid malloc_usable_size(0x");
}

/* ---- blocks that were never handed out ------------------------------------
 * A free of an address that is not a block the program holds must abort,
 * whether the block is carved and waiting in a thread cache, past the point
 * where its slab was carved, in an exited thread's lists, in a slab given
 * back, or no block at all (a region header, a global, a foreign mapping). */

/* A small class in [lo, hi] that nothing in this process has used yet (no
 * allocation, no slab): its first block starts a fresh slab, so the blocks
 * after it are known to be carved into this thread's cache (the first few)
 * or not carved at all. */
static size_t fresh_small_size(size_t lo, size_t hi)
{
    static struct hak_stats st;
    st.version = HAK_STATS_VERSION;
    cr_assert(hak_stats_get(&st) == 0);
    for (unsigned i = 0; i < st.nclass; i++) {
        const struct hak_stats_class *c = &st.cls[i];
        if (c->kind == HAK_STATS_SMALL && c->block_size >= lo && c->block_size <= hi && !c->allocs && !c->slabs)
            return c->block_size;
    }
    cr_assert_fail("no unused small class between %zu and %zu", lo, hi);
    return 0;
}

/* Frees (or queries, with fn) p + k blocks of a fresh class's first block p. */
static void expect_fresh_block_report(size_t lo, size_t hi, unsigned k, void (*fn)(void *), const char *prefix)
{
    size_t size = fresh_small_size(lo, hi);
    char *p = hak_malloc(size);
    cr_assert(p);
    g_target = p + k * size;
    struct child_result r;
    run_child(fn, NULL, &r);
    expect_report(&r, prefix, p + k * size);
    hak_free(p);
}

/* The first refill of a class carves a few blocks (at least 4 tiny ones)
 * into the thread's cache: the second one sits there, never handed out. */
Test(misuse, free_block_carved_into_cache_not_handed_out)
{
    expect_fresh_block_report(16, 1024, 1, do_hak_free, "hakmem: double free(0x");
}
/* Eight blocks on, nothing was carved yet (a tiny slab holds 64 blocks or
 * more, a mid one 16 or more; a first refill carves at most 4 of them, and
 * in a pool_tls=false build a mid class carves one at a time). */
Test(misuse, free_block_never_carved_tiny)
{
    expect_fresh_block_report(16, 1024, 8, do_hak_free, "hakmem: invalid free(0x");
}
Test(misuse, free_block_never_carved_mid)
{
    expect_fresh_block_report(1025, 32768, 8, do_hak_free, "hakmem: invalid free(0x");
}
Test(misuse, usable_size_of_block_never_carved)
{
    expect_fresh_block_report(16, 1024, 8, do_hak_usable_size, "hakmem: invalid malloc_usable_size(0x");
}
/* malloc(8); free(p + 4096): in a slab of 16-byte blocks that is a block
 * boundary, usually never carved, else carved and waiting somewhere. */
Test(misuse, free_4096_past_a_tiny_block)
{
    expect_block_report(8, 4096, do_hak_free, "hakmem: ");
}

/* A region's first page is its header: no block starts there. */
Test(misuse, free_region_header)
{
    char *p = hak_malloc(64);
    cr_assert(p);
    g_target = (char *)((uintptr_t)p & ~(uintptr_t)((2u << 20) - 1)) + 64;
    struct child_result r;
    run_child(do_hak_free, NULL, &r);
    expect_report(&r, "hakmem: invalid free(0x", g_target);
    hak_free(p);
}

/* An exited thread gave its cache back: the blocks wait in the central
 * exchange or their slabs, still marked free. */
static void *alloc_free_exit(void *arg)
{
    void **v = arg;
    for (int i = 0; i < 300; i++)
        v[i] = hak_malloc(48);
    for (int i = 0; i < 300; i++)
        hak_free(v[i]);
    return NULL;
}
Test(misuse, free_block_an_exited_thread_gave_back)
{
    static void *v[300];
    pthread_t t;
    cr_assert(pthread_create(&t, NULL, alloc_free_exit, v) == 0);
    cr_assert(pthread_join(t, NULL) == 0);
    for (int i = 0; i < 300; i += 97) {
        g_target = v[i];
        struct child_result r;
        run_child(do_hak_free, NULL, &r);
        expect_report(&r, "hakmem: double free(0x", v[i]);
    }
}

/* A slab emptied and given back by malloc_trim: its pages belong to no
 * slab, so its old blocks are no blocks. */
Test(misuse, free_block_of_a_slab_given_back)
{
    size_t size = fresh_small_size(1025, 32768);
    char *p = hak_malloc(size);
    cr_assert(p);
    hak_free(p);
    hak_malloc_trim(0);
    g_target = p;
    struct child_result r;
    run_child(do_hak_free, NULL, &r);
    expect_report(&r, "hakmem: invalid free(0x", p);
}

static char global_bytes[256];
Test(misuse, free_global_address)
{
    g_target = global_bytes + 32;
    struct child_result r;
    run_child(do_hak_free, NULL, &r);
    expect_report(&r, "hakmem: invalid free(0x", global_bytes + 32);
}
Test(misuse, free_foreign_mapping)
{
    char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert(m != MAP_FAILED);
    g_target = m + 4096;
    struct child_result r;
    run_child(do_hak_free, NULL, &r);
    expect_report(&r, "hakmem: invalid free(0x", m + 4096);
    munmap(m, 1 << 16);
}


#if HAKMEM_TEST_HARDENED
/* A write into a freed block (a use after free storing a pointer) lands on
 * its free-list link. Hardened builds store links encoded with an odd key,
 * so an aligned pointer written there decodes misaligned: the next malloc
 * that would follow it aborts, naming the block. */
static void do_corrupt_then_malloc(void *arg)
{
    (void)arg;
    void **p = hak_malloc(208);
    hak_free(p);
    p[0] = (void *)&g_target; /* 8-byte aligned, like any pointer a program stores */
    void *volatile q = hak_malloc(208);
    (void)q;
}

/* fn must die by abort() with the hardened build's one line. */
static void expect_corrupted(void (*fn)(void *))
{
    struct child_result r;
    run_child(fn, NULL, &r);
    cr_assert(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGABRT, "status 0x%x; stderr:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "hakmem: corrupted free list(0x") != NULL, "stderr:\n%s", r.err);
}

Test(misuse, hardened_corrupted_link_on_malloc) { expect_corrupted(do_corrupt_then_malloc); }

/* The same with 8 KiB blocks. In a thread cache the pop's check aborts. With
 * no mid cache (HAKMEM_THREAD_MID_BYTES=0, test misuse-uncached) they wait
 * in their slab's map of returned blocks, on no list: the write steers
 * nothing, and no malloc may return the live block written there (exit 3).
 * Until 2026-12-07 they waited on a list whose link Box 2 checked; until
 * 2026-12-01 malloc crashed there on the garbage it decoded. */
static void do_corrupt_then_malloc_mid(void *arg)
{
    (void)arg;
    void *keep = hak_malloc(8192), *o[10];
    void **p = hak_malloc(8192);
    for (int i = 0; i < 10; i++)
        o[i] = hak_malloc(8192);
    hak_free(p);
    for (int i = 0; i < 10; i++)
        hak_free(o[i]);
    p[0] = keep;
    for (int i = 0; i < 100; i++) {
        void *volatile q = hak_malloc(8192);
        if (!q || q == keep)
            _exit(3);
    }
}

Test(misuse, hardened_corrupted_link_on_malloc_mid)
{
    const char *mid = getenv("HAKMEM_THREAD_MID_BYTES");
    if (!mid || strcmp(mid, "0") != 0) {
        expect_corrupted(do_corrupt_then_malloc_mid);
        return;
    }
    struct child_result r;
    run_child(do_corrupt_then_malloc_mid, NULL, &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "status 0x%x; stderr:\n%s", r.status, r.err);
}

static void *make_and_free(void *arg)
{
    void **blocks = arg;
    for (int i = 0; i < 200; i++)
        blocks[i] = hak_malloc(176);
    for (int i = 0; i < 200; i++)
        hak_free(blocks[i]);
    return NULL;
}

/* The refill guard: blocks freed by a thread that exited wait in Box 2 as
 * whole batches. Each link is rewritten to decode to an aligned address
 * outside the heap (the key is recovered from two links the test made), so
 * only the guard, not the misalignment check of malloc, can catch it. */
static void do_corrupt_batch(void *arg)
{
    (void)arg;
    static void *blocks[200];
    static char junk[64] __attribute__((aligned(16)));
    uintptr_t *a = hak_malloc(48), *b = hak_malloc(48); /* another class */
    hak_free(a);
    hak_free(b); /* b's link is a ^ key ^ b */
    uintptr_t key = b[0] ^ (uintptr_t)a ^ (uintptr_t)b;
    pthread_t t;
    pthread_create(&t, NULL, make_and_free, blocks);
    pthread_join(t, NULL);
    for (int i = 0; i < 200; i++)
        ((uintptr_t *)blocks[i])[0] = (uintptr_t)junk ^ key ^ (uintptr_t)blocks[i];
    void *volatile q = hak_malloc(176); /* this thread's first: a refill */
    (void)q;
}

Test(misuse, hardened_corrupted_batch_on_refill) { expect_corrupted(do_corrupt_batch); }
#endif

Test(misuse, usable_size_stack_address)
{
    long buf[8] = {0};
    g_target = &buf[2];
    struct child_result r;
    run_child(do_hak_usable_size, NULL, &r);
    expect_report(&r, "hakmem:", &buf[2]);
}

Test(misuse, realloc_stack_address)
{
    long buf[8] = {0};
    g_target = &buf[2];
    struct child_result r;
    run_child(do_hak_realloc, NULL, &r);
    expect_report(&r, "hakmem:", &buf[2]);
}

static void do_valid(void *arg)
{
    (void)arg;
    void *p = hak_malloc(32);
    hak_free(p);
    p = hak_malloc(100 * 1024);
    hak_free(p);
}

/* The harness itself must not produce false reports: a correct child exits 0
 * and prints nothing from hakmem. */
Test(misuse, harness_valid_child_is_silent)
{
    struct child_result r;
    run_child(do_valid, NULL, &r);
    cr_assert(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "status 0x%x; stderr:\n%s", r.status, r.err);
    cr_assert(strstr(r.err, "hakmem:") == NULL, "unexpected report: %s", r.err);
}

#ifdef HAKMEM_TEST_OVERRIDE
/* With the standard names exported, plain free() must run the same checks. */
static void do_std_free(void *arg)
{
    (void)arg;
    free(g_target);
}

static void do_std_double_free(void *arg)
{
    (void)arg;
    free(g_target);
    free(g_target);
}

Test(misuse, std_free_stack_address)
{
    char buf[64];
    memset(buf, 0, sizeof buf);
    g_target = buf;
    struct child_result r;
    run_child(do_std_free, NULL, &r);
    expect_report(&r, "hakmem: invalid free(0x", buf);
}

Test(misuse, std_double_free)
{
    void *p = malloc(48);
    cr_assert(p);
    g_target = p;
    struct child_result r;
    run_child(do_std_double_free, NULL, &r);
    expect_report(&r, "hakmem: double free(0x", p);
    free(p);
}
#endif
