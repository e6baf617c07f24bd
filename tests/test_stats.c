/* Checks hak_stats_get and hak_stats_print: exact per-class counts (local and cross-thread frees), medium and large rows, process totals, versioning. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
            cr_assert_leq(b->cached_blocks, b->cap, "%zu B: the cache holds at most its cap", n);
        }
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

/* Medium slabs: a block comes from a slab with blocks in use before an
 * empty one, and malloc_trim gives every empty slab back (the stats'
 * slab_free_blocks and slabs count both kinds). 192 KiB: 4 blocks a slab. */
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
    for (int i = 0; i < 4; i++)
        hak_free(p[i]); /* the first slab is empty */
    hak_free(p[5]);     /* the second has one free block */
    char *q = hak_malloc(SIZE);
    cr_assert_eq(q, p[5], "took %p, not the free block of the slab in use (%p)", (void *)q, (void *)p[5]);
    hak_free(q);
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
