/* HAKMEM_CACHE_TRACE=1 names each change of a thread's caps with its rule: a burst grows the 16 B class's cap and says so, a free/malloc pair loop changes nothing and prints nothing, reused medium blocks deepen their class. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { N = 1600 };
static void *blk[N];

static int child(const char *what)
{
    if (!strcmp(what, "burst")) {
        /* Bursts bigger than the cap (128 blocks of 16 B): the list runs
         * from empty to full between a refill and a flush. */
        for (int round = 0; round < 10; round++) {
            for (int i = 0; i < N; i++)
                if (!(blk[i] = T_MALLOC(16)))
                    return 3;
            for (int i = 0; i < N; i++)
                T_FREE(blk[i]);
        }
    } else if (!strcmp(what, "pair")) {
        for (int i = 0; i < 1000000; i++) {
            void *p = T_MALLOC(16);
            if (!p)
                return 3;
            *(volatile char *)p = 1;
            T_FREE(p);
        }
    } else if (!strcmp(what, "medium")) {
        /* Six 100 KiB blocks reused at a time: two fit the class at first. */
        for (int round = 0; round < 20; round++) {
            for (int i = 0; i < 6; i++)
                if (!(blk[i] = T_MALLOC(100 << 10)))
                    return 3;
            for (int i = 0; i < 6; i++)
                T_FREE(blk[i]);
        }
    } else {
        return 2;
    }
    return 0;
}

/* Runs this program as `what` with the trace on; returns its stderr. */
static char *run(const char *self, const char *what)
{
    static char buf[1 << 16];
    int fd[2];
    if (pipe(fd) != 0)
        FAIL("pipe");
    pid_t pid = fork();
    if (pid < 0)
        FAIL("fork");
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        setenv("HAKMEM_CACHE_TRACE", "1", 1);
        execl(self, self, what, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(fd[0]);
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("%s: the child failed (status %#x): %s", what, st, buf);
    return buf;
}

static unsigned count(const char *text, const char *needle)
{
    unsigned k = 0;
    for (const char *p = text; (p = strstr(p, needle)); p++)
        k++;
    return k;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return child(argv[1]);
    char *out = run(argv[0], "burst");
    fputs(out, stdout);
    if (!strstr(out, "hakmem: cache: tid ") || !strstr(out, "class 1 (16 B) cap 128 -> 256") ||
        !strstr(out, "grown (a burst: the list ran from empty to full within its cap)"))
        FAIL("burst: no line says the 16 B class grew from 128 to 256 by a burst");
    unsigned grew = count(out, "grown (a burst");
    out = run(argv[0], "pair");
    if (count(out, "hakmem: cache:"))
        FAIL("pair: a free/malloc pair loop changed caps:\n%s", out);
#if HK_POOL_TLS
    out = run(argv[0], "medium");
    fputs(out, stdout);
    if (!strstr(out, "medium class ") || !strstr(out, " B) depth 2 -> 3: a turn"))
        FAIL("medium: no line says the 100 KiB class deepened from 2 to 3 by a turn");
#endif
    printf("cache-trace: %u growth lines for the bursts, none for the pair loop\n", grew);
    return 0;
}
