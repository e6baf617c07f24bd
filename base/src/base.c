/* base.c — the bottom floor's code: the spinlock's slow half, the clock, settings from the environment, and stderr reporting that never calls malloc. */
#include "hak_base.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint64_t hk_bytes_returned;
uintptr_t hk_link_key;
uintptr_t hk_tag_secret;

void hk_tag_init(uintptr_t secret) { hk_tag_secret = secret | 1; }

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

/* What fd 2 was at start-up (device and inode), to tell at exit whether it
 * is still the program's stderr or a file that took its number. */
static dev_t stderr_dev;
static ino_t stderr_ino;
static bool stderr_open;

void hk_stderr_note(void)
{
    struct stat st;
    stderr_open = fstat(2, &st) == 0;
    stderr_dev = stderr_open ? st.st_dev : 0;
    stderr_ino = stderr_open ? st.st_ino : 0;
}

bool hk_stderr_unchanged(void)
{
    struct stat st;
    return stderr_open && fstat(2, &st) == 0 && st.st_dev == stderr_dev && st.st_ino == stderr_ino;
}

void hk_line_str(hk_line_t *l, const char *s)
{
    l->n = (unsigned)put_str(l->b, l->n, sizeof l->b - 1, s);
}

void hk_line_u(hk_line_t *l, uint64_t v)
{
    char d[24];
    int k = 0;
    do
        d[k++] = (char)('0' + v % 10);
    while ((v /= 10) && k < 24);
    while (k && l->n < sizeof l->b - 1)
        l->b[l->n++] = d[--k];
}

void hk_line_log(hk_line_t *l)
{
    l->b[l->n] = 0;
    hk_log(l->b);
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

uintptr_t hk_random_word(void)
{
    uintptr_t s = 0;
    const unsigned char *r = (const unsigned char *)getauxval(AT_RANDOM);
    if (r)
        memcpy(&s, r + 8, sizeof s); /* bytes 0-7 are glibc's stack guard */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s ^= (uintptr_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uintptr_t)&s;
    return s | 1;
}

/* "ignoring WHY NAME" and an optional tail, once per setting read. */
static void env_ignored(const char *why, const char *name, const char *tail)
{
    char msg[112] = "ignoring ";
    size_t k = 9;
    for (const char *const *part = (const char *const[]){why, " ", name, tail, NULL}; *part; part++)
        for (const char *t = *part; *t && k < sizeof msg - 1; t++)
            msg[k++] = *t;
    msg[k] = 0;
    hk_log(msg);
}

const char *hk_env_str(const char *name)
{
    const char *v = secure_getenv(name);
    return v && *v ? v : NULL;
}

unsigned hk_env_uint(const char *name, unsigned def, unsigned max)
{
    const char *v = secure_getenv(name);
    if (!v || !*v)
        return def;
    unsigned long n = 0;
    bool big = false;
    for (const char *s = v; *s; s++) {
        if (*s < '0' || *s > '9') {
            env_ignored("malformed", name, "");
            return def;
        }
        n = n * 10 + (unsigned long)(*s - '0');
        if (n > max) { /* clamped, so that a long number cannot wrap */
            big = true;
            n = (unsigned long)max + 1;
        }
    }
    if (big) {
        env_ignored("out-of-range", name, "");
        return def;
    }
    return (unsigned)n;
}

/* The value is not parsed, so never also "malformed"; "0" asks for what the
 * build does without it, so a fleet-wide setting stays quiet. */
void hk_env_unused(const char *name, const char *why)
{
    const char *v = secure_getenv(name);
    if (v && *v && strcmp(v, "0") != 0)
        env_ignored("unused", name, why);
}
