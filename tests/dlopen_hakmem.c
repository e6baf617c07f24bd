/* Checks that libhakmem.so can be dlopen()ed into a running process (its initial-exec TLS fits) and that its hak_* API works there, with the heap profiler and guarded sampling on too. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);
typedef size_t (*usable_fn)(void *);

static malloc_fn h_malloc;
static free_fn h_free;
static usable_fn h_usable;

/* Exercises every size range from the calling thread; returns 0 on success. */
static int use_it(int tag)
{
    void *p[64];
    size_t sz[64];
    for (int i = 0; i < 64; i++) {
        sz[i] = i < 40 ? (size_t)(i * 29 + 1) : i < 56 ? (size_t)(i * 1000) : (size_t)(i - 55) * 300000;
        p[i] = h_malloc(sz[i]);
        if (!p[i] || ((uintptr_t)p[i] & 15) || h_usable(p[i]) < sz[i]) {
            fprintf(stderr, "dlopen[%d]: bad block %p for size %zu\n", tag, p[i], sz[i]);
            return 1;
        }
        memset(p[i], tag + i, sz[i]);
    }
    for (int i = 0; i < 64; i++) {
        if (((unsigned char *)p[i])[sz[i] - 1] != (unsigned char)(tag + i)) return 1;
        h_free(p[i]);
    }
    return 0;
}

static pthread_barrier_t loaded;
static void *leftover[4];

/* Runs use_it and leaves one block behind for main, so a free of a block
 * whose thread has exited is covered as well. */
static void *thread_main(void *arg)
{
    int tag = (int)(intptr_t)arg;
    if (tag == 0) pthread_barrier_wait(&loaded);
    int bad = use_it(tag + 10);
    leftover[tag] = h_malloc(200 + (size_t)tag);
    return (void *)(intptr_t)(bad || !leftover[tag]);
}

/* With the heap profiler on (HAKMEM_PROF_SAMPLE=1): a profile taken while
 * the threads' leftover blocks live has a stack through thread_main. */
static int profile_names_thread_main(void *h)
{
    int (*dump)(const char *) = (int (*)(const char *))(uintptr_t)dlsym(h, "hak_prof_dump");
    char path[64];
    snprintf(path, sizeof path, "/tmp/hakmem-dlopen.%d.heap", (int)getpid());
    if (!dump || dump(path) != 0) {
        fprintf(stderr, "dlopen: hak_prof_dump failed\n");
        return 1;
    }
    FILE *f = fopen(path, "r");
    char line[8192];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        char *at = strchr(line, '@');
        for (char *t = at ? strtok(at + 1, " \n") : NULL; t && !found; t = strtok(NULL, " \n")) {
            uintptr_t a = (uintptr_t)strtoull(t, NULL, 16);
            found = a >= (uintptr_t)thread_main && a < (uintptr_t)thread_main + 512;
        }
    }
    if (f)
        fclose(f);
    unlink(path);
    if (!found)
        fprintf(stderr, "dlopen: no profiled stack passes through thread_main\n");
    return !found;
}

int main(int argc, char **argv)
{
#ifdef HAKMEM_SO_PATH
    const char *path = HAKMEM_SO_PATH;
#else
    const char *path = NULL;
#endif
    if (argc > 1) path = argv[1];
    if (!path) {
        fprintf(stderr, "usage: %s /path/to/libhakmem.so\n", argv[0]);
        return 2;
    }
    /* A thread that exists before the dlopen must get the library's static
     * TLS too: that is where a too-large initial-exec block fails. */
    pthread_t t[4];
    pthread_barrier_init(&loaded, NULL, 2);
    if (pthread_create(&t[0], NULL, thread_main, (void *)0) != 0) return 2;
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen(%s) failed: %s\n", path, dlerror());
        _exit(1);
    }
    h_malloc = (malloc_fn)(uintptr_t)dlsym(h, "hak_malloc");
    h_free = (free_fn)(uintptr_t)dlsym(h, "hak_free");
    h_usable = (usable_fn)(uintptr_t)dlsym(h, "hak_malloc_usable_size");
    if (!h_malloc || !h_free || !h_usable) {
        fprintf(stderr, "dlsym failed: %s\n", dlerror());
        _exit(1);
    }
    pthread_barrier_wait(&loaded);
    int bad = use_it(1);
    for (int i = 1; i < 4; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)i) != 0) return 2;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
    }
    if (getenv("HAKMEM_PROF_SAMPLE"))
        bad |= profile_names_thread_main(h);
    for (int i = 0; i < 4; i++) h_free(leftover[i]);
    printf("dlopen: %s\n", bad ? "FAILED" : "ok");
    return bad;
}
