"""The fields a condition or an output can name: the single source for the compiler, ``sentinel fields`` and
``docs/fields.md``.

Names and meanings follow Falco's, for the events sentinel captures. Each field says, per event type, how
to read its value as a Python expression over ``ev`` (the Event), ``proc`` (the Process, known non-None in
that variant), ``path`` (the resolved path of an open/chdir) and ``ctx``; the compiler pastes those
expressions into the generated matcher, so a field costs an attribute read or one helper call (helpers:
``runtime.py``, called as ``_name``). ``None`` means the value is missing for that event: no check on it
holds (but ``not`` of one does).
Every other field of Falco's syscall source (``falco_fields``: libsinsp's and the container plugin's) is
registered too, always missing, so Falco rules naming them still load (the validator warns that they never
match); so are names under a ``DOTTED`` prefix (``evt.arg.NAME``, ``evt.type.is.NAME``), made on use.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field

from sentinel.events import SYSCALL_TYPES, EventType
from sentinel.file_changes import FILE_TYPES, TWO_PATHS
from sentinel.rules.falco_fields import FALCO_FIELDS
from sentinel.sockets import DATAGRAMS, SOCKET_TYPES
from sentinel.syscalls import SYSCALLS, TARGETED_TYPES
from sentinel.syscalls import USERNS_TYPES as _USERNS_TYPES

STRING = "string"
INT = "int"
FLOAT = "float"
BOOL = "bool"
IP = "ip"
IPNET = "ipnet"

EXEC, OPEN, CONNECT, FORK, EXIT, CHDIR, CONTAINER = (
    EventType.EXEC, EventType.OPEN, EventType.CONNECT, EventType.FORK, EventType.EXIT, EventType.CHDIR,
    EventType.CONTAINER,
)  # fmt: skip
SECURITY: tuple[EventType, ...] = tuple(sorted(SYSCALL_TYPES))  # the security syscalls (sentinel.syscalls)
ALL: tuple[EventType, ...] = (EXEC, OPEN, CONNECT, FORK, EXIT, CHDIR, CONTAINER, *SECURITY)
MAIN: tuple[EventType, ...] = (EXEC, OPEN, CONNECT)
TARGETED: tuple[EventType, ...] = tuple(sorted(TARGETED_TYPES))  # calls aimed at another process
FILE_TWO_PATHS: tuple[EventType, ...] = tuple(sorted(TWO_PATHS))
DATAGRAM_TYPES: tuple[EventType, ...] = tuple(sorted(DATAGRAMS))
SOCKET_TYPES_SORTED: tuple[EventType, ...] = tuple(sorted(SOCKET_TYPES))
FILE_ONE_PATH: tuple[EventType, ...] = tuple(sorted(t for t in FILE_TYPES if t not in TWO_PATHS))
USERNS_TYPES: tuple[EventType, ...] = tuple(sorted(_USERNS_TYPES))

# evt.type names that select an event type (Falco's syscall names; several name one event of ours).
EVENT_NAMES: dict[str, EventType] = {
    "execve": EXEC,
    "execveat": EXEC,
    "open": OPEN,
    "openat": OPEN,
    "openat2": OPEN,
    "creat": OPEN,
    "connect": CONNECT,
    "clone": FORK,
    "clone3": FORK,
    "fork": FORK,
    "vfork": FORK,
    "procexit": EXIT,
    "chdir": CHDIR,
    "fchdir": CHDIR,
    "container": CONTAINER,
    **{spec.name: t for t, spec in SYSCALLS.items()},
    "umount": EventType.UMOUNT2,  # Falco names both; umount(2) is umount2 without flags
}
# What a rule's evt.type value is compared as: names sentinel cannot tell apart share one value.
CANONICAL_EVENT_NAME = {
    "open": "openat",
    "fork": "clone",
    "vfork": "clone",
    "clone3": "clone",
    "umount": "umount2",
}

# Falco event names that exist but that sentinel does not capture (a rule naming only these never fires).
UNCAPTURED_EVENT_NAMES = frozenset(
    [
        "accept",
        "accept4",
        "bind",
        "bpf",
        "capset",
        "chmod",
        "chown",
        "chroot",
        "close",
        "dup",
        "dup2",
        "dup3",
        "execveat_e",
        "fchmod",
        "fchmodat",
        "fchown",
        "fchownat",
        "finit_module",
        "init_module",
        "delete_module",
        "ioctl",
        "kill",
        "link",
        "linkat",
        "listen",
        "llseek",
        "lseek",
        "mkdir",
        "mkdirat",
        "mmap",
        "mmap2",
        "mount",
        "mprotect",
        "munmap",
        "name_to_handle_at",
        "open_by_handle_at",
        "pipe",
        "pipe2",
        "pread",
        "prctl",
        "ptrace",
        "pwrite",
        "read",
        "readv",
        "recvfrom",
        "recvmsg",
        "rename",
        "renameat",
        "renameat2",
        "rmdir",
        "sendfile",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setgid",
        "setns",
        "setpgid",
        "setresgid",
        "setresuid",
        "setrlimit",
        "setsid",
        "setuid",
        "shutdown",
        "signalfd",
        "socket",
        "socketpair",
        "splice",
        "symlink",
        "symlinkat",
        "tgkill",
        "tkill",
        "umount",
        "umount2",
        "unlink",
        "unlinkat",
        "unshare",
        "userfaultfd",
        "write",
        "writev",
        "container",
        "k8s",
        "switch",
        "procinfo",
        "memfd_create",
        "pidfd_open",
        "pidfd_getfd",
        "process_vm_readv",
        "process_vm_writev",
        "quotactl",
        "seccomp",
        "timerfd_create",
        "inotify_init",
        "inotify_init1",
        "eventfd",
        "eventfd2",
        "epoll_create",
        "epoll_create1",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "copy_file_range",
        "mknod",
        "mknodat",
        "utimensat",
        "futimesat",
    ]
) - set(EVENT_NAMES)  # the security syscalls sentinel now captures


@dataclass(frozen=True, slots=True)
class Access:
    """How a field reads for one event type, as Python source the compiler inlines."""

    expr: str
    nullable: bool = False  # may evaluate to None (missing)
    cached: bool = False  # computed (not an attribute read): cache it per event when used twice
    domain: frozenset[object] | None = None  # every value it can take here: lets checks fold to constants
    multi: bool = False  # a list of values: a check holds if it holds for any of them


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One field. ``p``/``np`` are the expressions with and without a known process; ``by`` overrides both
    per event type. In ``{arg}`` forms the argument is pasted in (an int index, or a repr'd key)."""

    name: str
    type: str
    desc: str
    on: tuple[EventType, ...] = ALL  # event types that fill it (empty: never filled by sentinel)
    p: str | None = None
    np: str | None = None
    by: dict[EventType, str] = field(default_factory=dict)
    nullable: bool = False
    notnull: tuple[EventType, ...] = ()  # event types where a nullable field is never missing
    cached: bool = False
    domain: dict[EventType, frozenset[object]] = field(default_factory=dict)
    arg: str = ""  # "" none, "index"/"index?" required/optional int, "key"/"key?" required/optional text
    multi_p: str | None = None  # "index?" fields without an index: the list of every ancestor's value
    index: bool = False  # equality/prefix checks on it may drive the rule index
    path_like: bool = False  # absolute paths: startswith/pmatch checks can use the prefix index
    text: str | None = None  # name of a runtime helper that renders the value in output text
    on_demand: bool = False  # may compute something costly (the anomaly score) when read

    def access(self, etype: int, has_proc: bool, arg: int | str | None = None) -> Access | None:
        """The value for this event type, or None when it is always missing there."""
        if etype not in self.on:
            return None
        multi = False
        expr = self.by.get(etype)  # type: ignore[call-overload]
        if expr is None:
            if self.arg == "index?" and arg is None:
                expr = self.multi_p if has_proc else None
                multi = True
            else:
                expr = self.p if has_proc else self.np
        if expr is None:
            return None
        if "{arg}" in expr:
            expr = expr.replace("{arg}", repr(arg))
        return Access(
            expr=expr,
            nullable=self.nullable and etype not in self.notnull,
            cached=self.cached or multi,
            domain=self.domain.get(etype),  # type: ignore[call-overload]
            multi=multi,
        )

    @property
    def filled(self) -> bool:
        return bool(self.on)


def _ds(*values: object) -> frozenset[object]:
    return frozenset(values)


_NEVER: tuple[EventType, ...] = ()
_PROCT = ALL
_INET = "the destination of an outbound connect (AF_INET/AF_INET6)"

# The anomaly model's fields: (name after `ml.`, type, event types, description); read through ctx.ml.
_ML_FIELDS: tuple[tuple[str, str, tuple[EventType, ...], str], ...] = (
    ("score", FLOAT, MAIN, "Anomaly score in (0, 1] from the active model's isolation forest for "
     "this event type (2^(-mean path depth / c)); higher is more unusual on this host. Missing while "
     "the agent learns or with no model. Computed on first use: put cheaper checks before it."),
    ("threshold", FLOAT, MAIN, "The active model's alert threshold for this event type."),
    ("anomalous", BOOL, MAIN, "`ml.score` above `ml.threshold` (computes the score, as ml.score)."),
    ("novelty.exe", FLOAT, (EXEC,), "How unexpected it is that this host runs this program: 0 when it ran "
     "before, else -log of the host's chance of a new program (higher: the host rarely runs new ones)."),
    ("novelty.child", FLOAT, (EXEC,), "0 when the parent program started this program before, else how "
     "unexpected a new child is for that parent."),
    ("novelty.user", FLOAT, (EXEC,), "0 when the program ran as this user before, else how unexpected."),
    ("novelty.read_dir", FLOAT, (OPEN,), "0 when the program read from this directory before, else how "
     "unexpected a new directory is for this program (missing for opens that can write)."),
    ("novelty.write_dir", FLOAT, (OPEN,), "0 when the program opened files in this directory for writing "
     "before, else how unexpected (missing for read-only opens)."),
    ("novelty.port", FLOAT, (CONNECT,), "0 when the program connected to this port before, else how "
     "unexpected a new port is for this program."),
    ("novelty.dest", FLOAT, (CONNECT,), "0 when the program connected to this address range (IPv4 /24, "
     "IPv6 /64, a unix socket's path with ids in its directory normalised) before, else how unexpected."),
    ("novelty.host_dest", FLOAT, (CONNECT,), "0 when any program on this host connected to this range "
     "before, else how unexpected (missing for unix sockets)."),
    ("seen.exe", INT, (EXEC,), "Times this host ran the program before this event."),
    ("seen.child", INT, (EXEC,), "Times the parent program started this program before."),
    ("seen.user", INT, (EXEC,), "Times the program ran as this user before."),
    ("seen.read_dir", INT, (OPEN,), "Times the program read from this directory before (missing for opens "
     "that can write)."),
    ("seen.write_dir", INT, (OPEN,), "Times the program opened files in this directory for writing before "
     "(missing for read-only opens)."),
    ("seen.port", INT, (CONNECT,), "Times the program connected to this port before."),
    ("seen.dest", INT, (CONNECT,), "Times the program connected to this address range before."),
    ("seen.host_dest", INT, (CONNECT,), "Times any program here connected to this address range before."),
    ("new_dest", BOOL, (CONNECT,), "No program on this host connected to the destination's range before "
     "(missing for unix sockets)."),
)  # fmt: skip

# What the container runtimes say (sentinel.containers.meta_view.MetaFields, one per container): one dict
# lookup by the container's full id, the host's values for the host, every field missing until the runtime
# answered (or when it cannot: sentinel.container.metadata in documents says which).
_META = "(_HOST_META if proc.container is None else ctx.containers.get(proc.container.full_id, _NO_META))"
_POD_UID = (
    "(None if proc.container is None else "
    "(proc.container.pod_uid or ctx.containers.get(proc.container.full_id, _NO_META).pod_uid))"
)
_UNTIL = " Missing until the runtime answered (and when it could not)."
_HOST_EMPTY = " Empty on the host."


def _runtime_field(name: str, ftype: str, attr: str, desc: str, host: object, arg: str = "") -> FieldDef:
    expr = f"{_META}.{attr}" + (".get({arg})" if arg else "")
    return FieldDef(name, ftype, desc, p=expr, np=repr(host) if host is not None else None, nullable=True,
                    cached=True, arg=arg)  # fmt: skip


def _mount_field(name: str, attr: str, desc: str) -> FieldDef:
    return FieldDef(name, STRING, desc + _UNTIL + " Missing on the host.", p=f"{_META}.mount_value({{arg}}, "
                    f"{attr!r})", nullable=True, cached=True, arg="key")  # fmt: skip


_RUNTIME_FIELDS: tuple[FieldDef, ...] = (
    _runtime_field("container.name", STRING, "name", "The runtime's name for the container (`docker ps`'s "
                   "NAMES, a pod container's Kubernetes name); `host` on the host." + _UNTIL, "host"),
    _runtime_field("container.image", STRING, "image", "The image as the container's creator gave it "
                   "(`nginx:1.25`, `docker.io/library/nginx@sha256:...`)." + _UNTIL + _HOST_EMPTY, ""),
    _runtime_field("container.image.repository", STRING, "image_repository", "The image's repository, as "
                   "written (`nginx`; podman and the CRI runtimes write `docker.io/library/nginx`); empty "
                   "when the reference cannot be parsed." + _UNTIL + _HOST_EMPTY, ""),
    _runtime_field("container.image.tag", STRING, "image_tag", "The image's tag (`latest` when the "
                   "reference has neither tag nor digest; empty when pinned by digest only)." + _UNTIL
                   + _HOST_EMPTY, ""),
    _runtime_field("container.image.digest", STRING, "image_digest", "The image's registry digest "
                   "(`sha256:...`), from the reference or the image's repo digests; empty when the image "
                   "has none (built locally)." + _UNTIL + _HOST_EMPTY, ""),
    _runtime_field("container.image.id", STRING, "image_id", "The image's id: 64 hex digits, without "
                   "`sha256:`." + _UNTIL + _HOST_EMPTY, ""),
    _runtime_field("container.privileged", BOOL, "privileged", "The container runs privileged "
                   "(`--privileged`, a privileged security context); false on the host. Missing until the "
                   "runtime answered, and when it does not say (CRI runtimes without verbose info): unknown "
                   "is not false.",
                   False),
    _runtime_field("container.host_network", BOOL, "host_network", "The container shares the host's network "
                   "namespace (`--network host`, `hostNetwork`); false on the host." + _UNTIL, False),
    _runtime_field("container.host_pid", BOOL, "host_pid", "The container shares the host's pid namespace "
                   "(`--pid host`, `hostPID`); false on the host." + _UNTIL, False),
    _runtime_field("container.host_ipc", BOOL, "host_ipc", "The container shares the host's IPC namespace; "
                   "false on the host." + _UNTIL, False),
    _runtime_field("container.labels", STRING, "labels", "The container's labels as Falco writes them: "
                   "`k1:v1, k2:v2` sorted by key (`k` alone for an empty value), without kubelet's "
                   "`io.kubernetes.*` and `annotation.*` ones." + _UNTIL + _HOST_EMPTY, ""),
    _runtime_field("container.label", STRING, "label", "One label of the container, by key "
                   "(`container.label[com.docker.compose.service]`, kubelet's included); missing when it has "
                   "none by that key." + _UNTIL, None, arg="key"),
    _runtime_field("container.mounts", STRING, "mounts_text", "The container's mounts as Falco writes them: "
                   "`source:dest:mode:rdwr:propagation` each, comma-separated (Docker and podman: every "
                   "mount; CRI: kubelet's volumes)." + _UNTIL + " Missing on the host.", None),
    _mount_field("container.mount", "text", "One mount, `source:dest:mode:rdwr:propagation`, by number "
                 "(`container.mount[0]`) or by source path, a glob (`container.mount[/var/run/*]`); `none` "
                 "when it has no such mount."),
    _mount_field("container.mount.source", "source", "The source (on the host) of one mount, by number or "
                 "by destination path, a glob; `N/A` when it has no such mount."),
    _mount_field("container.mount.dest", "destination", "The destination (in the container) of one mount, "
                 "by number or by source path, a glob (`container.mount.dest[/proc*]`); `N/A` when it has no "
                 "such mount (Falco's rules compare with `N/A`)."),
    _mount_field("container.mount.mode", "mode", "The mode of one mount as the runtime wrote it (Docker's "
                 "`z`, `ro`...; empty for CRI), by number or source path; `N/A` when none."),
    _mount_field("container.mount.rdwr", "rw", "`true` when one mount is writable, `false` when read-only, "
                 "by number or source path; `N/A` when none."),
    _mount_field("container.mount.propagation", "propagation", "The propagation of one mount (`rprivate`, "
                 "`rslave`, `rshared`), by number or source path; `N/A` when none."),
    _runtime_field("k8s.pod.name", STRING, "pod_name", "The Kubernetes pod the container belongs to, from "
                   "the runtime (kubelet's labels or the CRI sandbox; no API server is asked). Missing "
                   "outside a pod, on the host, and until the runtime answered.", None),
    _runtime_field("k8s.ns.name", STRING, "pod_namespace", "The pod's namespace (as k8s.pod.name).", None),
    FieldDef("k8s.pod.uid", STRING, "The pod's uid: from the cgroup path kubelet made (so there from the "
             "first event), else from the runtime's answer. Missing outside a pod and on the host.",
             p=_POD_UID, nullable=True, cached=True),
    FieldDef("k8s.pod.id", STRING, "Falco's legacy name of k8s.pod.uid.", p=_POD_UID, nullable=True,
             cached=True),
    _runtime_field("k8s.pod.sandbox_id", STRING, "pod_sandbox_id", "The pod sandbox's id, its first 12 "
                   "characters; empty outside a pod and on the host." + _UNTIL, ""),
    _runtime_field("k8s.pod.full_sandbox_id", STRING, "pod_full_sandbox_id", "The pod sandbox's whole id; "
                   "empty outside a pod and on the host." + _UNTIL, ""),
    _runtime_field("k8s.pod.labels", STRING, "pod_labels", "The pod's labels (`k1:v1, k2:v2`, as "
                   "container.labels); empty outside a pod and on the host." + _UNTIL, ""),
    _runtime_field("k8s.pod.label", STRING, "pod_label", "One label of the pod, by key "
                   "(`k8s.pod.label[app]`); missing when it has none by that key, outside a pod and on the "
                   "host." + _UNTIL, None, arg="key"),
)

FIELDS_LIST: list[FieldDef] = [
    # --------------------------------------------------------------------------------------------- evt
    FieldDef(
        "evt.type",
        STRING,
        "Event name: execve/execveat (exec), openat/openat2/creat (open), connect, clone (fork), procexit, "
        "chdir/fchdir, container (the agent's own event when a container's runtime metadata arrived: "
        "Falco's `container` event), and the security syscalls by name (setuid, ptrace, mount, umount2...). "
        "In conditions `open` compares equal to `openat`, `fork`/`vfork`/`clone3` to `clone` (sentinel "
        "cannot tell them apart) and `umount` to `umount2`.",
        by={
            EXEC: '("execveat" if ev.flags & 4 else "execve")',
            OPEN: '("openat2" if ev.flags & 8 else "creat" if ev.flags & 16 else "openat")',
            CONNECT: '"connect"',
            FORK: '"clone"',
            EXIT: '"procexit"',
            CHDIR: '("chdir" if ev.path else "fchdir")',
            CONTAINER: '"container"',
            **{t: repr(SYSCALLS[t].name) for t in SECURITY},
        },
        domain={
            EXEC: _ds("execve", "execveat"),
            OPEN: _ds("openat", "openat2", "creat"),
            CONNECT: _ds("connect"),
            FORK: _ds("clone"),
            EXIT: _ds("procexit"),
            CHDIR: _ds("chdir", "fchdir"),
            CONTAINER: _ds("container"),
            **{t: _ds(SYSCALLS[t].name) for t in SECURITY},
        },
    ),
    FieldDef(
        "evt.time",
        INT,
        "Event time (kernel time of the syscall's exit) as wall-clock epoch nanoseconds; output text shows "
        "it as HH:MM:SS.nnnnnnnnn (UTC), JSON output fields as the integer.",
        p="ctx.wall_ns",
        np="ctx.wall_ns",
        text="time_text",
    ),
    FieldDef(
        "evt.rawtime", INT, "Event time as wall-clock epoch nanoseconds.", p="ctx.wall_ns", np="ctx.wall_ns"
    ),
    FieldDef(
        "evt.rawtime.s",
        INT,
        "Whole seconds of evt.rawtime.",
        p="(ctx.wall_ns // 1_000_000_000)",
        np="(ctx.wall_ns // 1_000_000_000)",
    ),
    FieldDef(
        "evt.rawtime.ns",
        INT,
        "Nanoseconds within the second of evt.rawtime.",
        p="(ctx.wall_ns % 1_000_000_000)",
        np="(ctx.wall_ns % 1_000_000_000)",
    ),
    FieldDef(
        "evt.source",
        STRING,
        "Event source: always `syscall` (every event sentinel captures is a syscall's).",
        p='"syscall"',
        np='"syscall"',
        domain={t: _ds("syscall") for t in ALL},
    ),
    FieldDef(
        "evt.time.iso8601",
        STRING,
        "Event time as ISO 8601 UTC with nanoseconds.",
        p="_iso8601(ctx.wall_ns)",
        np="_iso8601(ctx.wall_ns)",
        cached=True,
    ),
    FieldDef(
        "evt.dir",
        STRING,
        "Event direction: always `<` (sentinel reports syscalls at exit).",
        p='"<"',
        np='"<"',
        domain={t: _ds("<") for t in ALL},
    ),
    FieldDef(
        "evt.res",
        STRING,
        "Result: `SUCCESS`, or the errno name of a failure (`ENOENT`, `EINPROGRESS` ...).",
        p='("SUCCESS" if ev.ret >= 0 else _errno_name(ev.ret))',
        np='("SUCCESS" if ev.ret >= 0 else _errno_name(ev.ret))',
    ),
    FieldDef(
        "evt.rawres", INT, "Raw result: fd or 0 on success, -errno on failure.", p="ev.ret", np="ev.ret"
    ),
    FieldDef(
        "evt.failed",
        BOOL,
        "True when the syscall failed (any negative result).",
        p="(ev.ret < 0)",
        np="(ev.ret < 0)",
    ),
    FieldDef(
        "evt.is_open_read",
        BOOL,
        "Open for reading (O_RDONLY or O_RDWR).",
        on=(OPEN,),
        by={OPEN: "((ev.open_flags & 3) in (0, 2))"},
    ),
    FieldDef(
        "evt.is_open_write",
        BOOL,
        "Open for writing (O_WRONLY or O_RDWR).",
        on=(OPEN,),
        by={OPEN: "((ev.open_flags & 3) in (1, 2))"},
    ),
    FieldDef(
        "evt.is_open_create",
        BOOL,
        "The open created the file (the kernel's FMODE_CREATED, as Falco's driver reads it); where that is "
        "not known (no kernel offsets, an older capture), a successful open with O_CREAT (or creat(2)).",
        on=(OPEN,),
        by={OPEN: "(ev.created is not False)"},
    ),
    FieldDef(
        "evt.arg.flags",
        STRING,
        "Open flags as Falco prints them: `O_WRONLY|O_CREAT|O_TRUNC`, with `O_F_CREATED` when the open "
        "created the file.",
        on=(OPEN,),
        by={OPEN: "(_flags_text(ev.open_flags) + ('|O_F_CREATED' if ev.flags & 8192 else ''))"},
        cached=True,
    ),
    FieldDef(
        "evt.rawarg.flags",
        INT,
        "Open flags as the number the kernel got.",
        on=(OPEN,),
        by={OPEN: "ev.open_flags"},
    ),
    FieldDef(
        "evt.arg.mode",
        STRING,
        "Mode given to an open, in octal (`0644`); meaningful with O_CREAT.",
        on=(OPEN,),
        by={OPEN: "_mode_text(ev.mode)"},
    ),
    FieldDef("evt.rawarg.mode", INT, "Mode given to an open, as a number.", on=(OPEN,), by={OPEN: "ev.mode"}),
    FieldDef(
        "evt.arg.name", STRING, "Path as passed to open (not resolved).", on=(OPEN,), by={OPEN: "ev.path"}
    ),
    FieldDef(
        "evt.arg.path",
        STRING,
        "Path as passed to open or chdir (not resolved).",
        on=(OPEN, CHDIR),
        by={OPEN: "ev.path", CHDIR: "(ev.path or None)"},
        nullable=True,
    ),
    FieldDef(
        "evt.arg.filename",
        STRING,
        "Executable path as passed to execve/execveat.",
        on=(EXEC,),
        by={EXEC: "ev.filename"},
    ),
    FieldDef(
        "evt.arg.fd",
        INT,
        "The fd a connect used, or the fd an open returned (negative on failure).",
        on=(OPEN, CONNECT),
        by={OPEN: "ev.ret", CONNECT: "ev.fd"},
    ),
    FieldDef(
        "evt.arg.dirfd",
        INT,
        "Directory fd of openat/openat2/execveat (-100 for AT_FDCWD).",
        on=(OPEN, EXEC),
        by={OPEN: "ev.dirfd", EXEC: "ev.dirfd"},
    ),
    FieldDef(
        "evt.arg.res",
        INT,
        "Result of exec, connect or chdir (0 or -errno).",
        on=(EXEC, CONNECT, CHDIR),
        by={EXEC: "ev.ret", CONNECT: "ev.ret", CHDIR: "ev.ret"},
    ),
    FieldDef(
        "evt.rawarg.res",
        INT,
        "Same as evt.arg.res.",
        on=(EXEC, CONNECT, CHDIR),
        by={EXEC: "ev.ret", CONNECT: "ev.ret", CHDIR: "ev.ret"},
    ),
    FieldDef(
        "evt.arg.tuple",
        STRING,
        "Connect's address tuple, as fd.name.",
        on=(CONNECT,),
        by={CONNECT: "_connect_name(ev)"},
        nullable=True,
    ),
    FieldDef(
        "evt.num",
        INT,
        "Event number: not captured (always missing; Falco's `never_true` macro, `evt.num=0`, stays false).",
        on=_NEVER,
    ),
    # --------------------------------------------------------------------------------------------- proc
    FieldDef("proc.pid", INT, "Process id (thread-group id).", p="proc.pid", np="ev.pid", index=True),
    FieldDef("thread.tid", INT, "Thread id.", p="ev.tid", np="ev.tid"),
    FieldDef(
        "thread.ismain",
        BOOL,
        "The thread is its process's main thread (thread.tid = proc.pid).",
        p="(ev.tid == ev.pid)",
        np="(ev.tid == ev.pid)",
    ),
    FieldDef(
        "thread.cap_effective",
        STRING,
        "Effective capabilities of the thread at the event, names separated by spaces "
        "(`thread.cap_effective contains CAP_SYS_ADMIN`). Missing without BTF.",
        p="_cap_text(proc.creds.cap_effective if proc.creds is not None else None)",
        nullable=True,
    ),
    FieldDef(
        "thread.cap_permitted",
        STRING,
        "Permitted capabilities of the thread at the event, as thread.cap_effective.",
        p="_cap_text(proc.creds.cap_permitted if proc.creds is not None else None)",
        nullable=True,
    ),
    FieldDef(
        "proc.ppid", INT, "Parent process id (the original parent, kept when re-parented).", p="proc.ppid"
    ),
    FieldDef(
        "proc.vpid",
        INT,
        "Process id in its own pid namespace, as the process sees itself: a container's first process is 1 "
        "(Falco's `container_started` macro: `spawned_process and proc.vpid=1 and container`), a process on "
        "the host has its proc.pid. From its exec or fork event (the probe reads the kernel's struct pid), "
        "else /proc (NStgid); missing without the kernel offsets for a process first seen forked.",
        p="proc.vpid",
        nullable=True,
    ),
    FieldDef(
        "proc.pvpid",
        INT,
        "The parent's proc.vpid: its id in its own pid namespace (a container's first process has a parent "
        "on the host, whose vpid is its host pid).",
        p="(proc.parent.vpid if proc.parent is not None else None)",
        nullable=True,
    ),
    FieldDef(
        "thread.vtid",
        INT,
        "Thread id in the process's pid namespace: the process's main thread only (thread.tid = proc.pid, "
        "whose vtid is proc.vpid; every exec that succeeds is the main thread's); missing for other threads.",
        p="(proc.vpid if ev.tid == proc.pid else None)",
        nullable=True,
    ),
    FieldDef(
        "proc.name",
        STRING,
        "Process name (its comm: at most 15 characters, and settable by the process).",
        p="proc.comm",
        np="ev.comm",
        index=True,
    ),
    FieldDef(
        "proc.exe",
        STRING,
        "First command-line argument (argv[0]), usually how the program was called.",
        p="_argv0(proc)",
        nullable=True,
        index=True,
    ),
    FieldDef(
        "proc.exepath",
        STRING,
        "Resolved absolute path of the executable (symlinks resolved); `memfd:NAME` for a memfd "
        "(see proc.is_exe_from_memfd, proc.is_exe_deleted).",
        p="(proc.exe or None)",
        nullable=True,
        index=True,
        path_like=True,
    ),
    FieldDef(
        "proc.args", STRING, "Arguments (argv[1:]) joined by spaces.", p="_args_text(proc)", cached=True
    ),
    FieldDef(
        "proc.cmdline",
        STRING,
        "proc.name followed by the arguments: `bash -c id`.",
        p="_cmdline(proc)",
        cached=True,
    ),
    FieldDef("proc.cmdnargs", INT, "Number of arguments (argv[1:]).", p="max(len(proc.args) - 1, 0)"),
    FieldDef(
        "proc.cmdlenargs",
        INT,
        "Total length of the arguments, spaces between them included.",
        p="_cmdlenargs(proc)",
    ),
    FieldDef(
        "proc.cwd",
        STRING,
        "Current working directory.",
        p="(proc.cwd or None)",
        nullable=True,
        index=True,
        path_like=True,
    ),
    FieldDef(
        "proc.tty",
        INT,
        "Controlling terminal as /proc/PID/stat's tty_nr (read by the probe at exec, else from /proc; "
        "0 when none).",
        p="proc.tty_nr",
    ),
    FieldDef("proc.duration", INT, "Nanoseconds since the process started.", p="(ev.ts_ns - proc.start_ns)"),
    FieldDef(
        "proc.is_exe_from_memfd",
        BOOL,
        "The executable is a memfd (fileless execution): the kernel's own view of the file the process runs "
        "(no links, on the memfd filesystem), not its name; proc.exepath is then `memfd:NAME`.",
        p="proc.exe_memfd",
    ),
    FieldDef(
        "proc.is_exe_deleted",
        BOOL,
        "The executable file has no links left: deleted before the exec (executed from an open fd) or seen "
        "deleted in /proc (deleted after the exec, for processes the agent found running).",
        p="proc.exe_deleted",
    ),
    FieldDef(
        "proc.pname",
        STRING,
        "Parent's name.",
        p="(proc.parent.comm if proc.parent is not None else None)",
        nullable=True,
        index=True,
    ),
    FieldDef(
        "proc.pexe",
        STRING,
        "Parent's argv[0].",
        p="(_argv0(proc.parent) if proc.parent is not None else None)",
        nullable=True,
    ),
    FieldDef(
        "proc.pexepath",
        STRING,
        "Parent's resolved executable path.",
        p="((proc.parent.exe or None) if proc.parent is not None else None)",
        nullable=True,
        index=True,
        path_like=True,
    ),
    FieldDef(
        "proc.pcmdline",
        STRING,
        "Parent's command line (as proc.cmdline).",
        p="(_cmdline(proc.parent) if proc.parent is not None else None)",
        nullable=True,
        cached=True,
    ),
    FieldDef(
        "proc.aname",
        STRING,
        "Name of an ancestor: [0] the process, [1] its parent, [2] the grandparent "
        "...; without an index a check holds if it holds for any ancestor (parent and up).",
        p="_aname(proc, {arg})",
        multi_p="[a.comm for a in _ancestors(proc)]",
        nullable=True,
        arg="index?",
        index=True,
    ),
    FieldDef(
        "proc.aexe",
        STRING,
        "argv[0] of an ancestor (indexed like proc.aname).",
        p="_aexe(proc, {arg})",
        multi_p="[_argv0(a) for a in _ancestors(proc)]",
        nullable=True,
        arg="index?",
    ),
    FieldDef(
        "proc.aexepath",
        STRING,
        "Executable path of an ancestor (indexed like proc.aname).",
        p="_aexepath(proc, {arg})",
        multi_p="[a.exe or None for a in _ancestors(proc)]",
        nullable=True,
        arg="index?",
        index=True,
        path_like=True,
    ),
    FieldDef(
        "proc.apid",
        INT,
        "Pid of an ancestor (indexed like proc.aname).",
        p="_apid(proc, {arg})",
        multi_p="[a.pid for a in _ancestors(proc)]",
        nullable=True,
        arg="index?",
    ),
    FieldDef(
        "proc.acmdline",
        STRING,
        "Command line of an ancestor (indexed like proc.aname).",
        p="_acmdline(proc, {arg})",
        multi_p="[_cmdline(a) for a in _ancestors(proc)]",
        nullable=True,
        arg="index?",
    ),
    # --------------------------------------------------------------------------------------------- user
    FieldDef(
        "user.uid",
        INT,
        "Effective user id of the thread at the event, as Falco's drivers report it (the real user id when "
        "the probes cannot read credentials: no BTF).",
        p="_euid(proc, ev)",
        np="ev.uid",
        index=True,
    ),
    FieldDef(
        "user.name",
        STRING,
        "User name of user.uid (from the host's user database).",
        p="_euser_name(proc, ev)",
        nullable=True,
        index=True,
    ),
    FieldDef(
        "user.loginuid",
        INT,
        "Audit login uid: who logged in, kept across sudo and su; -1 when nobody did (daemons). Missing "
        "without BTF or CONFIG_AUDIT.",
        p="_loginuid(proc)",
        nullable=True,
    ),
    FieldDef(
        "user.loginname",
        STRING,
        "User name of user.loginuid; missing when nobody logged in.",
        p="_loginname(proc)",
        nullable=True,
    ),
    FieldDef("group.gid", INT, "Real group id of the thread at the event.", p="ev.gid", np="ev.gid"),
    FieldDef("group.name", STRING, "Group name of group.gid.", p="proc.group_name", nullable=True),
    # --------------------------------------------------------------------------------------------- fd
    FieldDef(
        "fd.name",
        STRING,
        "open/chdir: the absolute, normalised path (relative paths resolved against cwd or dirfd); connect: "
        "`0.0.0.0:0->IP:PORT` (`:::0->` for IPv6; the client side is not captured), or the unix socket path.",
        on=(OPEN, CONNECT, CHDIR),
        by={OPEN: "path", CONNECT: "_connect_name(ev)", CHDIR: "path"},
        nullable=True,
        notnull=(OPEN,),
        index=True,
        path_like=True,
    ),
    FieldDef(
        "fd.nameraw",
        STRING,
        "open/chdir: the path as passed; connect: as fd.name.",
        on=(OPEN, CONNECT, CHDIR),
        by={OPEN: "ev.path", CONNECT: "_connect_name(ev)", CHDIR: "(ev.path or None)"},
        nullable=True,
        notnull=(OPEN,),
        index=True,
    ),
    FieldDef(
        "fd.directory",
        STRING,
        "Directory of fd.name (`/` for top-level names).",
        on=(OPEN, CHDIR),
        by={OPEN: "_dirname(path)", CHDIR: "_dirname(path)"},
        nullable=True,
        cached=True,
        index=True,
        path_like=True,
    ),
    FieldDef(
        "fd.filename",
        STRING,
        "Last component of fd.name.",
        on=(OPEN, CHDIR),
        by={OPEN: 'path[path.rfind("/") + 1 :]', CHDIR: "_basename(path)"},
        nullable=True,
        notnull=(OPEN,),
        cached=True,
        index=True,
    ),
    FieldDef(
        "fd.typechar",
        STRING,
        "`f` file, `d` directory (O_DIRECTORY opens, chdir), `4` IPv4, `6` IPv6, `u` unix socket, `o` other.",
        on=(OPEN, CONNECT, CHDIR),
        by={OPEN: '("d" if ev.open_flags & 65536 else "f")', CONNECT: "_sock_typechar(ev)", CHDIR: '"d"'},
        domain={OPEN: _ds("f", "d"), CONNECT: _ds("4", "6", "u", "o"), CHDIR: _ds("d")},
    ),
    FieldDef(
        "fd.type",
        STRING,
        "`file`, `directory`, `ipv4`, `ipv6` or `unix`.",
        on=(OPEN, CONNECT, CHDIR),
        by={
            OPEN: '("directory" if ev.open_flags & 65536 else "file")',
            CONNECT: "_sock_type(ev)",
            CHDIR: '"directory"',
        },
        nullable=True,
        domain={
            OPEN: _ds("file", "directory"),
            CONNECT: _ds("ipv4", "ipv6", "unix", None),
            CHDIR: _ds("directory"),
        },
    ),
    FieldDef(
        "fd.num",
        INT,
        "open: the fd returned, -1 when the open failed (as Falco's `open_file_failed` expects; the errno is "
        "in evt.res and evt.rawres); connect, bind, listen, sendto, sendmsg, sendmmsg: the socket fd passed; "
        "accept, dup: the fd made, -1 when the call failed.",
        on=(OPEN, CONNECT),
        by={OPEN: "(ev.ret if ev.ret >= 0 else -1)", CONNECT: "ev.fd"},
    ),
    FieldDef(
        "fd.ip",
        IP,
        f"IP of either end: {_INET} (the client end is not captured).",
        on=(CONNECT,),
        by={CONNECT: "_inet_addr(ev)"},
        nullable=True,
    ),
    FieldDef(
        "fd.sip",
        IP,
        f"Server IP: {_INET}. Compares with IPs or CIDRs.",
        on=(CONNECT,),
        by={CONNECT: "_inet_addr(ev)"},
        nullable=True,
        index=True,
    ),
    FieldDef(
        "fd.rip",
        IP,
        f"Remote IP: {_INET}.",
        on=(CONNECT,),
        by={CONNECT: "_inet_addr(ev)"},
        nullable=True,
        index=True,
    ),
    FieldDef(
        "fd.sport",
        INT,
        f"Server port: {_INET}.",
        on=(CONNECT,),
        by={CONNECT: "_inet_port(ev)"},
        nullable=True,
        index=True,
    ),
    FieldDef(
        "fd.rport",
        INT,
        f"Remote port: {_INET}.",
        on=(CONNECT,),
        by={CONNECT: "_inet_port(ev)"},
        nullable=True,
        index=True,
    ),
    FieldDef(
        "fd.port", INT, f"Port of {_INET}.", on=(CONNECT,), by={CONNECT: "_inet_port(ev)"}, nullable=True
    ),
    FieldDef(
        "fd.snet",
        IPNET,
        f'Server network, compared with CIDRs (`fd.snet in ("10.0.0.0/8")`): {_INET}.',
        on=(CONNECT,),
        by={CONNECT: "_inet_addr(ev)"},
        nullable=True,
    ),
    FieldDef(
        "fd.rnet",
        IPNET,
        "Remote network, as fd.snet.",
        on=(CONNECT,),
        by={CONNECT: "_inet_addr(ev)"},
        nullable=True,
    ),
    FieldDef(
        "fd.net",
        IPNET,
        "Either end's network, as fd.snet (only the server end is captured).",
        on=(CONNECT,),
        by={CONNECT: "_inet_addr(ev)"},
        nullable=True,
    ),
    FieldDef(
        "fd.sockfamily",
        STRING,
        "`ip` or `unix`.",
        on=(CONNECT,),
        by={CONNECT: "_sock_family(ev)"},
        nullable=True,
        domain={CONNECT: _ds("ip", "unix", None)},
    ),
    FieldDef(
        "fd.l4proto",
        STRING,
        "`tcp` or `udp` (from the socket type); missing when not known.",
        on=(CONNECT,),
        by={CONNECT: "_l4proto(ev)"},
        nullable=True,
        domain={CONNECT: _ds("tcp", "udp", None)},
    ),
    FieldDef("fd.cip", IP, "Client IP: not captured (always missing).", on=_NEVER),
    FieldDef("fd.cport", INT, "Client port: not captured (always missing).", on=_NEVER),
    FieldDef("fd.lip", IP, "Local IP: not captured (always missing).", on=_NEVER),
    FieldDef("fd.lport", INT, "Local port: not captured (always missing).", on=_NEVER),
    FieldDef("fd.cnet", IPNET, "Not captured (always missing).", on=_NEVER),
    FieldDef("fd.lnet", IPNET, "Not captured (always missing).", on=_NEVER),
    FieldDef(
        "fd.connected",
        BOOL,
        "The socket had a connected peer. connect: true when it succeeded (or the socket already was, "
        "EISCONN), false when it failed (EINPROGRESS included: not yet) or dissolved a datagram socket's "
        "peer (AF_UNSPEC); accept: true for the fd returned; bind, listen, dup, sendto, sendmsg, sendmmsg: "
        "the socket's state read from the kernel at the call's exit (TCP_ESTABLISHED: a TCP connection, or a "
        "UDP socket after connect()). Missing on those without the kernel's socket offsets (`sentinel "
        "doctor`), never guessed.",
        on=(CONNECT, *SOCKET_TYPES_SORTED),
        by=dict.fromkeys((CONNECT, *SOCKET_TYPES_SORTED), "_fd_connected(ev)"),
        nullable=True,
        notnull=(CONNECT,),
        domain={CONNECT: _ds(True, False), **{t: _ds(True, False, None) for t in SOCKET_TYPES_SORTED}},
    ),
    FieldDef(
        "fd.name_changed",
        BOOL,
        "sendto, sendmsg, sendmmsg (its first message): the send went to a destination new for its process "
        "and socket (and so changed where the socket last sent). sentinel reports a send with a destination "
        "only when its (process, socket, destination) is not in the kernel's LRU of those seen, so every "
        "reported send that succeeded is true and a failed one (reported each time) false; an LRU eviction "
        "(16,384 entries) may report an old destination again, true. Missing on other events.",
        on=DATAGRAM_TYPES,
        by=dict.fromkeys(DATAGRAM_TYPES, "_fd_name_changed(ev)"),
        domain={t: _ds(True, False) for t in DATAGRAM_TYPES},
    ),
    # --------------------------------------------------------------------------------------------- container
    FieldDef(
        "container.id",
        STRING,
        "The container the process is in, as Falco writes it: the first 12 characters of the runtime's "
        "64-hex id (the whole name for LXC, libvirt-lxc, systemd-nspawn), from the cgroup the process is in; "
        "`host` for a process in no container (Falco's `container` macro is `container.id != host`).",
        p='(proc.container.id if proc.container is not None else "host")',
        np='"host"',
        index=True,
    ),
    FieldDef(
        "container.full_id",
        STRING,
        "The container's whole id (or name); `host` on the host. Known from the cgroup, so there from the "
        "first event (Falco waits for the runtime's answer).",
        p='(proc.container.full_id if proc.container is not None else "host")',
        np='"host"',
    ),
    FieldDef(
        "container.type",
        STRING,
        "The runtime, from its cgroup layout, in Falco's words: `docker`, `containerd`, `cri-o`, `podman`, "
        "`lxc`, `libvirt-lxc`, and `systemd-nspawn`; `host` on the host.",
        p='(proc.container.runtime if proc.container is not None else "host")',
        np='"host"',
    ),
    FieldDef(
        "container.info",
        STRING,
        "Falco's old output shorthand, deprecated there (Falco 0.41+ prints nothing for it): container.id.",
        p='(proc.container.id if proc.container is not None else "host")',
        np='"host"',
    ),
    *_RUNTIME_FIELDS,
    # --------------------------------------------------------------------------------------------- sentinel
    FieldDef(
        "sentinel.exec.filename",
        STRING,
        "The executable as called: exec's filename argument; for other "
        "events the process's last exec filename.",
        by={EXEC: "ev.filename"},
        p="(proc.filename or None)",
        nullable=True,
        index=True,
        path_like=True,
    ),
    FieldDef(
        "sentinel.proc.cmdline",
        STRING,
        "The command line as typed: argv (argv[0] as passed, not proc.name), each argument quoted as a shell "
        "would need it (`bash -c 'id; uname -a'`), so arguments keep their boundaries. Sigma's `CommandLine` "
        "matches it or sentinel.proc.cmdline_joined.",
        p="_cmdline_typed(proc)",
        nullable=True,
        cached=True,
    ),
    FieldDef(
        "sentinel.proc.cmdline_joined",
        STRING,
        "argv joined by single spaces, unquoted (`bash -c id; uname -a`), as Sysmon for Linux and auditd "
        "report a command line and Sigma's rules are written against (`CommandLine|endswith: '| sh'`).",
        p="_cmdline_joined(proc)",
        nullable=True,
        cached=True,
    ),
    FieldDef(
        "sentinel.proc.argv",
        STRING,
        "One argument as passed: [0] is argv[0] as typed, [1] the first argument...; missing past the last; "
        "without an index a check holds if it holds for any of them. auditd's EXECVE `a0`, `a1`... in Sigma "
        "rules.",
        p="_argv(proc, {arg})",
        multi_p="list(proc.args)",
        nullable=True,
        arg="index?",
    ),
    FieldDef(
        "sentinel.proc.pcmdline",
        STRING,
        "The parent's command line as typed (as sentinel.proc.cmdline). Sigma's `ParentCommandLine` matches "
        "it or sentinel.proc.pcmdline_joined.",
        p="_pcmdline_typed(proc)",
        nullable=True,
        cached=True,
    ),
    FieldDef(
        "sentinel.proc.pcmdline_joined",
        STRING,
        "The parent's argv joined by single spaces, unquoted (as sentinel.proc.cmdline_joined).",
        p="_pcmdline_joined(proc)",
        nullable=True,
        cached=True,
    ),
    FieldDef(
        "sentinel.proc.entity_id",
        STRING,
        "Stable id of the process (ECS process.entity_id).",
        p="proc.entity_id",
    ),
    FieldDef(
        "sentinel.proc.pid_ns",
        INT,
        "The process's pid namespace, as the inode number /proc/PID/ns/pid shows (`pid:[4026531836]`); "
        "from the same sources as proc.vpid.",
        p="(proc.pid_ns or None)",
        nullable=True,
    ),
    FieldDef(
        "sentinel.proc.mnt_ns",
        INT,
        "The process's mount namespace (inode number of /proc/PID/ns/mnt) as of its latest exec or fork, or "
        "/proc; a setns or unshare since is not followed until its next exec.",
        p="(proc.mnt_ns or None)",
        nullable=True,
    ),
    FieldDef(
        "sentinel.proc.host_pid_ns",
        BOOL,
        "The process is in the host's pid namespace (pid 1's, read by the agent at start): false in a "
        "container with its own (podman's and docker's default), true on the host and with `--pid host`. "
        "Missing when either namespace is unknown.",
        p="proc.host_pid_ns",
        nullable=True,
    ),
    FieldDef(
        "sentinel.event.repeat_count",
        INT,
        "Identical opens the kernel suppressed before this one.",
        on=(OPEN,),
        by={OPEN: "ev.repeat_count"},
    ),
    *(
        FieldDef(
            f"fs.path.{role}{suffix}",
            STRING,
            f"{desc}{' As the call spelled it (not resolved).' if suffix else ''}",
            on=on,
            by=dict.fromkeys(on, f"_fs_path(ctx, {role!r}, {bool(suffix)})"),
            nullable=True,
            path_like=not suffix,
        )
        for role, on, desc in (
            (
                "name",
                FILE_ONE_PATH,
                "The path a file change on one path works on (unlink, rmdir, mkdir, "
                "chmod, chown, truncate, utimensat; an fd's path for fchmod, fchown, ftruncate), resolved "
                "against the cwd or dirfd.",
            ),
            (
                "source",
                FILE_TWO_PATHS,
                "The source of a rename or hard link (the old path), or where a "
                "symlink points, resolved against the link's directory.",
            ),
            (
                "target",
                FILE_TWO_PATHS,
                "The target of a rename or hard link (the new path), or the symlink itself, resolved.",
            ),
        )
        for suffix in ("", "raw")
    ),
    FieldDef(
        "sentinel.target.pid",
        INT,
        "The process a ptrace, process_vm_writev, kill, tkill, tgkill, pidfd_send_signal or pidfd_getfd is "
        "aimed at (for a pidfd: the process the kernel resolved it to; missing for a group or every "
        "process).",
        on=TARGETED,
        by=dict.fromkeys(TARGETED, "_target_pid(ev)"),
        nullable=True,
    ),
    FieldDef(
        "sentinel.target.name",
        STRING,
        "The target process's name (comm), as the process table knows it.",
        on=TARGETED,
        by=dict.fromkeys(TARGETED, "_target_attr(ctx, 'comm')"),
        nullable=True,
    ),
    FieldDef(
        "sentinel.target.exepath",
        STRING,
        "The target process's executable, as the process table knows it.",
        on=TARGETED,
        by=dict.fromkeys(TARGETED, "_target_attr(ctx, 'exe')"),
        nullable=True,
        path_like=True,
    ),
    FieldDef(
        "sentinel.dest.resolver",
        BOOL,
        "A connect's or datagram's destination is one of the DNS servers this host is configured to use "
        "(`nameserver` lines of /etc/resolv.conf and of systemd-resolved's upstream list, re-read each "
        "minute; a replay reads the replaying host's). Missing for destinations that are not IP addresses.",
        on=(CONNECT, *DATAGRAM_TYPES),
        by=dict.fromkeys((CONNECT, *DATAGRAM_TYPES), "_dest_resolver(ev)"),
        nullable=True,
    ),
    FieldDef(
        "sentinel.userns.level",
        INT,
        "Depth of the caller's user namespace after a mount, umount, move_mount, pivot_root, chroot, setns "
        "or unshare: 0 is the host's, 1 or more a namespace created below it (rootless containers, "
        "sandboxes, or an exploit that needs root in one). Missing without BTF.",
        on=USERNS_TYPES,
        by=dict.fromkeys(USERNS_TYPES, "_userns_level(ev)"),
        nullable=True,
    ),
    FieldDef(
        "sentinel.setns.init_ns",
        STRING,
        "The kinds of pid 1's namespaces a setns joined, `|`-joined like flags (`mnt`, `mnt|pid`; empty "
        "for a namespace pid 1 is not in): through a namespace file of pid 1's, or pid 1's pidfd with the "
        "kinds asked. How a process leaves a container for the host. Missing without BTF or when the fd "
        "was neither a namespace nor a pidfd.",
        on=(EventType.SETNS,),
        by={EventType.SETNS: "_setns_init(ev)"},
        nullable=True,
    ),
    # -------------------------------------------------------------------------------------------------- ml
    *(
        FieldDef(
            f"ml.{name}",
            ftype,
            desc,
            on=on,
            by={t: f"_ml(ctx, {name!r})" for t in on},
            nullable=True,
            cached=True,  # one value() call per event and matcher, however many rules read it
            on_demand=name in ("score", "anomalous"),
        )
        for name, ftype, on, desc in _ML_FIELDS
    ),
]


# How evt.arg.NAME of a security syscall reads, by argument kind (sentinel.syscalls).
_SHOWN = {
    "": "as Falco prints it",
    "path": "as Falco prints it (a path resolved against the cwd or dirfd)",
    "id": "as Falco prints it: the user (a *uid argument) or group (*gid) name the host's databases give "
    'it, else the number; `-1` for "unchanged" (evt.rawarg has the number)',
}


def _with_syscall_arguments(fields: list[FieldDef]) -> list[FieldDef]:
    """``evt.arg.NAME``/``evt.rawarg.NAME`` for every argument of the security syscalls, under Falco's
    parameter names, merged into the fields of the same name (``evt.arg.flags`` of open and of mount)."""
    import dataclasses

    by_name = {f.name: f for f in fields}
    order = [f.name for f in fields]
    added: dict[str, FieldDef] = {}
    for etype, spec in SYSCALLS.items():
        for arg in spec.args:
            raw_type = STRING if arg.kind in ("str", "path") else INT
            shown = f"_syspath(ctx, ev, {arg.name!r})" if arg.kind == "path" else f"_sysarg(ev, {arg.name!r})"
            for field_name, ftype, expr, what in (
                (f"evt.arg.{arg.name}", INT if arg.kind == "int" else STRING, shown,
                 _SHOWN.get(arg.kind, _SHOWN[""])),
                (f"evt.rawarg.{arg.name}", raw_type, f"_sysraw(ev, {arg.name!r})", "as the call passed it"),
            ):  # fmt: skip
                base = by_name.get(field_name) or added.get(field_name)
                if base is None:
                    desc = f"Argument `{arg.name}` of a security syscall, {what}."
                    base = FieldDef(field_name, ftype, desc, on=(), nullable=True)
                elif base.type != ftype:
                    continue  # a name Falco uses with another type elsewhere: that meaning wins
                base = dataclasses.replace(
                    base, on=(*base.on, etype), by={**base.by, etype: expr}, nullable=True
                )
                if field_name in by_name:
                    by_name[field_name] = base
                else:
                    added[field_name] = base
    res = by_name["evt.arg.res"]
    for name in ("evt.arg.res", "evt.rawarg.res"):
        f = by_name[name]
        by_name[name] = dataclasses.replace(
            f, on=(*f.on, *SECURITY), by={**f.by, **dict.fromkeys(SECURITY, "ev.ret")},
            desc=res.desc.replace("exec, connect or chdir", "exec, connect, chdir or a security syscall"),
        )  # fmt: skip
    return [by_name[n] for n in order] + sorted(added.values(), key=lambda f: f.name)


def _with_socket_fields(fields: list[FieldDef]) -> list[FieldDef]:
    """The ``fd.*`` fields of bind, listen, accept and dup (``sentinel.sockets``): the socket as the kernel
    has it. Ends a call does not carry stay missing (a dup'd socket has no server or client, only ends)."""
    import dataclasses

    roles = {
        "fd.num": "num", "fd.type": "type", "fd.typechar": "typechar", "fd.sockfamily": "family",
        "fd.l4proto": "l4proto", "fd.name": "name", "fd.nameraw": "name", "fd.sip": "sip",
        "fd.sport": "sport", "fd.snet": "sip", "fd.cip": "cip", "fd.cport": "cport", "fd.cnet": "cip",
        "fd.lip": "lip", "fd.lport": "lport", "fd.lnet": "lip", "fd.rip": "rip", "fd.rport": "rport",
        "fd.rnet": "rip", "fd.ip": "eip", "fd.port": "eport", "fd.net": "eip",
    }  # fmt: skip
    either = {"fd.ip", "fd.port", "fd.net"}
    client = {"fd.cip", "fd.cport", "fd.cnet", "fd.lip", "fd.lport", "fd.lnet"}  # a connect's local end
    sock = SOCKET_TYPES_SORTED
    out = []
    for f in fields:
        role = roles.get(f.name)
        if role is not None:
            desc = f.desc
            if not f.on:  # not captured for connect: now these calls fill it
                desc = desc.replace("not captured (always missing)", "socket calls only (sentinel.sockets)")
            elif f.name == "fd.num":  # its description covers every call
                pass
            elif f.name in either:  # one value: the end the call carries
                desc += (
                    " bind, listen: the local end; accept, dup: the peer; datagram sends: the destination "
                    "(as the kernel has the socket)."
                )
            else:
                desc += " bind, listen, accept, dup, datagram sends: the socket as the kernel has it."
            f = dataclasses.replace(
                f, on=(*f.on, *sock), by={**f.by, **dict.fromkeys(sock, f"_sock_field(ev, {role!r})")},
                nullable=True, desc=desc,
            )  # fmt: skip
            if f.name in client:
                f = dataclasses.replace(
                    f, on=(CONNECT, *f.on), by={CONNECT: f"_connect_local(ev, {role!r})", **f.by},
                    desc=f.desc + " connect: its local end (the client), read from the kernel's socket.",
                )  # fmt: skip
        out.append(f)
    return out


def _with_falco_catalogue(fields: list[FieldDef]) -> list[FieldDef]:
    """Every other field of Falco's syscall source (``falco_fields``) as *not captured*: known, with Falco's
    type and argument, always missing. Appended, so the reference lists them after a group's real fields."""
    known = {f.name for f in fields}
    return fields + [
        FieldDef(name, ftype, f"{desc} Not captured (always missing).", on=_NEVER, arg=arg)
        for name, ftype, arg, desc in FALCO_FIELDS
        if name not in known
    ]


FIELDS_LIST = _with_falco_catalogue(_with_socket_fields(_with_syscall_arguments(FIELDS_LIST)))
FIELDS: dict[str, FieldDef] = {f.name: f for f in FIELDS_LIST}

# A paragraph the reference prints at the top of a group, for what its fields share.
GROUP_NOTES: dict[str, str] = {
    "container": (
        "Which container the process is in comes from its cgroup (docs/containers.md): container.id, "
        "container.full_id and container.type are there for every event, `host` for a process in no "
        "container, so Falco's `container` macro (`container.id != host`) holds exactly for processes in "
        "containers. Name, image, labels, privileges and host namespaces come from the container's runtime "
        "(docker, podman, containerd, CRI-O), asked in the background when a container is first seen: until "
        "it answers (and when no runtime can) they are missing, so `container.image.repository in (...)` is "
        "false and `not container.image.repository in (...)` true; Falco's plugin has empty strings then, "
        "so only `=` and `!=` on them differ. On the host they have Falco's values: `host` for the name, "
        "empty text, false flags. Mounts, health checks, start time and IP are not asked for."
    ),
    "k8s": (
        "The pod a container belongs to, from its runtime (kubelet's labels on the container, the CRI pod "
        "sandbox); no Kubernetes API server is asked, so only the pod's own name, namespace, uid and labels "
        "are known. Missing outside a pod and on the host; k8s.pod.uid is known from the cgroup path at once."
    ),
    "ml": (
        "The anomaly model's view of the event. Every ml field is missing (checks false, `<NA>` in output) "
        "when the anomaly engine is off (`--model off`; rule fixtures without `sentinel.ml` values) and on "
        "events of other types; `ml.score`, `ml.threshold` and `ml.anomalous` are also missing while the "
        "agent is still learning, whereas `ml.novelty.*`, `ml.seen.*` and `ml.new_dest` are there whenever "
        "features are computed, learning included. Directories are compared as habits (digit runs, hex ids "
        "and temporary names normalised). A novelty is 0 for something the program did before and otherwise "
        "-log of the program's chance of doing something new (the higher of its Good-Turing and Witten-Bell "
        "estimates; higher novelty: it rarely does new things; the model's rows count it from 4); a seen "
        "count is the decayed number of earlier events with that key, rounded down. Floats print with 4 "
        "significant digits in output text and stay numbers in JSON output fields. `ml.score` (and "
        "`ml.anomalous`) may run the model on demand, so put cheaper checks first."
    ),
}

# Types each transformer accepts and gives.
TRANSFORMERS: dict[str, tuple[str, str]] = {
    "tolower": (STRING, STRING),
    "toupper": (STRING, STRING),
    "basename": (STRING, STRING),
    "b64": (STRING, STRING),
    "len": (STRING, INT),
}

# Operators each field type accepts.
STRING_OPS = frozenset(
    [
        "=",
        "==",
        "!=",
        "contains",
        "icontains",
        "bcontains",
        "startswith",
        "bstartswith",
        "endswith",
        "glob",
        "iglob",
        "pmatch",
        "in",
        "intersects",
        "exists",
        "regex",
    ]
)
INT_OPS = frozenset(["=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects", "exists"])
BOOL_OPS = frozenset(["=", "==", "!=", "exists"])
IP_OPS = frozenset(["=", "==", "!=", "in", "intersects", "exists"])
OPS_BY_TYPE: dict[str, frozenset[str]] = {
    STRING: STRING_OPS,
    INT: INT_OPS,
    FLOAT: INT_OPS,
    BOOL: BOOL_OPS,
    IP: IP_OPS,
    IPNET: IP_OPS,
}
ALL_OPS = STRING_OPS | INT_OPS
LIST_OPS = frozenset({"in", "intersects", "pmatch"})


def event_type_names(types: Iterable[EventType]) -> str:
    names = {EXEC: "exec", OPEN: "open", CONNECT: "connect", FORK: "fork", EXIT: "exit", CHDIR: "chdir",
             CONTAINER: "container"}  # fmt: skip
    chosen = set(types)
    if set(SECURITY) <= chosen:  # "every security syscall", not 27 names
        return ", ".join([*(names[t] for t in ALL if t in chosen and t in names), "security syscalls"])
    return ", ".join(names.get(t) or SYSCALLS[t].name for t in ALL if t in chosen)


def reference(markdown: bool = False) -> str:
    """The field reference ``sentinel fields`` prints and ``docs/fields.md`` holds."""
    groups: dict[str, list[FieldDef]] = {}
    for f in FIELDS_LIST:
        groups.setdefault(f.name.split(".", 1)[0], []).append(f)
    out: list[str] = []
    if markdown:
        out += [
            "# Rule fields",
            "",
            "Generated by `sentinel fields --markdown` from `sentinel/rules/fields.py`; do not edit by hand.",
            "",
            "Names and meanings follow Falco's. *Events* lists the event types that fill a field; on other",
            "events the value is missing: every check on it is false (so `not` of one is true) and output",
            "prints `<NA>` (`null` in JSON). Fields marked *not captured* are accepted so that Falco rules",
            "naming them load, but they are always missing (so are other `evt.arg.NAME` and",
            "`evt.rawarg.NAME` arguments); the validator warns where a rule uses one.",
            "",
            "Types: `string`; `int` (compared as numbers, `proc.pid > 1000`); `float` (compared as numbers,",
            "`ml.score > 0.8`; output text shows 4 significant digits); `bool` (`true`/`false`); `ip` (an",
            "address, compared with addresses or CIDR ranges); `ipnet` (compared with CIDR ranges).",
            "Transformers: `tolower(f)`, `toupper(f)`, `basename(f)`, `b64(f)` (base64-decoded), `len(f)`;",
            "`val(f)` on the right-hand side compares two fields.",
            "",
        ]
        for group, fields in groups.items():
            out += [f"## {group}", ""]
            if group in GROUP_NOTES:
                out += [GROUP_NOTES[group], ""]
            out += ["| field | type | events | description |", "|---|---|---|---|"]
            for f in fields:
                name = f.name + ("[N]" if f.arg.startswith("index") else "[KEY]" if f.arg else "")
                events = event_type_names(f.on) if f.on else "*not captured*"
                if f.on == ALL:
                    events = "all"
                desc = f.desc.replace("|", "\\|")
                out.append(f"| `{name}` | {f.type} | {events} | {desc} |")
            out.append("")
        return "\n".join(out)
    width = max(len(f.name) for f in FIELDS_LIST) + 5
    for group, fields in groups.items():
        out.append(f"{group}:")
        if group in GROUP_NOTES:
            out += textwrap.wrap(GROUP_NOTES[group], 106, initial_indent="  ", subsequent_indent="  ")
        for f in fields:
            name = f.name + ("[N]" if f.arg.startswith("index") else "[KEY]" if f.arg else "")
            events = "all" if f.on == ALL else event_type_names(f.on) if f.on else "not captured"
            out.append(f"  {name:<{width}} {f.type:<7} {events:<22} {f.desc}")
        out.append("")
    return "\n".join(out)
