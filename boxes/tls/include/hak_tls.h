/* hak_tls.h — Box 1: the per-thread, per-class LIFO freelists and their lock-free hit path. */
#ifndef HAK_TLS_H
#define HAK_TLS_H

#include "hak_base.h"

enum { HK_TLS_NEW = 0, HK_TLS_LIVE = 1, HK_TLS_DEAD = 2 };

/* Initial-exec TLS must stay small (docs/design.md: 8*73 + 2*73 + 2*73 + 4
 * + 4 + 1 + 8, padded to 896 bytes), or dlopen of libhakmem.so fails for
 * lack of static TLS space.
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
} hk_tls_t;

extern __thread hk_tls_t hk_tls HK_HIDDEN __attribute__((tls_model("initial-exec")));

HK_INLINE void *hk_tls_pop(size_t c)
{
    void **p = (void **)hk_tls.head[c];
    if (HK_LIKELY(p != NULL)) {
        void *next = hk_link_next(p);
        hk_tls.head[c] = next;
        hk_tls.room[c]++;
        p[1] = NULL; /* clear the tag: a live block must never look freed */
    }
    return p;
}

/* A full list fails the push with room wrapped to 0xffff (one decrement and
 * a carry test on the hit path); hk_tls_overflow puts it back to 0 first. */
HK_INLINE bool hk_tls_push(size_t c, void *p)
{
    if (HK_UNLIKELY(HK_DEC16_WAS_ZERO(hk_tls.room[c])))
        return false;
    uintptr_t tag = hk_tag(p); /* before the link store, which may alias the secret */
    hk_link_set(p, hk_tls.head[c]);
    ((uintptr_t *)p)[1] = tag;
    hk_tls.head[c] = p;
    return true;
}

/* Slow paths (miss, overflow, first use, after thread exit). */
void *hk_tls_refill(unsigned c);
void hk_tls_overflow(unsigned c, void *p);
/* Gives this thread's cached blocks back to Box 2 (malloc_trim, thread exit). */
void hk_tls_drain(void);
/* The blocks of class c on the calling thread's list. */
unsigned hk_tls_held(unsigned c);

/* Settings and process setup, once, before any thread cache exists and
 * outside any lock: the thread-exit key. */
typedef struct hk_tls_config {
    size_t mid_bytes;    /* HAKMEM_THREAD_MID_BYTES: the 1-32 KiB classes' caps together */
    size_t medium_bytes; /* HAKMEM_THREAD_MEDIUM_BYTES: held medium blocks (0: none) */
    bool grow;           /* caps follow each thread's bursts (off while Box 3 learns caps) */
    void (*exit_hook)(void); /* called last at a thread's exit, no lock held; or NULL */
} hk_tls_config_t;
void hk_tls_configure(const hk_tls_config_t *cfg);
/* The default medium budget of this build (4 MiB; 0 without pool_tls). */
#define HK_TLS_MEDIUM_BYTES (HK_POOL_TLS ? (size_t)4 << 20 : 0)

/* Medium blocks of the classes Box 2 lets threads hold (at most
 * HK_TLS_MEDIUM_DEPTH per class and medium_bytes per thread): a hit costs
 * no lock. get returns NULL on a miss; put returns false when p must go to
 * Box 2 instead. */
#define HK_TLS_MEDIUM_DEPTH 2
void *hk_tls_medium_get(unsigned m);
struct hk_chunk;
bool hk_tls_medium_put(struct hk_chunk *ch, void *p);
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
