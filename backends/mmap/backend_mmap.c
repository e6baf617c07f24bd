/* backend_mmap.c — the mmap backend: 4 KiB pages for everything (the shared primitives are in ../common/os_map.c). */
#include "hak_backend.h"

#include <sys/mman.h>

/* Slab regions are 2 MiB-aligned, so under THP "always" the first touch of
 * a region would fault in a whole 2 MiB page and a purged 64 KiB span would
 * not lower RSS: this backend promises 4 KiB pages, so it opts out (huge
 * pages are the hugepages backend's job, where it measures that they pay). */
void *hk_os_reserve_slabs(void)
{
    void *p = hk_os_reserve(HK_CHUNK_SIZE, HK_CHUNK_SIZE, true);
    if (p)
        madvise(p, HK_CHUNK_SIZE, MADV_NOHUGEPAGE); /* a kernel without THP refuses: nothing to opt out of */
    return p;
}

void hk_os_decommit(void *p, size_t size)
{
    /* MADV_DONTNEED, not MADV_FREE: RSS must drop now, not under pressure. */
    madvise(p, size, MADV_DONTNEED);
}

void hk_os_release_slabs(void *region) { hk_os_release(region, HK_CHUNK_SIZE); }

const char *hk_os_mode(void) { return "4 KiB pages (mmap backend)"; }

void hk_os_fork(int phase) { (void)phase; } /* no state, no lock */
