/* hak_backend.h — the OS-memory primitive every backend implements: reserve, commit, decommit, release. */
#ifndef HAK_BACKEND_H
#define HAK_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

/* Reserves `size` bytes of address space aligned to `align` (a power of two,
 * at least 4 KiB). With `commit` the range is also readable and writable.
 * Returns NULL (errno ENOMEM) when the OS refuses. Fresh memory reads as 0. */
void *hk_os_reserve(size_t size, size_t align, bool commit);
/* Reserves and commits `size` bytes (a multiple of 2 MiB), 2 MiB-aligned,
 * for Box 2's slab regions, which are never resized or moved. The
 * hugepages backend backs them with 2 MiB pages where it can; everything
 * else (large blocks, the page map) comes from hk_os_reserve on 4 KiB pages.
 * Fresh memory reads as 0; NULL (errno ENOMEM) when the OS refuses. */
void *hk_os_reserve_slabs(size_t size);
/* Makes a reserved range usable; false when the OS refuses (ENOMEM). */
bool hk_os_commit(void *p, size_t size);
/* Gives the physical pages back now (RSS drops); the range stays usable and
 * reads as zero afterwards. Only whole pages can go back: in a MAP_HUGETLB
 * slab region that means whole 2 MiB pages, and a smaller range is zeroed
 * in place instead (its memory stays until the region is released). */
void hk_os_decommit(void *p, size_t size);
/* Returns the range to the OS entirely. */
void hk_os_release(void *p, size_t size);
/* Grows or shrinks a committed mapping in place; false if it cannot. */
bool hk_os_resize(void *p, size_t old_size, size_t new_size);
/* Moves a committed mapping's pages to `dst` (a reserved range of new_size),
 * without copying bytes; false if it cannot. */
bool hk_os_move(void *p, size_t old_size, void *dst, size_t new_size);
/* One line naming the pages this backend hands out and why (for
 * HAKMEM_VERBOSE and the stats); never NULL, no allocation. */
const char *hk_os_mode(void);

#endif /* HAK_BACKEND_H */
