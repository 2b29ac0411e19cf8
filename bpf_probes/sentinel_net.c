/* The listening side of the network and fd plumbing: bind, listen, accept, accept4, dup, dup2, dup3. Appended
 * to sentinel.c after sentinel_files.c by the loader; the security-syscall machinery (sys_enter_s/sys_exit)
 * reports each at exit, failures included. With the socket offsets (HAVE_NET_OFFSETS) the exit reads the
 * socket behind the fd from the kernel: the bound or listening address, an accepted connection's peer, and
 * for dup* whether the fd moved is a socket and to whom (a socket on 0/1/2 is a reverse or bind shell).
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
