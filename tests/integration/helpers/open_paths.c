/* Opens each argument read-only, in order, and closes it: the test controls which open comes first after
 * exec (built static, nothing opens before main). */
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
        if (fd >= 0)
            close(fd);
    }
    return 0;
}
