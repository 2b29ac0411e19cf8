// SPDX-License-Identifier: GPL-2.0-only
/* sentinel's kernel probes: syscall and sched tracepoints only, no kernel struct layouts.
 *
 * Arguments are stashed per thread at sys_enter_* and one event is sent at sys_exit_* with the result, so
 * failed operations are events too. exec reads argv at entry (the old memory is gone after a successful
 * exec); open/connect/chdir read their user buffers at exit (the same process, still mapped), which keeps the
 * stash tiny on the hottest path. Each event family has its own perf buffer so losses are counted per type.
 *
 * Per-thread argument stashes live in BPF task storage when the kernel allows it (USE_TASK_STORAGE: a
 * pointer chase instead of three hash operations per syscall, ~0.3 us less per open), else in hash maps.
 *
 * Kernel structs are read only through offsets taken from the running kernel's BTF at load time
 * (HAVE_KOFFSETS and the K_* macros, from sentinel/sensor/koffsets.py), never from the headers bcc compiles
 * against: on hosts whose headers do not match the kernel those layouts are wrong. Without them the probes
 * send no credentials, start times or executable identity (flags say so) and do not de-duplicate opens.
 * With the pid view offsets (HAVE_PIDVIEW_OFFSETS, with HAVE_NS_OFFSETS) exec and fork events also say how the
 * process sees itself: its pid in its own pid namespace, and its pid and mount namespaces (EVF_NS_VIEW).
 *
 * Compile-time parameters (set by sentinel/sensor/loader.py): SELF_TGID, OPEN_DEDUP_NS (0 disables),
 * LOADER_FILTER (1: the dynamic loader's library opens after exec are counted, not sent), STASH_ENTRIES,
 * DEDUP_ENTRIES, USE_TASK_STORAGE, HAVE_KOFFSETS + K_*, HAVE_TP_* for optional tracepoints.
 */
#include <uapi/linux/ptrace.h>
#include "sentinel_events.h"

#ifndef SELF_TGID
#define SELF_TGID 0
#endif
#ifndef OPEN_DEDUP_NS
#define OPEN_DEDUP_NS 0
#endif
#ifndef STASH_ENTRIES
#define STASH_ENTRIES 10240
#endif
#ifndef DEDUP_ENTRIES
#define DEDUP_ENTRIES 16384
#endif
#ifndef LOADER_FILTER
#define LOADER_FILTER 0
#endif
#ifndef HAVE_KOFFSETS
/* The de-duplication key must name the file, not its spelling: without kernel offsets it cannot. Nor can
 * the loader filter check that a library path reached a file of that name. */
#undef OPEN_DEDUP_NS
#define OPEN_DEDUP_NS 0
#undef LOADER_FILTER
#define LOADER_FILTER 0
#endif

#define S_AT_FDCWD -100
#define S_O_ACCMODE 00000003
#define S_O_WRONLY 00000001
#define S_O_CREAT 00000100
#define S_O_TRUNC 00001000
#define S_O_APPEND 00002000
#define S_O_DIRECTORY 00200000
#define S_O_PATH 010000000
#define S_O_TMPFILE 020000000
/* include/linux/fs.h: f_mode's "file was created" bit, 0x100000 (1 << 20) since 4.19 and still in 6.18. */
#define S_FMODE_CREATED 0x100000
#define S_CLONE_THREAD 0x00010000
#define S_AF_UNIX 1
#define S_AF_INET 2
#define S_AF_INET6 10
#define S_EINPROGRESS 115
#define S_ENOENT 2

/* Counters user space reads (and exposes): index = STAT_* */
#define STAT_SUBMIT_FAIL_EXEC 0
#define STAT_SUBMIT_FAIL_OPEN 1
#define STAT_SUBMIT_FAIL_CONNECT 2
#define STAT_SUBMIT_FAIL_PROC 3
#define STAT_OPEN_SUPPRESSED 4
#define STAT_EXEC_STASH_MISS 5
#define STAT_STASH_FULL 6
#define STAT_ARGV_TRUNCATED 7
#define STAT_SUBMIT_FAIL_SYS 8
#define STAT_LOADER_OPENS_FILTERED 9
#define STAT_MAX 10

/* Stop clang from merging a bounds check into arithmetic the verifier cannot follow. */
#define barrier_var(v) asm volatile("" : "+r"(v))

struct open_args {
    u64 path_ptr;
    s32 dirfd;
    u32 flags;
    u32 mode;
    u16 evflags;
    u16 type;
};

struct connect_args {
    u64 addr_ptr;
    s32 fd;
    u32 addrlen;
    u32 pending;
    u32 pad;
};

/* Everything kept per thread between a syscall's entry and exit, plus the image generation. */
struct task_state {
    struct open_args open;      /* open.type == 0: nothing pending */
    struct connect_args conn;
    u64 gen;                    /* set at exec (and lazily): opens after an exec are news again */
    u32 loader;                 /* 1 from exec until the first open not the loader's (loader_verdict) */
    u32 pad;
    /* The thread's last de-duplicated open: a tight loop on one file is suppressed here, without hashing
     * the key into open_dedup. last_suppressed is added to the next event's repeat count for that key. */
    u64 last_ns;
    u64 last_suppressed;
    struct open_key last_key;
};

struct sock_key {
    u32 tgid;
    s32 fd;
};

struct dedup_val {
    u64 last_ns;
    u32 suppressed;
    u32 pad;
};

BPF_PERF_OUTPUT(events_exec);
BPF_PERF_OUTPUT(events_open);
BPF_PERF_OUTPUT(events_connect);
BPF_PERF_OUTPUT(events_proc);

BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);
BPF_PERCPU_ARRAY(exec_scratch, struct exec_event, 1);
BPF_PERCPU_ARRAY(open_scratch, struct open_event, 1);

/* Stashes keyed by thread id are LRU maps: an entry whose exit never came (a thread that entered before
 * its exit probe was attached while the agent loaded, or died inside the call) is evicted by newer ones
 * instead of filling the map for good. A plain hash filled with 512 such execs on a busy host's start and
 * left the agent blind to every exec after. Entries are also dropped when their thread exits. */
BPF_TABLE("lru_hash", u32, struct exec_event, exec_stash, 512);
#ifdef USE_TASK_STORAGE
BPF_TASK_STORAGE(task_state, struct task_state);
#else
BPF_TABLE("lru_hash", u32, struct open_args, open_stash, STASH_ENTRIES);
BPF_TABLE("lru_hash", u32, struct connect_args, connect_stash, STASH_ENTRIES);
BPF_TABLE("lru_hash", u32, u64, proc_gen, 65536);
#endif
BPF_TABLE("lru_hash", u32, u64, clone_stash, STASH_ENTRIES);
#if !(defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(HAVE_NET_OFFSETS))
/* Socket types by (tgid, fd), only where they cannot be read from the kernel's socket at connect. */
BPF_TABLE("lru_hash", u32, u32, socket_stash, STASH_ENTRIES);
BPF_TABLE("lru_hash", struct sock_key, u32, sock_types, 65536);
#endif
BPF_TABLE("lru_hash", struct open_key, struct dedup_val, open_dedup, DEDUP_ENTRIES);

static __always_inline void count(u32 idx) {
    u64 *v = stats.lookup(&idx);
    if (v)
        (*v)++;  /* per-CPU slot: no atomic needed */
}

static __always_inline int keys_equal(const struct open_key *a, const struct open_key *b) {
    const u64 *x = (const u64 *)a;
    const u64 *y = (const u64 *)b;
#pragma unroll
    for (int i = 0; i < sizeof(struct open_key) / 8; i++) {
        if (x[i] != y[i])
            return 0;
    }
    return 1;
}

/* ---------------------------------------------------------------- kernel objects (BTF offsets) */

#ifdef HAVE_KOFFSETS
#define KADDR(base, off) ((const void *)((u64)(base) + (u64)(off)))

/* The u64 (or pointer) at base + off through bpf_probe_read_kernel; 0 when base is 0 or the read faults. */
static __always_inline u64 kread64(u64 base, u64 off) {
    u64 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), KADDR(base, off));
    return v;
}

static __always_inline u32 kread32(u64 base, u64 off) {
    u32 v = 0;
    if (base)
        bpf_probe_read_kernel(&v, sizeof(v), KADDR(base, off));
    return v;
}

#ifdef USE_TASK_STORAGE
/* With bpf_get_current_task_btf (5.11+, as task storage) the task pointer is typed: the verifier checks every
 * load from it against the running kernel's BTF and pointers loaded from it stay typed, so a field is a plain
 * load (a fault reads 0) instead of a helper call. Pointers whose target is not a struct (an fd array) are
 * read with bpf_probe_read_kernel. */
#define BTF_LOADS
#define CURRENT_TASK() ((u64)bpf_get_current_task_btf())
#define KLOAD64(base, off) (*(const u64 *)((const char *)(base) + (off)))
#define KLOAD32(base, off) (*(const u32 *)((const char *)(base) + (off)))
#else
#define CURRENT_TASK() ((u64)bpf_get_current_task())
#define KLOAD64(base, off) kread64((u64)(base), (off))
#define KLOAD32(base, off) kread32((u64)(base), (off))
#endif

/* Credentials (from real_cred, as /proc/PID/status shows them), login identity and process start time. */
static __always_inline void read_task_identity(struct event_header *h) {
    u64 task = CURRENT_TASK();
    u64 cred = KLOAD64(task, K_TASK_REAL_CRED);
    if (cred) {
        h->cred.euid = KLOAD32(cred, K_CRED_EUID);
        h->cred.suid = KLOAD32(cred, K_CRED_SUID);
        h->cred.fsuid = KLOAD32(cred, K_CRED_FSUID);
        h->cred.egid = KLOAD32(cred, K_CRED_EGID);
        h->cred.sgid = KLOAD32(cred, K_CRED_SGID);
        h->cred.fsgid = KLOAD32(cred, K_CRED_FSGID);
        /* kernel_cap_t is a u64 (6.3+) or two u32 (before): read halves, valid either way. */
        h->cred.cap_effective =
            KLOAD32(cred, K_CRED_CAP_EFFECTIVE) | ((u64)KLOAD32(cred, K_CRED_CAP_EFFECTIVE + 4) << 32);
        h->cred.cap_permitted =
            KLOAD32(cred, K_CRED_CAP_PERMITTED) | ((u64)KLOAD32(cred, K_CRED_CAP_PERMITTED + 4) << 32);
        h->flags |= EVF_CREDS;
    }
#ifdef K_TASK_LOGINUID
    h->cred.loginuid = KLOAD32(task, K_TASK_LOGINUID);
    h->cred.sessionid = KLOAD32(task, K_TASK_SESSIONID);
    h->flags |= EVF_LOGIN;
#endif
    u64 leader = KLOAD64(task, K_TASK_GROUP_LEADER);
    if (leader) {
        u64 start = KLOAD64(leader, K_TASK_START_BOOTTIME);
        if (start) {
            h->start_ns = start;
            h->flags |= EVF_START;
        }
    }
}

/* One fd_array slot as its own load instruction (an immediate offset the compiler cannot merge). */
#define FD_SLOT(n)                                                                                            \
    case n:                                                                                                   \
        asm volatile("%0 = *(u64 *)(%1 + %2)" : "=r"(f) : "r"(files), "i"(K_FILES_FD_ARRAY + 8 * (n)));      \
        break;
#define FD_SLOTS8(n) FD_SLOT(n) FD_SLOT(n + 1) FD_SLOT(n + 2) FD_SLOT(n + 3) FD_SLOT(n + 4) FD_SLOT(n + 5)  \
    FD_SLOT(n + 6) FD_SLOT(n + 7)

/* Where the file open as fd in the current task lives: its mount, dentry and (if asked) inode and f_mode. */
static __always_inline int fd_location(u64 task, s64 fd, u64 *mnt, u64 *dentry, u64 *inode,
                                       u32 *fmode) {
    u64 files = KLOAD64(task, K_TASK_FILES);
    if (!files)
        return -1;
    u64 fdt = KLOAD64(files, K_FILES_FDT);
    if (!fdt)
        return -1;
    u32 max = KLOAD32(fdt, K_FDTABLE_MAX_FDS);
    if (fd < 0 || fd >= max)
        return -1;
    u64 arr = KLOAD64(fdt, K_FDTABLE_FD);  /* struct file **: not a typed pointer */
#if defined(BTF_LOADS) && K_FD_ARRAY_LEN == 64
    if (arr == files + K_FILES_FD_ARRAY && fd < 64) {
        /* A table never resized is files->fd_array, inside files_struct: one load at a constant offset
         * from the typed files pointer gives a typed struct file pointer, so its fields are plain loads too
         * (no helper call on the hot path). The verifier takes only constant offsets there, so each slot
         * is its own load instruction, chosen by a switch. */
        u64 f = 0;
        switch (fd) {
            FD_SLOTS8(0) FD_SLOTS8(8) FD_SLOTS8(16) FD_SLOTS8(24)
            FD_SLOTS8(32) FD_SLOTS8(40) FD_SLOTS8(48) FD_SLOTS8(56)
        }
        if (!f)
            return -1;
        *mnt = KLOAD64(f, K_FILE_F_PATH + K_PATH_MNT);
        *dentry = KLOAD64(f, K_FILE_F_PATH + K_PATH_DENTRY);
        if (inode)
            *inode = KLOAD64(f, K_FILE_F_INODE);
        if (fmode)
            *fmode = KLOAD32(f, K_FILE_F_MODE);
        return 0;
    }
#endif
    u64 f = kread64(arr, (u64)fd * 8);
    if (!f)
        return -1;
    /* f_path and f_inode in one read (the loader checks they sit within K_FILE_SPAN_WORDS words). */
    u64 span[K_FILE_SPAN_WORDS];
    if (bpf_probe_read_kernel(span, sizeof(span), KADDR(f, K_FILE_SPAN_OFF)) < 0)
        return -1;
    *mnt = span[(K_FILE_F_PATH + K_PATH_MNT - K_FILE_SPAN_OFF) / 8];
    *dentry = span[(K_FILE_F_PATH + K_PATH_DENTRY - K_FILE_SPAN_OFF) / 8];
    if (inode)
        *inode = span[(K_FILE_F_INODE - K_FILE_SPAN_OFF) / 8];
    if (fmode && bpf_probe_read_kernel(fmode, sizeof(*fmode), KADDR(f, K_FILE_F_MODE)) < 0)
        return -1;
    return 0;
}

/* Identity of what an open reached: its base directory for relative paths (the cwd, or the dirfd's file)
 * and, when it succeeded, the file's mount, dentry and inode (and, if asked, its f_mode). Kernel objects, not
 * names: a different directory or file cannot share them while both are alive, whatever the path spelled. */
static __always_inline int open_identity(struct open_key *k, s32 dirfd, long ret, u32 *fmode) {
    u64 task = CURRENT_TASK();
    if (k->path[0] != '/') {
        if (dirfd == S_AT_FDCWD) {
            u64 fs = KLOAD64(task, K_TASK_FS);
            if (!fs)
                return -1;
            k->base_mnt = KLOAD64(fs, K_FS_PWD + K_PATH_MNT);
            k->base_dentry = KLOAD64(fs, K_FS_PWD + K_PATH_DENTRY);
        } else if (fd_location(task, dirfd, &k->base_mnt, &k->base_dentry, NULL, NULL) < 0) {
            return -1;
        }
        if (!k->base_dentry)
            return -1;
    }
    if (ret >= 0) {
        if (fd_location(task, ret, &k->file_mnt, &k->file_dentry, &k->file_inode, fmode) < 0)
            return -1;
        if (!k->file_dentry || !k->file_inode)
            return -1;
    }
    return 0;
}

/* What the process runs now (after a successful exec): the file's own name, inode, filesystem and links,
 * so a memfd or a deleted file is told apart from a path that merely looks like one. Also its terminal. */
static __always_inline void read_exec_identity(struct exec_event *e) {
    u64 task = CURRENT_TASK();
    u64 mm = KLOAD64(task, K_TASK_MM);
    u64 exe = mm ? KLOAD64(mm, K_MM_EXE_FILE) : 0;
    if (exe) {
        u64 dentry = KLOAD64(exe, K_FILE_F_PATH + K_PATH_DENTRY);
        u64 inode = KLOAD64(exe, K_FILE_F_INODE);
        if (dentry && inode) {
            e->exe_nlink = KLOAD32(inode, K_INODE_I_NLINK);
            e->exe_ino = KLOAD64(inode, K_INODE_I_INO);
            u64 sb = KLOAD64(inode, K_INODE_I_SB);
            e->exe_dev = sb ? KLOAD32(sb, K_SUPER_BLOCK_S_DEV) : 0;
            u64 name = KLOAD64(dentry, K_DENTRY_D_NAME + K_QSTR_NAME);
            int n = name ? bpf_probe_read_kernel_str(&e->exe_name[0], EXE_NAME_LEN, (const void *)name) : -1;
            if (n > 0) {
                e->exe_name_len = n;
                e->h.flags |= EVF_EXE_INFO;
            }
        }
    }
    u64 signal = KLOAD64(task, K_TASK_SIGNAL);
    if (signal) {
        u64 tty = KLOAD64(signal, K_SIGNAL_TTY);
        e->tty = 0;
        if (tty) {
            u32 index = KLOAD32(tty, K_TTY_INDEX);
            u64 driver = KLOAD64(tty, K_TTY_DRIVER);
            if (driver) {
                u32 major = KLOAD32(driver, K_TTY_DRIVER_MAJOR);
                u32 minor = KLOAD32(driver, K_TTY_DRIVER_MINOR_START) + index;
                e->tty = (major << 20) | (minor & 0xfffff);
            }
        }
        e->h.flags |= EVF_TTY;
    }
}

/* The child sched_process_fork announces: the newest entry of its parent's children list (a container_of
 * walk, so an untyped pointer, read through bpf_probe_read_kernel; fork only). 0 if it is not there. */
static __always_inline u64 child_task(u32 child_pid) {
    u64 task = bpf_get_current_task();
    u64 parents[2] = {task, kread64(task, K_TASK_REAL_PARENT)};  /* CLONE_PARENT: the caller's parent */
#pragma unroll
    for (int i = 0; i < 2; i++) {
        u64 newest = kread64(parents[i], K_TASK_CHILDREN + K_LIST_HEAD_PREV);
        if (!newest)
            continue;
        u64 child = newest - K_TASK_SIBLING;
        if (kread32(child, K_TASK_TGID) == child_pid)
            return child;
    }
    return 0;
}

#if defined(HAVE_NS_OFFSETS) && defined(HAVE_PIDVIEW_OFFSETS)
#define NS_VIEW
#define S_MAX_PID_NS_LEVEL 32  /* MAX_PID_NS_LEVEL: pid namespaces nest at most this deep */

/* The number a struct pid has in the deepest pid namespace it lives in (the one its task sees itself in:
 * task_active_pid_ns is pid->numbers[pid->level].ns, never nsproxy->pid_ns_for_children), and, if asked,
 * that namespace's inode number. 0 when it cannot be read. A variable index into numbers[] is no constant
 * offset, so every read goes through bpf_probe_read_kernel. */
static __always_inline u32 pid_vnr(u64 pid, u32 *ns_inum) {
    u32 level = kread32(pid, K_PID_LEVEL);
    if (!pid || level > S_MAX_PID_NS_LEVEL)
        return 0;
    u64 upid = pid + K_PID_NUMBERS_OFF + (u64)level * K_UPID_SIZE;
    if (ns_inum)
        *ns_inum = kread32(kread64(upid, K_UPID_NS), K_PID_NS_INUM);
    return kread32(upid, K_UPID_NR_OFF);
}

/* What task sees of itself: its thread's and its thread group's ids in its own pid namespace, that namespace
 * and its mount namespace. All or nothing: 0 (v untouched) when any part cannot be read. */
static __always_inline int read_ns_view(u64 task, struct ns_view *v) {
    u32 pid_ns = 0;
    u32 vtid = pid_vnr(kread64(task, K_TASK_THREAD_PID), &pid_ns);
    u32 vpid = pid_vnr(kread64(kread64(task, K_TASK_GROUP_LEADER), K_TASK_THREAD_PID), NULL);
    u32 mnt_ns = kread32(kread64(kread64(task, K_TASK_NSPROXY), K_NSPROXY_MNT_NS), K_MNT_NS_INUM);
    if (!vtid || !vpid || !pid_ns || !mnt_ns)
        return 0;
    v->vpid = vpid;
    v->vtid = vtid;
    v->pid_ns = pid_ns;
    v->mnt_ns = mnt_ns;
    return 1;
}
#endif
#endif

#ifdef USE_TASK_STORAGE
static __always_inline struct task_state *my_state(u64 flags) {
    return task_state.task_storage_get(bpf_get_current_task_btf(), 0, flags);
}
#endif

static __always_inline int stash_open(u32 tid, struct open_args *a) {
#ifdef USE_TASK_STORAGE
    struct task_state *s = my_state(BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!s)
        return -1;
    s->open = *a;
    return 0;
#else
    return open_stash.update(&tid, a);
#endif
}

/* Take the pending open of this thread; also returns its image generation (for de-duplication), whether it
 * is in the loader phase and, with task storage, the thread's state. Without task storage the phase is bit 0
 * of the process's proc_gen entry (kept out of the generation): per process, not per thread, which is the
 * same thing right after exec, when the process has one thread. */
static __always_inline int take_open(u32 tid, u32 tgid, struct open_args *out, u64 *gen, u32 *loader,
                                     void **state) {
#ifdef USE_TASK_STORAGE
    struct task_state *s = my_state(0);
    if (!s || !s->open.type)
        return -1;
    *state = s;
    *out = s->open;
    s->open.type = 0;
    if (!s->gen)
        s->gen = bpf_ktime_get_boot_ns();
    *gen = s->gen;
    *loader = s->loader;
    return 0;
#else
    struct open_args *a = open_stash.lookup(&tid);
    if (!a)
        return -1;
    *out = *a;
    open_stash.delete(&tid);
    u64 *g = proc_gen.lookup(&tgid);
    u64 v = g ? *g : 0;
    *gen = v & ~1ULL;
    *loader = v & 1;
    return 0;
#endif
}

/* The program's own code has started (or something not the loader's happened): report every open again. */
static __always_inline void end_loader_phase(u32 tgid, void *state) {
#ifdef USE_TASK_STORAGE
    struct task_state *s = state;
    if (s)
        s->loader = 0;
#else
    u64 *g = proc_gen.lookup(&tgid);
    if (g)
        *g &= ~1ULL;
#endif
}

static __always_inline int stash_connect(u32 tid, struct connect_args *a) {
#ifdef USE_TASK_STORAGE
    struct task_state *s = my_state(BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!s)
        return -1;
    s->conn = *a;
    return 0;
#else
    return connect_stash.update(&tid, a);
#endif
}

static __always_inline int take_connect(u32 tid, struct connect_args *out) {
#ifdef USE_TASK_STORAGE
    struct task_state *s = my_state(0);
    if (!s || !s->conn.pending)
        return -1;
    *out = s->conn;
    s->conn.pending = 0;
    return 0;
#else
    struct connect_args *a = connect_stash.lookup(&tid);
    if (!a)
        return -1;
    *out = *a;
    connect_stash.delete(&tid);
    return 0;
#endif
}

/* A new process image: its opens are news again, and the dynamic loader is about to run (loader phase). */
static __always_inline void new_generation(u32 tgid, u64 gen) {
#ifdef USE_TASK_STORAGE
    struct task_state *s = my_state(BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (s) {
        s->gen = gen;
        s->loader = LOADER_FILTER;
    }
#else
    gen = (gen & ~1ULL) | LOADER_FILTER;
    proc_gen.update(&tgid, &gen);
#endif
}

static __always_inline int is_self(u64 pid_tgid) {
    return (u32)(pid_tgid >> 32) == SELF_TGID;
}

static __always_inline void fill_header(struct event_header *h, u16 type, u64 pid_tgid) {
    u64 uid_gid = bpf_get_current_uid_gid();
    h->ts_ns = bpf_ktime_get_boot_ns();
    h->cgroup_id = bpf_get_current_cgroup_id();
    h->pid = pid_tgid >> 32;
    h->tid = (u32)pid_tgid;
    h->uid = (u32)uid_gid;
    h->gid = uid_gid >> 32;
    h->type = type;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
    h->start_ns = 0;
    __builtin_memset(&h->cred, 0, sizeof(h->cred));
#ifdef HAVE_KOFFSETS
    read_task_identity(h);
#endif
}

/* ---------------------------------------------------------------- exec */

static __always_inline int exec_enter(const char *filename, const char *const *argv, s32 dirfd, u32 at_flags,
                                      u16 evflags) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    u32 zero = 0;
    struct exec_event *e = exec_scratch.lookup(&zero);
    if (!e)
        return 0;
    e->h.flags = evflags;
    e->h.aux = 0;
    e->dirfd = dirfd;
    e->at_flags = at_flags;
    e->ret = 0;
    e->tty = 0;
    e->exe_nlink = 0;
    e->exe_ino = 0;
    e->exe_dev = 0;
    e->exe_name_len = 0;
    __builtin_memset(&e->ns, 0, sizeof(e->ns));

    int flen = bpf_probe_read_user_str(&e->data[0], PATH_LEN, filename);
    if (flen < 0) {
        e->data[0] = 0;
        flen = 1;
    }
    if (flen >= PATH_LEN)
        e->h.flags |= EVF_PATH_TRUNCATED;
    u32 pos = flen;
    e->filename_len = pos;

    u32 argc = 0;
    int i;
    for (i = 0; i < MAX_ARGS; i++) {
        const char *argp = NULL;
        if (bpf_probe_read_user(&argp, sizeof(argp), &argv[i]) < 0) {
            e->h.flags |= EVF_ARGV_FAULT;
            break;
        }
        if (!argp)
            break;
        if (pos > PATH_LEN + ARGS_LIMIT) {
            e->h.flags |= EVF_ARGV_TRUNCATED;
            break;
        }
        int n = bpf_probe_read_user_str(&e->data[pos], ARG_LEN, argp);
        if (n < 0) {
            e->h.flags |= EVF_ARGV_FAULT;
            break;
        }
        if (n >= ARG_LEN)
            e->h.flags |= EVF_ARGV_TRUNCATED;
        pos += n;
        argc++;
    }
    e->argc_captured = argc;
    e->argc_total = argc;
    if (i == MAX_ARGS)
        e->h.flags |= EVF_ARGV_TRUNCATED;
    if (e->h.flags & EVF_ARGV_TRUNCATED) {
        /* Count what we could not keep, so the alert says how much is missing. */
        u32 total = argc;
        for (int j = 0; j < ARGC_COUNT_MAX; j++) {
            const char *argp = NULL;
            u32 k = argc + j;
            if (bpf_probe_read_user(&argp, sizeof(argp), &argv[k]) < 0 || !argp)
                break;
            total = k + 1;
        }
        e->argc_total = total;
        count(STAT_ARGV_TRUNCATED);
    }
    e->args_len = pos - flen;

    u32 tid = (u32)pid_tgid;
    if (exec_stash.update(&tid, e) < 0)
        count(STAT_STASH_FULL);
    return 0;
}

static __always_inline int exec_exit(void *ctx, long ret) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    u32 tid = (u32)pid_tgid;
    struct exec_event *e = exec_stash.lookup(&tid);
    if (!e) {
        count(STAT_EXEC_STASH_MISS);
        return 0;
    }
    fill_header(&e->h, EVT_EXEC, pid_tgid);  /* keeps the flags exec_enter set */
    e->ret = ret;
#ifdef HAVE_KOFFSETS
    if (ret == 0)
        read_exec_identity(e);
#ifdef NS_VIEW
    if (read_ns_view(CURRENT_TASK(), &e->ns))
        e->h.flags |= EVF_NS_VIEW;
#endif
#endif
    u32 len = e->filename_len + e->args_len;
    if (len > EXEC_DATA_LEN)
        len = EXEC_DATA_LEN;
    u64 size = offsetof(struct exec_event, data) + len;
    barrier_var(size);
    if (size > sizeof(struct exec_event))
        size = sizeof(struct exec_event);
    barrier_var(size);
    if (events_exec.perf_submit(ctx, e, size) < 0)
        count(STAT_SUBMIT_FAIL_EXEC);
    exec_stash.delete(&tid);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    return exec_enter(args->filename, args->argv, S_AT_FDCWD, 0, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_execveat) {
    return exec_enter(args->filename, args->argv, (s32)args->fd, (u32)args->flags, EVF_EXECVEAT);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execve) {
    return exec_exit(args, args->ret);
}

TRACEPOINT_PROBE(syscalls, sys_exit_execveat) {
    return exec_exit(args, args->ret);
}

/* A new image (here, not at the syscall's exit: even when the exec's stash was lost). A non-leader thread
 * that execs takes over the leader's pid: move its stash so the exit finds it. */
TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 old = args->old_pid;
    u32 now = args->pid;
    new_generation(bpf_get_current_pid_tgid() >> 32, bpf_ktime_get_boot_ns());
    if (old == now)
        return 0;
    struct exec_event *e = exec_stash.lookup(&old);
    if (!e)
        return 0;
    exec_stash.update(&now, e);
    exec_stash.delete(&old);
    return 0;
}

/* ---------------------------------------------------------------- fork / exit */

TRACEPOINT_PROBE(syscalls, sys_enter_clone) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    clone_stash.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    clone_stash.delete(&tid);
    return 0;
}

#ifdef HAVE_TP_CLONE3
TRACEPOINT_PROBE(syscalls, sys_enter_clone3) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
    clone_stash.update(&tid, &flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_clone3) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    clone_stash.delete(&tid);
    return 0;
}
#endif

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u64 flags = 0;
    u64 *fp = clone_stash.lookup(&tid);
    if (fp)
        flags = *fp;
    if (flags & S_CLONE_THREAD)
        return 0;  /* a thread, not a process */
    struct fork_event e = {};
    fill_header(&e.h, EVT_FORK, pid_tgid);
    e.child_pid = args->child_pid;
    e.parent_tid = args->parent_pid;
    e.clone_flags = flags;
#ifdef HAVE_KOFFSETS
    u64 child = child_task(args->child_pid);
    e.child_start_ns = kread64(child, K_TASK_START_BOOTTIME);
    if (e.child_start_ns)
        e.h.flags |= EVF_CHILD_START;
#ifdef NS_VIEW
    if (read_ns_view(child, &e.child_ns))
        e.h.flags |= EVF_NS_VIEW;
#endif
#endif
#ifndef USE_TASK_STORAGE
    u32 child_tgid = args->child_pid;  /* with task storage the child's state starts empty: a new generation */
    u64 gen = e.h.ts_ns & ~1ULL;  /* not in the loader phase: bit 0 is the phase */
    proc_gen.update(&child_tgid, &gen);
#endif
    if (is_self(pid_tgid))
        return 0;
    if (events_proc.perf_submit(args, &e, sizeof(e)) < 0)
        count(STAT_SUBMIT_FAIL_PROC);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 dead = (u32)pid_tgid;  /* every thread: its stashed calls can never complete */
    exec_stash.delete(&dead);
    clone_stash.delete(&dead);
    if (!args->group_dead)
        return 0;
#ifndef USE_TASK_STORAGE
    u32 tgid = pid_tgid >> 32;
    proc_gen.delete(&tgid);
#endif
    if (is_self(pid_tgid))
        return 0;
    struct fork_event e = {};
    fill_header(&e.h, EVT_EXIT, pid_tgid);
    if (events_proc.perf_submit(args, &e, sizeof(e)) < 0)
        count(STAT_SUBMIT_FAIL_PROC);
    return 0;
}

/* ---------------------------------------------------------------- open / chdir */

static __always_inline int open_enter(const char *path, s32 dirfd, u32 flags, u32 mode, u16 evflags, u16 type) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    u32 tid = (u32)pid_tgid;
    struct open_args a = {};
    a.path_ptr = (u64)path;
    a.dirfd = dirfd;
    a.flags = flags;
    a.mode = mode;
    a.evflags = evflags;
    a.type = type;
    if (stash_open(tid, &a) < 0)
        count(STAT_STASH_FULL);
    return 0;
}

#ifdef HAVE_KOFFSETS
/* Whether the open in e, whose key is complete, repeats one reported less than OPEN_DEDUP_NS ago: then it is
 * counted and not sent. Otherwise e->h.aux gets the repeats suppressed since that key's last event. The
 * thread's last key (task storage) is checked first: a tight loop on one file never touches the LRU map. */
static __always_inline int open_suppressed(struct open_event *e, void *state) {
    u64 now = bpf_ktime_get_boot_ns();
#ifdef USE_TASK_STORAGE
    struct task_state *ts = state;
    int same_as_last = ts && keys_equal(&ts->last_key, &e->key);
    if (same_as_last && now - ts->last_ns < OPEN_DEDUP_NS) {
        ts->last_suppressed++;
        count(STAT_OPEN_SUPPRESSED);
        return 1;
    }
#endif
    struct dedup_val *v = open_dedup.lookup(&e->key);
    if (v && now - v->last_ns < OPEN_DEDUP_NS) {
        __sync_fetch_and_add(&v->suppressed, 1);
        count(STAT_OPEN_SUPPRESSED);
#ifdef USE_TASK_STORAGE
        if (ts && !same_as_last) {
            ts->last_key = e->key;
            ts->last_ns = v->last_ns;
            ts->last_suppressed = 0;
        }
#endif
        return 1;
    }
    struct dedup_val nv = {};
    nv.last_ns = now;
    if (v)
        e->h.aux = v->suppressed;
#ifdef USE_TASK_STORAGE
    if (ts) {
        if (same_as_last)
            e->h.aux += ts->last_suppressed;
        ts->last_key = e->key;
        ts->last_ns = now;
        ts->last_suppressed = 0;
    }
#endif
    open_dedup.update(&e->key, &nv);
    return 0;
}
#endif

#if LOADER_FILTER
/* The dynamic loader's opens right after exec (/etc/ld.so.cache, then each shared library: the same for
 * every run of a program, two of the five events of a /bin/true) are counted instead of sent while the
 * thread is in its loader phase. loader_verdict says what one open of that phase is:
 *   LOADER_OTHER  not the loader's kind of open: reported, and the phase ends (the program's own code runs);
 *   LOADER_KEEP   a read-only library path, but not provably the file it names (a symlink: a versioned
 *                 library, or anything else; an error other than ENOENT): reported, the phase goes on;
 *   LOADER_HIDE   read-only, a canonical absolute path (at most LOADER_PATH_LEN bytes) that is
 *                 /etc/ld.so.cache or a shared object's name under a system library directory, and either
 *                 absent (ENOENT: the loader probing its search path) or opened to a file whose own name is
 *                 the path's last component. */
#define LOADER_OTHER 0
#define LOADER_KEEP 1
#define LOADER_HIDE 2
#define LOADER_NAME_LEN 64
#ifndef LOADER_PATH_LEN
/* Longer paths are reported (and end the phase): the loader's are shorter (~70 bytes for
 * .../glibc-hwcaps/x86-64-v3/...), and each byte scanned is verifier work (256 exceeded its limits). */
#define LOADER_PATH_LEN 128
#endif

/* Little-endian word of 8 path bytes, to compare a path's start with a constant in one load. */
#define W8(a, b, c, d, e, f, g, h)                                                                           \
    ((u64)(a) | (u64)(b) << 8 | (u64)(c) << 16 | (u64)(d) << 24 | (u64)(e) << 32 | (u64)(f) << 40 |         \
     (u64)(g) << 48 | (u64)(h) << 56)

/* /lib/, /lib64/, /lib32/ or /libx32/ at path[off] (off: 0, or 4 after "/usr"); not /usr/local/lib (often
 * writable by a group, and where an administrator's own builds land). */
static __always_inline int lib_dir_at(const char *path, u32 off) {
    if (path[off] != '/' || path[off + 1] != 'l' || path[off + 2] != 'i' || path[off + 3] != 'b')
        return 0;
    char a = path[off + 4], b = path[off + 5], c = path[off + 6], d = path[off + 7];
    return a == '/' || ((a == '6' && b == '4' || a == '3' && b == '2') && c == '/') ||
           (a == 'x' && b == '3' && c == '2' && d == '/');
}

static __always_inline int loader_verdict(const char *path, int n, u32 flags, long ret) {
    if (flags & (S_O_ACCMODE | S_O_CREAT | S_O_TRUNC | S_O_APPEND | S_O_TMPFILE | S_O_PATH | S_O_DIRECTORY))
        return LOADER_OTHER;
    if (n < 2 || n > LOADER_PATH_LEN || path[0] != '/')
        return LOADER_OTHER;
    u64 w0 = *(const u64 *)path;
    int cache = n == 17 && w0 == W8('/', 'e', 't', 'c', '/', 'l', 'd', '.') &&
                *(const u64 *)(path + 8) == W8('s', 'o', '.', 'c', 'a', 'c', 'h', 'e');
    if (!cache) {
        u32 usr = (w0 & 0xFFFFFFFFFFULL) == W8('/', 'u', 's', 'r', '/', 0, 0, 0);
        if (!(usr ? lib_dir_at(path, 4) : lib_dir_at(path, 0)))
            return LOADER_OTHER;
    }
    /* No empty, "." or ".." component: the path is what it spells. A window of the last four bytes (one
     * scalar, so every iteration is one verifier state) is checked at each byte and at the end. */
    u32 w = '/';
    for (u32 i = 1; i < LOADER_PATH_LEN; i++) {
        char c = path[i];
        w = (w << 8) | (u8)c;
        if (c == 0) {
            if ((w & 0xFFFF) == 0x2F00 || (w & 0xFFFFFF) == 0x2F2E00 || w == 0x2F2E2E00)
                return LOADER_OTHER;  /* a trailing "/", "/." or "/.." */
            break;
        }
        if ((w & 0xFFFF) == 0x2F2F || (w & 0xFFFFFF) == 0x2F2E2F || w == 0x2F2E2E2F)
            return LOADER_OTHER;  /* "//", "/./" or "/../" */
    }
    /* The last component, read backwards from its end: where it starts, and whether it is a shared object's
     * name (".so" at its end or before a '.'). The loop bounds m, not n: a bound learnt on n at each
     * iteration would make the rest of open_exit one verifier state per iteration (the masked copy is the
     * same value in a register the verifier does not link). */
    u32 m = (u32)n;
    barrier_var(m);
    m &= 2 * LOADER_PATH_LEN - 1;
    u32 start = 1;
    u32 so = 0;
    u32 v = 0;
    for (u32 k = 0; k < LOADER_PATH_LEN - 1; k++) {
        if (k + 2 > m)
            break;
        u32 idx = (m - 2 - k) & (LOADER_PATH_LEN - 1);
        char c = path[idx];
        if (c == '/') {
            start = idx + 1;
            break;
        }
        /* The window holds the last four bytes read, the latest (leftmost in the path) lowest: ".so"
         * followed by the end of the name or a '.' (libc.so.6, ld-linux-x86-64.so.2, x.so). */
        v = (v << 8) | (u8)c;
        if ((v & 0xFFFFFF) == 0x6F732E && ((v >> 24) == 0 || (v >> 24) == '.'))
            so = 1;
    }
    if (!cache && !so)
        return LOADER_OTHER;
    if (ret == -S_ENOENT)
        return LOADER_HIDE;
    if (ret < 0)
        return LOADER_KEEP;
    /* The file reached must carry the name the path ends with: a symlink x.so to /etc/shadow is reported. */
    u64 mnt = 0, dentry = 0;
    if (fd_location(CURRENT_TASK(), ret, &mnt, &dentry, NULL, NULL) < 0 || !dentry)
        return LOADER_KEEP;
    u64 name = kread64(dentry, K_DENTRY_D_NAME + K_QSTR_NAME);  /* dentry may be an untyped pointer */
    char buf[LOADER_NAME_LEN];
    int len = name ? bpf_probe_read_kernel_str(buf, sizeof(buf), (const void *)name) : -1;
    u32 want = m - start;  /* the last component and its NUL */
    if (len <= 1 || len >= LOADER_NAME_LEN || (u32)len != want)
        return LOADER_KEEP;
    barrier_var(want);  /* the verifier cannot carry len's bound over to want: check it again */
    if (want > LOADER_NAME_LEN)
        return LOADER_KEEP;
    for (u32 j = 0; j < LOADER_NAME_LEN - 1; j++) {
        if (j + 1 >= want)
            break;
        if (buf[j] != path[(start + j) & (LOADER_PATH_LEN - 1)])
            return LOADER_KEEP;
    }
    return LOADER_HIDE;
}
#endif

static __always_inline int open_exit(void *ctx, long ret) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u32 tgid = pid_tgid >> 32;
    struct open_args st;
    u64 gen = 0;
    u32 loader = 0;
    void *state = NULL;
    if (take_open(tid, tgid, &st, &gen, &loader, &state) < 0)
        return 0;
    if (st.type == EVT_CHDIR && ret != 0)
        return 0;  /* a failed chdir changes nothing */

    u32 zero = 0;
    struct open_event *e = open_scratch.lookup(&zero);
    if (!e)
        return 0;
    __builtin_memset(&e->key, 0, sizeof(e->key));
    int n = 1;
    if (st.path_ptr) {
        n = bpf_probe_read_user_str(&e->key.path[0], PATH_LEN, (const char *)st.path_ptr);
        if (n < 0) {
            e->key.path[0] = 0;
            n = 1;
        }
    } else {
        e->key.path[0] = 0;
    }
    e->h.flags = st.evflags;
    if (n >= PATH_LEN)
        e->h.flags |= EVF_PATH_TRUNCATED;

    e->h.aux = 0;
#if LOADER_FILTER
    if (loader) {
        int v = st.type == EVT_OPEN ? loader_verdict(&e->key.path[0], n, st.flags, ret) : LOADER_OTHER;
        if (v == LOADER_HIDE) {
            count(STAT_LOADER_OPENS_FILTERED);
            return 0;
        }
        if (v == LOADER_OTHER)
            end_loader_phase(tgid, state);
    }
#endif
#ifdef HAVE_KOFFSETS
    /* Whether a successful O_CREAT open created the file: the kernel's FMODE_CREATED in the file's f_mode.
     * An existing file opened with O_CREAT (a shell's `>`) does not carry it. */
    u32 fmode = 0;
    u32 *want_mode = (st.type == EVT_OPEN && ret >= 0 && (st.flags & S_O_CREAT)) ? &fmode : NULL;
    /* Only an open whose directory and file the kernel could name takes part; anything else is reported. */
    if (OPEN_DEDUP_NS && st.type == EVT_OPEN && n < DEDUP_PATH_LEN &&
        !(st.flags & (S_O_DIRECTORY | S_O_PATH))) {
        e->key.tgid = tgid;
        e->key.flags_class = st.flags & (S_O_ACCMODE | S_O_CREAT | S_O_TRUNC | S_O_APPEND | S_O_TMPFILE);
        e->key.result = ret >= 0 ? 0 : (s32)ret;
        e->key.gen = gen;
        if (open_identity(&e->key, st.dirfd, ret, want_mode) == 0) {
            if (want_mode) {
                e->h.flags |= EVF_CREATED_KNOWN | ((fmode & S_FMODE_CREATED) ? EVF_CREATED : 0);
                want_mode = NULL;
                /* A creating open never repeats a non-creating one (nor the reverse): a file deleted and
                 * created again (its dentry and inode reused) must be reported as created. */
                e->key.flags_class |= (u32)(e->h.flags & (EVF_CREATED_KNOWN | EVF_CREATED)) << 16;
            }
            if (open_suppressed(e, state))
                return 0;
        }
    }
    if (want_mode) {  /* not de-duplicated (long path, de-duplication off) or its identity unknown */
        u64 mnt = 0, dentry = 0;
        if (fd_location(CURRENT_TASK(), ret, &mnt, &dentry, NULL, want_mode) == 0)
            e->h.flags |= EVF_CREATED_KNOWN | ((fmode & S_FMODE_CREATED) ? EVF_CREATED : 0);
    }
#endif

    fill_header(&e->h, st.type, pid_tgid);
    e->ret = ret;
    e->flags = st.flags;
    e->mode = st.mode;
    e->dirfd = st.dirfd;
    e->path_len = n;
    u64 size = offsetof(struct open_event, key.path) + (u32)n;
    barrier_var(size);
    if (size > sizeof(struct open_event))
        size = sizeof(struct open_event);
    barrier_var(size);
    if (events_open.perf_submit(ctx, e, size) < 0)
        count(STAT_SUBMIT_FAIL_OPEN);  /* chdir shares the open buffer */
    return 0;
}

#ifdef HAVE_TP_OPEN
TRACEPOINT_PROBE(syscalls, sys_enter_open) {
    return open_enter(args->filename, S_AT_FDCWD, (u32)args->flags, (u32)args->mode, 0, EVT_OPEN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_open) { return open_exit(args, args->ret); }
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    return open_enter(args->filename, (s32)args->dfd, (u32)args->flags, (u32)args->mode, 0, EVT_OPEN);
}

#ifdef HAVE_TP_OPENAT2
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) {
    u64 how[2] = {};
    bpf_probe_read_user(&how, sizeof(how), (void *)args->how);
    return open_enter(args->filename, (s32)args->dfd, (u32)how[0], (u32)how[1], EVF_OPENAT2, EVT_OPEN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return open_exit(args, args->ret); }
#endif

#ifdef HAVE_TP_CREAT
TRACEPOINT_PROBE(syscalls, sys_enter_creat) {
    return open_enter(args->pathname, S_AT_FDCWD, S_O_CREAT | S_O_WRONLY | S_O_TRUNC, (u32)args->mode, EVF_CREAT,
                      EVT_OPEN);
}
TRACEPOINT_PROBE(syscalls, sys_exit_creat) { return open_exit(args, args->ret); }
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_chdir) {
    return open_enter(args->filename, S_AT_FDCWD, 0, 0, 0, EVT_CHDIR);
}

TRACEPOINT_PROBE(syscalls, sys_enter_fchdir) {
    return open_enter(NULL, (s32)args->fd, 0, 0, 0, EVT_CHDIR);
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return open_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_chdir) { return open_exit(args, args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchdir) { return open_exit(args, args->ret); }

/* ---------------------------------------------------------------- socket / connect */

/* A caller's sockaddr: its family, and for AF_INET/AF_INET6 the port (host order) and the address (IPv4 in
 * the first 4 bytes of addr[16]). 0 when it cannot be read. Shared by connect, bind and the datagrams. */
static __always_inline u16 read_sockaddr(u64 sa, u16 *port, u8 *addr) {
    u16 family = 0;
    if (!sa || bpf_probe_read_user(&family, sizeof(family), (const void *)sa) < 0)
        return 0;
    if (family == S_AF_INET || family == S_AF_INET6) {
        u16 p = 0;
        bpf_probe_read_user(&p, sizeof(p), (const void *)(sa + 2));
        *port = __builtin_bswap16(p);
        if (family == S_AF_INET)
            bpf_probe_read_user(addr, 4, (const void *)(sa + 4));
        else
            bpf_probe_read_user(addr, 16, (const void *)(sa + 8));
    }
    return family;
}

#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS)
/* The struct file open as fd in the current task, 0 if none. */
static __always_inline u64 current_file(s64 fd) {
    u64 task = CURRENT_TASK();
    u64 files = KLOAD64(task, K_TASK_FILES);
    if (!files)
        return 0;
    u64 fdt = KLOAD64(files, K_FILES_FDT);
    if (!fdt)
        return 0;
    u32 max = KLOAD32(fdt, K_FDTABLE_MAX_FDS);
    if (fd < 0 || fd >= max)
        return 0;
    u64 arr = KLOAD64(fdt, K_FDTABLE_FD);
    return kread64(arr, (u64)fd * 8);
}
#endif

#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(HAVE_NET_OFFSETS)
#define SOCK_TYPE_FROM_KERNEL
/* SOCK_STREAM/SOCK_DGRAM of the socket open as fd, read from the kernel (0: not a socket): no table to go
 * stale when an fd number is reused (dup2 onto it, a socket made before the agent). */
static __always_inline u32 fd_sock_type(s64 fd) {
    u64 file = current_file(fd);
    if (!file)
        return 0;
    u64 sock = kread64(file, K_FILE_PRIVATE_DATA);
    if (!sock || !kread64(sock, K_SOCKET_SK))
        return 0;
    return kread32(sock, K_SOCKET_TYPE) & 0xFF;
}
#endif

#if defined(SOCK_TYPE_FROM_KERNEL)
/* The local address and port a connect gave the socket open as fd (the kernel picks them at connect, for TCP
 * and UDP alike), encoded as a bind's extra[] (sentinel_events.h). Only a socket (the inode on sockfs) of the
 * connect's own family is read: the fd may have been replaced by another thread since the call. */
static __always_inline void connect_local_end(s64 fd, u16 family, u64 *local) {
    u64 file = current_file(fd);
    if (!file)
        return;
    u64 inode = kread64(file, K_FILE_F_INODE);
    if (kread64(kread64(inode, K_INODE_I_SB), K_SUPER_BLOCK_S_MAGIC) != 0x534F434B)  /* SOCKFS_MAGIC */
        return;
    u64 sock = kread64(file, K_FILE_PRIVATE_DATA);
    u64 sk = kread64(sock, K_SOCKET_SK);
    if (!sk || (kread32(sk, K_SKC_FAMILY) & 0xFFFF) != family)
        return;
    u64 type = kread32(sock, K_SOCKET_TYPE) & 0xFF;
    u64 lport = kread32(sk, K_SKC_NUM) & 0xFFFF;
    if (family == S_AF_INET) {
        local[0] = kread32(sk, K_SKC_RCV_SADDR);
    } else {
        local[0] = kread64(sk, K_SKC_V6_RCV_SADDR);
        local[1] = kread64(sk, K_SKC_V6_RCV_SADDR + 8);
    }
    local[2] = lport | (lport << 16) | ((u64)family << 32) | (type << 48) | SYS_SOCK_KNOWN;
}
#endif

#ifndef SOCK_TYPE_FROM_KERNEL
/* Without the socket offsets the type comes from socket()'s own arguments, kept per (tgid, fd). */

TRACEPOINT_PROBE(syscalls, sys_enter_socket) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    int family = args->family;
    if (family != S_AF_INET && family != S_AF_INET6 && family != S_AF_UNIX)
        return 0;
    u32 tid = (u32)pid_tgid;
    u32 type = args->type & 0xf;
    socket_stash.update(&tid, &type);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    u32 *type = socket_stash.lookup(&tid);
    if (!type)
        return 0;
    u32 t = *type;
    socket_stash.delete(&tid);
    if (args->ret < 0)
        return 0;
    struct sock_key k = {.tgid = pid_tgid >> 32, .fd = (s32)args->ret};
    sock_types.update(&k, &t);
    return 0;
}
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    u32 tid = (u32)pid_tgid;
    struct connect_args a = {};
    a.addr_ptr = (u64)args->uservaddr;
    a.fd = (s32)args->fd;
    a.addrlen = (u32)args->addrlen;
    a.pending = 1;
    if (stash_connect(tid, &a) < 0)
        count(STAT_STASH_FULL);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct connect_args st;
    if (take_connect(tid, &st) < 0)
        return 0;

    struct connect_event e = {};
    u16 family = read_sockaddr(st.addr_ptr, &e.port, &e.addr[0]);
    if (family == S_AF_UNIX) {
        u32 len = st.addrlen > 2 ? st.addrlen - 2 : 0;
        if (len > UNIX_PATH_LEN)
            len = UNIX_PATH_LEN;
        if (len > 0)
            bpf_probe_read_user(&e.unix_path[0], len & 127, (void *)(st.addr_ptr + 2));
    } else if (family != S_AF_INET && family != S_AF_INET6) {
        return 0;  /* AF_NETLINK, AF_PACKET...: not a connection we report */
    }
    fill_header(&e.h, EVT_CONNECT, pid_tgid);
    e.ret = args->ret;
    e.fd = st.fd;
    e.family = family;
    e.addrlen = st.addrlen;
#ifdef SOCK_TYPE_FROM_KERNEL
    e.sock_type = fd_sock_type(st.fd);
    if (family != S_AF_UNIX && (e.ret == 0 || e.ret == -S_EINPROGRESS))
        connect_local_end(st.fd, family, &e.local[0]);
#else
    struct sock_key k = {.tgid = pid_tgid >> 32, .fd = st.fd};
    u32 *t = sock_types.lookup(&k);
    e.sock_type = t ? *t : 0;
#endif
    if (events_connect.perf_submit(args, &e, sizeof(e)) < 0)
        count(STAT_SUBMIT_FAIL_CONNECT);
    return 0;
}

/* ---------------------------------------------------------------- security syscalls, tamper evidence */
/* bpf_probes/sentinel_security.c follows here: the loader appends it (see there why not #include). */
