/* large.c — blocks above 1 MiB: one mapping each, a small cache of freed mappings, and mremap growth. */
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_policy.h"

#include <stddef.h>

#include <errno.h>
#include <string.h>

/* A large block's mapping starts with this header; the page map leads
 * every chunk of the mapping to it. */
typedef struct hk_large {
    hk_chunk_t head; /* kind: HK_CHUNK_LARGE, or HK_CHUNK_LARGE_FREE while cached */
    /* Where a region has its page records: free() reads one before it knows
     * the owner's kind, and finds class 0 here (never written). */
    uint8_t no_pages[HK_PAGES_PER_CHUNK * HK_PAGE_REC_SIZE];
    char *user;      /* the pointer malloc returned */
    size_t map_size; /* bytes mapped from the header */
} hk_large_t;
_Static_assert(offsetof(hk_large_t, no_pages) == HK_PAGE_REC_AT, "free() reads class 0 in a large header");
/* The user pointer follows the header in the same page: a fresh mapping
 * then costs one page fault, not two. Aligned blocks start at base+align. */
#define HDR hk_align_up(sizeof(hk_large_t), 64)
#define CACHE_SLOTS 32
#define CACHE_MAX_BYTES ((size_t)256 << 20)

static hk_lock_t large_lock = HK_LOCK_INIT;
/* Freed mappings kept for reuse, oldest first. Size and age live here, not
 * only in the headers: a search must not touch 32 cold pages. */
static struct {
    hk_large_t *ch;
    size_t size;
    uint32_t idle_ms;
} cache[CACHE_SLOTS];
static unsigned cache_n;
/* cache_bytes and live_bytes change under the lock, atomically so that
 * hk_large_mapped can read them without it. */
static size_t cache_bytes, live_bytes, live_count;
static uint64_t n_allocs, n_frees, n_maps, n_unmaps; /* for the stats */

/* Removes entry i (caller holds large_lock) and returns its mapping. */
static hk_large_t *cache_take(unsigned i)
{
    hk_large_t *ch = cache[i].ch;
    __atomic_sub_fetch(&cache_bytes, cache[i].size, __ATOMIC_RELAXED);
    memmove(&cache[i], &cache[i + 1], (cache_n - i - 1) * sizeof cache[0]);
    cache_n--;
    return ch;
}

static void unmap(hk_large_t *ch)
{
    size_t size = ch->map_size;
    hk_pagemap_set(ch, size, NULL);
    hk_os_release(ch, size);
    hk_note_returned(size);
    __atomic_add_fetch(&n_unmaps, 1, __ATOMIC_RELAXED);
}

/* Bytes to map for n bytes at offset off: whole pages, rounded up to one of
 * eight steps per power of two (at most 12.5% more address space), so freed
 * mappings are likely to fit the next request. The mapping starts on a
 * 2 MiB boundary; the rest of its last 2 MiB chunk stays unmapped. */
static size_t map_size(size_t off, size_t n)
{
    size_t total = hk_align_up(off + n, HK_OS_PAGE);
    size_t step = ((size_t)1 << (63 - __builtin_clzll(total))) >> 3;
    return hk_align_up(total, step > HK_OS_PAGE ? step : HK_OS_PAGE);
}

void *hk_large_alloc(size_t n, size_t align, bool *zeroed)
{
    size_t off = align <= 64 ? HDR : hk_align_up(HDR, align);
    if (n > (size_t)PTRDIFF_MAX - off - HK_CHUNK_SIZE) {
        errno = ENOMEM;
        return NULL;
    }
    size_t total = map_size(off, n);
    hk_large_t *reuse = NULL;
    bool fits = false;
    hk_lock(&large_lock);
    if (off == HDR) {
        /* Best fit among cached mappings, at most twice the size asked for
         * (address space only: untouched pages cost no RSS); else the
         * largest smaller one of at least 3/4 of it, grown below. */
        int best = -1, grow = -1;
        for (unsigned i = 0; i < cache_n; i++) {
            size_t m = cache[i].size;
            if (m >= total && m / 2 <= total && (best < 0 || m < cache[best].size))
                best = (int)i;
            else if (m < total && m >= total - total / 4 && (grow < 0 || m > cache[grow].size))
                grow = (int)i;
        }
        if (best >= 0 || grow >= 0) {
            fits = best >= 0;
            reuse = cache_take((unsigned)(fits ? best : grow));
            __atomic_add_fetch(&live_bytes, reuse->map_size, __ATOMIC_RELAXED);
            live_count++;
            n_allocs++;
            reuse->head.kind = HK_CHUNK_LARGE;
        }
    }
    hk_unlock(&large_lock);
    if (reuse) {
        *zeroed = false;
        if (fits)
            return reuse->user;
        /* Its pages are resident: moving them (mremap, no copy) costs less
         * than faulting in a new mapping while this one waits in the cache
         * for the purge delay, its RSS counted twice meanwhile. */
        int saved = errno; /* a failed in-place mremap is no error of malloc's */
        void *p = hk_large_resize(&reuse->head, reuse->user, n);
        errno = saved;
        if (p)
            return p;
        hk_lock(&large_lock); /* no room to grow it: a new mapping instead */
        __atomic_sub_fetch(&live_bytes, reuse->map_size, __ATOMIC_RELAXED);
        live_count--;
        n_allocs--;
        hk_unlock(&large_lock);
        unmap(reuse);
    }
    hk_large_t *ch = hk_os_reserve(total, align > HK_CHUNK_SIZE ? align : HK_CHUNK_SIZE, true);
    if (!ch)
        return NULL;
    ch->head.kind = HK_CHUNK_LARGE;
    ch->user = (char *)ch + off;
    ch->map_size = total;
    if (!hk_pagemap_set(ch, total, &ch->head)) {
        hk_os_release(ch, total);
        errno = ENOMEM;
        return NULL;
    }
    hk_lock(&large_lock);
    __atomic_add_fetch(&live_bytes, total, __ATOMIC_RELAXED);
    live_count++;
    n_allocs++;
    n_maps++;
    hk_unlock(&large_lock);
    *zeroed = true;
    return ch->user;
}

static void check(hk_large_t *ch, const void *p, const char *op)
{
    if (ch->head.kind == HK_CHUNK_LARGE && ch->user == p)
        return;
    bool again = ch->head.kind == HK_CHUNK_LARGE_FREE && ch->user == p && !strcmp(op, "free");
    hk_fatal_op(again ? "double" : "invalid", op, p);
}

void hk_large_free(hk_chunk_t *owner, void *p, const char *op)
{
    hk_large_t *ch = (hk_large_t *)owner;
    hk_large_t *evict[2 * CACHE_SLOTS + 1];
    unsigned nevict = 0;
    hk_lock(&large_lock);
    check(ch, p, op);
    __atomic_sub_fetch(&live_bytes, ch->map_size, __ATOMIC_RELAXED);
    live_count--;
    n_frees++;
    uint32_t now = hk_now_ms(), delay = hk_policy_purge_delay_ms();
    /* Mappings idle past the purge delay go back to the OS. */
    while (cache_n && now - cache[0].idle_ms >= delay)
        evict[nevict++] = cache_take(0);
    if (ch->user == (char *)ch + HDR && ch->map_size <= CACHE_MAX_BYTES / 2) {
        ch->head.kind = HK_CHUNK_LARGE_FREE; /* stays mapped: a second free is seen */
        if (cache_n == CACHE_SLOTS)
            evict[nevict++] = cache_take(0);
        cache[cache_n].ch = ch;
        cache[cache_n].size = ch->map_size;
        cache[cache_n].idle_ms = now;
        cache_n++;
        __atomic_add_fetch(&cache_bytes, ch->map_size, __ATOMIC_RELAXED);
        hk_refill_mark_pending();
        while (cache_bytes > CACHE_MAX_BYTES)
            evict[nevict++] = cache_take(0);
    } else {
        evict[nevict++] = ch;
    }
    hk_unlock(&large_lock);
    for (unsigned i = 0; i < nevict; i++)
        unmap(evict[i]);
}

size_t hk_large_usable(hk_chunk_t *owner, const void *p, const char *op)
{
    hk_large_t *ch = (hk_large_t *)owner;
    check(ch, p, op);
    return ch->map_size - (size_t)(ch->user - (char *)ch);
}

void *hk_large_resize(hk_chunk_t *owner, void *p, size_t n)
{
    hk_large_t *ch = (hk_large_t *)owner;
    size_t off = (size_t)(ch->user - (char *)ch);
    if (n > (size_t)PTRDIFF_MAX - off - HK_CHUNK_SIZE)
        return NULL;
    size_t old = ch->map_size, total = map_size(off, n);
    if (total == old)
        return p;
    if (total < old) {
        /* Only 2 MiB chunks wholly past the new end stop being this block's. */
        char *keep = (char *)hk_align_up((uintptr_t)ch + total, HK_CHUNK_SIZE);
        if (keep < (char *)ch + old)
            hk_pagemap_set(keep, (size_t)((char *)ch + old - keep), NULL);
        hk_os_resize(ch, old, total);
        hk_note_returned(old - total);
    } else if (hk_os_resize(ch, old, total)) {
        if (!hk_pagemap_set((char *)ch + old, total - old, &ch->head)) {
            /* A set that failed half way leaves entries: clear those of
             * chunks wholly past the old end (clearing cannot fail). */
            char *past = (char *)hk_align_up((uintptr_t)ch + old, HK_CHUNK_SIZE);
            if (past < (char *)ch + total)
                hk_pagemap_set(past, (size_t)((char *)ch + total - past), NULL);
            hk_os_resize(ch, total, old);
            return NULL;
        }
    } else {
        hk_large_t *dst = hk_os_reserve(total, HK_CHUNK_SIZE, false);
        if (!dst)
            return NULL;
        if (!hk_pagemap_set(dst, total, &dst->head)) {
            hk_pagemap_set(dst, total, NULL);
            hk_os_release(dst, total);
            return NULL;
        }
        /* Another thread may map the source range as soon as mremap has
         * moved it: its entries go first, and come back if the move fails. */
        hk_pagemap_set(ch, old, NULL);
        if (!hk_os_move(ch, old, dst, total)) {
            hk_pagemap_set(ch, old, &ch->head);
            hk_pagemap_set(dst, total, NULL);
            hk_os_release(dst, total);
            return NULL;
        }
        ch = dst;
        ch->user = (char *)ch + off;
    }
    hk_lock(&large_lock);
    __atomic_add_fetch(&live_bytes, total - old, __ATOMIC_RELAXED); /* wraps correctly when shrinking */
    hk_unlock(&large_lock);
    ch->map_size = total;
    return ch->user;
}

size_t hk_large_purge(uint32_t delay, bool *pending)
{
    hk_large_t *evict[CACHE_SLOTS];
    unsigned n = 0;
    size_t given = 0;
    uint32_t now = hk_now_ms();
    hk_lock(&large_lock);
    while (cache_n && now - cache[0].idle_ms >= delay) {
        given += cache[0].size;
        evict[n++] = cache_take(0);
    }
    if (cache_n)
        *pending = true;
    hk_unlock(&large_lock);
    for (unsigned i = 0; i < n; i++)
        unmap(evict[i]);
    return given;
}

void hk_large_stats(hk_large_stats_t *st)
{
    hk_lock(&large_lock);
    *st = (hk_large_stats_t){live_bytes, live_count, cache_bytes, cache_n, n_allocs, n_frees, n_maps, 0};
    hk_unlock(&large_lock);
    st->unmaps = __atomic_load_n(&n_unmaps, __ATOMIC_RELAXED);
}

void hk_large_fork(int phase)
{
    hk_lock_fork(&large_lock, phase);
}

size_t hk_large_mapped(void)
{
    return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED) + __atomic_load_n(&cache_bytes, __ATOMIC_RELAXED);
}
