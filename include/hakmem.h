/* hakmem.h — the public interface of hakmem, a general-purpose malloc for Linux. */
#ifndef HAKMEM_H
#define HAKMEM_H

#include <stddef.h>

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

/* Version string, e.g. "0.1.0 (backend=mmap, policy=fixed)". */
HAK_API const char *hak_version(void);

#ifdef __cplusplus
}
#endif

#endif /* HAKMEM_H */
