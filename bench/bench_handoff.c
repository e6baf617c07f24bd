/* Handoff: a server's worker thread replaces random blocks of a shared live set, then retires and a new thread takes over the same blocks, generation after generation. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench_util.h"

#define MINSZ 16
#define MAXSZ 1024

/* The head of every block, and the slot's record of what it should hold:
 * the two are compared before each free. */
struct hdr {
    uint32_t size;
    uint32_t stamp;                     /* the operation that wrote it */
};

struct slot {
    unsigned char *p;
    struct hdr want;
};

static struct slot *slots;
static uint64_t nslots, per_gen;

/* Header, a body of one byte value and the same value again as the last
 * byte: a block that overlaps its neighbour or was handed out twice has a
 * wrong header or a wrong last byte. */
static void write_block(unsigned char *p, struct hdr h) {
    memcpy(p, &h, sizeof h);
    memset(p + sizeof h, (int)(h.stamp & 0xff), h.size - sizeof h);
}

static void check_block(const struct slot *s, uint64_t index) {
    struct hdr h;
    memcpy(&h, s->p, sizeof h);
    if (h.size != s->want.size || h.stamp != s->want.stamp || s->p[h.size - 1] != (unsigned char)h.stamp) {
        fprintf(stderr, "bench_handoff: slot %llu corrupted (block %p: size %u stamp %u, want %u %u)\n",
                (unsigned long long)index, (void *)s->p, h.size, h.stamp, s->want.size, s->want.stamp);
        abort();
    }
}

struct gen {
    uint64_t g;
    uint64_t sum;                       /* bytes of the blocks it freed */
};

static void *worker(void *arg) {
    struct gen *gen = arg;
    /* A seed per generation: the whole run is one fixed sequence of operations. */
    uint64_t seed = 0x9E3779B97F4A7C15ull ^ ((gen->g + 1) * 0xD1B54A32D192ED03ull);
    uint64_t sum = 0;
    uint32_t stamp = (uint32_t)(nslots + gen->g * per_gen);
    for (uint64_t i = 0; i < per_gen; i++) {
        uint64_t r = rng_next(&seed);
        uint64_t k = pick(r & 0xffffffffu, nslots);
        struct slot *s = &slots[k];
        check_block(s, k);
        sum += s->want.size;
        free(s->p);
        struct hdr h = {MINSZ + (uint32_t)pick(r >> 32, MAXSZ - MINSZ + 1), ++stamp};
        unsigned char *p = malloc(h.size);
        if (__builtin_expect(!p, 0)) { perror("malloc"); exit(1); }
        write_block(p, h);
        s->p = p;
        s->want = h;
    }
    gen->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-') {
        fprintf(stderr, "usage: %s [generations=40] [ops_per_generation=250000] [slots=4096]\n"
                "  one worker thread at a time replaces random slots (free the block, malloc a new one of\n"
                "  16-1024 B, write it); when it has done its ops it exits and the next one starts on the\n"
                "  same slots, so every generation frees blocks that threads now dead allocated.\n", argv[0]);
        return 2;
    }
    uint64_t gens = argc > 1 ? strtoull(argv[1], NULL, 0) : 40;
    per_gen = argc > 2 ? strtoull(argv[2], NULL, 0) : 250000;
    nslots = argc > 3 ? strtoull(argv[3], NULL, 0) : 4096;
    /* Stamps are 32 bits and each is used once: nslots + gens * per_gen must not wrap. */
    if (gens < 1 || per_gen < 1 || nslots < 1 || nslots > (1u << 24) || per_gen > 0xffffffffull ||
        gens > 0xffffffffull / per_gen || nslots + gens * per_gen > 0xffffffffull) {
        fprintf(stderr, "bench_handoff: bad parameters\n");
        return 2;
    }
    slots = malloc(nslots * sizeof *slots);
    if (!slots) { perror("malloc"); return 1; }
    /* The main thread fills the live set (stamps 1..nslots; generations
     * continue from there), so the first generation frees blocks of a thread that
     * is still alive, and every later one those of a thread that is gone. */
    uint64_t seed = 0x2545F4914F6CDD1Dull;
    for (uint64_t k = 0; k < nslots; k++) {
        struct hdr h = {MINSZ + (uint32_t)pick(rng_next(&seed) >> 32, MAXSZ - MINSZ + 1), (uint32_t)(k + 1)};
        if (!(slots[k].p = malloc(h.size))) { perror("malloc"); return 1; }
        write_block(slots[k].p, h);
        slots[k].want = h;
    }

    uint64_t sum = 0;
    uint64_t t0 = now_ns();
    for (uint64_t g = 0; g < gens; g++) {
        struct gen gen = {g, 0};
        pthread_t tid;
        if (pthread_create(&tid, NULL, worker, &gen)) { perror("pthread_create"); return 1; }
        pthread_join(tid, NULL);
        sum += gen.sum;
    }
    uint64_t t1 = now_ns();
    /* With the live set still allocated: what the dead workers left behind
     * shows against live_kb. */
    long final_rss = rss_now_kb();
    uint64_t live = 0;
    for (uint64_t k = 0; k < nslots; k++) {
        check_block(&slots[k], k);
        live += slots[k].want.size;
        free(slots[k].p);
    }
    free(slots);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    uint64_t ops = gens * per_gen;
    /* ops = replacements (a check, a free, a malloc and a write each); thread start and exit are in the time. */
    printf("workload=handoff_%llu ops=%llu ns_per_op=%.3f elapsed_s=%.4f peak_rss_kb=%ld final_rss_kb=%ld "
           "live_kb=%llu generations=%llu check=%llu\n",
           (unsigned long long)nslots, (unsigned long long)ops, (double)(t1 - t0) / (double)ops,
           (double)(t1 - t0) / 1e9, ru.ru_maxrss, final_rss, (unsigned long long)(live >> 10),
           (unsigned long long)gens, (unsigned long long)((sum + live) & 0xffff));
    return 0;
}
