/* api.c — the public entry points: routing by size to Box 1, medium spans or the large path, and their edge cases. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_tls.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* ---- allocation --------------------------------------------------------- */

/* Out of memory: free memory kept for reuse (empty slabs and regions, the
 * large cache, this thread's cache) may be what stands in the way. */
static HK_COLD void release_kept_memory(void)
{
    bool pending = false;
    hk_tls_drain();
    hk_refill_purge(0, &pending);
    hk_large_purge(0, &pending);
}

static HK_NOINLINE void *small_miss(unsigned c)
{
    hk_init();
    void *p = hk_tls_refill(c);
    if (HK_UNLIKELY(!p)) {
        release_kept_memory();
        if (!(p = hk_tls_refill(c)))
            errno = ENOMEM;
    }
    hk_purge_safe_point();
    return p;
}

static void *big_try(size_t n, size_t align, bool *zeroed)
{
    if (n <= HK_MEDIUM_MAX && align <= HK_OS_PAGE)
        return hk_medium_alloc(n, zeroed);
    return hk_large_alloc(n, align, zeroed);
}

/* Medium or large; *zeroed tells calloc whether the memory is known zero. */
static HK_NOINLINE void *big_alloc(size_t n, size_t align, bool *zeroed)
{
    hk_init();
    /* Sizes no mapping can hold fail at once, without purging anything. */
    if (n > PTRDIFF_MAX / 2 || align > PTRDIFF_MAX / 4) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = big_try(n, align, zeroed);
    if (HK_UNLIKELY(!p)) {
        release_kept_memory();
        if (!(p = big_try(n, align, zeroed)))
            errno = ENOMEM;
    }
    hk_purge_safe_point();
    return p;
}

/* Up to 256 KiB a medium block may come from this thread's cache, with no
 * lock (calloc goes to Box 2, which knows which blocks are still zero). */
static HK_NOINLINE void *medium_miss(size_t n, unsigned m)
{
    hk_tls_medium_miss(m);
    bool zeroed;
    return big_alloc(n, 0, &zeroed);
}
static HK_NOINLINE void *medium_alloc(size_t n)
{
    unsigned m = hk_medium_class(n);
    hk_tls_medium_t *mc = hk_tls_medium_for(m);
    if (HK_UNLIKELY(!mc))
        return medium_miss(n, m);
    return hk_tls_medium_take(mc, m);
}

HK_INLINE void *route(hk_tls_t *t, size_t n)
{
    size_t c;
    if (HK_LIKELY(n <= HK_TINY_MAX)) /* one compare for the commonest sizes */
        c = hk_class_by16[(n + 15) >> 4];
    else if (HK_LIKELY(n <= HK_SMALL_MAX))
        c = hk_class_by128[(n + 127) >> 7];
    else if (n <= HK_MEDIUM_HELD_MAX)
        return medium_alloc(n);
    else {
        bool zeroed;
        return big_alloc(n, 0, &zeroed);
    }
    void *p = hk_tls_pop(t, c);
    if (HK_LIKELY(p != NULL)) {
        t->count[c]++;
        return p;
    }
    return small_miss(c);
}

/* The thread's sampling countdown ran out on this allocation: it may be
 * guarded (its own slot, exactly n bytes), profiled, or both. */
static HK_NOINLINE void *alloc_sampled(size_t n, size_t room, size_t align)
{
    unsigned take = hk_sample_next(n);
    void *p = take & HK_SAMPLE_GUARD ? hk_guard_alloc(n, align) : NULL;
    if (!p && (take & HK_SAMPLE_PROF) && align <= 16 && room < HK_SMALL_MAX - HK_PROF_HEAD) {
        /* Profiled, its record in a head of its own block (hk_prof_record):
         * no page marked, no table entry. A block of 48 bytes or more, so
         * that the program's pointer is never a block start. */
        p = route(hk_tls_self(), (room ? room : 1) + HK_PROF_HEAD);
        if (p)
            p = hk_prof_record(p, n, true);
        __asm__("" : "+r"(p)); /* no tail call: a static build leaves out two frames (prof.c) */
        return p;
    }
    if (!p)
        p = route(hk_tls_self(), room);
    if (p && (take & HK_SAMPLE_PROF))
        hk_prof_record(p, n, false);
    return p;
}

/* A block of room bytes for a request of n aligned to align (realloc's
 * headroom, an aligned block's rounding): the samplers see n. */
HK_INLINE void *alloc_as(size_t n, size_t room, size_t align)
{
    hk_tls_t *t = hk_tls_self();
    if (hk_tls_sample_due(t, n))
        return alloc_sampled(n, room, align);
    return route(t, room);
}

HK_INLINE void *alloc(size_t n) { return alloc_as(n, n, 16); }

/* The countdown for the paths that bypass alloc (big calloc and aligned
 * blocks): which samplers take the block about to be made. */
HK_INLINE unsigned sample_big(size_t n) { return hk_tls_sample_due(hk_tls_self(), n) ? hk_sample_next(n) : 0; }

/* big_alloc for a request of n bytes, counted and, when due, sampled. */
HK_INLINE void *big_alloc_counted(size_t n, size_t align, bool *zeroed)
{
    unsigned take = sample_big(n);
    void *p = NULL;
    if (HK_UNLIKELY(take & HK_SAMPLE_GUARD) && (p = hk_guard_alloc(n, align)))
        *zeroed = false;
    else
        p = big_alloc(n, align, zeroed);
    if (p && (take & HK_SAMPLE_PROF))
        hk_prof_record(p, n, false);
    return p;
}

HK_HOT_ENTRY void *hak_malloc(size_t n) { return alloc(n); }

void *hak_calloc(size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    if (n <= HK_SMALL_MAX) {
        void *p = alloc(n);
        if (p)
            memset(p, 0, n);
        return p;
    }
    bool zeroed;
    void *p = big_alloc_counted(n, 0, &zeroed);
    if (p && !zeroed)
        memset(p, 0, n); /* fresh pages are zero already: no second pass */
    return p;
}

/* Alignment is a power of two. Slabs start on 64 KiB boundaries, so blocks
 * of a power-of-two class are aligned to their size (medium: to 64 KiB) and
 * every medium block to 4 KiB: an aligned block is never an offset pointer. */
static void *aligned(size_t align, size_t n)
{
    if (n == 0) /* a block of its own, as malloc(0)'s: a 0-byte large mapping would end at p */
        n = 1;
    if (align <= 16)
        return alloc(n);
    size_t want = n > align ? n : align;
    bool zeroed;
    if (want <= HK_MEDIUM_MAX && align <= HK_PAGE_SIZE) {
        if (want <= HK_SMALL_MAX || align > HK_OS_PAGE)
            want = (size_t)1 << (64 - __builtin_clzll(want - 1));
        return alloc_as(n, want, align);
    }
    return big_alloc_counted(n, align, &zeroed);
}

int hak_posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || !hk_is_pow2(align))
        return EINVAL;
    int saved = errno;
    void *p = aligned(align, n);
    if (!p) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

/* C17 (DR 460) and newer glibc: a non-power-of-two alignment fails with
 * EINVAL; glibc 2.36 rounded it up. Any size is accepted. */
void *hak_aligned_alloc(size_t align, size_t n)
{
    if (!hk_is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(align, n);
}

/* memalign is glibc's: a non-power-of-two alignment is rounded up. */
void *hak_memalign(size_t align, size_t n)
{
    if (align > ((size_t)1 << 62)) {
        errno = EINVAL;
        return NULL;
    }
    if (!hk_is_pow2(align))
        align = align < 2 ? 1 : (size_t)1 << (64 - __builtin_clzll(align - 1));
    return aligned(align, n);
}

void *hak_valloc(size_t n) { return aligned(HK_OS_PAGE, n); }

void *hak_pvalloc(size_t n)
{
    if (n > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    return aligned(HK_OS_PAGE, hk_align_up(n ? n : 1, HK_OS_PAGE));
}

/* ---- free and size queries --------------------------------------------- */

/* A handed-out block of the slab of record pg (or a free one). */
HK_INLINE bool slab_block(const hk_page_face_t *pg, const void *p)
{
    return hk_slab_is_block_start(pg, p) && hk_slab_is_carved(pg, p);
}

/* The block that p, in a slab of record pg, is HK_PROF_HEAD bytes into,
 * when its class could hold a head (blocks of 16 and 32 bytes cannot: p's
 * neighbour, whose words are not ours to read, would be the block), else
 * NULL. It is in p's slab whenever it passes slab_block (a block of the
 * span before would end before p). */
HK_INLINE void *head_of(const hk_page_face_t *pg, void *p)
{
    void *blk = (char *)p - HK_PROF_HEAD;
    return hk_prof_on && hk_class_size[pg->cls] > HK_PROF_HEAD && slab_block(pg, blk) ? blk : NULL;
}
/* p's block when it holds p's heap profile record (hk_prof_record). */
HK_INLINE void *recorded_inside(const hk_page_face_t *pg, void *p)
{
    void *blk = head_of(pg, p);
    return blk && hk_prof_is_inside(blk) ? blk : NULL;
}

/* Block size of the small block p, aborting on a pointer that is not one
 * (or one sitting in a free list: a use after free). */
static size_t small_check(const hk_page_face_t *pg, void *p, const char *op)
{
    if (HK_UNLIKELY(!slab_block(pg, p) || hk_is_tagged(p))) {
        if (recorded_inside(pg, p))
            return hk_class_size[pg->cls] - HK_PROF_HEAD;
        hk_fatal_op("invalid", op, p);
    }
    return hk_class_size[pg->cls];
}

static HK_NOINLINE void free_big(hk_chunk_t *ch, void *p)
{
    if (ch->kind == HK_CHUNK_REGION) {
        if (hk_tls_medium_put(ch, p))
            return; /* held by this thread: nothing went back to Box 2 */
        hk_medium_free(ch, p);
    } else
        hk_large_free(ch, p, "free");
    hk_purge_kick();
}

/* A block of a held medium class m, found by the slab map. */
static HK_NOINLINE void free_medium_slow(unsigned m, void *p)
{
    if (hk_tls_medium_free_slow(m, p))
        return;
    hk_medium_free(hk_slabmap_chunk(p), p);
    hk_purge_kick();
}
/* Frameless: the slow half is a tail call. */
static HK_NOINLINE void free_medium(unsigned m, void *p)
{
    if (HK_UNLIKELY(!hk_tls_medium_free(m, p)))
        free_medium_slow(m, p);
}

static HK_NOINLINE void free_overflow(unsigned c, void *p)
{
    hk_tls_overflow(c, p);
    hk_purge_kick();
}

/* Not noreturn on purpose: free() then reaches them by a tail jump and
 * needs no stack frame on its hit path. */
static HK_NOINLINE HK_COLD void free_invalid(void *p)
{
    if (!p)
        return;
    if (hk_guard_owns(p)) /* no map has guarded blocks: they come here */
        hk_guard_free(p);
    else
        hk_fatal_op("invalid", "free", p);
}
/* A live profiled block's head carries its tag too (hk_prof_record): p is
 * then a pointer before the program's, which is no double free. */
static HK_NOINLINE HK_COLD void free_double(void *p)
{
    hk_fatal_op(hk_prof_on && hk_prof_is_inside(p) ? "invalid" : "double", "free", p);
}

static HK_NOINLINE HK_COLD void free_offset(const hk_page_face_t *pg, size_t c, void *p);

/* A small block of class c in the slab of record pg: checked, then pushed. */
HK_INLINE void free_small(const hk_page_face_t *pg, size_t c, void *p)
{
    if (HK_UNLIKELY(!slab_block(pg, p))) {
        free_offset(pg, c, p);
        return;
    }
    if (HK_UNLIKELY(hk_is_tagged(p))) {
        free_double(p);
        return;
    }
    if (HK_UNLIKELY(!hk_tls_push(hk_tls_self(), c, p)))
        free_overflow(c, p);
}

/* p is no block of the slab of record pg (class c): a profiled block's
 * (its record inside), a second free of one, or invalid. */
static HK_NOINLINE HK_COLD void free_offset(const hk_page_face_t *pg, size_t c, void *p)
{
    void *blk = head_of(pg, p);
    if (blk && hk_prof_is_inside(blk) && hk_prof_unrecord(blk)) {
        free_small(pg, c, blk);
        return;
    }
    if (blk && hk_prof_was_inside(blk))
        hk_fatal_op("double", "free", p); /* its record was dropped before: freed through p */
    free_invalid(p);
}

/* The page map's path: a block the slab map did not resolve. */
HK_INLINE void free_paged(void *p)
{
    hk_chunk_t *ch = hk_chunk_of(p);
    if (HK_UNLIKELY(ch == NULL)) {
        free_invalid(p); /* NULL included */
        return;
    }
    hk_page_face_t *pg = hk_page_face(ch, p);
    if (pg->cls == 0) {
        free_big(ch, p);
        return;
    }
    free_small(pg, pg->cls, p);
}

/* A block of a page the profiler marked (code c), or any block the page
 * map must find while sampled blocks are live: its record goes first. A
 * block whose record was found is live, so its region stays, and on a
 * marked page its page record is found through the slab map; anything else
 * (the page's other blocks, a second free) takes the page map walk, which
 * also tells a region released meanwhile. */
static HK_NOINLINE void free_sampled(void *p, uint64_t c)
{
    if (p && hk_prof_forget(p) && c == HK_SLABMAP_SAMPLED) {
        hk_page_face_t *pg = hk_slabmap_face(p);
        if (pg->cls == 0) {
            free_big(hk_slabmap_chunk(p), p);
            return;
        }
        free_small(pg, pg->cls, p);
        return;
    }
    free_paged(p);
}

/* free() of what the slab map has as a held medium class's block, of a
 * small block whose page the slab map does not have (it shares its entry
 * with a newer slab's page), and of everything else: the page map walk,
 * then as the hit path. Frameless: each branch ends in a tail call. */
static HK_NOINLINE void free_lookup(void *p, uint64_t c)
{
    if (c - HK_SLABMAP_MEDIUM < HK_MEDIUM_HELD_CLASSES) {
        free_medium((unsigned)(c - HK_SLABMAP_MEDIUM), p);
        return;
    }
    if (HK_UNLIKELY(c == HK_SLABMAP_SAMPLED || __atomic_load_n(&hk_prof_hot.live, __ATOMIC_RELAXED))) {
        free_sampled(p, c);
        return;
    }
    free_paged(p);
}

/* The class comes from one load (the slab map), so the address of the list
 * the block goes on, which the next malloc of the class reads, is known a
 * few cycles after p is (docs/performance.md, "The hit path"). */
HK_HOT_ENTRY void hak_free(void *p)
{
    uint64_t c = hk_slabmap_class(p);
    if (HK_UNLIKELY(c - 1 >= HK_NCLASS - 1)) {
        free_lookup(p, c);
        return;
    }
    free_small(hk_slabmap_face(p), c, p);
}

/* A guarded block is in no map: its mapping owns whole 2 MiB chunks. */
static bool maybe_guarded(void *p) { return !hk_chunk_of(p) && hk_guard_owns(p); }

static size_t usable(void *p, const char *op)
{
    hk_chunk_t *ch = hk_chunk_of(p);
    if (!ch) {
        if (hk_guard_owns(p))
            return hk_guard_usable(p, op);
        hk_fatal_op("invalid", op, p);
    }
    hk_page_face_t *pg = hk_page_face(ch, p);
    if (pg->cls)
        return small_check(pg, p, op);
    if (ch->kind == HK_CHUNK_REGION)
        return hk_medium_usable(ch, p, op);
    return hk_large_usable(ch, p, op);
}

size_t hak_malloc_usable_size(void *p) { return p ? usable(p, "malloc_usable_size") : 0; }

/* realloc resized p in place to n bytes while sampled blocks live: its
 * record follows, wherever it is kept. */
static HK_NOINLINE void resized(void *p, size_t n)
{
    hk_chunk_t *ch = hk_chunk_of(p);
    const hk_page_face_t *pg = ch ? hk_page_face(ch, p) : NULL;
    void *blk = pg && pg->cls ? recorded_inside(pg, p) : NULL;
    if (blk)
        hk_prof_resized_inside(blk, n);
    else
        hk_prof_resized(p, n);
}

void *hak_realloc(void *p, size_t n)
{
    if (!p)
        return alloc(n);
    if (n == 0) { /* glibc: frees and returns NULL (documented in docs/api.md) */
        hak_free(p);
        return NULL;
    }
    size_t old = usable(p, "realloc");
    /* a guarded block always moves: its usable size is its request */
    bool guarded = HK_UNLIKELY(hk_guard_on) && maybe_guarded(p);
    if (n <= old && n >= old / 2 && !guarded) {
        if (HK_UNLIKELY(__atomic_load_n(&hk_prof_hot.live, __ATOMIC_RELAXED)))
            resized(p, n);
        return p;
    }
    if (n > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    /* A block grown in small steps grows to 5/4 of its current size, so a
     * string or vector growing by appends moves every 25%, not at every
     * class boundary (12.5%): copies stay amortised O(1) per byte. A medium
     * block doubles: each block a growth chain leaves behind stays resident
     * in its own class, so a chain of 5/4 steps kept ~4x its final size in
     * RSS (python3's JSON writer: +2 MB); pages of the new block beyond
     * what the program writes are never touched. */
    size_t want = n > old && n - old < old / 4 ? old + old / 4 : n;
    if (n > old && old > HK_SMALL_MAX && n <= HK_MEDIUM_MAX)
        want = old < HK_MEDIUM_MAX / 2 ? (n > 2 * old ? n : 2 * old) : HK_MEDIUM_MAX;
    if (old > HK_MEDIUM_MAX && n > HK_MEDIUM_MAX && !guarded) {
        hk_chunk_t *ch = hk_chunk_of(p);
        if (ch->kind == HK_CHUNK_LARGE) {
            uint64_t rec;
            bool sampled = HK_UNLIKELY(__atomic_load_n(&hk_prof_hot.live, __ATOMIC_RELAXED)) && hk_prof_detach(p, &rec);
            void *q = hk_large_resize(ch, p, want);
            if (!q && want != n)
                q = hk_large_resize(ch, p, n);
            /* Resized in place, the record follows; moved, a new sample;
             * not resized, the record stays for the copy's free below. */
            if (sampled)
                hk_prof_reattach(rec, q == p || !q ? p : NULL, q ? n : 0);
            if (q) {
                if (q != p && (sample_big(n) & HK_SAMPLE_PROF))
                    hk_prof_record(q, n, false);
                return q;
            }
        }
    }
    void *q = alloc_as(n, want, 16);
    if (!q && want != n)
        q = alloc(n);
    if (!q)
        return NULL; /* the old block stays valid */
    memcpy(q, p, n < old ? n : old);
    hak_free(p);
    return q;
}

void *hak_reallocarray(void *p, size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return hak_realloc(p, n);
}

int hak_malloc_trim(size_t pad)
{
    (void)pad;
    hk_init();
    hk_tls_drain();
    bool pending = false;
    size_t given = hk_refill_purge(0, &pending);
    given += hk_large_purge(0, &pending);
    hk_purge_safe_point();
    return given != 0;
}

/* ---- the standard names ------------------------------------------------- */
#if HK_OVERRIDE
/* The standard names are aliases (one body, no extra call); the malloc
 * attribute of the hak_ twins is a promise the aliases need not repeat. */
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#define HK_ALIAS(name, target) \
    extern __typeof(target) name __attribute__((alias(#target), visibility("default")))
HK_ALIAS(malloc, hak_malloc);
HK_ALIAS(free, hak_free);
HK_ALIAS(calloc, hak_calloc);
HK_ALIAS(realloc, hak_realloc);
HK_ALIAS(reallocarray, hak_reallocarray);
HK_ALIAS(posix_memalign, hak_posix_memalign);
HK_ALIAS(aligned_alloc, hak_aligned_alloc);
HK_ALIAS(memalign, hak_memalign);
HK_ALIAS(valloc, hak_valloc);
HK_ALIAS(pvalloc, hak_pvalloc);
HK_ALIAS(malloc_usable_size, hak_malloc_usable_size);
HK_ALIAS(malloc_trim, hak_malloc_trim);
#endif
