// SPDX-License-Identifier: GPL-2.0-only
/* Security-relevant syscalls: privilege, injection, kernel code, fileless, namespaces and mounts, signals.
 * Appended to sentinel.c by the loader (it uses its helpers: fill_header, is_self, count): bcc generates a
 * tracepoint's argument struct only for probes written out in the main source, not behind a macro or in
 * an included file.
 *
 * Every call is reported at exit with its result, failures included, and never de-duplicated: these calls
 * are rare on a healthy host and each one can matter. The entry stashes the raw arguments per thread; the
 * exit reads the strings behind them (the caller's memory is still mapped) and the credentials the call
 * left. Each call's probes are compiled in only when the running kernel has its tracepoints (HAVE_TP_*, set
 * by the loader): a kernel without CONFIG_MODULES has no init_module tracepoint, and the agent says so.
 *
 * Tamper evidence: a signal generated for the agent (any path: kill, tkill, tgkill, pidfd_send_signal, the
 * kernel), a ptrace or a process_vm_writev aimed at it is recorded from the sender's context into a pinned
 * map that outlives the agent (TAMPER_PIN), so the next start can say who SIGKILLed the previous one. So is
 * another process opening one of the agent's BPF objects by id (with the fd it can rewrite the maps that
 * decide what the sensor reports) and pidfd_getfd taking one of the agent's file descriptors (a perf event
 * fd can be disabled).
 *
 * With the namespace offsets (HAVE_NS_OFFSETS, from BTF) the events also say which namespace a setns joined
 * (its inode, and which of pid 1's it is: INIT_NS_BITS, from /proc/1/ns at load), which process a pidfd
 * names, and the caller's user namespace for mounts, setns and unshare.
 */

/* Types the generated tracepoint structs name (capset's header/data, pidfd_send_signal's info). */
#include <linux/capability.h>
#include <linux/signal.h>

#ifndef TAMPER_PIN
#define TAMPER_PIN "/sys/fs/bpf/sentinel_tamper"
#endif
#define S_SIGCHLD 17
#define S_BPF_PROG_LOAD 5
#define S_BPF_PROG_GET_FD_BY_ID 13
#define S_BPF_MAP_GET_FD_BY_ID 14
#define S_BPF_LINK_GET_FD_BY_ID 30
#define S_NSFS_MAGIC 0x6e736673
#define S_PIDFS_MAGIC 0x50494446
#define S_ANON_INODE_FS_MAGIC 0x09041934
#define S_SOCKFS_MAGIC 0x534F434B
#define S_CLONE_NEWNS 0x00020000
#define S_CLONE_NEWPID 0x20000000

struct sys_args {
    u64 a[6];
    u32 call;       /* EVT_*; 0 = nothing pending */
    u32 strs;       /* bit i: a[i] points to a user string the exit reads (at most SYS_STRS, in order) */
};

BPF_PERF_OUTPUT(events_sys);
BPF_PERCPU_ARRAY(sys_scratch, struct sys_event, 1);
BPF_TABLE("lru_hash", u32, struct sys_args, sys_stash, STASH_ENTRIES);  /* LRU: see exec_stash */
/* The agent's threads (the loader adds them): signals to any of them are tamper evidence. */
BPF_HASH(self_tids, u32, u8, 1024);
/* The ids of the agent's BPF programs and maps (the loader adds them). */
BPF_HASH(own_bpf_ids, u32, u8, 256);
#ifdef NO_TAMPER_PIN
BPF_TABLE("lru_hash", u64, struct tamper_event, tamper_log, 64);  /* no bpffs: records die with the agent */
#else
BPF_TABLE_PINNED("lru_hash", u64, struct tamper_event, tamper_log, 64, TAMPER_PIN);
#endif

static __always_inline int is_agent_task(u32 tid) {
    if (tid == SELF_TGID)
        return 1;
    return self_tids.lookup(&tid) != NULL;
}

static __always_inline void record_tamper(void *ctx, u64 pid_tgid, u32 what, s32 sig, u32 target) {
    struct tamper_event t = {};
    fill_header(&t.h, EVT_TAMPER, pid_tgid);
    t.what = what;
    t.sig = sig;
    t.target_tid = target;
    u64 key = t.h.ts_ns;
    tamper_log.update(&key, &t);
    if (events_proc.perf_submit(ctx, &t, sizeof(t)) < 0)
        count(STAT_SUBMIT_FAIL_PROC);
}

#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS)

/* The caller's user namespace: inum | level << 32 | SYS_USERNS_KNOWN. */
static __always_inline u64 caller_userns(void) {
    u64 task = CURRENT_TASK();
    u64 cred = kread64(task, K_TASK_REAL_CRED);
    u64 ns = kread64(cred, K_CRED_USER_NS);
    if (!ns)
        return 0;
    return (u64)kread32(ns, K_USERNS_INUM) | ((u64)kread32(ns, K_USERNS_LEVEL) << 32) | SYS_USERNS_KNOWN;
}

/* What the fd a setns or pidfd call named refers to: a namespace (extra[0] = its inum; extra[1]'s high half:
 * which of pid 1's namespaces it is, one bit per kind, sentinel.syscalls.NS_KINDS) or a pidfd (extra[1] =
 * the pid in the root pid namespace). On kernels before pidfs a pidfd is an anonymous inode like many
 * others: its pid is believed only when the call accepted the fd. */
static __always_inline void fd_target(struct sys_event *e, s64 fd, long ret) {
    u64 file = current_file(fd);
    if (!file)
        return;
    u64 inode = kread64(file, K_FILE_F_INODE);
    u64 sb = kread64(inode, K_INODE_I_SB);
    u64 magic = kread64(sb, K_SUPER_BLOCK_S_MAGIC);
    if (magic == S_NSFS_MAGIC) {
        u64 ino = kread64(inode, K_INODE_I_INO);
        e->extra[0] = ino;
#ifdef INIT_NS_BITS
        e->extra[1] |= (u64)(INIT_NS_BITS(ino)) << 32;
#endif
    } else if (magic == S_PIDFS_MAGIC) {
        u64 pid = kread64(inode, K_INODE_I_PRIVATE);  /* pidfs (6.9+) keeps the struct pid in the inode */
        e->extra[1] |= kread32(pid, K_PID_NUMBERS_NR);
    } else if (magic == S_ANON_INODE_FS_MAGIC && ret >= 0) {
        u64 pid = kread64(file, K_FILE_PRIVATE_DATA);  /* before pidfs: in the file */
        e->extra[1] |= kread32(pid, K_PID_NUMBERS_NR);
    }
}
#endif

#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(INIT_NS_BITS)
/* After a setns through a pidfd: which of the mount and pid namespaces asked for (nstype) are now pid 1's. */
static __always_inline u32 joined_init_ns(u64 nstype) {
    u64 nsproxy = kread64(CURRENT_TASK(), K_TASK_NSPROXY);
    u32 bits = 0;
    if (nstype & S_CLONE_NEWNS) {
        u32 inum = kread32(kread64(nsproxy, K_NSPROXY_MNT_NS), K_MNT_NS_INUM);
        bits |= INIT_NS_BITS(inum);
    }
    if (nstype & S_CLONE_NEWPID) {
        u32 inum = kread32(kread64(nsproxy, K_NSPROXY_PID_NS), K_PID_NS_INUM);
        bits |= INIT_NS_BITS(inum);
    }
    return bits;
}
#endif

#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(HAVE_NET_OFFSETS)
/* The socket open as fd, if it is one: one end's address in extra[0..1] (``local``: the local end, else the
 * peer, with the local IPv4 in extra[0]'s high half), ports, family, type and state (skc_state: a UDP socket
 * after connect() is TCP_ESTABLISHED too) in extra[2]. Read from the
 * kernel's socket, so a NULL address buffer (accept(fd, NULL, NULL)) or a socket made before the agent
 * still says. */
static __always_inline void sock_facts(struct sys_event *e, s64 fd, int local) {
    u64 file = current_file(fd);
    if (!file)
        return;
    u64 inode = kread64(file, K_FILE_F_INODE);
    if (kread64(kread64(inode, K_INODE_I_SB), K_SUPER_BLOCK_S_MAGIC) != S_SOCKFS_MAGIC)
        return;
    u64 sock = kread64(file, K_FILE_PRIVATE_DATA);
    u64 sk = kread64(sock, K_SOCKET_SK);
    if (!sk)
        return;
    u64 type = kread32(sock, K_SOCKET_TYPE) & 0xFF;
    u64 family = kread32(sk, K_SKC_FAMILY) & 0xFFFF;
    u64 lport = kread32(sk, K_SKC_NUM) & 0xFFFF;
    u64 rport = __builtin_bswap16((u16)(kread32(sk, K_SKC_DPORT) & 0xFFFF));
    if (family == S_AF_INET) {
        u64 laddr = kread32(sk, K_SKC_RCV_SADDR);
        e->extra[0] = local ? laddr : (kread32(sk, K_SKC_DADDR) | (laddr << 32));
    } else if (family == S_AF_INET6) {
        u64 off = local ? K_SKC_V6_RCV_SADDR : K_SKC_V6_DADDR;
        e->extra[0] = kread64(sk, off);
        e->extra[1] = kread64(sk, off + 8);
    }
    u64 state = kread32(sk, K_SKC_STATE) & 0x3F;  /* TCP_ESTABLISHED, TCP_CLOSE... (UDP uses them too) */
    e->extra[2] = (local ? lport : rport) | (lport << 16) | (family << 32) | (type << 48) |
                  (state << SYS_SOCK_STATE_SHIFT) | SYS_SOCK_STATE_KNOWN | SYS_SOCK_KNOWN;
}
#endif

/* A datagram's destination, first per process, socket and destination: a DNS client sending a thousand
 * queries to its resolver is one event, a query to a new server is another. The socket is named by its
 * inode (never reused while it lives; by fd without the socket offsets). Sends without a destination
 * (connected sockets, TCP) are not stashed at all. */
struct dgram_key {
    u32 tgid;
    u16 family;
    u16 port;
    u64 sock;       /* socket inode, or the fd without offsets */
    u8 addr[16];
};
BPF_TABLE("lru_hash", struct dgram_key, u8, dgram_seen, 16384);

static __always_inline int dgram_key_of(struct dgram_key *k, u64 pid_tgid, s64 fd, u64 sa) {
    u16 family = read_sockaddr(sa, &k->port, &k->addr[0]);
    if (family != S_AF_INET && family != S_AF_INET6)
        return -1;  /* unix datagrams name a path, not a destination on the network */
    k->tgid = pid_tgid >> 32;
    k->family = family;
    k->sock = (u64)fd;
#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(HAVE_NET_OFFSETS)
    u64 file = current_file(fd);
    if (file)
        k->sock = kread64(kread64(file, K_FILE_F_INODE), K_INODE_I_INO);
#endif
    return 0;
}

/* At exit: the destination into the event, with the socket's type and local port; marked seen once a send
 * went through (a failed one is reported again). -1: not a destination on the network. */
static __always_inline int dgram_report(struct sys_event *e, u64 pid_tgid, long ret) {
    struct dgram_key k = {};
    if (dgram_key_of(&k, pid_tgid, (s64)e->arg[0], e->arg[4]) < 0)
        return -1;
    if (ret >= 0) {
        u8 one = 1;
        dgram_seen.update(&k, &one);
    }
    u64 local = 0, laddr = 0;
#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(HAVE_NET_OFFSETS)
    sock_facts(e, (s64)e->arg[0], 1);
    /* local port, socket type and state (connected or not) */
    local = e->extra[2] & (0xFFFFULL << 16 | 0xFFULL << 48 | SYS_SOCK_STATE_MASK | SYS_SOCK_STATE_KNOWN);
    /* an IPv4 socket's local address (0 until bound: the kernel picks the source per packet then) */
    if ((e->extra[2] & SYS_SOCK_KNOWN) && ((e->extra[2] >> 32) & 0xFFFF) == S_AF_INET)
        laddr = e->extra[0] & 0xFFFFFFFFULL;
#endif
    __builtin_memcpy(&e->extra[0], &k.addr[0], 16);
    if (k.family == S_AF_INET)
        e->extra[0] |= laddr << 32;  /* as accept's: the local IPv4 in the high half */
    e->extra[2] = (u64)k.port | local | ((u64)k.family << 32) | SYS_SOCK_KNOWN;
    return 0;
}

/* Stash a call's raw arguments at entry; ``strs`` says which are user strings to read at exit (STR(i)). */
static __always_inline int sys_enter_s(u32 call, u32 strs, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    u32 tid = (u32)pid_tgid;
    struct sys_args s = {};
    s.a[0] = a0;
    s.a[1] = a1;
    s.a[2] = a2;
    s.a[3] = a3;
    s.a[4] = a4;
    s.a[5] = a5;
    s.call = call;
    s.strs = strs;
    if (sys_stash.update(&tid, &s) < 0)
        count(STAT_STASH_FULL);
    return 0;
}
#define STR(i) (1u << (i))

static __always_inline int sys_enter(u32 call, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4, u64 a5) {
    return sys_enter_s(call, 0, a0, a1, a2, a3, a4, a5);
}

/* One string argument into slot i; returns the bytes read (NUL included), 0 for none or a fault. */
static __always_inline u16 read_str(struct sys_event *e, int i, u64 ptr) {
    if (!ptr)
        return 0;
    int n = bpf_probe_read_user_str(&e->str[i][0], SYS_STR_LEN, (const char *)ptr);
    if (n <= 0)
        return 0;
    return (u16)n;
}

static __always_inline int sys_exit(void *ctx, long ret, u32 call) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    struct sys_args *s = sys_stash.lookup(&tid);
    if (!s)
        return 0;
    if (s->call != call) {
        sys_stash.delete(&tid);
        return 0;
    }
    u32 zero = 0;
    struct sys_event *e = sys_scratch.lookup(&zero);
    if (!e) {
        sys_stash.delete(&tid);
        return 0;
    }
    e->h.flags = 0;  /* before fill_header: the identity it reads sets flags */
    fill_header(&e->h, (u16)call, pid_tgid);
    e->h.aux = 0;
    e->ret = ret;
#pragma unroll
    for (int i = 0; i < 6; i++)
        e->arg[i] = s->a[i];
    e->extra[0] = 0;
    e->extra[1] = 0;
    e->extra[2] = 0;
    e->str_len[0] = 0;
    e->str_len[1] = 0;
    e->str_len[2] = 0;
    u16 nstr = 0;
    u64 a[6];
#pragma unroll
    for (int i = 0; i < 6; i++)
        a[i] = s->a[i];
    u32 strs = s->strs;
    u64 a0 = a[0], a1 = a[1], a2 = a[2];
    sys_stash.delete(&tid);

    /* The strings the entry named, in argument order, each into the next slot. */
#pragma unroll
    for (int i = 0; i < 6; i++) {
        if ((strs >> i) & 1) {
            if (nstr < SYS_STRS) {
                e->str_len[nstr & 3] = read_str(e, nstr, a[i]);
                nstr++;
            }
        }
    }
#ifdef HAVE_KOFFSETS
    if (call == EVT_FCHMOD || call == EVT_FCHOWN || call == EVT_FTRUNCATE) {
        /* The file behind the fd, by identity: its path is asked of /proc later, which a process that has
         * exited by then no longer answers. */
        u64 mnt = 0, dentry = 0, inode = 0;
        if (fd_location(CURRENT_TASK(), (s64)(s32)a0, &mnt, &dentry, &inode, NULL) == 0 && inode) {
            e->extra[0] = kread64(inode, K_INODE_I_INO);
            e->extra[1] = kread32(kread64(inode, K_INODE_I_SB), K_SUPER_BLOCK_S_DEV);
        }
    }
#endif
    if (call == EVT_UTIMENSAT && a2) {
        /* The new times: two struct __kernel_timespec {s64 sec; s64 nsec} (NULL: both now). */
        s64 t[4] = {};
        if (bpf_probe_read_user(t, sizeof(t), (const void *)a2) == 0) {
            e->extra[0] = (u64)t[0];
            e->extra[1] = (u64)t[2];
            e->extra[2] = ((u64)t[1] & 0xFFFFFFFF) | ((u64)t[3] << 32);
        }
    } else if (call == EVT_CAPSET) {
        /* The requested sets: two struct __user_cap_data_struct {effective, permitted, inheritable}. */
        u32 d[6] = {};
        if (a1 && bpf_probe_read_user(d, sizeof(d), (const void *)a1) == 0) {
            e->extra[0] = d[0] | ((u64)d[3] << 32);
            e->extra[1] = d[1] | ((u64)d[4] << 32);
            e->extra[2] = d[2] | ((u64)d[5] << 32);
        }
    } else if (call == EVT_BPF) {
        /* attr's head: the program type (BPF_PROG_LOAD), map type (BPF_MAP_CREATE) or the id asked for
         * (BPF_*_GET_FD_BY_ID); the program's name for a load. */
        if (a1) {
            bpf_probe_read_user(&e->extra[0], 8, (const void *)a1);
            if (a0 == S_BPF_PROG_LOAD && a2 >= 64) {
                int n = bpf_probe_read_user_str(&e->str[0][0], 16, (const char *)(a1 + 48));
                e->str_len[0] = n > 0 ? (u16)n : 0;
                nstr = 1;
            }
        }
    }
#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS)
    if (call == EVT_SETNS || call == EVT_PIDFD_SEND_SIGNAL || call == EVT_PIDFD_GETFD)
        fd_target(e, (s64)a0, ret);
#ifdef INIT_NS_BITS
    if (call == EVT_SETNS && ret == 0 && (u32)e->extra[1])
        e->extra[1] |= (u64)joined_init_ns(a1) << 32;  /* a pidfd: any process's namespaces may be pid 1's */
#endif
    if (call == EVT_MOUNT || call == EVT_UMOUNT2 || call == EVT_MOVE_MOUNT || call == EVT_PIVOT_ROOT ||
        call == EVT_CHROOT || call == EVT_SETNS || call == EVT_UNSHARE)
        e->extra[2] = caller_userns();
    if (call == EVT_PIDFD_GETFD && ret >= 0) {
        u32 target = (u32)e->extra[1];
        if (target && is_agent_task(target))
            record_tamper(ctx, pid_tgid, TAMPER_FD, (s32)a1, target);
    }
#endif
#if defined(HAVE_KOFFSETS) && defined(HAVE_NS_OFFSETS) && defined(HAVE_NET_OFFSETS)
    if (call == EVT_LISTEN || (call == EVT_BIND && ret == 0))
        sock_facts(e, (s64)(s32)a0, 1);                  /* the local end as bound */
    else if ((call == EVT_ACCEPT || call == EVT_ACCEPT4) && ret >= 0)
        sock_facts(e, ret, 0);                           /* the accepted connection's peer */
    else if (call == EVT_DUP || call == EVT_DUP2 || call == EVT_DUP3) {
        sock_facts(e, ret >= 0 ? ret : (s64)(s32)a0, 0);  /* what the new fd now is */
        if (!(e->extra[2] & SYS_SOCK_KNOWN))
            return 0;  /* shells move pipes and files about all day: only a socket moved is reported */
    }
#endif
    if ((call == EVT_SENDTO || call == EVT_SENDMSG || call == EVT_SENDMMSG) &&
        dgram_report(e, pid_tgid, ret) < 0)
        return 0;
    if (call == EVT_BIND && a1) {
        u16 port = 0;
        u8 addr[16] = {};
        u16 family = read_sockaddr(a1, &port, addr);
        if (!(e->extra[2] & SYS_SOCK_KNOWN)) {
            /* A failed bind (or no offsets): the address asked for, from the caller's sockaddr. */
            __builtin_memcpy(&e->extra[0], addr, 16);
            e->extra[2] = (u64)port | ((u64)port << 16) | ((u64)family << 32) | SYS_SOCK_KNOWN;
        }
        if (family == S_AF_UNIX) {  /* the socket file's path (an abstract name starts with NUL: empty) */
            e->str_len[0] = read_str(e, 0, a1 + 2);
            nstr = 1;
        }
    }
    if (call == EVT_BPF && ret >= 0 &&
        (a0 == S_BPF_PROG_GET_FD_BY_ID || a0 == S_BPF_MAP_GET_FD_BY_ID || a0 == S_BPF_LINK_GET_FD_BY_ID)) {
        u32 id = (u32)e->extra[0];
        if (own_bpf_ids.lookup(&id))
            record_tamper(ctx, pid_tgid, TAMPER_BPF, (s32)a0, id);
    }
    e->nstr = nstr;
    u64 size = offsetof(struct sys_event, str);
    if (nstr > 0) {
        u32 last = nstr - 1;
        if (last >= SYS_STRS)
            last = SYS_STRS - 1;
        u32 len = e->str_len[last & 3];
        if (len > SYS_STR_LEN)
            len = SYS_STR_LEN;
        size += (u64)last * SYS_STR_LEN + len;
    }
    barrier_var(size);
    if (size > sizeof(struct sys_event))
        size = sizeof(struct sys_event);
    barrier_var(size);
    if (events_sys.perf_submit(ctx, e, size) < 0)
        count(STAT_SUBMIT_FAIL_SYS);
    return 0;
}

/* ------------------------------------------------------------- privilege */

#ifdef HAVE_TP_SETUID
TRACEPOINT_PROBE(syscalls, sys_enter_setuid) { return sys_enter(EVT_SETUID, args->uid, 0, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setuid) { return sys_exit(args, args->ret, EVT_SETUID); }
#endif
#ifdef HAVE_TP_SETGID
TRACEPOINT_PROBE(syscalls, sys_enter_setgid) { return sys_enter(EVT_SETGID, args->gid, 0, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setgid) { return sys_exit(args, args->ret, EVT_SETGID); }
#endif
#ifdef HAVE_TP_SETREUID
TRACEPOINT_PROBE(syscalls, sys_enter_setreuid) {
    return sys_enter(EVT_SETREUID, args->ruid, args->euid, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setreuid) { return sys_exit(args, args->ret, EVT_SETREUID); }
#endif
#ifdef HAVE_TP_SETREGID
TRACEPOINT_PROBE(syscalls, sys_enter_setregid) {
    return sys_enter(EVT_SETREGID, args->rgid, args->egid, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setregid) { return sys_exit(args, args->ret, EVT_SETREGID); }
#endif
#ifdef HAVE_TP_SETRESUID
TRACEPOINT_PROBE(syscalls, sys_enter_setresuid) {
    return sys_enter(EVT_SETRESUID, args->ruid, args->euid, args->suid, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setresuid) { return sys_exit(args, args->ret, EVT_SETRESUID); }
#endif
#ifdef HAVE_TP_SETRESGID
TRACEPOINT_PROBE(syscalls, sys_enter_setresgid) {
    return sys_enter(EVT_SETRESGID, args->rgid, args->egid, args->sgid, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setresgid) { return sys_exit(args, args->ret, EVT_SETRESGID); }
#endif
#ifdef HAVE_TP_SETFSUID
TRACEPOINT_PROBE(syscalls, sys_enter_setfsuid) { return sys_enter(EVT_SETFSUID, args->uid, 0, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setfsuid) { return sys_exit(args, args->ret, EVT_SETFSUID); }
#endif
#ifdef HAVE_TP_SETFSGID
TRACEPOINT_PROBE(syscalls, sys_enter_setfsgid) { return sys_enter(EVT_SETFSGID, args->gid, 0, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_setfsgid) { return sys_exit(args, args->ret, EVT_SETFSGID); }
#endif
#ifdef HAVE_TP_CAPSET
TRACEPOINT_PROBE(syscalls, sys_enter_capset) {
    return sys_enter(EVT_CAPSET, (u64)args->header, (u64)args->data, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_capset) { return sys_exit(args, args->ret, EVT_CAPSET); }
#endif

/* ------------------------------------------------------------- injection */

#ifdef HAVE_TP_PTRACE
TRACEPOINT_PROBE(syscalls, sys_enter_ptrace) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 target = (u32)args->pid;
    if (!is_self(pid_tgid) && is_agent_task(target))
        record_tamper(args, pid_tgid, TAMPER_PTRACE, (s32)args->request, target);
    return sys_enter(EVT_PTRACE, args->request, args->pid, args->addr, args->data, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_ptrace) { return sys_exit(args, args->ret, EVT_PTRACE); }
#endif
#ifdef HAVE_TP_PROCESS_VM_WRITEV
TRACEPOINT_PROBE(syscalls, sys_enter_process_vm_writev) {
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 target = (u32)args->pid;
    if (!is_self(pid_tgid) && is_agent_task(target))
        record_tamper(args, pid_tgid, TAMPER_VM_ACCESS, 0, target);
    return sys_enter(EVT_PROCESS_VM_WRITEV, args->pid, 0, args->liovcnt, 0, args->riovcnt, args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_process_vm_writev) { return sys_exit(args, args->ret, EVT_PROCESS_VM_WRITEV); }
#endif

/* ------------------------------------------------------------- kernel code */

#ifdef HAVE_TP_INIT_MODULE
TRACEPOINT_PROBE(syscalls, sys_enter_init_module) {
    return sys_enter_s(EVT_INIT_MODULE, STR(2), 0, args->len, (u64)args->uargs, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_init_module) { return sys_exit(args, args->ret, EVT_INIT_MODULE); }
#endif
#ifdef HAVE_TP_FINIT_MODULE
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module) {
    return sys_enter_s(EVT_FINIT_MODULE, STR(1), args->fd, (u64)args->uargs, args->flags, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_finit_module) { return sys_exit(args, args->ret, EVT_FINIT_MODULE); }
#endif
#ifdef HAVE_TP_DELETE_MODULE
TRACEPOINT_PROBE(syscalls, sys_enter_delete_module) {
    return sys_enter_s(EVT_DELETE_MODULE, STR(0), (u64)args->name_user, args->flags, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_delete_module) { return sys_exit(args, args->ret, EVT_DELETE_MODULE); }
#endif
#ifdef HAVE_TP_BPF
TRACEPOINT_PROBE(syscalls, sys_enter_bpf) {
    return sys_enter(EVT_BPF, args->cmd, (u64)args->uattr, args->size, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_bpf) { return sys_exit(args, args->ret, EVT_BPF); }
#endif

/* ------------------------------------------------------------- fileless */

#ifdef HAVE_TP_MEMFD_CREATE
TRACEPOINT_PROBE(syscalls, sys_enter_memfd_create) {
    return sys_enter_s(EVT_MEMFD_CREATE, STR(0), (u64)args->uname, args->flags, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_memfd_create) { return sys_exit(args, args->ret, EVT_MEMFD_CREATE); }
#endif

/* ------------------------------------------------------------- namespaces and mounts */

#ifdef HAVE_TP_MOUNT
TRACEPOINT_PROBE(syscalls, sys_enter_mount) {
    return sys_enter_s(EVT_MOUNT, STR(0) | STR(1) | STR(2), (u64)args->dev_name, (u64)args->dir_name,
                       (u64)args->type, args->flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mount) { return sys_exit(args, args->ret, EVT_MOUNT); }
#endif
#ifdef HAVE_TP_UMOUNT
TRACEPOINT_PROBE(syscalls, sys_enter_umount) {
    return sys_enter_s(EVT_UMOUNT2, STR(0), (u64)args->name, (u64)(s64)args->flags, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_umount) { return sys_exit(args, args->ret, EVT_UMOUNT2); }
#endif
#ifdef HAVE_TP_MOVE_MOUNT
TRACEPOINT_PROBE(syscalls, sys_enter_move_mount) {
    return sys_enter_s(EVT_MOVE_MOUNT, STR(1) | STR(3), (u64)(s64)args->from_dfd, (u64)args->from_pathname,
                       (u64)(s64)args->to_dfd, (u64)args->to_pathname, args->flags, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_move_mount) { return sys_exit(args, args->ret, EVT_MOVE_MOUNT); }
#endif
#ifdef HAVE_TP_SETNS
TRACEPOINT_PROBE(syscalls, sys_enter_setns) {
    return sys_enter(EVT_SETNS, (u64)(s64)args->fd, (u64)(s64)args->flags, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setns) { return sys_exit(args, args->ret, EVT_SETNS); }
#endif
#ifdef HAVE_TP_UNSHARE
TRACEPOINT_PROBE(syscalls, sys_enter_unshare) {
    return sys_enter(EVT_UNSHARE, args->unshare_flags, 0, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_unshare) { return sys_exit(args, args->ret, EVT_UNSHARE); }
#endif
#ifdef HAVE_TP_PIVOT_ROOT
TRACEPOINT_PROBE(syscalls, sys_enter_pivot_root) {
    return sys_enter_s(EVT_PIVOT_ROOT, STR(0) | STR(1), (u64)args->new_root, (u64)args->put_old, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_pivot_root) { return sys_exit(args, args->ret, EVT_PIVOT_ROOT); }
#endif
#ifdef HAVE_TP_CHROOT
TRACEPOINT_PROBE(syscalls, sys_enter_chroot) {
    return sys_enter_s(EVT_CHROOT, STR(0), (u64)args->filename, 0, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_chroot) { return sys_exit(args, args->ret, EVT_CHROOT); }
#endif

/* ------------------------------------------------------------- signals (aimed at another process) */

#ifdef HAVE_TP_KILL
TRACEPOINT_PROBE(syscalls, sys_enter_kill) {
    s64 pid = (s32)args->pid;
    if (pid == (s64)(bpf_get_current_pid_tgid() >> 32))
        return 0;  /* to itself */
    return sys_enter(EVT_KILL, (u64)pid, (u64)(s64)args->sig, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_kill) { return sys_exit(args, args->ret, EVT_KILL); }
#endif
#ifdef HAVE_TP_TKILL
TRACEPOINT_PROBE(syscalls, sys_enter_tkill) {
    s64 tid = (s32)args->pid;
    if (tid == (s64)(u32)bpf_get_current_pid_tgid())
        return 0;
    return sys_enter(EVT_TKILL, (u64)tid, (u64)(s64)args->sig, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_tkill) { return sys_exit(args, args->ret, EVT_TKILL); }
#endif
#ifdef HAVE_TP_TGKILL
TRACEPOINT_PROBE(syscalls, sys_enter_tgkill) {
    s64 tgid = (s32)args->tgid;
    if (tgid == (s64)(bpf_get_current_pid_tgid() >> 32))
        return 0;
    return sys_enter(EVT_TGKILL, (u64)tgid, (u64)(s64)args->pid, (u64)(s64)args->sig, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_tgkill) { return sys_exit(args, args->ret, EVT_TGKILL); }
#endif
#ifdef HAVE_TP_PIDFD_SEND_SIGNAL
TRACEPOINT_PROBE(syscalls, sys_enter_pidfd_send_signal) {
    return sys_enter(EVT_PIDFD_SEND_SIGNAL, (u64)(s64)args->pidfd, (u64)(s64)args->sig, 0, args->flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_pidfd_send_signal) { return sys_exit(args, args->ret, EVT_PIDFD_SEND_SIGNAL); }
#endif
#ifdef HAVE_TP_PIDFD_GETFD
TRACEPOINT_PROBE(syscalls, sys_enter_pidfd_getfd) {
    return sys_enter(EVT_PIDFD_GETFD, (u64)(s64)args->pidfd, (u64)(s64)args->fd, args->flags, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_pidfd_getfd) { return sys_exit(args, args->ret, EVT_PIDFD_GETFD); }
#endif

/* Every signal generated for the agent, whichever call (or the kernel) sent it: tamper evidence. */
#ifdef HAVE_TP_SIGNAL_GENERATE
TRACEPOINT_PROBE(signal, signal_generate) {
    u32 target = (u32)args->pid;
    if (!is_agent_task(target))
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid) || args->sig == S_SIGCHLD)
        return 0;  /* its own signals, its children's exits */
    record_tamper(args, pid_tgid, TAMPER_SIGNAL, args->sig, target);
    return 0;
}
#endif
