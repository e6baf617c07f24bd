/* medium.c — blocks of 32 KiB–1 MiB: forty size classes carved from slabs whose free blocks are tracked in a bitmap, never by writing into the blocks. */
#include "refill_internal.h"
#include "hak_policy.h"

#include <errno.h>
#include <string.h>

#define MEDIUM_EMPTY_MAX 8 /* per class, however recent */
/* The dirty blocks of all classes' empty slabs together, however recent:
 * an upper bound on the RSS kept for reuse. */
#define MEDIUM_EMPTY_BUDGET ((size_t)32 << 20)
static size_t empty_bytes; /* atomic: updated under different class locks */

/* Block i of a held class has a state byte; the others none. */
static inline bool has_state(const hk_page_t *first, unsigned i)
{
    return first->mcls < HK_MEDIUM_HELD_CLASSES && i < sizeof first->mstate;
}
static inline unsigned mstate_get(hk_page_t *first, unsigned i)
{
    return __atomic_load_n(&first->mstate[i], __ATOMIC_RELAXED);
}
static inline void mstate_set(hk_page_t *first, unsigned i, unsigned v)
{
    __atomic_store_n(&first->mstate[i], (uint8_t)v, __ATOMIC_RELAXED);
}

/* Slab geometry: the fewest 64 KiB pages (at most 24) holding at least four
 * blocks where that fits, wasting at most 1/16 where possible. */
static const uint8_t mslab_pages[HK_MEDIUM_CLASSES] = {
    3, 4, 5, 3, 5, 7, 4, 4, 6, 5, 7, 6, 10, 7, 8, 8, 9, 10, 11, 12,
    13, 14, 15, 16, 18, 20, 22, 24, 20, 21, 23, 24, 18, 20, 22, 24, 13, 14, 15, 16,
};

/* A medium class: its lock and its slabs that have a free block, in two
 * lists, newest first: those with blocks in use, and the empty ones. A
 * block comes from the first of the first list (the slab that most
 * recently stopped being full: one free block), else from the first empty
 * slab (the most recently used: still resident), so mostly empty slabs
 * drain and empty ones wait last, without a search. Freed blocks are not
 * written to, so a cached block costs no page fault and the slab can be
 * purged as a whole. */
typedef struct mclass_state {
    hk_lock_t lock;
    hk_slab_list_t partial, empty;
    uint32_t last_purge_ms;
    uint64_t allocs, frees, made, returned; /* for the stats */
} mclass_state_t;

static mclass_state_t mclasses[HK_MEDIUM_CLASSES];

static hk_page_t *mslab_new(mclass_state_t *ms, unsigned m)
{
    bool zeroed;
    unsigned n = mslab_pages[m];
    hk_page_t *pg = hk_span_alloc(n, HK_PAGE_MEDIUM, m, &zeroed);
    if (!pg)
        return NULL;
    uint32_t size = hk_medium_sizes[m];
    unsigned cap = (unsigned)(((size_t)n << HK_PAGE_SHIFT) / size);
    pg->capacity = cap;
    pg->charge = 0; /* fresh: nothing resident yet */
    ms->made++;
    pg->mfree = cap == 32 ? 0xffffffffu : (1u << cap) - 1;
    pg->mdirty = zeroed ? 0 : 0xffffffffu;
    hk_region_t *ch = hk_region_of_page(pg);
    uint64_t magic = UINT64_MAX / size + 1;
    for (unsigned i = 0; i < n; i++) {
        ch->page[hk_page_index(pg) + i].divmagic = magic;
        ch->page[hk_page_index(pg) + i].smag = (uint64_t)pg->start * magic;
    }
    hk_slab_list_add(&ms->empty, pg);
    return pg;
}

/* Free blocks stay resident for reuse (a re-faulted page costs 20-40 µs
 * here) until their slab has had no block freed for `delay` ms: then an
 * empty slab goes back to its region and the free blocks of a partial one
 * are decommitted. At most MEDIUM_EMPTY_MAX empty slabs per class and
 * MEDIUM_EMPTY_BUDGET bytes of them overall are kept however recent.
 * Caller holds ms->lock. */
static void mpurge(mclass_state_t *ms, unsigned m, uint32_t now, uint32_t delay, bool *pending)
{
    ms->last_purge_ms = now;
    unsigned k = 0; /* the newest MEDIUM_EMPTY_MAX stay */
    for (hk_page_t *pg = ms->empty.head, *next; pg; pg = next, k++) {
        next = pg->next;
        if (now - pg->idle_ms >= delay || k >= MEDIUM_EMPTY_MAX ||
            __atomic_load_n(&empty_bytes, __ATOMIC_RELAXED) > MEDIUM_EMPTY_BUDGET) {
            __atomic_sub_fetch(&empty_bytes, pg->charge, __ATOMIC_RELAXED);
            hk_slab_list_remove(&ms->empty, pg);
            ms->returned++;
            hk_span_free(pg);
        } else if (pg->mfree & pg->mdirty)
            *pending = true; /* resident until it has been empty for the delay */
    }
    for (hk_page_t *pg = ms->partial.head; pg; pg = pg->next) {
        uint32_t dirty = pg->mfree & pg->mdirty;
        if (dirty && now - pg->idle_ms < delay) {
            *pending = true;
            continue;
        }
        /* Blocks are 4 KiB-aligned multiples of 4 KiB: decommit them exactly. */
        hk_decommit_bits((char *)pg->start, dirty, hk_medium_sizes[m]);
        pg->mdirty &= ~dirty;
    }
}

void *hk_medium_alloc(size_t n, bool *zeroed)
{
    unsigned m = hk_medium_class(n);
    mclass_state_t *ms = &mclasses[m];
    hk_lock(&ms->lock);
    hk_page_t *pg = ms->partial.head ? ms->partial.head : ms->empty.head;
    if (!pg && !(pg = mslab_new(ms, m))) {
        hk_unlock(&ms->lock);
        errno = ENOMEM;
        return NULL;
    }
    /* A block handed out before is already faulted in: reusing it costs no
     * page fault (a fault costs 20-40 µs on these virtual machines). */
    uint32_t warm = pg->mfree & pg->mdirty;
    unsigned i = (unsigned)__builtin_ctz(warm ? warm : pg->mfree);
    uint32_t bit = 1u << i;
    pg->mfree &= ~bit;
    ms->allocs++;
    if (pg->used++ == 0) {
        __atomic_sub_fetch(&empty_bytes, pg->charge, __ATOMIC_RELAXED);
        hk_slab_list_remove(&ms->empty, pg);
        if (pg->mfree)
            hk_slab_list_add(&ms->partial, pg);
    } else if (!pg->mfree)
        hk_slab_list_remove(&ms->partial, pg);
    *zeroed = !(pg->mdirty & bit);
    pg->mdirty |= bit;
    if (has_state(pg, i))
        mstate_set(pg, i, HK_MB_LIVE);
    void *p = (char *)pg->start + (size_t)i * hk_medium_sizes[m];
    hk_unlock(&ms->lock);
    return p;
}

/* The slab's first page and p's block index, checking only the address;
 * aborts on a pointer that is no block start of a medium slab. */
static hk_page_t *mlocate(hk_region_t *ch, const void *p, const char *op, unsigned *idx)
{
    hk_page_t *pg = hk_page_of(ch, p);
    if (ch->kind != HK_CHUNK_REGION || pg->kind != HK_PAGE_MEDIUM || !hk_page_is_block_start(pg, p))
        hk_fatal_op("invalid", op, p);
    hk_page_t *first = &ch->page[pg->first];
    /* (p - start) / size without a division: offsets are below 2^32, and
     * divmagic = ceil(2^64 / size) makes the high half of the product
     * exact (Lemire, Kaser, Kurz 2019). */
    unsigned i = (unsigned)(((unsigned __int128)((uintptr_t)p - first->start) * first->divmagic) >> 64);
    if (i >= first->capacity)
        hk_fatal_op("invalid", op, p);
    *idx = i;
    return first;
}

/* As mlocate, and p must be in use: not free in its slab, and in the state
 * `want` (LIVE: in the program's hands; HELD: in the caller's cache), else
 * it is a second free or a use after free. Caller holds the class lock. */
static hk_page_t *mcheck(hk_region_t *ch, const void *p, const char *op, unsigned want, unsigned *idx)
{
    hk_page_t *first = mlocate(ch, p, op, idx);
    unsigned i = *idx;
    if ((first->mfree & (1u << i)) || (has_state(first, i) && mstate_get(first, i) != want))
        hk_fatal_op(strcmp(op, "free") ? "invalid" : "double", op, p);
    return first;
}

_Static_assert(HK_PAGES_PER_CHUNK * 8 <= HK_OS_PAGE, "a ticket's low bits hold page and index");

/* Without the lock, a block's state byte is the truth: only the thread that
 * holds the block (or Box 2 under the lock, for a block it owns) writes it.
 * The slab's first page and p's index, or NULL when p has no state byte;
 * aborts when it has one and p is free in its slab or held already. */
static hk_page_t *mlive(hk_region_t *ch, const void *p, unsigned *idx)
{
    hk_page_t *first = mlocate(ch, p, "free", idx);
    if (!has_state(first, *idx))
        return NULL;
    if (mstate_get(first, *idx) != HK_MB_LIVE)
        hk_fatal_op("double", "free", p);
    return first;
}

uintptr_t hk_medium_hold(hk_chunk_t *owner, void *p)
{
    hk_region_t *ch = hk_region_cast(owner);
    unsigned i;
    hk_page_t *first = mlive(ch, p, &i);
    if (!first)
        return 0;
    mstate_set(first, i, HK_MB_HELD);
    return (uintptr_t)p | hk_page_of(ch, p)->first << 3 | i; /* a ticket (hak_refill.h) */
}

/* Gives p back to its slab; `want` is the state p must be in (see mcheck). */
static void mfree(hk_region_t *ch, void *p, unsigned want)
{
    unsigned i;
    hk_page_t *pg = hk_page_of(ch, p);
    mclass_state_t *ms = &mclasses[pg->mcls];
    hk_lock(&ms->lock);
    pg = mcheck(ch, p, "free", want, &i);
    pg->mfree |= 1u << i;
    if (has_state(pg, i))
        mstate_set(pg, i, HK_MB_FREE);
    pg->used--;
    ms->frees++;
    pg->idle_ms = hk_now_ms();
    if (pg->used == 0) {
        if (pg->on_partial)
            hk_slab_list_remove(&ms->partial, pg);
        hk_slab_list_add(&ms->empty, pg);
        pg->charge = (uint32_t)__builtin_popcount(pg->mdirty & pg->mfree) * hk_medium_sizes[pg->mcls];
        __atomic_add_fetch(&empty_bytes, pg->charge, __ATOMIC_RELAXED);
    } else if (!pg->on_partial)
        hk_slab_list_add(&ms->partial, pg);
    /* Inline purging at most once per clock tick and class; the purge
     * thread covers classes that go quiet. */
    bool pending = false;
    if (pg->idle_ms != ms->last_purge_ms)
        mpurge(ms, pg->mcls, pg->idle_ms, hk_policy_purge_delay_ms(), &pending);
    hk_refill_mark_pending();
    hk_unlock(&ms->lock);
}

void hk_medium_free(hk_chunk_t *owner, void *p) { mfree(hk_region_cast(owner), p, HK_MB_LIVE); }

/* HELD to FREE under the lock, never through LIVE: a stray free of the block
 * meanwhile, from any thread, finds it held or free and aborts. */
void hk_medium_release(uintptr_t t)
{
    void *p = hk_medium_ticket_block(t);
    mfree(hk_region_at(p), p, HK_MB_HELD);
}

void hk_medium_check_live(hk_chunk_t *owner, const void *p)
{
    hk_region_t *ch = hk_region_cast(owner);
    unsigned i;
    (void)mlive(ch, p, &i);
}

size_t hk_medium_usable(hk_chunk_t *owner, const void *p, const char *op)
{
    hk_region_t *ch = hk_region_cast(owner);
    unsigned i;
    hk_page_t *pg = hk_page_of(ch, p);
    if (ch->kind != HK_CHUNK_REGION || pg->kind != HK_PAGE_MEDIUM)
        hk_fatal_op("invalid", op, p);
    mclass_state_t *ms = &mclasses[pg->mcls];
    hk_lock(&ms->lock);
    pg = mcheck(ch, p, op, HK_MB_LIVE, &i);
    size_t size = hk_medium_sizes[pg->mcls];
    hk_unlock(&ms->lock);
    return size;
}


void hk_medium_purge(uint32_t delay, bool *pending)
{
    for (unsigned m = 0; m < HK_MEDIUM_CLASSES; m++) {
        mclass_state_t *ms = &mclasses[m];
        hk_lock(&ms->lock);
        /* The clock read under the lock: a slab freed after an earlier
         * reading would look idle for 2^32 ms and go back at once. */
        mpurge(ms, m, hk_now_ms(), delay, pending);
        hk_unlock(&ms->lock);
    }
}

void hk_medium_class_stats(unsigned m, hk_refill_class_stats_t *st)
{
    mclass_state_t *ms = &mclasses[m];
    *st = (hk_refill_class_stats_t){.size = hk_medium_sizes[m]};
    hk_lock(&ms->lock);
    st->allocs = ms->allocs;
    st->frees = ms->frees;
    st->refills = ms->made;
    st->flushes = ms->returned;
    st->slabs = ms->made - ms->returned;
    for (hk_page_t *pg = ms->partial.head; pg; pg = pg->next)
        st->slab_free += (size_t)__builtin_popcount(pg->mfree);
    for (hk_page_t *pg = ms->empty.head; pg; pg = pg->next)
        st->slab_free += pg->capacity;
    hk_unlock(&ms->lock);
}

void hk_medium_fork(int phase)
{
    for (unsigned m = 0; m < HK_MEDIUM_CLASSES; m++)
        hk_lock_fork(&mclasses[m].lock, phase);
}
