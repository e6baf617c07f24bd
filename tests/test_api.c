/* Checks the documented semantics of every hak_* entry point: alignment, edge sizes, errno, realloc, calloc, usable size. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hakmem.h"
#include "test_util.h"

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* Sizes are laundered through volatile so the compiler cannot reason about
 * (or warn on) the impossible requests we make on purpose. */
static size_t launder(size_t n)
{
    volatile size_t v = n;
    return v;
}

/* 0..4096 one by one, then a geometric spread with +-1 neighbours up to 8 MiB,
 * so every size class and every class boundary gets hit. */
static size_t spread_sizes(size_t *out, size_t cap)
{
    size_t n = 0;
    for (size_t s = 0; s <= 4096 && n < cap; s++) out[n++] = s;
    for (double d = 4097; d <= 8.0 * MiB && n + 3 <= cap; d *= 1.07) {
        size_t s = (size_t)d;
        out[n++] = s - 1;
        out[n++] = s;
        out[n++] = s + 1;
    }
    size_t edges[] = {32 * KiB, 32 * KiB + 1, MiB, MiB + 1, 2 * MiB, 8 * MiB - 1, 8 * MiB};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0] && n < cap; i++) out[n++] = edges[i];
    return n;
}

/* Small blocks stay live so each size gets a fresh block rather than the one
 * just freed; big ones are freed at once to keep the test's RSS modest (they
 * come fresh from the backend anyway). */
static void *keep_small(void *p, size_t size)
{
    if (size <= 256 * KiB) return p;
    hak_free(p);
    return NULL;
}

#define MAX_SIZES 8192
static size_t g_sizes[MAX_SIZES];
static void *g_ptrs[MAX_SIZES];

Test(api, version)
{
    const char *v = hak_version();
    cr_assert(v != NULL);
    cr_assert(strncmp(v, "0.1.0", 5) == 0, "hak_version() = \"%s\"", v);
}

Test(api, malloc_alignment_every_size, .timeout = 120)
{
    size_t n = spread_sizes(g_sizes, MAX_SIZES);
    for (size_t i = 0; i < n; i++) {
        void *p = hak_malloc(g_sizes[i]);
        cr_assert(p != NULL, "hak_malloc(%zu) returned NULL", g_sizes[i]);
        cr_assert(hk_test_aligned(p, 16), "hak_malloc(%zu) = %p not 16-aligned", g_sizes[i], p);
        memset(p, 0x11, g_sizes[i]);
        g_ptrs[i] = keep_small(p, g_sizes[i]);
    }
    for (size_t i = 0; i < n; i++) hak_free(g_ptrs[i]);
}

Test(api, calloc_alignment_every_size, .timeout = 120)
{
    size_t n = spread_sizes(g_sizes, MAX_SIZES);
    for (size_t i = 0; i < n; i++) {
        void *p = hak_calloc(1, g_sizes[i]);
        cr_assert(p != NULL, "hak_calloc(1, %zu) returned NULL", g_sizes[i]);
        cr_assert(hk_test_aligned(p, 16), "hak_calloc(1, %zu) = %p not 16-aligned", g_sizes[i], p);
        cr_assert(hk_test_first_nonzero(p, g_sizes[i]) == (size_t)-1, "hak_calloc(1, %zu) not zeroed", g_sizes[i]);
        g_ptrs[i] = keep_small(p, g_sizes[i]);
    }
    for (size_t i = 0; i < n; i++) hak_free(g_ptrs[i]);
}

Test(api, realloc_alignment_every_size, .timeout = 120)
{
    size_t n = spread_sizes(g_sizes, MAX_SIZES);
    /* One block walked through every size: each realloc result must be aligned. */
    void *p = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t s = g_sizes[i] ? g_sizes[i] : 1; /* realloc(p, 0) frees: tested separately */
        void *q = hak_realloc(p, s);
        cr_assert(q != NULL, "hak_realloc(%p, %zu) returned NULL", p, s);
        cr_assert(hk_test_aligned(q, 16), "hak_realloc(.., %zu) = %p not 16-aligned", s, q);
        p = q;
    }
    hak_free(p);
    /* And fresh realloc(NULL, n) of every size. */
    for (size_t i = 0; i < n; i++) {
        void *q = hak_realloc(NULL, g_sizes[i]);
        cr_assert(q != NULL, "hak_realloc(NULL, %zu) returned NULL", g_sizes[i]);
        cr_assert(hk_test_aligned(q, 16), "hak_realloc(NULL, %zu) = %p not 16-aligned", g_sizes[i], q);
        g_ptrs[i] = keep_small(q, g_sizes[i]);
    }
    for (size_t i = 0; i < n; i++) hak_free(g_ptrs[i]);
}

Test(api, blocks_do_not_overlap, .timeout = 60)
{
    size_t n = spread_sizes(g_sizes, MAX_SIZES);
    /* Each live block carries its own pattern; a block handed out twice or two
     * overlapping blocks show up as a mismatch. Large sizes are skipped to keep
     * the working set small. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (g_sizes[i] > 2 * MiB) continue;
        g_ptrs[m] = hak_malloc(g_sizes[i]);
        cr_assert(g_ptrs[m] != NULL);
        g_sizes[m] = g_sizes[i];
        hk_test_fill(g_ptrs[m], g_sizes[m], (uint64_t)m * 7919u + 1);
        m++;
    }
    for (size_t i = 0; i < m; i++) {
        size_t bad = hk_test_check(g_ptrs[i], g_sizes[i], (uint64_t)i * 7919u + 1);
        cr_assert(bad == (size_t)-1, "block %zu (size %zu at %p) overwritten at offset %zu", i, g_sizes[i], g_ptrs[i], bad);
    }
    for (size_t i = 0; i < m; i++) hak_free(g_ptrs[i]);
}

Test(api, malloc_zero_unique)
{
    void *a = hak_malloc(0);
    void *b = hak_malloc(0);
    cr_assert(a != NULL, "hak_malloc(0) returned NULL");
    cr_assert(b != NULL, "hak_malloc(0) returned NULL");
    cr_assert(a != b, "two hak_malloc(0) calls returned the same pointer %p", a);
    hak_free(a);
    hak_free(b);
}

Test(api, free_null)
{
    errno = 1234;
    hak_free(NULL);
    cr_assert(errno == 1234, "hak_free(NULL) changed errno");
}

static void expect_enomem_malloc(size_t n)
{
    errno = 0;
    void *p = hak_malloc(launder(n));
    cr_assert(p == NULL, "hak_malloc(%zu) did not fail", n);
    cr_assert(errno == ENOMEM, "hak_malloc(%zu): errno %d, expected ENOMEM", n, errno);
}

Test(api, malloc_huge_enomem)
{
    expect_enomem_malloc(SIZE_MAX);
    expect_enomem_malloc((size_t)PTRDIFF_MAX + 1);
    expect_enomem_malloc((size_t)PTRDIFF_MAX);
    expect_enomem_malloc(SIZE_MAX - 4095);
}

Test(api, calloc_overflow_enomem)
{
    size_t cases[][2] = {{SIZE_MAX / 2, 3}, {3, SIZE_MAX / 2}, {SIZE_MAX, SIZE_MAX}, {(size_t)1 << 32, (size_t)1 << 32}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        errno = 0;
        void *p = hak_calloc(launder(cases[i][0]), launder(cases[i][1]));
        cr_assert(p == NULL, "hak_calloc(%zu, %zu) did not fail", cases[i][0], cases[i][1]);
        cr_assert(errno == ENOMEM, "hak_calloc(%zu, %zu): errno %d", cases[i][0], cases[i][1], errno);
    }
    errno = 0;
    void *p = hak_calloc(1, launder(SIZE_MAX));
    cr_assert(p == NULL && errno == ENOMEM, "hak_calloc(1, SIZE_MAX)");
}

Test(api, reallocarray_overflow_keeps_block)
{
    size_t sizes[] = {24, 3000, 100 * KiB, 2 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = hak_malloc(sizes[i]);
        cr_assert(p != NULL);
        hk_test_fill(p, sizes[i], 42 + i);
        errno = 0;
        void *q = hak_reallocarray(p, launder(SIZE_MAX / 2), 3);
        cr_assert(q == NULL, "hak_reallocarray overflow did not fail");
        cr_assert(errno == ENOMEM, "hak_reallocarray overflow: errno %d", errno);
        cr_assert(hk_test_check(p, sizes[i], 42 + i) == (size_t)-1, "old block damaged by failed hak_reallocarray");
        /* The old block must still be a valid, growable allocation. */
        q = hak_reallocarray(p, 2, sizes[i]);
        cr_assert(q != NULL);
        cr_assert(hk_test_check(q, sizes[i], 42 + i) == (size_t)-1, "hak_reallocarray lost contents");
        hak_free(q);
    }
    /* Non-overflowing reallocarray of NULL behaves as malloc. */
    void *r = hak_reallocarray(NULL, 10, 10);
    cr_assert(r != NULL && hk_test_aligned(r, 16));
    memset(r, 1, 100);
    hak_free(r);
}

Test(api, realloc_huge_keeps_block)
{
    size_t sizes[] = {1, 100, 5000, 300 * KiB, 3 * MiB};
    size_t huge[] = {SIZE_MAX, (size_t)PTRDIFF_MAX + 1, (size_t)PTRDIFF_MAX};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t h = 0; h < sizeof huge / sizeof huge[0]; h++) {
            void *p = hak_malloc(sizes[i]);
            cr_assert(p != NULL);
            hk_test_fill(p, sizes[i], 7 + i);
            errno = 0;
            void *q = hak_realloc(p, launder(huge[h]));
            cr_assert(q == NULL, "hak_realloc(%p, %zu) did not fail", p, huge[h]);
            cr_assert(errno == ENOMEM, "hak_realloc(.., %zu): errno %d", huge[h], errno);
            cr_assert(hk_test_check(p, sizes[i], 7 + i) == (size_t)-1, "old block damaged by failed realloc");
            hak_free(p);
        }
    }
}

Test(api, aligned_huge_enomem)
{
    void *p = (void *)0x1234;
    cr_assert(hak_posix_memalign(&p, 16, launder(SIZE_MAX)) == ENOMEM);
    cr_assert(p == (void *)0x1234);
    /* size + alignment overflow is the classic bug here. */
    cr_assert(hak_posix_memalign(&p, MiB, launder(SIZE_MAX - 100)) == ENOMEM);
    cr_assert(p == (void *)0x1234);
    errno = 0;
    cr_assert(hak_aligned_alloc(64, launder(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
    errno = 0;
    cr_assert(hak_memalign(4096, launder((size_t)PTRDIFF_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    cr_assert(hak_valloc(launder(SIZE_MAX)) == NULL && errno == ENOMEM);
    errno = 0;
    cr_assert(hak_pvalloc(launder(SIZE_MAX - 10)) == NULL && errno == ENOMEM);
}

/* Writes the whole usable size of an aligned block, then frees it. */
static void check_aligned_block(const char *fn, void *p, size_t align, size_t size)
{
    cr_assert(p != NULL, "%s(%zu, %zu) returned NULL", fn, align, size);
    cr_assert(hk_test_aligned(p, align), "%s(%zu, %zu) = %p misaligned", fn, align, size, p);
    size_t us = hak_malloc_usable_size(p);
    cr_assert(us >= size && us > 0, "%s(%zu, %zu): usable size %zu too small", fn, align, size, us);
    memset(p, 0x5A, us);
    hak_free(p);
}

static size_t aligned_case_size(size_t a, int k)
{
    switch (k) {
    case 0: return 1;
    case 1: return a - 1;
    case 2: return a;
    case 3: return a + 1;
    case 4: return 0; /* a block of its own, which malloc_usable_size and free accept */
    default: return 3 * a;
    }
}

Test(api, posix_memalign_all_alignments, .timeout = 120)
{
    for (size_t a = 8; a <= 64 * MiB; a <<= 1) {
        for (int k = 0; k < 6; k++) {
            size_t s = aligned_case_size(a, k);
            void *p = (void *)0x1234;
            int rc = hak_posix_memalign(&p, a, s);
            cr_assert(rc == 0, "hak_posix_memalign(%zu, %zu) = %d", a, s, rc);
            check_aligned_block("hak_posix_memalign", p, a, s);
        }
    }
}

Test(api, aligned_alloc_all_alignments, .timeout = 120)
{
    for (size_t a = 16; a <= 64 * MiB; a <<= 1) {
        for (int k = 0; k < 6; k++) {
            size_t s = aligned_case_size(a, k);
            check_aligned_block("hak_aligned_alloc", hak_aligned_alloc(a, s), a, s);
        }
    }
}

Test(api, memalign_all_alignments, .timeout = 120)
{
    for (size_t a = 16; a <= 64 * MiB; a <<= 1) {
        for (int k = 0; k < 6; k++) {
            size_t s = aligned_case_size(a, k);
            check_aligned_block("hak_memalign", hak_memalign(a, s), a, s);
        }
    }
}

Test(api, aligned_blocks_live_together)
{
    /* Many live aligned blocks at once: alignment padding must not make
     * neighbours overlap. */
    enum { N = 64 };
    void *p[N];
    size_t a[N], s[N];
    for (int i = 0; i < N; i++) {
        a[i] = (size_t)16 << (i % 12);
        s[i] = (size_t)(i * 37 % 5000) + 1;
        p[i] = hak_memalign(a[i], s[i]);
        cr_assert(p[i] && hk_test_aligned(p[i], a[i]));
        hk_test_fill(p[i], s[i], (uint64_t)i + 100);
    }
    for (int i = 0; i < N; i++) {
        cr_assert(hk_test_check(p[i], s[i], (uint64_t)i + 100) == (size_t)-1, "aligned block %d overwritten", i);
        hak_free(p[i]);
    }
}

Test(api, posix_memalign_einval)
{
    size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, 1000, 4097, ((size_t)1 << 20) + 16, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)0xdeadbeef;
        int rc = hak_posix_memalign(&p, launder(bad[i]), 64);
        cr_assert(rc == EINVAL, "hak_posix_memalign(align %zu) = %d, expected EINVAL", bad[i], rc);
        cr_assert(p == (void *)0xdeadbeef, "hak_posix_memalign(align %zu) wrote the output on error", bad[i]);
    }
    /* Bad alignment wins even with an impossible size. */
    void *p = (void *)0xdeadbeef;
    cr_assert(hak_posix_memalign(&p, 24, launder(SIZE_MAX)) == EINVAL);
    cr_assert(p == (void *)0xdeadbeef);
    /* ENOMEM leaves the output alone too. */
    cr_assert(hak_posix_memalign(&p, 64, launder(SIZE_MAX)) == ENOMEM);
    cr_assert(p == (void *)0xdeadbeef);
    /* And the smallest valid alignment works with size 0. */
    p = (void *)0xdeadbeef;
    cr_assert(hak_posix_memalign(&p, sizeof(void *), 0) == 0);
    cr_assert(p != (void *)0xdeadbeef);
    hak_free(p);
}

Test(api, aligned_alloc_einval)
{
    size_t bad[] = {0, 3, 24, 48, 1000, 4097};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        void *p = hak_aligned_alloc(launder(bad[i]), 64);
        cr_assert(p == NULL, "hak_aligned_alloc(%zu, 64) succeeded", bad[i]);
        cr_assert(errno == EINVAL, "hak_aligned_alloc(%zu, 64): errno %d, expected EINVAL", bad[i], errno);
    }
    /* C17 dropped the "size is a multiple of alignment" rule. */
    void *p = hak_aligned_alloc(64, 100);
    cr_assert(p != NULL && hk_test_aligned(p, 64));
    hak_free(p);
}

Test(api, memalign_rounds_alignment_up)
{
    struct { size_t in, expect; } c[] = {{3, 16}, {24, 32}, {48, 64}, {100, 128}, {1000, 1024}, {4097, 8192},
                                         {3 * MiB, 4 * MiB}, {0, 16}, {1, 16}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        void *p = hak_memalign(launder(c[i].in), 100);
        cr_assert(p != NULL, "hak_memalign(%zu, 100) returned NULL", c[i].in);
        cr_assert(hk_test_aligned(p, c[i].expect), "hak_memalign(%zu, 100) = %p not %zu-aligned", c[i].in, p, c[i].expect);
        cr_assert(hak_malloc_usable_size(p) >= 100);
        memset(p, 3, 100);
        hak_free(p);
    }
}

Test(api, valloc_pvalloc)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 10000, 100 * KiB, 3 * MiB + 1};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t s = sizes[i];
        void *p = hak_valloc(s);
        cr_assert(p != NULL, "hak_valloc(%zu) returned NULL", s);
        cr_assert(hk_test_aligned(p, page), "hak_valloc(%zu) = %p not page-aligned", s, p);
        cr_assert(hak_malloc_usable_size(p) >= s);
        memset(p, 1, hak_malloc_usable_size(p));
        hak_free(p);

        p = hak_pvalloc(s);
        size_t rounded = s ? (s + page - 1) / page * page : page;
        cr_assert(p != NULL, "hak_pvalloc(%zu) returned NULL", s);
        cr_assert(hk_test_aligned(p, page), "hak_pvalloc(%zu) = %p not page-aligned", s, p);
        cr_assert(hak_malloc_usable_size(p) >= rounded, "hak_pvalloc(%zu): usable %zu < %zu", s,
                  hak_malloc_usable_size(p), rounded);
        memset(p, 2, hak_malloc_usable_size(p));
        hak_free(p);
    }
}

static const size_t realloc_walk[] = {
    1, 15, 16, 17, 100, 1000, 1024, 1025, 4000, 32768, 32769, 65536,
    (size_t)1 << 20, ((size_t)1 << 20) + 1, 3 * MiB, 8 * MiB, 64 * MiB,
    8 * MiB, 3 * MiB, ((size_t)1 << 20) + 1, (size_t)1 << 20, 65536, 32769, 32768,
    4000, 1025, 1024, 1000, 100, 17, 16, 15, 1,
};

Test(api, realloc_preserves_contents, .timeout = 120)
{
    size_t n = sizeof realloc_walk / sizeof realloc_walk[0];
    for (int start = 0; start < 2; start++) {
        /* Walk once starting from malloc, once starting from realloc(NULL). */
        size_t old = realloc_walk[0];
        void *p = start ? hak_realloc(NULL, old) : hak_malloc(old);
        cr_assert(p != NULL);
        uint64_t seed = 1;
        hk_test_fill(p, old, seed);
        for (size_t i = 1; i < n; i++) {
            size_t s = realloc_walk[i];
            void *q = hak_realloc(p, s);
            cr_assert(q != NULL, "hak_realloc(%zu -> %zu) returned NULL", old, s);
            cr_assert(hk_test_aligned(q, 16));
            size_t keep = old < s ? old : s;
            size_t bad = hk_test_check(q, keep, seed);
            cr_assert(bad == (size_t)-1, "hak_realloc(%zu -> %zu) lost byte %zu", old, s, bad);
            seed = seed * 31 + i;
            hk_test_fill(q, s, seed);
            p = q;
            old = s;
        }
        hak_free(p);
    }
}

Test(api, realloc_every_pair_of_boundaries, .timeout = 60)
{
    /* All pairs around the class boundaries, in both directions, each from a
     * fresh block so in-place and moving paths both get hit. */
    static const size_t b[] = {1, 16, 17, 1023, 1024, 1025, 32767, 32768, 32769, MiB - 1, MiB, MiB + 1, 2 * MiB + 1};
    size_t n = sizeof b / sizeof b[0];
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            void *p = hak_malloc(b[i]);
            cr_assert(p);
            hk_test_fill(p, b[i], i * 100 + j);
            void *q = hak_realloc(p, b[j]);
            cr_assert(q, "hak_realloc(%zu -> %zu) returned NULL", b[i], b[j]);
            size_t keep = b[i] < b[j] ? b[i] : b[j];
            cr_assert(hk_test_check(q, keep, i * 100 + j) == (size_t)-1, "hak_realloc(%zu -> %zu) lost data", b[i], b[j]);
            cr_assert(hak_malloc_usable_size(q) >= b[j]);
            hak_free(q);
        }
    }
}

Test(api, realloc_null_and_zero)
{
    void *p = hak_realloc(NULL, 100);
    cr_assert(p != NULL && hk_test_aligned(p, 16), "hak_realloc(NULL, 100) must act as malloc");
    cr_assert(hak_malloc_usable_size(p) >= 100);
    memset(p, 9, 100);
    /* glibc semantics: realloc(p, 0) frees p and returns NULL. */
    void *q = hak_realloc(p, 0);
    cr_assert(q == NULL, "hak_realloc(p, 0) returned %p, expected NULL (block freed)", q);
    /* Same for a large block. */
    p = hak_malloc(5 * MiB);
    cr_assert(p);
    cr_assert(hak_realloc(p, 0) == NULL);
    /* realloc(NULL, 0) is malloc(0): a unique non-NULL pointer. */
    p = hak_realloc(NULL, 0);
    cr_assert(p != NULL);
    hak_free(p);
}

static const size_t calloc_sizes[] = {
    1, 8, 16, 17, 100, 500, 1000, 1024,                          /* tiny */
    1025, 2000, 4096, 10000, 20000, 32768,                       /* mid */
    32769, 65536, 100000, 500000, 1 << 20,                       /* medium */
    (1 << 20) + 1, 2 << 20, (3 << 20) + 5, 8 << 20,              /* large */
};

/* Fewer copies of the big sizes: page faults dominate their cost, and two
 * copies are enough to get a recycled block back. */
static int calloc_copies(size_t s)
{
    return s <= 32768 ? 8 : s <= (1 << 20) ? 4 : 2;
}

Test(api, calloc_zero_after_reuse, .timeout = 120)
{
    size_t n = sizeof calloc_sizes / sizeof calloc_sizes[0];
    void *p[sizeof calloc_sizes / sizeof calloc_sizes[0]][8];
    for (int round = 0; round < 8; round++) {
        /* Dirty many blocks (the whole usable size, so slack bytes are dirty
         * too), free them, and then calloc the same sizes so the dirty blocks
         * come straight back. */
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < calloc_copies(calloc_sizes[i]); k++) {
                p[i][k] = hak_malloc(calloc_sizes[i]);
                cr_assert(p[i][k]);
                memset(p[i][k], 0xAA, hak_malloc_usable_size(p[i][k]));
            }
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < calloc_copies(calloc_sizes[i]); k++) hak_free(p[i][k]);
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < calloc_copies(calloc_sizes[i]); k++) {
                size_t s = calloc_sizes[i];
                /* Vary nmemb so both the "1 x n" and "n x 1" paths are used. */
                p[i][k] = (k & 1) ? hak_calloc(s, 1) : hak_calloc(1, s);
                cr_assert(p[i][k], "hak_calloc(%zu) returned NULL", s);
                size_t bad = hk_test_first_nonzero(p[i][k], s);
                cr_assert(bad == (size_t)-1, "round %d: hak_calloc(%zu) = %p has non-zero byte at %zu", round, s, p[i][k], bad);
            }
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < calloc_copies(calloc_sizes[i]); k++) {
                /* Dirty them again before free so the next round reuses dirty memory. */
                memset(p[i][k], 0xAA, hak_malloc_usable_size(p[i][k]));
                hak_free(p[i][k]);
            }
    }
}

Test(api, calloc_smaller_than_freed_block)
{
    /* A dirty block freed at size s comes back for a slightly smaller calloc
     * in the same class; the bytes the caller asked for must be zero. */
    for (size_t s = 32; s <= 40000; s = s * 3 / 2) {
        for (int k = 0; k < 50; k++) {
            void *p = hak_malloc(s);
            cr_assert(p);
            memset(p, 0xAA, hak_malloc_usable_size(p));
            hak_free(p);
            size_t c = s - (size_t)(k % 7);
            unsigned char *q = hak_calloc(c, 1);
            cr_assert(q);
            cr_assert(hk_test_first_nonzero(q, c) == (size_t)-1, "hak_calloc(%zu) after free of dirty %zu not zero", c, s);
            hak_free(q);
        }
    }
}

Test(api, usable_size_covers_request, .timeout = 60)
{
    size_t n = spread_sizes(g_sizes, MAX_SIZES);
    for (size_t i = 0; i < n; i++) {
        void *p = hak_malloc(g_sizes[i]);
        cr_assert(p);
        size_t us = hak_malloc_usable_size(p);
        cr_assert(us >= g_sizes[i], "hak_malloc_usable_size(hak_malloc(%zu)) = %zu", g_sizes[i], us);
        /* The whole usable size is the caller's: writing it must not corrupt
         * a neighbour or allocator metadata. */
        memset(p, 0xEE, us);
        g_ptrs[i] = keep_small(p, g_sizes[i]);
    }
    /* Fresh allocations after all that writing must still behave. */
    void *fresh[256];
    for (int i = 0; i < 256; i++) {
        size_t s = (size_t)(i * 97 % 9000) + 1;
        fresh[i] = hak_malloc(s);
        cr_assert(fresh[i]);
        hk_test_fill(fresh[i], s, (uint64_t)i);
    }
    for (int i = 0; i < 256; i++) {
        size_t s = (size_t)(i * 97 % 9000) + 1;
        cr_assert(hk_test_check(fresh[i], s, (uint64_t)i) == (size_t)-1, "fresh block %d corrupted", i);
        hak_free(fresh[i]);
    }
    for (size_t i = 0; i < n; i++) hak_free(g_ptrs[i]);
    hak_free(NULL);
}

Test(api, usable_size_aligned_and_calloc)
{
    for (size_t a = 16; a <= 2 * MiB; a <<= 1) {
        size_t s[] = {1, a / 2 + 1, a + 3, 5000};
        for (int k = 0; k < 4; k++) {
            void *p = hak_memalign(a, s[k]);
            cr_assert(p);
            size_t us = hak_malloc_usable_size(p);
            cr_assert(us >= s[k], "usable size %zu < %zu for memalign(%zu)", us, s[k], a);
            memset(p, 0xEE, us);
            hak_free(p);
        }
    }
    void *c = hak_calloc(7, 13);
    cr_assert(c && hak_malloc_usable_size(c) >= 91);
    hak_free(c);
    void *r = hak_realloc(NULL, 77);
    r = hak_realloc(r, 7777);
    cr_assert(r && hak_malloc_usable_size(r) >= 7777);
    hak_free(r);
    cr_assert(hak_malloc_usable_size(NULL) == 0, "hak_malloc_usable_size(NULL) must be 0");
}

Test(api, malloc_trim_result)
{
    void *p[100];
    for (int i = 0; i < 100; i++) p[i] = hak_malloc((size_t)(i + 1) * 10000);
    for (int i = 0; i < 100; i++) hak_free(p[i]);
    int r = hak_malloc_trim(0);
    cr_assert(r == 0 || r == 1, "hak_malloc_trim returned %d", r);
    /* Allocation still works after a trim. */
    void *q = hak_malloc(123456);
    cr_assert(q);
    memset(q, 1, 123456);
    hak_free(q);
    r = hak_malloc_trim(1 << 20);
    cr_assert(r == 0 || r == 1);
}
