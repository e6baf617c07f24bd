/* prof.c — the sampled heap profiler: which allocations are sampled, their stacks, the live and cumulative tables, and the heap file google-pprof reads. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_tls.h"

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <unistd.h>

#define MAX_FRAMES 64
/* What the profiler may map for its own tables; past it, samples are counted
 * as dropped (bounded memory, also at HAKMEM_PROF_SAMPLE=1). */
#define MEMORY_MAX ((size_t)1 << 30)

bool hk_prof_on;
hk_prof_hot_t hk_prof_hot = {.lock = HK_LOCK_INIT};
static uint64_t rate = (uint64_t)2 << 20, seed;
static bool seeded;
static char prefix[1024];
static uintptr_t own_lo, own_hi; /* hakmem's code, whose frames a stack leaves out */
static unsigned own_skip;        /* statically linked: frames to leave out instead */
/* The stack walker: base's (hk_stack_walk), or glibc's backtrace where it
 * has none or HAKMEM_PROF_WALKER=glibc asks for it (libgcc's unwinder
 * follows every DWARF rule; ours stops at the rare ones, docs/profiling.md). */
static unsigned (*walk)(void **, unsigned) = hk_stack_walk;
static const char *walker = "hakmem's (.eh_frame)";
static uint64_t threads_seen, dropped, mapped;

static __thread uint64_t rng __attribute__((tls_model("initial-exec")));
static __thread bool busy __attribute__((tls_model("initial-exec")));

/* ---- the countdown: exponential intervals --------------------------------- */

static uint64_t next_random(void)
{
    /* splitmix64: any seed, even 0, gives a full-period stream */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ln(x) for x > 0: x = m 2^e with m in [1, 2), ln m = 2 atanh((m-1)/(m+1)).
 * Written here so that libhakmem needs no libm. */
static double ln(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & ((1ull << 52) - 1)) | (1023ull << 52);
    double m;
    memcpy(&m, &bits, sizeof m);
    /* t <= 1/3: ten terms of the odd series leave an error below 1e-11 */
    static const double inv[] = {1, 1. / 3, 1. / 5, 1. / 7, 1. / 9, 1. / 11, 1. / 13, 1. / 15, 1. / 17, 1. / 19};
    double t = (m - 1) / (m + 1), t2 = t * t, term = t, sum = 0;
    for (unsigned k = 0; k < sizeof inv / sizeof inv[0]; k++) {
        sum += term * inv[k];
        term *= t2;
    }
    return e * 0.6931471805599453 + 2 * sum;
}

/* log2(1 + i/256), i = 0..256, filled at start-up: a draw interpolates in
 * it (error below 3e-6) instead of running ln's series and a division. */
static double log2_tab[257];
static double draw_scale; /* ln 2 x rate */

/* Bytes to the next point of an exponential process whose mean is
 * scale / ln 2: -ln u for u = r / 2^64 is (lz + 1 - log2 m) ln 2, with lz
 * r's leading zeros and m in [1, 2) its digits from the leading one. */
HK_INLINE int64_t draw_scaled(double scale)
{
    uint64_t r = next_random() | 1;
    unsigned lz = (unsigned)__builtin_clzll(r);
    uint64_t m = r << lz;
    unsigned i = (unsigned)(m >> 55) & 255;
    double frac = (double)((m >> 23) & 0xffffffffu) * 0x1p-32;
    double l2 = log2_tab[i] + (log2_tab[i + 1] - log2_tab[i]) * frac;
    double d = ((double)(lz + 1) - l2) * scale;
    return d < 4e18 ? (int64_t)d : (int64_t)4e18;
}

/* Bytes to the next sample: exponential with mean `rate` (every byte equally
 * likely to be the one sampled), 0 at rate 1 (every block). */
HK_INLINE int64_t draw(void) { return rate <= 1 ? 0 : draw_scaled(draw_scale); }

/* ---- the countdown, shared by the profiler and guarded sampling ---------------
 * hk_tls.sample_left runs down by each allocation's size; it is armed with
 * the nearer of the two samplers' next points, and when it runs out each
 * sampler takes off the bytes since it was armed. */

static unsigned guard_every; /* HAKMEM_GUARD_SAMPLE: about one allocation in N, 0 off */
static __thread int64_t prof_left __attribute__((tls_model("initial-exec")));
static __thread int64_t guard_left __attribute__((tls_model("initial-exec")));
static __thread int64_t armed __attribute__((tls_model("initial-exec")));

/* "One allocation in N" from a countdown of bytes: the guard's points are
 * N x (the thread's mean allocation size) bytes apart on average. The mean
 * is estimated at the countdown's stops, which pick allocations in
 * proportion to their size, so the mean of 1/size over them estimates
 * 1 / (the mean size). A long average (all stops, then the last ~1024):
 * 1/size varies wildly (8 B to MiB), and a short one guarded 25% too few
 * (an interval is N / the estimate, and the mean of an inverse is larger
 * than the inverse of the mean). A new thread starts from the process's. */
static __thread float size_inv __attribute__((tls_model("initial-exec")));
static __thread uint32_t stops __attribute__((tls_model("initial-exec")));
static float process_size_inv = 1.0f / 64;

/* Bytes allocated since the countdown was armed: unsigned, since a request
 * near 2^64 (one that fails) wraps it, and capped so that subtracting it
 * from an interval (at most ~2^62) cannot overflow. */
static int64_t consumed_since_armed(void)
{
    uint64_t c = (uint64_t)armed - hk_tls.sample_left;
    return c > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)c;
}

/* The profiler's interval at a stop, consumed bytes on: whether it takes
 * this allocation (never one of its own: busy), and the next interval,
 * drawn from the end of this block (memoryless). Off, its interval stays
 * out of reach. */
HK_INLINE unsigned prof_stop(size_t n, int64_t consumed)
{
    if (!hk_prof_on)
        return 0;
    prof_left -= consumed;
    if (prof_left >= 0)
        return 0;
    prof_left = draw();
    return n && !busy ? HK_SAMPLE_PROF : 0;
}

/* Arms the countdown with the nearer of the two samplers' next points. */
HK_INLINE void arm(void)
{
    armed = prof_left < guard_left ? prof_left : guard_left;
    hk_tls.sample_left = (uint64_t)armed;
}

static int64_t guard_draw(void)
{
    if (guard_every <= 1)
        return -1; /* the next allocation, whatever its size */
    return draw_scaled(0.6931471805599453 * (double)guard_every / (double)size_inv);
}

static HK_NOINLINE unsigned sample_next_general(size_t n)
{
    hk_init();
    if (!hk_prof_on && !guard_every) {
        /* Out of reach (~2^62 bytes) once set-up is done; until then (an
         * allocation inside it) the next allocation asks again. */
        hk_tls.sample_left = __atomic_load_n(&hk_init_state, __ATOMIC_ACQUIRE) == 2 ? INT64_MAX / 2 : 0;
        return 0;
    }
    int64_t consumed;
    bool first = !rng;
    if (first) { /* the thread's first allocation: its countdowns start here */
        uint64_t k = __atomic_add_fetch(&threads_seen, 1, __ATOMIC_RELAXED);
        rng = ((seeded ? seed : hk_random_word() ^ (uintptr_t)&rng) + k * 0xd1342543de82ef95ull) | 1;
        __atomic_load(&process_size_inv, &size_inv, __ATOMIC_RELAXED);
        prof_left = hk_prof_on ? draw() : INT64_MAX / 2;
        guard_left = guard_every ? guard_draw() : INT64_MAX / 2;
        consumed = n > (uint64_t)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)n;
    } else {
        consumed = consumed_since_armed();
    }
    if (guard_every) /* off, its interval stays out of reach: never drawn again */
        guard_left -= consumed;
    unsigned take = prof_stop(n, consumed);
    if (guard_every) {
        /* a thread's first allocation is not a stop: not picked by its size */
        if (!first) {
            stops += stops < 1024;
            size_inv += (1.0f / (float)(n ? n : 1) - size_inv) / (float)stops;
            __atomic_store(&process_size_inv, &size_inv, __ATOMIC_RELAXED);
        }
        if (guard_left < 0) {
            if (!busy)
                take |= HK_SAMPLE_GUARD;
            guard_left = guard_draw();
        }
    }
    arm();
    return take;
}

unsigned hk_sample_next(size_t n)
{
    /* The profiler alone, past a thread's first allocation: the interval
     * that ran out, and the next (the general path, without the guard's
     * countdown and mean, which are off). Apart from the general path, it
     * saves one register instead of six. */
    if (HK_LIKELY(hk_prof_on && !guard_every && rng)) {
        unsigned take = prof_stop(n, consumed_since_armed());
        arm();
        return take;
    }
    return sample_next_general(n);
}

/* ---- stacks ----------------------------------------------------------------- */

/* glibc's, less its own frame: both walkers start at their caller's */
static unsigned glibc_walk(void **out, unsigned max)
{
    void *f[MAX_FRAMES + 9];
    int n = backtrace(f, (int)hk_umin(max + 1, MAX_FRAMES + 9));
    for (int i = 1; i < n; i++)
        out[i - 1] = f[i];
    return n > 0 ? (unsigned)n - 1 : 0;
}

static int find_own(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t me = (uintptr_t)arg;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && me >= lo && me < lo + ph->p_memsz) {
            if (!info->dlpi_name || !info->dlpi_name[0])
                return 2; /* linked into the program: its code is not hakmem's alone */
            own_lo = lo;
            own_hi = lo + ph->p_memsz;
            return 1;
        }
    }
    return 0;
}

HK_INLINE unsigned own_frames_out(void *const *f, unsigned n, void **out)
{
    unsigned i = 0;
    if (own_hi)
        while (i < n && (uintptr_t)f[i] >= own_lo && (uintptr_t)f[i] < own_hi)
            i++;
    else
        i = own_skip < n ? own_skip : n;
    unsigned k = 0;
    for (; i < n && k < MAX_FRAMES; i++)
        out[k++] = f[i];
    return k;
}

/* ---- a thread's memo: its last walk, and the lines that stack went to ---------
 * A program allocating in a loop samples from one stack again and again: the
 * walk is replayed from what it read (base's hk_stack_walk_memo) and the line
 * comes from the memo instead of the table's hash. */

struct bucket;
#define MEMO_LINES 16
typedef struct thread_memo {
    hk_stack_memo_t stack;
    struct thread_memo *next; /* on the spare list */
    struct bucket *line[MEMO_LINES]; /* by size step, for the memo's stack */
} thread_memo_t;
#define MEMO_BYTES hk_align_up(sizeof(thread_memo_t), 4096)
#define MEMO_GONE ((thread_memo_t *)1) /* the thread has exited: no new memo */
static __thread thread_memo_t *memo __attribute__((tls_model("initial-exec")));
static thread_memo_t *spare_memos;
static void *reserve(size_t size);

static thread_memo_t *memo_get(void)
{
    thread_memo_t *m = memo;
    if (HK_LIKELY(m != NULL))
        return m == MEMO_GONE ? NULL : m;
    hk_lock(&hk_prof_hot.lock);
    if ((m = spare_memos))
        spare_memos = m->next;
    else
        m = reserve(MEMO_BYTES);
    hk_unlock(&hk_prof_hot.lock);
    if (m) {
        m->stack.valid = 0;
        for (unsigned i = 0; i < MEMO_LINES; i++)
            m->line[i] = NULL;
        hk_tls_join(); /* its exit hook gives the memo back */
    }
    memo = m;
    return m;
}

void hk_prof_thread_exit(void)
{
    thread_memo_t *m = memo;
    memo = MEMO_GONE;
    if (m && m != MEMO_GONE) {
        hk_lock(&hk_prof_hot.lock);
        m->next = spare_memos;
        spare_memos = m;
        hk_unlock(&hk_prof_hot.lock);
    }
}

/* A stack for guarded sampling: hakmem's frames left out when it is a
 * library of its own, kept when it is linked into the program (its paths
 * to here vary in depth). */
unsigned hk_stack_capture(void **out, unsigned max)
{
    void *f[MAX_FRAMES + 8];
    unsigned n = walk(f, MAX_FRAMES + 8), i = 0, k = 0;
    while (own_hi && i < n && (uintptr_t)f[i] >= own_lo && (uintptr_t)f[i] < own_hi)
        i++;
    for (; i < n && k < max; i++)
        out[k++] = f[i];
    return k;
}

/* ---- tables: buckets by (stack, size), and the map of sampled blocks ------------ */

/* A line of the profile: one stack, and requested sizes within one size
 * step (a quarter of a power of two), so that pprof's scaling by the line's
 * average size is within 1% of scaling each block (and the number of lines
 * stays bounded when every request differs). */
typedef struct bucket {
    struct bucket *next;
    uint64_t hash, live_n, live_b, alloc_n, alloc_b;
    unsigned step, depth, id;
    void *frames[];
} bucket_t;

#define BUCKETS_MAX (1u << 24)
static bucket_t **heads;  /* chains by hash; twice as many buckets as heads at most */
static size_t nheads;
static bucket_t **by_id;  /* bucket number -> bucket (the block map keeps numbers) */
static size_t ids_cap;
static char *arena, *arena_end;
static uint64_t nbuckets;

static unsigned size_step(uint64_t n)
{
    if (n < 64)
        return (unsigned)n;
    unsigned e = 63 - (unsigned)__builtin_clzll(n);
    return 64 + (e << 2) + (unsigned)((n >> (e - 2)) & 3);
}

static void *reserve(size_t size)
{
    if (mapped + size > MEMORY_MAX)
        return NULL;
    void *p = hk_os_reserve(size, HK_OS_PAGE, true);
    if (p)
        mapped += size;
    return p;
}

/* Open addressing, linear probing, deletion by backward shift: key 0 is empty. */
typedef struct {
    uint64_t *slot; /* key, value pairs */
    size_t cap, used;
} map_t;
/* Written at every sample, under the lock: a line of their own, like
 * hk_prof_hot and the hints, so that nothing every allocation reads shares
 * a line with them. */
static struct {
    map_t blocks;      /* block address -> its bucket and size */
    uint64_t replayed; /* samples whose stack was a replayed walk */
} __attribute__((aligned(64))) sampled;

static size_t map_home(const map_t *m, uint64_t key)
{
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & (m->cap - 1);
}

static uint64_t *map_find(map_t *m, uint64_t key)
{
    if (!m->cap)
        return NULL;
    for (size_t i = map_home(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->slot[2 * i] == key)
            return &m->slot[2 * i + 1];
        if (!m->slot[2 * i])
            return NULL;
    }
}

static bool map_grow(map_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 256;
    uint64_t *old = m->slot, *s = reserve(cap * 16);
    if (!s)
        return false;
    size_t oldcap = m->cap;
    m->slot = s;
    m->cap = cap;
    for (size_t i = 0; i < oldcap; i++)
        if (old[2 * i]) {
            size_t j = map_home(m, old[2 * i]);
            while (s[2 * j])
                j = (j + 1) & (cap - 1);
            s[2 * j] = old[2 * i];
            s[2 * j + 1] = old[2 * i + 1];
        }
    if (old) {
        hk_os_release(old, oldcap * 16);
        mapped -= oldcap * 16;
    }
    return true;
}

/* The value slot for key, added as 0 if absent; NULL when out of memory.
 * Grown first (at most half full after), so one probe finds or places it. */
HK_INLINE uint64_t *map_add(map_t *m, uint64_t key)
{
    if ((m->used + 1) * 2 > m->cap && !map_grow(m))
        return NULL;
    size_t i = map_home(m, key);
    for (; m->slot[2 * i]; i = (i + 1) & (m->cap - 1))
        if (m->slot[2 * i] == key)
            return &m->slot[2 * i + 1];
    m->slot[2 * i] = key;
    m->slot[2 * i + 1] = 0;
    m->used++;
    return &m->slot[2 * i + 1];
}

/* Removes the entry whose value slot map_find gave. */
static void map_remove_at(map_t *m, uint64_t *v)
{
    size_t i = (size_t)(v - 1 - m->slot) / 2, mask = m->cap - 1;
    for (size_t j = (i + 1) & mask; m->slot[2 * j]; j = (j + 1) & mask) {
        size_t h = map_home(m, m->slot[2 * j]);
        /* j's entry may move into the hole at i when its home is not in (i, j] */
        if ((j > i && (h <= i || h > j)) || (j < i && h <= i && h > j)) {
            m->slot[2 * i] = m->slot[2 * j];
            m->slot[2 * i + 1] = m->slot[2 * j + 1];
            i = j;
        }
    }
    m->slot[2 * i] = m->slot[2 * i + 1] = 0;
    m->used--;
}

/* A profile of a few stacks touches a page of heads; one of millions, more. */
static bool heads_grow(void)
{
    size_t n = nheads ? nheads * 4 : 512;
    bucket_t **t = reserve(n * sizeof *t);
    if (!t)
        return false;
    for (uint64_t i = 0; i < nbuckets; i++) {
        bucket_t *b = by_id[i];
        b->next = t[b->hash & (n - 1)];
        t[b->hash & (n - 1)] = b;
    }
    if (heads) {
        hk_os_release(heads, nheads * sizeof *heads);
        mapped -= nheads * sizeof *heads;
    }
    heads = t;
    nheads = n;
    return true;
}

/* Loops, not memcmp and memcpy: a sample should not fault in more of libc
 * (each new function there can cost a 64 KiB window of page cache). */
static bool same_frames(void *const *a, void *const *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static bucket_t *bucket_for(void *const *frames, unsigned depth, size_t size)
{
    unsigned step = size_step(size);
    uint64_t h = step * 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < depth; i++)
        h = (h ^ (uintptr_t)frames[i]) * 0x100000001b3ull;
    if (nbuckets >= 2 * nheads && !heads_grow())
        return NULL;
    bucket_t **head = &heads[h & (nheads - 1)];
    for (bucket_t *b = *head; b; b = b->next)
        if (b->hash == h && b->step == step && b->depth == depth &&
            same_frames(b->frames, frames, depth))
            return b;
    size_t need = hk_align_up(sizeof(bucket_t) + depth * sizeof(void *), 16);
    if (nbuckets == ids_cap) { /* the numbers' table doubles */
        size_t cap = ids_cap ? ids_cap * 2 : 512;
        bucket_t **t = cap <= BUCKETS_MAX ? reserve(cap * sizeof *t) : NULL;
        if (!t)
            return NULL;
        if (by_id) {
            for (size_t i = 0; i < ids_cap; i++)
                t[i] = by_id[i];
            hk_os_release(by_id, ids_cap * sizeof *t);
            mapped -= ids_cap * sizeof *t;
        }
        by_id = t;
        ids_cap = cap;
    }
    if ((size_t)(arena_end - arena) < need) {
        if (!(arena = reserve((size_t)1 << 20)))
            return NULL;
        arena_end = arena + ((size_t)1 << 20);
    }
    bucket_t *b = (bucket_t *)arena;
    arena += need;
    *b = (bucket_t){.next = *head, .hash = h, .step = step, .depth = depth, .id = (unsigned)nbuckets};
    for (unsigned i = 0; i < depth; i++)
        b->frames[i] = frames[i];
    *head = b;
    by_id[nbuckets++] = b;
    return b;
}

/* The block map's value: the bucket's number and the block's requested size. */
#define ID_SHIFT 40
static uint64_t block_value(uint64_t id, size_t n) { return id << ID_SHIFT | (n & ((1ull << ID_SHIFT) - 1)); }
static bucket_t *value_bucket(uint64_t v) { return by_id[v >> ID_SHIFT]; }
static uint64_t value_size(uint64_t v) { return v & ((1ull << ID_SHIFT) - 1); }

/* ---- recording and forgetting -------------------------------------------- */

/* Live sampled blocks by a hash of their address, written under the lock and
 * read without it: a free of a block whose count is 0 (most frees that come
 * here: the other blocks of a marked page) was not sampled, and skips the
 * lock. A block's count was raised before malloc returned it, so whoever
 * frees it sees the raise. */
#define HINT_BITS 12
static uint32_t hint[1u << HINT_BITS] __attribute__((aligned(64)));
HK_INLINE uint32_t *hint_of(const void *p)
{
    return &hint[((uintptr_t)p >> 4) * 0x9e3779b97f4a7c15ull >> (64 - HINT_BITS)];
}
HK_INLINE void hint_add(const void *p, uint32_t d)
{
    uint32_t *h = hint_of(p);
    __atomic_store_n(h, *h + d, __ATOMIC_RELAXED);
}

HK_NOINLINE void *hk_prof_record(void *p, size_t n, bool inside)
{
    void *frames[MAX_FRAMES];
    busy = true;
    thread_memo_t *m = walk == hk_stack_walk ? memo_get() : NULL;
    void *f[MAX_FRAMES + 8];
    bool same = false;
    /* no lock held: glibc's walker takes the loader's */
    unsigned raw = m ? hk_stack_walk_memo(f, MAX_FRAMES + 8, &m->stack, &same) : walk(f, MAX_FRAMES + 8);
    unsigned step = size_step(n);
    bucket_t *b = same ? m->line[step % MEMO_LINES] : NULL; /* the memo's own: no lock */
    if (b && b->step != step)
        b = NULL;
    hk_lock(&hk_prof_hot.lock);
    sampled.replayed += same;
    if (!b) {
        b = bucket_for(frames, own_frames_out(same ? m->stack.frames : f, raw, frames), n);
        if (m) {
            if (!same)
                for (unsigned i = 0; i < MEMO_LINES; i++)
                    m->line[i] = NULL;
            m->line[step % MEMO_LINES] = b;
        }
    }
    uint64_t *v = !b ? NULL : inside ? (uint64_t *)p + 2 : map_add(&sampled.blocks, (uintptr_t)p);
    if (!v) {
        dropped++;
    } else {
        *v = block_value(b->id, n);
        b->live_n++;
        b->live_b += n;
        b->alloc_n++;
        b->alloc_b += n;
        __atomic_store_n(&hk_prof_hot.live, hk_prof_hot.live + 1, __ATOMIC_RELAXED);
        if (inside) {
            uintptr_t *h = p; /* the head: front_internal.h */
            h[0] = hk_prof_key(p, 0x9e3779b97f4a7c15u);
            h[1] = hk_tag(p);
            h[3] = 0;
            p = (char *)p + HK_PROF_HEAD;
        } else {
            hint_add(p, 1);
            hk_refill_page_sampled(p, 1);
        }
    }
    hk_unlock(&hk_prof_hot.lock);
    busy = false;
    return p;
}

static void line_drop(uint64_t val);

bool hk_prof_unrecord(void *blk)
{
    hk_lock(&hk_prof_hot.lock);
    bool had = hk_prof_is_inside(blk); /* again, under the lock: two racing frees, one record */
    if (had) {
        uintptr_t *h = blk;
        h[0] = h[1] = 0; /* no record, no tag: the block goes back as any other */
        h[3] = hk_prof_key(blk, 0xc2b2ae3d27d4eb4fu);
        line_drop(h[2]);
        __atomic_store_n(&hk_prof_hot.live, hk_prof_hot.live - 1, __ATOMIC_RELAXED);
    }
    hk_unlock(&hk_prof_hot.lock);
    return had;
}

void hk_prof_resized_inside(void *blk, size_t n)
{
    hk_lock(&hk_prof_hot.lock);
    if (hk_prof_is_inside(blk)) {
        uint64_t *v = (uint64_t *)blk + 2;
        bucket_t *b = value_bucket(*v);
        b->live_b = b->live_b - value_size(*v) + n;
        *v = block_value(*v >> ID_SHIFT, n);
    }
    hk_unlock(&hk_prof_hot.lock);
}

/* Under the lock: takes p's record out of the block map (its line still
 * counts the block), true if it had one. */
HK_INLINE bool unmap_record(void *p, uint64_t *val)
{
    uint64_t *v = map_find(&sampled.blocks, (uintptr_t)p);
    if (!v)
        return false;
    *val = *v;
    hint_add(p, (uint32_t)-1);
    map_remove_at(&sampled.blocks, v);
    __atomic_store_n(&hk_prof_hot.live, hk_prof_hot.live - 1, __ATOMIC_RELAXED);
    return true;
}

/* Under the lock: the block of record val is gone, its line stops counting it. */
static void line_drop(uint64_t val)
{
    bucket_t *b = value_bucket(val);
    b->live_n--;
    b->live_b -= value_size(val);
}

bool hk_prof_forget(void *p)
{
    if (!__atomic_load_n(hint_of(p), __ATOMIC_RELAXED))
        return false;
    uint64_t val;
    hk_lock(&hk_prof_hot.lock);
    bool found = unmap_record(p, &val);
    if (found) {
        line_drop(val);
        hk_refill_page_sampled(p, -1);
    }
    hk_unlock(&hk_prof_hot.lock);
    return found;
}

void hk_prof_resized(void *p, size_t n)
{
    hk_lock(&hk_prof_hot.lock);
    uint64_t *v = map_find(&sampled.blocks, (uintptr_t)p);
    if (v) {
        /* The block's line keeps its allocation; its live bytes follow. */
        bucket_t *b = value_bucket(*v);
        b->live_b = b->live_b - value_size(*v) + n;
        *v = block_value(*v >> ID_SHIFT, n);
    }
    hk_unlock(&hk_prof_hot.lock);
}

bool hk_prof_detach(void *p, uint64_t *rec)
{
    hk_lock(&hk_prof_hot.lock);
    bool found = unmap_record(p, rec);
    hk_unlock(&hk_prof_hot.lock);
    return found;
}

void hk_prof_reattach(uint64_t rec, void *at, size_t n)
{
    hk_lock(&hk_prof_hot.lock);
    uint64_t *v = at ? map_add(&sampled.blocks, (uintptr_t)at) : NULL;
    if (v) {
        size_t size = n ? n : value_size(rec);
        bucket_t *b = value_bucket(rec);
        b->live_b = b->live_b - value_size(rec) + size;
        *v = block_value(rec >> ID_SHIFT, size);
        hint_add(at, 1);
        __atomic_store_n(&hk_prof_hot.live, hk_prof_hot.live + 1, __ATOMIC_RELAXED);
    } else {
        line_drop(rec);
        dropped += at != NULL; /* no room in the block map: no longer followed */
    }
    hk_unlock(&hk_prof_hot.lock);
}

/* ---- the heap file ---------------------------------------------------------- */

typedef struct {
    int fd;
    bool failed;
    size_t n;
    char b[4096];
} out_t;

static void out_flush(out_t *o)
{
    for (size_t at = 0; at < o->n && !o->failed;) {
        ssize_t w = write(o->fd, o->b + at, o->n - at);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            o->failed = true;
        } else
            at += (size_t)w;
    }
    o->n = 0;
}

static void out_str(out_t *o, const char *s)
{
    for (; *s; s++) {
        if (o->n == sizeof o->b)
            out_flush(o);
        o->b[o->n++] = *s;
    }
}

static void out_num(out_t *o, uint64_t v, unsigned base)
{
    char d[24];
    int k = 0;
    do
        d[k++] = "0123456789abcdef"[v % base];
    while ((v /= base));
    char s[26];
    int j = 0;
    if (base == 16)
        s[j++] = '0', s[j++] = 'x';
    while (k)
        s[j++] = d[--k];
    s[j] = 0;
    out_str(o, s);
}

/* "n: bytes [n: bytes]": live, then every sampled allocation since the start. */
static void out_counts(out_t *o, uint64_t ln, uint64_t lb, uint64_t an, uint64_t ab)
{
    out_num(o, ln, 10);
    out_str(o, ": ");
    out_num(o, lb, 10);
    out_str(o, " [");
    out_num(o, an, 10);
    out_str(o, ": ");
    out_num(o, ab, 10);
    out_str(o, "]");
}

static void write_profile(out_t *o)
{
    uint64_t ln = 0, lb = 0, an = 0, ab = 0;
    for (uint64_t id = 0; id < nbuckets; id++) {
        const bucket_t *b = by_id[id];
        ln += b->live_n;
        lb += b->live_b;
        an += b->alloc_n;
        ab += b->alloc_b;
    }
    out_str(o, "heap profile: ");
    out_counts(o, ln, lb, an, ab);
    /* At rate 1 every block is in the file: pprof must not scale the counts. */
    out_str(o, rate <= 1 ? " @ heapprofile\n" : " @ heap_v2/");
    if (rate > 1) {
        out_num(o, rate, 10);
        out_str(o, "\n");
    }
    for (uint64_t id = 0; id < nbuckets; id++) {
        const bucket_t *b = by_id[id];
        out_counts(o, b->live_n, b->live_b, b->alloc_n, b->alloc_b);
        out_str(o, " @");
        for (unsigned i = 0; i < b->depth; i++) {
            out_str(o, " ");
            /* pprof takes one off every address but the first (return
             * addresses): the first is the call site's return address too. */
            out_num(o, (uintptr_t)b->frames[i] - (i == 0), 16);
        }
        out_str(o, "\n");
    }
    out_str(o, "\nMAPPED_LIBRARIES:\n");
    out_flush(o);
    int m = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (m >= 0) {
        ssize_t r;
        while ((r = read(m, o->b, sizeof o->b)) > 0 || (r < 0 && errno == EINTR)) {
            o->n = r > 0 ? (size_t)r : 0;
            out_flush(o);
        }
        close(m);
    }
}

static out_t dump_out; /* under lock: a page is too much for a caller's stack */

int hak_prof_dump(const char *path)
{
    hk_init();
    if (!hk_prof_on) {
        errno = ENOTSUP;
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    hk_lock(&hk_prof_hot.lock);
    dump_out.fd = fd;
    dump_out.failed = false;
    dump_out.n = 0;
    write_profile(&dump_out);
    bool failed = dump_out.failed;
    hk_unlock(&hk_prof_hot.lock);
    if (close(fd) != 0 || failed) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* Estimated live bytes, un-sampled line by line as pprof does. */
/* 1 - e^-x for x >= 0, without libm: the series directly below 1 (no
 * cancellation), above it a power of e^-(x/k) with x/k < 1 (the series
 * of e^-x itself does not converge in 30 terms beyond x ~ 10). */
static double one_minus_exp_neg(double x)
{
    if (x >= 40)
        return 1;
    double term = -1, s = 0;
    if (x < 1) {
        for (int i = 1; i < 20; i++) {
            term *= -x / i;
            s += term;
        }
        return s;
    }
    unsigned k = (unsigned)x + 1;
    double y = x / k, e = 1, r = 1;
    term = 1;
    for (int i = 1; i < 20; i++) {
        term *= -y / i;
        e += term;
    }
    for (unsigned i = 0; i < k; i++)
        r *= e;
    return 1 - r;
}

static uint64_t live_estimate(uint64_t *raw)
{
    double est = 0;
    *raw = 0;
    for (uint64_t id = 0; id < nbuckets; id++) {
        const bucket_t *b = by_id[id];
        if (!b->live_n)
            continue;
        double bytes = (double)b->live_b, scale = 1;
        if (rate > 1 && b->live_b) {
            /* pprof's 1 / (1 - e^-x), x the line's average size / rate */
            double q = one_minus_exp_neg(bytes / (double)b->live_n / (double)rate);
            scale = q > 0 ? 1 / q : 1;
        }
        est += bytes * scale;
        *raw += b->live_b;
    }
    return (uint64_t)est;
}

__attribute__((destructor)) static void prof_exit(void)
{
    if (!hk_prof_on || !prefix[0])
        return;
    char path[sizeof prefix + 32];
    size_t k = 0;
    for (const char *s = prefix; *s && k < sizeof prefix; s++)
        path[k++] = *s;
    path[k++] = '.';
    char d[24];
    int nd = 0;
    for (uint64_t v = (uint64_t)getpid(); v || !nd; v /= 10)
        d[nd++] = (char)('0' + v % 10);
    while (nd)
        path[k++] = d[--nd];
    memcpy(path + k, ".heap", 6);
    busy = true; /* no sample from here on in this thread */
    int r = hak_prof_dump(path);
    hk_line_t l = {.n = 0};
    if (r != 0) {
        hk_line_str(&l, "could not write the heap profile ");
        hk_line_str(&l, path);
    } else {
        uint64_t raw;
        hk_lock(&hk_prof_hot.lock);
        uint64_t est = live_estimate(&raw);
        hk_unlock(&hk_prof_hot.lock);
        hk_line_str(&l, "heap profile ");
        hk_line_str(&l, path);
        hk_line_kv(&l, ": ", hk_prof_hot.live);
        hk_line_kv(&l, " sampled blocks still live (", raw);
        hk_line_kv(&l, " B sampled, about ", est);
        hk_line_str(&l, " B)");
        if (dropped)
            hk_line_kv(&l, "; samples dropped (profiler memory full): ", dropped);
    }
    if (hk_stderr_unchanged()) /* not into a file that took a closed stderr's number */
        hk_line_log(&l);
}

void hk_prof_stats(hk_prof_stats_t *st)
{
    hk_lock(&hk_prof_hot.lock);
    *st = (hk_prof_stats_t){.mapped = mapped, .live = hk_prof_hot.live, .dropped = dropped, .replayed = sampled.replayed};
    hk_unlock(&hk_prof_hot.lock);
}

/* ---- set-up and fork ---------------------------------------------------------- */

void hk_prof_configure(const hk_prof_config_t *cfg)
{
    if (!cfg->on && !cfg->guard_every)
        return;
    rate = cfg->sample ? cfg->sample : 1;
    for (unsigned i = 0; i <= 256; i++)
        log2_tab[i] = ln(1 + i / 256.0) / 0.6931471805599453;
    draw_scale = 0.6931471805599453 * (double)rate;
    seeded = cfg->seeded;
    seed = cfg->seed;
    size_t k = 0;
    for (const char *s = cfg->prefix ? cfg->prefix : ""; *s && k < sizeof prefix - 1; s++)
        prefix[k++] = *s;
    prefix[k] = 0;
    if (dl_iterate_phdr(find_own, (void *)hk_prof_record) != 1)
        own_skip = 2; /* the recording and the sampling frames (malloc's tail-calls the second) */
    void *f[4];
    if (cfg->glibc_walker || !hk_stack_walk(f, 4)) {
        /* glibc's first backtrace loads libgcc's unwinder, which allocates:
         * now, not inside a sample, with sampling still off */
        walk = glibc_walk;
        walker = "glibc backtrace";
        busy = true;
        backtrace(f, 4);
        busy = false;
    }
    if (hk_verbose && cfg->on) {
        hk_line_t l = {.n = 0};
        hk_line_kv(&l, "heap profiler on: a sample every ", rate);
        hk_line_str(&l, " bytes on average, stacks by ");
        hk_line_str(&l, walker);
        hk_line_log(&l);
    }
    if (hk_verbose && cfg->guard_every) {
        hk_line_t l = {.n = 0};
        hk_line_kv(&l, "guarded sampling on: about one allocation in ", cfg->guard_every);
        hk_line_str(&l, ", stacks by ");
        hk_line_str(&l, walker);
        hk_line_log(&l);
    }
    guard_every = cfg->guard_every;
    __atomic_store_n(&hk_prof_on, cfg->on, __ATOMIC_RELEASE);
    /* this thread's countdown starts at its next allocation, of any size */
    hk_tls.sample_left = (uint64_t)-1;
}

void hk_prof_fork(int phase)
{
    if (phase == HK_FORK_PREPARE) {
        hk_stack_fork(phase); /* first: a walk waits on nothing of ours */
        hk_lock(&hk_prof_hot.lock);
    } else {
        hk_lock_fork(&hk_prof_hot.lock, phase); /* the child keeps the records: its inherited blocks are live there */
        hk_stack_fork(phase);
    }
}
