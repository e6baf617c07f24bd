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
    uint16_t refill_n[HK_NCLASS]; /* blocks that refill brought */
    /* Per class: flushes in a row with no refill, and since when (ms | 1)
     * the thread has only been freeing it (tls.c, "A thread that only
     * frees"). */
    uint8_t fruns[HK_NCLASS];
    uint32_t freeing_since[HK_NCLASS];
    /* Medium blocks held for reuse, and what grows and shrinks their
     * depths and budget by the thread's turns (medium_cache.c). */
    hk_tls_medium_t medium;
    uint8_t mmiss[HK_MEDIUM_HELD_CLASSES]; /* a malloc of the class missed since it last grew */
    uint32_t mmissed_mask;  /* classes with a miss since the last sweep */
    uint64_t mhits_at_sweep[HK_MEDIUM_HELD_CLASSES]; /* medium.hits then: a class with neither went unused */
    uint8_t mmissed, mwanted; /* a malloc missed since the budget was last full; it was full after one since the last sweep */
    size_t mbudget;           /* the budget (medium.left is what of it is not held) */
    unsigned mepoch;          /* hk_refill_purge_epoch at the last check for blocks nobody takes */
    unsigned msweep_epoch;    /* and at the last sweep */
    hk_tls_t *tls;
    struct hk_tls_rec *next, *prev;
} __attribute__((aligned(64))) hk_tls_rec_t;

/* HAKMEM_CACHE_TRACE=1: a line for each change of a thread's caps, depths
 * or medium budget (docs/api.md); the line starts "cache: tid N ". */
extern HK_HIDDEN bool hk_tls_trace;
hk_line_t hk_tls_trace_line(void);

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

/* medium_cache.c: gives this thread's held medium blocks back; the most a
 * thread's budget may grow to (HAKMEM_THREAD_MEDIUM_BYTES, set once). */
void hk_tls_medium_drain(void);
extern HK_HIDDEN size_t hk_tls_medium_bytes;
/* A fresh record's medium cache: empty, least depths, the start budget. */
void hk_tls_medium_init(hk_tls_rec_t *r);
/* At a purge pass (hk_tls_trim_if_idle): depths and budget that went
 * unused shrink back; `idle`: all of them. */
void hk_tls_medium_sweep(hk_tls_rec_t *r, bool idle);
/* A record whose thread is gone: its growth no longer counts. */
void hk_tls_medium_retire(hk_tls_rec_t *r);

#endif
