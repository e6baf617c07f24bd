/* hak_tls.h — Box 1: the per-thread, per-class LIFO freelists and their lock-free hit path. */
#ifndef HAK_TLS_H
#define HAK_TLS_H

#include "hak_base.h"
#include "hak_refill.h"

enum { HK_TLS_NEW = 0, HK_TLS_LIVE = 1, HK_TLS_DEAD = 2 };

/* Initial-exec TLS must stay small (docs/design.md: 8*73 + 2*73 + 2*73 + 4
 * + 4 + 1 + 8 + 8 + 8, padded to 912 bytes), or dlopen of libhakmem.so fails
 * for lack of static TLS space.
 * A NEW or DEAD thread has every head NULL and every room 0, so both hit
 * paths fall through to the slow path without testing the state. */
typedef struct hk_tls {
    void *head[HK_NCLASS];     /* LIFO list; word 0 of a block links the next */
    uint16_t room[HK_NCLASS];  /* frees accepted before the list must flush */
    uint16_t cap[HK_NCLASS];   /* cap in force since the last refill/flush */
    uint32_t mid_cap_bytes;    /* sum of cap x size over the mid classes */
    uint32_t epoch;            /* hk_refill_purge_epoch at the last slow path */
    uint8_t state;
    /* This thread's allocation counts per class, in a record hakmem maps
     * itself (counting here would cost 584 bytes of initial-exec TLS). */
    uint64_t *count;
    struct hk_tls_medium *medium; /* the record's medium cache, or NULL: none */
    /* Bytes this thread may still allocate before its next sample (the heap
     * profiler's, and any later sampling's): every allocation subtracts its
     * size, and one that takes it below 0 goes to the sampling slow path. 0
     * at thread start, so a thread's first allocation sets it; with
     * sampling off it is set beyond reach. */
    uint64_t sample_left; /* read as signed: below 0 is due (unsigned arithmetic never overflows) */
} hk_tls_t;

extern __thread hk_tls_t hk_tls HK_HIDDEN __attribute__((tls_model("initial-exec")));

/* The calling thread's record as a plain pointer, for the hit paths. On an
 * Intel Xeon (family 6 model 207) the same loads, stores and read-modify-
 * writes through %fs-relative operands made a free+malloc pair ~3 ns slower
 * (docs/performance.md, "The thread's record through a register"); the
 * empty asm keeps gcc from folding the address back into them. */
HK_INLINE hk_tls_t *hk_tls_self(void)
{
    hk_tls_t *t = &hk_tls;
    __asm__("" : "+r"(t));
    return t;
}

/* Counts an allocation of n bytes against the thread's countdown: true
 * when it is due a sample (two instructions on the hit path). */
HK_INLINE bool hk_tls_sample_due(hk_tls_t *t, size_t n)
{
    return HK_UNLIKELY((int64_t)(t->sample_left -= n) < 0);
}

HK_INLINE void *hk_tls_pop(hk_tls_t *t, size_t c)
{
    void **p = (void **)t->head[c];
    if (HK_LIKELY(p != NULL)) {
        void *next = hk_link_next(p);
        t->head[c] = next;
        t->room[c]++;
        p[1] = NULL; /* clear the tag: a live block must never look freed */
    }
    return p;
}

/* A full list fails the push with room wrapped to 0xffff (one decrement and
 * a carry test on the hit path); hk_tls_overflow puts it back to 0 first. */
HK_INLINE bool hk_tls_push(hk_tls_t *t, size_t c, void *p)
{
    uintptr_t tag = hk_tag(p); /* before any store through t or p, either may alias the secret */
    if (HK_UNLIKELY(HK_DEC16_WAS_ZERO(t->room[c])))
        return false;
    hk_link_set(p, t->head[c]);
    ((uintptr_t *)p)[1] = tag;
    t->head[c] = p;
    return true;
}

/* Slow paths (miss, overflow, first use, after thread exit). */
void *hk_tls_refill(unsigned c);
void hk_tls_overflow(unsigned c, void *p);
/* Starts the calling thread's caches if it has none yet, so that its exit
 * runs the exit hook: for a thread whose first allocations bypassed them
 * (a guarded block) and that holds something to give back when it ends. */
void hk_tls_join(void);
/* Gives this thread's cached blocks back to Box 2 (malloc_trim, thread exit). */
void hk_tls_drain(void);
/* The blocks of class c on the calling thread's list. */
unsigned hk_tls_held(unsigned c);

/* Settings and process setup, once, before any thread cache exists and
 * outside any lock: the thread-exit key. */
typedef struct hk_tls_config {
    size_t mid_bytes;    /* HAKMEM_THREAD_MID_BYTES: the 1-32 KiB classes' caps together */
    size_t medium_bytes; /* HAKMEM_THREAD_MEDIUM_BYTES: the most a medium budget grows to (0: none) */
    bool grow;           /* caps follow each thread's bursts (off while Box 3 learns caps) */
    bool trace;          /* HAKMEM_CACHE_TRACE: each change of a thread's caps on stderr */
    void (*exit_hook)(void); /* called last at a thread's exit, no lock held; or NULL */
} hk_tls_config_t;
void hk_tls_configure(const hk_tls_config_t *cfg);
/* The most a thread's medium budget may grow to in this build (16 MiB; 0
 * without pool_tls). */
#define HK_TLS_MEDIUM_BYTES (HK_POOL_TLS ? (size_t)16 << 20 : 0)

/* ---- the medium cache ------------------------------------------------------
 * Medium blocks of the classes Box 2 lets threads hold, in the thread's
 * record: per class a short stack of Box 2's tickets (HK_TLS_MEDIUM_DEPTH
 * deep at first, up to HK_TLS_MEDIUM_DEPTH_MAX), within a per-thread budget
 * that may grow to medium_bytes. Nothing is written into the blocks, and a
 * hit takes no lock. */
#define HK_TLS_MEDIUM_DEPTH 2
#define HK_TLS_MEDIUM_DEPTH_MAX 8
typedef struct hk_tls_medium {
    uint8_t count[HK_MEDIUM_HELD_CLASSES], cap[HK_MEDIUM_HELD_CLASSES];
    size_t left; /* bytes the budget still takes */
    uint64_t hits[HK_MEDIUM_HELD_CLASSES];
    uintptr_t held[HK_MEDIUM_HELD_CLASSES][HK_TLS_MEDIUM_DEPTH_MAX];
} hk_tls_medium_t;

/* The thread's medium cache when it holds a block of class m, else NULL:
 * then the caller reports the miss (hk_tls_medium_miss) and asks Box 2. */
HK_INLINE hk_tls_medium_t *hk_tls_medium_for(unsigned m)
{
    hk_tls_medium_t *mc = hk_tls.medium;
    return mc && mc->count[m] ? mc : NULL;
}
HK_INLINE void *hk_tls_medium_take(hk_tls_medium_t *mc, unsigned m)
{
    mc->left += hk_medium_sizes[m];
    mc->hits[m]++;
    return hk_medium_unhold(mc->held[m][--mc->count[m]]);
}
/* A malloc of class m found nothing held (the slow path: a turn, the trim). */
void hk_tls_medium_miss(unsigned m);

/* Keeps ticket t of a block of class m (the caller checked the room). */
HK_INLINE void hk_tls_medium_keep(hk_tls_medium_t *mc, unsigned m, uintptr_t t)
{
    mc->held[m][mc->count[m]++] = t;
    mc->left -= hk_medium_sizes[m];
}
/* free(p) of held class m (the slab map's code) on the hit path: true when
 * the thread now holds p; false when that takes hk_tls_medium_free_slow. */
HK_INLINE bool hk_tls_medium_free(unsigned m, void *p)
{
    hk_tls_medium_t *mc = hk_tls.medium;
    uint32_t size = hk_medium_sizes[m];
    uintptr_t t;
    if (HK_UNLIKELY(!mc || mc->count[m] >= mc->cap[m] || size > mc->left || !hk_medium_try_hold(p, &t)))
        return false;
    hk_tls_medium_keep(mc, m, t);
    return true;
}
/* The rest of free(p): true when the thread holds p after all (its cache
 * grew, or p passed Box 2's checks), false when p must go to Box 2; aborts
 * on an invalid or double free. */
bool hk_tls_medium_free_slow(unsigned m, void *p);
/* As hk_tls_medium_free, for a medium block found through the page map. */
bool hk_tls_medium_put(hk_chunk_t *ch, void *p);
/* Per held medium class: cache hits since the start, blocks held now. */
void hk_tls_medium_stats(uint64_t hits[], uint64_t held[]);

/* For the stats: per class, the blocks handed to the program since the
 * process started (allocs) and those now sitting in thread caches (cached).
 * Returns the number of live threads with a cache. */
unsigned hk_tls_stats(uint64_t allocs[HK_NCLASS], uint64_t cached[HK_NCLASS]);
/* fork(): HK_FORK_*; the thread registry's lock is held across it; in the
 * child only the forking thread is left, so the others' records retire. */
void hk_tls_fork(int phase);

#endif /* HAK_TLS_H */
