/* guard.c — guarded sampling: a sampled allocation placed flush against an inaccessible page, with canaries around it, made inaccessible when freed, and a report with its allocation and free stacks when a program touches what it should not. */
#include "hakmem.h"
#include "front_internal.h"
#include "hak_backend.h"
#include "hak_tls.h"

#include <dlfcn.h>
#include <link.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

/* Blocks up to SLOT_BYTES go to the pool; bigger ones, and alignments the
 * pool cannot give, get a mapping of their own. */
#define PAGE HK_OS_PAGE
#define SLOT_PAGES 8
#define SLOT_BYTES ((size_t)SLOT_PAGES * PAGE)
#define STRIDE ((SLOT_PAGES + 1) * PAGE) /* a slot's pages and the guard page after it */
#define BIG_MAX 128                       /* big guarded blocks, live and kept inaccessible after free */
#define BIG_KEPT_BYTES ((size_t)1 << 30)  /* address space freed big blocks may hold */
#define FRAMES 24

/* SETUP: taken, its bounds not yet written (lookups treat it as no block) */
enum { UNUSED = 0, LIVE, FREED, SETUP };

typedef struct {
    uint8_t state, nalloc, nfree;
    bool big;
    uint32_t alloc_tid, free_tid;
    uintptr_t start, lo, hi; /* the block; the accessible range [page of start, hi) while live */
    size_t size;
    uintptr_t map;           /* big: the mapping (guard, data, guard) and its length */
    size_t map_len;
    uint64_t freed_at;       /* big: order of frees, the oldest unmapped first */
    void *alloc_frames[FRAMES], *free_frames[FRAMES];
} gblock_t;

/* A block's state, start, size and mapping are read without the lock (a
 * free or a fault asks which block an address is in while other threads
 * set blocks up and release them): atomic accesses, SETUP published after
 * the mapping it covers and LIVE after the bounds. */
HK_INLINE uint8_t state_of(const gblock_t *b) { return __atomic_load_n(&b->state, __ATOMIC_ACQUIRE); }
HK_INLINE void set_state(gblock_t *b, uint8_t s) { __atomic_store_n(&b->state, s, __ATOMIC_RELEASE); }
HK_INLINE uintptr_t start_of(const gblock_t *b) { return __atomic_load_n(&b->start, __ATOMIC_RELAXED); }
HK_INLINE size_t size_of(const gblock_t *b) { return __atomic_load_n(&b->size, __ATOMIC_RELAXED); }
/* A block with bounds: live, or freed and kept inaccessible. */
HK_INLINE bool has_block(uint8_t state) { return state == LIVE || state == FREED; }

bool hk_guard_on;
static unsigned nslots;
static uintptr_t pool_lo, pool_hi; /* the pool: a guard page, then each slot and its guard */
static gblock_t *blocks;           /* nslots slots, then BIG_MAX big blocks */
static unsigned *ring, ring_head, ring_len; /* free slots, least recently freed first */
static hk_lock_t lock = HK_LOCK_INIT;
static uint64_t frees_seen, allocs, skipped, live;
static size_t big_kept, big_mapped, meta_bytes;
static uintptr_t secret;
static char exe[512]; /* the main program's path, for its frames */
static struct sigaction old_segv, old_bus;
static bool handler_set;
static __thread void *alt_stack __attribute__((tls_model("initial-exec")));
#define ALT_BYTES ((size_t)64 << 10)

/* ---- canaries -------------------------------------------------------------- */

/* The canary word for the 8 bytes at a (8-aligned): every byte has its top
 * bit set, so zeros and ASCII never match; the byte at x is byte x & 7 of
 * the word of x & ~7. Filled and checked a word at a time where aligned. */
static uint64_t canary_word(uintptr_t a)
{
    return ((a ^ secret) * 0x9e3779b97f4a7c15ull) | 0x8080808080808080ull;
}
static uint8_t canary(uintptr_t a) { return (uint8_t)(canary_word(a & ~(uintptr_t)7) >> (8 * (a & 7))); }
static void canary_fill(uintptr_t lo, uintptr_t hi)
{
    uintptr_t a = lo;
    for (; a < hi && (a & 7); a++)
        *(volatile uint8_t *)a = canary(a);
    for (; a + 8 <= hi; a += 8)
        *(volatile uint64_t *)a = canary_word(a);
    for (; a < hi; a++)
        *(volatile uint8_t *)a = canary(a);
}
/* The first byte in [lo, hi) that is not its canary, or 0. */
static uintptr_t canary_broken(uintptr_t lo, uintptr_t hi)
{
    uintptr_t a = lo;
    for (; a < hi && (a & 7); a++)
        if (*(const uint8_t *)a != canary(a))
            return a;
    for (; a + 8 <= hi; a += 8)
        if (*(const uint64_t *)a != canary_word(a))
            break; /* the byte-wise loop below finds which */
    for (; a < hi; a++)
        if (*(const uint8_t *)a != canary(a))
            return a;
    return 0;
}

/* ---- the report (no malloc: signal handlers and the free path print it) ---- */

static uint32_t tid(void) { return (uint32_t)syscall(SYS_gettid); }

static void put_hex(hk_line_t *l, uintptr_t v)
{
    char d[20];
    int k = 0;
    do
        d[k++] = "0123456789abcdef"[v & 15];
    while ((v >>= 4));
    char s[24] = "0x";
    int j = 2;
    while (k)
        s[j++] = d[--k];
    s[j] = 0;
    hk_line_str(l, s);
}

/* Each frame as module+offset of its call (the return address less one),
 * which addr2line and google-pprof resolve. */
static void put_stack(const char *what, uint32_t t, void *const *f, unsigned n)
{
    hk_line_t l = {.n = 0};
    hk_line_kv(&l, what, t);
    hk_line_str(&l, n ? " at:" : " (no stack)");
    hk_line_log(&l);
    for (unsigned i = 0; i < n; i++) {
        uintptr_t pc = (uintptr_t)f[i] - 1;
        l.n = 0;
        hk_line_kv(&l, "    #", i);
        hk_line_str(&l, " ");
        put_hex(&l, pc);
        struct dl_find_object fo;
        if (_dl_find_object((void *)pc, &fo) == 0 && fo.dlfo_link_map) {
            const char *name = fo.dlfo_link_map->l_name;
            hk_line_str(&l, " ");
            hk_line_str(&l, name && name[0] ? name : exe);
            hk_line_str(&l, "+");
            put_hex(&l, pc - fo.dlfo_link_map->l_addr);
        }
        hk_line_log(&l);
    }
}

static void report(const char *kind, const char *how, uintptr_t at, const gblock_t *b)
{
    hk_line_t l = {.n = 0};
    hk_line_str(&l, "guarded block: ");
    hk_line_str(&l, kind);
    hk_line_str(&l, how);
    put_hex(&l, at);
    uint8_t state = b ? state_of(b) : UNUSED;
    if (has_block(state)) {
        uintptr_t start = start_of(b), end = start + size_of(b);
        if (at >= end) {
            hk_line_kv(&l, ", ", at - end);
            hk_line_str(&l, at - end == 1 ? " byte after" : " bytes after");
        } else if (at < start) {
            hk_line_kv(&l, ", ", start - at);
            hk_line_str(&l, start - at == 1 ? " byte before" : " bytes before");
        } else {
            hk_line_kv(&l, ", ", at - start);
            hk_line_str(&l, at - start == 1 ? " byte into" : " bytes into");
        }
        hk_line_kv(&l, " the ", end - start);
        hk_line_str(&l, "-byte block [");
        put_hex(&l, start);
        hk_line_str(&l, ", ");
        put_hex(&l, end);
        hk_line_str(&l, ")");
    }
    hk_line_log(&l);
    if (has_block(state)) {
        put_stack("  allocated by thread ", b->alloc_tid, b->alloc_frames, b->nalloc);
        if (state == FREED)
            put_stack("  freed by thread ", b->free_tid, b->free_frames, b->nfree);
    }
}

/* ---- finding the block an address belongs to -------------------------------- */

static gblock_t *slot(unsigned i) { return &blocks[i]; }
static gblock_t *big(unsigned i) { return &blocks[nslots + i]; }
static uintptr_t slot_lo(unsigned i) { return pool_lo + PAGE + (uintptr_t)i * STRIDE; }

/* The block whose area (its pages and guards) holds a, the nearer of two
 * neighbours for a guard page between slots; NULL if none. */
static gblock_t *block_near(uintptr_t a)
{
    if (a >= pool_lo && a < pool_hi) {
        uintptr_t rel = a - pool_lo;
        if (rel < PAGE) /* the leading guard page */
            return nslots ? slot(0) : NULL;
        unsigned i = (unsigned)((rel - PAGE) / STRIDE);
        gblock_t *b = slot(i);
        if (a < slot_lo(i) + SLOT_BYTES || i + 1 == nslots)
            return b;
        /* the guard page after slot i: slot i's block ends at it, slot
         * i+1's starts somewhere after it */
        gblock_t *n = slot(i + 1);
        if (!has_block(state_of(b)))
            return has_block(state_of(n)) ? n : NULL;
        if (!has_block(state_of(n)))
            return b;
        return a - (start_of(b) + size_of(b)) <= start_of(n) - a ? b : n;
    }
    for (unsigned i = 0; i < BIG_MAX; i++) {
        gblock_t *b = big(i);
        if (state_of(b) == UNUSED)
            continue;
        uintptr_t map = __atomic_load_n(&b->map, __ATOMIC_RELAXED);
        if (a >= map && a - map < __atomic_load_n(&b->map_len, __ATOMIC_RELAXED))
            return b;
    }
    return NULL;
}

/* ---- the fault handler ------------------------------------------------------- */

static void chain(int sig, siginfo_t *si, void *uc)
{
    const struct sigaction *old = sig == SIGSEGV ? &old_segv : &old_bus;
    if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
        old->sa_sigaction(sig, si, uc);
        return;
    }
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    /* the default action: the access runs again and the process dies of it */
    signal(sig, SIG_DFL);
}

static void on_fault(int sig, siginfo_t *si, void *ucv)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    gblock_t *b = block_near(a);
    if (!b && !(a >= pool_lo && a < pool_hi)) {
        chain(sig, si, ucv);
        return;
    }
    const ucontext_t *uc = ucv;
    bool write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
    const char *kind = "access to a guard page";
    uint8_t state = b ? state_of(b) : UNUSED;
    if (state == FREED)
        kind = "use after free";
    else if (state == LIVE)
        kind = a >= start_of(b) + size_of(b) ? "overflow" : "underflow";
    report(kind, write ? ": write at " : ": read at ", a, b);
    void *at[FRAMES];
    const greg_t *r = uc->uc_mcontext.gregs;
    put_stack("  the access, in thread ", tid(), at,
              hk_stack_walk_signal((uintptr_t)r[REG_RIP], (uintptr_t)r[REG_RSP], (uintptr_t)r[REG_RBP], at, FRAMES));
    /* dies by this signal, as it would have without hakmem: core dump and
     * exit status stay right */
    signal(sig, SIG_DFL);
}

/* The handler goes in at the first guarded allocation (so a program that
 * never gets one keeps its own); a thread that allocates a guarded block
 * gets an alternate signal stack if it has none (a report must not need
 * the stack that overflowed). */
static void handler_and_stack(void)
{
    if (!alt_stack) {
        stack_t ss;
        if (sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
            void *s = hk_os_reserve(ALT_BYTES, PAGE, true);
            if (s) {
                ss = (stack_t){.ss_sp = s, .ss_size = ALT_BYTES, .ss_flags = 0};
                if (sigaltstack(&ss, NULL) == 0) {
                    alt_stack = s;
                    hk_tls_join(); /* its exit hook gives the stack back */
                }
                else
                    hk_os_release(s, ALT_BYTES);
            }
        } else {
            alt_stack = (void *)1; /* the program's own */
        }
    }
    if (__atomic_load_n(&handler_set, __ATOMIC_ACQUIRE))
        return;
    hk_lock(&lock);
    if (!handler_set) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &old_segv);
        sigaction(SIGBUS, &sa, &old_bus);
        __atomic_store_n(&handler_set, true, __ATOMIC_RELEASE);
    }
    hk_unlock(&lock);
}

void hk_guard_thread_exit(void)
{
    if (alt_stack && alt_stack != (void *)1) {
        stack_t ss = {.ss_flags = SS_DISABLE};
        sigaltstack(&ss, NULL);
        hk_os_release(alt_stack, ALT_BYTES);
    }
    alt_stack = NULL;
}

/* ---- allocation and free -------------------------------------------------------- */

/* Places n bytes aligned to align so that they end as close to hi as the
 * alignment allows; the block's pages become accessible, the bytes around
 * it in them canaries; then it is live (lookups see its bounds). */
static void place(gblock_t *b, uintptr_t hi, size_t n, size_t align)
{
    uintptr_t start = (hi - n) & ~(uintptr_t)(align - 1);
    uintptr_t first = start & ~(uintptr_t)(PAGE - 1);
    if (first < hi)
        hk_os_protect((void *)first, hi - first, true);
    canary_fill(first, start);
    canary_fill(start + n, hi);
    __atomic_store_n(&b->start, start, __ATOMIC_RELAXED);
    __atomic_store_n(&b->size, n, __ATOMIC_RELAXED);
    b->lo = first;
    b->hi = hi;
    b->alloc_tid = tid();
    b->nfree = 0;
    set_state(b, LIVE);
}

static gblock_t *alloc_slot(size_t n, size_t align)
{
    hk_lock(&lock);
    if (!ring_len) {
        hk_unlock(&lock);
        return NULL; /* all in use: not guarded */
    }
    unsigned i = ring[ring_head];
    ring_head = (ring_head + 1) % nslots;
    ring_len--;
    gblock_t *b = slot(i);
    set_state(b, SETUP);
    hk_unlock(&lock);
    place(b, slot_lo(i) + SLOT_BYTES, n, align);
    return b;
}

static gblock_t *alloc_big(size_t n, size_t align)
{
    size_t pad = align > PAGE ? align : 0;
    if (n > PTRDIFF_MAX / 2)
        return NULL;
    /* Whole 2 MiB chunks (address space only: the pages before the block
     * stay inaccessible and untouched), so that no large block's last chunk
     * holds a guarded block: free() would read that block's header, which a
     * concurrent mremap of it may have unmapped. */
    size_t data = hk_align_up(n + pad, PAGE), len = hk_align_up(data + 2 * PAGE, HK_CHUNK_SIZE);
    /* mapped first: an entry is never taken with a range not yet its own
     * (the old one may be another block's by now) */
    void *m = hk_os_reserve(len, HK_CHUNK_SIZE, false);
    if (!m)
        return NULL;
    hk_lock(&lock);
    gblock_t *b = NULL;
    for (unsigned i = 0; i < BIG_MAX && !b; i++)
        if (state_of(big(i)) == UNUSED)
            b = big(i);
    if (b) {
        __atomic_store_n(&b->map, (uintptr_t)m, __ATOMIC_RELAXED);
        __atomic_store_n(&b->map_len, len, __ATOMIC_RELAXED);
        b->big = true;
        set_state(b, SETUP);
        big_mapped += len;
    }
    hk_unlock(&lock);
    if (!b) {
        hk_os_release(m, len);
        return NULL;
    }
    place(b, (uintptr_t)m + len - PAGE, n, align);
    return b;
}

void *hk_guard_alloc(size_t n, size_t align)
{
    if (align < 16)
        align = 16;
    handler_and_stack();
    void *frames[FRAMES];
    unsigned depth = hk_stack_capture(frames, FRAMES);
    /* a block the pool could hold is not guarded while every slot is in use */
    gblock_t *b = n + align <= SLOT_BYTES + 16 && align <= SLOT_BYTES ? alloc_slot(n, align) : alloc_big(n, align);
    hk_lock(&lock);
    if (b) {
        allocs++;
        live++;
    } else
        skipped++;
    hk_unlock(&lock);
    if (!b)
        return NULL;
    memcpy(b->alloc_frames, frames, depth * sizeof *frames);
    b->nalloc = (uint8_t)depth;
    return (void *)b->start;
}

/* The block p is the start of, or NULL (and *near the block p falls in). */
static gblock_t *find(const void *p, gblock_t **near)
{
    gblock_t *b = block_near((uintptr_t)p);
    *near = b;
    return b && has_block(state_of(b)) && start_of(b) == (uintptr_t)p ? b : NULL;
}

bool hk_guard_owns(const void *p)
{
    gblock_t *near;
    return hk_guard_on && ((uintptr_t)p - pool_lo < pool_hi - pool_lo || find(p, &near) || near);
}

static HK_COLD void die(void) { abort(); }

/* Reports and aborts on a pointer that is not a live guarded block. */
static gblock_t *live_block(void *p, const char *op)
{
    gblock_t *near, *b = find(p, &near);
    if (b && state_of(b) == LIVE)
        return b;
    const char *kind = !b ? "invalid free" : strcmp(op, "free") == 0 ? "double free" : "use after free";
    char how[64];
    size_t k = 0;
    for (const char *const *part = (const char *const[]){": ", op, "() of ", NULL}; *part; part++)
        for (const char *c = *part; *c && k < sizeof how - 1; c++)
            how[k++] = *c;
    how[k] = 0;
    report(kind, how, (uintptr_t)p, near);
    die();
    return NULL;
}

size_t hk_guard_usable(void *p, const char *op) { return live_block(p, op)->size; }

void hk_guard_free(void *p)
{
    gblock_t *b = live_block(p, "free");
    uintptr_t bad = canary_broken(b->lo, b->start);
    if (!bad)
        bad = canary_broken(b->start + b->size, b->hi);
    b->nfree = (uint8_t)hk_stack_capture(b->free_frames, FRAMES);
    b->free_tid = tid();
    if (bad) {
        set_state(b, FREED); /* the report shows the free too */
        report(bad < b->start ? "underflow" : "overflow", " (a canary overwritten, found at free): at ", bad, b);
        die();
    }
    /* the pages go back to the OS: with slots reused in turn, keeping them
     * would leave a page or more of every slot resident (0.3 MB a process
     * at the production rate) to save a page fault per guarded block */
    hk_os_protect((void *)b->lo, b->hi - b->lo, false);
    hk_lock(&lock);
    set_state(b, FREED);
    live--;
    if (!b->big) {
        unsigned i = (unsigned)(b - blocks);
        ring[(ring_head + ring_len) % nslots] = i;
        ring_len++;
    } else {
        b->freed_at = ++frees_seen;
        big_kept += b->map_len;
        /* the oldest freed mappings go once too much address space is kept
         * or no entry is left for a new one */
        for (;;) {
            gblock_t *old = NULL;
            unsigned unused = 0;
            for (unsigned i = 0; i < BIG_MAX; i++) {
                gblock_t *c = big(i);
                unused += state_of(c) == UNUSED;
                if (state_of(c) == FREED && (!old || c->freed_at < old->freed_at))
                    old = c;
            }
            if (!old || (big_kept <= BIG_KEPT_BYTES && unused >= BIG_MAX / 4))
                break;
            /* unused before unmapped: a range the OS hands out again is
             * never taken for a guarded block's */
            set_state(old, UNUSED);
            hk_os_release((void *)old->map, old->map_len);
            big_kept -= old->map_len;
            big_mapped -= old->map_len;
        }
    }
    hk_unlock(&lock);
}

/* ---- set-up and fork ---------------------------------------------------------------- */

void hk_guard_configure(unsigned slots)
{
    nslots = slots ? slots : 1;
    size_t pool = PAGE + (size_t)nslots * STRIDE;
    size_t meta = hk_align_up((nslots + BIG_MAX) * sizeof(gblock_t) + nslots * sizeof(unsigned), PAGE);
    /* whole chunks, as a big block's mapping (alloc_big) */
    void *p = hk_os_reserve(hk_align_up(pool, HK_CHUNK_SIZE), HK_CHUNK_SIZE, false);
    void *m = hk_os_reserve(meta, PAGE, true);
    if (!p || !m) {
        hk_log("guarded sampling off: no memory for its pool");
        return;
    }
    meta_bytes = meta;
    pool_lo = (uintptr_t)p;
    pool_hi = pool_lo + pool;
    blocks = m;
    ring = (unsigned *)(blocks + nslots + BIG_MAX);
    for (unsigned i = 0; i < nslots; i++)
        ring[i] = i;
    ring_len = nslots;
    secret = hk_random_word();
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[k > 0 ? k : 0] = 0;
    __atomic_store_n(&hk_guard_on, true, __ATOMIC_RELEASE);
}

void hk_guard_stats(hk_guard_stats_t *st)
{
    hk_lock(&lock);
    *st = (hk_guard_stats_t){.mapped = hk_guard_on ? hk_align_up(pool_hi - pool_lo, HK_CHUNK_SIZE) + meta_bytes + big_mapped : 0,
                             .live = live, .allocs = allocs, .skipped = skipped};
    hk_unlock(&lock);
}

void hk_guard_fork(int phase)
{
    hk_lock_fork(&lock, phase); /* the child keeps the slots and their records: its blocks are live there */
}
