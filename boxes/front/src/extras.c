/* extras.c — glibc's malloc extras (mallopt, mallinfo, malloc_stats, malloc_info) answered with hakmem's own figures. */
#include "hakmem.h"
#include "front_internal.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <unistd.h>

#define HK_STR2(x) #x
#define HK_STR(x) HK_STR2(x)

const char *hak_version(void)
{
    return HK_STR(HAKMEM_VERSION_MAJOR) "." HK_STR(HAKMEM_VERSION_MINOR) "." HK_STR(
        HAKMEM_VERSION_PATCH) " (backend=" HK_BACKEND_NAME ", policy=" HK_POLICY_NAME
#if HK_POOL_TLS
        ", pool_tls"
#else
        ", shared pool"
#endif
#if HK_HARDENED
        ", hardened"
#endif
#if !HK_OVERRIDE
        ", hak_ names only" /* -Doverride=false: malloc stays the system's */
#endif
        ")";
}

/* hakmem has no tunables behind mallopt: every parameter is accepted and
 * ignored, so programs that set M_ARENA_MAX and check the result go on. */
int hak_mallopt(int param, int value)
{
    (void)param;
    (void)value;
    return 1;
}

struct mallinfo2 hak_mallinfo2(void)
{
    hk_refill_stats_t st;
    hk_large_stats_t lst;
    hk_refill_stats(&st);
    hk_large_stats(&lst);
    struct mallinfo2 mi = {0};
    size_t free_bytes = st.free_page_bytes + st.central_bytes + st.slab_free_bytes;
    /* Cached large mappings are free memory kept for reuse: in arena and
     * fordblks, not in hblkhd. */
    mi.arena = st.region_bytes + lst.cached_bytes;
    mi.hblks = lst.live_count;
    mi.hblkhd = lst.live_bytes;
    mi.fordblks = free_bytes + lst.cached_bytes;
    mi.uordblks = mi.arena > mi.fordblks ? mi.arena - mi.fordblks : 0;
    mi.ordblks = 1;
    return mi;
}

struct mallinfo hak_mallinfo(void)
{
    struct mallinfo2 m = hak_mallinfo2();
    struct mallinfo mi = {0};
    mi.arena = (int)m.arena;
    mi.hblks = (int)m.hblks;
    mi.hblkhd = (int)m.hblkhd;
    mi.fordblks = (int)m.fordblks;
    mi.uordblks = (int)m.uordblks;
    mi.ordblks = (int)m.ordblks;
    return mi;
}

/* Formats into a stack buffer: snprintf of integers does not allocate. */
static int format_stats(char *buf, size_t cap, bool xml)
{
    struct mallinfo2 m = hak_mallinfo2();
    if (xml)
        return snprintf(buf, cap,
                        "<malloc version=\"hakmem-1\">\n"
                        "<system type=\"current\" size=\"%zu\"/>\n"
                        "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n"
                        "<total type=\"in-use\" size=\"%zu\"/>\n"
                        "<total type=\"free\" size=\"%zu\"/>\n"
                        "</malloc>\n",
                        m.arena + m.hblkhd, m.hblks, m.hblkhd, m.uordblks + m.hblkhd, m.fordblks);
    return snprintf(buf, cap,
                    "%s\n"
                    "regions:       %12zu bytes\n"
                    "in use:        %12zu bytes\n"
                    "free in slabs: %12zu bytes\n"
                    "large:         %12zu bytes in %zu mappings\n",
                    hak_version(), m.arena, m.uordblks, m.fordblks, m.hblkhd, m.hblks);
}

void hak_malloc_stats(void)
{
    char buf[512];
    int n = format_stats(buf, sizeof buf, false);
    if (n > 0 && write(STDERR_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1) < 0)
        return;
}

int hak_malloc_info(int options, FILE *fp)
{
    if (options != 0)
        return EINVAL;
    char buf[512];
    format_stats(buf, sizeof buf, true);
    return fputs(buf, fp) < 0 ? -1 : 0;
}

#if HK_OVERRIDE
/* The standard names are aliases (one body, no extra call); the malloc
 * attribute of the hak_ twins is a promise the aliases need not repeat. */
#pragma GCC diagnostic ignored "-Wmissing-attributes"
#define HK_ALIAS(name, target) \
    extern __typeof(target) name __attribute__((alias(#target), visibility("default")))
HK_ALIAS(mallopt, hak_mallopt);
HK_ALIAS(mallinfo, hak_mallinfo);
HK_ALIAS(mallinfo2, hak_mallinfo2);
HK_ALIAS(malloc_stats, hak_malloc_stats);
HK_ALIAS(malloc_info, hak_malloc_info);
#endif
