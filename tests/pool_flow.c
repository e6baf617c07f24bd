/* Checks the mid/medium/large paths as flows: blocks freed by other threads, the per-thread byte bound, slow start, memory given back after a burst, and amortised realloc growth. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_alloc_names.h"
#include "test_util.h"

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* ---- cross: mid and medium blocks allocated here, verified and freed there */

struct handoff {
    void **blocks;
    size_t *sizes;
    size_t n;
    int bad;
};

static void *verify_and_free(void *arg)
{
    struct handoff *h = arg;
    for (size_t i = 0; i < h->n; i++) {
        if (hk_test_check(h->blocks[i], h->sizes[i], i) != (size_t)-1)
            h->bad = 1;
        T_FREE(h->blocks[i]);
    }
    return NULL;
}

static int cross(void)
{
    enum { N = 6000 };
    static void *blocks[N];
    static size_t sizes[N];
    uint64_t rng = 42;
    for (int round = 0; round < 4; round++) {
        for (size_t i = 0; i < N; i++) {
            uint64_t r = hk_test_rand(&rng);
            sizes[i] = (i & 3) ? 1025 + r % (32768 - 1024) : 32769 + r % (1048576 - 32768);
            blocks[i] = T_MALLOC(sizes[i]);
            if (!blocks[i]) FAIL("malloc(%zu) failed", sizes[i]);
            hk_test_fill(blocks[i], sizes[i], i);
        }
        struct handoff h = {blocks, sizes, N, 0};
        pthread_t t;
        pthread_create(&t, NULL, verify_and_free, &h);
        pthread_join(t, NULL);
        if (h.bad) FAIL("a block freed by another thread had lost its contents");
        /* The freed blocks come back to this thread intact: fill and check again. */
        for (size_t i = 0; i < N / 4; i++) {
            void *p = T_MALLOC(4096 + i);
            if (!p) FAIL("malloc after remote frees failed");
            hk_test_fill(p, 4096 + i, i);
            if (hk_test_check(p, 4096 + i, i) != (size_t)-1) FAIL("reused block corrupt");
            T_FREE(p);
        }
    }
    printf("cross: ok\n");
    return 0;
}

/* ---- freer: a thread that only frees mid blocks parks at most its bound */

#ifdef HAKMEM_TEST_OVERRIDE
static void **g_blocks;
static size_t g_n;
static pthread_barrier_t g_bar;

static void *only_free(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < g_n; i++)
        T_FREE(g_blocks[i]);
    pthread_barrier_wait(&g_bar); /* freed everything; still alive */
    pthread_barrier_wait(&g_bar); /* main has measured */
    return NULL;
}

static int freer(void)
{
    /* 128 MiB of blocks over every mid class; meson runs this with
     * HAKMEM_THREAD_MID_BYTES=4 MiB, far below what unbounded caches park. */
    uint64_t rng = 7;
    g_n = 8192;
    g_blocks = T_MALLOC(g_n * sizeof *g_blocks);
    for (size_t i = 0; i < g_n; i++) {
        size_t sz = 1025 + hk_test_rand(&rng) % (32768 - 1024);
        g_blocks[i] = T_MALLOC(sz);
        if (!g_blocks[i]) FAIL("malloc failed");
        memset(g_blocks[i], 1, 64);
    }
    pthread_barrier_init(&g_bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, only_free, NULL);
    pthread_barrier_wait(&g_bar);
    /* In use = mapped - free: what threads hold, live or cached. malloc_trim
     * empties this thread's cache; only the pointer array is live, so what
     * remains is (almost) the freer's cache. */
    malloc_trim(0);
    struct mallinfo2 mi = mallinfo2();
    pthread_barrier_wait(&g_bar);
    pthread_join(t, NULL);
    T_FREE(g_blocks);
    printf("freer: in use while the freeing thread lives: %zu KiB\n", mi.uordblks / 1024);
    const char *b = getenv("HAKMEM_THREAD_MID_BYTES");
    size_t bound = b ? strtoul(b, NULL, 10) : (16u << 20);
    if (mi.uordblks > bound + (1u << 20))
        FAIL("a free-only thread parks %zu KiB of mid blocks (bound %zu KiB)", mi.uordblks / 1024, bound / 1024);
    return 0;
}
#endif

/* ---- idle: a thread that comes back after idling gives its cache back first */

static pthread_barrier_t i_bar;

static void *idler(void *arg)
{
    (void)arg;
    uint64_t rng = 11;
    void **v = T_MALLOC(4096 * sizeof *v);
    for (int round = 0; round < 2; round++) { /* fill every mid cache */
        for (size_t i = 0; i < 4096; i++)
            v[i] = T_MALLOC(1025 + hk_test_rand(&rng) % (32768 - 1024));
        for (size_t i = 0; i < 4096; i++)
            T_FREE(v[i]);
    }
    T_FREE(v);
    pthread_barrier_wait(&i_bar); /* caches full */
    pthread_barrier_wait(&i_bar); /* main waited: this thread was idle */
    T_FREE(T_MALLOC(700));        /* a class it never used: a Box 1 slow path */
    pthread_barrier_wait(&i_bar);
    pthread_barrier_wait(&i_bar);
    return NULL;
}

static int idle(void)
{
    if (strstr(hak_version(), "shared pool"))
        return 77; /* -Dpool_tls=false: mid blocks have no thread cache to trim */
    pthread_barrier_init(&i_bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, idler, NULL);
    pthread_barrier_wait(&i_bar);
    malloc_trim(0); /* this thread's own cache out of the picture */
    size_t before = mallinfo2().uordblks;
    usleep(2500000); /* purge passes go by (at least one a second) */
    pthread_barrier_wait(&i_bar);
    pthread_barrier_wait(&i_bar);
    malloc_trim(0);
    size_t after = mallinfo2().uordblks;
    pthread_barrier_wait(&i_bar);
    pthread_join(t, NULL);
    printf("idle: the idle thread's cache %zu KiB before, %zu KiB after its next slow path\n", before / 1024,
           after / 1024);
    if (before < (2u << 20)) FAIL("the thread's caches were not filled (%zu KiB): the test proves nothing", before / 1024);
    if (after > (1u << 20)) FAIL("an idle thread kept %zu KiB cached after its next slow path", after / 1024);
    return 0;
}

/* ---- fresh: a thread that uses each mid class once faults in little more */

static pthread_barrier_t f_bar;

static void *one_of_each(void *arg)
{
    size_t *n = arg;
    void *v[128];
    for (size_t s = 1025; s <= 32768; s += 512) {
        v[*n] = T_MALLOC(s);
        if (!v[*n]) FAIL("malloc(%zu) failed", s);
        ((char *)v[*n])[0] = 1;
        ++*n;
    }
    pthread_barrier_wait(&f_bar); /* measured while the blocks are live */
    pthread_barrier_wait(&f_bar);
    for (size_t i = 0; i < *n; i++)
        T_FREE(v[i]);
    return NULL;
}

/* Blocks of classes of 4 KiB and up cached by all threads (hak_stats). */
static uint64_t page_class_cached(void)
{
    static struct hak_stats st;
    st.version = HAK_STATS_VERSION;
    if (hak_stats_get(&st) != 0) FAIL("hak_stats_get failed");
    uint64_t n = 0;
    for (unsigned i = 0; i < st.nclass; i++)
        if (st.cls[i].kind == HAK_STATS_SMALL && st.cls[i].block_size >= 4096)
            n += st.cls[i].cached_blocks;
    return n;
}

static int fresh(void)
{
    uint64_t cached_before = page_class_cached();
    size_t n = 0, before = hk_test_rss();
    pthread_barrier_init(&f_bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, one_of_each, &n);
    pthread_barrier_wait(&f_bar);
    size_t after = hk_test_rss();
    uint64_t cached = page_class_cached() - cached_before;
    pthread_barrier_wait(&f_bar);
    pthread_join(t, NULL);
    size_t grew = after > before ? after - before : 0;
    printf("fresh: %zu mid blocks (one page each written) grew RSS by %zu KiB; the thread caches %llu "
           "blocks of 4 KiB and up\n", n, grew / 1024, (unsigned long long)cached);
    /* Measured: 356-424 KiB (thread stack and slab headers included); 448-544
     * when each class's first refill took 4 blocks, 1,776 with whole batches
     * of never-used blocks, each faulted in by its link. */
    if (grew > (1u << 20)) FAIL("RSS grew by %zu KiB: the refills faulted in blocks nobody asked for", grew / 1024);
    /* A first refill of a class of 4 KiB and up takes the one block asked for
     * (a fresh block is a page fault): 10 were left cached here when it took 4. */
    if (cached != 0) FAIL("the thread caches %llu blocks of 4 KiB and up it never asked for", (unsigned long long)cached);
    return 0;
}

/* ---- slow: a thread that uses each tiny class once caches little of each */

static void *one_tiny_each(void *arg)
{
    (void)arg;
    void *v[64];
    for (int i = 0; i < 64; i++) {
        v[i] = hak_malloc(16 * (size_t)(i + 1)); /* 16 B .. 1 KiB: every tiny class */
        if (!v[i]) FAIL("malloc failed");
    }
    pthread_barrier_wait(&f_bar);
    pthread_barrier_wait(&f_bar);
    for (int i = 0; i < 64; i++)
        hak_free(v[i]);
    return NULL;
}

static uint64_t tiny_cached(void)
{
    static struct hak_stats st;
    st.version = HAK_STATS_VERSION;
    if (hak_stats_get(&st) != 0) FAIL("hak_stats_get failed");
    uint64_t n = 0, classes = 0;
    for (unsigned i = 0; i < st.nclass; i++)
        if (st.cls[i].kind == HAK_STATS_SMALL && st.cls[i].block_size <= 1024) {
            n += st.cls[i].cached_blocks;
            classes++;
        }
    if (classes < 32) FAIL("only %llu tiny classes in the stats", (unsigned long long)classes);
    return n;
}

static int slow(void)
{
    pthread_barrier_init(&f_bar, NULL, 2);
    uint64_t before = tiny_cached();
    pthread_t t;
    pthread_create(&t, NULL, one_tiny_each, NULL);
    pthread_barrier_wait(&f_bar);
    uint64_t held = tiny_cached() - before;
    pthread_barrier_wait(&f_bar);
    pthread_join(t, NULL);
    printf("slow: a thread that took one block of each tiny class caches %llu more tiny blocks\n",
           (unsigned long long)held);
    /* The 64 sizes fall in 32 tiny classes. Measured: 67 with slow start (a
     * class carves what the thread has used, at least 4), 983 when each
     * class's first refill carved a whole batch (16-64 blocks). */
    if (held > 4 * 64) FAIL("the thread parked %llu tiny blocks for 64 it used", (unsigned long long)held);
    return 0;
}

/* ---- purge: after a burst of medium and large blocks, RSS comes back */

static int purge(void)
{
    size_t start = hk_test_rss();
    static const size_t sizes[] = {256 << 10, 4 << 20};
    for (int round = 0; round < 2; round++) {
        for (int k = 0; k < 2; k++) {
            size_t sz = sizes[k], n = (256u << 20) / sz;
            void **v = T_MALLOC(n * sizeof *v);
            for (size_t i = 0; i < n; i++) {
                v[i] = T_MALLOC(sz);
                if (!v[i]) FAIL("malloc(%zu) failed", sz);
                for (size_t o = 0; o < sz; o += 4096) /* every page resident */
                    ((char *)v[i])[o] = 1;
            }
            for (size_t i = 0; i < n; i++)
                T_FREE(v[i]);
            T_FREE(v);
        }
    }
    size_t peak = hk_test_rss(), now = peak;
    /* Nothing but time: the purge delay (250 ms) and the background thread. */
    for (int i = 0; i < 40 && now > start + (8u << 20); i++) {
        usleep(100000);
        now = hk_test_rss();
    }
    printf("purge: RSS start %zu KiB, after frees %zu KiB, 4 s later at most %zu KiB\n", start / 1024,
           peak / 1024, now / 1024);
    if (now > start + (8u << 20)) FAIL("RSS did not come back within 8 MiB of the start");
    return 0;
}

/* ---- grow: realloc growth keeps every byte and does not copy at each step */

static int grow(void)
{
    size_t n = 1024, moves = 0, moves_medium = 0;
    unsigned char *p = T_MALLOC(n);
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 131);
    while (n < (64u << 20)) {
        size_t m = n + n / 16 + 4096;
        unsigned char *q = T_REALLOC(p, m);
        if (!q) FAIL("realloc(%zu) failed", m);
        if (q != p) {
            moves++;
            if (n > 32768 && m <= (1u << 20)) moves_medium++;
        }
        /* Bytes up to the old size survive; only the new tail is written. */
        for (size_t i = 0; i < n; i += (i < 65536 ? 1 : 61))
            if (q[i] != (unsigned char)(i * 131)) FAIL("byte %zu lost growing %zu -> %zu", i, n, m);
        for (size_t i = n; i < m; i++) q[i] = (unsigned char)(i * 131);
        p = q;
        n = m;
    }
    for (size_t i = 0; i < n; i += 4093)
        if (p[i] != (unsigned char)(i * 131)) FAIL("byte %zu lost at the end", i);
    T_FREE(p);
    printf("grow: 1 KiB -> 64 MiB, %zu moves (%zu in 32 KiB-1 MiB)\n", moves, moves_medium);
    /* ~50 steps cross the medium range; a medium block doubles when it
     * grows (32 KiB -> 1 MiB in 5 moves; 5/4 steps took 16). */
    if (moves_medium > 6) FAIL("realloc moved %zu times in the medium range", moves_medium);
    return 0;
}

/* ---- reuse: a thread's own blocks, freed in random order, come back slab by slab */

static int cmp_addr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* The blocks of the 64 B class this thread's cache holds. */
static uint64_t cached_64(void)
{
    struct hak_stats st = {.version = HAK_STATS_VERSION};
    if (hak_stats_get(&st))
        return 0;
    for (unsigned i = 0; i < st.nclass; i++)
        if (st.cls[i].kind == HAK_STATS_SMALL && st.cls[i].block_size == 64)
            return st.cls[i].cached_blocks;
    return 0;
}

/* 40,000 blocks of 64 B (2.5 MB) freed in a random order, then allocated
 * again: past what the thread's cache held (the last ones freed, in that
 * order), each 1,000 in a row lie in a few dozen pages. Through the central
 * exchange they came back in the order freed, ~500 pages per 1,000 (python3
 * with PYTHONMALLOC=malloc ran its later rounds 50% slower), and the lists
 * the thread gave the exchange while tearing down did until they went back
 * to their slabs at its next refill (344 pages for the first 1,000). */
static int reuse(void)
{
    enum { N = 40000, WIN = 1000 };
    static void *p[N];
    static uintptr_t pages[WIN];
    for (int i = 0; i < N; i++) {
        p[i] = T_MALLOC(64);
        if (!p[i]) FAIL("malloc(64)");
        memset(p[i], 1, 64);
    }
    uint64_t r = 0x2545F4914F6CDD1Dull;
    for (int i = N - 1; i > 0; i--) { /* Fisher-Yates with an LCG */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int j = (int)((r >> 33) % (uint64_t)(i + 1));
        void *t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    for (int i = 0; i < N; i++) T_FREE(p[i]);
    int skip = (int)cached_64();
    if (skip > N / 4) FAIL("the cache holds %d blocks of 64 B", skip);
    for (int i = 0; i < N; i++) {
        p[i] = T_MALLOC(64);
        if (!p[i]) FAIL("malloc(64) again");
    }
    unsigned scattered = 0, most = 0, runs = 0;
    for (int w = skip; w + WIN <= N; w += WIN, runs++) {
        for (int i = 0; i < WIN; i++) pages[i] = (uintptr_t)p[w + i] >> 12;
        qsort(pages, WIN, sizeof pages[0], cmp_addr);
        unsigned distinct = 1;
        for (int i = 1; i < WIN; i++) distinct += pages[i] != pages[i - 1];
        scattered += distinct > 100;
        if (distinct > most) most = distinct;
    }
    for (int i = 0; i < N; i++) T_FREE(p[i]);
    printf("reuse: 40,000 blocks of 64 B freed in random order, allocated again: past the %d the cache held, "
           "%u of %u runs of 1,000 spread over more than 100 pages; at most %u pages\n", skip, scattered, runs, most);
    if (scattered) FAIL("%u runs of 1,000 blocks over 100 pages", scattered);
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "cross")) return cross();
    if (!strcmp(what, "purge")) return purge();
    if (!strcmp(what, "grow")) return grow();
    if (!strcmp(what, "fresh")) return fresh();
    if (!strcmp(what, "slow")) return slow();
    if (!strcmp(what, "reuse")) return reuse();
#ifdef HAKMEM_TEST_OVERRIDE
    if (!strcmp(what, "freer")) return freer();
    if (!strcmp(what, "idle")) return idle();
#else
    if (!strcmp(what, "idle")) return 77;
    if (!strcmp(what, "freer")) return 77; /* needs mallinfo2 from hakmem */
#endif
    fprintf(stderr, "usage: pool_flow cross|freer|idle|purge|grow|fresh|slow|reuse\n");
    return 2;
}
