// SPDX-License-Identifier: GPL-2.0-only
/* The listening side of the network, datagrams and fd plumbing: bind, listen, accept, accept4, sendto,
 * sendmsg and sendmmsg (its first message) with a destination, dup, dup2, dup3. Appended to sentinel.c after sentinel_files.c by the loader;
 * the security-syscall machinery (sys_enter_s/sys_exit) reports each at exit, failures included. With the
 * socket offsets (HAVE_NET_OFFSETS) the exit reads the socket behind the fd from the kernel: the bound or
 * listening address, an accepted connection's peer, and for dup* whether the fd moved is a socket and to
 * whom (a socket on 0/1/2 is a reverse or bind shell).
 */

#ifdef HAVE_TP_BIND
TRACEPOINT_PROBE(syscalls, sys_enter_bind) {
    return sys_enter_s(EVT_BIND, 0, (u64)(s64)args->fd, (u64)args->umyaddr, (u64)(s64)args->addrlen, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_bind) { return sys_exit(args, args->ret, EVT_BIND); }
#endif

#ifdef HAVE_TP_LISTEN
TRACEPOINT_PROBE(syscalls, sys_enter_listen) {
    return sys_enter_s(EVT_LISTEN, 0, (u64)(s64)args->fd, (u64)(s64)args->backlog, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_listen) { return sys_exit(args, args->ret, EVT_LISTEN); }
#endif

#ifdef HAVE_TP_ACCEPT
TRACEPOINT_PROBE(syscalls, sys_enter_accept) {
    return sys_enter_s(EVT_ACCEPT, 0, (u64)(s64)args->fd, 0, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return sys_exit(args, args->ret, EVT_ACCEPT); }
#endif

#ifdef HAVE_TP_ACCEPT4
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) {
    return sys_enter_s(EVT_ACCEPT4, 0, (u64)(s64)args->fd, (u64)(s64)args->flags, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return sys_exit(args, args->ret, EVT_ACCEPT4); }
#endif

#ifdef HAVE_TP_DUP
TRACEPOINT_PROBE(syscalls, sys_enter_dup) { return sys_enter_s(EVT_DUP, 0, args->fildes, 0, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_dup) { return sys_exit(args, args->ret, EVT_DUP); }
#endif

#ifdef HAVE_TP_DUP2
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) {
    return sys_enter_s(EVT_DUP2, 0, args->oldfd, args->newfd, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return sys_exit(args, args->ret, EVT_DUP2); }
#endif

#ifdef HAVE_TP_DUP3
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) {
    return sys_enter_s(EVT_DUP3, 0, args->oldfd, args->newfd, (u64)(s64)args->flags, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return sys_exit(args, args->ret, EVT_DUP3); }
#endif

/* ---------------------------------------------------------------- datagrams */

/* The destination key and the map of destinations seen are in sentinel_security.c (sys_exit uses them). */

/* At entry: only sends with a destination the process has not sent to on this socket are stashed. */
static __always_inline int dgram_enter(u32 call, s64 fd, u64 sa, u64 a1, u64 a2) {
    if (!sa)
        return 0;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    if (is_self(pid_tgid))
        return 0;
    struct dgram_key k = {};
    if (dgram_key_of(&k, pid_tgid, fd, sa) < 0)
        return 0;
    if (dgram_seen.lookup(&k))
        return 0;
    return sys_enter_s(call, 0, (u64)fd, a1, a2, 0, sa, 0);
}

#ifdef HAVE_TP_SENDTO
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    return dgram_enter(EVT_SENDTO, (s64)args->fd, (u64)args->addr, args->len, args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return sys_exit(args, args->ret, EVT_SENDTO); }
#endif

#ifdef HAVE_TP_SENDMSG
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
    u64 name = 0;
    if (args->msg)
        bpf_probe_read_user(&name, sizeof(name), (const void *)args->msg);  /* msg->msg_name */
    return dgram_enter(EVT_SENDMSG, (s64)args->fd, name, 0, args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return sys_exit(args, args->ret, EVT_SENDMSG); }
#endif

#ifdef HAVE_TP_SENDMMSG
/* Only the first message's destination (msgvec[0].msg_hdr.msg_name, the first word of the vector): a batch
 * to several destinations is seen by its first. The exit's result is the number of messages sent. */
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) {
    u64 name = 0;
    if (args->mmsg && args->vlen)
        bpf_probe_read_user(&name, sizeof(name), (const void *)args->mmsg);
    return dgram_enter(EVT_SENDMMSG, (s64)args->fd, name, 0, args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return sys_exit(args, args->ret, EVT_SENDMMSG); }
#endif
