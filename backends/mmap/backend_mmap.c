/* backend_mmap.c — the mmap backend: 4 KiB pages for everything (the shared primitives are in ../common/os_map.c). */
#include "hak_backend.h"
#include "hak_base.h"

#include <sys/mman.h>

void *hk_os_reserve_slabs(size_t size) { return hk_os_reserve(size, HK_CHUNK_SIZE, true); }

void hk_os_decommit(void *p, size_t size)
{
    /* MADV_DONTNEED, not MADV_FREE: RSS must drop now, not under pressure. */
    madvise(p, size, MADV_DONTNEED);
}

void hk_os_release(void *p, size_t size) { munmap(p, size); }

const char *hk_os_mode(void) { return "4 KiB pages (mmap backend)"; }
