/* One cheap call of a security-syscall family in a tight loop; prints nanoseconds per call.
 *   seccalls FAMILY ITERATIONS
 * FAMILY: privilege (setresuid(-1,-1,-1), a no-op), injection (process_vm_writev into itself), kernel
 * (bpf with an unknown command: EINVAL), fileless (memfd_create + close), mount (umount2 of a missing
 * path: ENOENT), namespace (setns on a bad fd: EBADF), signal (kill(parent, 0): an existence check),
 * file (unlink of a missing path: ENOENT),
 * none (getppid: the loop alone, never traced). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: seccalls FAMILY ITERATIONS\n");
        return 2;
    }
    const char *family = argv[1];
    long n = atol(argv[2]);
    pid_t me = getpid(), parent = getppid();
    char src[8] = "abcdefg", dst[8];
    struct iovec local = {dst, sizeof(dst)}, remote = {src, sizeof(src)};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        if (!strcmp(family, "privilege"))
            syscall(SYS_setresuid, -1, -1, -1);
        else if (!strcmp(family, "injection"))
            syscall(SYS_process_vm_writev, me, &local, 1, &remote, 1, 0);
        else if (!strcmp(family, "kernel"))
            syscall(SYS_bpf, 9999, NULL, 0);
        else if (!strcmp(family, "fileless"))
            close((int)syscall(SYS_memfd_create, "bench", 0));
        else if (!strcmp(family, "mount"))
            syscall(SYS_umount2, "/nonexistent-sentinel-bench", 0);
        else if (!strcmp(family, "namespace"))
            syscall(SYS_setns, -1, 0);
        else if (!strcmp(family, "signal"))
            syscall(SYS_kill, parent, 0);
        else if (!strcmp(family, "file"))
            syscall(SYS_unlink, "/nonexistent-sentinel-bench");
        else
            syscall(SYS_getppid);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
    printf("%.1f\n", ns / n);
    return 0;
}
