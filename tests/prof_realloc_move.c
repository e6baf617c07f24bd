/* A sampled large block that realloc moves, while another thread maps and unmaps regions: its record must leave before its old range can be mapped again, so that no record outlives its block (every block is sampled; at the end nothing the two threads allocated may be live in the profile); and impossible sizes leave the sampling countdown sound. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "hakmem.h"

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

/* Sizes no other allocation of the program has: a live line of one of them
 * is a record that outlived its block. */
#define ALIGNED ((1u << 20) + 300000)
#define KEPT (3u << 20)
#define MOVED (48u << 20)
#define CHURN_MIN 20000
#define CHURN_MAX 27000
#define HOLD 3000

static atomic_int stop;
static int rounds = 10000;

static void *mover(void *arg)
{
    (void)arg;
    void *keep[4] = {0};
    for (int i = 0; i < rounds; i++) {
        /* large, 64 KiB-aligned: its old range is a region's size and alignment */
        void *p = NULL;
        if (hak_posix_memalign(&p, 65536, ALIGNED))
            FAIL("posix_memalign");
        memset(p, 1, 4096);
        hak_free(keep[i & 3]);
        keep[i & 3] = hak_malloc(KEPT); /* mapped after it: the growth must move */
        void *q = hak_realloc(p, MOVED);
        if (!q)
            FAIL("realloc to %u bytes", MOVED);
        if (((unsigned char *)q)[4095] != 1)
            FAIL("realloc lost the block's bytes");
        hak_free(q);
    }
    for (int i = 0; i < 4; i++)
        hak_free(keep[i]);
    atomic_store(&stop, 1);
    return NULL;
}

/* Maps regions and gives them back, so that a range realloc left is soon a region's. */
static void *churn(void *arg)
{
    (void)arg;
    static void *h[HOLD];
    while (!atomic_load(&stop)) {
        for (int i = 0; i < HOLD; i++)
            if (!(h[i] = hak_malloc(CHURN_MIN + (i & 7) * 1000)))
                FAIL("malloc");
        for (int i = 0; i < HOLD; i++)
            hak_free(h[i]);
        hak_malloc_trim(0);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        rounds = atoi(argv[1]);
    char path[256];
    snprintf(path, sizeof path, "prof_realloc_move.%d.heap", (int)getpid());
    /* Requests no mapping can hold run the countdown down by nearly 2^64
     * bytes: it must stay exact arithmetic (UBSan's builds check it). */
    for (int i = 0; i < 3; i++) {
        errno = 0;
        if (hak_malloc(((size_t)1 << 63) + 4096) || errno != ENOMEM)
            FAIL("malloc(2^63 + 4096) did not fail with ENOMEM");
    }
    pthread_t a, b;
    pthread_create(&b, NULL, churn, NULL);
    pthread_create(&a, NULL, mover, NULL);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    if (hak_prof_dump(path) != 0)
        FAIL("hak_prof_dump(%s)", path);
    FILE *f = fopen(path, "r");
    if (!f)
        FAIL("cannot read %s", path);
    char line[8192];
    unsigned lines = 0, stale = 0;
    while (fgets(line, sizeof line, f)) {
        uint64_t n, bytes, an, ab;
        if (strncmp(line, "MAPPED_LIBRARIES", 16) == 0)
            break;
        if (sscanf(line, " %" SCNu64 ": %" SCNu64 " [ %" SCNu64 ": %" SCNu64 "] @", &n, &bytes, &an, &ab) != 4 ||
            strstr(line, "heap profile"))
            continue;
        lines++;
        if (!n)
            continue;
        uint64_t mean = bytes / n;
        if (mean == ALIGNED || mean == KEPT || mean == MOVED || (mean >= CHURN_MIN && mean <= CHURN_MAX)) {
            fprintf(stderr, "a record outlived its block: %s", line);
            stale++;
        }
    }
    fclose(f);
    remove(path);
    if (lines < 3)
        FAIL("the profile has %u lines: the two threads' sites are missing", lines);
    if (stale)
        FAIL("%u profile lines still live of blocks the program freed", stale);
    printf("ok: %d moves, %u profile lines, none of the freed blocks live\n", rounds, lines);
    return 0;
}
