/* Helpers shared by the hakmem tests: position-dependent patterns, zero checks and process probes. */
#ifndef HAK_TEST_UTIL_H
#define HAK_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The pattern byte at offset i depends only on (seed, i), never on the block
 * length, so a prefix of a block can be checked after realloc with the old
 * seed. Word-at-a-time keeps it fast enough for 64 MiB blocks at -O0. */
static inline uint64_t hk_test_word(uint64_t seed, size_t wi)
{
    uint64_t x = seed + (uint64_t)wi * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return x;
}

static inline void hk_test_fill(void *p, size_t n, uint64_t seed)
{
    unsigned char *b = p;
    size_t nw = n / 8;
    for (size_t i = 0; i < nw; i++) {
        uint64_t w = hk_test_word(seed, i);
        memcpy(b + i * 8, &w, 8);
    }
    if (n % 8) {
        uint64_t w = hk_test_word(seed, nw);
        memcpy(b + nw * 8, &w, n % 8);
    }
}

/* Returns the first mismatching offset, or (size_t)-1 when the first n bytes
 * match the pattern. */
static inline size_t hk_test_check(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *b = p;
    size_t nw = n / 8;
    for (size_t i = 0; i < nw; i++) {
        uint64_t w = hk_test_word(seed, i), got;
        memcpy(&got, b + i * 8, 8);
        if (got != w) {
            for (size_t k = 0; k < 8; k++)
                if (((const unsigned char *)&got)[k] != ((const unsigned char *)&w)[k])
                    return i * 8 + k;
        }
    }
    if (n % 8) {
        uint64_t w = hk_test_word(seed, nw);
        for (size_t k = 0; k < n % 8; k++)
            if (b[nw * 8 + k] != ((const unsigned char *)&w)[k])
                return nw * 8 + k;
    }
    return (size_t)-1;
}

/* Returns the first non-zero offset, or (size_t)-1. */
static inline size_t hk_test_first_nonzero(const void *p, size_t n)
{
    const unsigned char *b = p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, b + i, 8);
        if (w) break;
    }
    for (; i < n; i++)
        if (b[i]) return i;
    return (size_t)-1;
}

static inline int hk_test_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* Resident set size in bytes, from /proc/self/statm (second field, pages). */
static inline size_t hk_test_rss(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (!f) return 0;
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

/* VmSize in bytes from /proc/self/status (the base for RLIMIT_AS tests). */
static inline size_t hk_test_vmsize(void)
{
    char buf[8192];
    FILE *f = fopen("/proc/self/status", "r");
    size_t kb = 0;
    if (!f) return 0;
    while (fgets(buf, sizeof buf, f)) {
        if (strncmp(buf, "VmSize:", 7) == 0) {
            kb = (size_t)strtoull(buf + 7, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb * 1024;
}

/* xorshift64*: deterministic and thread-local by construction (state passed in). */
static inline uint64_t hk_test_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#endif
