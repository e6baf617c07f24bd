/* refill_internal.h — what Box 2's two files share: the region lock and span allocation. */
#ifndef HK_REFILL_INTERNAL_H
#define HK_REFILL_INTERNAL_H

#include "hak_refill.h"

/* Allocates a span of n pages (1..31) for a slab of class cls (0: medium).
 * Sets *zeroed when the span has never been written. NULL: out of memory. */
hk_page_t *hk_span_alloc(unsigned n, unsigned kind, unsigned cls, bool *zeroed);
/* Returns a span to its region; releases the region if it holds nothing. */
void hk_span_free(hk_page_t *first);
/* The chunk header owning a page descriptor. */
HK_INLINE hk_chunk_t *hk_chunk_of_page(hk_page_t *pg)
{
    return (hk_chunk_t *)((uintptr_t)pg & ~(HK_CHUNK_SIZE - 1));
}
HK_INLINE unsigned hk_page_index(hk_page_t *pg)
{
    return (unsigned)(pg - hk_chunk_of_page(pg)->page);
}

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

/* Each gives back memory idle for at least `delay` ms (0: all there is),
 * and sets *pending when free resident memory remains for a later call. */
size_t hk_region_purge(uint32_t delay, bool *pending);
void hk_medium_purge(uint32_t delay, bool *pending);
void hk_medium_lock_all(void);
void hk_medium_unlock_all(void);
void hk_region_lock_all(void);
void hk_region_unlock_all(void);
void hk_region_reset_locks(void);

#endif
