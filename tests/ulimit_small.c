/* Checks that a small program linked with hakmem runs under `ulimit -v 400000` (no large up-front address-space reservation). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "test_alloc_names.h"

static void *thread_main(void *arg)
{
    (void)arg;
    void *p[100];
    for (int i = 0; i < 100; i++) {
        p[i] = T_MALLOC((size_t)(i + 1) * 100);
        if (!p[i]) return (void *)1;
        memset(p[i], 1, (size_t)(i + 1) * 100);
    }
    for (int i = 0; i < 100; i++) T_FREE(p[i]);
    return NULL;
}

static int small_program(void)
{
    /* A few MB in every size range, from two threads. */
    size_t sizes[] = {16, 100, 1000, 5000, 30000, 100000, 900000, 2 << 20, 4 << 20};
    void *p[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        p[i] = T_MALLOC(sizes[i]);
        if (!p[i]) {
            fprintf(stderr, "allocation of %zu bytes failed under RLIMIT_AS=400000 KiB\n", sizes[i]);
            return 1;
        }
        memset(p[i], 2, sizes[i]);
    }
    void *small[5000];
    for (int i = 0; i < 5000; i++)
        if (!(small[i] = T_MALLOC(64))) return 1;
    for (int i = 0; i < 5000; i++) T_FREE(small[i]);
    pthread_t t;
    void *r;
    if (pthread_create(&t, NULL, thread_main, NULL) != 0) {
        fprintf(stderr, "pthread_create failed under RLIMIT_AS\n");
        return 1;
    }
    pthread_join(t, &r);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) T_FREE(p[i]);
    if (r) return 1;
    printf("ulimit: ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    (void)argc;
    if (getenv("HAK_TEST_UNDER_LIMIT")) return small_program();
    /* Set the limit, then re-exec so hakmem initialises from scratch under it,
     * exactly as with `ulimit -v 400000; prog`. */
    struct rlimit rl = {400000ul * 1024, 400000ul * 1024};
    if (setrlimit(RLIMIT_AS, &rl) != 0) {
        perror("setrlimit");
        return 2;
    }
    setenv("HAK_TEST_UNDER_LIMIT", "1", 1);
    execv("/proc/self/exe", argv);
    perror("execv");
    return 2;
}
