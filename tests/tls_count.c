/* Box 1's counted list lengths (hk_tls_held) must match the lists through pair loops and bursts: with a thread record, and with none (no thread-exit key to be had). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hakmem.h"
#include "hak_tls.h" /* white box: the lists */

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

static bool no_keys, started_first;

/* With TLS_COUNT_NO_KEYS=1, every pthread key is taken before hakmem
 * starts, so threads get no record of their own (they count into the
 * shared one). */
__attribute__((constructor(101))) static void take_every_key(void)
{
    const char *e = getenv("TLS_COUNT_NO_KEYS");
    if (!e || strcmp(e, "1") != 0)
        return;
    /* A sanitizer runtime allocates before any constructor: hakmem then has
     * its key and this thread its record already. */
    struct hak_stats st = {.version = HAK_STATS_VERSION};
    started_first = hak_stats_get(&st) == 0 && (st.threads > 0 || st.mapped > 0);
    pthread_key_t k;
    while (pthread_key_create(&k, NULL) == 0)
        ;
    no_keys = true;
}

static unsigned walk(unsigned c)
{
    unsigned n = 0;
    for (void *b = hk_tls.head[c]; b; b = hk_link_get(b))
        n++;
    return n;
}

static void check(size_t n, unsigned c, const char *when, long i)
{
    unsigned held = hk_tls_held(c), real = walk(c);
    if (held != real || real > hk_tls.cap[c])
        FAIL("%zu B, %s, step %ld: %u counted, %u on the list, cap %u", n, when, i, held, real, hk_tls.cap[c]);
}

static void *run(void *arg)
{
    enum { N = 3000 };
    static __thread void *p[N];
    size_t n = (size_t)(uintptr_t)arg;
    unsigned c = n <= HK_TINY_MAX ? hk_class_by16[(n + 15) >> 4] : hk_class_by128[(n + 127) >> 7];
    void *q = hak_malloc(n);
    check(n, c, "first malloc", 0);
    for (long i = 0; i < 200000; i++) {
        hak_free(q);
        if (!(q = hak_malloc(n)))
            FAIL("malloc(%zu)", n);
        if (i % 997 == 0)
            check(n, c, "pair loop", i);
    }
    for (int round = 0; round < 4; round++) {
        int k = N >> round; /* bursts of several sizes */
        for (int i = 0; i < k; i++) {
            if (!(p[i] = hak_malloc(n)))
                FAIL("malloc(%zu)", n);
            if (i % 101 == 0)
                check(n, c, "burst of mallocs", i);
        }
        for (int i = 0; i < k; i++) {
            hak_free(p[i]); /* in order: the list fills and flushes */
            if (i % 101 == 0)
                check(n, c, "burst of frees", i);
        }
        check(n, c, "after a burst", round);
    }
    hak_free(q);
    check(n, c, "end", 0);
    return NULL;
}

int main(void)
{
    static const size_t ns[] = {8, 40, 200, 1000, 3000, 20000};
    for (unsigned i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        run((void *)(uintptr_t)ns[i]);
        pthread_t t[2];
        for (int j = 0; j < 2; j++)
            if (pthread_create(&t[j], NULL, run, (void *)(uintptr_t)ns[i]) != 0)
                FAIL("pthread_create");
        for (int j = 0; j < 2; j++)
            pthread_join(t[j], NULL);
    }
    struct hak_stats st = {.version = HAK_STATS_VERSION};
    if (hak_stats_get(&st) != 0)
        FAIL("hak_stats_get");
    if (no_keys && started_first) {
        printf("SKIP: hakmem was set up before the test could take the pthread keys "
               "(a sanitizer runtime allocates first); the lists were checked with thread records\n");
        return 77;
    }
    if (no_keys && st.threads != 0)
        FAIL("no key, yet %u threads have a record", st.threads);
    if (!no_keys && st.threads == 0)
        FAIL("no thread has a record");
    printf("list lengths exact (%s)\n", no_keys ? "no thread-exit key, no records" : "thread records");
    return 0;
}
