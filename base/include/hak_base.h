/* hak_base.h — the bottom floor every part stands on: attributes, geometry, locks, the clock, size classes, settings, link encoding, fatal errors and the stack walker. */
#ifndef HAK_BASE_H
#define HAK_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HK_LIKELY(x) __builtin_expect(!!(x), 1)
#define HK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HK_INLINE static inline __attribute__((always_inline))
#define HK_NOINLINE __attribute__((noinline))
#define HK_COLD __attribute__((cold, noinline))
/* malloc and free (under 256 bytes each) start on a 256-byte boundary:
 * their hit paths then decode the same way in every build, whatever code
 * the options put before them, and never straddle a 4 KiB page (at 64
 * bytes, a build where malloc's mid-class path crossed one ran the 4 KiB
 * free/malloc pair 9% slower on a Zen 4: docs/performance.md). */
#define HK_HOT_ENTRY __attribute__((aligned(256)))
/* On extern data: lets the compiler address it directly, not via the GOT. */
#define HK_HIDDEN __attribute__((visibility("hidden")))

/* Address-space geometry: regions (and large mappings) are 2 MiB-aligned and
 * tracked per 2 MiB chunk; regions are cut into 64 KiB pages. */
#define HK_CHUNK_SHIFT 21
#define HK_CHUNK_SIZE ((size_t)1 << HK_CHUNK_SHIFT)
#define HK_PAGE_SHIFT 16
#define HK_PAGE_SIZE ((size_t)1 << HK_PAGE_SHIFT)
#define HK_PAGES_PER_CHUNK (HK_CHUNK_SIZE / HK_PAGE_SIZE)
#define HK_OS_PAGE 4096u

/* Decrements a uint16_t lvalue; true when it was 0 (it wraps to 0xffff).
 * On x86-64 one `subw` and a carry test: gcc's own code for the same
 * reloads, copies and tests (three instructions more on free's hit path). */
#if defined(__x86_64__) && defined(__GCC_ASM_FLAG_OUTPUTS__)
#define HK_DEC16_WAS_ZERO(lv)                                          \
    __extension__({                                                    \
        bool was_zero_;                                                \
        __asm__("subw $1, %0" : "+m"(lv), "=@ccc"(was_zero_));         \
        was_zero_;                                                     \
    })
#else
#define HK_DEC16_WAS_ZERO(lv) __builtin_sub_overflow((lv), 1, &(lv))
#endif

HK_INLINE size_t hk_align_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }
HK_INLINE unsigned hk_umin(unsigned a, unsigned b) { return a < b ? a : b; }
HK_INLINE unsigned hk_umax(unsigned a, unsigned b) { return a > b ? a : b; }
HK_INLINE bool hk_is_pow2(size_t a) { return a && !(a & (a - 1)); }

/* Test-and-test-and-set lock: critical sections here are batch moves of a
 * few dozen pointers, shorter than a futex round trip. */
typedef struct { volatile int v; } hk_lock_t;
#define HK_LOCK_INIT {0}
void hk_lock_slow(hk_lock_t *l);
HK_INLINE void hk_lock(hk_lock_t *l)
{
    if (HK_LIKELY(!__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE)))
        return;
    hk_lock_slow(l);
}
HK_INLINE void hk_unlock(hk_lock_t *l) { __atomic_store_n(&l->v, 0, __ATOMIC_RELEASE); }
/* In a fork child: a lock another thread held is free (that thread is gone). */
HK_INLINE void hk_lock_reset(hk_lock_t *l) { l->v = 0; }

/* fork(): the front calls each part's hk_*_fork with these phases, in
 * pthread_atfork's order (prepare top-down, parent and child bottom-up);
 * each part holds its own locks across the fork and resets its own state
 * in the child, where only the forking thread lives on. */
enum { HK_FORK_PREPARE = 0, HK_FORK_PARENT = 1, HK_FORK_CHILD = 2 };

/* One lock's part in it: taken before the fork, released after it in the
 * parent, reset in the child (whoever held it there is gone). */
HK_INLINE void hk_lock_fork(hk_lock_t *l, int phase)
{
    if (phase == HK_FORK_PREPARE)
        hk_lock(l);
    else if (phase == HK_FORK_PARENT)
        hk_unlock(l);
    else
        hk_lock_reset(l);
}

/* The link in word 0 of a free block. With -Dhardened=true it is stored
 * xor-ed with a per-process key and the block's own address, so a stray
 * write or a leaked link does not give a usable pointer (docs/design.md). */
#ifndef HK_HARDENED
#define HK_HARDENED 0
#endif
extern HK_HIDDEN uintptr_t hk_link_key;
HK_INLINE void *hk_link_get(const void *b)
{
    uintptr_t v = *(const uintptr_t *)b;
    return HK_HARDENED ? (void *)(v ^ hk_link_key ^ (uintptr_t)b) : (void *)v;
}
HK_INLINE void hk_link_set(void *b, const void *next)
{
    uintptr_t v = (uintptr_t)next;
    *(uintptr_t *)b = HK_HARDENED ? v ^ hk_link_key ^ (uintptr_t)b : v;
}
/* Sets hk_link_key once (racing threads agree); before any list is built. */
void hk_link_key_init(uintptr_t seed);

/* The double-free tag: word 1 of every free small block, wherever it waits
 * (a thread cache, the central exchange, a slab's free list, or carved and
 * not yet handed out), holds its address xor a per-process secret; a block
 * is untagged when handed out. free() aborts on a tagged block. Set the
 * secret before the first tag is written (hk_tag_init; odd, never 0). */
extern HK_HIDDEN uintptr_t hk_tag_secret;
HK_INLINE uintptr_t hk_tag(const void *p) { return (uintptr_t)p ^ hk_tag_secret; }
HK_INLINE bool hk_is_tagged(const void *p) { return ((const uintptr_t *)p)[1] == hk_tag(p); }
void hk_tag_init(uintptr_t secret);

/* Bytes given back to the OS since the start (each decommit or unmap counts
 * its bytes), for the stats; updated off the hot path. */
extern HK_HIDDEN uint64_t hk_bytes_returned;
HK_INLINE void hk_note_returned(size_t n) { __atomic_add_fetch(&hk_bytes_returned, n, __ATOMIC_RELAXED); }

/* A coarse monotonic clock in milliseconds (vDSO, no syscall); wraps after
 * 49 days, so compare with subtraction. */
uint32_t hk_now_ms(void);

/* Settings. An unsigned decimal HAKMEM_* variable in [0, max], else def
 * (anything else is reported once); read with secure_getenv, so a setuid
 * program's invoker cannot tune it. No allocation. */
unsigned hk_env_uint(const char *name, unsigned def, unsigned max);
/* The setting's text, or NULL when it is unset or empty. */
const char *hk_env_str(const char *name);
/* Reports once a variable this build has no use for, unless unset or "0". */
void hk_env_unused(const char *name, const char *why);
/* A random word (AT_RANDOM, the clock, ASLR), odd: secrets and seeds. */
uintptr_t hk_random_word(void);

/* ---- size classes ---------------------------------------------------------
 * Small: class 0 means "not a small block"; classes 1..32 are tiny (16 B..
 * 1 KiB), 33..72 mid (1152 B..32 KiB); eight classes per doubling above
 * 128 B keep internal waste at or below 12.5%. Medium: forty classes from
 * 36 KiB to 1 MiB, eight per doubling. Above 1 MiB blocks are large. */
#define HK_NCLASS 73
#define HK_TINY_LAST 32
#define HK_TINY_MAX 1024u
#define HK_SMALL_MAX 32768u
#define HK_MEDIUM_MAX ((size_t)1 << 20)
#define HK_MEDIUM_CLASSES 40

extern HK_HIDDEN const uint32_t hk_class_size[HK_NCLASS];
/* Size -> class with no loop and no division: hk_class_by16[(n + 15) >> 4]
 * for n <= 1 KiB, hk_class_by128[(n + 127) >> 7] up to 32 KiB. */
extern HK_HIDDEN const uint8_t hk_class_by16[HK_TINY_MAX / 16 + 1];
extern HK_HIDDEN const uint8_t hk_class_by128[HK_SMALL_MAX / 128 + 1];
extern HK_HIDDEN const uint32_t hk_medium_sizes[HK_MEDIUM_CLASSES];
extern HK_HIDDEN const uint8_t hk_medium_class_by4k[(HK_MEDIUM_MAX >> 12) + 1];
HK_INLINE unsigned hk_medium_class(size_t n) /* 32 KiB < n <= 1 MiB */
{
    return hk_medium_class_by4k[(n + 4095) >> 12];
}

/* A thread cache's parameters for one class: the most blocks it may hold
 * (cap) and how many move per refill and per flush (batch). The policy
 * sets them, Box 2 hands them to Box 1: one type, passed through. */
typedef struct hk_limits {
    unsigned cap, batch;
} hk_limits_t;

/* Writes "hakmem: <kind> <op>(<ptr>)" to stderr without allocating, then
 * aborts: hk_fatal_op("double", "free", p) -> "hakmem: double free(0x…)". */
__attribute__((noreturn, cold)) void hk_fatal_op(const char *kind, const char *op, const void *p);
/* Writes one "hakmem: <msg>" line to stderr without allocating. */
void hk_log(const char *msg);
/* A program may close its stderr and open a file that gets fd 2: what is
 * written at exit checks that fd 2 is still the file it was at start-up
 * (hk_stderr_note, called then). */
void hk_stderr_note(void);
bool hk_stderr_unchanged(void);
/* A trace line built without malloc (cut at the end of the buffer): text
 * and numbers appended in turn, then written as hk_log does. */
typedef struct { char b[224]; unsigned n; } hk_line_t;
void hk_line_str(hk_line_t *l, const char *s);
void hk_line_u(hk_line_t *l, uint64_t v);
HK_INLINE void hk_line_kv(hk_line_t *l, const char *label, uint64_t v)
{
    hk_line_str(l, label);
    hk_line_u(l, v);
}
void hk_line_log(hk_line_t *l);

/* The calling thread's stack as return addresses, innermost first, starting
 * with the one into hk_stack_walk's caller (at most max). Reads each object's
 * DWARF call-frame table itself: no allocation, and of the loader only its
 * lock-free lookup and (to keep its cache right) its count of loads. It stops
 * at a frame whose rules it does not follow (signal frames, code without
 * tables); 0 where this platform has no walker (not x86-64, glibc < 2.35). */
unsigned hk_stack_walk(void **out, unsigned max);
/* The same from a signal handler, for the interrupted code whose registers
 * are pc, sp and fp (from the ucontext): its first entry is pc + 1 (every
 * entry reads as a return address), no cache, no lock, async-signal-safe. */
unsigned hk_stack_walk_signal(uintptr_t pc, uintptr_t sp, uintptr_t fp, void **out, unsigned max);
/* The walker's part in the fork protocol (HK_FORK_* phases). */
void hk_stack_fork(int phase);

/* A thread's last walk, kept so that the next walk from the same place can
 * replay it: the registers it began with and every stack word its result
 * depended on (a saved rbp only once a step used it, at that point). When
 * those words still hold the same values, the walk would take the same
 * steps (each step depends only on its pc and those words) and gives the
 * same frames; the first word that differs falls back to a full walk. Replayed only when every step was in code never unloaded (the
 * program and what it needs at start-up, libc, the loader, hakmem), so no
 * check of the loader is needed. */
#define HK_STACK_MEMO_READS 176
#define HK_STACK_MEMO_FRAMES 72
typedef struct hk_stack_memo {
    uintptr_t sp, fp;
    uint32_t nreads, nframes, max;
    uint8_t valid, needs_fp, mortal;
    uintptr_t addr[HK_STACK_MEMO_READS], val[HK_STACK_MEMO_READS];
    void *frames[HK_STACK_MEMO_FRAMES];
} hk_stack_memo_t;
/* hk_stack_walk through m (zeroed at first): *replayed says whether the
 * frames are m's previous ones, unchanged; then they are left in m->frames
 * and out is not written. */
unsigned hk_stack_walk_memo(void **out, unsigned max, hk_stack_memo_t *m, bool *replayed);

/* The link of free block b, as every list walk that hands blocks out reads
 * it. -Dhardened=true: one that does not decode to a 16-byte aligned address
 * was overwritten after the free (a use after free or an overflow), and the
 * program aborts naming b. */
HK_INLINE void *hk_link_next(const void *b)
{
    void *next = hk_link_get(b);
    if (HK_HARDENED && HK_UNLIKELY((uintptr_t)next & 15))
        hk_fatal_op("corrupted", "free list", b);
    return next;
}

#endif /* HAK_BASE_H */
