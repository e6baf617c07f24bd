/* medium_cache.c — Box 1's cache of medium blocks, its slow half: misses, a full cache, depths and budget that follow the thread's turns, and the give-back. */
#include "tls_internal.h"

size_t hk_tls_medium_bytes = HK_TLS_MEDIUM_BYTES;

/* The budget a thread starts with, and a growth step. A thread that frees
 * a block its full cache cannot take, after a malloc that found nothing
 * held, reuses more than the cache holds: the budget grows a step, up to
 * hk_tls_medium_bytes. A class's depth grows the same way, one block. */
#define MEDIUM_START ((size_t)4 << 20)
#define MEDIUM_STEP ((size_t)1 << 20)

/* All threads' growth together, so that many threads cannot each grow to
 * the ceiling: beyond it, budgets stay where they are (atomic). */
#define MEDIUM_GROWTH_MAX ((size_t)64 << 20)
static size_t grown_total;

static size_t start_bytes(void) { return hk_umin(MEDIUM_START, hk_tls_medium_bytes); }

static void trace_depth(unsigned m, unsigned old, unsigned now, const char *why)
{
    hk_line_t l = hk_tls_trace_line();
    hk_line_kv(&l, "medium class ", m);
    hk_line_kv(&l, " (", hk_medium_sizes[m]);
    hk_line_kv(&l, " B) depth ", old);
    hk_line_kv(&l, " -> ", now);
    hk_line_str(&l, ": ");
    hk_line_str(&l, why);
    hk_line_log(&l);
}

static void trace_budget(size_t old, size_t now, const char *why)
{
    hk_line_t l = hk_tls_trace_line();
    hk_line_kv(&l, "medium budget ", old >> 10);
    hk_line_kv(&l, " KiB -> ", now >> 10);
    hk_line_str(&l, " KiB: ");
    hk_line_str(&l, why);
    hk_line_log(&l);
}

static bool grow_budget(hk_tls_rec_t *r)
{
    if (r->mbudget + MEDIUM_STEP > hk_tls_medium_bytes)
        return false;
    if (__atomic_add_fetch(&grown_total, MEDIUM_STEP, __ATOMIC_RELAXED) > MEDIUM_GROWTH_MAX) {
        __atomic_sub_fetch(&grown_total, MEDIUM_STEP, __ATOMIC_RELAXED);
        return false;
    }
    r->mbudget += MEDIUM_STEP;
    r->medium.left += MEDIUM_STEP;
    if (HK_UNLIKELY(hk_tls_trace))
        trace_budget(r->mbudget - MEDIUM_STEP, r->mbudget, "a turn: a malloc found nothing held, then a free found it full");
    return true;
}

/* The budget down to `budget` (at least the start), its blocks given back
 * beforehand by the caller (or the record's thread gone). */
static void set_budget(hk_tls_rec_t *r, size_t budget)
{
    __atomic_sub_fetch(&grown_total, r->mbudget - budget, __ATOMIC_RELAXED);
    r->medium.left -= r->mbudget - budget;
    r->mbudget = budget;
}

void hk_tls_medium_retire(hk_tls_rec_t *r)
{
    if (r->mbudget > start_bytes())
        set_budget(r, start_bytes());
}

void hk_tls_medium_init(hk_tls_rec_t *r)
{
    hk_tls_medium_t *mc = &r->medium;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++) {
        mc->count[m] = 0;
        mc->cap[m] = HK_TLS_MEDIUM_DEPTH;
        mc->hits[m] = 0;
        r->mmiss[m] = 0;
        r->mhits_at_sweep[m] = 0;
    }
    r->mbudget = mc->left = start_bytes();
    r->msweep_epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    r->mmissed_mask = 0;
    r->mmissed = r->mwanted = 0;
}

/* Whether a malloc asked for class m since the last sweep. */
static bool used(const hk_tls_rec_t *r, unsigned m)
{
    return (r->mmissed_mask >> m & 1) || r->medium.hits[m] != r->mhits_at_sweep[m];
}

static inline size_t held_bytes(const hk_tls_rec_t *r) { return r->mbudget - r->medium.left; }

/* A miss is half a turn; it is also this path's slow path: the idle trim
 * runs here, and a thread that uses only medium blocks starts here (once
 * the process is set up), or it would never have a cache. */
void hk_tls_medium_miss(unsigned m)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (r) {
        r->mmiss[m] = 1;
        r->mmissed = 1;
        r->mmissed_mask |= 1u << m;
    }
    if (hk_tls.state == HK_TLS_LIVE)
        hk_tls_trim_if_idle();
    else if (hk_tls.state == HK_TLS_NEW && hk_tls_exit_key_ok && hk_tls_medium_bytes)
        hk_tls_start();
}

static void release_one(hk_tls_rec_t *r, unsigned m)
{
    hk_tls_medium_t *mc = &r->medium;
    mc->left += hk_medium_sizes[m];
    hk_medium_release(mc->held[m][--mc->count[m]]);
}

static void drain_class(hk_tls_rec_t *r, unsigned m)
{
    while (r->medium.count[m])
        release_one(r, m);
}

/* Gives back held blocks until at most `keep` bytes are held: first the
 * classes no malloc asked for since the last sweep, then the largest. */
static void trim_to(hk_tls_rec_t *r, size_t keep)
{
    for (unsigned m = HK_MEDIUM_HELD_CLASSES; m-- > 0 && held_bytes(r) > keep;)
        if (!used(r, m))
            drain_class(r, m);
    for (unsigned m = HK_MEDIUM_HELD_CLASSES; m-- > 0 && held_bytes(r) > keep;)
        while (r->medium.count[m] && held_bytes(r) > keep)
            release_one(r, m);
}

void hk_tls_medium_sweep(hk_tls_rec_t *r, bool idle)
{
    /* A class no malloc asked for since the last purge pass goes back to
     * the least depth; a budget the thread did not fill after a miss
     * halves (to the start when the thread was idle). */
    hk_tls_medium_t *mc = &r->medium;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        if (mc->cap[m] > HK_TLS_MEDIUM_DEPTH && (idle || !used(r, m))) {
            if (HK_UNLIKELY(hk_tls_trace))
                trace_depth(m, mc->cap[m], HK_TLS_MEDIUM_DEPTH, idle ? "the thread was idle over purge passes"
                                                                      : "no malloc of the class since the last purge pass");
            mc->cap[m] = HK_TLS_MEDIUM_DEPTH;
            while (mc->count[m] > HK_TLS_MEDIUM_DEPTH)
                release_one(r, m);
        }
    size_t start = start_bytes();
    if (r->mbudget > start && (idle || !r->mwanted)) {
        size_t budget = idle ? start : hk_umax(start, r->mbudget / 2);
        if (HK_UNLIKELY(hk_tls_trace))
            trace_budget(r->mbudget, budget, idle ? "the thread was idle over purge passes"
                                                  : "not filled after a miss since the last purge pass");
        trim_to(r, budget);
        set_budget(r, budget);
    }
    r->mwanted = 0;
    r->msweep_epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    r->mmissed_mask = 0;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        r->mhits_at_sweep[m] = mc->hits[m];
}

/* Blocks of the classes no malloc asked for while purge passes went by (a
 * thread that frees what others allocate) go back, or they would stay for
 * the thread's life. */
static void drain_unused(hk_tls_rec_t *r)
{
    unsigned epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    if (epoch - r->mepoch < HK_IDLE_EPOCHS)
        return;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        if (!used(r, m))
            drain_class(r, m);
    r->mepoch = epoch;
}

static bool hold(hk_tls_medium_t *mc, unsigned m, void *p)
{
    uintptr_t t = hk_medium_hold(hk_slabmap_chunk(p), p);
    if (!t)
        return false;
    hk_tls_medium_keep(mc, m, t);
    return true;
}

/* The class or the budget is full (whichever is grows if a malloc missed
 * since it last did: a turn; else p goes to Box 2), or p needs Box 2's
 * checks, or the thread has no cache. A thread that frees more than it
 * takes back (a consumer) meets its sweeps here. */
bool hk_tls_medium_free_slow(unsigned m, void *p)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (!r)
        return false;
    hk_tls_medium_t *mc = &r->medium;
    uint32_t size = hk_medium_sizes[m];
    if (mc->count[m] < mc->cap[m] && size <= mc->left)
        return hold(mc, m, p); /* room: p failed hk_medium_try_hold */
    hk_medium_check_live(hk_slabmap_chunk(p), p); /* a second free of a held block must not reach a drain */
    bool grew = false;
    if (mc->count[m] >= mc->cap[m] && r->mmiss[m] && mc->cap[m] < HK_TLS_MEDIUM_DEPTH_MAX) {
        mc->cap[m]++;
        r->mmiss[m] = 0;
        grew = true;
        if (HK_UNLIKELY(hk_tls_trace))
            trace_depth(m, mc->cap[m] - 1, mc->cap[m], "a turn: a malloc found the class empty, then a free found it full");
    }
    if (mc->count[m] < mc->cap[m] && size > mc->left && r->mmissed) {
        r->mmissed = 0;
        r->mwanted = 1; /* at the ceiling too: the sweep must not halve it */
        grew |= grow_budget(r);
    }
    if (grew && mc->count[m] < mc->cap[m] && size <= mc->left)
        return hold(mc, m, p);
    drain_unused(r);
    unsigned epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    if (epoch != r->msweep_epoch) /* the sweep without the idle rule: this thread is busy freeing */
        hk_tls_medium_sweep(r, false);
    return false;
}

bool hk_tls_medium_put(hk_chunk_t *ch, void *p)
{
    unsigned m = hk_medium_held_class(ch, p);
    return m < HK_MEDIUM_HELD_CLASSES && (hk_tls_medium_free(m, p) || hk_tls_medium_free_slow(m, p));
}

void hk_tls_medium_drain(void)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (!r)
        return;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        drain_class(r, m);
}
