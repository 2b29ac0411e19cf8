// SPDX-License-Identifier: GPL-2.0-only
/* File changes made without opening the file: unlink, rename, link, symlink, chmod, chown, mkdir, truncate,
 * utimensat and their *at forms. Appended to sentinel.c after sentinel_security.c by the loader; the same
 * entry/exit machinery (sys_enter_s/sys_exit): raw arguments stashed at entry, the path strings read at exit
 * into the event's string slots in argument order, failures included, never de-duplicated. Paths are resolved
 * against the cwd or the dirfd in user space, as for opens; utimensat's new times are read behind its
 * pointer (extra[0] atime seconds, extra[1] mtime seconds, extra[2] their nanoseconds, low and high half).
 */

#ifdef HAVE_TP_UNLINK
TRACEPOINT_PROBE(syscalls, sys_enter_unlink) {
    return sys_enter_s(EVT_UNLINK, STR(0),
                       (u64)args->pathname, 0, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_unlink) { return sys_exit(args, args->ret, EVT_UNLINK); }
#endif

#ifdef HAVE_TP_UNLINKAT
TRACEPOINT_PROBE(syscalls, sys_enter_unlinkat) {
    return sys_enter_s(EVT_UNLINKAT, STR(1),
                       (u64)(s64)args->dfd, (u64)args->pathname, (u64)(s64)args->flag, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_unlinkat) { return sys_exit(args, args->ret, EVT_UNLINKAT); }
#endif

#ifdef HAVE_TP_RMDIR
TRACEPOINT_PROBE(syscalls, sys_enter_rmdir) {
    return sys_enter_s(EVT_RMDIR, STR(0),
                       (u64)args->pathname, 0, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_rmdir) { return sys_exit(args, args->ret, EVT_RMDIR); }
#endif

#ifdef HAVE_TP_RENAME
TRACEPOINT_PROBE(syscalls, sys_enter_rename) {
    return sys_enter_s(EVT_RENAME, STR(0) | STR(1),
                       (u64)args->oldname, (u64)args->newname, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_rename) { return sys_exit(args, args->ret, EVT_RENAME); }
#endif

#ifdef HAVE_TP_RENAMEAT
TRACEPOINT_PROBE(syscalls, sys_enter_renameat) {
    return sys_enter_s(EVT_RENAMEAT, STR(1) | STR(3),
                       (u64)(s64)args->olddfd, (u64)args->oldname, (u64)(s64)args->newdfd, (u64)args->newname, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_renameat) { return sys_exit(args, args->ret, EVT_RENAMEAT); }
#endif

#ifdef HAVE_TP_RENAMEAT2
TRACEPOINT_PROBE(syscalls, sys_enter_renameat2) {
    return sys_enter_s(EVT_RENAMEAT2, STR(1) | STR(3), (u64)(s64)args->olddfd, (u64)args->oldname,
                       (u64)(s64)args->newdfd,
                       (u64)args->newname, args->flags, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_renameat2) { return sys_exit(args, args->ret, EVT_RENAMEAT2); }
#endif

#ifdef HAVE_TP_LINK
TRACEPOINT_PROBE(syscalls, sys_enter_link) {
    return sys_enter_s(EVT_LINK, STR(0) | STR(1),
                       (u64)args->oldname, (u64)args->newname, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_link) { return sys_exit(args, args->ret, EVT_LINK); }
#endif

#ifdef HAVE_TP_LINKAT
TRACEPOINT_PROBE(syscalls, sys_enter_linkat) {
    return sys_enter_s(EVT_LINKAT, STR(1) | STR(3), (u64)(s64)args->olddfd, (u64)args->oldname,
                       (u64)(s64)args->newdfd,
                       (u64)args->newname, (u64)(s64)args->flags, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_linkat) { return sys_exit(args, args->ret, EVT_LINKAT); }
#endif

#ifdef HAVE_TP_SYMLINK
TRACEPOINT_PROBE(syscalls, sys_enter_symlink) {
    return sys_enter_s(EVT_SYMLINK, STR(0) | STR(1),
                       (u64)args->oldname, (u64)args->newname, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_symlink) { return sys_exit(args, args->ret, EVT_SYMLINK); }
#endif

#ifdef HAVE_TP_SYMLINKAT
TRACEPOINT_PROBE(syscalls, sys_enter_symlinkat) {
    return sys_enter_s(EVT_SYMLINKAT, STR(0) | STR(2),
                       (u64)args->oldname, (u64)(s64)args->newdfd, (u64)args->newname, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_symlinkat) { return sys_exit(args, args->ret, EVT_SYMLINKAT); }
#endif

#ifdef HAVE_TP_CHMOD
TRACEPOINT_PROBE(syscalls, sys_enter_chmod) {
    return sys_enter_s(EVT_CHMOD, STR(0),
                       (u64)args->filename, args->mode, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_chmod) { return sys_exit(args, args->ret, EVT_CHMOD); }
#endif

#ifdef HAVE_TP_FCHMOD
TRACEPOINT_PROBE(syscalls, sys_enter_fchmod) { return sys_enter_s(EVT_FCHMOD, 0, args->fd, args->mode, 0, 0, 0, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_fchmod) { return sys_exit(args, args->ret, EVT_FCHMOD); }
#endif

#ifdef HAVE_TP_FCHMODAT
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat) {
    return sys_enter_s(EVT_FCHMODAT, STR(1),
                       (u64)(s64)args->dfd, (u64)args->filename, args->mode, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat) { return sys_exit(args, args->ret, EVT_FCHMODAT); }
#endif

#ifdef HAVE_TP_FCHMODAT2
TRACEPOINT_PROBE(syscalls, sys_enter_fchmodat2) {
    return sys_enter_s(EVT_FCHMODAT2, STR(1),
                       (u64)(s64)args->dfd, (u64)args->filename, args->mode, args->flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_fchmodat2) { return sys_exit(args, args->ret, EVT_FCHMODAT2); }
#endif

#ifdef HAVE_TP_CHOWN
TRACEPOINT_PROBE(syscalls, sys_enter_chown) {
    return sys_enter_s(EVT_CHOWN, STR(0),
                       (u64)args->filename, args->user, args->group, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_chown) { return sys_exit(args, args->ret, EVT_CHOWN); }
#endif

#ifdef HAVE_TP_FCHOWN
TRACEPOINT_PROBE(syscalls, sys_enter_fchown) {
    return sys_enter_s(EVT_FCHOWN, 0,
                       args->fd, args->user, args->group, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_fchown) { return sys_exit(args, args->ret, EVT_FCHOWN); }
#endif

#ifdef HAVE_TP_FCHOWNAT
TRACEPOINT_PROBE(syscalls, sys_enter_fchownat) {
    return sys_enter_s(EVT_FCHOWNAT, STR(1),
                       (u64)(s64)args->dfd, (u64)args->filename, args->user, args->group, (u64)(s64)args->flag, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_fchownat) { return sys_exit(args, args->ret, EVT_FCHOWNAT); }
#endif

#ifdef HAVE_TP_LCHOWN
TRACEPOINT_PROBE(syscalls, sys_enter_lchown) {
    return sys_enter_s(EVT_LCHOWN, STR(0),
                       (u64)args->filename, args->user, args->group, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_lchown) { return sys_exit(args, args->ret, EVT_LCHOWN); }
#endif

#ifdef HAVE_TP_MKDIR
TRACEPOINT_PROBE(syscalls, sys_enter_mkdir) {
    return sys_enter_s(EVT_MKDIR, STR(0),
                       (u64)args->pathname, args->mode, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mkdir) { return sys_exit(args, args->ret, EVT_MKDIR); }
#endif

#ifdef HAVE_TP_MKDIRAT
TRACEPOINT_PROBE(syscalls, sys_enter_mkdirat) {
    return sys_enter_s(EVT_MKDIRAT, STR(1),
                       (u64)(s64)args->dfd, (u64)args->pathname, args->mode, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mkdirat) { return sys_exit(args, args->ret, EVT_MKDIRAT); }
#endif

#ifdef HAVE_TP_TRUNCATE
TRACEPOINT_PROBE(syscalls, sys_enter_truncate) {
    return sys_enter_s(EVT_TRUNCATE, STR(0),
                       (u64)args->path, (u64)args->length, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_truncate) { return sys_exit(args, args->ret, EVT_TRUNCATE); }
#endif

#ifdef HAVE_TP_FTRUNCATE
TRACEPOINT_PROBE(syscalls, sys_enter_ftruncate) {
    return sys_enter_s(EVT_FTRUNCATE, 0,
                       args->fd, (u64)args->length, 0, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_ftruncate) { return sys_exit(args, args->ret, EVT_FTRUNCATE); }
#endif

#ifdef HAVE_TP_UTIMENSAT
TRACEPOINT_PROBE(syscalls, sys_enter_utimensat) {
    return sys_enter_s(EVT_UTIMENSAT, STR(1),
                       (u64)(s64)args->dfd, (u64)args->filename, (u64)args->utimes, (u64)(s64)args->flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_utimensat) { return sys_exit(args, args->ret, EVT_UTIMENSAT); }
#endif
