/* Multithreaded stress of the hak_* API with cross-thread frees; plain main() so it can be rebuilt under ThreadSanitizer. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hakmem.h"
#include "test_util.h"

#define NTHREADS 4
#define SLOTS 2048

struct block {
    unsigned char *p;
    size_t size;
};

/* One inbox per thread: other threads hand it blocks to free, so about a
 * third of all frees are remote (the producer/consumer path). */
struct inbox {
    pthread_mutex_t lock;
    struct block *items;
    size_t len, cap;
};

static struct inbox inboxes[NTHREADS];
static atomic_long failures;
static long ops_per_thread = 200000;

/* The pattern depends on the block's address and size, so a block handed
 * out twice or written by a neighbour cannot keep a matching pattern. */
static uint64_t seed_of(const void *p, size_t size)
{
    return (uint64_t)(uintptr_t)p * 0x100000001B3ull ^ (uint64_t)size;
}

static void fail(const char *what, const void *p, size_t size, size_t off)
{
    atomic_fetch_add(&failures, 1);
    fprintf(stderr, "stress: %s: block %p size %zu offset %zu\n", what, p, size, off);
}

static void verify_and_free(struct block b)
{
    size_t bad = hk_test_check(b.p, b.size, seed_of(b.p, b.size));
    if (bad != (size_t)-1) fail("pattern mismatch before free", b.p, b.size, bad);
    hak_free(b.p);
}

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = hk_test_rand(rng);
    unsigned k = (unsigned)(r % 10000);
    r >>= 16;
    if (k < 8500) return 1 + (size_t)(r % 1024);                    /* tiny, 85% */
    if (k < 9930) return 1 + (size_t)(r % (32 * 1024));             /* mid, 14.3% */
    if (k < 9995) return 32 * 1024 + 1 + (size_t)(r % (1 << 20));   /* medium, 0.65% */
    return 1 + (size_t)(r % (4 << 20));                            /* large, 0.05% */
}

static void give(int to, struct block b)
{
    struct inbox *ib = &inboxes[to];
    pthread_mutex_lock(&ib->lock);
    if (ib->len == ib->cap) {
        /* The queue's own storage comes from the system allocator on purpose:
         * it is test scaffolding, not the code under test. It is only grown
         * under the lock. */
        size_t nc = ib->cap ? ib->cap * 2 : 1024;
        struct block *ni = realloc(ib->items, nc * sizeof *ni);
        if (!ni) {
            pthread_mutex_unlock(&ib->lock);
            verify_and_free(b);
            return;
        }
        ib->items = ni;
        ib->cap = nc;
    }
    ib->items[ib->len++] = b;
    pthread_mutex_unlock(&ib->lock);
}

static void drain(int me)
{
    struct inbox *ib = &inboxes[me];
    struct block local[256];
    for (;;) {
        size_t n = 0;
        pthread_mutex_lock(&ib->lock);
        while (ib->len && n < 256) local[n++] = ib->items[--ib->len];
        pthread_mutex_unlock(&ib->lock);
        if (!n) return;
        for (size_t i = 0; i < n; i++) verify_and_free(local[i]);
    }
}

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(me + 1);
    struct block *slots = calloc(SLOTS, sizeof *slots);
    if (!slots) {
        fail("calloc of slot table", NULL, 0, 0);
        return NULL;
    }
    for (long op = 0; op < ops_per_thread; op++) {
        if ((op & 63) == 0) drain(me);
        uint64_t r = hk_test_rand(&rng);
        struct block *s = &slots[r % SLOTS];
        unsigned act = (unsigned)((r >> 32) % 100);
        if (!s->p) {
            size_t size = pick_size(&rng);
            unsigned char *p = (act < 10) ? hak_calloc(1, size) : hak_malloc(size);
            if (!p) {
                fail("allocation returned NULL", NULL, size, 0);
                continue;
            }
            if (((uintptr_t)p & 15) != 0) fail("misaligned", p, size, 0);
            if (hak_malloc_usable_size(p) < size) fail("usable size too small", p, size, hak_malloc_usable_size(p));
            if (act < 10) {
                size_t nz = hk_test_first_nonzero(p, size);
                if (nz != (size_t)-1) fail("calloc not zero", p, size, nz);
            }
            hk_test_fill(p, size, seed_of(p, size));
            s->p = p;
            s->size = size;
        } else if (act < 8) {
            /* realloc keeps the common prefix; then re-pattern for the new address. */
            size_t ns = pick_size(&rng);
            unsigned char *q = hak_realloc(s->p, ns);
            if (!q) {
                fail("realloc returned NULL", s->p, ns, 0);
                continue;
            }
            size_t keep = s->size < ns ? s->size : ns;
            size_t bad = hk_test_check(q, keep, seed_of(s->p, s->size));
            if (bad != (size_t)-1) fail("realloc lost contents", q, ns, bad);
            hk_test_fill(q, ns, seed_of(q, ns));
            s->p = q;
            s->size = ns;
        } else if (act < 8 + 31) {
            /* Hand over to another thread, which verifies and frees it. */
            int to = (me + 1 + (int)((r >> 48) % (NTHREADS - 1))) % NTHREADS;
            give(to, *s);
            s->p = NULL;
        } else {
            verify_and_free(*s);
            s->p = NULL;
        }
    }
    for (size_t i = 0; i < SLOTS; i++)
        if (slots[i].p) verify_and_free(slots[i]);
    drain(me);
    free(slots);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) ops_per_thread = atol(argv[1]);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < NTHREADS; i++) pthread_mutex_init(&inboxes[i].lock, NULL);
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 2;
        }
    for (int i = 0; i < NTHREADS; i++) pthread_join(th[i], NULL);
    /* Blocks handed to a thread after it drained for the last time. */
    for (int i = 0; i < NTHREADS; i++) {
        drain(i);
        free(inboxes[i].items);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long f = atomic_load(&failures);
    printf("stress: %d threads x %ld ops, %.2f s, %ld failures\n", NTHREADS, ops_per_thread,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, f);
    return f ? 1 : 0;
}
