/* Checks that, in an override build, the standard allocation names and glibc's malloc extras are hakmem's. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hakmem.h"
#include "test_util.h"

/* hak_malloc_usable_size aborts on a pointer hakmem does not own, so each of
 * these passing proves the standard name reached hakmem. */
Test(override, std_names_route_to_hakmem)
{
    void *p = malloc(100);
    cr_assert(p && hak_malloc_usable_size(p) >= 100);
    free(p);

    p = calloc(10, 10);
    cr_assert(p && hak_malloc_usable_size(p) >= 100);
    cr_assert(hk_test_first_nonzero(p, 100) == (size_t)-1);
    p = realloc(p, 5000);
    cr_assert(p && hak_malloc_usable_size(p) >= 5000);
    free(p);

    p = reallocarray(NULL, 30, 10);
    cr_assert(p && hak_malloc_usable_size(p) >= 300);
    free(p);

    p = NULL;
    cr_assert(posix_memalign(&p, 256, 1000) == 0);
    cr_assert(hk_test_aligned(p, 256) && hak_malloc_usable_size(p) >= 1000);
    free(p);

    p = aligned_alloc(4096, 4096);
    cr_assert(p && hk_test_aligned(p, 4096) && hak_malloc_usable_size(p) >= 4096);
    free(p);

    p = memalign(64, 10);
    cr_assert(p && hk_test_aligned(p, 64) && hak_malloc_usable_size(p) >= 10);
    free(p);

    p = valloc(10);
    cr_assert(p && hk_test_aligned(p, 4096) && malloc_usable_size(p) >= 10);
    free(p);

    p = pvalloc(10);
    cr_assert(p && hk_test_aligned(p, 4096) && malloc_usable_size(p) >= 4096);
    free(p);

    p = malloc(3 << 20);
    cr_assert(p && hak_malloc_usable_size(p) >= (3u << 20));
    free(p);
}

Test(override, mixed_prefixed_and_standard)
{
    for (size_t s = 1; s < (2u << 20); s = s * 3 + 1) {
        void *a = hak_malloc(s);
        cr_assert(a);
        memset(a, 1, s);
        free(a);
        void *b = malloc(s);
        cr_assert(b);
        memset(b, 2, s);
        hak_free(b);
        void *c = realloc(hak_malloc(s), s + 100);
        cr_assert(c);
        hak_free(c);
    }
}

/* libc's own internal allocations (strdup, asprintf, open_memstream) go
 * through the exported malloc too. */
Test(override, libc_internal_allocations)
{
    char *s = strdup("hello hakmem");
    cr_assert(s && hak_malloc_usable_size(s) >= 13);
    hak_free(s);

    char *a = NULL;
    cr_assert(asprintf(&a, "%0500d", 7) == 500);
    cr_assert(hak_malloc_usable_size(a) >= 501);
    hak_free(a);

    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f);
    for (int i = 0; i < 10000; i++) fprintf(f, "%d,", i);
    fclose(f);
    cr_assert(buf && len > 10000 && hak_malloc_usable_size(buf) >= len);
    free(buf);
}

Test(override, std_edge_semantics)
{
    volatile size_t huge = SIZE_MAX;
    errno = 0;
    cr_assert(malloc(huge) == NULL && errno == ENOMEM);
    void *a = malloc(0), *b = malloc(0);
    cr_assert(a && b && a != b);
    free(a);
    free(b);
    free(NULL);
    void *p = (void *)0x1234;
    volatile size_t bad = 24;
    cr_assert(posix_memalign(&p, bad, 10) == EINVAL && p == (void *)0x1234);
    errno = 0;
    cr_assert(aligned_alloc(bad, 10) == NULL && errno == EINVAL);
}

Test(glibc_extras, malloc_trim)
{
    void *p[64];
    for (int i = 0; i < 64; i++) p[i] = malloc((size_t)(i + 1) * 20000);
    for (int i = 0; i < 64; i++) free(p[i]);
    int r = malloc_trim(0);
    cr_assert(r == 0 || r == 1, "malloc_trim(0) = %d", r);
    void *q = malloc(100);
    cr_assert(q && hak_malloc_usable_size(q) >= 100);
    free(q);
}

Test(glibc_extras, mallopt_arena_max)
{
    cr_assert(mallopt(M_ARENA_MAX, 1) != 0, "mallopt(M_ARENA_MAX, 1) must report success");
}

Test(glibc_extras, mallinfo2_counts_hakmem_memory)
{
    enum { N = 10 * 1024 };
    static void *blocks[N];
    for (int i = 0; i < N; i++) {
        blocks[i] = malloc(1024);
        cr_assert(blocks[i]);
        memset(blocks[i], 1, 1024);
    }
    struct mallinfo2 mi = mallinfo2();
    size_t total = mi.arena + mi.hblkhd;
    cr_assert(total >= (size_t)10 << 20, "mallinfo2: arena %zu + hblkhd %zu < 10 MiB with 10 MiB live", mi.arena,
              mi.hblkhd);
    cr_assert(mi.uordblks <= total, "uordblks %zu exceeds arena+hblkhd %zu", mi.uordblks, total);
    for (int i = 0; i < N; i++) free(blocks[i]);
}

Test(glibc_extras, malloc_stats_prints)
{
    void *keep = malloc(1000);
    FILE *tmp = tmpfile();
    cr_assert(tmp);
    fflush(stderr);
    int saved = dup(2);
    cr_assert(saved >= 0);
    cr_assert(dup2(fileno(tmp), 2) == 2);
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    long len = lseek(fileno(tmp), 0, SEEK_END);
    fclose(tmp);
    free(keep);
    cr_assert(len > 0, "malloc_stats() printed nothing to stderr");
}

Test(glibc_extras, malloc_info_xml)
{
    void *keep = malloc(1000);
    FILE *tmp = tmpfile();
    cr_assert(tmp);
    cr_assert(malloc_info(0, tmp) == 0, "malloc_info(0, f) failed");
    fflush(tmp);
    rewind(tmp);
    char buf[64] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, tmp);
    fclose(tmp);
    free(keep);
    cr_assert(n >= 7 && strncmp(buf, "<malloc", 7) == 0, "malloc_info output starts with \"%s\"", buf);
}
