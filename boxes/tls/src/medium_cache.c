/* medium_cache.c — Box 1's cache of medium blocks: a thread holds up to two freed blocks of each class up to 256 KiB, in its record, and takes them back with no lock. */
#include "tls_internal.h"

size_t hk_tls_medium_bytes = HK_TLS_MEDIUM_BYTES;

/* A miss is this path's slow path: the idle trim runs here, and a thread
 * that uses only medium blocks starts here (once the process is set up),
 * or it would never have a cache. */
static HK_NOINLINE void *medium_miss(void)
{
    if (hk_tls.state == HK_TLS_LIVE)
        hk_tls_trim_if_idle();
    else if (hk_tls.state == HK_TLS_NEW && hk_tls_exit_key_ok && hk_tls_medium_bytes)
        hk_tls_start();
    return NULL;
}

void *hk_tls_medium_get(unsigned m)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (HK_UNLIKELY(!r || !r->mcount[m]))
        return medium_miss();
    r->mbytes -= hk_medium_sizes[m];
    r->mhits[m]++;
    r->mhit_mask |= 1u << m;
    return hk_medium_unhold(r->mheld[m][--r->mcount[m]]);
}

static void medium_drain_class(hk_tls_rec_t *r, unsigned m)
{
    while (r->mcount[m]) {
        r->mbytes -= hk_medium_sizes[m];
        hk_medium_release(r->mheld[m][--r->mcount[m]]);
    }
}

/* The cache has no room for a block (this path's slow path): held blocks of
 * the classes that served no malloc while purge passes went by (a thread
 * that frees what others allocate) go back, or they would stay for the
 * thread's life. */
static HK_NOINLINE void medium_full(hk_tls_rec_t *r)
{
    unsigned epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    if (epoch - r->mepoch < HK_IDLE_EPOCHS)
        return;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        if (!(r->mhit_mask >> m & 1))
            medium_drain_class(r, m);
    r->mhit_mask = 0;
    r->mepoch = epoch;
}

bool hk_tls_medium_put(hk_chunk_t *ch, void *p)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    unsigned m = hk_medium_held_class(ch, p);
    if (!r || m >= HK_MEDIUM_HELD_CLASSES || !hk_tls_medium_bytes)
        return false;
    if (r->mcount[m] >= HK_TLS_MEDIUM_DEPTH || r->mbytes + hk_medium_sizes[m] > hk_tls_medium_bytes) {
        hk_medium_check_live(ch, p); /* a second free of a held block must not reach the drain */
        medium_full(r);
        return false;
    }
    uintptr_t t = hk_medium_hold(ch, p);
    if (!t)
        return false;
    r->mheld[m][r->mcount[m]++] = t;
    r->mbytes += hk_medium_sizes[m];
    return true;
}

void hk_tls_medium_drain(void)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (!r)
        return;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        medium_drain_class(r, m);
}
