/* Box 2's regions from inside: spans go where they fit best, and a free span's pages are decommitted once they have been free for the purge delay even while the rest of their region stays busy. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "hakmem.h"
#include "refill_internal.h" /* white box: hk_span_alloc and hk_span_free */

#define FAIL(...) do { fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static hk_page_t *span(unsigned n)
{
    bool zeroed;
    hk_page_t *pg = hk_span_alloc(n, HK_PAGE_MEDIUM, 0, &zeroed);
    if (!pg) FAIL("hk_span_alloc(%u) failed", n);
    return pg;
}

static size_t resident_kib(uintptr_t start, size_t len)
{
    static unsigned char vec[(1u << 21) / 4096];
    if (mincore((void *)start, len, vec) != 0) FAIL("mincore failed");
    size_t n = 0;
    for (size_t i = 0; i < len / 4096; i++)
        n += vec[i] & 1;
    return n * 4;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(void)
{
    if (strstr(hak_version(), "backend=hugepages")) {
        printf("region-purge: regions on 4 KiB pages only (this build may put them on huge pages)\n");
        return 77;
    }
    hak_free(hak_malloc(16)); /* initialises hakmem */
    unsigned delay = 100;     /* HAKMEM_PURGE_DELAY_MS in tests/meson.build */

    /* Best fit: in a fresh region a 16-page and an 8-page span leave one
     * run; a 1-page span then goes into that run, not into the 16-page hole
     * the first span leaves when it is freed. */
    hk_page_t *a = span(16), *b = span(8);
    hk_chunk_t *region = hk_chunk_of_page(a);
    if (hk_chunk_of_page(b) != region) FAIL("two spans that fit one region went to two");
    uintptr_t a_start = a->start;
    size_t a_len = (size_t)16 << HK_PAGE_SHIFT;
    memset((void *)a_start, 0x5a, a_len);
    hk_span_free(a);
    size_t before = resident_kib(a_start, a_len);

    /* Keep the region busy: a span comes back to it every 20 ms, for four
     * purge delays. Old behaviour: a region-wide clock that each return
     * restarts, so the freed 1 MiB stayed resident as long as this lasted. */
    size_t given = 0;
    for (int i = 0; i < 20; i++) {
        hk_page_t *c = span(1);
        if (hk_chunk_of_page(c) != region) FAIL("a 1-page span left the region that has room for it");
        if (c->start >= a_start && c->start < a_start + a_len) FAIL("a 1-page span split the 16-page hole instead of filling the best fit");
        hk_span_free(c);
        bool pending = false;
        given += hk_refill_purge(delay, &pending);
        sleep_ms(20);
    }
    size_t after = resident_kib(a_start, a_len);
    printf("region-purge: a freed 1 MiB span in a busy region: %zu KiB resident after its free, %zu KiB %u ms later "
           "(%zu KiB given back)\n", before, after, 4 * delay, given / 1024);
    if (before < 1000) FAIL("the freed span was not resident to begin with (%zu KiB)", before);
    if (after > 64) FAIL("%zu KiB of the freed span still resident after four purge delays", after);
    hk_span_free(b);
    return 0;
}
