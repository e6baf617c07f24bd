/* hak_base.h — compiler helpers, the spinlock and the fatal-error path shared by every box. */
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
/* malloc and free start on a cache line: their hit paths then decode the
 * same way in every build, whatever code the options put before them. */
#define HK_HOT_ENTRY __attribute__((aligned(64)))
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

/* Bytes given back to the OS since the start (each decommit or unmap counts
 * its bytes), for the stats; updated off the hot path. */
extern HK_HIDDEN uint64_t hk_bytes_returned;
HK_INLINE void hk_note_returned(size_t n) { __atomic_add_fetch(&hk_bytes_returned, n, __ATOMIC_RELAXED); }

/* A coarse monotonic clock in milliseconds (vDSO, no syscall); wraps after
 * 49 days, so compare with subtraction. */
uint32_t hk_now_ms(void);

/* Writes "hakmem: <kind> <op>(<ptr>)" to stderr without allocating, then
 * aborts: hk_fatal_op("double", "free", p) -> "hakmem: double free(0x…)". */
__attribute__((noreturn, cold)) void hk_fatal_op(const char *kind, const char *op, const void *p);
/* Writes one "hakmem: <msg>" line to stderr without allocating. */
void hk_log(const char *msg);

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
