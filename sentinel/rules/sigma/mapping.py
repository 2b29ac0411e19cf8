"""Sigma's Linux logsources and field names, as sentinel's events and fields.

A logsource becomes an event *shape* (a Falco-syntax condition every rule of it is ANDed with, so rules are
indexed by event type like the Falco ones) and a table of the Sigma fields it can read. A field maps to one or
more sentinel fields; several are ORed in one leaf (``Image``: the resolved path *or* the path as called, so
``Image|endswith: '/sh'`` still sees ``/bin/sh`` that resolves to ``/usr/bin/dash``). A field not in the table
refuses the rule: a guess would silently never match.
"""

from __future__ import annotations

from dataclasses import dataclass

# The process that caused the event, on every logsource (Sysmon for Linux reports these on each).
PROCESS_FIELDS: dict[str, tuple[str, ...]] = {
    "Image": ("proc.exepath", "sentinel.exec.filename"),
    "CommandLine": ("sentinel.proc.cmdline",),
    "ParentImage": ("proc.pexepath",),
    "ParentCommandLine": ("sentinel.proc.pcmdline",),
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


LOGSOURCES: dict[str, Logsource] = {
    "process_creation": Logsource(
        "process_creation",
        "(evt.type in (execve, execveat) and evt.failed = false)",
        PROCESS_FIELDS,
        ("sentinel.proc.cmdline",),
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
    if service is not None or product not in PRODUCTS or category is None:
        return None
    return LOGSOURCES.get(category)
