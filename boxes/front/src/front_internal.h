/* front_internal.h — what the front's files share: the large path, process initialisation and the purge thread. */
#ifndef HK_FRONT_INTERNAL_H
#define HK_FRONT_INTERNAL_H

#include "hak_refill.h"

/* Large blocks (> 1 MiB, or aligned beyond what slabs and spans give):
 * their own 2 MiB-aligned mapping with the header in its first bytes; ch is
 * the block's owner as the page map gives it (kind HK_CHUNK_LARGE*). */
void *hk_large_alloc(size_t n, size_t align, bool *zeroed);
void hk_large_free(hk_chunk_t *ch, void *p, const char *op);
size_t hk_large_usable(hk_chunk_t *ch, const void *p, const char *op);
/* Resizes in place or by moving pages (no copy); NULL if it cannot. */
void *hk_large_resize(hk_chunk_t *ch, void *p, size_t n);
/* Unmaps cached mappings idle for at least delay ms (0: all). */
size_t hk_large_purge(uint32_t delay, bool *pending);
/* Live large blocks (mapped bytes, count), cached free mappings (bytes,
 * count), and since the start: blocks allocated and freed, mappings made
 * and unmapped. */
typedef struct hk_large_stats {
    size_t live_bytes, live_count, cached_bytes, cached_count;
    uint64_t allocs, frees, maps, unmaps;
} hk_large_stats_t;
void hk_large_stats(hk_large_stats_t *st);
/* Bytes of large mappings, live and cached, read without the lock. */
size_t hk_large_mapped(void);
/* fork(): HK_FORK_* for the large path's lock, the statistics' locks and
 * the purge thread (which does not survive into the child). */
void hk_large_fork(int phase);
void hk_stats_fork(int phase);
void hk_purge_fork(int phase);

/* Runs the process-wide setup once; cheap to call from every slow path. */
void hk_init_slow(void);
extern int hk_init_state;
HK_INLINE void hk_init(void)
{
    if (HK_UNLIKELY(__atomic_load_n(&hk_init_state, __ATOMIC_ACQUIRE) != 2))
        hk_init_slow();
}
extern bool hk_verbose;

/* The purge thread is started only at a safe point: a malloc slow path, a
 * thread's exit, malloc_trim. Never from free(): glibc frees a dead
 * thread's TLS with its thread-stack lock held, and pthread_create takes
 * that lock (a free there that started the thread hung the process). */
extern HK_HIDDEN int hk_purge_started;
void hk_purge_safe_point_slow(void);
HK_INLINE void hk_purge_safe_point(void)
{
    if (HK_UNLIKELY(!__atomic_load_n(&hk_purge_started, __ATOMIC_RELAXED)))
        hk_purge_safe_point_slow();
}
/* After a free that may have left memory to give back: wakes the purge
 * thread if it runs and sleeps. Call with no lock held. */
void hk_purge_kick_slow(void);
HK_INLINE void hk_purge_kick(void)
{
    if (HK_UNLIKELY(__atomic_load_n(&hk_refill_purge_pending, __ATOMIC_RELAXED)))
        hk_purge_kick_slow();
}
extern bool hk_purge_thread_enabled;

/* The heap profiler (prof.c). Sampling is on when HAKMEM_PROF or
 * HAKMEM_PROF_SAMPLE is set; the file at exit needs HAKMEM_PROF. */
typedef struct hk_prof_config {
    bool on;
    const char *prefix; /* HAKMEM_PROF: PREFIX.PID.heap at exit, or NULL */
    uint64_t sample;    /* HAKMEM_PROF_SAMPLE: mean bytes between samples (1: every block) */
    bool seeded;        /* HAKMEM_PROF_SEED given: repeatable runs */
    uint64_t seed;
    bool glibc_walker;  /* HAKMEM_PROF_WALKER=glibc: stacks by glibc's backtrace */
    unsigned guard_every; /* HAKMEM_GUARD_SAMPLE: about one allocation in N guarded, 0 off */
} hk_prof_config_t;
void hk_prof_configure(const hk_prof_config_t *cfg);
extern HK_HIDDEN bool hk_prof_on;
/* What every sample writes: the count of live sampled blocks (free's slow
 * paths ask the profiler only while it is above 0) and the profiler's lock,
 * on a cache line of their own, so that one thread's samples do not take
 * from the others the line their countdowns read (hk_prof_on). */
typedef struct {
    size_t live;
    hk_lock_t lock;
} __attribute__((aligned(64))) hk_prof_hot_t;
extern HK_HIDDEN hk_prof_hot_t hk_prof_hot;
/* A thread's countdown ran out (hk_tls_sample_due) on an allocation of n
 * bytes: sets the next one, says which samplers take this allocation. */
enum { HK_SAMPLE_PROF = 1, HK_SAMPLE_GUARD = 2 };
unsigned hk_sample_next(size_t n);
/* The caller's stack (hakmem's frames left out where they can be told). */
unsigned hk_stack_capture(void **out, unsigned max);
/* Records the sampled block p of n requested bytes with the caller's stack
 * (hakmem's frames left out) and returns p; with `inside`, p is a small
 * block at least n + HK_PROF_HEAD bytes long whose head takes the record
 * instead of the block map, and p + HK_PROF_HEAD comes back (p itself, an
 * ordinary block, when no record could be made). Such a block is found by
 * its pointer alone: HK_PROF_HEAD bytes into a block of more is no block
 * start, so its free and size query leave the hit path (api.c), with no
 * page marked. The head: a word keyed by the process's secret and the
 * address (hk_prof_is_inside), the block's free tag (hk_tag: a free of
 * the block itself, a pointer HK_PROF_HEAD before the program's, stops at
 * free's double-free test and is told from one there), the record, and a
 * word set when the record is dropped (hk_prof_was_inside: a second free
 * of the program's pointer is told from an invalid one). */
#define HK_PROF_HEAD 32
void *hk_prof_record(void *p, size_t n, bool inside);
HK_INLINE uintptr_t hk_prof_key(const void *blk, uintptr_t k) { return hk_tag(blk) ^ k; }
HK_INLINE bool hk_prof_is_inside(const void *blk)
{
    return ((const uintptr_t *)blk)[0] == hk_prof_key(blk, 0x9e3779b97f4a7c15u);
}
HK_INLINE bool hk_prof_was_inside(const void *blk)
{
    return ((const uintptr_t *)blk)[3] == hk_prof_key(blk, 0xc2b2ae3d27d4eb4fu);
}
/* blk's record inside is dropped (its line stops counting it): false when
 * blk has none, or a racing free took it first. */
bool hk_prof_unrecord(void *blk);
/* blk, recorded inside, now holds n bytes (realloc in place). */
void hk_prof_resized_inside(void *blk, size_t n);
/* p is being freed: forgets its record if it has one (true then). */
bool hk_prof_forget(void *p);
/* p, a live block, now holds n bytes (realloc in place). */
void hk_prof_resized(void *p, size_t n);
/* A large block about to be resized by moving its pages: its record (if it
 * has one: true) comes off first, since once moved, its old range may be
 * mapped again by another thread before realloc returns. reattach puts the
 * record on `at` (the block resized in place to n bytes; n 0: not resized)
 * or, with at NULL (it moved), drops it. */
bool hk_prof_detach(void *p, uint64_t *rec);
void hk_prof_reattach(uint64_t rec, void *at, size_t n);
void hk_prof_fork(int phase);
/* A thread's exit: its walk memo goes back for the next thread. */
void hk_prof_thread_exit(void);
typedef struct hk_prof_stats {
    uint64_t mapped, live, dropped, replayed;
} hk_prof_stats_t;
void hk_prof_stats(hk_prof_stats_t *st);

/* Guarded sampling (guard.c): a pool of HAKMEM_GUARD_SLOTS slots for blocks
 * up to 32 KiB, mappings of their own above. */
void hk_guard_configure(unsigned slots);
extern HK_HIDDEN bool hk_guard_on;
/* A guarded block of n bytes aligned to align, or NULL (pool full). */
void *hk_guard_alloc(size_t n, size_t align);
/* Whether p lies in guarded memory (a block, its slot or its guard pages). */
bool hk_guard_owns(const void *p);
/* Frees the guarded block p; reports and aborts on a double or invalid free
 * or an overwritten canary. */
void hk_guard_free(void *p);
/* The request's size; reports and aborts unless p is a live guarded block. */
size_t hk_guard_usable(void *p, const char *op);
void hk_guard_thread_exit(void);
typedef struct hk_guard_stats {
    uint64_t mapped, live, allocs, skipped;
} hk_guard_stats_t;
void hk_guard_stats(hk_guard_stats_t *st);
void hk_guard_fork(int phase);

#endif
