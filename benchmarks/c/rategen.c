/* Generate events at a fixed rate for a while.
 *   rategen open RATE SECONDS   -> opens of distinct missing paths (each one is news to the agent)
 *   rategen exec RATE SECONDS   -> fork + exec /bin/true
 * Prints the number of operations done. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: rategen open|exec RATE SECONDS\n");
        return 2;
    }
    int exec_mode = strcmp(argv[1], "exec") == 0;
    double rate = atof(argv[2]), secs = atof(argv[3]);
    double start = now();
    long done = 0;
    int outstanding = 0;
    char path[64];
    while (1) {
        double t = now() - start;
        if (t >= secs)
            break;
        long due = (long)(t * rate);
        if (done >= due) {
            usleep(200);
            continue;
        }
        for (; done < due; done++) {
            if (exec_mode) {
                /* Children are reaped asynchronously so the rate does not depend on one exec's latency. */
                while (outstanding >= 64 && waitpid(-1, NULL, 0) > 0)
                    outstanding--;
                pid_t pid = vfork();
                if (pid == 0) {
                    char *args[] = {"/bin/true", NULL};
                    execv(args[0], args);
                    _exit(127);
                }
                if (pid > 0)
                    outstanding++;
                while (outstanding > 0 && waitpid(-1, NULL, WNOHANG) > 0)
                    outstanding--;
            } else {
                snprintf(path, sizeof(path), "/nonexistent-sentinel-bench/%ld", done);
                int fd = open(path, O_RDONLY);
                if (fd >= 0)
                    close(fd);
            }
        }
    }
    while (outstanding > 0 && waitpid(-1, NULL, 0) > 0)
        outstanding--;
    printf("%ld\n", done);
    return 0;
}
