"""Sigma's Linux logsources and field names, as sentinel's events and fields.

A logsource becomes an event *shape* (a Falco-syntax condition every rule of it is ANDed with, so rules are
indexed by event type like the Falco ones) and a table of the Sigma fields it can read. A field maps to one or
more sentinel fields; several are ORed in one leaf (``Image``: the resolved path *or* the path as called, so
``Image|endswith: '/sh'`` still sees ``/bin/sh`` that resolves to ``/usr/bin/dash``). A field not in the table
refuses the rule: a guess would silently never match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sentinel.events import EventType
from sentinel.rules.fields import EVENT_NAMES

# The process that caused the event, on every logsource (Sysmon for Linux reports these on each).
PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "Image": ("proc.exepath", "sentinel.exec.filename"),
    "CommandLine": ("sentinel.proc.cmdline", "sentinel.proc.cmdline_joined"),  # as typed, or as Sysmon has it
    "ParentImage": ("proc.pexepath",),
    "ParentCommandLine": ("sentinel.proc.pcmdline", "sentinel.proc.pcmdline_joined"),
    "User": ("user.name",),
    "CurrentDirectory": ("proc.cwd",),
    "ProcessId": ("proc.pid",),
    "ParentProcessId": ("proc.ppid",),
}
INITIATED = "Initiated"  # network_connection: which side opened it; an event-type check, not a field

_PROC_OUT = (
    "user.name=%user.name proc.name=%proc.name proc.exepath=%proc.exepath "
    "exe=%sentinel.exec.filename cmdline=%sentinel.proc.cmdline proc.pexepath=%proc.pexepath "
    "pcmdline=%sentinel.proc.pcmdline proc.cwd=%proc.cwd"
)
_OPEN_WRITE = (
    "(evt.type in (open, openat, openat2, creat) and evt.is_open_write = true and evt.failed = false)"
)
FILE_CHANGES = ("rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat")


@dataclass(frozen=True, slots=True)
class Logsource:
    """How one Sigma category is evaluated: the events (``shape``), the fields, what keywords search."""

    category: str
    shape: str  # a Falco-syntax condition (no macros): the events this category means
    fields: dict[str, tuple[str, ...]]
    keywords: tuple[str, ...]  # the sentinel fields a value-only (keyword) detection searches
    output: str  # the output template after "Sigma: <title> | "
    events: str  # for messages and docs
    records: dict[str, AuditRecord] = field(default_factory=dict)  # auditd: record type -> its meaning


LOGSOURCES: dict[str, Logsource] = {
    "process_creation": Logsource(
        "process_creation",
        "(evt.type in (execve, execveat) and evt.failed = false)",
        PROCESS_FIELDS,
        ("sentinel.proc.cmdline", "sentinel.proc.cmdline_joined"),
        _PROC_OUT,
        "successful execve/execveat",
    ),
    # Sysmon's FileCreate: a file created or overwritten. Opens for writing (creat too), and the calls that
    # make a new name for a file: rename (the new name), link and symlink (the link made).
    "file_event": Logsource(
        "file_event",
        f"({_OPEN_WRITE} or (evt.type in ({', '.join(FILE_CHANGES)}) and evt.failed = false))",
        {**PROCESS_FIELDS, "TargetFilename": ("fd.name", "fs.path.target")},
        ("fd.name", "fs.path.target"),
        _PROC_OUT + " fd.name=%fd.name fs.path.target=%fs.path.target",
        "successful opens for writing, rename/link/symlink (the new name)",
    ),
    "file_access": Logsource(
        "file_access",
        "(evt.type in (open, openat, openat2) and evt.is_open_read = true and evt.failed = false)",
        {**PROCESS_FIELDS, "TargetFilename": ("fd.name",)},
        ("fd.name",),
        _PROC_OUT + " fd.name=%fd.name",
        "successful opens for reading",
    ),
    # Outbound: connect (EINPROGRESS counts, as Falco's outbound macro); inbound: accept. fd.sip/fd.sport are
    # the server's end in both, which is Sigma's destination in both.
    "network_connection": Logsource(
        "network_connection",
        "((evt.type = connect and fd.sockfamily = ip and (evt.failed = false or evt.res = EINPROGRESS))"
        " or (evt.type in (accept, accept4) and fd.sockfamily = ip and evt.failed = false))",
        {
            **PROCESS_FIELDS,
            "DestinationIp": ("fd.sip",),
            "DestinationPort": ("fd.sport",),
            "Protocol": ("fd.l4proto",),
        },
        (),
        _PROC_OUT + " connection=%fd.name fd.sip=%fd.sip fd.sport=%fd.sport fd.l4proto=%fd.l4proto",
        "connect (Initiated: true) and accept (Initiated: false) on IP sockets",
    ),
}
# Why a Sigma field sentinel knows of has no equivalent (said when a rule names it).
UNMAPPED_WHY = {
    "DestinationHostname": "a connect carries only an IP; host names need DNS correlation",
    "SourceIp": "the client end of a connection is not captured",
    "SourcePort": "the client end of a connection is not captured",
    "LogonId": "the login session id is not captured",
    "ParentUser": "the parent's user is not kept",
    "OriginalFileName": "Linux executables carry no original file name",
}
INITIATED_EVENTS = {"true": ("connect",), "false": ("accept", "accept4")}
PRODUCTS = (None, "linux")


def logsource_for(category: str | None, product: str | None, service: str | None) -> Logsource | None:
    """The sentinel logsource of a Sigma logsource, or None when sentinel cannot evaluate it."""
    if product not in PRODUCTS:
        return None
    if service is not None:
        return AUDITD if service == "auditd" and product == "linux" and category is None else None
    if category is None:
        return None
    return LOGSOURCES.get(category)


# ---- auditd ----------------------------------------------------------------------------------------------
# An auditd rule matches one audit *record*; its ``type`` says which. A record type maps to one or more
# *branches*: an event shape and, per audit field, the sentinel fields that hold that field's value on those
# events. A field leaf becomes OR over branches of (shape and check), for the record types its selection
# names (its own ``type``, else the rule's), so ``a0`` means argv[0] of an exec and nothing else.


@dataclass(frozen=True, slots=True)
class AuditBranch:
    shape: str  # Falco-syntax condition: the events of this branch
    fields: dict[str, tuple[str, ...]]  # audit field -> sentinel fields (ORed)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    name: str
    branches: tuple[AuditBranch, ...]
    refused: dict[str, str]  # audit field -> why sentinel cannot evaluate it on this record
    keywords: tuple[str, ...] = ()  # the text a keyword searches (EXECVE: the command line)
    indexed: str | None = None  # "aN" fields -> this indexed field (EXECVE: sentinel.proc.argv[N])


EXEC_SHAPE = "(evt.type in (execve, execveat) and evt.failed = false)"
ARGV_MAX = 4096  # aN up to this index (the probe captures fewer; a larger N is simply missing)
# Every syscall sentinel reports as an event (the internal tamper record is not a syscall).
SYSCALL_NAMES = tuple(sorted(n for n, t in EVENT_NAMES.items() if t != EventType.TAMPER))
_RAW_ARG = (
    "a SYSCALL record's a0-a3 are the raw registers (hex); sentinel's events carry decoded, named "
    "arguments instead"
)
_KEY = "'key' is the tag of an audit rule (auditctl -k), which sentinel does not have"
AUDIT_RECORDS: dict[str, AuditRecord] = {
    # execve's arguments: aN is argv[N] as passed; argc the count. A successful exec.
    "EXECVE": AuditRecord(
        "EXECVE",
        (AuditBranch(EXEC_SHAPE, {}),),
        {},
        keywords=("sentinel.proc.cmdline", "sentinel.proc.cmdline_joined"),
        indexed="sentinel.proc.argv",
    ),
    # One syscall and its process: any syscall event sentinel reports (failed ones too, as audit logs them).
    "SYSCALL": AuditRecord(
        "SYSCALL",
        (
            AuditBranch(
                f"(evt.type in ({', '.join(SYSCALL_NAMES)}))",
                {
                    "SYSCALL": ("evt.type",),
                    "syscall": ("evt.type",),
                    "exe": ("proc.exepath",),
                    "comm": ("proc.name",),
                    "euid": ("user.uid",),
                    "pid": ("proc.pid",),
                    "ppid": ("proc.ppid",),
                },
            ),
        ),
        {
            **{f"a{i}": _RAW_ARG for i in range(4)},
            "key": _KEY,
            "auid": "the login uid is not captured reliably (user.loginuid is -1 on most events)",
        },
    ),
    # One path a syscall resolved: the file of an open (any mode), the executable of an exec, the path(s) of
    # a file change (both of a rename or hard link; a symlink's new name, not what it points to).
    "PATH": AuditRecord(
        "PATH",
        (
            AuditBranch("(evt.type in (open, openat, openat2, creat))", {"name": ("fd.name",)}),
            AuditBranch(EXEC_SHAPE, {"name": ("sentinel.exec.filename", "proc.exepath")}),
            AuditBranch(
                "(evt.type in (unlink, unlinkat, rmdir, mkdir, mkdirat, chmod, fchmod, fchmodat, fchmodat2, "
                "chown, fchown, fchownat, lchown, truncate, ftruncate, utimensat))",
                {"name": ("fs.path.name",)},
            ),
            AuditBranch(
                "(evt.type in (rename, renameat, renameat2, link, linkat))",
                {"name": ("fs.path.source", "fs.path.target")},
            ),
            AuditBranch("(evt.type in (symlink, symlinkat))", {"name": ("fs.path.target",)}),
        ),
        {
            "nametype": "nametype says which of a syscall's paths a PATH record is (created, deleted, the "
            "parent directory); sentinel matches 'name' against every path of an event, so it would not "
            "bind to the same path",
            "key": _KEY,
        },
    ),
}
# Record types with no sentinel equivalent, and why (said when a rule names one).
AUDIT_UNSUPPORTED = {
    "CWD": "the CWD record is the working directory of a path lookup; sentinel resolves paths instead",
    "PROCTITLE": "PROCTITLE is the hex-encoded process title; use the EXECVE record's arguments",
    "SOCKADDR": "SOCKADDR is the raw socket address of any socket call; use network_connection rules",
    "TTY": "TTY records (keystrokes logged by pam_tty_audit) are not captured",
    "SERVICE_STOP": "service start/stop records come from systemd, not from syscalls",
    "SERVICE_START": "service start/stop records come from systemd, not from syscalls",
}
AUDIT_USER_WHY = "user-space audit records (USER_*, ADD_USER, ...) are written by programs, not by syscalls"

AUDITD = Logsource(
    "auditd",
    "(" + " or ".join(sorted({b.shape for r in AUDIT_RECORDS.values() for b in r.branches})) + ")",
    {},
    (),
    _PROC_OUT + " evt.type=%evt.type fd.name=%fd.name fs.path.name=%fs.path.name "
    "fs.path.source=%fs.path.source fs.path.target=%fs.path.target",
    "auditd records EXECVE (exec arguments), SYSCALL (sentinel's syscall events), PATH (their paths)",
    AUDIT_RECORDS,
)
