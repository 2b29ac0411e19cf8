/* Exec a program with an argv that shells and Python cannot produce.
 *   exec_argv zero PATH          -> execve(PATH, {NULL}, envp)
 *   exec_argv big N SIZE PATH    -> execve(PATH, {N arguments of SIZE bytes each}, envp)
 *   exec_argv at DIR NAME ARG... -> execveat(open(DIR), NAME, {NAME, ARG...}, envp, 0)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "zero") == 0) {
        char *none[] = {NULL};
        execve(argv[2], none, environ);
        perror("execve");
        return 127;
    }
    if (argc >= 5 && strcmp(argv[1], "big") == 0) {
        int n = atoi(argv[2]);
        size_t size = (size_t)atol(argv[3]);
        char **args = calloc((size_t)n + 1, sizeof(char *));
        for (int i = 0; i < n; i++) {
            args[i] = malloc(size + 1);
            memset(args[i], 'A' + (i % 26), size);
            args[i][size] = 0;
        }
        execve(argv[4], args, environ);
        perror("execve");
        return 127;
    }
    if (argc >= 4 && strcmp(argv[1], "at") == 0) {
        int dfd = open(argv[2], O_RDONLY | O_DIRECTORY);
        if (dfd < 0) {
            perror("open");
            return 126;
        }
        syscall(SYS_execveat, dfd, argv[3], &argv[3], environ, 0);
        perror("execveat");
        return 127;
    }
    fprintf(stderr, "usage: exec_argv zero PATH | big N SIZE PATH | at DIR NAME [ARG...]\n");
    return 2;
}
