/* One memory bug per run, for guarded sampling's tests: `guard_kinds KIND SIZE` allocates SIZE bytes in alloc_site, commits KIND (an overflow, underflow, use after free, double free...), frees in free_site where the bug needs it, and prints "survived" if nothing stopped it (tests/guard_kinds.py runs each one). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_alloc_names.h"

volatile char sink;
static char src[300000];

__attribute__((noinline)) char *alloc_site(size_t n)
{
    char *p = T_MALLOC(n);
    __asm__ volatile("" : : "r"(p) : "memory");
    return p;
}

__attribute__((noinline)) void free_site(char *p)
{
    T_FREE(p);
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* Each bug in a function of its own: the report's stacks and the fault's
 * frame name them. */
__attribute__((noinline)) void overflow_write(char *p, size_t n, size_t by)
{
    for (size_t i = 0; i < by; i++)
        ((volatile char *)p)[n + i] = 'x';
}
__attribute__((noinline)) void overflow_read(char *p, size_t n) { sink = ((volatile char *)p)[n]; }
__attribute__((noinline)) void overflow_memcpy(char *p, size_t n, size_t by) { memcpy(p, src, n + by); }
__attribute__((noinline)) void underflow_write(char *p, size_t by)
{
    for (size_t i = 1; i <= by; i++)
        ((volatile char *)p)[-(ptrdiff_t)i] = 'x';
}
__attribute__((noinline)) void read_after_free(char *p) { sink = ((volatile char *)p)[0]; }
__attribute__((noinline)) void write_after_free(char *p) { ((volatile char *)p)[0] = 'x'; }

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: guard_kinds KIND SIZE\n");
        return 2;
    }
    const char *kind = argv[1];
    size_t n = strtoul(argv[2], NULL, 10);
    memset(src, 'y', sizeof src);
    char *p = alloc_site(n);
    if (!p)
        return 3;
    memset(p, 'a', n); /* the whole request is usable */
    if (!strcmp(kind, "ok")) {
        free_site(p);
    } else if (!strcmp(kind, "overflow-1")) {
        overflow_write(p, n, 1);
        free_site(p);
    } else if (!strcmp(kind, "overflow-read-1")) {
        overflow_read(p, n);
        free_site(p);
    } else if (!strcmp(kind, "overflow-32")) {
        overflow_write(p, n, 32);
        free_site(p);
    } else if (!strcmp(kind, "overflow-memcpy-1")) {
        overflow_memcpy(p, n, 1);
        free_site(p);
    } else if (!strcmp(kind, "overflow-memcpy-32")) {
        overflow_memcpy(p, n, 32);
        free_site(p);
    } else if (!strcmp(kind, "underflow-1")) {
        underflow_write(p, 1);
        free_site(p);
    } else if (!strcmp(kind, "underflow-32")) {
        underflow_write(p, 32);
        free_site(p);
    } else if (!strcmp(kind, "read-after-free")) {
        free_site(p);
        read_after_free(p);
    } else if (!strcmp(kind, "write-after-free")) {
        free_site(p);
        write_after_free(p);
    } else if (!strcmp(kind, "double-free")) {
        free_site(p);
        free_site(p);
    } else if (!strcmp(kind, "realloc-after-free")) {
        free_site(p);
        p = T_REALLOC(p, n + 10);
        sink = p != NULL;
    } else {
        fprintf(stderr, "unknown kind %s\n", kind);
        return 2;
    }
    printf("survived\n");
    return 0;
}
