/* base.c — the slow half of the spinlock and stderr reporting that never calls malloc. */
#include "hak_base.h"

#include <sched.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

uint64_t hk_bytes_returned;
uintptr_t hk_link_key;

void hk_link_key_init(uintptr_t seed)
{
    uintptr_t zero = 0;
    __atomic_compare_exchange_n(&hk_link_key, &zero, seed | 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

void hk_lock_slow(hk_lock_t *l)
{
    for (unsigned spins = 0;; spins++) {
        while (__atomic_load_n(&l->v, __ATOMIC_RELAXED)) {
            if (spins++ < 128)
                __builtin_ia32_pause();
            else
                sched_yield(); /* the holder may be descheduled on 2 cores */
        }
        if (!__atomic_exchange_n(&l->v, 1, __ATOMIC_ACQUIRE))
            return;
    }
}

uint32_t hk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
}

static size_t put_str(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at < cap)
        buf[at++] = *s++;
    return at;
}

static void write_all(const char *buf, size_t n)
{
    while (n) {
        ssize_t w = write(STDERR_FILENO, buf, n);
        if (w <= 0)
            return;
        buf += w;
        n -= (size_t)w;
    }
}

void hk_log(const char *msg)
{
    char buf[256];
    size_t n = put_str(buf, 0, sizeof buf - 1, "hakmem: ");
    n = put_str(buf, n, sizeof buf - 1, msg);
    buf[n++] = '\n';
    write_all(buf, n);
}

void hk_fatal_op(const char *kind, const char *op, const void *p)
{
    char buf[160];
    char hex[24];
    uintptr_t v = (uintptr_t)p;
    int k = 0;
    do {
        hex[k++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    size_t n = put_str(buf, 0, sizeof buf - 1, "hakmem: ");
    n = put_str(buf, n, sizeof buf - 1, kind);
    n = put_str(buf, n, sizeof buf - 1, " ");
    n = put_str(buf, n, sizeof buf - 1, op);
    n = put_str(buf, n, sizeof buf - 1, "(0x");
    while (k && n < sizeof buf - 1)
        buf[n++] = hex[--k];
    n = put_str(buf, n, sizeof buf - 1, ")\n");
    write_all(buf, n);
    abort();
}
