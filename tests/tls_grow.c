/* Caps that follow the thread (boxes/tls/src/tls.c, medium_cache.c): bursts bigger than a class's cap grow it until they stay in the thread's cache, growth stays within its bounds, and a class left unused shrinks back; the medium cache's depths and budget likewise. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hakmem.h"
#include "hak_tls.h" /* white box: the thread's caps */

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { N = 1600, GROW_CLASS = 128 << 10, GROW_THREAD = 1 << 20 };
static void *blk[N];

static unsigned class_of(size_t n)
{
    return n <= HK_TINY_MAX ? hk_class_by16[(n + 15) >> 4] : hk_class_by128[(n + 127) >> 7];
}

static const struct hak_stats_class *row(const struct hak_stats *st, size_t n)
{
    for (unsigned i = 0; i < st->nclass; i++)
        if (st->cls[i].kind == HAK_STATS_SMALL && st->cls[i].block_size == hk_class_size[class_of(n)])
            return &st->cls[i];
    FAIL("no row for %zu B", n);
}

/* The list walked, to check the count the sweep leaves behind. */
static unsigned walk(unsigned c)
{
    unsigned n = 0;
    for (void *b = hk_tls.head[c]; b; b = hk_link_get(b))
        n++;
    return n;
}

static struct hak_stats snap(void)
{
    struct hak_stats st = {.version = HAK_STATS_VERSION};
    if (hak_stats_get(&st) != 0)
        FAIL("hak_stats_get");
    return st;
}

/* The burst of the issue that asked for this: n blocks built, written,
 * the first half freed oldest first, the rest newest first. */
static void burst(size_t size, int n)
{
    for (int i = 0; i < n; i++) {
        if (!(blk[i] = hak_malloc(size)))
            FAIL("malloc(%zu)", size);
        memset(blk[i], i, size);
    }
    for (int i = 0; i < n / 2; i++)
        hak_free(blk[i]);
    for (int i = n; i-- > n / 2;)
        hak_free(blk[i]);
}

static uint64_t box2_trips(size_t n)
{
    struct hak_stats st = snap();
    return row(&st, n)->refills + row(&st, n)->flushes;
}

/* Bursts of 1,600 blocks of 16, 32 and 64 B: after a few rounds a round
 * costs no trip to Box 2 (with the policy's caps of 128 it made 25 refills
 * and 25 flushes). */
static void *bursts_stay(void *arg)
{
    (void)arg;
    static const size_t sizes[] = {16, 32, 64};
    for (unsigned s = 0; s < 3; s++) {
        size_t n = sizes[s];
        unsigned c = class_of(n);
        struct hak_stats st = snap();
        unsigned base = row(&st, n)->cap;
        for (int round = 0; round < 8; round++)
            burst(n, N);
        uint64_t before = box2_trips(n);
        for (int round = 0; round < 50; round++)
            burst(n, N);
        uint64_t trips = box2_trips(n) - before;
        printf("%zu B: cap %u -> %u, %llu trips to Box 2 in 50 bursts of %d\n", n, base, hk_tls.cap[c],
               (unsigned long long)trips, N);
        if (trips > 0)
            FAIL("%zu B: %llu trips to Box 2 in 50 bursts after the cap grew to %u", n, (unsigned long long)trips,
                 hk_tls.cap[c]);
        if (hk_tls.cap[c] < N || hk_tls.cap[c] > 2 * N || (size_t)hk_tls.cap[c] * n > GROW_CLASS)
            FAIL("%zu B: cap %u for bursts of %d", n, hk_tls.cap[c], N);
    }
    return NULL;
}

/* A list that fills slowly, with mallocs all along (free 3, malloc 2: a
 * list that runs full after twice its cap in mallocs), is not a burst:
 * neither is the pair loop. Neither grows the cap. */
static void *slow_fill_stays(void *arg)
{
    (void)arg;
    size_t n = 48;
    unsigned c = class_of(n);
    for (int round = 0; round < 10; round++) {
        int live = 0;
        for (int i = 0; i < N; i++)
            if (!(blk[live++] = hak_malloc(n)))
                FAIL("malloc");
        while (live >= 3) {
            for (int k = 0; k < 3; k++)
                hak_free(blk[--live]);
            for (int k = 0; k < 2; k++)
                if (!(blk[live++] = hak_malloc(n)))
                    FAIL("malloc");
        }
        while (live)
            hak_free(blk[--live]);
        void *p = hak_malloc(n);
        for (int i = 0; i < 100000; i++) {
            hak_free(p);
            p = hak_malloc(n);
        }
        hak_free(p);
    }
    struct hak_stats st = snap();
    printf("48 B filled slowly: cap %u (policy %u)\n", hk_tls.cap[c], row(&st, n)->cap);
    if (hk_tls.cap[c] > row(&st, n)->cap)
        FAIL("a slow fill grew the cap to %u", hk_tls.cap[c]);
    return NULL;
}

/* Every tiny class bursting: growth stops at 1 MiB over the policy's caps. */
static void *growth_bounded(void *arg)
{
    (void)arg;
    for (int round = 0; round < 12; round++)
        for (size_t n = 16; n <= HK_TINY_MAX; n += 16)
            burst(n, (int)(GROW_CLASS / n) < N ? (int)(GROW_CLASS / n) : N);
    size_t over = 0;
    struct hak_stats st = snap();
    for (unsigned i = 0; i < st.nclass; i++) {
        const struct hak_stats_class *r = &st.cls[i];
        if (r->kind != HAK_STATS_SMALL || r->block_size > HK_TINY_MAX)
            continue;
        unsigned cap = hk_tls.cap[class_of(r->block_size)];
        if (cap > r->cap)
            over += (size_t)(cap - r->cap) * r->block_size;
    }
    printf("every tiny class bursting: caps %zu KiB over the policy's\n", over >> 10);
    if (over == 0 || over > GROW_THREAD)
        FAIL("caps %zu B over the policy's (bound %d)", over, GROW_THREAD);
    return NULL;
}

static void *trim(void *arg)
{
    (void)arg;
    hak_malloc_trim(0);
    return NULL;
}

/* fn in a thread of its own, waited for. */
static void in_thread(void *(*fn)(void *))
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, NULL) != 0)
        FAIL("pthread_create");
    pthread_join(t, NULL);
}

/* One purge pass: another thread's malloc_trim (it drains only that
 * thread's cache). The test runs with no purge thread and a long delay, so
 * passes come from here alone. */
static void pass(void) { in_thread(trim); }

/* A thread busy with another class sees each pass at its next slow path:
 * a grown class with no slow path since the pass before halves and gives
 * back what its list holds over the new cap; two passes with no slow path
 * at all (an idle thread) bring back the policy's caps and an empty cache. */
static void *shrinks(void *arg)
{
    (void)arg;
    size_t n = 32, other = 720;
    unsigned c = class_of(n);
    for (int round = 0; round < 8; round++)
        burst(n, N);
    unsigned grown = hk_tls.cap[c], held = hk_tls_held(c);
    struct hak_stats st = snap();
    unsigned policy = row(&st, n)->cap;
    burst(other, 200);
    pass();
    burst(other, 200); /* the pass: 32 B was used since the last one */
    if (hk_tls.cap[c] != grown)
        FAIL("32 B: cap %u after a pass with its bursts, was %u", hk_tls.cap[c], grown);
    pass();
    burst(other, 200); /* the pass: 32 B unused since the last one */
    unsigned halved = hk_tls.cap[c];
    printf("32 B: cap %u grown (%u held), %u after a pass unused (%u held; policy %u)\n", grown, held, halved,
           hk_tls_held(c), policy);
    if (grown <= policy || halved != grown / 2 || held <= halved || hk_tls_held(c) > halved ||
        walk(c) != hk_tls_held(c))
        FAIL("32 B: cap %u grown, %u after a pass (held %u, on the list %u, before %u)", grown, halved,
             hk_tls_held(c), walk(c), held);
    pass();
    pass();
    burst(other, 200); /* two passes since the last slow path: idle */
    printf("32 B: cap %u after going idle (%u held)\n", hk_tls.cap[c], hk_tls_held(c));
    if (hk_tls.cap[c] != policy || hk_tls_held(c) != 0 || walk(c) != 0)
        FAIL("32 B: cap %u, %u held after going idle (policy %u)", hk_tls.cap[c], hk_tls_held(c), policy);
    return NULL;
}

/* A thread that tears its data down (fills 20,000 blocks of 64 B, replaces
 * them at random, frees them all) leaves its list nearly empty: once the
 * central exchange is full and the flushes keep coming, the cap drops to an
 * eighth of the batch, so a thread that then sleeps pins few slabs (with
 * the policy's cap it kept 64-128 blocks). */
static void *teardown_empties(void *arg)
{
    (void)arg;
    enum { LIVE = 20000 };
    static void *live[LIVE];
    size_t n = 64;
    unsigned c = class_of(n);
    struct hak_stats st = snap();
    unsigned policy = row(&st, n)->cap, batch = row(&st, n)->batch;
    for (int i = 0; i < LIVE; i++)
        if (!(live[i] = hak_malloc(n)))
            FAIL("malloc");
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned s = (unsigned)(x % LIVE);
        hak_free(live[s]);
        if (!(live[s] = hak_malloc(n)))
            FAIL("malloc");
    }
    for (int i = 0; i < LIVE; i++)
        hak_free(live[i]);
    unsigned held = hk_tls_held(c);
    printf("64 B torn down: %u blocks left on the list (cap %u; policy cap %u, batch %u)\n", held, hk_tls.cap[c], policy,
           batch);
    if (held > batch / 8 || walk(c) != held)
        FAIL("64 B: %u held after the teardown (on the list %u)", held, walk(c));
    return NULL;
}

/* ---- the medium cache ---- */

static size_t medium_ceiling = HK_TLS_MEDIUM_BYTES; /* HAKMEM_THREAD_MEDIUM_BYTES */
enum { MEDIUM_START = 4 << 20, MEDIUM_GROWTH_MAX = 64 << 20 };

static size_t held_bytes(const hk_tls_medium_t *mc)
{
    size_t b = 0;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        b += (size_t)mc->count[m] * hk_medium_sizes[m];
    return b;
}
static size_t budget(const hk_tls_medium_t *mc) { return held_bytes(mc) + mc->left; }
static uint64_t hits(const hk_tls_medium_t *mc)
{
    uint64_t h = 0;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        h += mc->hits[m];
    return h;
}

/* k blocks of each of the given sizes allocated, written, then freed. */
static void medium_round(const size_t *sizes, unsigned nsizes, int k)
{
    void *blk[HK_MEDIUM_HELD_CLASSES * 40]; /* the threads' own: growers run at once */
    if ((size_t)k * nsizes > sizeof blk / sizeof *blk)
        FAIL("a round of %u x %d", nsizes, k);
    int n = 0;
    for (unsigned s = 0; s < nsizes; s++)
        for (int i = 0; i < k; i++) {
            if (!(blk[n] = hak_malloc(sizes[s])))
                FAIL("malloc(%zu)", sizes[s]);
            memset(blk[n++], 1, 64);
        }
    while (n)
        hak_free(blk[--n]);
}

/* A class reused k blocks at a time deepens one block per turn until the
 * k blocks stay in the cache (every malloc a hit), and never beyond
 * HK_TLS_MEDIUM_DEPTH_MAX. */
static void *medium_depth_grows(void *arg)
{
    (void)arg;
    static const size_t size[] = {100 << 10};
    unsigned m = hk_medium_class(size[0]);
    for (int k = 6; k <= 12; k += 6) {
        for (int round = 0; round < 12; round++)
            medium_round(size, 1, k);
        const hk_tls_medium_t *mc = hk_tls.medium;
        if (!mc)
            FAIL("no medium cache");
        uint64_t before = hits(mc);
        for (int round = 0; round < 50; round++)
            medium_round(size, 1, k);
        uint64_t got = hits(mc) - before;
        int want = k < HK_TLS_MEDIUM_DEPTH_MAX ? k : HK_TLS_MEDIUM_DEPTH_MAX;
        printf("100 KiB, %d at a time: depth %u, %llu of %d mallocs hits\n", k, mc->cap[m], (unsigned long long)got,
               50 * k);
        if (mc->cap[m] != want || got != (uint64_t)50 * want)
            FAIL("100 KiB, %d at a time: depth %u, %llu hits", k, mc->cap[m], (unsigned long long)got);
    }
    return NULL;
}

/* Every held class at once, 3 blocks each (~10 MiB): the budget grows from
 * 4 MiB to hold them (up to the ceiling) and shrinks back when unused. */
static size_t all_sizes[HK_MEDIUM_HELD_CLASSES];

static void *medium_budget_grows(void *arg)
{
    (void)arg;
    size_t want = 0;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        want += 3 * (size_t)(all_sizes[m] = hk_medium_sizes[m]);
    for (int round = 0; round < 40; round++)
        medium_round(all_sizes, HK_MEDIUM_HELD_CLASSES, 3);
    const hk_tls_medium_t *mc = hk_tls.medium;
    uint64_t before = hits(mc);
    for (int round = 0; round < 20; round++)
        medium_round(all_sizes, HK_MEDIUM_HELD_CLASSES, 3);
    uint64_t got = hits(mc) - before;
    size_t b = budget(mc), limit = want < medium_ceiling ? want : medium_ceiling;
    printf("every class, 3 each (%zu KiB): budget %zu KiB (ceiling %zu), %llu of %u mallocs hits\n", want >> 10, b >> 10,
           medium_ceiling >> 10, (unsigned long long)got, 20 * 3 * HK_MEDIUM_HELD_CLASSES);
    if (b > medium_ceiling || b < limit - (limit >> 3) || held_bytes(mc) > b)
        FAIL("budget %zu for %zu wanted (ceiling %zu), %zu held", b, want, medium_ceiling, held_bytes(mc));
    if (want <= medium_ceiling && got != 20 * 3 * HK_MEDIUM_HELD_CLASSES)
        FAIL("%llu hits: the cache grew to hold everything", (unsigned long long)got);
    /* Unused from one pass to the next: depths back to two, the budget
     * halves. */
    static const size_t other[] = {20 << 10};
    medium_round(other, 1, 1);
    pass();
    medium_round(other, 1, 40); /* a slow path: the sweep (used since the last) */
    if (budget(mc) != b)
        FAIL("budget %zu after a pass with its use, was %zu", budget(mc), b);
    pass();
    medium_round(other, 1, 40); /* the sweep: unused since the last */
    unsigned deep = 0;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        deep += mc->cap[m] > HK_TLS_MEDIUM_DEPTH || mc->count[m] > HK_TLS_MEDIUM_DEPTH;
    size_t start = MEDIUM_START < medium_ceiling ? MEDIUM_START : medium_ceiling;
    size_t half = b / 2 > start ? b / 2 : start;
    printf("after a pass unused: budget %zu KiB, %zu KiB held, %u classes deeper than %d\n", budget(mc) >> 10,
           held_bytes(mc) >> 10, deep, HK_TLS_MEDIUM_DEPTH);
    if (budget(mc) != half || held_bytes(mc) > half || deep)
        FAIL("after a pass: budget %zu (want %zu), held %zu, %u deep classes", budget(mc), half, held_bytes(mc), deep);
    pass();
    pass();
    medium_round(other, 1, 40); /* idle: the start, nothing held */
    if (budget(mc) != start || held_bytes(mc) != 0)
        FAIL("idle: budget %zu, held %zu", budget(mc), held_bytes(mc));
    return NULL;
}

/* A thread whose cache grew, then frees only blocks another thread
 * allocated (a consumer: no malloc, so no turn): its frees that find the
 * cache full meet the purge passes, and what grew shrinks pass by pass to
 * the start budget and two a class. */
enum { GIVEN = HK_MEDIUM_HELD_CLASSES * 4 };
static void *given[GIVEN];

static void *medium_producer(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < GIVEN; i++)
        if (!(given[i] = hak_malloc(all_sizes[i % HK_MEDIUM_HELD_CLASSES])))
            FAIL("malloc");
    return NULL;
}

static void consume(void)
{
    in_thread(medium_producer);
    for (unsigned i = 0; i < GIVEN; i++)
        hak_free(given[i]);
}

static void *medium_consumer_shrinks(void *arg)
{
    (void)arg;
    for (int round = 0; round < 40; round++)
        medium_round(all_sizes, HK_MEDIUM_HELD_CLASSES, 3);
    const hk_tls_medium_t *mc = hk_tls.medium;
    size_t grown = budget(mc), start = MEDIUM_START < medium_ceiling ? MEDIUM_START : medium_ceiling;
    consume();
    if (budget(mc) > grown)
        FAIL("a consumer's frees grew the budget: %zu, was %zu", budget(mc), grown);
    for (int k = 0; k < 4; k++) {
        pass();
        consume();
    }
    unsigned deep = 0;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        deep += mc->cap[m] > HK_TLS_MEDIUM_DEPTH;
    printf("a consumer through 4 passes: budget %zu KiB -> %zu KiB, %zu KiB held, %u classes deeper than %d\n",
           grown >> 10, budget(mc) >> 10, held_bytes(mc) >> 10, deep, HK_TLS_MEDIUM_DEPTH);
    if (budget(mc) != start || held_bytes(mc) > start || deep)
        FAIL("a consumer after 4 passes: budget %zu, held %zu, %u deep classes", budget(mc), held_bytes(mc), deep);
    return NULL;
}

/* Many threads growing at once: their growth together stays within
 * MEDIUM_GROWTH_MAX over the start budgets. */
enum { GROWERS = 6 };
static pthread_barrier_t grown;
static size_t grown_by[GROWERS];

static void *medium_grower(void *arg)
{
    for (int round = 0; round < 40; round++)
        medium_round(all_sizes, HK_MEDIUM_HELD_CLASSES, 6);
    grown_by[(uintptr_t)arg] = budget(hk_tls.medium) - MEDIUM_START;
    pthread_barrier_wait(&grown); /* all alive until each has looked */
    return NULL;
}

static void *medium_growth_bounded(void *arg)
{
    (void)arg;
    pthread_t t[GROWERS];
    pthread_barrier_init(&grown, NULL, GROWERS);
    for (uintptr_t i = 0; i < GROWERS; i++)
        if (pthread_create(&t[i], NULL, medium_grower, (void *)i) != 0)
            FAIL("pthread_create");
    size_t total = 0;
    for (int i = 0; i < GROWERS; i++) {
        pthread_join(t[i], NULL);
        total += grown_by[i];
    }
    size_t each = medium_ceiling > MEDIUM_START ? medium_ceiling - MEDIUM_START : 0;
    size_t bound = GROWERS * each < MEDIUM_GROWTH_MAX ? GROWERS * each : MEDIUM_GROWTH_MAX;
    printf("%d threads each wanting ~21 MiB: %zu MiB grown in all (bound %zu)\n", GROWERS, total >> 20, bound >> 20);
    if (total > bound || total + (GROWERS << 20) < bound)
        FAIL("%zu bytes grown by %d threads (bound %zu)", total, GROWERS, bound);
    return NULL;
}

int main(void)
{
    const char *e = getenv("HAKMEM_THREAD_MEDIUM_BYTES");
    if (e)
        medium_ceiling = strtoull(e, NULL, 0);
    void *(*parts[])(void *) = {bursts_stay, slow_fill_stays, growth_bounded, shrinks, teardown_empties, medium_depth_grows,
                                medium_budget_grows, medium_consumer_shrinks, medium_growth_bounded};
    unsigned nparts = sizeof parts / sizeof parts[0];
    if (medium_ceiling == 0) { /* pool_tls=false builds hold no medium blocks unless asked to */
        printf("no medium cache (HAKMEM_THREAD_MEDIUM_BYTES is 0 in this build): its parts do not apply\n");
        nparts -= 4;
    }
    for (unsigned i = 0; i < nparts; i++)
        in_thread(parts[i]); /* each part in a fresh thread: its own caps */
    printf("caps follow bursts, within bounds, and shrink\n");
    return 0;
}
