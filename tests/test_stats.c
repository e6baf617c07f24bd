/* Checks hak_stats_get and hak_stats_print: exact per-class counts (local and cross-thread frees), medium and large rows, process totals, versioning. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

static struct hak_stats snap_a, snap_b;

static void snap(struct hak_stats *st)
{
    memset(st, 0xa5, sizeof *st); /* every field must be written */
    st->version = HAK_STATS_VERSION;
    cr_assert_eq(hak_stats_get(st), 0);
}

/* The row serving blocks of n bytes. */
static const struct hak_stats_class *row_for(const struct hak_stats *st, size_t n)
{
    const struct hak_stats_class *best = NULL;
    for (unsigned i = 0; i < st->nclass; i++) {
        const struct hak_stats_class *r = &st->cls[i];
        if (r->kind == HAK_STATS_LARGE && n > 1 * MiB)
            return r;
        if (r->kind != HAK_STATS_LARGE && r->block_size >= n && (!best || r->block_size < best->block_size))
            best = r;
    }
    cr_assert_not_null(best, "no row for %zu bytes", n);
    return best;
}

Test(stats, rejects_an_unknown_version)
{
    struct hak_stats st = {.version = HAK_STATS_VERSION + 1};
    errno = 0;
    cr_assert_eq(hak_stats_get(&st), -1);
    cr_assert_eq(errno, EINVAL);
}

/* A caller built against an older version has a shorter struct, ending at
 * `end`: nothing is written past it, and what it knows is filled. */
static void fills_only_up_to(unsigned version, size_t end)
{
    static unsigned char buf[sizeof(struct hak_stats) + 64];
    void *p = hak_malloc(100); /* hakmem has mapped something (hak_ names: every build) */
    memset(buf, 0xa5, sizeof buf);
    struct hak_stats *st = (struct hak_stats *)buf;
    st->version = version;
    cr_assert_eq(hak_stats_get(st), 0);
    cr_assert_gt(st->mapped, 0);
    cr_assert_gt(st->nclass, 100);
    for (size_t i = end; i < sizeof buf; i++)
        cr_assert_eq(buf[i], 0xa5, "byte %zu past version %u's struct was written", i, version);
    hak_free(p);
}

Test(stats, version_1_gets_its_fields_only) { fills_only_up_to(1, offsetof(struct hak_stats, prof_mapped)); }
Test(stats, version_2_gets_its_fields_only) { fills_only_up_to(2, offsetof(struct hak_stats, guard_mapped)); }

Test(stats, rows_cover_every_class_once)
{
    void *p = hak_malloc(100); /* with -Doverride=false nothing else has */
    snap(&snap_a);
    hak_free(p);
    cr_assert_gt(snap_a.nclass, 100);
    cr_assert_leq(snap_a.nclass, HAK_STATS_MAX_CLASSES);
    size_t prev = 0;
    for (unsigned i = 0; i < snap_a.nclass; i++) {
        const struct hak_stats_class *r = &snap_a.cls[i];
        if (r->kind == HAK_STATS_LARGE) {
            cr_assert_eq(i, snap_a.nclass - 1, "the large row comes last");
            continue;
        }
        cr_assert(r->kind == HAK_STATS_SMALL || r->kind == HAK_STATS_MEDIUM);
        cr_assert_gt(r->block_size, prev, "sizes rise: row %u", i);
        cr_assert_eq(r->block_size % 16, 0);
        prev = r->block_size;
        if (r->kind == HAK_STATS_SMALL && r->block_size <= 1024)
            cr_assert_geq(r->cap, 1, "a tiny class has a cache cap (row %u)", i);
    }
    cr_assert_eq(prev, 1 * MiB, "the last medium class is 1 MiB");
    cr_assert_neq(snap_a.backend[0], 0);
    cr_assert_gt(snap_a.mapped, 0);
    cr_assert_gt(snap_a.rss, 0);
    cr_assert_geq(snap_a.peak_rss, snap_a.rss);
    cr_assert_geq(snap_a.threads, 1);
}

/* What one thread may cache of a small class: the policy's cap, or, grown
 * for its bursts, 128 KiB of blocks (docs/design.md, "Caps that follow the
 * thread"). */
static uint64_t most_cached(const struct hak_stats_class *r)
{
    uint64_t grown = (128u << 10) / r->block_size;
    return r->cap > grown ? r->cap : grown;
}

/* One size in each kind of row; odd sizes that nothing else in the test
 * process allocates. */
static const size_t sizes[] = {200, 7000, 24 * KiB + 8, 200 * KiB, 3 * MiB};

Test(stats, counts_are_exact_for_local_frees)
{
    enum { N = 300 };
    static void *p[N];
    for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        size_t n = sizes[s], k = n > 1 * MiB ? 5 : n > 32 * KiB ? 40 : N;
        snap(&snap_a);
        for (size_t i = 0; i < k; i++)
            cr_assert_not_null(p[i] = hak_malloc(n));
        snap(&snap_b);
        const struct hak_stats_class *a = row_for(&snap_a, n), *b = row_for(&snap_b, n);
        cr_assert_eq(b->allocs - a->allocs, k, "%zu B: %llu allocs counted, %zu made", n,
                     (unsigned long long)(b->allocs - a->allocs), k);
        cr_assert_eq(b->frees, a->frees, "%zu B: no frees yet", n);
        cr_assert_eq(b->live_blocks - a->live_blocks, k, "%zu B: live", n);
        for (size_t i = 0; i < k; i++)
            hak_free(p[i]);
        snap(&snap_b);
        b = row_for(&snap_b, n);
        cr_assert_eq(b->frees - a->frees, k, "%zu B: %llu frees counted, %zu made", n,
                     (unsigned long long)(b->frees - a->frees), k);
        cr_assert_eq(b->live_blocks, a->live_blocks, "%zu B: live back where it was", n);
        if (b->kind == HAK_STATS_SMALL && b->cap) { /* -Dpool_tls=false: mid classes have no cache */
            cr_assert_gt(b->refills, a->refills, "%zu B: the cache refilled", n);
            cr_assert_leq(b->cached_blocks, most_cached(b), "%zu B: the cache holds at most its grown cap", n);
        }
    }
}

/* A thread's list length is counted, not walked (boxes/tls): a long
 * free->malloc loop must never reach Box 2, and the count must stay exact
 * through bursts. The stats derive frees from what the caches and Box 2
 * hold, so a miscount shows as a wrong live count. */
static struct hak_stats snap_c;

static void live_is(size_t n, uint64_t want, const char *when)
{
    snap(&snap_b);
    uint64_t live = row_for(&snap_b, n)->live_blocks - row_for(&snap_c, n)->live_blocks;
    cr_assert_eq(live, want, "%zu B, %s: %llu live, %llu held", n, when, (unsigned long long)live,
                 (unsigned long long)want);
}

static void *pairs_and_bursts(void *arg)
{
    enum { N = 2000 };
    static void *p[N];
    size_t n = *(size_t *)arg;
    void *q = hak_malloc(n);
    snap(&snap_a);
    live_is(n, 1, "after the first malloc");
    for (int i = 0; i < 100000; i++) {
        hak_free(q);
        cr_assert_not_null(q = hak_malloc(n));
    }
    snap(&snap_b);
    const struct hak_stats_class *a = row_for(&snap_a, n), *b = row_for(&snap_b, n);
    cr_assert_eq(b->refills, a->refills, "%zu B: the loop refilled", n);
    cr_assert_eq(b->flushes, a->flushes, "%zu B: the loop flushed", n);
    cr_assert_eq(b->cached_blocks, a->cached_blocks, "%zu B: %llu cached, was %llu", n,
                 (unsigned long long)b->cached_blocks, (unsigned long long)a->cached_blocks);
    live_is(n, 1, "after the loop");
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++)
            cr_assert_not_null(p[i] = hak_malloc(n));
        live_is(n, N + 1, "after a burst of mallocs");
        for (int i = 0; i < N; i++)
            hak_free(p[i]);
        snap(&snap_b);
        b = row_for(&snap_b, n);
        if (b->cap) { /* -Dpool_tls=false: mid classes have no cache */
            cr_assert_gt(b->flushes, a->flushes, "%zu B: %d frees never flushed", n, N);
            cr_assert_leq(b->cached_blocks, most_cached(b), "%zu B: %llu cached over the grown cap %llu", n,
                          (unsigned long long)b->cached_blocks, (unsigned long long)most_cached(b));
            cr_assert_gt(b->cached_blocks, 0, "%zu B: the flush kept nothing", n);
        }
        live_is(n, 1, "after a burst of frees");
    }
    hak_free(q);
    return NULL;
}

Test(stats, the_thread_cache_count_stays_exact)
{
    static const size_t ns[] = {40, 200, 3000};
    for (unsigned i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        pthread_t t;
        size_t n = ns[i];
        snap(&snap_c);
        cr_assert_eq(pthread_create(&t, NULL, pairs_and_bursts, &n), 0);
        pthread_join(t, NULL);
        live_is(n, 0, "after the thread's exit");
    }
}

static void *alloc_many(void *arg)
{
    void **p = arg;
    for (int i = 0; i < 500; i++)
        p[i] = hak_malloc(200);
    return NULL;
}

static void *free_many(void *arg)
{
    void **p = arg;
    for (int i = 0; i < 500; i++)
        hak_free(p[i]);
    return NULL;
}

/* Blocks made by one thread and freed by another: frees are derived from
 * Box 2's books, so they must still add up once both threads are gone. */
Test(stats, counts_are_exact_across_threads)
{
    static void *p[500];
    pthread_t t;
    snap(&snap_a);
    cr_assert_eq(pthread_create(&t, NULL, alloc_many, p), 0);
    pthread_join(t, NULL);
    cr_assert_eq(pthread_create(&t, NULL, free_many, p), 0);
    pthread_join(t, NULL);
    snap(&snap_b);
    const struct hak_stats_class *a = row_for(&snap_a, 200), *b = row_for(&snap_b, 200);
    cr_assert_eq(b->allocs - a->allocs, 500);
    cr_assert_eq(b->frees - a->frees, 500);
    cr_assert_eq(b->live_blocks, a->live_blocks);
    cr_assert_eq(b->cached_blocks, a->cached_blocks, "exited threads keep nothing cached");
    cr_assert_eq(snap_b.threads, snap_a.threads);
}

Test(stats, trim_shows_as_returned_bytes)
{
    enum { N = 2048 };
    static void *p[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(p[i] = hak_malloc(16 * KiB)); /* 32 MiB */
    snap(&snap_a);
    cr_assert_geq(snap_a.mapped, 32 * MiB);
    cr_assert_geq(snap_a.live, 32 * MiB);
    for (int i = 0; i < N; i++)
        hak_free(p[i]);
    hak_malloc_trim(0);
    snap(&snap_b);
    cr_assert_geq(snap_b.returned - snap_a.returned, 16 * MiB, "returned grew by %llu bytes",
                  (unsigned long long)(snap_b.returned - snap_a.returned));
    cr_assert_lt(snap_b.mapped, snap_a.mapped);
    cr_assert_lt(snap_b.live, snap_a.live - 30 * MiB);
}

/* A new thread gets its caches at its first small malloc: frees made
 * before that go straight back to the slabs. */
static void start_caches(void) { hak_free(hak_malloc(16)); }

struct frees {
    void **p;
    int n;
};

static void *free_all(void *arg)
{
    struct frees *f = arg;
    start_caches();
    for (int i = 0; i < f->n; i++)
        hak_free(f->p[i]);
    return NULL;
}

/* Frees n blocks from a thread that then exits: what its cache held goes
 * back to the slabs on its exit, and the caller's cache is left as it was. */
static void free_in_thread(void **p, int n)
{
    pthread_t t;
    struct frees f = {p, n};
    cr_assert_eq(pthread_create(&t, NULL, free_all, &f), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
}

/* Medium slabs: a block comes from a slab with blocks in use before an
 * empty one, and malloc_trim gives every empty slab back (the stats'
 * slab_free_blocks and slabs count both kinds). 192 KiB: 4 blocks a slab.
 * The frees run in a thread that exits, so that they reach the slabs
 * rather than this thread's cache. */
Test(stats, medium_slab_in_use_before_empty_and_trim_returns_empties)
{
    enum { SIZE = 192 * KiB, N = 8 };
    char *p[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(p[i] = hak_malloc(SIZE));
    snap(&snap_a);
    const struct hak_stats_class *r = row_for(&snap_a, SIZE);
    cr_assert_eq(r->kind, HAK_STATS_MEDIUM);
    cr_assert_eq(r->slabs, 2, "8 blocks of a 4-block class: %llu slabs", (unsigned long long)r->slabs);
    cr_assert_eq(r->slab_free_blocks, 0);
    /* Blocks come out in address order within a slab: p[0..3] and p[4..7]. */
    for (int i = 1; i < N; i++)
        if (i != 4)
            cr_assert_eq(p[i], p[i - 1] + SIZE, "block %d is not next to block %d", i, i - 1);
    /* The first slab empty, the second with one free block. */
    void *gone[] = {p[0], p[1], p[2], p[3], p[5]};
    free_in_thread(gone, 5);
    char *q = hak_malloc(SIZE);
    cr_assert_eq(q, p[5], "took %p, not the free block of the slab in use (%p)", (void *)q, (void *)p[5]);
    free_in_thread((void **)&q, 1);
    snap(&snap_b);
    r = row_for(&snap_b, SIZE);
    cr_assert_eq(r->slabs, 2);
    cr_assert_eq(r->slab_free_blocks, 5, "4 in the empty slab and 1: %llu", (unsigned long long)r->slab_free_blocks);
    for (int i = 4; i < N; i++)
        if (i != 5)
            hak_free(p[i]);
    hak_malloc_trim(0);
    snap(&snap_b);
    r = row_for(&snap_b, SIZE);
    cr_assert_eq(r->slabs, 0, "%llu medium slabs left after malloc_trim", (unsigned long long)r->slabs);
    cr_assert_eq(r->slab_free_blocks, 0);
}

/* Medium blocks of up to 256 KiB freed by a thread wait in its cache (two a
 * class, three once the class was full after a miss): counted as cached,
 * not live, and handed back LIFO without reaching the slab; malloc_trim and
 * the thread's exit give them back. */
Test(stats, medium_blocks_wait_in_the_thread_cache)
{
    enum { SIZE = 100 * KiB };
    char *p[4];
    for (int i = 0; i < 4; i++)
        cr_assert_not_null(p[i] = hak_malloc(SIZE)); /* each a miss */
    snap(&snap_a);
    const struct hak_stats_class *r = row_for(&snap_a, SIZE);
    uint64_t allocs = r->allocs, frees = r->frees, slab_free = r->slab_free_blocks;
    cr_assert_eq(r->cached_blocks, 0);
    for (int i = 0; i < 4; i++)
        hak_free(p[i]); /* p[0], p[1] held; p[2] grows the class; no room for p[3] */
    snap(&snap_b);
    r = row_for(&snap_b, SIZE);
    cr_assert_eq(r->cached_blocks, 3, "%llu cached", (unsigned long long)r->cached_blocks);
    cr_assert_eq(r->live_blocks, 0);
    cr_assert_eq(r->frees - frees, 4);
    cr_assert_eq(r->slab_free_blocks, slab_free + 1, "only p[3] went back to its slab");
    cr_assert_geq(snap_b.thread_cached, 3 * SIZE);
    char *q = hak_malloc(SIZE);
    cr_assert_eq(q, p[2], "took %p, not the last block held (%p)", (void *)q, (void *)p[2]);
    snap(&snap_b);
    r = row_for(&snap_b, SIZE);
    cr_assert_eq(r->cached_blocks, 2);
    cr_assert_eq(r->live_blocks, 1);
    cr_assert_eq(r->allocs - allocs, 1, "a cache hit is an allocation: %llu", (unsigned long long)(r->allocs - allocs));
    cr_assert_eq(r->slab_free_blocks, slab_free + 1);
    hak_free(q);
    hak_malloc_trim(0);
    snap(&snap_b);
    r = row_for(&snap_b, SIZE);
    cr_assert_eq(r->cached_blocks, 0, "malloc_trim left %llu held", (unsigned long long)r->cached_blocks);
    cr_assert_eq(r->live_blocks, 0);
    /* A thread's exit gives its held blocks back. */
    for (int i = 0; i < 2; i++)
        cr_assert_not_null(p[i] = hak_malloc(SIZE));
    free_in_thread((void **)p, 2);
    snap(&snap_b);
    r = row_for(&snap_b, SIZE);
    cr_assert_eq(r->cached_blocks, 0, "an exited thread still holds %llu", (unsigned long long)r->cached_blocks);
    cr_assert_eq(r->live_blocks, 0);
}

static sem_t snapped, freed;

static void wait_on(sem_t *s)
{
    while (sem_wait(s) != 0) { /* EINTR */
    }
}

static sem_t hold_go;

/* Starts fn in a thread and waits until it posts `freed`. */
static pthread_t start_and_wait(void *(*fn)(void *))
{
    sem_init(&snapped, 0, 0);
    sem_init(&freed, 0, 0);
    sem_init(&hold_go, 0, 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, fn, NULL), 0);
    wait_on(&freed);
    return t;
}

/* Only medium blocks, never a small one: its cache must still start. */
static void *medium_only(void *arg)
{
    (void)arg;
    void *p[3];
    for (int i = 0; i < 3; i++)
        p[i] = hak_malloc(200 * KiB);
    for (int i = 0; i < 3; i++)
        hak_free(p[i]);
    sem_post(&freed);
    wait_on(&snapped);
    return NULL;
}

Test(stats, a_thread_using_only_medium_blocks_has_a_cache)
{
    pthread_t t = start_and_wait(medium_only);
    snap(&snap_a);
    sem_post(&snapped);
    cr_assert_eq(pthread_join(t, NULL), 0);
    snap(&snap_b);
    cr_assert_eq(row_for(&snap_a, 200 * KiB)->cached_blocks, 3, "held while the thread lives (the third after a miss): %llu",
                 (unsigned long long)row_for(&snap_a, 200 * KiB)->cached_blocks);
    cr_assert_eq(row_for(&snap_b, 200 * KiB)->cached_blocks, 0);
}

static void *volatile held_elsewhere;
static void *hold_one(void *arg)
{
    (void)arg;
    start_caches();
    void *x = hak_malloc(100 * KiB);
    hak_free(x); /* held by this thread */
    held_elsewhere = x;
    sem_post(&freed);
    wait_on(&hold_go);
    return NULL;
}

static pthread_barrier_t all_done;

/* Stays alive until all have allocated, so each new thread takes another
 * of the retired records. */
static void *two_mallocs(void *arg)
{
    (void)arg;
    start_caches();
    void *a = hak_malloc(100 * KiB), *b = hak_malloc(100 * KiB);
    pthread_barrier_wait(&all_done);
    return (void *)(uintptr_t)(a == held_elsewhere || b == held_elsewhere);
}

/* A fork child retires the other threads' records: a thread it starts may
 * get one of them, but not the blocks its first owner held (that block is
 * in use for its slab and still held by a thread the child does not have). */
Test(stats, a_fork_child_thread_does_not_take_blocks_another_thread_held)
{
    pthread_t t = start_and_wait(hold_one);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) { /* as many new threads as the parent could have had records */
        enum { K = 8 };
        pthread_t u[K];
        pthread_barrier_init(&all_done, NULL, K);
        int bad = 0;
        for (int i = 0; i < K; i++)
            if (pthread_create(&u[i], NULL, two_mallocs, NULL) != 0)
                _exit(2); /* reported apart below */
        for (int i = 0; i < K; i++) {
            void *reused;
            pthread_join(u[i], &reused);
            bad |= reused != NULL;
        }
        _exit(bad);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    sem_post(&hold_go);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 2, "the child could not start its threads");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's thread got the block held by a thread it does not have");
}

static void *volatile consumed[3];

/* Frees what another thread allocates (100 KiB) and reuses its own 200 KiB
 * block: two 100 KiB blocks held, then the third when purge passes have
 * gone by, and meanwhile a hit on the 200 KiB one. */
static void *consume(void *arg)
{
    (void)arg;
    start_caches();
    hak_free(hak_malloc(200 * KiB));
    hak_free(consumed[0]);
    hak_free(consumed[1]);
    sem_post(&freed);
    wait_on(&hold_go);
    hak_free(hak_malloc(200 * KiB)); /* a hit: that class stays */
    hak_free(consumed[2]); /* no room: the class nobody took from goes back */
    sem_post(&freed);
    wait_on(&snapped);
    return NULL;
}

Test(stats, a_thread_that_only_frees_gives_held_blocks_back)
{
    for (int i = 0; i < 3; i++)
        cr_assert_not_null(consumed[i] = hak_malloc(100 * KiB));
    pthread_t t = start_and_wait(consume);
    snap(&snap_a);
    hak_malloc_trim(0); /* two purge passes go by */
    hak_malloc_trim(0);
    sem_post(&hold_go);
    wait_on(&freed);
    snap(&snap_b);
    sem_post(&snapped);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(row_for(&snap_a, 100 * KiB)->cached_blocks, 2);
    cr_assert_eq(row_for(&snap_b, 100 * KiB)->cached_blocks, 0, "still held: %llu",
                 (unsigned long long)row_for(&snap_b, 100 * KiB)->cached_blocks);
    cr_assert_eq(row_for(&snap_b, 200 * KiB)->cached_blocks, 1, "a class with a hit went back too");
}

/* What one thread holds is bounded in bytes (4 MiB, as meson.build sets:
 * the start budget, so it cannot grow), whatever the number of classes it
 * frees: two blocks of each of the 24 held classes (36-256 KiB) would be
 * 5.5 MiB. */
Test(stats, medium_cache_is_bounded_in_bytes)
{
    static const size_t held_class[24] = {36, 40, 44, 48, 52, 56, 60, 64, 72, 80, 88, 96,
                                          104, 112, 120, 128, 144, 160, 176, 192, 208, 224, 240, 256};
    enum { N = 48 };
    char *p[N];
    for (int i = 0; i < N; i++)
        cr_assert_not_null(p[i] = hak_malloc(held_class[i / 2] * KiB));
    snap(&snap_a);
    for (int i = 0; i < N; i++)
        hak_free(p[i]);
    snap(&snap_b);
    size_t held = 0, classes = 0;
    for (unsigned i = 0; i < snap_b.nclass; i++)
        if (snap_b.cls[i].kind == HAK_STATS_MEDIUM && snap_b.cls[i].cached_blocks) {
            held += snap_b.cls[i].cached_blocks * snap_b.cls[i].block_size;
            classes++;
        }
    cr_assert_leq(held, 4 * MiB, "%zu bytes held", held);
    cr_assert_geq(held, 4 * MiB - 256 * KiB, "only %zu bytes held", held);
    cr_assert_geq(classes, 8, "only %zu classes held", classes);
    /* Up to 256 KiB and no further: a 288 KiB block goes back to its slab. */
    void *big = hak_malloc(256 * KiB + 1);
    snap(&snap_a);
    hak_free(big);
    snap(&snap_b);
    cr_assert_eq(row_for(&snap_b, 256 * KiB + 1)->slab_free_blocks,
                 row_for(&snap_a, 256 * KiB + 1)->slab_free_blocks + 1, "a 288 KiB block is held");
    hak_malloc_trim(0);
}

/* A large request a little bigger than a cached mapping grows that mapping
 * (its pages move, nothing is copied or faulted in again) instead of mapping
 * a new one beside it; one far bigger maps anew. */
Test(stats, a_large_block_grows_a_smaller_cached_mapping)
{
    const size_t a = 3 * MiB, b = 3 * MiB + 512 * KiB, c = 4 * MiB - 100 * KiB;
    hak_malloc_trim(0); /* an empty large cache, whatever ran before */
    char *p = hak_malloc(a);
    cr_assert_not_null(p);
    memset(p, 0x5a, a);
    hak_free(p);
    snap(&snap_a);
    cr_assert_eq(row_for(&snap_a, a)->cached_blocks, 1);
    char *q = hak_malloc(b);
    cr_assert_not_null(q);
    snap(&snap_b);
    cr_assert_eq(row_for(&snap_b, b)->refills, row_for(&snap_a, a)->refills, "no new mapping");
    cr_assert_eq(row_for(&snap_b, b)->cached_blocks, 0);
    cr_assert_eq(row_for(&snap_b, b)->live_blocks, 1);
    cr_assert_eq(row_for(&snap_b, b)->allocs, row_for(&snap_a, a)->allocs + 1);
    cr_assert_geq(snap_b.live - snap_a.live, b, "live grew by the whole grown block");
    cr_assert_lt(snap_b.live - snap_a.live, b + 512 * KiB);
    for (size_t off = 0; off < a; off += 256 * KiB)
        cr_assert_eq(q[off], 0x5a, "byte %zu came with the mapping", off);
    cr_assert_eq(q[a - 1], 0x5a);
    cr_assert_geq(hak_malloc_usable_size(q), b);
    memset(q, 0x6b, b);
    hak_free(q);

    /* calloc on a grown mapping: zero, old bytes and new pages alike. */
    char *z = hak_calloc(1, c);
    cr_assert_not_null(z);
    snap(&snap_a);
    cr_assert_eq(row_for(&snap_a, c)->refills, row_for(&snap_b, b)->refills, "no new mapping");
    for (size_t off = 0; off < c; off += 4 * KiB)
        cr_assert_eq(z[off], 0, "calloc byte %zu", off);
    cr_assert_eq(z[c - 1], 0);
    hak_free(z);

    char *big = hak_malloc(8 * MiB); /* the cached 4 MiB is under three quarters of it */
    cr_assert_not_null(big);
    snap(&snap_b);
    cr_assert_eq(row_for(&snap_b, 8 * MiB)->refills, row_for(&snap_a, c)->refills + 1);
    cr_assert_eq(row_for(&snap_b, 8 * MiB)->cached_blocks, 1, "the smaller mapping stays cached");
    hak_free(big);
}

/* The same when the mapping cannot grow in place (a page mapped right after
 * it, or whatever already sits there): its pages move to a new address. */
Test(stats, a_large_block_grown_by_a_move_keeps_its_bytes)
{
    const size_t a = 3 * MiB, b = 3 * MiB + 512 * KiB;
    hak_malloc_trim(0);
    char *p = hak_malloc(a);
    cr_assert_not_null(p);
    memset(p, 0x3c, a);
    char *end = p + hak_malloc_usable_size(p); /* where the mapping ends */
    void *guard = mmap(end, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    cr_assert(guard != MAP_FAILED || errno == EEXIST, "mmap: %s", strerror(errno));
    hak_free(p);
    snap(&snap_a);
    char *q = hak_malloc(b);
    cr_assert_not_null(q);
    snap(&snap_b);
    cr_assert_neq(q, p, "the pages moved");
    cr_assert_eq(row_for(&snap_b, b)->refills, row_for(&snap_a, a)->refills, "no new mapping");
    for (size_t off = 0; off < a; off += 64 * KiB)
        cr_assert_eq(q[off], 0x3c, "byte %zu came with the mapping", off);
    cr_assert_geq(hak_malloc_usable_size(q), b);
    memset(q, 0x4d, b);
    char *r = hak_malloc(a); /* a new mapping, maybe over the old range, leaves q alone */
    cr_assert_not_null(r);
    memset(r, 0x5e, a);
    cr_assert_eq(q[0], 0x4d);
    hak_free(r);
    hak_free(q);
    if (guard != MAP_FAILED)
        munmap(guard, 4096);
}

Test(stats, print_writes_a_table)
{
    void *p = hak_malloc(7000);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    hak_stats_print(f);
    fclose(f);
    hak_free(p);
    cr_assert_not_null(strstr(buf, "allocs"), "%s", buf);
    cr_assert_not_null(strstr(buf, " 7168 "), "the 7000-byte block's class is listed:\n%s", buf);
    cr_assert_not_null(strstr(buf, "returned to the OS"), "%s", buf);
    cr_assert_not_null(strstr(buf, "peak"), "%s", buf);
    free(buf);
}
