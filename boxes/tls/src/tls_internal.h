/* tls_internal.h — what Box 1's files share: the per-thread record (allocation counts and held medium blocks) and thread start. */
#ifndef HK_TLS_INTERNAL_H
#define HK_TLS_INTERNAL_H

#include "hak_tls.h"
#include "hak_refill.h"

/* A thread's record, in memory hakmem maps itself (not TLS). allocs must
 * stay first: hk_tls.count points at it. Whole cache lines, so that no two
 * threads' counters share one (608 B packed put one thread's 32 KiB counter
 * on the line of the next thread's 16-48 B counters). */
typedef struct hk_tls_rec {
    uint64_t allocs[HK_NCLASS];
    /* Per class: how often the cap was doubled for this thread, whether the
     * list refilled since it last flushed, the allocation count at that
     * refill (a list that then runs full within a cap's worth of mallocs
     * went from empty to full in one burst), and whether a slow path of it
     * ran since the last purge pass (tls.c, "Caps that follow the thread"). */
    uint8_t grow[HK_NCLASS], turned[HK_NCLASS], used[HK_NCLASS];
    uint32_t refill_at[HK_NCLASS];
    /* Medium blocks held for reuse (no lock, nothing written into them),
     * a short stack per class, and what the thread took from them. */
    uintptr_t mheld[HK_MEDIUM_HELD_CLASSES][HK_TLS_MEDIUM_DEPTH]; /* Box 2's tickets */
    uint8_t mcount[HK_MEDIUM_HELD_CLASSES];
    size_t mbytes;
    uint64_t mhits[HK_MEDIUM_HELD_CLASSES];
    uint32_t mhit_mask;  /* classes with a hit since the last check for blocks nobody takes */
    unsigned mepoch;     /* hk_refill_purge_epoch at that check */
    hk_tls_t *tls;
    struct hk_tls_rec *next, *prev;
} __attribute__((aligned(64))) hk_tls_rec_t;

/* registry.c: a record for the calling thread (its counts), or the shared
 * fallback's when none can be had; given back at thread exit. */
uint64_t *hk_tls_rec_claim(void);
void hk_tls_rec_release(void);
/* Shared by threads that could get no record (out of memory): their counts
 * may race, nothing else does. */
extern HK_HIDDEN hk_tls_rec_t hk_tls_shared_rec;
/* This thread's own record, or NULL (no cache: not started, exited, or
 * sharing the fallback record). Inline: the medium cache's hit path. */
HK_INLINE hk_tls_rec_t *hk_tls_own_rec(void)
{
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE))
        return NULL;
    hk_tls_rec_t *r = (hk_tls_rec_t *)hk_tls.count;
    return r != &hk_tls_shared_rec ? r : NULL;
}
/* Counts a block handed out by a slow path: in the thread's record, or,
 * for a thread without one (exited), in the process totals. */
void hk_tls_count_retired(unsigned c);
HK_INLINE void hk_tls_count_alloc(unsigned c)
{
    if (HK_LIKELY(hk_tls.state == HK_TLS_LIVE))
        hk_tls.count[c]++;
    else
        hk_tls_count_retired(c);
}

/* tls.c: the thread's first slow path sets its cache up; a slow path after
 * HK_IDLE_EPOCHS purge passes gives the whole cache back first. */
void hk_tls_start(void);
void hk_tls_trim_if_idle(void);
/* True once the thread-exit key exists: only threads whose exit it reports
 * get a record (a record must never outlive its thread's TLS). */
extern HK_HIDDEN bool hk_tls_exit_key_ok;

/* medium_cache.c: gives this thread's held medium blocks back; the
 * per-thread budget (HAKMEM_THREAD_MEDIUM_BYTES, set once). */
void hk_tls_medium_drain(void);
extern HK_HIDDEN size_t hk_tls_medium_bytes;

#endif
