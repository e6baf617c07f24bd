/* A program that closes its stderr and opens a file that takes fd 2 gets that file back untouched at exit: the heap profile is written but its stderr line is not, nor HAKMEM_STATS's table (run as `exit_stderr`, it runs itself as the child under those settings). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_alloc_names.h"

#define FAIL(...) do { fprintf(stdout, "FAIL: " __VA_ARGS__); fputc('\n', stdout); exit(1); } while (0)

static void *leak[16];

static int child(const char *data_path)
{
    for (int i = 0; i < 16; i++)
        leak[i] = T_MALLOC(1000 + (size_t)i);
    close(2);
    int fd = open(data_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd != 2)
        return 3;
    if (write(fd, "data\n", 5) != 5)
        return 4;
    return 0; /* exit: destructors run with fd 2 being the data file */
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "child"))
        return child(argv[2]);
    char data[64], prefix[64], heap[96];
    snprintf(data, sizeof data, "/tmp/hakmem-exit-stderr.%d.data", (int)getpid());
    snprintf(prefix, sizeof prefix, "/tmp/hakmem-exit-stderr.%d", (int)getpid());
    char env_prof[128];
    snprintf(env_prof, sizeof env_prof, "HAKMEM_PROF=%s", prefix);
    char *envp[] = {env_prof, "HAKMEM_PROF_SAMPLE=1", "HAKMEM_STATS=1", NULL};
    pid_t pid = fork();
    if (pid == 0) {
        char *args[] = {argv[0], "child", data, NULL};
        execve("/proc/self/exe", args, envp);
        _exit(127);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        FAIL("fork/wait");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("the child ended with status %#x", status);
    char buf[4096] = {0};
    int fd = open(data, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    unlink(data);
    if (n != 5 || strcmp(buf, "data\n"))
        FAIL("the file that took fd 2 holds %zd bytes, not just its own 5: \"%.200s\"", n, buf);
    snprintf(heap, sizeof heap, "%s.%d.heap", prefix, (int)pid);
    fd = open(heap, O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (fd >= 0)
        close(fd);
    unlink(heap);
    if (n <= 0 || strncmp(buf, "heap profile: ", 14))
        FAIL("no heap profile at %s", heap);
    printf("the data file kept its 5 bytes; the heap profile was written (%s)\n", heap);
    return 0;
}
