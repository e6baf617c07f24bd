/* registry.c — Box 1's thread registry: a record per live thread for its allocation counts and held medium blocks, and the sums behind the stats. */
#include "tls_internal.h"

#define REC_BLOCK (64u << 10) /* records are mapped this many bytes at a time */
static hk_lock_t reg_lock;
static hk_tls_rec_t *live_recs, *spare_recs;
static char *rec_bump, *rec_end;
/* Counts of exited threads and of threads without a cache (atomic). */
static uint64_t retired[HK_NCLASS], retired_mhits[HK_MEDIUM_HELD_CLASSES];
hk_tls_rec_t hk_tls_shared_rec;

/* Under reg_lock. */
static hk_tls_rec_t *rec_new(void)
{
    hk_tls_rec_t *r = spare_recs;
    if (r) {
        spare_recs = r->next;
        for (unsigned c = 0; c < HK_NCLASS; c++) {
            r->allocs[c] = 0;
            r->grow[c] = r->turned[c] = r->used[c] = r->fruns[c] = 0;
            r->freeing_since[c] = 0;
            r->refill_at[c] = 0;
        }
        /* A record retired in a fork child may list blocks its thread held:
         * they stay allocated there, as that thread's small caches do. */
        return r;
    }
    if ((size_t)(rec_end - rec_bump) < sizeof *r) {
        char *block = hk_refill_meta(REC_BLOCK);
        if (!block)
            return NULL;
        rec_bump = block;
        rec_end = block + REC_BLOCK;
    }
    r = (hk_tls_rec_t *)rec_bump;
    rec_bump += sizeof *r;
    return r;
}

/* Folds a record's counts into retired[] and recycles it. Under reg_lock. */
static void rec_retire(hk_tls_rec_t *r)
{
    for (unsigned c = 0; c < HK_NCLASS; c++)
        __atomic_add_fetch(&retired[c], r->allocs[c], __ATOMIC_RELAXED);
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        __atomic_add_fetch(&retired_mhits[m], r->medium.hits[m], __ATOMIC_RELAXED);
    hk_tls_medium_retire(r);
    if (r->prev)
        r->prev->next = r->next;
    else
        live_recs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = spare_recs;
    spare_recs = r;
}


uint64_t *hk_tls_rec_claim(void)
{
    hk_lock(&reg_lock);
    hk_tls_rec_t *r = rec_new();
    if (r) {
        r->tls = &hk_tls;
        hk_tls_medium_init(r);
        r->mepoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
        r->prev = NULL;
        r->next = live_recs;
        if (live_recs)
            live_recs->prev = r;
        live_recs = r;
    }
    hk_unlock(&reg_lock);
    return r ? r->allocs : hk_tls_shared_rec.allocs;
}

void hk_tls_rec_release(void)
{
    hk_tls_rec_t *r = (hk_tls_rec_t *)hk_tls.count;
    hk_tls.count = hk_tls_shared_rec.allocs;
    hk_tls.medium = NULL;
    if (r == &hk_tls_shared_rec)
        return;
    hk_lock(&reg_lock);
    rec_retire(r);
    hk_unlock(&reg_lock);
}

void hk_tls_count_retired(unsigned c) { __atomic_add_fetch(&retired[c], 1, __ATOMIC_RELAXED); }

unsigned hk_tls_stats(uint64_t allocs[HK_NCLASS], uint64_t cached[HK_NCLASS])
{
    unsigned threads = 0;
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        allocs[c] = __atomic_load_n(&retired[c], __ATOMIC_RELAXED) +
                    __atomic_load_n(&hk_tls_shared_rec.allocs[c], __ATOMIC_RELAXED);
        cached[c] = 0;
    }
    hk_lock(&reg_lock);
    for (hk_tls_rec_t *r = live_recs; r; r = r->next, threads++) {
        /* Another thread's counters and cache, read while it runs: each
         * figure is a moment's value, exact once threads are quiet. */
        for (unsigned c = 0; c < HK_NCLASS; c++) {
            allocs[c] += __atomic_load_n(&r->allocs[c], __ATOMIC_RELAXED);
            cached[c] += (uint16_t)(__atomic_load_n(&r->tls->cap[c], __ATOMIC_RELAXED) -
                                    __atomic_load_n(&r->tls->room[c], __ATOMIC_RELAXED));
        }
    }
    hk_unlock(&reg_lock);
    return threads;
}

void hk_tls_medium_stats(uint64_t hits[], uint64_t held[])
{
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++) {
        hits[m] = __atomic_load_n(&retired_mhits[m], __ATOMIC_RELAXED);
        held[m] = 0;
    }
    hk_lock(&reg_lock);
    for (hk_tls_rec_t *r = live_recs; r; r = r->next)
        for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++) {
            hits[m] += __atomic_load_n(&r->medium.hits[m], __ATOMIC_RELAXED);
            held[m] += __atomic_load_n(&r->medium.count[m], __ATOMIC_RELAXED);
        }
    hk_unlock(&reg_lock);
}

void hk_tls_fork(int phase)
{
    if (phase == HK_FORK_PREPARE) {
        hk_lock(&reg_lock);
    } else if (phase == HK_FORK_PARENT) {
        hk_unlock(&reg_lock);
    } else {
        for (hk_tls_rec_t *r = live_recs, *next; r; r = next) {
            next = r->next;
            if (r->tls != &hk_tls)
                rec_retire(r);
        }
        hk_lock_reset(&reg_lock);
    }
}
