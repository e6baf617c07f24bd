/* refill_internal.h — what Box 2's files share: the region and page-record layouts, span allocation and slab lists. */
#ifndef HK_REFILL_INTERNAL_H
#define HK_REFILL_INTERNAL_H

#include "hak_refill.h"
#include "hak_backend.h"

#include <stddef.h>

/* One 64 KiB page of a region. Every page of a span carries cls, kind, first
 * and the block-start constants, so free() needs no second lookup; slab
 * state lives on the span's first page. */
typedef struct hk_page {
    HK_PAGE_FACE_FIELDS
    uint8_t npages;     /* span length (first page) */
    uint8_t on_partial;
    uint8_t shard;      /* slab: the Box 2 shard that carved it */
    uint8_t sampled;    /* holds a block the heap profiler sampled (slab map: HK_SLABMAP_SAMPLED) */
    uint16_t capacity;  /* slab: blocks in the span (at most 4096) */
    uint16_t used;      /* slab: blocks handed out of the slab (first page) */
    uintptr_t start;    /* span start address */
    char *bump, *end;   /* slab: not yet carved */
    struct hk_page *next, *prev; /* slab: class partial list */
    union {
        struct {
            uint32_t mfree;  /* medium slab: bit i set = block i is free */
            uint32_t mdirty; /* medium slab: bit i set = block i may be non-zero */
        };
        uint64_t fword;  /* small slab of at most 64 blocks: its fmap */
    };
    uint32_t idle_ms;   /* slab: when a block was last freed into it; free page: when it became free */
    union {
        uint32_t charge; /* medium slab, empty: its dirty bytes, counted in the budget */
        uint32_t nfree;  /* small slab: blocks set in fmap */
    };
} hk_page_t;

/* A region's header, in its first OS page. */
typedef struct hk_region {
    uint32_t os;    /* the backend's record (hak_backend.h): never written here */
    uint8_t kind;   /* HK_CHUNK_REGION */
    uint8_t pad[3];
    hk_page_t page[HK_PAGES_PER_CHUNK];
    uint32_t free_pages;  /* bit i: page i is free */
    uint32_t dirty_pages; /* bit i: page i may hold non-zero bytes */
    struct hk_region *next_avail, *prev_avail; /* its list: regions of the same longest free run */
    uint32_t idle_ms; /* when a span last came back to the region */
    uint8_t longest;  /* its longest run of free pages (0: on no list) */
    uint16_t sampled_n[HK_PAGES_PER_CHUNK]; /* page i's live sampled blocks (under the profiler's lock) */
} hk_region_t;

_Static_assert(sizeof(hk_region_t) <= HK_OS_PAGE, "region header must fit one OS page");
_Static_assert(HK_PAGES_PER_CHUNK == 32, "free-page masks are 32-bit");
_Static_assert(offsetof(hk_region_t, os) == 0 && HK_OS_REGION_WORD == sizeof(uint32_t),
               "the backend's record leads the header");
_Static_assert(offsetof(hk_region_t, kind) == offsetof(hk_chunk_t, kind), "a region is a chunk owner");
#define HK_FACE_AT(f) (offsetof(hk_page_t, f) == offsetof(hk_page_face_t, f))
_Static_assert(HK_FACE_AT(cls) && HK_FACE_AT(kind) && HK_FACE_AT(first) && HK_FACE_AT(mcls) && HK_FACE_AT(limit) &&
                   HK_FACE_AT(divmagic) && HK_FACE_AT(smag) && HK_FACE_AT(fmap) && HK_FACE_AT(mstate),
               "the face's fields lead the record");
#undef HK_FACE_AT
_Static_assert(offsetof(hk_region_t, page) == HK_PAGE_REC_AT && sizeof(hk_page_t) == HK_PAGE_REC_SIZE,
               "the face's geometry (hak_refill.h) is the records'");

/* The region owning p (p must be in one). */
HK_INLINE hk_region_t *hk_region_of(const void *p) { return (hk_region_t *)hk_chunk_of(p); }
HK_INLINE hk_region_t *hk_region_cast(hk_chunk_t *ch) { return (hk_region_t *)ch; }
HK_INLINE hk_page_t *hk_page_of(hk_region_t *r, const void *p)
{
    return &r->page[((uintptr_t)p >> HK_PAGE_SHIFT) & (HK_PAGES_PER_CHUNK - 1)];
}
/* The region holding p, known to lie in one (a block, a page record):
 * regions are 2 MiB-aligned, so no lookup. */
HK_INLINE hk_region_t *hk_region_at(const void *p)
{
    return (hk_region_t *)((uintptr_t)p & ~(HK_CHUNK_SIZE - 1));
}
HK_INLINE hk_region_t *hk_region_of_page(hk_page_t *pg) { return hk_region_at(pg); }
HK_INLINE unsigned hk_page_index(hk_page_t *pg)
{
    return (unsigned)(pg - hk_region_of_page(pg)->page);
}

/* hk_slab_is_block_start on a full record (its face leads it). */
/* The slab map code of a slab's page (hak_refill.h), 0 for none. */
HK_INLINE unsigned hk_page_map_code(const hk_page_t *pg)
{
    if (pg->sampled)
        return HK_SLABMAP_SAMPLED;
    if (pg->cls)
        return pg->cls;
    return pg->kind == HK_PAGE_MEDIUM && pg->mcls < HK_MEDIUM_HELD_CLASSES ? HK_SLABMAP_MEDIUM + pg->mcls : 0;
}
HK_INLINE bool hk_page_is_block_start(const hk_page_t *pg, const void *p)
{
    return hk_slab_is_block_start((const hk_page_face_t *)pg, p);
}

/* Allocates a span of n pages (1..31) for a slab of class cls (kind
 * HK_PAGE_SLAB) or of medium class cls (HK_PAGE_MEDIUM), with their slab
 * map entries. Sets *zeroed when the span has never been written. NULL:
 * out of memory. */
hk_page_t *hk_span_alloc(unsigned n, unsigned kind, unsigned cls, bool *zeroed);
/* Returns a span to its region; releases the region if it holds nothing. */
void hk_span_free(hk_page_t *first);

/* A list of slabs that have free blocks: their first pages, linked through
 * next/prev; small and medium classes keep one each. */
typedef struct hk_slab_list {
    hk_page_t *head;
    unsigned n;
} hk_slab_list_t;
void hk_slab_list_add(hk_slab_list_t *l, hk_page_t *pg);
void hk_slab_list_remove(hk_slab_list_t *l, hk_page_t *pg);

/* Decommits every run of set bits in `bits`, bit i standing for the `unit`
 * bytes at base + i * unit; returns the bytes given back. */
size_t hk_decommit_bits(char *base, uint32_t bits, size_t unit);

/* Set while the front's purge thread runs (hk_refill_purger_started). */
extern HK_HIDDEN int hk_refill_purger;

/* Each gives back memory idle for at least `delay` ms (0: all there is),
 * and sets *pending when free resident memory remains for a later call. */
size_t hk_region_purge(uint32_t delay, bool *pending);
void hk_medium_purge(uint32_t delay, bool *pending);
/* fork: the region lock and the medium classes' locks (HK_FORK_*). */
void hk_region_fork(int phase);
void hk_medium_fork(int phase);

#endif
