/* free() when the slab map does not have a block's page (another page took its entry): the page-map path must free, check and catch exactly as the one-load path does. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"
#include "hak_refill.h" /* white box: the slab map */

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* What a page 4 GiB further on would write: the same entry, another key. */
static void displace(const void *p)
{
    uint64_t *e = hk_slabmap_slot(p);
    uint64_t other = hk_slabmap_key((const char *)p + ((uintptr_t)1 << 32));
    uint64_t cls = *e ^ hk_slabmap_key(p);
    if ((*e ^ other) < HK_NCLASS)
        return; /* a block of the same page was here first */
    if (cls == 0 || cls >= HK_NCLASS)
        FAIL("the slab map does not have %p's page (entry %#llx)", p, (unsigned long long)*e);
    *e = other | cls;
}

/* fn(p) in a child must abort with one line starting `want`. */
static void expect_abort(void (*fn)(void *), void *p, const char *want)
{
    int fds[2];
    if (pipe(fds) != 0) FAIL("pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        dup2(fds[1], 2);
        fn(p);
        _exit(0);
    }
    close(fds[1]);
    char buf[512] = {0};
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    (void)n;
    int st;
    waitpid(pid, &st, 0);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT || strncmp(buf, want, strlen(want)) != 0)
        FAIL("%p: wanted an abort with \"%s\", got status %#x and \"%s\"", p, want, st, buf);
}
static void free_it(void *p) { hak_free(p); }
static void free_twice(void *p) { hak_free(p); hak_free(p); }

int main(void)
{
    enum { N = 64 };
    static const size_t sizes[] = {16, 48, 200, 1024, 5000, 30000};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        char *v[N];
        for (int i = 0; i < N; i++) {
            v[i] = hak_malloc(sizes[k]);
            if (!v[i]) FAIL("malloc(%zu)", sizes[k]);
            memset(v[i], 0x5a, sizes[k]);
        }
        for (int i = 0; i < N; i++)
            displace(v[i]);
        expect_abort(free_it, v[0] + 8, "hakmem: invalid free(");
        expect_abort(free_twice, v[1], "hakmem: double free(");
        /* Freed by the page-map path onto the thread's list: the next
         * malloc of the class gives the same block back. */
        for (int i = 0; i < N; i++) {
            hak_free(v[i]);
            char *p = hak_malloc(sizes[k]);
            if (p != v[i])
                FAIL("size %zu: malloc gave %p, not the block just freed (%p)", sizes[k], p, v[i]);
            if (hak_malloc_usable_size(p) < sizes[k]) FAIL("usable size of %p", p);
        }
        for (int i = 0; i < N; i++)
            hak_free(v[i]);
        printf("size %zu: %d frees through the page map, checks and reuse as on the fast path\n", sizes[k], N);
    }
    /* An entry another page owns says nothing of this one: a medium block
     * whose entry holds a small class (of a page 4 GiB on) is still freed
     * as the medium block it is. */
    char *m = hak_malloc(100 * 1024);
    if (!m) FAIL("malloc(100 KiB)");
    *hk_slabmap_slot(m) = hk_slabmap_key(m + ((uintptr_t)1 << 32)) | 3;
    hak_free(m);
    *hk_slabmap_slot(m) = 0;
    printf("a medium block under another page's entry: freed as medium\n");
    return 0;
}
