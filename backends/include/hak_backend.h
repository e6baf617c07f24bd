/* hak_backend.h — the OS-memory primitives every backend implements: reserve, decommit, release, protection, resize and move of mappings. */
#ifndef HAK_BACKEND_H
#define HAK_BACKEND_H

#include "hak_base.h"

/* Reserves `size` bytes of address space aligned to `align` (a power of two,
 * at least 4 KiB). With `commit` the range is also readable and writable.
 * Returns NULL (errno ENOMEM) when the OS refuses. Fresh memory reads as 0. */
void *hk_os_reserve(size_t size, size_t align, bool commit);
/* Reserves and commits one 2 MiB-aligned slab region of HK_CHUNK_SIZE
 * bytes for Box 2, never resized or moved. The hugepages backend backs it
 * with a 2 MiB page where it can; everything else (large blocks, the page
 * map, thread records) comes from hk_os_reserve on 4 KiB pages. Its first
 * HK_OS_REGION_WORD bytes are the backend's record of the region (which
 * pages back it): the caller keeps them at the start of its header and
 * never writes them. The rest reads as 0; NULL (errno ENOMEM) when the OS
 * refuses. */
#define HK_OS_REGION_WORD 4
void *hk_os_reserve_slabs(void);
/* Gives the physical pages of a range inside a slab region back now (RSS
 * drops); it stays usable and reads as zero afterwards. Only whole pages
 * can go back: in a MAP_HUGETLB region that means the whole 2 MiB page,
 * and a smaller range is zeroed in place instead. */
void hk_os_decommit(void *p, size_t size);
/* Returns a slab region to the OS. */
void hk_os_release_slabs(void *region);
/* Returns any other range (from hk_os_reserve) to the OS. */
void hk_os_release(void *p, size_t size);
/* Makes whole pages of a range from hk_os_reserve readable and writable, or
 * inaccessible (any access faults) with their physical pages given back:
 * guard pages. false if the OS refuses. */
bool hk_os_protect(void *p, size_t size, bool access);
/* Grows or shrinks a committed mapping in place; false if it cannot. */
bool hk_os_resize(void *p, size_t old_size, size_t new_size);
/* Moves a committed mapping's pages to `dst` (a reserved range of new_size),
 * without copying bytes; false if it cannot. */
bool hk_os_move(void *p, size_t old_size, void *dst, size_t new_size);
/* One line naming the pages this backend hands out and why (for
 * HAKMEM_VERBOSE and the stats); never NULL, no allocation. */
const char *hk_os_mode(void);
/* fork(): HK_FORK_* (hak_base.h); the backend's locks are held across it. */
void hk_os_fork(int phase);

#endif /* HAK_BACKEND_H */
