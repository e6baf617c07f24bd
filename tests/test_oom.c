/* Checks that running out of address space yields NULL with ENOMEM (never a crash) and that memory is usable again after freeing. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"
#include "test_util.h"

/* Child exit codes, so the parent can say what went wrong. */
enum { OK = 0, E_SETRLIMIT = 10, E_NEVER_NULL, E_ERRNO, E_NOT_AGAIN, E_OTHER_SIZES, E_CONTENT };

static const char *what(int code)
{
    switch (code) {
    case E_SETRLIMIT: return "setrlimit failed";
    case E_NEVER_NULL: return "allocation never returned NULL under RLIMIT_AS";
    case E_ERRNO: return "NULL returned with errno != ENOMEM";
    case E_NOT_AGAIN: return "after freeing everything, allocation did not succeed again";
    case E_OTHER_SIZES: return "after freeing everything, other sizes failed";
    case E_CONTENT: return "block contents corrupted while near the limit";
    default: return "unknown";
    }
}

/* Blocks are chained through their first word, so the test itself needs no
 * memory that could fail. Returns how many blocks were allocated. */
static long fill_until_null(size_t size, void **head, int *err)
{
    long count = 0;
    *err = 0;
    for (;;) {
        errno = 0;
        void **p = hak_malloc(size);
        if (!p) {
            *err = errno;
            return count;
        }
        /* Tag the tail of the block so a block handed out twice, or metadata
         * written over user memory when the OS refused, is noticed. */
        p[0] = *head;
        if (size >= 16) ((size_t *)p)[1] = size ^ (size_t)(uintptr_t)p;
        *head = p;
        count++;
        if (count > 100000000) return -1;
    }
}

static int free_chain(void *head, size_t size)
{
    int bad = 0;
    while (head) {
        void **p = head;
        if (size >= 16 && ((size_t *)p)[1] != (size ^ (size_t)(uintptr_t)p)) bad = 1;
        head = p[0];
        hak_free(p);
    }
    return bad;
}

static int oom_child(size_t size)
{
    /* Touch the allocator before measuring, so its own first-use mappings are
     * inside the baseline. */
    hak_free(hak_malloc(size));
    size_t vm = hk_test_vmsize();
    struct rlimit rl = {vm + ((size_t)200 << 20), vm + ((size_t)200 << 20)};
    if (setrlimit(RLIMIT_AS, &rl) != 0) return E_SETRLIMIT;

    void *head = NULL;
    int err;
    long n1 = fill_until_null(size, &head, &err);
    if (n1 < 0) return E_NEVER_NULL;
    if (err != ENOMEM) return E_ERRNO;
    if (free_chain(head, size)) return E_CONTENT;
    head = NULL;

    /* Freed memory must be reusable (or returned): at least half of what fit
     * before must fit again. */
    long n2 = fill_until_null(size, &head, &err);
    if (n2 < 0) return E_NEVER_NULL;
    if (err != ENOMEM) return E_ERRNO;
    if (n2 < n1 / 2) {
        fprintf(stderr, "first pass %ld blocks of %zu, second pass %ld\n", n1, size, n2);
        return E_NOT_AGAIN;
    }
    if (free_chain(head, size)) return E_CONTENT;

    /* Every size range works after the pressure is gone. */
    size_t sizes[] = {16, 100, 1000, 5000, 40000, 300000, 2 << 20, 20 << 20};
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = hak_malloc(sizes[i]);
        if (!p[i]) {
            fprintf(stderr, "hak_malloc(%zu) failed after recovery\n", sizes[i]);
            return E_OTHER_SIZES;
        }
        memset(p[i], 1, sizes[i]);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) hak_free(p[i]);
    return OK;
}

static void run_oom(size_t size)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        alarm(100);
        _exit(oom_child(size));
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    cr_assert(!WIFSIGNALED(st), "OOM child with %zu-byte blocks killed by signal %d (a crash instead of NULL/ENOMEM)",
              size, WTERMSIG(st));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "OOM child with %zu-byte blocks: %s", size,
              what(WEXITSTATUS(st)));
}

Test(oom, blocks_1mib, .timeout = 120)
{
    run_oom((size_t)1 << 20);
}

Test(oom, blocks_64kib, .timeout = 120)
{
    run_oom((size_t)64 << 10);
}

Test(oom, blocks_100b, .timeout = 120)
{
    run_oom(100);
}

Test(oom, blocks_3mib, .timeout = 120)
{
    run_oom((size_t)3 << 20);
}

/* calloc and realloc under the limit must fail the same clean way. */
static int oom_calloc_realloc_child(void)
{
    size_t vm = hk_test_vmsize();
    struct rlimit rl = {vm + ((size_t)64 << 20), vm + ((size_t)64 << 20)};
    if (setrlimit(RLIMIT_AS, &rl) != 0) return E_SETRLIMIT;
    errno = 0;
    void *c = hak_calloc(1, (size_t)256 << 20);
    if (c) return E_NEVER_NULL;
    if (errno != ENOMEM) return E_ERRNO;
    void *p = hak_malloc(1 << 20);
    if (!p) return E_NOT_AGAIN;
    hk_test_fill(p, 1 << 20, 5);
    errno = 0;
    void *q = hak_realloc(p, (size_t)256 << 20);
    if (q) return E_NEVER_NULL;
    if (errno != ENOMEM) return E_ERRNO;
    if (hk_test_check(p, 1 << 20, 5) != (size_t)-1) return E_CONTENT;
    hak_free(p);
    errno = 0;
    void *a = NULL;
    if (hak_posix_memalign(&a, 1 << 21, (size_t)256 << 20) != ENOMEM || a != NULL) return E_ERRNO;
    return OK;
}

Test(oom, calloc_realloc_memalign_fail_cleanly, .timeout = 60)
{
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        alarm(50);
        _exit(oom_calloc_realloc_child());
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    cr_assert(!WIFSIGNALED(st), "child killed by signal %d", WTERMSIG(st));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", what(WEXITSTATUS(st)));
}
