// SPDX-License-Identifier: GPL-2.0-only
/* Wire layout of the events sentinel's probes send to user space.
 *
 * Every event starts with struct event_header. Its layout is mirrored by sentinel/sensor/decoder.py; change
 * both together (tests/integration/test_sensor.py checks the decoder against events the compiled probes send).
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
#define EVT_CONTAINER 7       /* never sent: the agent's own event when a container's metadata arrives */
/* Security-relevant syscalls (bpf_probes/sentinel_security.c): one wire type per call, all in struct
 * sys_event. Values mirror sentinel/events.py (EventType). */
#define EVT_TAMPER 15         /* a signal or ptrace aimed at the agent (from signal_generate / ptrace entry) */
#define EVT_SETUID 16
#define EVT_SETGID 17
#define EVT_SETREUID 18
#define EVT_SETREGID 19
#define EVT_SETRESUID 20
#define EVT_SETRESGID 21
#define EVT_SETFSUID 22
#define EVT_SETFSGID 23
#define EVT_CAPSET 24
#define EVT_PTRACE 25
#define EVT_PROCESS_VM_WRITEV 26
#define EVT_INIT_MODULE 27
#define EVT_FINIT_MODULE 28
#define EVT_DELETE_MODULE 29
#define EVT_BPF 30
#define EVT_MEMFD_CREATE 31
#define EVT_MOUNT 32
#define EVT_UMOUNT2 33
#define EVT_SETNS 34
#define EVT_UNSHARE 35
#define EVT_PIVOT_ROOT 36
#define EVT_CHROOT 37
#define EVT_MOVE_MOUNT 38
#define EVT_KILL 39
#define EVT_TKILL 40
#define EVT_TGKILL 41
#define EVT_PIDFD_SEND_SIGNAL 42
#define EVT_PIDFD_GETFD 43
/* File changes (sentinel_files.c) */
#define EVT_UNLINK 44
#define EVT_UNLINKAT 45
#define EVT_RMDIR 46
#define EVT_RENAME 47
#define EVT_RENAMEAT 48
#define EVT_RENAMEAT2 49
#define EVT_LINK 50
#define EVT_LINKAT 51
#define EVT_SYMLINK 52
#define EVT_SYMLINKAT 53
#define EVT_CHMOD 54
#define EVT_FCHMOD 55
#define EVT_FCHMODAT 56
#define EVT_FCHMODAT2 57
#define EVT_CHOWN 58
#define EVT_FCHOWN 59
#define EVT_FCHOWNAT 60
#define EVT_LCHOWN 61
#define EVT_MKDIR 62
#define EVT_MKDIRAT 63
#define EVT_TRUNCATE 64
#define EVT_FTRUNCATE 65
#define EVT_UTIMENSAT 66
/* The listening side and fd plumbing (sentinel_net.c) */
#define EVT_BIND 67
#define EVT_LISTEN 68
#define EVT_ACCEPT 69
#define EVT_ACCEPT4 70
#define EVT_DUP 71
#define EVT_DUP2 72
#define EVT_DUP3 73
#define EVT_SENDTO 74
#define EVT_SENDMSG 75
#define EVT_SENDMMSG 76

/* event_header.flags */
#define EVF_ARGV_TRUNCATED (1 << 0)
#define EVF_PATH_TRUNCATED (1 << 1)
#define EVF_EXECVEAT (1 << 2)
#define EVF_OPENAT2 (1 << 3)
#define EVF_CREAT (1 << 4)
#define EVF_ARGV_FAULT (1 << 5)
#define EVF_CREDS (1 << 6)       /* header.cred holds the task's credentials (kernel offsets known) */
#define EVF_LOGIN (1 << 7)       /* header.cred.loginuid/sessionid are valid (CONFIG_AUDIT) */
#define EVF_START (1 << 8)       /* header.start_ns is the kernel's start time of the process */
#define EVF_EXE_INFO (1 << 9)    /* exec: the exe_* fields describe the file the process now runs */
#define EVF_TTY (1 << 10)        /* exec: tty is the controlling terminal (0 = none) */
#define EVF_CHILD_START (1 << 11) /* fork: child_start_ns is the child's kernel start time */
#define EVF_NS_VIEW (1 << 12)    /* exec: ns is the process's namespace view; fork: child_ns the child's */
#define EVF_CREATED (1 << 13)    /* open: the open created the file (the kernel's FMODE_CREATED) */
#define EVF_CREATED_KNOWN (1 << 14) /* open: a successful O_CREAT open whose f_mode was read (EVF_CREATED says) */

#define COMM_LEN 16
#define PATH_LEN 4096         /* longest path captured (PATH_MAX) */
#define ARG_LEN 4096          /* longest single argument captured */
#define ARGS_LIMIT 8192       /* argument bytes captured per exec */
#define MAX_ARGS 64           /* arguments captured per exec */
#define ARGC_COUNT_MAX 1024   /* pointers walked to count argc once truncated */
#define EXEC_DATA_LEN 16384   /* filename + argument bytes: PATH_LEN + ARGS_LIMIT + ARG_LEN */
#define EXE_NAME_LEN 256      /* the executable's own file name (dentry name; memfd:NAME for a memfd) */
#define UNIX_PATH_LEN 108
#define DEDUP_PATH_LEN 256    /* paths shorter than this take part in open de-duplication */
#define SYS_STR_LEN 4096      /* each string argument of a security syscall (paths, names) */
#define SYS_STRS 3            /* string arguments per call at most (mount: source, target, type) */

/* Credentials tracepoints do not carry, read through offsets from the running kernel's BTF. */
struct creds {
    u32 euid;
    u32 suid;
    u32 fsuid;
    u32 egid;
    u32 sgid;
    u32 fsgid;
    u32 loginuid;       /* 4294967295: never logged in (AUDIT_UID_UNSET) */
    u32 sessionid;
    u64 cap_effective;
    u64 cap_permitted;
};

struct event_header {
    u64 ts_ns;      /* CLOCK_BOOTTIME at syscall exit */
    u64 cgroup_id;
    u64 start_ns;   /* CLOCK_BOOTTIME start of the process (its group leader), EVF_START */
    u32 pid;        /* thread-group id */
    u32 tid;
    u32 uid;        /* real ids */
    u32 gid;
    u16 type;
    u16 flags;
    u32 aux;        /* open: repeats suppressed since the previous event for the same key */
    char comm[COMM_LEN];
    struct creds cred;  /* EVF_CREDS / EVF_LOGIN */
};

/* A task as its own pid namespace sees it, and which pid and mount namespace it is in (inode numbers, as
 * /proc/PID/ns/ shows them). Read through BTF offsets on exec and fork only (EVF_NS_VIEW). */
struct ns_view {
    u32 vpid;           /* its thread group's id in its own (deepest) pid namespace */
    u32 vtid;           /* the thread's */
    u32 pid_ns;
    u32 mnt_ns;
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
    u32 tty;            /* controlling terminal, kernel dev_t (major << 20 | minor), EVF_TTY */
    u32 exe_nlink;      /* links of the executable file: 0 = deleted (or never linked: memfd) */
    u64 exe_ino;
    u32 exe_dev;        /* kernel dev_t of the executable's filesystem */
    u32 exe_name_len;   /* bytes of exe_name, NUL included */
    struct ns_view ns;  /* EVF_NS_VIEW */
    char exe_name[EXE_NAME_LEN];
    char data[EXEC_DATA_LEN];
};

/* The dedup key is a prefix of the event's tail so the path is read from user memory once. Two opens share
 * a key only if the same process image spelled the same path from the same directory (cwd or dirfd, by
 * kernel object) and reached the same file (mount, dentry and inode) with the same access and result. */
struct open_key {
    u32 tgid;
    u32 flags_class;    /* access mode | O_CREAT | O_TRUNC | O_APPEND | O_TMPFILE */
    s32 result;         /* fd >= 0 collapses to 0; errors keep their errno */
    u32 pad;
    u64 gen;            /* process generation: reset on fork and exec */
    u64 base_mnt;       /* relative paths: the vfsmount and dentry of the cwd or dirfd; 0 for absolute */
    u64 base_dentry;
    u64 file_mnt;       /* successful opens: where the file was found and which inode it is */
    u64 file_dentry;
    u64 file_inode;
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
    /* AF_INET/AF_INET6 connects that succeeded or are in progress, read from the kernel's socket: the local
     * end, encoded as a bind's extra[] (SYS_SOCK_KNOWN in local[2] when read; zeros otherwise). */
    u64 local[3];
};

struct fork_event {
    struct event_header h;
    u32 child_pid;
    u32 parent_tid;
    u64 clone_flags;
    u64 child_start_ns; /* EVF_CHILD_START */
    struct ns_view child_ns;  /* EVF_NS_VIEW: the child's, read from the child task */
};

/* A security-relevant syscall at exit: its raw arguments as passed, what the probe read behind pointers
 * (extra: capset's requested sets; bpf's attr head), and up to SYS_STRS strings, each in its own slot of
 * SYS_STR_LEN bytes; the sample ends after the last string used. The credentials in the header are the
 * ones the call left (the resulting ids and capability sets). */
struct sys_event {
    struct event_header h;
    s64 ret;
    u64 arg[6];
    /* capset: requested effective, permitted, inheritable; bpf: attr's first 8 bytes;
     * setns: [0] the fd's inode number (a namespace's inum), [1] a pidfd's pid | which of pid 1's namespaces
     * it is << 32 (a bit per kind); pidfd_send_signal, pidfd_getfd: [1] the pidfd's pid;
     * mounts, setns, unshare: [2] the caller's user namespace after the call, inum | level << 32 | 1 << 63;
     * fchmod, fchown, ftruncate: [0] the file's inode number, [1] its device (kernel encoding);
     * utimensat: [0] atime seconds, [1] mtime seconds, [2] their nanoseconds (low, high half);
     * bind, listen (the local end), accept (the peer), dup* (the old fd's peer, if a socket): [0..1] the
     * address (IPv4: [0] low half, and for accept/dup the local IPv4 in [0]'s high half; IPv6: 16 bytes),
     * [2] ports, family, type and the socket's state (SYS_SOCK_KNOWN, SYS_SOCK_STATE_KNOWN);
     * sendto, sendmsg, sendmmsg: the destination as [0..2], with the local port, type and state when the socket is
     * read, and a bound IPv4 socket's local address in [0]'s high half (as accept's). */
    u64 extra[3];
    u16 str_len[SYS_STRS];  /* bytes of each string, NUL included; 0 = none */
    u16 nstr;
    char str[SYS_STRS][SYS_STR_LEN];
};

/* Something aimed at the agent itself, reported from the sender's context (and kept in a pinned map that
 * outlives the agent, so a SIGKILL is reported by the next start). */
struct tamper_event {
    struct event_header h;
    u32 what;           /* TAMPER_* */
    s32 sig;            /* the signal, the ptrace request, the bpf command or the fd taken */
    u32 target_tid;     /* the agent's thread (TAMPER_BPF: the id of its program, map or link) */
    u32 pad;
};

#define TAMPER_SIGNAL 1
#define TAMPER_PTRACE 2
#define TAMPER_VM_ACCESS 3
#define TAMPER_BPF 4        /* another process opened one of the agent's BPF programs, maps or links by id */
#define TAMPER_FD 5         /* pidfd_getfd took one of the agent's file descriptors */
#define SYS_USERNS_KNOWN (1ULL << 63)
/* bind, listen, accept, dup, datagrams: extra[2] = port | local port << 16 | family << 32 | socket type << 48
 * | sk state << 56 (6 bits, with SYS_SOCK_STATE_KNOWN: read from the kernel's socket) | KNOWN */
#define SYS_SOCK_KNOWN (1ULL << 63)
#define SYS_SOCK_STATE_KNOWN (1ULL << 62)
#define SYS_SOCK_STATE_SHIFT 56
#define SYS_SOCK_STATE_MASK (0x3FULL << SYS_SOCK_STATE_SHIFT)

#endif
