/* ace_reentry.c — contract C: Box 3 linked alone under a malloc that aborts while Box 3 runs; events, learning and the trace must never reach it. */
#include "hak_base.h"
#include "policy_internal.h" /* white box: hk_ace_stats */
#define hk_policy_cap(c) (hk_policy_limits(c).cap)
#define hk_policy_batch(c) (hk_policy_limits(c).batch)

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* This program's malloc family: glibc's underneath, abort while `inside`. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static volatile int inside;

static void reentered(const char *fn)
{
    static const char msg[] = "ace_reentry: Box 3 called ";
    if (write(2, msg, sizeof msg - 1) < 0 || write(2, fn, strlen(fn)) < 0 || write(2, "\n", 1) < 0)
        abort();
    abort();
}

void *malloc(size_t n)
{
    if (inside)
        reentered("malloc");
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    if (inside)
        reentered("calloc");
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    if (inside)
        reentered("realloc");
    return __libc_realloc(p, n);
}
void *aligned_alloc(size_t a, size_t n)
{
    if (inside)
        reentered("aligned_alloc");
    return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n)
{
    if (inside)
        reentered("posix_memalign");
    void *p = __libc_memalign(a, n);
    if (!p)
        return 12;
    *out = p;
    return 0;
}
void free(void *p)
{
    if (inside)
        reentered("free");
    __libc_free(p);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "selfcheck")) {
        /* The harness itself must catch a malloc (this run must abort). */
        inside = 1;
        void *volatile p = malloc(16);
        inside = 0;
        free(p);
        return 0;
    }
    inside = 1;
    hk_policy_config_t cfg = hk_policy_config();
    cfg.learning = cfg.trace = true; /* the trace formats and writes every decision */
    hk_policy_configure(&cfg);
    for (unsigned round = 0; round < 200; round++) {
        for (unsigned i = 0; i < 5000; i++) {
            unsigned c = 1 + (i * 7 + round) % 72;
            /* alternate churn, consumer and producer patterns per class */
            unsigned kind = round % 3 == 0 ? (i & 1 ? HK_EV_REFILL : HK_EV_FLUSH)
                          : round % 3 == 1 ? HK_EV_FLUSH : HK_EV_REFILL;
            hk_policy_event(kind, c, 32);
        }
        hk_policy_event(HK_EV_DRAIN, 5, 10);
        hk_policy_learn(hk_now_ms() + round * 50);
        for (unsigned c = 1; c < 73; c++)
            if (hk_policy_cap(c) < hk_policy_batch(c) || hk_policy_batch(c) == 0) {
                inside = 0;
                fprintf(stderr, "class %u: cap %u batch %u\n", c, hk_policy_cap(c), hk_policy_batch(c));
                return 1;
            }
    }
    hk_ace_stats_t st;
    hk_ace_stats(&st);
    hk_policy_fork(HK_FORK_CHILD);
    inside = 0;
    printf("reentry: %llu events, %llu decisions, no allocation\n", (unsigned long long)st.events,
           (unsigned long long)st.decisions);
    return st.decisions > 0 ? 0 : 1;
}
