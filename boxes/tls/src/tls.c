/* tls.c — Box 1's slow half: thread start and exit, refill on a miss, flush on overflow, caps that follow the thread, and the give-back of a whole cache. */
#include "tls_internal.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

__thread hk_tls_t hk_tls __attribute__((tls_model("initial-exec")));
bool hk_tls_exit_key_ok;

static pthread_key_t exit_key;
static size_t cache_bytes = 16u << 20; /* HAKMEM_THREAD_MID_BYTES */
static bool grow = true;
bool hk_tls_trace; /* HAKMEM_CACHE_TRACE */

hk_line_t hk_tls_trace_line(void)
{
    hk_line_t l = {.n = 0};
    hk_line_kv(&l, "cache: tid ", (uint64_t)syscall(SYS_gettid));
    hk_line_str(&l, " ");
    return l;
}

static void (*exit_hook)(void);

static void thread_exit(void *arg)
{
    (void)arg;
    hk_tls_drain();
    hk_tls_rec_release();
    /* Later frees (libc's buffers, other destructors) take the global path:
     * room 0 and empty heads send both hit paths to the slow path. */
    for (unsigned c = 0; c < HK_NCLASS; c++)
        hk_tls.room[c] = 0;
    hk_tls.state = HK_TLS_DEAD;
    if (exit_hook)
        exit_hook();
}

void hk_tls_configure(const hk_tls_config_t *cfg)
{
    cache_bytes = cfg->mid_bytes;
    grow = cfg->grow;
    hk_tls_medium_bytes = cfg->medium_bytes;
    exit_hook = cfg->exit_hook;
    hk_tls_trace = cfg->trace;
    if (pthread_key_create(&exit_key, thread_exit) == 0)
        hk_tls_exit_key_ok = true;
}

/* With -Dpool_tls=false the mid classes have no thread cache: Box 2's
 * sharded pool serves every mid malloc and free. */
#if !HK_POOL_TLS
#define CACHED_LAST HK_TINY_LAST
#endif

void hk_tls_start(void)
{
    /* Mid caps start at 0 and are sized on first use, within the budget. */
    for (unsigned c = 1; c <= HK_TINY_LAST; c++) {
        hk_tls.cap[c] = (uint16_t)hk_refill_limits(c).cap;
        hk_tls.room[c] = hk_tls.cap[c];
    }
    /* Before any hit can count. */
    hk_tls.count = hk_tls_exit_key_ok ? hk_tls_rec_claim() : hk_tls_shared_rec.allocs;
    hk_tls.state = HK_TLS_LIVE;
    hk_tls_rec_t *r = hk_tls_own_rec();
    hk_tls.medium = r ? &r->medium : NULL;
    hk_tls.epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    /* May allocate (keys >= 32 take a calloc'd block): the state is live now,
     * so that nested malloc is served normally. */
    if (hk_tls_exit_key_ok)
        pthread_setspecific(exit_key, (void *)1);
}

void hk_tls_join(void)
{
    if (hk_tls.state == HK_TLS_NEW)
        hk_tls_start();
}

/* ---- caps that follow the thread ------------------------------------------
 * A list that went from empty to full in one burst (a refill, then a flush
 * with the list at its cap, fewer than cap mallocs in between) serves
 * bursts bigger than its cap: the thread doubles its cap for the class, up
 * to GROW_CLASS_BYTES of blocks, and while what it grew all its classes by
 * stays within GROW_THREAD_BYTES and, with the mid classes' caps, within
 * the thread's budget (cache_bytes). A random walk of the list length reaches
 * both ends too, after ~cap^2/4 operations: not a burst. A class
 * with no slow path between two purge passes halves again, and an idle
 * thread's caps go back to the policy's with its blocks. The policy's cap
 * is the floor; its batch too. docs/design.md, "Caps that follow the
 * thread", has the reasoning and docs/performance.md the measurements. */
#define GROW_CLASS_BYTES (128u << 10)
#define GROW_THREAD_BYTES (1u << 20) /* what an idle thread may pin over the policy's caps */
#define GROW_MAX_SHIFT 8

/* ---- a thread that tears its data down ---------------------------------------
 * A class flushed FREEING_RUNS times in a row with no refill (its growth
 * dropped), each flush finding no room or no taker since
 * (nobody takes them: not a pipeline, whose producers do), is being
 * freed for good: a program tearing its data down. Whatever the cache holds
 * when the thread then stops pins slabs for good (nothing outside the
 * thread can take it), so the cap and the batch drop to an eighth of the
 * policy's batch, and its flushes go through the exchange (to the slabs
 * they would empty the next phase's medium slabs, whose blocks an idle
 * cache then keeps resident: docs/design.md). A thread still at it after
 * FREEING_SUSTAIN_MS gets the policy's again; a refill, a turn or a flush
 * the exchange takes ends it. */
#define FREEING_RUNS 32
#define FREEING_SUSTAIN_MS 100

static bool freeing(const hk_tls_rec_t *r, unsigned c)
{
    return r && r->freeing_since[c] && (hk_now_ms() | 1) - r->freeing_since[c] < FREEING_SUSTAIN_MS;
}

static void note_flush(hk_tls_rec_t *r, unsigned c, bool turn, bool spilled)
{
    if (!r || !grow)
        return;
    if (turn || !spilled) {
        r->fruns[c] = 0;
        r->freeing_since[c] = 0;
        return;
    }
    if (r->fruns[c] < FREEING_RUNS && ++r->fruns[c] == FREEING_RUNS) {
        r->freeing_since[c] = hk_now_ms() | 1;
        r->grow[c] = 0;
    }
}

/* The most a grown cap may be for class c over the policy's cap. */
static unsigned grow_most(unsigned c, unsigned base)
{
    return hk_umax(base, hk_umin(GROW_CLASS_BYTES / hk_class_size[c], 0x7fff));
}

/* Takes the policy's cap for class c from Box 2 (contract B: a new
 * parameter applies at a refill or flush) with the batch, doubled as often
 * as this thread grew the class, and, for a mid class, trims the cap so
 * that the caps of all mid classes together hold at most cache_bytes: what
 * a thread can park is bounded in bytes, not only in blocks (tiny classes'
 * growth is checked against the same budget where it is decided). Returns the cap in force and the policy's batch (what Box 2's
 * exchange is cut in); *move is what to move to or from Box 2 at a time:
 * the batch, or half a grown cap. */
static hk_limits_t set_cap(unsigned c, unsigned *move, const char *event)
{
    hk_limits_t lim = hk_refill_limits(c);
    unsigned old = hk_tls.cap[c];
    const char *rule = "the policy's cap";
#if !HK_POOL_TLS
    if (c > CACHED_LAST) {
        hk_tls.cap[c] = 0;
        lim.cap = 0;
        *move = lim.batch;
        return lim;
    }
#endif
    unsigned base = lim.cap, cap = base;
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (r && r->grow[c] && base) {
        cap = hk_umin(base << hk_umin(r->grow[c], GROW_MAX_SHIFT), grow_most(c, base));
        rule = "grown";
    } else if (base && freeing(r, c)) {
        cap = lim.batch = hk_umin(base, hk_umax(lim.batch / 8, 2));
        rule = "tearing down: 32 flushes in a row, none taken from the exchange";
    }
    if (c > HK_TINY_LAST) {
        size_t size = hk_class_size[c];
        size_t others = hk_tls.mid_cap_bytes - hk_tls.cap[c] * size;
        size_t allowed = cache_bytes > others ? (cache_bytes - others) / size : 0;
        if (cap > allowed) {
            cap = (unsigned)allowed;
            rule = "within the thread's mid budget";
        }
        hk_tls.mid_cap_bytes = (uint32_t)(others + cap * size);
    }
    hk_tls.cap[c] = (uint16_t)cap;
    lim.cap = cap;
    *move = cap > base ? hk_umax(lim.batch, cap / 2) : lim.batch;
    if (HK_UNLIKELY(hk_tls_trace) && old && cap != old) {
        hk_line_t l = hk_tls_trace_line();
        hk_line_kv(&l, "class ", c);
        hk_line_kv(&l, " (", hk_class_size[c]);
        hk_line_kv(&l, " B) cap ", old);
        hk_line_kv(&l, " -> ", cap);
        hk_line_kv(&l, ", moved ", *move);
        hk_line_str(&l, " at a time: ");
        hk_line_str(&l, rule);
        hk_line_str(&l, " (");
        hk_line_str(&l, event);
        hk_line_str(&l, ")");
        hk_line_log(&l);
    }
    return lim;
}

/* At a flush of a full list: a refill since the last flush means the list
 * went from empty to full, so the thread's bursts of the class are bigger
 * than its cap. True when the cap may double (set_cap then grows it). */
static bool grow_on_turn(unsigned c)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (!r || !r->turned[c] || !grow)
        return false;
    r->turned[c] = 0;
    unsigned base = hk_refill_limits(c).cap, cap = hk_tls.cap[c];
    /* k mallocs since the refill, and f frees (the list went from the
     * refill's n blocks to cap + 1): a burst has at most a cap of the one
     * and half a cap of the other; a refill that brought up to twice what
     * it wanted starts a random walk near the top, which gets there at once. */
    uint32_t k = (uint32_t)r->allocs[c] - r->refill_at[c];
    uint32_t f = cap + 1 - hk_umin(r->refill_n[c], cap) + k;
    if (!base || cap >= grow_most(c, base) || r->grow[c] >= GROW_MAX_SHIFT || k > cap || f < cap / 2 + 1)
        return false;
    size_t size = hk_class_size[c], grown = 0;
    for (unsigned d = 1; d < HK_NCLASS; d++)
        if (r->grow[d])
            grown += (hk_tls.cap[d] - hk_umin(hk_tls.cap[d], hk_refill_limits(d).cap)) * hk_class_size[d];
    /* (mid classes' growth is in both sums: the check errs on the safe side) */
    if (grown + cap * size > GROW_THREAD_BYTES || hk_tls.mid_cap_bytes + grown + cap * size > cache_bytes)
        return false; /* no budget left to double it */
    r->grow[c]++;
    return true;
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
        if (!ch || ((uintptr_t)b & 15) || hk_page_face(ch, b)->cls != c ||
            !hk_slab_is_block_start(hk_page_face(ch, b), b))
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
        hk_tls_count_alloc(c);
    }
    return p;
}

static void free_uncached(unsigned c, void *p)
{
    ((uintptr_t *)p)[1] = hk_tag(p);
    hk_refill_free_one(c, p);
}

/* A thread that comes back after purge passes went by without it has been
 * idle: its cached blocks are memory nobody used, so they go back first. */
void hk_tls_trim_if_idle(void)
{
    unsigned epoch = __atomic_load_n(&hk_refill_purge_epoch, __ATOMIC_RELAXED);
    if (epoch == hk_tls.epoch)
        return;
    bool idle = epoch - hk_tls.epoch >= HK_IDLE_EPOCHS;
    hk_tls.epoch = epoch;
    if (idle)
        hk_tls_drain();
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (!r)
        return;
    /* A purge pass went by: grown classes without a slow path since the
     * last one halve (all of them when the thread was idle), and what their
     * lists hold over the new cap goes back. */
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        if (r->grow[c] && (idle || !r->used[c])) {
            r->grow[c] = idle ? 0 : r->grow[c] - 1;
            unsigned held = hk_tls.cap[c] - hk_tls.room[c];
            unsigned move;
            hk_limits_t lim = set_cap(c, &move, idle ? "the thread was idle over purge passes"
                                                     : "no slow path of the class since the last purge pass");
            unsigned k = held > lim.cap ? held - lim.cap : 0;
            if (k)
                hk_refill_flush(c, cut(c, k), k, hk_refill_limits(c).batch, true);
            hk_tls.room[c] = (uint16_t)(lim.cap - (held - k));
        }
        r->used[c] = 0;
    }
    hk_tls_medium_sweep(r, idle);
}

/* A slow path of class c ran: it is in use, and a refill is half a turn. */
static void note_use(unsigned c, bool refill)
{
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (r) {
        r->used[c] = 1;
        if (refill) {
            r->turned[c] = 1;
            r->refill_at[c] = (uint32_t)r->allocs[c];
            r->fruns[c] = 0;
            r->freeing_since[c] = 0;
        }
    }
}

void *hk_tls_refill(unsigned c)
{
    if (HK_LIKELY(hk_tls.state == HK_TLS_LIVE))
        hk_tls_trim_if_idle();
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE)) {
        if (hk_tls.state == HK_TLS_DEAD)
            return alloc_uncached(c);
        hk_tls_start();
        if (hk_tls.head[c]) { /* a nested malloc during thread start refilled c */
            hk_tls_count_alloc(c);
            return hk_tls_pop(&hk_tls, c);
        }
    }
    note_use(c, true);
    unsigned move;
    hk_limits_t lim = set_cap(c, &move, "at a refill"); /* the list is empty: count 0, room = cap */
    unsigned cap = lim.cap, batch = lim.batch;
    hk_tls.room[c] = (uint16_t)cap;
    if (cap == 0)
        return alloc_uncached(c);
    /* Slow start: a thread carves no more than it has already used of the
     * class (at least 4, or a page's worth of blocks of 1 KiB and up: a
     * fresh block costs a page fault), so a thread that touches a class once
     * does not park a whole batch of it (thousands of threads each touching
     * dozens of classes paid ~220 KiB apiece; a program whose one 4 KiB
     * stdio buffer came with three more paid 12 KiB); the batch is reached
     * by doubling. */
    unsigned want = hk_umin(move, cap);
    uint64_t used = hk_tls.count[c];
    if (used < want) {
        unsigned least = hk_umin(want, hk_umin(4, hk_umax(1, HK_OS_PAGE / hk_class_size[c])));
        want = used < least ? least : (unsigned)used;
    }
    void *head; /* up to twice that where a slab has that many back */
    unsigned n = hk_refill_take(c, want, hk_umin(cap, 2 * want), &head);
    if (!n)
        return NULL;
    check_batch(c, head, n);
    hk_tls.head[c] = head;
    if (n > cap) { /* a central batch larger than a budget-trimmed cap */
        void *keep = cut(c, cap);
        hk_refill_give(c, hk_tls.head[c], n - cap, batch);
        hk_tls.head[c] = keep;
        n = cap;
    }
    hk_tls.room[c] = (uint16_t)(cap - n);
    hk_tls_rec_t *r = hk_tls_own_rec();
    if (r)
        r->refill_n[c] = (uint16_t)n;
    hk_tls_count_alloc(c);
    return hk_tls_pop(&hk_tls, c);
}

void hk_tls_overflow(unsigned c, void *p)
{
    hk_tls.room[c] = 0; /* the failed push wrapped it */
    if (HK_LIKELY(hk_tls.state == HK_TLS_LIVE)) {
        hk_tls_trim_if_idle();
        if (hk_tls_push(&hk_tls, c, p)) /* the trim emptied the list */
            return;
    }
    if (HK_UNLIKELY(hk_tls.state != HK_TLS_LIVE)) {
        if (hk_tls.state == HK_TLS_DEAD) {
            free_uncached(c, p);
            return;
        }
        hk_tls_start();
        if (hk_tls_push(&hk_tls, c, p))
            return;
    }
    /* The list is full: grow it if it went from empty to full since the
     * last flush, or send at least a batch to Box 2 in one move, and as much
     * as the new cap requires. */
    unsigned held = hk_tls.cap[c];
    note_use(c, false);
    hk_tls_rec_t *r = hk_tls_own_rec();
    bool turn = r && r->turned[c];
    bool grew = grow_on_turn(c);
    unsigned move;
    hk_limits_t lim = set_cap(c, &move, grew ? "a burst: the list ran from empty to full within its cap"
                                             : "at a flush");
    unsigned cap = lim.cap, batch = lim.batch;
    if (grew && cap > held) {
        hk_tls.room[c] = (uint16_t)(cap - held);
        hk_tls_push(&hk_tls, c, p);
        return;
    }
    unsigned keep = cap ? cap - 1 : 0;
    unsigned k = held > keep ? held - keep : 0;
    if (k < move)
        k = move < held ? move : held;
    bool spilled = k && hk_refill_flush(c, cut(c, k), k, batch, !freeing(r, c));
    note_flush(r, c, turn, spilled);
    hk_tls.room[c] = (uint16_t)(cap - (held - k));
    if (cap == 0) {
        free_uncached(c, p);
        return;
    }
    hk_tls_push(&hk_tls, c, p);
}

unsigned hk_tls_held(unsigned c) { return hk_tls.state == HK_TLS_LIVE ? (unsigned)(hk_tls.cap[c] - hk_tls.room[c]) : 0; }

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
        hk_refill_give(c, head, n, hk_refill_limits(c).batch);
    }
    hk_tls_medium_drain();
    hk_refill_drained();
}
