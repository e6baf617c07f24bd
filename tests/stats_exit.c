/* Runs itself with HAKMEM_STATS=1 (and with malformed and out-of-range values) HAKMEM_LEARNING=1, =yes and =0, and HAKMEM_THREAD_MID_BYTES, and checks what reaches stderr. */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hakmem.h"

/* Runs argv[0] child with var=value; returns its stderr. */
static char *run_env(const char *self, const char *var, const char *value, int *status)
{
    int fd[2];
    if (pipe(fd) != 0)
        return NULL;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        setenv(var, value, 1);
        execl(self, self, "child", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    static char buf[1 << 16];
    size_t n = 0;
    for (ssize_t r; n < sizeof buf - 1 && (r = read(fd[0], buf + n, sizeof buf - 1 - n)) > 0;)
        n += (size_t)r;
    buf[n] = 0;
    close(fd[0]);
    waitpid(pid, status, 0);
    return buf;
}

static char *run_child(const char *self, const char *value, int *status)
{
    return run_env(self, "HAKMEM_STATS", value, status);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "child")) {
        /* 1234 blocks of 5000 bytes (class 5120), 1000 of them freed. */
        static void *p[1234];
        for (int i = 0; i < 1234; i++)
            p[i] = hak_malloc(5000);
        for (int i = 0; i < 1000; i++)
            hak_free(p[i]);
        return 0;
    }
    int status, failed = 0;
    char *err = run_child(argv[0], "1", &status);
    if (!err || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "stats_exit: the child failed\n");
        return 1;
    }
    unsigned long long allocs = 0, frees = 0, live = 0;
    char *row = strstr(err, " 5120 ");
    if (!row || sscanf(row, " 5120 %llu %llu %*u %*u %llu", &allocs, &frees, &live) != 3) {
        fprintf(stderr, "stats_exit: no row for the 5120-byte class in:\n%s", err);
        failed = 1;
    } else if (allocs != 1234 || frees != 1000 || live != 234) {
        fprintf(stderr, "stats_exit: 5120 B row says %llu allocs, %llu frees, %llu live; want 1234, 1000, 234\n",
                allocs, frees, live);
        failed = 1;
    }
    if (!strstr(err, "returned to the OS")) {
        fprintf(stderr, "stats_exit: no totals line in:\n%s", err);
        failed = 1;
    }
    err = run_child(argv[0], "yes", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !strstr(err, "hakmem: ignoring malformed HAKMEM_STATS") ||
        strstr(err, "allocs")) {
        fprintf(stderr, "stats_exit: a malformed HAKMEM_STATS must be reported and ignored; got:\n%s", err);
        failed = 1;
    }
    /* Out of range, and so long that it would wrap a 64-bit parse. */
    static const char *const big[] = {"2", "99999999999999999999999"};
    for (int i = 0; i < 2; i++) {
        err = run_child(argv[0], big[i], &status);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
            !strstr(err, "hakmem: ignoring out-of-range HAKMEM_STATS") || strstr(err, "allocs")) {
            fprintf(stderr, "stats_exit: HAKMEM_STATS=%s must be reported as out of range and ignored; got:\n%s",
                    big[i], err);
            failed = 1;
        }
    }
    err = run_child(argv[0], "0", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || err[0]) {
        fprintf(stderr, "stats_exit: HAKMEM_STATS=0 must print nothing; got:\n%s", err);
        failed = 1;
    }
    /* A fixed build says it cannot learn; a learning build takes the setting. */
    bool fixed = strstr(hak_version(), "policy=fixed") != NULL;
    err = run_env(argv[0], "HAKMEM_LEARNING", "1", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        fixed != (strstr(err, "hakmem: ignoring unused HAKMEM_LEARNING (this build has no learning policy") != NULL)) {
        fprintf(stderr, "stats_exit: HAKMEM_LEARNING=1 in a %s build; got:\n%s", fixed ? "fixed" : "learning", err);
        failed = 1;
    }
    /* A value the build would not parse anyway gets one line, not two. */
    err = run_env(argv[0], "HAKMEM_LEARNING", "yes", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        (fixed ? !strstr(err, "hakmem: ignoring unused HAKMEM_LEARNING") || strstr(err, "malformed")
               : !strstr(err, "hakmem: ignoring malformed HAKMEM_LEARNING") || strstr(err, "unused"))) {
        fprintf(stderr, "stats_exit: HAKMEM_LEARNING=yes in a %s build; got:\n%s", fixed ? "fixed" : "learning", err);
        failed = 1;
    }
    /* HAKMEM_THREAD_MID_BYTES has no use without mid-size thread caches. */
    bool pool = strstr(hak_version(), "pool_tls") != NULL;
    err = run_env(argv[0], "HAKMEM_THREAD_MID_BYTES", "1000", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        (pool ? strstr(err, "hakmem:") != NULL
              : !strstr(err, "hakmem: ignoring unused HAKMEM_THREAD_MID_BYTES (this build caches no"))) {
        fprintf(stderr, "stats_exit: HAKMEM_THREAD_MID_BYTES=1000 in a %s build; got:\n%s",
                pool ? "pool_tls" : "shared-pool", err);
        failed = 1;
    }
    err = run_env(argv[0], "HAKMEM_THREAD_MID_BYTES", "0", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strstr(err, "hakmem:")) {
        fprintf(stderr, "stats_exit: HAKMEM_THREAD_MID_BYTES=0 must print nothing; got:\n%s", err);
        failed = 1;
    }
    /* "0" asks a fixed build for what it does: no line in either build. */
    err = run_env(argv[0], "HAKMEM_LEARNING", "0", &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || strstr(err, "hakmem:")) {
        fprintf(stderr, "stats_exit: HAKMEM_LEARNING=0 in a %s build must print nothing; got:\n%s",
                fixed ? "fixed" : "learning", err);
        failed = 1;
    }
    if (!failed)
        printf("stats at exit: 1234 allocs, 1000 frees, 234 live, as made\n");
    return failed;
}
