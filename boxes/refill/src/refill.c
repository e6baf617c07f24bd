/* refill.c — Box 2's per-class half: carving slabs into batches and the central exchange of lists between thread caches. */
#include "refill_internal.h"
#include "hak_policy.h"

#include <errno.h>
#include <string.h>
#include <pthread.h>

#define CENTRAL_MAX 64

/* own: given by the thread that took from the class last (a teardown's
 * flush); it takes such lists back through the slabs (hk_refill_take). */
typedef struct { void *head; uint32_t n, own; } hk_batch_t;

/* A class's lock and counts share no line with another class's; its
 * exchange lives apart (below), so a program that never flushes touches a
 * line of state a class and not a 1 KiB array (small programs stay small). */
typedef struct __attribute__((aligned(64))) hk_class_state {
    hk_lock_t lock;
    unsigned nbatch; /* lists in the class's exchange */
    hk_slab_list_t partial; /* slabs with free or uncarved blocks */
    uint32_t last_give_ms; /* when a batch last entered the exchange */
    /* For the stats: thread-cache refills and flushes, slabs now mapped,
     * and blocks handed out and not yet given back. */
    uint64_t takes, gives;
    uint64_t spill_takes; /* takes at the last give that found the exchange full */
    pthread_t taker; /* the thread of the last take */
    size_t slabs;
    int64_t out;
    unsigned colour; /* slabs made, for the cache colour of the next */
} hk_class_state_t;

/* Shards split a class's lock and slabs between threads. With the default
 * build every class has one (threads meet only in batches); -Dpool_tls=false
 * serves mid blocks one at a time from the pool, so it has several. */
#ifndef HK_REFILL_SHARDS
#define HK_REFILL_SHARDS 1
#endif
static hk_class_state_t classes[HK_NCLASS][HK_REFILL_SHARDS];
static hk_batch_t exchange[HK_NCLASS * HK_REFILL_SHARDS][CENTRAL_MAX];

/* The exchange of the class (and shard) whose state is cs. */
static inline hk_batch_t *batches(const hk_class_state_t *cs)
{
    return exchange[cs - &classes[0][0]];
}

/* The calling thread's shard: threads keep theirs, spread by their id. */
static unsigned my_shard(void)
{
#if HK_REFILL_SHARDS > 1
    uint64_t h = (uint64_t)pthread_self() * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 32) % HK_REFILL_SHARDS;
#else
    return 0;
#endif
}
int hk_refill_purge_pending;
unsigned hk_refill_purge_epoch;

/* A slab holds at least 16 blocks (a refill of the biggest class) in 1..8 pages. */
static unsigned slab_pages(unsigned c)
{
    size_t bytes = (size_t)hk_class_size[c] * 16;
    unsigned n = (unsigned)((bytes + HK_PAGE_SIZE - 1) >> HK_PAGE_SHIFT);
    return n < 1 ? 1 : n > 8 ? 8 : n;
}

/* Records where carving stopped on every page of the slab: free() rejects
 * a block at or past it (it was never handed out). */
static void set_limit(hk_page_t *pg)
{
    hk_region_t *ch = hk_region_of_page(pg);
    uint32_t limit = (uint32_t)((uintptr_t)pg->bump - 1); /* see hk_slab_is_carved */
    for (unsigned i = 0; i < pg->npages; i++)
        __atomic_store_n(&ch->page[hk_page_index(pg) + i].limit, limit, __ATOMIC_RELAXED);
}

/* The first block of slab pg, whose blocks are size bytes. */
static inline char *slab_base(const hk_page_t *pg, size_t size) { return pg->end - (size_t)pg->capacity * size; }

/* Bytes of a slab's map of returned blocks: a bit a block, in words. */
static size_t map_bytes(size_t capacity) { return (capacity + 63) / 64 * 8; }

/* The map of slab pg, made on the first return: in its record up to 64
 * blocks, else in the slab's first bytes (slab_new). */
static uint64_t *slab_map(hk_page_t *pg)
{
    if (HK_LIKELY(pg->fmap != NULL))
        return pg->fmap;
    if (pg->capacity <= 64) {
        pg->fword = 0;
        return pg->fmap = &pg->fword;
    }
    uint64_t *m = (uint64_t *)pg->start;
    memset(m, 0, map_bytes(pg->capacity));
    return pg->fmap = m;
}

static hk_page_t *slab_new(hk_class_state_t *cs, unsigned c, unsigned shard)
{
    bool zeroed;
    unsigned n = slab_pages(c);
    hk_page_t *pg = hk_span_alloc(n, HK_PAGE_SLAB, c, &zeroed);
    if (!pg)
        return NULL;
    uint32_t size = hk_class_size[c];
    size_t bytes = (size_t)n << HK_PAGE_SHIFT;
    /* Mid blocks are multiples of 1 KiB, so the first lines of a slab's
     * blocks fall in 4 of L1's 64 sets; shifting each new slab by a colour
     * of 64 bytes (0-15) spreads them over all 64. Power-of-two classes stay
     * on their natural alignment (aligned allocations rely on it). */
    size_t colour = 0;
    if (size > 1024 && !hk_is_pow2(size)) {
        colour = (size_t)((c * 5 + cs->colour++) & 15) * 64;
        if (bytes % size < colour)
            colour = 0; /* never at the cost of a block */
    }
    /* Over 64 blocks (1 KiB and less: no colour), the map of returned
     * blocks leads the slab, in the page the first carve touches anyway.
     * Blocks start on a line (two threads' batches carved in turn share
     * none: 16 B offsets made falseshare_48 5x slower) and power-of-two
     * classes at a multiple of their size. */
    if (bytes / size > 64) {
        size_t m = map_bytes(bytes / size), align = hk_is_pow2(size) && size > 64 ? size : 64;
        colour = (m + align - 1) & ~(align - 1);
    }
    pg->capacity = (uint16_t)((bytes - colour) / size);
    pg->shard = (uint8_t)shard;
    pg->bump = (char *)pg->start + colour;
    pg->end = pg->bump + (size_t)pg->capacity * size;
    uint64_t magic = UINT64_MAX / size + 1;
    hk_region_t *ch = hk_region_of_page(pg);
    for (unsigned i = 0; i < n; i++) {
        ch->page[hk_page_index(pg) + i].divmagic = magic;
        ch->page[hk_page_index(pg) + i].smag = (uint64_t)(pg->start + colour) * magic;
    }
    set_limit(pg);
    hk_slab_list_add(&cs->partial, pg);
    cs->slabs++;
    return pg;
}

/* The partial slab with the most blocks in use among the first few, one
 * with freed blocks if any: carving from it lets mostly empty slabs drain
 * and go back, and blocks already resident go out before fresh ones
 * (docs/design.md). */
static hk_page_t *fullest(hk_page_t *pg)
{
    hk_page_t *best = pg, *best_free = NULL;
    for (unsigned i = 0; pg && i < 8; pg = pg->next, i++) {
        if (pg->used > best->used)
            best = pg;
        if (pg->nfree && (!best_free || pg->used > best_free->used))
            best_free = pg;
    }
    return best_free ? best_free : best;
}

/* A list being built: blocks appended at last, linked through word 0. */
typedef struct { void *head, *last; } blist_t;
static void append(blist_t *l, void *b)
{
    if (l->last)
        hk_link_set(l->last, b);
    else
        l->head = b;
    l->last = b;
}

/* Never-used blocks handed out by one carve: at most this many bytes. A
 * fresh block costs a page fault when its link is written, and those that
 * wait unused in a thread cache cost it for nothing; a lock round trip per
 * few blocks of 4 KiB and up is small next to the faults the program takes
 * when it fills them (docs/design.md, "Carving"). */
#define FRESH_BYTES (16u << 10)

/* Appends up to want blocks from the class's slabs to l (or up to most,
 * where a slab's returned blocks all fit), and ends it: blocks given back
 * to slabs first, lowest addresses first (a block is written, never read:
 * the misses overlap, where following a list of cold blocks took one at a
 * time; python3_malloc spent 5% there), then at most FRESH_BYTES of new
 * ones. */
static unsigned carve(hk_class_state_t *cs, unsigned c, unsigned shard, unsigned want, unsigned most, blist_t *l)
{
    uint32_t size = hk_class_size[c];
    unsigned got = 0, fresh = 0, fresh_max = size >= FRESH_BYTES ? 1 : FRESH_BYTES / size;
    while (got < want && fresh < fresh_max) {
        hk_page_t *pg = fullest(cs->partial.head);
        if (!pg && !(pg = slab_new(cs, c, shard)))
            break;
        bool had_free = pg->nfree != 0;
        if (had_free) {
            uint64_t *map = pg->fmap;
            char *base = slab_base(pg, size);
            unsigned take = pg->nfree <= most - got ? pg->nfree : want - got;
            pg->nfree -= take;
            pg->used += take;
            got += take;
            for (unsigned w = 0; take; w++) {
                uint64_t bits = map[w];
                while (bits && take) {
                    unsigned i = (unsigned)__builtin_ctzll(bits);
                    bits &= bits - 1;
                    append(l, base + (size_t)(w * 64 + i) * size);
                    take--;
                }
                map[w] = bits;
            }
        }
        char *carved = pg->bump;
        /* fresh blocks only from a slab that had none freed: another slab's
         * freed blocks go out first */
        for (; !had_free && got < want && fresh < fresh_max && pg->bump < pg->end; fresh++) {
            /* Tagged like every free block until handed out: a free of it
             * before then aborts (hak_base.h). */
            ((uintptr_t *)pg->bump)[1] = hk_tag(pg->bump);
            append(l, pg->bump);
            pg->bump += size;
            pg->used++;
            got++;
        }
        if (pg->bump != carved)
            set_limit(pg);
        if (!pg->nfree && pg->bump == pg->end)
            hk_slab_list_remove(&cs->partial, pg);
    }
    if (l->last)
        hk_link_set(l->last, NULL);
    return got;
}

static void slab_return_list(hk_class_state_t *cs, void *b);

hk_limits_t hk_refill_limits(unsigned c)
{
    return hk_policy_limits(c);
}

void *hk_refill_meta(size_t size) { return hk_os_reserve(size, HK_OS_PAGE, true); }

unsigned hk_refill_take(unsigned c, unsigned want, unsigned most, void **head)
{
    hk_class_state_t *cs = &classes[c][0];
    hk_lock(&cs->lock);
    cs->takes++;
    /* A thread that comes back for the lists it gave while tearing down
     * would get its blocks in the order it freed them, scattered over every
     * slab (python3's next round: 7% slower); they go to their slabs and it
     * takes them a slab at a time. Anyone else takes them as they are. */
    if (pthread_equal(cs->taker, pthread_self()))
        while (cs->nbatch && batches(cs)[cs->nbatch - 1].own)
            slab_return_list(cs, batches(cs)[--cs->nbatch].head);
    cs->taker = pthread_self();
    if (cs->nbatch) {
        hk_batch_t *x = &batches(cs)[--cs->nbatch];
        *head = x->head;
        unsigned n = x->n;
        cs->out += n;
        hk_unlock(&cs->lock);
        hk_policy_event(HK_EV_REFILL, c, n);
        return n;
    }
    blist_t l = {NULL, NULL};
    unsigned got = carve(cs, c, 0, want, hk_umax(want, most), &l);
    *head = l.head;
    cs->out += got;
    hk_unlock(&cs->lock);
    if (!got)
        errno = ENOMEM;
    else
        hk_policy_event(HK_EV_REFILL, c, got);
    return got;
}

/* Caller holds cs->lock. b is a cached block, so its region is found by its
 * address alone (a burst's spill returns ~600,000 blocks in python3); a
 * hardened build, whose lists may hold a link a use after free overwrote,
 * looks it up and stops at one that leads out of every region. */
HK_INLINE void slab_return(hk_class_state_t *cs, void *b)
{
    hk_region_t *ch = HK_HARDENED ? hk_region_of(b) : hk_region_at(b);
    if (HK_HARDENED && (!ch || ch->kind != HK_CHUNK_REGION))
        hk_fatal_op("corrupted", "free list", b);
    hk_page_t *pg = &ch->page[hk_page_of(ch, b)->first];
    uint64_t *map = slab_map(pg);
    size_t off = (size_t)((char *)b - slab_base(pg, hk_class_size[pg->cls]));
    unsigned i = (unsigned)(((unsigned __int128)off * pg->divmagic) >> 64);
    uint64_t bit = 1ull << (i & 63);
    if (HK_HARDENED && (map[i >> 6] & bit))
        hk_fatal_op("double", "free", b);
    map[i >> 6] |= bit;
    pg->nfree++;
    pg->used--;
    if (!pg->on_partial)
        hk_slab_list_add(&cs->partial, pg);
    /* An empty slab goes back to its region unless it is the class's last,
     * which the purge releases once it has been idle. */
    if (pg->used == 0) {
        if (cs->partial.n > 1) {
            hk_slab_list_remove(&cs->partial, pg);
            cs->slabs--;
            hk_span_free(pg);
        } else {
            pg->idle_ms = hk_now_ms();
        }
    }
}

/* Caller holds cs->lock: a list ending in NULL goes back to its slabs. */
static void slab_return_list(hk_class_state_t *cs, void *b)
{
    while (b) {
        void *next = hk_link_next(b);
        slab_return(cs, b);
        b = next;
    }
}

/* Caller holds cs->lock and has checked there is room. */
static void central_push(hk_class_state_t *cs, void *head, unsigned n)
{
    batches(cs)[cs->nbatch++] = (hk_batch_t){head, n, pthread_equal(cs->taker, pthread_self())};
    cs->last_give_ms = hk_now_ms();
    hk_refill_mark_pending();
}

/* own: the blocks go to their slabs if the giver took last (below). */
static bool give(unsigned c, void *head, unsigned n, unsigned batch, bool own)
{
    hk_class_state_t *cs = &classes[c][0];
    unsigned max = hk_policy_central_batches(c);
    if (max > CENTRAL_MAX)
        max = CENTRAL_MAX;
    hk_lock(&cs->lock);
    /* A full cache's blocks that its own thread would take back: through
     * the exchange they would come back as they were freed, scattered over
     * every slab of the class; from the slabs a refill takes one slab's
     * free list, and the program's next objects lie together (python3
     * with PYTHONMALLOC=malloc: a round 50% slower by the fifth without
     * this; docs/performance.md). Other threads' flows keep the exchange. */
    if (own && pthread_equal(cs->taker, pthread_self()))
        max = 0;
    cs->gives++;
    cs->out -= n;
    while (n >= batch && cs->nbatch < max) {
        void *rest = head;
        if (n > batch) {
            void *cut = head;
            for (unsigned i = 1; i < batch; i++)
                cut = hk_link_get(cut);
            rest = hk_link_get(cut);
            hk_link_set(cut, NULL);
        } else {
            rest = NULL;
        }
        central_push(cs, head, batch);
        head = rest;
        n -= batch;
    }
    /* A short list (a drained or slow-starting cache) waits in the exchange
     * as it is, if there is room: the next thread takes it in one move
     * instead of block by block from the slabs. */
    if (head && cs->nbatch < max) {
        central_push(cs, head, n);
        head = NULL;
    }
    /* Full twice with no take between: nobody is taking this class's
     * batches (a teardown, not a pipeline's consumer). */
    bool untaken = head != NULL && cs->takes == cs->spill_takes;
    if (head)
        cs->spill_takes = cs->takes;
    slab_return_list(cs, head);
    hk_unlock(&cs->lock);
    return untaken;
}

bool hk_refill_give(unsigned c, void *head, unsigned n, unsigned batch) { return give(c, head, n, batch, false); }

bool hk_refill_flush(unsigned c, void *head, unsigned n, unsigned batch, bool own)
{
    bool spilled = give(c, head, n, batch, own);
    hk_policy_event(HK_EV_FLUSH, c, n);
    return spilled;
}

void hk_refill_drained(void) { hk_policy_event(HK_EV_DRAIN, 0, 0); }

void *hk_refill_alloc_one(unsigned c)
{
    unsigned shard = c > HK_TINY_LAST ? my_shard() : 0;
    hk_class_state_t *cs = &classes[c][shard];
    void *b = NULL;
    hk_lock(&cs->lock);
    if (cs->nbatch) {
        hk_batch_t *top = &batches(cs)[cs->nbatch - 1];
        b = top->head;
        top->head = hk_link_next(b);
        if (--top->n == 0)
            cs->nbatch--;
    } else {
        blist_t l = {NULL, NULL};
        carve(cs, c, shard, 1, 1, &l);
        b = l.head;
    }
    cs->out += b != NULL;
    hk_unlock(&cs->lock);
    if (!b)
        errno = ENOMEM;
    return b;
}

void hk_refill_free_one(unsigned c, void *p)
{
    hk_region_t *ch = hk_region_of(p);
    hk_class_state_t *cs = &classes[c][ch->page[hk_page_of(ch, p)->first].shard];
    hk_lock(&cs->lock);
    cs->out--;
    slab_return(cs, p);
    hk_unlock(&cs->lock);
}

size_t hk_refill_purge(uint32_t delay, bool *pending)
{
    uint32_t now = hk_now_ms();
    __atomic_add_fetch(&hk_refill_purge_epoch, 1, __ATOMIC_RELAXED);
    for (unsigned i = HK_REFILL_SHARDS; i < HK_NCLASS * HK_REFILL_SHARDS; i++) {
        unsigned c = i / HK_REFILL_SHARDS;
        hk_class_state_t *cs = &classes[c][i % HK_REFILL_SHARDS];
        hk_lock(&cs->lock); /* ~100 uncontended locks a pass: no unlocked peeking */
        /* Batches nobody took within the delay go back to their slabs. */
        if (cs->nbatch && now - cs->last_give_ms < delay)
            *pending = true;
        else {
            while (cs->nbatch)
                slab_return_list(cs, batches(cs)[--cs->nbatch].head);
        }
        hk_page_t *pg = cs->partial.head;
        if (pg && cs->partial.n == 1 && pg->used == 0) {
            if (now - pg->idle_ms >= delay) {
                hk_slab_list_remove(&cs->partial, pg);
                cs->slabs--;
                hk_span_free(pg);
            } else {
                *pending = true;
            }
        }
        hk_unlock(&cs->lock);
    }
    hk_medium_purge(delay, pending);
    return hk_region_purge(delay, pending);
}

void hk_refill_stats(hk_refill_stats_t *st)
{
    size_t central = 0, slab_free = 0;
    hk_refill_class_stats_t cs;
    for (unsigned c = 1; c < HK_NCLASS; c++) {
        hk_refill_class_stats(c, &cs);
        central += cs.central * cs.size;
        slab_free += cs.slab_free * cs.size;
    }
    for (unsigned m = 0; m < HK_MEDIUM_CLASSES; m++) {
        hk_medium_class_stats(m, &cs);
        slab_free += cs.slab_free * cs.size;
    }
    hk_region_stats(st);
    st->central_bytes = central;
    st->slab_free_bytes = slab_free;
}

void hk_refill_class_stats(unsigned c, hk_refill_class_stats_t *st)
{
    *st = (hk_refill_class_stats_t){.size = hk_class_size[c]};
    for (unsigned sh = 0; sh < HK_REFILL_SHARDS; sh++) {
        hk_class_state_t *cs = &classes[c][sh];
        hk_lock(&cs->lock);
        st->refills += cs->takes;
        st->flushes += cs->gives;
        st->out += cs->out;
        st->slabs += cs->slabs;
        for (unsigned i = 0; i < cs->nbatch; i++)
            st->central += batches(cs)[i].n;
        for (hk_page_t *pg = cs->partial.head; pg; pg = pg->next)
            st->slab_free += pg->capacity - pg->used;
        hk_unlock(&cs->lock);
    }
}

void hk_refill_fork(int phase)
{
    /* Classes before medium before regions when taking; the reverse after. */
    if (phase != HK_FORK_PREPARE) {
        hk_region_fork(phase);
        hk_medium_fork(phase);
    }
    for (unsigned c = 1; c < HK_NCLASS; c++)
        for (unsigned sh = 0; sh < HK_REFILL_SHARDS; sh++)
            hk_lock_fork(&classes[c][sh].lock, phase);
    if (phase == HK_FORK_PREPARE) {
        hk_medium_fork(phase);
        hk_region_fork(phase);
    }
}
