/* A library for prof_replay_dso: allocates n blocks from one call site and returns glibc's backtrace taken just before; built as a library the test links (DT_NEEDED) and as a module it dlopens. */
#include <execinfo.h>
#include <stddef.h>

#include "test_alloc_names.h"

#ifndef REPLAY_FN
#define REPLAY_FN replay_lib_alloc
#endif

__attribute__((visibility("default"), noinline)) int REPLAY_FN(void **out, int n, size_t size, void **bt, int maxbt)
{
    int nbt = backtrace(bt, maxbt);
    for (int i = 0; i < n; i++)
        out[i] = T_MALLOC(size);
    __asm__ volatile("" : : : "memory"); /* the loop's last call is not a tail call */
    return nbt;
}
