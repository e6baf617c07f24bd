/* Picks the allocation names a plain test program exercises: the standard ones when hakmem overrides them, else hak_*. */
#ifndef HAK_TEST_ALLOC_NAMES_H
#define HAK_TEST_ALLOC_NAMES_H

#include <stdlib.h>

#include "hakmem.h"

/* With an override build the interesting path is the one every libc caller
 * takes (the standard names); otherwise only hak_* belong to hakmem. */
#ifdef HAKMEM_TEST_OVERRIDE
#define T_MALLOC malloc
#define T_CALLOC calloc
#define T_REALLOC realloc
#define T_FREE free
#else
#define T_MALLOC hak_malloc
#define T_CALLOC hak_calloc
#define T_REALLOC hak_realloc
#define T_FREE hak_free
#endif

#endif
