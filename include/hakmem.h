/* hakmem.h — the public interface of hakmem, a general-purpose malloc for Linux. */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HAKMEM_VERSION_MAJOR 0
#define HAKMEM_VERSION_MINOR 1
#define HAKMEM_VERSION_PATCH 0

#if defined(__GNUC__)
#define HAK_API __attribute__((visibility("default")))
#define HAK_MALLOC_ATTR __attribute__((malloc, warn_unused_result))
#else
#define HAK_API
#define HAK_MALLOC_ATTR
#endif

/* Always available, whether or not the build also exports the standard names
 * (meson option `override`). Semantics match the standard functions; see
 * docs/api.md for the cases where C17, POSIX and glibc disagree. */
HAK_API HAK_MALLOC_ATTR void *hak_malloc(size_t size);
HAK_API void hak_free(void *ptr);
HAK_API HAK_MALLOC_ATTR void *hak_calloc(size_t nmemb, size_t size);
HAK_API void *hak_realloc(void *ptr, size_t size);
HAK_API void *hak_reallocarray(void *ptr, size_t nmemb, size_t size);
HAK_API int hak_posix_memalign(void **out, size_t alignment, size_t size);
HAK_API HAK_MALLOC_ATTR void *hak_aligned_alloc(size_t alignment, size_t size);
HAK_API HAK_MALLOC_ATTR void *hak_memalign(size_t alignment, size_t size);
HAK_API HAK_MALLOC_ATTR void *hak_valloc(size_t size);
HAK_API HAK_MALLOC_ATTR void *hak_pvalloc(size_t size);
HAK_API size_t hak_malloc_usable_size(void *ptr);

/* Returns free memory (empty slabs, cached large mappings, the current
 * thread's cache) to the OS. `pad` is accepted for glibc compatibility and
 * ignored. Returns 1 if any memory was released, 0 otherwise. */
HAK_API int hak_malloc_trim(size_t pad);

/* ---- statistics ----------------------------------------------------------
 * A snapshot of hakmem's counters (docs/api.md). Fill `version` before the
 * call:  struct hak_stats st = {.version = HAK_STATS_VERSION};
 * Later versions only append fields. Figures read while other threads
 * allocate are each a moment's value; they are exact once threads are quiet. */
#define HAK_STATS_VERSION 4
#define HAK_STATS_MAX_CLASSES 128

enum hak_stats_kind { HAK_STATS_SMALL = 1, HAK_STATS_MEDIUM = 2, HAK_STATS_LARGE = 3 };

struct hak_stats_class {
    int kind;               /* enum hak_stats_kind */
    size_t block_size;      /* bytes; 0 for the large row (any size > 1 MiB) */
    uint64_t allocs, frees; /* blocks handed out and given back since start */
    uint64_t refills;       /* small: thread-cache refills; medium: slabs made; large: mappings made */
    uint64_t flushes;       /* small: lists given back by thread caches; medium: slabs returned;
                               large: mappings unmapped */
    uint64_t live_blocks;   /* allocs - frees */
    uint64_t cached_blocks; /* in thread caches (large: freed mappings kept for reuse) */
    uint64_t central_blocks;/* in the central exchange between threads */
    uint64_t slab_free_blocks; /* free or not yet carved blocks inside slabs */
    uint64_t slabs;         /* slabs held by the class */
    unsigned cap, batch;    /* small: the policy's thread-cache cap and refill count in force */
};

struct hak_stats {
    unsigned version;       /* in: HAK_STATS_VERSION */
    unsigned nclass;        /* out: rows filled in cls[] */
    struct hak_stats_class cls[HAK_STATS_MAX_CLASSES];
    /* process totals, bytes */
    uint64_t mapped;        /* address space mapped now (regions, large blocks, metadata) */
    uint64_t returned;      /* given back to the OS since start (decommitted or unmapped) */
    uint64_t thread_cached, central, slab_free; /* free memory held at each level */
    uint64_t live;          /* in blocks the program holds (block sizes, not requests) */
    uint64_t rss, peak_rss; /* VmRSS and VmHWM from /proc/self/status (0 if unreadable) */
    uint64_t hugetlb;       /* HugetlbPages from /proc/self/status */
    unsigned threads;       /* live threads with a cache */
    char backend[96];       /* which pages the backend hands out and why */
    /* version 2: the heap profiler (docs/profiling.md; all 0 when it is off) */
    uint64_t prof_mapped;   /* bytes of its own tables (in `mapped` too) */
    uint64_t prof_live;     /* sampled blocks live now */
    uint64_t prof_dropped;  /* samples not recorded: its tables were full */
    /* version 3: guarded sampling (docs/guarding.md; all 0 when it is off) */
    uint64_t guard_mapped;  /* address space of its pool, its big blocks' mappings (live and
                               kept inaccessible after free) and its records (in `mapped` too) */
    uint64_t guard_live;    /* guarded blocks live now */
    uint64_t guard_allocs;  /* allocations guarded since start */
    uint64_t guard_skipped; /* allocations due a guard that got none: every slot in use */
    /* version 4 */
    uint64_t prof_replayed; /* samples whose stack was a replay of the thread's last walk */
};

/* Fills *st; returns 0, or -1 with errno EINVAL if st->version is unknown.
 * Takes each lock briefly; never allocates. */
HAK_API int hak_stats_get(struct hak_stats *st);
/* Prints the snapshot as a table (classes with any activity) and totals.
 * HAKMEM_STATS=1 prints it to stderr at exit. */
HAK_API void hak_stats_print(FILE *out);

/* Version string, e.g. "0.1.0 (backend=mmap, policy=fixed, pool_tls)", with
 * ", hardened" and ", hak_ names only" (-Doverride=false) before the ")"
 * where they apply: it names the build options, so a bug report or a log
 * line says which build ran (docs/api.md). */
HAK_API const char *hak_version(void);

/* Writes the heap profile (google-pprof's sampled heap format: live and
 * cumulative sampled allocations by stack) to path. 0 on success; -1 with
 * errno ENOTSUP when sampling is off (set HAKMEM_PROF or HAKMEM_PROF_SAMPLE),
 * or open's or write's errno. docs/profiling.md. */
HAK_API int hak_prof_dump(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
