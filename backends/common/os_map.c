/* os_map.c — the address-space primitives every backend shares: aligned reserve, release, protection, resize and move of plain mappings. */
#include "hak_backend.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>

void *hk_os_reserve(size_t size, size_t align, bool commit)
{
    int prot = commit ? PROT_READ | PROT_WRITE : PROT_NONE;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (commit ? 0 : MAP_NORESERVE);
    if (size == 0 || size > PTRDIFF_MAX - align) {
        errno = ENOMEM;
        return NULL;
    }
    /* Optimistic: the kernel often returns an aligned address already. */
    void *p = mmap(NULL, size, prot, flags, -1, 0);
    if (p == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    if (((uintptr_t)p & (align - 1)) == 0)
        return p;
    munmap(p, size);
    size_t span = size + align - HK_OS_PAGE;
    char *raw = mmap(NULL, span, prot, flags, -1, 0);
    if (raw == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    char *aligned = (char *)hk_align_up((uintptr_t)raw, align);
    size_t head = (size_t)(aligned - raw), tail = span - head - size;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap(aligned + size, tail);
    return aligned;
}

void hk_os_release(void *p, size_t size) { munmap(p, size); }

bool hk_os_protect(void *p, size_t size, bool access)
{
    if (access)
        return mprotect(p, size, PROT_READ | PROT_WRITE) == 0;
    /* the pages go back first: an inaccessible range needs no contents */
    madvise(p, size, MADV_DONTNEED);
    return mprotect(p, size, PROT_NONE) == 0;
}

bool hk_os_resize(void *p, size_t old_size, size_t new_size)
{
    if (new_size < old_size)
        return munmap((char *)p + new_size, old_size - new_size) == 0;
    return mremap(p, old_size, new_size, 0) != MAP_FAILED;
}

bool hk_os_move(void *p, size_t old_size, void *dst, size_t new_size)
{
    return mremap(p, old_size, new_size, MREMAP_MAYMOVE | MREMAP_FIXED, dst) != MAP_FAILED;
}
