/* Wire layout of the events sentinel's probes send to user space.
 *
 * Every event starts with struct event_header. Its layout is mirrored by sentinel/sensor/decoder.py; change
 * both together (tests/unit/test_decoder.py checks the sizes against the compiled offsets the loader reports).
 * All integers are little-endian host order; strings are raw bytes from the monitored process.
 */
#ifndef SENTINEL_EVENTS_H
#define SENTINEL_EVENTS_H

#define EVT_EXEC 1
#define EVT_OPEN 2
#define EVT_CONNECT 3
#define EVT_FORK 4
#define EVT_EXIT 5
#define EVT_CHDIR 6

/* event_header.flags */
#define EVF_ARGV_TRUNCATED (1 << 0)
#define EVF_PATH_TRUNCATED (1 << 1)
#define EVF_EXECVEAT (1 << 2)
#define EVF_OPENAT2 (1 << 3)
#define EVF_CREAT (1 << 4)
#define EVF_ARGV_FAULT (1 << 5)

#define COMM_LEN 16
#define PATH_LEN 4096         /* longest path captured (PATH_MAX) */
#define ARG_LEN 4096          /* longest single argument captured */
#define ARGS_LIMIT 8192       /* argument bytes captured per exec */
#define MAX_ARGS 64           /* arguments captured per exec */
#define ARGC_COUNT_MAX 1024   /* pointers walked to count argc once truncated */
#define EXEC_DATA_LEN 16384   /* filename + argument bytes: PATH_LEN + ARGS_LIMIT + ARG_LEN */
#define UNIX_PATH_LEN 108
#define DEDUP_PATH_LEN 256    /* paths shorter than this take part in open de-duplication */

struct event_header {
    u64 ts_ns;      /* CLOCK_BOOTTIME at syscall exit */
    u64 cgroup_id;
    u32 pid;        /* thread-group id */
    u32 tid;
    u32 uid;
    u32 gid;
    u16 type;
    u16 flags;
    u32 aux;        /* open: repeats suppressed since the previous event for the same key */
    char comm[COMM_LEN];
};

struct exec_event {
    struct event_header h;
    s64 ret;
    s32 dirfd;          /* execveat dirfd, AT_FDCWD for execve */
    u32 at_flags;       /* execveat flags */
    u32 argc_captured;
    u32 argc_total;     /* >= argc_captured; exact unless more than ARGC_COUNT_MAX */
    u32 filename_len;   /* bytes of data[] holding the filename, NUL included */
    u32 args_len;       /* bytes of data[] after the filename holding NUL-separated arguments */
    char data[EXEC_DATA_LEN];
};

/* The dedup key is a prefix of the event's tail so the path is read from user memory once. */
struct open_key {
    u32 tgid;
    u32 flags_class;    /* access mode | O_CREAT | O_TRUNC | O_DIRECTORY ... what changes the meaning */
    s32 dirfd;
    s32 result;         /* fd >= 0 collapses to 0; errors keep their errno */
    u64 gen;            /* process generation: reset on fork and exec */
    char path[DEDUP_PATH_LEN];
};

struct open_event {
    struct event_header h;
    s64 ret;
    u32 flags;
    u32 mode;
    s32 dirfd;          /* AT_FDCWD, a dirfd, or the fd of fchdir */
    u32 path_len;       /* bytes of path, NUL included */
    struct open_key key;        /* key.path is the start of the path */
    char path_rest[PATH_LEN - DEDUP_PATH_LEN];
};

struct connect_event {
    struct event_header h;
    s64 ret;
    s32 fd;
    u16 family;
    u16 port;           /* host order */
    u32 sock_type;      /* SOCK_STREAM / SOCK_DGRAM, 0 if the socket was created before the agent */
    u32 addrlen;
    u8 addr[16];        /* IPv4 in the first 4 bytes, or IPv6 */
    char unix_path[UNIX_PATH_LEN];
};

struct fork_event {
    struct event_header h;
    u32 child_pid;
    u32 parent_tid;
    u64 clone_flags;
};

#endif
