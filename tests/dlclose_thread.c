/* Checks that a thread that used a dlopen'ed libhakmem.so can exit after the library was dlclose'd (its key destructor must still be mapped). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

static void *(*hm)(size_t);
static void (*hf)(void *);
static pthread_barrier_t used, closed;

static void *worker(void *arg)
{
    (void)arg;
    hf(hm(100)); /* sets up this thread's cache and its exit destructor */
    pthread_barrier_wait(&used);
    pthread_barrier_wait(&closed);
    return NULL; /* the destructor runs now, after dlclose */
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: dlclose_thread /path/to/libhakmem.so\n");
        return 2;
    }
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    hm = (void *(*)(size_t))dlsym(h, "hak_malloc");
    hf = (void (*)(void *))dlsym(h, "hak_free");
    if (!hm || !hf)
        return 1;
    pthread_barrier_init(&used, NULL, 2);
    pthread_barrier_init(&closed, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&used);
    dlclose(h);
    pthread_barrier_wait(&closed);
    pthread_join(t, NULL);
    printf("dlclose: the thread exited cleanly\n");
    return 0;
}
