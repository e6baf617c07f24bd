/* tls.c — Box 1's slow half: thread start, refill on a miss, flush on overflow, the give-back at thread exit, and the thread registry behind the stats. */
#include "hak_tls.h"
#include "hak_refill.h"
#include "hak_policy.h"
#include "hak_backend.h"

#include <pthread.h>

__thread hk_tls_t hk_tls __attribute__((tls_model("initial-exec")));
uintptr_t hk_tls_secret;

static pthread_key_t exit_key;
static bool exit_key_ok;

/* ---- the thread registry: per-thread allocation counts ------------------ */

/* allocs must stay first: hk_tls.count points at it. Whole cache lines, so
 * that no two threads' counters share one (608 B packed put one thread's
 * 32 KiB counter on the line of the next thread's 16-48 B counters). */
typedef struct hk_tls_rec {
    uint64_t allocs[HK_NCLASS];
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

#define REC_BLOCK (64u << 10) /* records are mapped this many bytes at a time */
static hk_lock_t reg_lock;
static hk_tls_rec_t *live_recs, *spare_recs;
static char *rec_bump, *rec_end;
/* Counts of exited threads and of threads without a cache (atomic). */
static uint64_t retired[HK_NCLASS], retired_mhits[HK_MEDIUM_HELD_CLASSES];
/* Shared by threads that could get no record (out of memory): their counts
 * may race, nothing else does. */
static hk_tls_rec_t shared_rec;

/* Under reg_lock. */
static hk_tls_rec_t *rec_new(void)
{
    hk_tls_rec_t *r = spare_recs;
    if (r) {
        spare_recs = r->next;
        for (unsigned c = 0; c < HK_NCLASS; c++)
            r->allocs[c] = 0;
        /* A record retired in a fork child may list blocks its thread held:
         * they stay allocated there, as that thread's small caches do. */
        for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++) {
            r->mhits[m] = 0;
            r->mcount[m] = 0;
        }
        r->mbytes = 0;
        r->mhit_mask = 0;
        return r;
    }
    if ((size_t)(rec_end - rec_bump) < sizeof *r) {
        char *block = hk_os_reserve(REC_BLOCK, HK_OS_PAGE, true);
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
        __atomic_add_fetch(&retired_mhits[m], r->mhits[m], __ATOMIC_RELAXED);
    if (r->prev)
        r->prev->next = r->next;
    else
        live_recs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = spare_recs;
    spare_recs = r;
}

/* Only threads whose exit the key reports are registered: a record must
 * never outlive its thread's TLS. */
static uint64_t *rec_claim(void)
{
    hk_tls_rec_t *r = NULL;
    if (exit_key_ok) {
        hk_lock(&reg_lock);
        if ((r = rec_new()) != NULL) {
            r->tls = &hk_tls;
            r->mepoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
            r->prev = NULL;
            r->next = live_recs;
            if (live_recs)
                live_recs->prev = r;
            live_recs = r;
        }
        hk_unlock(&reg_lock);
    }
    return r ? r->allocs : shared_rec.allocs;
}

static void rec_release(void)
{
    hk_tls_rec_t *r = (hk_tls_rec_t *)hk_tls.count;
    hk_tls.count = shared_rec.allocs;
    if (r == &shared_rec)
        return;
    hk_lock(&reg_lock);
    rec_retire(r);
    hk_unlock(&reg_lock);
}

/* A block handed out by a slow path. */
static void count_alloc(unsigned c)
{
    if (hk_tls.state == HK_TLS_LIVE)
        hk_tls.count[c]++;
    else
        __atomic_add_fetch(&retired[c], 1, __ATOMIC_RELAXED);
}

unsigned hk_tls_stats(uint64_t allocs[HK_NCLASS], uint64_t cached[HK_NCLASS])
{
    unsigned threads = 0;
    for (unsigned c = 0; c < HK_NCLASS; c++) {
        allocs[c] = __atomic_load_n(&retired[c], __ATOMIC_RELAXED) +
                    __atomic_load_n(&shared_rec.allocs[c], __ATOMIC_RELAXED);
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
            hits[m] += __atomic_load_n(&r->mhits[m], __ATOMIC_RELAXED);
            held[m] += __atomic_load_n(&r->mcount[m], __ATOMIC_RELAXED);
        }
    hk_unlock(&reg_lock);
}

void hk_tls_fork_prepare(void) { hk_lock(&reg_lock); }
void hk_tls_fork_parent(void) { hk_unlock(&reg_lock); }

void hk_tls_fork_child(void)
{
    for (hk_tls_rec_t *r = live_recs, *next; r; r = next) {
        next = r->next;
        if (r->tls != &hk_tls)
            rec_retire(r);
    }
    reg_lock.v = 0;
}

/* ---- thread start and exit ---------------------------------------------- */

static void (*exit_hook)(void);

static void thread_exit(void *arg)
{
    (void)arg;
    hk_tls_drain();
    rec_release();
    /* Later frees (libc's buffers, other destructors) take the global path:
     * room 0 and empty heads send both hit paths to the slow path. */
    for (unsigned c = 0; c < HK_NCLASS; c++)
        hk_tls.room[c] = 0;
    hk_tls.state = HK_TLS_DEAD;
    if (exit_hook)
        exit_hook();
}

void hk_tls_process_init(void (*hook)(void))
{
    exit_hook = hook;
    if (pthread_key_create(&exit_key, thread_exit) == 0)
        exit_key_ok = true;
}

/* With -Dpool_tls=false the mid classes have no thread cache: Box 2's
 * sharded pool serves every mid malloc and free. */
#if !HK_POOL_TLS
#define CACHED_LAST HK_TINY_LAST
#endif

static void thread_start(void)
{
    /* Mid caps start at 0 and are sized on first use, within the budget. */
    for (unsigned c = 1; c <= HK_TINY_LAST; c++) {
        hk_tls.cap[c] = (uint16_t)hk_policy_cap(c);
        hk_tls.room[c] = hk_tls.cap[c];
    }
    hk_tls.count = rec_claim(); /* before any hit can count */
    hk_tls.state = HK_TLS_LIVE;
    hk_tls.epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    /* May allocate (keys >= 32 take a calloc'd block): the state is live now,
     * so that nested malloc is served normally. */
    if (exit_key_ok)
        pthread_setspecific(exit_key, (void *)1);
}

/* Takes the policy's cap for class c (contract B: a new parameter applies at
 * a refill or flush) and, for a mid class, trims it so that the caps of all
 * mid classes together hold at most hk_policy_thread_mid_bytes(): what a
 * thread can park is bounded in bytes, not only in blocks. */
static unsigned set_cap(unsigned c)
{
#if !HK_POOL_TLS
    if (c > CACHED_LAST) {
        hk_tls.cap[c] = 0;
        return 0;
    }
#endif
    unsigned cap = hk_policy_cap(c);
    if (c > HK_TINY_LAST) {
        size_t size = hk_class_size[c];
        size_t others = hk_tls.mid_cap_bytes - hk_tls.cap[c] * size;
        size_t budget = hk_policy_thread_mid_bytes();
        size_t allowed = budget > others ? (budget - others) / size : 0;
        if (cap > allowed)
            cap = (unsigned)allowed;
        hk_tls.mid_cap_bytes = (uint32_t)(others + cap * size);
    }
    hk_tls.cap[c] = (uint16_t)cap;
    return cap;
}

/* Detaches the first k blocks of class c's list. */
static void *cut(unsigned c, unsigned k)
{
    void *last = hk_tls.head[c];
    for (unsigned i = 1; i < k; i++)
        last = hk_link_get(last);
    void *first = hk_tls.head[c];
    hk_tls.head[c] = hk_link_get(last);
    hk_link_set(last, NULL);
    return first;
}

#if HK_HARDENED
/* The guard on refill: every block of a batch from Box 2 must be the start
 * of a block of class c; the report names the block whose link is bad. */
static void check_batch(unsigned c, void *b, unsigned n)
{
    void *prev = b;
    for (unsigned i = 0; i < n; i++, prev = b, b = hk_link_get(b)) {
        hk_chunk_t *ch = hk_chunk_of(b);
        if (!ch || ((uintptr_t)b & 15) || hk_page_of(ch, b)->cls != c ||
            !hk_slab_is_block_start(hk_page_of(ch, b), b))
            hk_fatal_op("corrupted", "free list", prev);
    }
}
#else
#define check_batch(c, b, n) ((void)0)
#endif

static void *alloc_uncached(unsigned c)
{
    void **p = hk_refill_alloc_one(c);
    if (p) {
        p[1] = NULL; /* as hk_tls_pop: a live block carries no tag */
        count_alloc(c);
    }
    return p;
}

static void free_uncached(unsigned c, void *p)
{
    ((uintptr_t *)p)[1] = hk_tls_tag(p);
    hk_refill_free_one(c, p);
}

/* A thread that comes back after purge passes went by without it has been
 * idle: its cached blocks are memory nobody used, so they go back first. */
static void trim_if_idle(void)
{
    unsigned epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    if (epoch - hk_tls.epoch >= HK_IDLE_EPOCHS)
        hk_tls_drain();
    hk_tls.epoch = epoch;
}

void *hk_tls_refill(unsigned c)
{
    if (HK_LIKELY(hk_tls.state == HK_TLS_LIVE))
        trim_if_idle();
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE)) {
        if (hk_tls.state == HK_TLS_DEAD)
            return alloc_uncached(c);
        thread_start();
        if (hk_tls.head[c]) { /* a nested malloc during thread start refilled c */
            count_alloc(c);
            return hk_tls_pop(c);
        }
    }
    unsigned cap = set_cap(c); /* the list is empty: count 0, room = cap */
    hk_tls.room[c] = (uint16_t)cap;
    if (cap == 0)
        return alloc_uncached(c);
    unsigned batch = hk_policy_batch(c);
    /* Slow start: a thread carves no more than it has already used of the
     * class (at least 4), so a thread that touches a class once does not
     * park a whole batch of it (thousands of threads each touching dozens
     * of classes paid ~220 KiB apiece); the batch is reached by doubling. */
    unsigned want = batch < cap ? batch : cap;
    uint64_t used = hk_tls.count[c];
    if (used < want) {
        unsigned least = want < 4 ? want : 4;
        want = used < least ? least : (unsigned)used;
    }
    void *head;
    unsigned n = hk_refill_take(c, want, &head);
    if (!n)
        return NULL;
    check_batch(c, head, n);
    hk_policy_event(HK_EV_REFILL, c, n);
    hk_tls.head[c] = head;
    if (n > cap) { /* a central batch larger than a budget-trimmed cap */
        void *keep = cut(c, cap);
        hk_refill_give(c, hk_tls.head[c], n - cap, batch);
        hk_tls.head[c] = keep;
        n = cap;
    }
    hk_tls.room[c] = (uint16_t)(cap - n);
    count_alloc(c);
    return hk_tls_pop(c);
}

void hk_tls_overflow(unsigned c, void *p)
{
    hk_tls.room[c] = 0; /* the failed push wrapped it */
    if (HK_LIKELY(hk_tls.state == HK_TLS_LIVE)) {
        trim_if_idle();
        if (hk_tls_push(c, p)) /* the trim emptied the list */
            return;
    }
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE)) {
        if (hk_tls.state == HK_TLS_DEAD) {
            free_uncached(c, p);
            return;
        }
        thread_start();
        if (hk_tls_push(c, p))
            return;
    }
    /* The list is full: send at least a batch to Box 2 in one move, and as
     * much as the new cap requires. */
    unsigned held = hk_tls.cap[c], cap = set_cap(c), batch = hk_policy_batch(c);
    unsigned keep = cap ? cap - 1 : 0;
    unsigned k = held > keep ? held - keep : 0;
    if (k < batch)
        k = batch < held ? batch : held;
    if (k) {
        hk_refill_give(c, cut(c, k), k, batch);
        hk_policy_event(HK_EV_FLUSH, c, k);
    }
    hk_tls.room[c] = (uint16_t)(cap - (held - k));
    if (cap == 0) {
        free_uncached(c, p);
        return;
    }
    hk_tls_push(c, p);
}

/* ---- medium blocks held for reuse ---------------------------------------- */

size_t hk_tls_medium_bytes = HK_POOL_TLS ? (size_t)4 << 20 : 0;

/* This thread's own record, or NULL (no cache: not started, exited, or
 * sharing the fallback record). */
static hk_tls_rec_t *own_rec(void)
{
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE))
        return NULL;
    hk_tls_rec_t *r = (hk_tls_rec_t *)hk_tls.count;
    return r != &shared_rec ? r : NULL;
}

/* A miss is this path's slow path: the idle trim runs here, and a thread
 * that uses only medium blocks starts here (once the process is set up),
 * or it would never have a cache. */
static HK_NOINLINE void *medium_miss(void)
{
    if (hk_tls.state == HK_TLS_LIVE)
        trim_if_idle();
    else if (hk_tls.state == HK_TLS_NEW && exit_key_ok && hk_tls_medium_bytes)
        thread_start();
    return NULL;
}

void *hk_tls_medium_get(unsigned m)
{
    hk_tls_rec_t *r = own_rec();
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
    hk_tls_rec_t *r = own_rec();
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

static void medium_drain(void)
{
    hk_tls_rec_t *r = own_rec();
    if (!r)
        return;
    for (unsigned m = 0; m < HK_MEDIUM_HELD_CLASSES; m++)
        medium_drain_class(r, m);
}

void hk_tls_drain(void)
{
    if (hk_tls.state != HK_TLS_LIVE)
        return;
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        void *head = hk_tls.head[c];
        if (!head)
            continue;
        unsigned n = hk_tls.cap[c] - hk_tls.room[c];
        hk_tls.head[c] = NULL;
        hk_tls.room[c] = hk_tls.cap[c];
        hk_refill_give(c, head, n, hk_policy_batch(c));
    }
    medium_drain();
    hk_policy_event(HK_EV_DRAIN, 0, 0);
}
