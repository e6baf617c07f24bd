/* prof.c — the sampled heap profiler: which allocations are sampled, their stacks, the live and cumulative tables, and the heap file google-pprof reads. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_tls.h"

#include <dlfcn.h>
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
size_t hk_prof_live; /* live sampled blocks: free's slow path asks only while > 0 */
static uint64_t rate = (uint64_t)2 << 20, seed;
static bool seeded;
static char prefix[1024];
static hk_lock_t lock = HK_LOCK_INIT;
static uintptr_t own_lo, own_hi; /* hakmem's code, whose frames a stack leaves out */
static unsigned own_skip;        /* statically linked: frames to leave out instead */
/* The stack walker: libunwind's, loaded when the profiler starts if the
 * system has it (its per-thread cache of frame rules makes a capture several
 * times cheaper than glibc's in a program that churns its caches), else
 * glibc's backtrace. */
static int (*walk)(void **, int) = backtrace;
static const char *walker = "glibc backtrace";
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

/* ln(x) for x in (0, 1]: x = m 2^e with m in [1, 2), ln m = 2 atanh((m-1)/(m+1)).
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

/* Bytes to the next sample: exponential with mean `rate` (every byte equally
 * likely to be the one sampled), 0 at rate 1 (every block). */
static int64_t draw(void)
{
    if (rate <= 1)
        return 0;
    double u = (double)((next_random() >> 11) + 1) / 9007199254740992.0; /* (0, 1] */
    double d = -ln(u) * (double)rate;
    return d < 4e18 ? (int64_t)d : (int64_t)4e18;
}

bool hk_prof_next(size_t n)
{
    hk_init();
    if (!hk_prof_on) {
        /* Out of reach (~2^62 bytes) once set-up is done; until then (an
         * allocation inside it) the next allocation asks again. */
        hk_tls.sample_left = __atomic_load_n(&hk_init_state, __ATOMIC_ACQUIRE) == 2 ? INT64_MAX / 2 : 0;
        return false;
    }
    if (busy) { /* the profiler's own allocation: a new interval, no sample */
        hk_tls.sample_left = rng ? (uint64_t)draw() : 0;
        return false;
    }
    if (!rng) { /* the thread's first allocation: its countdown starts here */
        uint64_t k = __atomic_add_fetch(&threads_seen, 1, __ATOMIC_RELAXED);
        rng = ((seeded ? seed : hk_random_word() ^ (uintptr_t)&rng) + k * 0xd1342543de82ef95ull) | 1;
        uint64_t d = (uint64_t)draw();
        if (d >= n) {
            hk_tls.sample_left = d - n;
            return false;
        }
    }
    hk_tls.sample_left = (uint64_t)draw(); /* from the end of this block: memoryless */
    return n != 0;
}

/* ---- stacks ----------------------------------------------------------------- */

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

HK_INLINE unsigned capture(void **out)
{
    void *f[MAX_FRAMES + 8];
    int n = walk(f, MAX_FRAMES + 8);
    int i = 0;
    if (own_hi)
        while (i < n && (uintptr_t)f[i] >= own_lo && (uintptr_t)f[i] < own_hi)
            i++;
    else
        i = (int)own_skip < n ? (int)own_skip : n;
    unsigned k = 0;
    for (; i < n && k < MAX_FRAMES; i++)
        out[k++] = f[i];
    return k;
}

/* ---- tables: buckets by (stack, size), and two address maps ----------------- */

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

#define BUCKET_HEADS 16384
#define BUCKETS_MAX (1u << 24)
static bucket_t **heads;  /* chains by hash */
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
static map_t blocks, pages; /* block address -> bucket; page number -> sampled blocks in it */

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
    size_t cap = m->cap ? m->cap * 2 : 1024;
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

/* The value slot for key, added as 0 if absent; NULL when out of memory. */
static uint64_t *map_add(map_t *m, uint64_t key)
{
    uint64_t *v = map_find(m, key);
    if (v)
        return v;
    if ((m->used + 1) * 2 > m->cap && !map_grow(m))
        return NULL;
    size_t i = map_home(m, key);
    while (m->slot[2 * i])
        i = (i + 1) & (m->cap - 1);
    m->slot[2 * i] = key;
    m->slot[2 * i + 1] = 0;
    m->used++;
    return &m->slot[2 * i + 1];
}

static void map_remove(map_t *m, uint64_t key)
{
    uint64_t *v = map_find(m, key);
    if (!v)
        return;
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

static bucket_t *bucket_for(void *const *frames, unsigned depth, size_t size)
{
    unsigned step = size_step(size);
    uint64_t h = step * 0x9e3779b97f4a7c15ull;
    for (unsigned i = 0; i < depth; i++)
        h = (h ^ (uintptr_t)frames[i]) * 0x100000001b3ull;
    if (!heads && !(heads = reserve(BUCKET_HEADS * sizeof *heads)))
        return NULL;
    bucket_t **head = &heads[h & (BUCKET_HEADS - 1)];
    for (bucket_t *b = *head; b; b = b->next)
        if (b->hash == h && b->step == step && b->depth == depth &&
            !memcmp(b->frames, frames, depth * sizeof *frames))
            return b;
    size_t need = hk_align_up(sizeof(bucket_t) + depth * sizeof(void *), 16);
    if (nbuckets == ids_cap) { /* the numbers' table doubles */
        size_t cap = ids_cap ? ids_cap * 2 : 4096;
        bucket_t **t = cap <= BUCKETS_MAX ? reserve(cap * sizeof *t) : NULL;
        if (!t)
            return NULL;
        if (by_id) {
            memcpy(t, by_id, ids_cap * sizeof *t);
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
    memcpy(b->frames, frames, depth * sizeof *frames);
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

static void page_count(void *p, int d)
{
    uint64_t page = ((uintptr_t)p >> HK_PAGE_SHIFT) + 1; /* never 0 */
    uint64_t *v = map_add(&pages, page);
    if (!v)
        return;
    uint64_t was = *v;
    *v += (uint64_t)d;
    if (was == 0 && *v == 1)
        hk_refill_page_sampled(p, true);
    else if (was == 1 && *v == 0) {
        hk_refill_page_sampled(p, false);
        map_remove(&pages, page);
    }
}

HK_NOINLINE void hk_prof_record(void *p, size_t n)
{
    void *frames[MAX_FRAMES];
    busy = true;
    unsigned depth = capture(frames); /* no lock held: the unwinder takes the loader's */
    hk_lock(&lock);
    bucket_t *b = bucket_for(frames, depth, n);
    uint64_t *v = b ? map_add(&blocks, (uintptr_t)p) : NULL;
    if (!v) {
        dropped++;
    } else {
        *v = block_value(b->id, n);
        b->live_n++;
        b->live_b += n;
        b->alloc_n++;
        b->alloc_b += n;
        __atomic_store_n(&hk_prof_live, hk_prof_live + 1, __ATOMIC_RELAXED);
        page_count(p, 1);
    }
    hk_unlock(&lock);
    busy = false;
}

bool hk_prof_forget(void *p)
{
    bool found = false;
    hk_lock(&lock);
    uint64_t *v = map_find(&blocks, (uintptr_t)p);
    if (v) {
        bucket_t *b = value_bucket(*v);
        b->live_n--;
        b->live_b -= value_size(*v);
        map_remove(&blocks, (uintptr_t)p);
        __atomic_store_n(&hk_prof_live, hk_prof_live - 1, __ATOMIC_RELAXED);
        page_count(p, -1);
        found = true;
    }
    hk_unlock(&lock);
    return found;
}

void hk_prof_resized(void *p, size_t n)
{
    hk_lock(&lock);
    uint64_t *v = map_find(&blocks, (uintptr_t)p);
    if (v) {
        /* The block's line keeps its allocation; its live bytes follow. */
        bucket_t *b = value_bucket(*v);
        b->live_b = b->live_b - value_size(*v) + n;
        *v = block_value(*v >> ID_SHIFT, n);
    }
    hk_unlock(&lock);
}

/* ---- the heap file ---------------------------------------------------------- */

typedef struct {
    int fd;
    bool failed;
    size_t n;
    char b[16384];
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
    for (size_t h = 0; heads && h < BUCKET_HEADS; h++)
        for (bucket_t *b = heads[h]; b; b = b->next) {
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
    for (size_t h = 0; heads && h < BUCKET_HEADS; h++)
        for (bucket_t *b = heads[h]; b; b = b->next) {
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

static out_t dump_out; /* under lock: 16 KiB is too much for a caller's stack */

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
    hk_lock(&lock);
    dump_out.fd = fd;
    dump_out.failed = false;
    dump_out.n = 0;
    write_profile(&dump_out);
    bool failed = dump_out.failed;
    hk_unlock(&lock);
    if (close(fd) != 0 || failed) {
        errno = EIO;
        return -1;
    }
    return 0;
}

/* Estimated live bytes, un-sampled line by line as pprof does. */
static uint64_t live_estimate(uint64_t *raw)
{
    double est = 0;
    *raw = 0;
    for (size_t h = 0; heads && h < BUCKET_HEADS; h++)
        for (bucket_t *b = heads[h]; b; b = b->next) {
            if (!b->live_n)
                continue;
            double bytes = (double)b->live_b, scale = 1;
            if (rate > 1 && b->live_b) {
                /* pprof's 1 / (1 - e^-x), x the line's average size / rate */
                double x = bytes / (double)b->live_n / (double)rate, e = 1, term = 1;
                for (int k = 1; k < 30 && x < 30; k++) {
                    term *= -x / k;
                    e += term;
                }
                scale = x < 30 && 1 - e > 0 ? 1 / (1 - e) : 1;
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
        hk_lock(&lock);
        uint64_t est = live_estimate(&raw);
        hk_unlock(&lock);
        hk_line_str(&l, "heap profile ");
        hk_line_str(&l, path);
        hk_line_kv(&l, ": ", hk_prof_live);
        hk_line_kv(&l, " sampled blocks still live (", raw);
        hk_line_kv(&l, " B sampled, about ", est);
        hk_line_str(&l, " B)");
        if (dropped)
            hk_line_kv(&l, "; samples dropped (profiler memory full): ", dropped);
    }
    hk_line_log(&l);
}

void hk_prof_stats(hk_prof_stats_t *st)
{
    hk_lock(&lock);
    *st = (hk_prof_stats_t){.mapped = mapped, .live = hk_prof_live, .dropped = dropped};
    hk_unlock(&lock);
}

/* ---- set-up and fork ---------------------------------------------------------- */

void hk_prof_configure(const hk_prof_config_t *cfg)
{
    if (!cfg->on)
        return;
    rate = cfg->sample ? cfg->sample : 1;
    seeded = cfg->seeded;
    seed = cfg->seed;
    size_t k = 0;
    for (const char *s = cfg->prefix ? cfg->prefix : ""; *s && k < sizeof prefix - 1; s++)
        prefix[k++] = *s;
    prefix[k] = 0;
    if (dl_iterate_phdr(find_own, (void *)hk_prof_record) != 1)
        own_skip = 2; /* the recording and the sampling frames (malloc's tail-calls the second) */
    /* Loading an unwinder allocates (dlopen; glibc's first backtrace loads
     * libgcc's): now, not inside a sample, with sampling still off. Local
     * scope: libunwind's own `backtrace` must not replace the program's. */
    busy = true;
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (h) {
        int (*bt)(void **, int) = (int (*)(void **, int))dlsym(h, "unw_backtrace");
        int (*policy)(void *, int) = (int (*)(void *, int))dlsym(h, "_ULx86_64_set_caching_policy");
        void **space = dlsym(h, "_ULx86_64_local_addr_space");
        if (bt && policy && space && policy(*space, 2 /* UNW_CACHE_PER_THREAD */) == 0) {
            walk = bt;
            walker = "libunwind (cached)";
        }
    }
    void *f[4];
    walk(f, 4);
    busy = false;
    if (hk_verbose) {
        hk_line_t l = {.n = 0};
        hk_line_kv(&l, "heap profiler on: a sample every ", rate);
        hk_line_str(&l, " bytes on average, stacks by ");
        hk_line_str(&l, walker);
        hk_line_log(&l);
    }
    __atomic_store_n(&hk_prof_on, true, __ATOMIC_RELEASE);
    hk_tls.sample_left = 0; /* this thread's countdown starts at its next allocation */
}

void hk_prof_fork(int phase)
{
    if (phase == HK_FORK_PREPARE)
        hk_lock(&lock);
    else if (phase == HK_FORK_PARENT)
        hk_unlock(&lock);
    else
        hk_lock_reset(&lock); /* the child keeps the records: its inherited blocks are live there */
}
