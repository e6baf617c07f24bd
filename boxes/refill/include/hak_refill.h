/* hak_refill.h — Box 2: regions and slabs, batch refill and flush, the central exchange and the page map. */
#ifndef HAK_REFILL_H
#define HAK_REFILL_H

#include "hak_base.h"
#include "hak_front.h"

enum { HK_PAGE_FREE = 0, HK_PAGE_SLAB = 1, HK_PAGE_MEDIUM = 2, HK_PAGE_HEADER = 3 };
enum { HK_CHUNK_REGION = 1, HK_CHUNK_LARGE = 2, HK_CHUNK_LARGE_FREE = 3 };
#define HK_CHUNK_MAGIC 0x68616b6dU /* "hakm" */

/* One 64 KiB page of a region. Every page of a span carries cls, kind, first
 * and start, so free() needs no second lookup; slab state lives on the span's
 * first page. */
typedef struct hk_page {
    uint8_t cls;        /* slab class, 0 otherwise: the free() fast test */
    uint8_t kind;       /* HK_PAGE_* */
    uint8_t first;      /* index of the span's first page */
    uint8_t npages;     /* span length (first page) */
    uint32_t used;      /* slab: blocks handed out of the slab (first page) */
    uint64_t divmagic;  /* slab: 2^64/size + 1, for the block-start test */
    uint64_t smag;      /* slab: start * divmagic (mod 2^64), precomputed */
    uintptr_t start;    /* span start address */
    union {
        void *free;         /* slab: blocks returned to the slab */
        uint8_t mstate[8];  /* medium slab of a held class: HK_MB_* of block i (atomic) */
    };
    char *bump, *end;   /* slab: not yet carved */
    struct hk_page *next, *prev; /* slab: class partial list */
    uint32_t capacity;  /* slab: blocks in the span */
    uint8_t on_partial;
    uint8_t mcls;       /* medium slab: its medium class */
    uint8_t shard;      /* slab: the Box 2 shard that carved it */
    uint8_t pad;
    uint32_t mfree;     /* medium slab: bit i set = block i is free */
    uint32_t mdirty;    /* medium slab: bit i set = block i may be non-zero */
    uint32_t idle_ms;   /* slab: when a block was last freed into it; free page: when it became free */
    uint32_t charge;    /* medium slab, empty: its dirty bytes, counted in the budget */
} hk_page_t;

typedef struct hk_chunk {
    uint32_t magic;
    uint8_t kind; /* HK_CHUNK_* */
    uint8_t pad[3];
    hk_page_t page[HK_PAGES_PER_CHUNK]; /* all zero for large mappings */
    /* region state */
    uint32_t free_pages;  /* bit i: page i is free */
    uint32_t dirty_pages; /* bit i: page i may hold non-zero bytes */
    struct hk_chunk *next_avail, *prev_avail; /* its list: regions of the same longest free run */
    uint32_t idle_ms; /* when a span last came back to the region */
    uint8_t longest;  /* its longest run of free pages (0: on no list) */
    /* large-mapping state */
    char *user;       /* the pointer malloc returned */
    size_t map_size;  /* bytes mapped from the chunk base */
} hk_chunk_t;

/* The page map: 2 MiB chunk number -> owning header, two levels, leaves
 * mapped on first use. Covers the 47-bit user address space. */
#define HK_MAP_TOP_BITS 13
#define HK_MAP_LEAF_BITS (47 - HK_CHUNK_SHIFT - HK_MAP_TOP_BITS)
extern HK_HIDDEN hk_chunk_t **hk_pagemap[1u << HK_MAP_TOP_BITS];

/* The header owning p, or NULL if hakmem never mapped p's chunk (NULL too). */
HK_INLINE hk_chunk_t *hk_chunk_of(const void *p)
{
    uintptr_t chunk = (uintptr_t)p >> HK_CHUNK_SHIFT;
    uintptr_t top = chunk >> HK_MAP_LEAF_BITS;
    if (HK_UNLIKELY(top >= (1u << HK_MAP_TOP_BITS)))
        return NULL;
    hk_chunk_t **leaf = __atomic_load_n(&hk_pagemap[top], __ATOMIC_RELAXED);
    if (HK_UNLIKELY(leaf == NULL))
        return NULL;
    return __atomic_load_n(&leaf[chunk & ((1u << HK_MAP_LEAF_BITS) - 1)], __ATOMIC_RELAXED);
}

HK_INLINE hk_page_t *hk_page_of(hk_chunk_t *ch, const void *p)
{
    return &ch->page[((uintptr_t)p >> HK_PAGE_SHIFT) & (HK_PAGES_PER_CHUNK - 1)];
}

/* True when p is the start of a block of its slab: (p - start) is a
 * multiple of the size exactly when (p - start) * divmagic < divmagic
 * (Lemire's test, offsets < 2^32), and (p - start) * divmagic is
 * p * divmagic - smag: one multiply, no division. */
HK_INLINE bool hk_slab_is_block_start(const hk_page_t *pg, const void *p)
{
    return (uint64_t)(uintptr_t)p * pg->divmagic - pg->smag < pg->divmagic;
}

/* Thread-cache exchange. take: fills *head with a NULL-terminated list of
 * blocks of class c and returns how many (0: out of memory): an exchange
 * entry whole if there is one (a batch, or a shorter list a drained cache
 * gave back; one move), else up to `want` blocks carved from the slabs.
 * give: takes back a NULL-terminated list of n blocks. */
unsigned hk_refill_take(unsigned c, unsigned want, void **head);
void hk_refill_give(unsigned c, void *head, unsigned n, unsigned batch);
/* Global path for threads without a cache (exited): one block at a time. */
void *hk_refill_alloc_one(unsigned c);
void hk_refill_free_one(unsigned c, void *p);

/* Medium blocks (32 KiB < n <= 1 MiB): forty classes in bitmap slabs.
 * Blocks of a power-of-two class are 64 KiB-aligned, all others 4 KiB.
 * *zeroed tells whether the block is known to read as zero. */
void *hk_medium_alloc(size_t n, bool *zeroed);
void hk_medium_free(hk_chunk_t *ch, void *p); /* aborts on a bad pointer */
size_t hk_medium_usable(hk_chunk_t *ch, const void *p, const char *op);

/* Medium blocks of up to HK_MEDIUM_HELD_MAX may be held by a thread's cache
 * (Box 1) instead of going back to their slab: still in use for the slab
 * (not free, not purged), marked held in its record, so that a second
 * free, from any thread, and a size query abort. Such slabs have at most
 * 8 blocks: the state bytes share the record's small-slab free field. */
enum { HK_MB_FREE = 0, HK_MB_LIVE = 1, HK_MB_HELD = 2 };
#define HK_MEDIUM_HELD_CLASSES 24
#define HK_MEDIUM_HELD_MAX ((size_t)256 << 10)
#define HK_MEDIUM_CLASSES 40
extern HK_HIDDEN const uint32_t hk_medium_sizes[HK_MEDIUM_CLASSES];
extern HK_HIDDEN const uint8_t hk_medium_class_by4k[(HK_MEDIUM_MAX >> 12) + 1];
HK_INLINE unsigned hk_medium_class(size_t n) /* 32 KiB < n <= 1 MiB */
{
    return hk_medium_class_by4k[(n + 4095) >> 12];
}
/* The class a thread's cache would hold p in, unchecked: HK_MEDIUM_HELD_CLASSES
 * or more when p's page is no medium slab's or its class is not held. */
HK_INLINE unsigned hk_medium_held_class(hk_chunk_t *ch, const void *p)
{
    const hk_page_t *pg = hk_page_of(ch, p);
    return pg->kind == HK_PAGE_MEDIUM ? pg->mcls : HK_MEDIUM_HELD_CLASSES;
}
/* free(p) into a thread's cache (the caller has room for it): checks p as
 * hk_medium_free does (aborting on an invalid or double free) and marks it
 * held. Returns the ticket the cache keeps, or 0 (nothing changed) when p
 * cannot be held after all. */
uintptr_t hk_medium_hold(hk_chunk_t *ch, void *p);
/* A held block back to its slab (drain): as hk_medium_free, from HELD. */
void hk_medium_release(uintptr_t t);
/* Aborts unless p is a medium block in the program's hands (for a free that
 * will drain the caller's cache before hk_medium_free checks p). No lock. */
void hk_medium_check_live(hk_chunk_t *ch, const void *p);
/* A ticket is the block (4 KiB-aligned) with its slab's first page and its
 * index in the low bits; a region's header starts its 2 MiB-aligned chunk,
 * so neither direction needs a lookup. */
HK_INLINE uintptr_t hk_medium_ticket(void *p, unsigned first, unsigned i) { return (uintptr_t)p | first << 3 | i; }
HK_INLINE void *hk_medium_ticket_block(uintptr_t t) { return (void *)(t & ~(uintptr_t)(HK_OS_PAGE - 1)); }
HK_INLINE hk_chunk_t *hk_medium_ticket_chunk(uintptr_t t)
{
    return (hk_chunk_t *)(t & ~(uintptr_t)(HK_CHUNK_SIZE - 1));
}
/* The held block back to the program (a cache hit). */
HK_INLINE void *hk_medium_unhold(uintptr_t t)
{
    hk_chunk_t *ch = hk_medium_ticket_chunk(t);
    __atomic_store_n(&ch->page[(t >> 3) & (HK_PAGES_PER_CHUNK - 1)].mstate[t & 7], HK_MB_LIVE,
                     __ATOMIC_RELAXED);
    return hk_medium_ticket_block(t);
}

/* Page-map registration for the large path: [base, base+size) -> ch. */
bool hk_pagemap_set(void *base, size_t size, hk_chunk_t *ch);

/* Gives back to the OS what has been free for at least `delay` ms (0: all
 * of it): central batches go back to slabs, empty slabs to regions, free
 * pages are decommitted and empty regions unmapped. Returns the bytes given
 * back; sets *pending when free resident memory remains for a later call. */
size_t hk_refill_purge(uint32_t delay, bool *pending);
/* Set whenever memory becomes free; the front's purge thread clears it. */
extern HK_HIDDEN int hk_refill_purge_pending;
/* Sets it (every setter goes through here), ordered against the purge
 * thread's parking: stored only when clear, since it mostly is set and a
 * sequentially consistent store (an xchg) on every medium free cost more
 * than the rest of the flag's use. */
HK_INLINE void hk_refill_mark_pending(void)
{
    if (!__atomic_load_n(&hk_refill_purge_pending, __ATOMIC_SEQ_CST))
        __atomic_store_n(&hk_refill_purge_pending, 1, __ATOMIC_SEQ_CST);
}
/* Set by the front's purge thread while it runs (cleared in a fork child):
 * memory kept for reuse is then bounded by the purge delay, so Box 2 may
 * keep more of it at once (docs/design.md, "Giving memory back"). */
extern HK_HIDDEN int hk_refill_purger;
/* Counts purge passes (every hk_refill_purge call): a thread
 * whose slow path sees it advanced by HK_IDLE_EPOCHS since its previous slow
 * path has been idle, and gives its whole cache back first. */
extern HK_HIDDEN unsigned hk_refill_purge_epoch;
#define HK_IDLE_EPOCHS 2

/* Figures for mallinfo2/malloc_stats. */
typedef struct hk_refill_stats {
    size_t region_bytes;   /* mapped for regions */
    size_t free_page_bytes;/* in free pages of regions */
    size_t central_bytes;  /* blocks parked in the central exchange */
    size_t slab_free_bytes;/* free blocks inside slabs */
} hk_refill_stats_t;
void hk_refill_stats(hk_refill_stats_t *st);
/* Only the region figures (region_bytes, free_page_bytes): no class walk. */
void hk_region_stats(hk_refill_stats_t *st);
/* Bytes mapped for regions, read without a lock (a moment's value). */
size_t hk_refill_mapped(void);

/* One class's figures (hak_stats_get, and summed for hk_refill_stats).
 * Small classes (1..HK_NCLASS-1): out = blocks handed to thread caches or
 * the program and not given back. */
typedef struct hk_refill_class_stats {
    size_t size;           /* block size */
    uint64_t allocs, frees;/* medium classes only: small ones count in Box 1 */
    uint64_t refills;      /* small: thread-cache refills; medium: slabs made */
    uint64_t flushes;      /* small: blocks lists given back; medium: slabs returned */
    int64_t out;           /* small classes only */
    size_t central;        /* blocks in the central exchange */
    size_t slab_free;      /* free or not yet carved blocks in slabs */
    size_t slabs;          /* slabs mapped for the class */
} hk_refill_class_stats_t;
void hk_refill_class_stats(unsigned c, hk_refill_class_stats_t *st);
void hk_medium_class_stats(unsigned m, hk_refill_class_stats_t *st);

/* fork(): hold every Box 2 lock across it. */
void hk_refill_lock_all(void);
void hk_refill_unlock_all(void);
void hk_refill_reset_locks(void);

#endif /* HAK_REFILL_H */
