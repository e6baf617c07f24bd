/* libFuzzer target: turns its input into a sequence of hak_* calls over 64 slots and checks contents, alignment and usable sizes. */
/*
 * Every live block is filled over its whole usable size with a pattern that
 * depends only on (slot seed, byte offset), so:
 *   - before every free and realloc the whole usable size is checked;
 *   - after realloc the first min(old, new) requested bytes must still hold
 *     the old pattern, and the tail is filled with the same seed, so the
 *     block is again "pattern(seed) over its usable size";
 *   - a new block must not overlap any live one (checked by address range).
 * Everything is freed at the end of each input, so memory does not grow
 * across inputs; a check that fails prints one line and aborts.
 *
 * Build: see tests/fuzz/run.sh (hakmem built with -Doverride=false, so the
 * fuzzer's own malloc is glibc's, under ASan).
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hakmem.h"

#define NSLOTS 64
#define MAX_LIVE_LARGE 3
#define KIB ((size_t)1024)
#define MIB ((size_t)1024 * 1024)

struct slot {
    unsigned char *p;
    size_t size;   /* requested */
    size_t usable; /* hak_malloc_usable_size at allocation */
    size_t align;  /* requested alignment, 0 for none */
    uint64_t seed;
};

static struct slot slots[NSLOTS];
static uint64_t seed_counter;
static unsigned live_large;

/* ---- input reader --------------------------------------------------------- */

struct in {
    const uint8_t *d;
    size_t n;
};

static int in_empty(const struct in *in) { return in->n == 0; }

static uint64_t take(struct in *in, unsigned bytes)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; i++) {
        v <<= 8;
        if (in->n) {
            v |= *in->d++;
            in->n--;
        }
    }
    return v;
}

/* ---- failure reporting ---------------------------------------------------- */

static void fail(const char *what, const void *p, size_t a, size_t b)
{
    fprintf(stderr, "fuzz_hakmem: %s (ptr %p, %zu, %zu)\n", what, p, a, b);
    abort();
}

/* ---- pattern (byte i of a block = byte i%8 of word(seed, i/8)) ---------------- */

static inline uint64_t word(uint64_t seed, size_t wi)
{
    uint64_t x = seed + (uint64_t)wi * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return x;
}

static inline unsigned char pbyte(uint64_t seed, size_t i)
{
    uint64_t w = word(seed, i / 8);
    return ((const unsigned char *)&w)[i % 8];
}

static void fill_range(unsigned char *p, size_t from, size_t to, uint64_t seed)
{
    size_t i = from;
    for (; i < to && (i & 7); i++) p[i] = pbyte(seed, i);
    for (; i + 8 <= to; i += 8) {
        uint64_t w = word(seed, i / 8);
        memcpy(p + i, &w, 8);
    }
    for (; i < to; i++) p[i] = pbyte(seed, i);
}

/* First mismatching offset in [from, to), or SIZE_MAX. */
static size_t check_range(const unsigned char *p, size_t from, size_t to, uint64_t seed)
{
    size_t i = from;
    for (; i < to && (i & 7); i++)
        if (p[i] != pbyte(seed, i)) return i;
    for (; i + 8 <= to; i += 8) {
        uint64_t w = word(seed, i / 8), got;
        memcpy(&got, p + i, 8);
        if (got != w)
            for (size_t k = i; k < i + 8; k++)
                if (p[k] != pbyte(seed, k)) return k;
    }
    for (; i < to; i++)
        if (p[i] != pbyte(seed, i)) return i;
    return SIZE_MAX;
}

/* Blocks are written and checked in full up to 64 KiB; beyond, only the first
 * and last 64 bytes of every 4 KiB stride (a page lost, zeroed or handed out
 * twice still shows, at a tenth of the cost), plus the last 64 bytes of the
 * usable size (tail_*). The set depends on the offset alone, so a realloc's
 * kept prefix is checked exactly where the old block was written. */
#define FULL_BYTES (64 * KIB)
#define MIN2(a, b) ((a) < (b) ? (a) : (b))
#define MAX2(a, b) ((a) > (b) ? (a) : (b))

static void fill(unsigned char *p, size_t from, size_t to, uint64_t seed)
{
    if (from < FULL_BYTES) fill_range(p, from, MIN2(to, FULL_BYTES), seed);
    for (size_t base = MAX2(FULL_BYTES, from & ~(size_t)4095); base < to; base += 4096) {
        size_t a = MAX2(from, base), b = MIN2(to, base + 64);
        if (a < b) fill_range(p, a, b, seed);
        a = MAX2(from, base + 4032), b = MIN2(to, base + 4096);
        if (a < b) fill_range(p, a, b, seed);
    }
}

static size_t check(const unsigned char *p, size_t from, size_t to, uint64_t seed)
{
    size_t bad = SIZE_MAX;
    if (from < FULL_BYTES && (bad = check_range(p, from, MIN2(to, FULL_BYTES), seed)) != SIZE_MAX) return bad;
    for (size_t base = MAX2(FULL_BYTES, from & ~(size_t)4095); base < to; base += 4096) {
        size_t a = MAX2(from, base), b = MIN2(to, base + 64);
        if (a < b && (bad = check_range(p, a, b, seed)) != SIZE_MAX) return bad;
        a = MAX2(from, base + 4032), b = MIN2(to, base + 4096);
        if (a < b && (bad = check_range(p, a, b, seed)) != SIZE_MAX) return bad;
    }
    return SIZE_MAX;
}

static void tail_fill(unsigned char *p, size_t usable, uint64_t seed)
{
    fill_range(p, usable > 64 ? usable - 64 : 0, usable, seed);
}

/* ---- sizes ---------------------------------------------------------------- */

static int is_large(size_t n) { return n > MIB; }

/* Class boundaries and their neighbours; the last few are large. */
static const size_t edge_sizes[] = {
    0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 127, 128, 129, 255, 256, 257,
    511, 512, 513, 767, 768, 1023, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097,
    8191, 8192, 8193, 16383, 16384, 16385, 24576, 32767, 32768, 32769, 36864, 65535,
    65536, 65537, 131072, 131073, 262144, 262145, 524288, 524289, 1048575, 1048576,
    1048577, 2 * 1048576, 2 * 1048576 + 1, 4 * 1048576 - 4096, 8 * 1048576,
};
#define N_EDGE (sizeof edge_sizes / sizeof edge_sizes[0])

static size_t pick_size(struct in *in)
{
    unsigned sel = (unsigned)take(in, 1);
    uint32_t r = (uint32_t)take(in, 3);
    size_t n;
    switch (sel >> 5) { /* 8 buckets */
    case 0: case 1: case 2: n = 1 + r % 1024; break;              /* tiny */
    case 3: case 4: n = 1 + r % (32 * KIB); break;                 /* mid */
    case 5: n = 32 * KIB + 1 + r % (MIB - 32 * KIB); break;       /* medium */
    case 6: n = edge_sizes[r % N_EDGE]; break;                      /* edges */
    default:
        /* large only when the low bits also agree: about 1 in 64 overall */
        if ((sel & 7) == 7)
            n = MIB + 1 + r % (7 * MIB);
        else
            n = 1 + r % 256;
        break;
    }
    if (is_large(n) && live_large >= MAX_LIVE_LARGE) n = n % MIB + 1;
    return n;
}

/* ---- slot bookkeeping ----------------------------------------------------- */

static void check_slot(const struct slot *s, const char *when)
{
    size_t bad = check(s->p, 0, s->usable, s->seed);
    if (bad == SIZE_MAX) bad = check_range(s->p, s->usable > 64 ? s->usable - 64 : 0, s->usable, s->seed);
    if (bad != SIZE_MAX) {
        fprintf(stderr, "fuzz_hakmem: block %p size %zu usable %zu align %zu corrupt at offset %zu %s\n",
                (void *)s->p, s->size, s->usable, s->align, bad, when);
        abort();
    }
}

static void check_no_overlap(const unsigned char *p, size_t usable, const struct slot *self)
{
    for (int i = 0; i < NSLOTS; i++) {
        const struct slot *o = &slots[i];
        if (o == self || !o->p) continue;
        if (p < o->p + o->usable && o->p < p + usable) {
            fprintf(stderr, "fuzz_hakmem: new block %p (usable %zu) overlaps live block %p (usable %zu)\n",
                    (const void *)p, usable, (void *)o->p, o->usable);
            abort();
        }
    }
}

/* Checks a fresh block, then fills it: the whole usable size must be writable. */
static void adopt(struct slot *s, void *v, size_t size, size_t align, int zeroed)
{
    unsigned char *p = v;
    if ((uintptr_t)p & 15) fail("block not 16-byte aligned", p, size, align);
    if (align && ((uintptr_t)p & (align - 1))) fail("block not aligned as requested", p, size, align);
    size_t u = hak_malloc_usable_size(p);
    if (u < size) fail("usable size below requested size", p, size, u);
    if (zeroed)
        for (size_t i = 0; i < size; i++)
            if (p[i]) fail("calloc block not zero", p, size, i);
    check_no_overlap(p, u, s);
    s->p = p;
    s->size = size;
    s->usable = u;
    s->align = align;
    s->seed = ++seed_counter * 0xD6E8FEB86659FD93ull;
    fill(p, 0, u, s->seed);
    tail_fill(p, u, s->seed);
    if (is_large(u)) live_large++;
}

static void release(struct slot *s)
{
    if (!s->p) return;
    check_slot(s, "before free");
    if (hak_malloc_usable_size(s->p) != s->usable) fail("usable size changed", s->p, s->usable, hak_malloc_usable_size(s->p));
    if (is_large(s->usable)) live_large--;
    hak_free(s->p);
    s->p = NULL;
}

static void do_realloc(struct slot *s, size_t n, int array)
{
    if (s->p) check_slot(s, "before realloc");
    if (s->p && is_large(s->usable)) live_large--;
    void *q;
    if (array) {
        /* n = nmemb * 16 (when n is a multiple), else nmemb = n, size = 1 */
        q = (n % 16 == 0) ? hak_reallocarray(s->p, n / 16, 16) : hak_reallocarray(s->p, n, 1);
    } else {
        q = hak_realloc(s->p, n);
    }
    if (n == 0 && s->p) {
        /* realloc(p, 0) frees p and returns NULL (docs/api.md). */
        if (q) fail("realloc(p, 0) returned non-NULL", q, 0, 0);
        s->p = NULL;
        return;
    }
    if (!q) fail("realloc returned NULL", s->p, n, 0);
    unsigned char *p = q;
    if ((uintptr_t)p & 15) fail("realloc block not 16-byte aligned", p, n, 0);
    size_t u = hak_malloc_usable_size(p);
    if (u < n) fail("realloc usable size below requested size", p, n, u);
    if (!s->p) {
        check_no_overlap(p, u, s);
        s->seed = ++seed_counter * 0xD6E8FEB86659FD93ull;
        s->p = p;
        s->size = n;
        s->usable = u;
        s->align = 0;
        fill(p, 0, u, s->seed);
        tail_fill(p, u, s->seed);
        if (is_large(u)) live_large++;
        return;
    }
    size_t keep = s->size < n ? s->size : n;
    size_t bad = check(p, 0, keep, s->seed);
    if (bad != SIZE_MAX) {
        fprintf(stderr, "fuzz_hakmem: realloc %p (size %zu usable %zu) -> %p size %zu lost byte %zu\n",
                (void *)s->p, s->size, s->usable, (void *)p, n, bad);
        abort();
    }
    check_no_overlap(p, u, s);
    s->p = p;
    s->size = n;
    s->usable = u;
    s->align = 0;
    fill(p, keep, u, s->seed); /* same seed: the prefix already matches */
    tail_fill(p, u, s->seed);
    if (is_large(u)) live_large++;
}

static size_t pick_align(struct in *in, unsigned min_log2)
{
    unsigned k = (unsigned)take(in, 1);
    /* mostly small alignments; up to 1 MiB */
    unsigned lg = (k & 0x80) ? (k % 21) : (k % 13);
    if (lg < min_log2) lg = min_log2;
    return (size_t)1 << lg;
}

/* Aligned allocations of a large size go to the large path: keep that rare. */
static size_t aligned_size(struct in *in)
{
    size_t n = pick_size(in);
    return n;
}

/* ---- one input -------------------------------------------------------------- */

/* Only this target calls hak_* (libFuzzer's own malloc is glibc's), so the
 * stats must count exactly the blocks the slots hold. */
static void check_stats(void)
{
    static struct hak_stats st;
    st.version = HAK_STATS_VERSION;
    if (hak_stats_get(&st) != 0) fail("hak_stats_get failed", NULL, 0, 0);
    uint64_t held = 0, live = 0, bytes = 0, need = 0;
    for (int i = 0; i < NSLOTS; i++)
        if (slots[i].p) {
            held++;
            need += slots[i].size;
        }
    for (unsigned i = 0; i < st.nclass; i++) {
        live += st.cls[i].live_blocks;
        if (st.cls[i].allocs - st.cls[i].frees != st.cls[i].live_blocks)
            fail("stats row: allocs - frees != live", NULL, i, st.cls[i].live_blocks);
    }
    if (live != held) fail("stats count a different number of live blocks", NULL, live, held);
    bytes = st.live;
    if (bytes < need) fail("stats live bytes below what the slots asked for", NULL, bytes, need);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = {data, size};
    while (!in_empty(&in)) {
        unsigned op = (unsigned)take(&in, 1);
        struct slot *s = &slots[take(&in, 1) % NSLOTS];
        switch (op % 16) {
        case 0: case 1: case 2: { /* malloc */
            size_t n = pick_size(&in);
            release(s);
            void *p = hak_malloc(n);
            if (!p) fail("malloc returned NULL", NULL, n, 0);
            adopt(s, p, n, 0, 0);
            break;
        }
        case 3: { /* calloc, nmemb * size split several ways, sometimes overflowing */
            size_t n = pick_size(&in);
            unsigned how = (unsigned)take(&in, 1);
            release(s);
            if (how == 0xFF) {
                errno = 0;
                void *p = hak_calloc(SIZE_MAX / 2 + 2, 2 + (n & 7));
                if (p || errno != ENOMEM) fail("calloc overflow did not give NULL/ENOMEM", p, n, (size_t)errno);
                break;
            }
            size_t m = 1 + (how & 15), nm = n / m;
            size_t total = nm * m;
            void *p = hak_calloc(nm, m);
            if (!p) fail("calloc returned NULL", NULL, nm, m);
            adopt(s, p, total, 0, 1);
            break;
        }
        case 4: case 5: /* realloc */
            do_realloc(s, pick_size(&in), 0);
            break;
        case 6: /* reallocarray */
            do_realloc(s, pick_size(&in), 1);
            break;
        case 7: { /* posix_memalign */
            size_t a = pick_align(&in, 3), n = aligned_size(&in);
            unsigned bad = (unsigned)take(&in, 1);
            release(s);
            void *p = (void *)0x1;
            if (bad == 0xFF) { /* not a power of two, or below sizeof(void *) */
                size_t ba = (a == 8) ? 4 : a + a / 2;
                int rc = hak_posix_memalign(&p, ba, n);
                if (rc != EINVAL || p != (void *)0x1) fail("posix_memalign bad alignment not EINVAL", p, ba, (size_t)rc);
                break;
            }
            int rc = hak_posix_memalign(&p, a, n);
            if (rc != 0 || !p) fail("posix_memalign failed", p, a, n);
            adopt(s, p, n, a, 0);
            break;
        }
        case 8: { /* aligned_alloc */
            size_t a = pick_align(&in, 0), n = aligned_size(&in);
            unsigned bad = (unsigned)take(&in, 1);
            release(s);
            if (bad == 0xFF) {
                size_t ba = a < 4 ? 0 : a + a / 2; /* 0 or not a power of two */
                errno = 0;
                void *p = hak_aligned_alloc(ba, n);
                if (p || errno != EINVAL) fail("aligned_alloc bad alignment not NULL/EINVAL", p, ba, (size_t)errno);
                break;
            }
            void *p = hak_aligned_alloc(a, n);
            if (!p) fail("aligned_alloc returned NULL", NULL, a, n);
            adopt(s, p, n, a, 0);
            break;
        }
        case 9: { /* memalign, including non-powers of two (rounded up) */
            size_t a = pick_align(&in, 0), n = aligned_size(&in);
            unsigned odd = (unsigned)take(&in, 1);
            release(s);
            size_t ask = a, expect = a;
            if (odd == 0xFF && a >= 4) {
                ask = a - a / 4; /* rounds up to a */
                expect = a;
            }
            void *p = hak_memalign(ask, n);
            if (!p) fail("memalign returned NULL", NULL, ask, n);
            adopt(s, p, n, expect, 0);
            break;
        }
        case 10: case 11: case 12: /* free */
            release(s);
            break;
        case 13: /* usable size of a live block: stable, and >= requested */
            if (s->p) {
                size_t u = hak_malloc_usable_size(s->p);
                if (u != s->usable) fail("usable size changed", s->p, s->usable, u);
                check_slot(s, "at usable-size probe");
            } else if (hak_malloc_usable_size(NULL) != 0) {
                fail("malloc_usable_size(NULL) != 0", NULL, 0, 0);
            }
            break;
        case 14: { /* malloc_trim, or valloc / pvalloc */
            unsigned k = (unsigned)take(&in, 1);
            if (k < 0x40) {
                int r = hak_malloc_trim((size_t)k);
                if (r != 0 && r != 1) fail("malloc_trim returned neither 0 nor 1", NULL, (size_t)r, 0);
            } else if (k < 0x50) {
                check_stats();
            } else {
                size_t n = pick_size(&in) % (2 * MIB);
                release(s);
                void *p = (k & 1) ? hak_valloc(n) : hak_pvalloc(n);
                if (!p) fail("valloc/pvalloc returned NULL", NULL, n, k & 1);
                adopt(s, p, n, 4096, 0);
                if ((k & 1) == 0 && s->usable < ((n + 4095) & ~(size_t)4095))
                    fail("pvalloc usable size below whole pages", p, n, s->usable);
            }
            break;
        }
        default: /* 15: free(NULL), realloc(NULL), malloc(0) corner cases */
            hak_free(NULL);
            if (!s->p) {
                void *p = hak_malloc(0);
                if (!p) fail("malloc(0) returned NULL", NULL, 0, 0);
                adopt(s, p, 0, 0, 0);
            }
            break;
        }
    }
    for (int i = 0; i < NSLOTS; i++) release(&slots[i]);
    if (live_large != 0) fail("live-large bookkeeping", NULL, live_large, 0);
    return 0;
}
