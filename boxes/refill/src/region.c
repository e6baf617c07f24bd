/* region.c — 2 MiB regions cut into 64 KiB-page spans, and the page map from address to region. */
#include "refill_internal.h"
#include "hak_policy.h"

#include <errno.h>
#include <string.h>

#define ALL_PAGES 0xffffffffu
#define USABLE_PAGES (ALL_PAGES & ~1u) /* page 0 holds the header */
#define EMPTY_REGIONS_MIN 16           /* kept however recent: 32 MiB of address space */
#define EMPTY_REGIONS_MAX 4096         /* the most the cap grows to: 8 GiB of address space */
#define LONGEST_EMPTY 31               /* the longest free run of an empty region */
#define FIT_SCAN 8                     /* regions best fit compares in its list */

/* Bits at..at+n-1 of a 32-bit page mask (n = 32 would overflow 1u << n). */
static inline uint32_t run_mask(unsigned n, unsigned at)
{
    return (n == 32 ? ALL_PAGES : ((1u << n) - 1)) << at;
}

hk_chunk_t **hk_pagemap[1u << HK_MAP_TOP_BITS];
uint64_t hk_slabmap[1u << HK_SLABMAP_BITS];

static hk_lock_t region_lock = HK_LOCK_INIT;
/* The regions with a free page, in lists by their longest free run (1..31;
 * 31: empty), newest first: best fit looks only at the list of the shortest
 * run that can hold a span, so placing one costs the same with 10 regions
 * or 10,000. A full region is on no list (nothing to place or give back);
 * region_count counts all. Bit k of `listed`: list k is not empty. */
static hk_region_t *by_run[LONGEST_EMPTY + 1], *by_run_tail[LONGEST_EMPTY + 1];
static uint32_t listed;
static size_t region_count, empty_regions;
static uint32_t last_walk_ms; /* the last inline purge walk (hk_span_free) */
/* Empty regions kept however recent; grows with swings the program repeats
 * while the purge thread runs (docs/design.md, "Giving memory back"). */
static size_t keep_empty = EMPTY_REGIONS_MIN;
static uint32_t cap_release_ms; /* when the cap last unmapped a region */
static size_t cap_released;     /* unmapped by it, each within the delay of the last */
int hk_refill_purger;


/* Caller holds region_lock (or is the only thread that can see ch). */
static bool pagemap_set_locked(void *base, size_t size, hk_chunk_t *ch)
{
    uintptr_t first = (uintptr_t)base >> HK_CHUNK_SHIFT;
    uintptr_t last = ((uintptr_t)base + size - 1) >> HK_CHUNK_SHIFT;
    for (uintptr_t c = first; c <= last; c++) {
        uintptr_t top = c >> HK_MAP_LEAF_BITS;
        if (top >= (1u << HK_MAP_TOP_BITS))
            return false;
        hk_chunk_t **leaf = hk_pagemap[top];
        if (!leaf) {
            if (!ch)
                continue;
            leaf = hk_os_reserve(sizeof(hk_chunk_t *) << HK_MAP_LEAF_BITS, HK_OS_PAGE, true);
            if (!leaf)
                return false;
            __atomic_store_n(&hk_pagemap[top], leaf, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&leaf[c & ((1u << HK_MAP_LEAF_BITS) - 1)], ch, __ATOMIC_RELEASE);
    }
    return true;
}

bool hk_pagemap_set(void *base, size_t size, hk_chunk_t *ch)
{
    hk_lock(&region_lock);
    bool ok = pagemap_set_locked(base, size, ch);
    hk_unlock(&region_lock);
    return ok;
}

static unsigned longest_run(uint32_t m)
{
    unsigned k = 0;
    for (; m; k++)
        m &= m >> 1; /* each pass shortens every run by one */
    return k;
}

static void list_unlink(hk_region_t *ch)
{
    unsigned k = ch->longest;
    if (ch->prev_avail)
        ch->prev_avail->next_avail = ch->next_avail;
    else
        by_run[k] = ch->next_avail;
    if (ch->next_avail)
        ch->next_avail->prev_avail = ch->prev_avail;
    else
        by_run_tail[k] = ch->prev_avail;
    if (!by_run[k])
        listed &= ~(1u << k);
    ch->longest = 0;
}

/* Puts ch on the list its free pages now call for (none when full). */
static void list_refile(hk_region_t *ch)
{
    unsigned k = longest_run(ch->free_pages);
    if (k == ch->longest)
        return;
    if (ch->longest)
        list_unlink(ch);
    if (!k)
        return;
    ch->longest = (uint8_t)k;
    ch->prev_avail = NULL;
    ch->next_avail = by_run[k];
    if (by_run[k])
        by_run[k]->prev_avail = ch;
    else
        by_run_tail[k] = ch;
    by_run[k] = ch;
    listed |= 1u << k;
}

static hk_region_t *region_new(void)
{
    /* Mapping again what the cap just unmapped: the cap keeps one more. */
    if (cap_released && hk_now_ms() - cap_release_ms < hk_policy_purge_delay_ms()) {
        cap_released--;
        if (__atomic_load_n(&hk_refill_purger, __ATOMIC_RELAXED) && keep_empty < EMPTY_REGIONS_MAX)
            keep_empty++;
    }
    hk_region_t *ch = hk_os_reserve_slabs();
    if (!ch)
        return NULL;
    ch->kind = HK_CHUNK_REGION;
    ch->page[0].kind = HK_PAGE_HEADER;
    ch->free_pages = USABLE_PAGES;
    ch->dirty_pages = 1;
    if (!pagemap_set_locked(ch, HK_CHUNK_SIZE, (hk_chunk_t *)ch)) {
        hk_os_release_slabs(ch);
        errno = ENOMEM;
        return NULL;
    }
    list_refile(ch);
    __atomic_add_fetch(&region_count, 1, __ATOMIC_RELAXED); /* read by hk_refill_mapped without the lock */
    empty_regions++;
    return ch;
}

static void region_release(hk_region_t *ch)
{
    list_unlink(ch); /* an empty region is on a list */
    pagemap_set_locked(ch, HK_CHUNK_SIZE, NULL);
    __atomic_sub_fetch(&region_count, 1, __ATOMIC_RELAXED);
    empty_regions--;
    hk_os_release_slabs(ch);
    hk_note_returned(HK_CHUNK_SIZE);
}

/* Decommits ch's free pages that have been free for `delay` ms. */
static size_t decommit_old(hk_region_t *ch, uint32_t now, uint32_t delay, bool *pending)
{
    uint32_t dirty = ch->free_pages & ch->dirty_pages, old = 0;
    for (uint32_t m = dirty; m; m &= m - 1) {
        unsigned i = (unsigned)__builtin_ctz(m);
        if (now - ch->page[i].idle_ms >= delay)
            old |= 1u << i;
    }
    if (dirty != old)
        *pending = true;
    if (!old)
        return 0;
    ch->dirty_pages &= ~old;
    return hk_decommit_bits((char *)ch, old, HK_PAGE_SIZE);
}

/* Free pages are kept resident for reuse (a page given back faults in again
 * at 20-40 µs here) until they have been free for `delay` ms: then they are
 * decommitted, and an empty region whose last span came back `delay` ms ago
 * is unmapped. Timing each page, not the region, matters under steady
 * traffic: a busy region is never idle, and its free pages would otherwise
 * stay resident however long they go unused.
 * (hk_span_free keeps at most keep_empty empty regions however recent.)
 * Caller holds the lock. Returns bytes given back; *pending is set when
 * free resident pages remain. */
static size_t regions_purge(uint32_t now, uint32_t delay, bool *pending)
{
    size_t given = 0;
    bool idle_gone = false;
    /* Empty regions, oldest first (the list is newest first). */
    for (hk_region_t *ch = by_run_tail[LONGEST_EMPTY], *prev; ch; ch = prev) {
        prev = ch->prev_avail;
        if (now - ch->idle_ms >= delay) {
            region_release(ch);
            given += HK_CHUNK_SIZE;
            idle_gone = true;
        } else
            given += decommit_old(ch, now, delay, pending);
    }
    if (!delay) { /* a trim: what went back was not the cap's doing */
        keep_empty = EMPTY_REGIONS_MIN;
        cap_released = 0;
    } else if (idle_gone) { /* kept, and not needed for the delay: that swing is over */
        keep_empty = keep_empty / 2 > EMPTY_REGIONS_MIN ? keep_empty / 2 : EMPTY_REGIONS_MIN;
        cap_released = 0;
    }
    for (unsigned k = 1; k < LONGEST_EMPTY; k++)
        for (hk_region_t *ch = by_run[k]; ch; ch = ch->next_avail)
            given += decommit_old(ch, now, delay, pending);
    return given;
}

size_t hk_decommit_bits(char *base, uint32_t bits, size_t unit)
{
    size_t given = 0;
    while (bits) {
        unsigned at = (unsigned)__builtin_ctz(bits), n = 0;
        while (at + n < 32 && (bits >> (at + n) & 1))
            n++;
        hk_os_decommit(base + at * unit, n * unit);
        given += n * unit;
        bits &= ~run_mask(n, at);
    }
    hk_note_returned(given);
    return given;
}

void hk_slab_list_add(hk_slab_list_t *l, hk_page_t *pg)
{
    pg->prev = NULL;
    pg->next = l->head;
    if (l->head)
        l->head->prev = pg;
    l->head = pg;
    pg->on_partial = 1;
    l->n++;
}

void hk_slab_list_remove(hk_slab_list_t *l, hk_page_t *pg)
{
    if (pg->prev)
        pg->prev->next = pg->next;
    else
        l->head = pg->next;
    if (pg->next)
        pg->next->prev = pg->prev;
    pg->next = pg->prev = NULL;
    pg->on_partial = 0;
    l->n--;
}

/* Best fit: regions from the lists of the shortest longest-runs that hold
 * n (so long runs elsewhere stay whole for medium slabs, which is what keeps
 * a mix of sizes from mapping new regions while old ones have room); in
 * each, the shortest run that holds n. Over at most FIT_SCAN regions, moving
 * to the next list only while no run of exactly n was found: the shortest
 * run, then the most resident (dirty) pages in it (reused before
 * decommitted ones fault in again), then the fullest region.
 * Caller holds region_lock. Returns the region and sets *at, or NULL. */
static hk_region_t *best_run(unsigned n, int *at)
{
    hk_region_t *best = NULL;
    unsigned best_len = 33, best_warm = 0, best_free = 33, scanned = 0;
    for (uint32_t fit = listed >> n << n; fit && best_len > n && scanned < FIT_SCAN; fit &= fit - 1) {
        for (hk_region_t *ch = by_run[__builtin_ctz(fit)]; ch && scanned < FIT_SCAN; ch = ch->next_avail, scanned++) {
            unsigned nfree = (unsigned)__builtin_popcount(ch->free_pages);
            for (uint32_t m = ch->free_pages; m;) {
                unsigned start = (unsigned)__builtin_ctz(m);
                uint32_t rest = ~(m >> start);
                unsigned len = rest ? (unsigned)__builtin_ctz(rest) : 32 - start;
                uint32_t run = run_mask(len, start);
                m &= ~run;
                if (len < n || len > best_len)
                    continue;
                uint32_t mask = run_mask(n, start);
                unsigned warm = (unsigned)__builtin_popcount(ch->dirty_pages & mask);
                if (len == best_len && (warm < best_warm || (warm == best_warm && nfree >= best_free)))
                    continue;
                best = ch;
                *at = (int)start;
                best_len = len;
                best_warm = warm;
                best_free = nfree;
            }
        }
    }
    return best;
}

hk_page_t *hk_span_alloc(unsigned n, unsigned kind, unsigned cls, bool *zeroed)
{
    hk_lock(&region_lock);
    int at = 1; /* a new region's first usable page */
    hk_region_t *ch = best_run(n, &at);
    if (!ch && !(ch = region_new())) {
        hk_unlock(&region_lock);
        return NULL;
    }
    if (ch->free_pages == USABLE_PAGES)
        empty_regions--;
    uint32_t mask = run_mask(n, (unsigned)at);
    ch->free_pages &= ~mask;
    list_refile(ch);
    *zeroed = !(ch->dirty_pages & mask);
    ch->dirty_pages |= mask;
    uintptr_t start = (uintptr_t)ch + ((size_t)at << HK_PAGE_SHIFT);
    for (unsigned i = 0; i < n; i++) {
        hk_page_t *pg = &ch->page[at + i];
        memset(pg, 0, sizeof *pg);
        pg->kind = (uint8_t)kind;
        pg->first = (uint8_t)at;
        pg->start = start;
    }
    ch->page[at].npages = (uint8_t)n;
    /* cls last: a racing invalid free must not see a half-built slab page
     * (until Box 2 sets the block-start constants, every block fails them).
     * A slab's pages take their slab map entries, whoever had them. */
    for (unsigned i = 0; i < n; i++) {
        if (kind == HK_PAGE_MEDIUM)
            ch->page[at + i].mcls = (uint8_t)cls;
        else
            ch->page[at + i].cls = (uint8_t)cls;
        unsigned code = hk_page_map_code(&ch->page[at + i]);
        if (code) {
            uintptr_t page = start + ((uintptr_t)i << HK_PAGE_SHIFT);
            __atomic_store_n(hk_slabmap_slot((void *)page), hk_slabmap_key((void *)page) | code, __ATOMIC_RELEASE);
        }
    }
    hk_unlock(&region_lock);
    return &ch->page[at];
}

void hk_span_free(hk_page_t *first)
{
    hk_region_t *ch = hk_region_of_page(first);
    unsigned at = hk_page_index(first), n = first->npages;
    hk_lock(&region_lock);
    uint32_t now = hk_now_ms(); /* under the lock: idle times never run backwards */
    for (unsigned i = 0; i < n; i++) {
        /* The slab map forgets the page first, if the entry is still its own. */
        uintptr_t page = (uintptr_t)ch + ((uintptr_t)(at + i) << HK_PAGE_SHIFT);
        uint64_t *e = hk_slabmap_slot((void *)page);
        unsigned code = hk_page_map_code(&ch->page[at + i]);
        uint64_t mine = hk_slabmap_key((void *)page) | code;
        if (code) /* a CAS: the profiler may be marking a page sharing the entry */
            __atomic_compare_exchange_n(e, &mine, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        memset(&ch->page[at + i], 0, sizeof(hk_page_t));
        ch->page[at + i].idle_ms = now; /* a free page: when it became free */
    }
    ch->free_pages |= run_mask(n, at);
    ch->idle_ms = now;
    list_refile(ch);
    if (ch->free_pages == USABLE_PAGES && ++empty_regions > keep_empty) {
        /* Too many empty regions: the oldest go at once, and free pages
         * that have waited out the delay elsewhere too (the purge thread
         * may be off), but that walk of every region at most once per
         * half delay: with thousands of regions it is not free. */
        uint32_t delay = hk_policy_purge_delay_ms();
        if (now - cap_release_ms >= delay)
            cap_released = 0; /* an earlier swing's */
        for (; empty_regions > keep_empty; cap_released++)
            region_release(by_run_tail[LONGEST_EMPTY]);
        cap_release_ms = now;
        if (now - last_walk_ms >= hk_policy_purge_interval_ms(delay)) {
            bool pending = false;
            last_walk_ms = now;
            regions_purge(now, delay, &pending);
        }
    }
    hk_refill_mark_pending();
    hk_unlock(&region_lock);
}

size_t hk_region_purge(uint32_t delay, bool *pending)
{
    hk_lock(&region_lock);
    size_t given = regions_purge(hk_now_ms(), delay, pending);
    hk_unlock(&region_lock);
    return given;
}

size_t hk_refill_mapped(void) { return __atomic_load_n(&region_count, __ATOMIC_RELAXED) * HK_CHUNK_SIZE; }

void hk_region_stats(hk_refill_stats_t *st)
{
    hk_lock(&region_lock);
    st->region_bytes = region_count * HK_CHUNK_SIZE;
    size_t free_pages = 0;
    for (unsigned k = 1; k <= LONGEST_EMPTY; k++)
        for (hk_region_t *ch = by_run[k]; ch; ch = ch->next_avail)
            free_pages += (size_t)__builtin_popcount(ch->free_pages);
    st->free_page_bytes = free_pages << HK_PAGE_SHIFT;
    hk_unlock(&region_lock);
}

void hk_region_fork(int phase)
{
    hk_lock_fork(&region_lock, phase);
    if (phase == HK_FORK_CHILD) {
        hk_refill_purger = 0; /* the child has no purge thread yet */
        keep_empty = EMPTY_REGIONS_MIN;
        cap_released = 0;
    }
}

void hk_refill_page_sampled(void *p, int d)
{
    hk_chunk_t *ch = hk_chunk_of(p);
    if (!ch || ch->kind != HK_CHUNK_REGION)
        return; /* a large block: its free always asks the profiler */
    hk_region_t *rg = (hk_region_t *)ch;
    uint16_t *count = &rg->sampled_n[((uintptr_t)p >> HK_PAGE_SHIFT) & (HK_PAGES_PER_CHUNK - 1)];
    uint16_t was = *count;
    *count = (uint16_t)(was + d);
    if ((was + d != 0) == (was != 0))
        return;
    /* No region lock: p is live, so Box 2 neither builds nor frees its page
     * now, and the only other writes to its entry are for pages 4 GiB away
     * sharing it; whichever lands last, free of a block here either misses
     * the slab map (and asks the profiler while samples live) or finds the
     * code written here. */
    hk_page_t *pg = hk_page_of(rg, p);
    pg->sampled = was == 0;
    unsigned code = hk_page_map_code(pg);
    uint64_t *e = hk_slabmap_slot(p);
    uint64_t key = hk_slabmap_key(p);
    uint64_t mine = key | HK_SLABMAP_SAMPLED;
    if (code)
        __atomic_store_n(e, key | code, __ATOMIC_RELEASE);
    else /* a CAS: a page sharing the entry may be taking it under the region's lock */
        __atomic_compare_exchange_n(e, &mine, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

void hk_refill_purger_started(void) { __atomic_store_n(&hk_refill_purger, 1, __ATOMIC_RELAXED); }
