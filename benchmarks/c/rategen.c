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
                pid_t pid = fork();
                if (pid == 0) {
                    char *args[] = {"/bin/true", NULL};
                    execv(args[0], args);
                    _exit(127);
                }
                waitpid(pid, NULL, 0);
            } else {
                snprintf(path, sizeof(path), "/nonexistent-sentinel-bench/%ld", done);
                int fd = open(path, O_RDONLY);
                if (fd >= 0)
                    close(fd);
            }
        }
    }
    printf("%ld\n", done);
    return 0;
}
