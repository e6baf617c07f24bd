/* hak_refill.h — Box 2's face: batches for thread caches, medium blocks, the page map free() reads, purging, stats and fork. */
#ifndef HAK_REFILL_H
#define HAK_REFILL_H

#include "hak_base.h"

/* ---- the page map: what owns a 2 MiB chunk --------------------------------
 * Every chunk hakmem maps is a slab region (Box 2's) or part of a large
 * block's mapping (the front's); the page map leads from an address to the
 * owner's header, which starts with this head. */
enum { HK_CHUNK_REGION = 1, HK_CHUNK_LARGE = 2, HK_CHUNK_LARGE_FREE = 3 };
/* may_alias: the owners' own header types start with these fields, and a
 * read through this type must see what was written through theirs. */
typedef struct __attribute__((may_alias)) hk_chunk {
    uint32_t os;  /* a region's record kept by the backend (HK_OS_REGION_WORD) */
    uint8_t kind; /* HK_CHUNK_*: written by the owner */
    uint8_t pad[3];
} hk_chunk_t;

/* Two levels, leaves mapped on first use; covers the 47-bit user space. */
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
    /* acquire (a plain load on x86): a pointer whose chunk no thread handed
     * over (a guarded block's) may look in a leaf another thread has just
     * mapped, and must see it zeroed */
    hk_chunk_t **leaf = __atomic_load_n(&hk_pagemap[top], __ATOMIC_ACQUIRE);
    if (HK_UNLIKELY(leaf == NULL))
        return NULL;
    return __atomic_load_n(&leaf[chunk & ((1u << HK_MAP_LEAF_BITS) - 1)], __ATOMIC_RELAXED);
}

/* Registers [base, base+size) -> owner (NULL: unregisters); false when a
 * leaf cannot be mapped. For the large path; regions register themselves. */
bool hk_pagemap_set(void *base, size_t size, hk_chunk_t *owner);

/* ---- the page record's face -----------------------------------------------
 * A region keeps a record for each of its 64 KiB pages; these fields lead
 * every record and are what the floors above read without a call (free's
 * hit path, the medium cache). Box 2 writes them (and a medium block's
 * state byte through hk_medium_unhold); the rest of the record is its own.
 * In a large mapping's chunks the records read as all zero. */
enum { HK_PAGE_FREE = 0, HK_PAGE_SLAB = 1, HK_PAGE_MEDIUM = 2, HK_PAGE_HEADER = 3 };
#define HK_PAGE_FACE_FIELDS                                                              \
    uint8_t cls;       /* slab class, 0 otherwise: the page-map path's first test */    \
    uint8_t kind;      /* HK_PAGE_* */                                                   \
    uint8_t first;     /* index of the span's first page */                              \
    uint8_t mcls;      /* medium slab: its medium class */                               \
    uint32_t limit;    /* small slab: low half of the last carved byte's address (atomic) */ \
    uint64_t divmagic; /* slab: 2^64/size + 1, for the block-start test */               \
    uint64_t smag;     /* slab: start * divmagic (mod 2^64), precomputed */              \
    union {                                                                              \
        uint64_t *fmap;    /* Box 2's: small slab's returned blocks, bit i = block i */ \
        uint8_t mstate[8]; /* medium slab of a held class: HK_MB_* of block i (atomic) */ \
    };
/* may_alias: Box 2 writes these fields through its own record type. */
typedef struct __attribute__((may_alias)) hk_page_face {
    HK_PAGE_FACE_FIELDS
} hk_page_face_t;
/* Where the records sit in a region's header, and their size. */
#define HK_PAGE_REC_AT 8
#define HK_PAGE_REC_SIZE 96

HK_INLINE hk_page_face_t *hk_page_face_at(const hk_chunk_t *ch, size_t i)
{
    return (hk_page_face_t *)((char *)ch + HK_PAGE_REC_AT + i * HK_PAGE_REC_SIZE);
}
/* The record of the page holding p, in the region ch (p's owner). */
HK_INLINE hk_page_face_t *hk_page_face(const hk_chunk_t *ch, const void *p)
{
    return hk_page_face_at(ch, ((uintptr_t)p >> HK_PAGE_SHIFT) & (HK_PAGES_PER_CHUNK - 1));
}

/* ---- the slab map: free()'s one-load way to a small block's class -----------
 * Direct-mapped by 64 KiB page number: entry (p >> 16) mod 2^16 holds
 * (page number << 8 | code) while that page belongs to a small slab (code:
 * its class) or to a medium slab of a class threads may hold (code:
 * HK_SLABMAP_MEDIUM + medium class). The key is the whole page number, so
 * a match proves p lies in a live slab of hakmem's (its region header is
 * then p masked to 2 MiB, no page map walk); anything else (another page
 * that shares the entry, a large block, a foreign pointer) misses and takes
 * the page map. Box 2 writes the entries under its region lock, one 8-byte
 * store each. */
#define HK_SLABMAP_BITS 16
extern HK_HIDDEN uint64_t hk_slabmap[1u << HK_SLABMAP_BITS];
HK_INLINE uint64_t hk_slabmap_key(const void *p) { return (uint64_t)((uintptr_t)p >> HK_PAGE_SHIFT) << 8; }
/* The entry p's page shares with every page 4 GiB apart from it. */
HK_INLINE uint64_t *hk_slabmap_slot(const void *p)
{
    return &hk_slabmap[((uintptr_t)p >> HK_PAGE_SHIFT) & ((1u << HK_SLABMAP_BITS) - 1)];
}
/* p's class (1..HK_NCLASS-1) when the map has p's page, HK_SLABMAP_MEDIUM
 * + m when it has it as a page of a medium slab of held class m, else a
 * value outside both ranges. */
#define HK_SLABMAP_MEDIUM HK_NCLASS
/* The code of a page holding a block the heap profiler sampled: free's hit
 * path misses on it and its slow path asks the profiler. */
#define HK_SLABMAP_SAMPLED 255u
HK_INLINE uint64_t hk_slabmap_class(const void *p)
{
    return __atomic_load_n(hk_slabmap_slot(p), __ATOMIC_RELAXED) ^ hk_slabmap_key(p);
}
/* The region holding p and p's page record, for a p the slab map has. */
HK_INLINE hk_chunk_t *hk_slabmap_chunk(const void *p)
{
    return (hk_chunk_t *)((uintptr_t)p & ~(uintptr_t)(HK_CHUNK_SIZE - 1));
}
HK_INLINE hk_page_face_t *hk_slabmap_face(const void *p) { return hk_page_face(hk_slabmap_chunk(p), p); }

/* True when p is the start of a block of its slab: (p - start) is a
 * multiple of the size exactly when (p - start) * divmagic < divmagic
 * (Lemire's test, offsets < 2^32), and (p - start) * divmagic is
 * p * divmagic - smag: one multiply, no division. */
HK_INLINE bool hk_slab_is_block_start(const hk_page_face_t *pg, const void *p)
{
    return (uint64_t)(uintptr_t)p * pg->divmagic - pg->smag < pg->divmagic;
}
/* True when the small block p of the slab pg was ever carved: a block past
 * the carving point was never handed out (nothing marks it free yet). The
 * low 32 bits are enough: a 2 MiB-aligned region never straddles a 4 GiB
 * boundary, and the last carved byte (not the end) cannot wrap to 0. */
HK_INLINE bool hk_slab_is_carved(const hk_page_face_t *pg, const void *p)
{
    /* Atomic: Box 2 raises it while other threads free the slab's older
     * blocks (either value covers those). */
    return (uint32_t)(uintptr_t)p <= __atomic_load_n(&pg->limit, __ATOMIC_RELAXED);
}

/* ---- thread caches (Box 1) ------------------------------------------------ */

/* The cap and batch a thread cache of class c works with from this refill
 * or flush on (contract B), as the policy has them now. */
hk_limits_t hk_refill_limits(unsigned c);
/* take: fills *head with a NULL-terminated list of blocks of class c and
 * returns how many (0: out of memory): an exchange entry whole if there is
 * one (a batch, or a shorter list a drained cache gave back; one move), else
 * `want` blocks carved from the slabs, lowest addresses first, or all of
 * a slab's returned blocks where they come to at most `most` (a refill
 * less, each one a lock round trip). A refill event for the policy.
 * give: takes back a NULL-terminated list of n blocks, cut into batches;
 * true when the exchange had no room for some (they went to their slabs)
 * and no thread took a batch of the class since it last had none: nobody
 * is taking them. flush: give, from a full cache (a flush event); own:
 * the blocks go to their slabs if the calling thread took from the class
 * last (it would take them back). drained: a thread gave its whole cache
 * back (a drain event). */
unsigned hk_refill_take(unsigned c, unsigned want, unsigned most, void **head);
bool hk_refill_give(unsigned c, void *head, unsigned n, unsigned batch);
bool hk_refill_flush(unsigned c, void *head, unsigned n, unsigned batch, bool own);
void hk_refill_drained(void);
/* Global path for threads without a cache (exited): one block at a time. */
void *hk_refill_alloc_one(unsigned c);
void hk_refill_free_one(unsigned c, void *p);
/* The heap profiler's count of sampled blocks on the 64 KiB page holding p
 * (a live small or medium block; large blocks are not counted), changed by
 * d (+1 before the block is handed out, -1 before it is freed): while above
 * 0, the slab map has the page as HK_SLABMAP_SAMPLED, so free's hit path
 * misses on every block of it; at 0 the page's code is back. Callers hold
 * one lock of their own around every call (the profiler's, which a fork
 * also holds: count and mark never disagree in a child); no lock inside. */
void hk_refill_page_sampled(void *p, int d);
/* Zeroed memory for the floors' own records (thread records): `size`
 * bytes, page-aligned, never given back. NULL when the OS refuses. */
void *hk_refill_meta(size_t size);

/* ---- medium blocks (32 KiB < n <= 1 MiB) -----------------------------------
 * Forty classes in bitmap slabs. Blocks of a power-of-two class are 64 KiB-
 * aligned, all others 4 KiB. *zeroed tells whether the block reads as zero. */
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
_Static_assert(HK_SLABMAP_MEDIUM + HK_MEDIUM_HELD_CLASSES < HK_SLABMAP_SAMPLED, "slab map codes fit a byte");
#define HK_MEDIUM_HELD_MAX ((size_t)256 << 10)
/* The class a thread's cache would hold p in, unchecked: HK_MEDIUM_HELD_CLASSES
 * or more when p's page is no medium slab's or its class is not held. */
HK_INLINE unsigned hk_medium_held_class(hk_chunk_t *ch, const void *p)
{
    const hk_page_face_t *pg = hk_page_face(ch, p);
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
HK_INLINE void *hk_medium_ticket_block(uintptr_t t) { return (void *)(t & ~(uintptr_t)(HK_OS_PAGE - 1)); }
/* hk_medium_hold without a call, for a p whose page the slab map has as a
 * held class's (HK_SLABMAP_MEDIUM): true, with p marked held and *t its
 * ticket, when p is a live block of its slab; else false and nothing
 * changed (hk_medium_hold then decides, and aborts on a bad pointer). One
 * multiply gives the block-start test (low half) and the index (high). */
HK_INLINE bool hk_medium_try_hold(void *p, uintptr_t *t)
{
    hk_chunk_t *ch = hk_slabmap_chunk(p);
    unsigned at = hk_page_face(ch, p)->first;
    hk_page_face_t *first = hk_page_face_at(ch, at);
    uintptr_t off = (uintptr_t)p - ((uintptr_t)ch + ((uintptr_t)at << HK_PAGE_SHIFT));
    unsigned __int128 prod = (unsigned __int128)off * first->divmagic;
    uint64_t i = (uint64_t)(prod >> 64);
    if (HK_UNLIKELY((uint64_t)prod >= first->divmagic || i >= sizeof first->mstate ||
                    __atomic_load_n(&first->mstate[i], __ATOMIC_RELAXED) != HK_MB_LIVE))
        return false;
    __atomic_store_n(&first->mstate[i], HK_MB_HELD, __ATOMIC_RELAXED);
    *t = (uintptr_t)p | (uintptr_t)at << 3 | (uintptr_t)i;
    return true;
}
/* The held block back to the program (a cache hit). */
HK_INLINE void *hk_medium_unhold(uintptr_t t)
{
    hk_chunk_t *ch = (hk_chunk_t *)(t & ~(uintptr_t)(HK_CHUNK_SIZE - 1));
    __atomic_store_n(&hk_page_face_at(ch, (t >> 3) & (HK_PAGES_PER_CHUNK - 1))->mstate[t & 7], HK_MB_LIVE,
                     __ATOMIC_RELAXED);
    return hk_medium_ticket_block(t);
}

/* ---- giving memory back ------------------------------------------------------ */

/* Gives back to the OS what has been free for at least `delay` ms (0: all
 * of it): central batches go back to slabs, empty slabs to regions, free
 * pages are decommitted and empty regions unmapped. Returns the bytes given
 * back; sets *pending when free resident memory remains for a later call.
 * Each call is a purge pass (hk_refill_purge_epoch). */
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
/* The front's purge thread runs from now on (until a fork): memory kept for
 * reuse is then bounded by the purge delay, so Box 2 may keep more of it at
 * once (docs/design.md, "Giving memory back"). */
void hk_refill_purger_started(void);
/* Counts purge passes: a thread whose slow path sees it advanced by
 * HK_IDLE_EPOCHS since its previous slow path has been idle, and gives its
 * whole cache back first. */
extern HK_HIDDEN unsigned hk_refill_purge_epoch;
#define HK_IDLE_EPOCHS 2
/* Bytes mapped for regions, read without a lock (a moment's value). */
size_t hk_refill_mapped(void);

/* ---- stats and fork ----------------------------------------------------------- */

/* One class's figures. Small classes (1..HK_NCLASS-1): out = blocks handed
 * to thread caches or the program and not given back. */
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
/* Box 2's memory in bytes (mallinfo2, malloc_stats). */
typedef struct hk_refill_stats {
    size_t region_bytes;    /* mapped for regions */
    size_t free_page_bytes; /* in free pages of regions */
    size_t central_bytes;   /* blocks parked in the central exchange */
    size_t slab_free_bytes; /* free blocks inside slabs */
} hk_refill_stats_t;
void hk_refill_stats(hk_refill_stats_t *st);
/* Only the region figures (region_bytes, free_page_bytes): no class walk. */
void hk_region_stats(hk_refill_stats_t *st);

/* fork(): HK_FORK_* (hak_base.h); every Box 2 lock is held across it. */
void hk_refill_fork(int phase);

#endif /* HAK_REFILL_H */
