"""File changes made without an open: paths resolved as the process saw them, Falco fields, ECS."""

from __future__ import annotations

import grp
from pathlib import Path

import pytest

from sentinel.alerts.ecs import EcsRenderer
from sentinel.capture import CaptureReader, CaptureWriter, capture_header
from sentinel.events import AT_FDCWD, Event, EventType
from sentinel.file_changes import FILE_TYPES, file_paths
from sentinel.host import HostInfo
from sentinel.process.facts import ReplayFacts
from sentinel.process.table import Process, ProcessTable
from sentinel.rules import EvalContext
from sentinel.syscalls import SYSCALLS, UTIME_NOW, UTIME_OMIT, arguments
from tests.unit.rules_support import WALL, ruleset

T = EventType
HOST = HostInfo(hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000 * 10**9)
RS = ruleset("- rule: any\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: debug\n")
FD = AT_FDCWD & 0xFFFFFFFFFFFFFFFF  # how the probe stashes AT_FDCWD (sign-extended)


def proc(cwd: str = "/home/alice", dirfds: dict[int, str] | None = None) -> Process:
    p = Process(300, 1, 0, "e-300", "bash", exe="/usr/bin/bash", cwd=cwd)
    p.dirfds.update(dirfds or {})
    return p


def resolver(p: Process):  # type: ignore[no-untyped-def]
    table = ProcessTable("b", ReplayFacts())
    return lambda dirfd, path: table.resolve_path(p, dirfd, path)


def ev(
    etype: EventType, args: tuple[int, ...], strs: tuple[str, ...] = (), extra=(0, 0, 0), ret: int = 0
) -> Event:
    return Event(etype, 5, 300, 300, 0, 0, "bash", ret=ret, sys_args=args, sys_extra=extra, sys_strs=strs)


def ctx_of(e: Event, p: Process | None = None) -> EvalContext:
    p = p or proc()
    c = EvalContext(e, p, None, WALL)
    c.files = file_paths(e, resolver(p))
    c.path = c.files.primary
    return c


def test_every_file_call_is_in_the_family_with_falco_names() -> None:
    assert {SYSCALLS[t].name for t in FILE_TYPES} >= {
        "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
        "symlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown", "mkdir",
        "mkdirat", "truncate", "ftruncate", "utimensat",
    }  # fmt: skip
    names = ["olddirfd", "oldpath", "newdirfd", "newpath", "flags"]
    assert [a.name for a in SYSCALLS[T.RENAMEAT2].args] == names
    assert [a.name for a in SYSCALLS[T.LINKAT].args] == ["olddir", "oldpath", "newdir", "newpath", "flags"]
    assert [a.name for a in SYSCALLS[T.SYMLINKAT].args] == ["target", "linkdirfd", "linkpath"]


def test_relative_paths_resolve_against_the_cwd_or_the_dirfd() -> None:
    p = proc(dirfds={5: "/var/log"})
    unlink = file_paths(ev(T.UNLINKAT, (5, 0, 0, 0, 0, 0), ("auth.log",)), resolver(p))
    assert unlink.name == "/var/log/auth.log" and unlink.raw_name == "auth.log"
    assert unlink.args == {"name": "/var/log/auth.log"}
    here = file_paths(ev(T.UNLINK, (0,) * 6, ("../bob/.bash_history",)), resolver(p))
    assert here.name == "/home/bob/.bash_history"
    rename = file_paths(ev(T.RENAMEAT2, (FD, 0, 5, 0, 1, 0), ("x.tmp", "syslog")), resolver(p))
    assert (rename.source, rename.target) == ("/home/alice/x.tmp", "/var/log/syslog")
    assert rename.name is None and rename.primary == "/var/log/syslog"
    unknown = file_paths(ev(T.UNLINK, (0,) * 6, ("x",)), None)
    assert unknown.name == "x"  # no process: the spelling


def test_a_symlink_target_resolves_against_the_link_directory_not_the_cwd() -> None:
    p = proc(cwd="/tmp")
    link = file_paths(ev(T.SYMLINK, (0,) * 6, ("../../etc/shadow", "/var/www/s")), resolver(p))
    assert link.source == "/etc/shadow" and link.raw_source == "../../etc/shadow"
    assert link.target == "/var/www/s"
    absolute = file_paths(ev(T.SYMLINKAT, (0, FD, 0, 0, 0, 0), ("/etc//passwd", "p")), resolver(p))
    assert absolute.source == "/etc/passwd" and absolute.target == "/tmp/p"


def test_fd_calls_name_the_fd_path() -> None:
    p = proc(dirfds={7: "/etc/sudoers"})
    chmod = file_paths(ev(T.FCHMOD, (7, 0o4755, 0, 0, 0, 0)), resolver(p))
    assert chmod.name == "/etc/sudoers" and chmod.fd_path == "/etc/sudoers" and chmod.args == {}
    e = ev(T.FCHMOD, (7, 0o4755, 0, 0, 0, 0))
    detail = EcsRenderer(HOST).event_doc(e, p, None, None, file_paths(e, resolver(p)))["sentinel"]["event"]
    assert detail["arg"]["fd"] == 7 and detail["fd_path"] == "/etc/sudoers"  # the number, the path beside it


def test_fields_read_resolved_paths_and_falco_printed_arguments() -> None:
    p = proc(dirfds={5: "/var/log"})
    c = ctx_of(ev(T.FCHMODAT, (5, 0, 0o4755, 0, 0, 0), ("bin/x",)), p)
    assert RS.field_value("evt.type", c) == "fchmodat"
    assert RS.field_value("evt.arg.filename", c) == "/var/log/bin/x"
    assert RS.field_value("evt.rawarg.filename", c) == "bin/x"
    mode = RS.field_value("evt.arg.mode", c)
    assert "S_ISUID" in mode and mode.startswith("S_IXOTH|S_IROTH")
    assert RS.field_value("evt.rawarg.mode", c) == 0o4755
    assert RS.field_value("fs.path.name", c) == "/var/log/bin/x"
    assert RS.field_value("fs.path.nameraw", c) == "bin/x"
    assert RS.field_value("fs.path.source", c) is None
    link = ctx_of(ev(T.LINKAT, (FD, 0, FD, 0, 0x400, 0), ("/etc/shadow", "s")), proc(cwd="/tmp"))
    assert RS.field_value("fs.path.source", link) == "/etc/shadow"
    assert RS.field_value("fs.path.target", link) == "/tmp/s"
    assert RS.field_value("fs.path.targetraw", link) == "s"
    assert RS.field_value("evt.arg.flags", link) == "AT_SYMLINK_FOLLOW"
    chown = ctx_of(ev(T.FCHOWNAT, (FD, 0, 0, 0xFFFFFFFF, 0x100, 0), ("/etc/passwd",)))
    # Falco prints a uid/gid argument as the host's name for it (else the number), -1 for "unchanged".
    assert RS.field_value("evt.arg.uid", chown) == "root" and RS.field_value("evt.arg.gid", chown) == "-1"
    assert RS.field_value("evt.rawarg.uid", chown) == 0
    assert RS.field_value("evt.rawarg.gid", chown) == 0xFFFFFFFF
    group0 = ctx_of(ev(T.FCHOWNAT, (FD, 0, 0x7FFFFFF0, 0, 0, 0), ("/etc/passwd",)))
    assert RS.field_value("evt.arg.uid", group0) == "2147483632"  # no such user: the number
    assert RS.field_value("evt.arg.gid", group0) == grp.getgrgid(0).gr_name  # a gid reads as a group
    assert RS.field_value("evt.arg.flags", chown) == "AT_SYMLINK_NOFOLLOW"
    rm = ctx_of(ev(T.UNLINKAT, (FD, 0, 0x200, 0, 0, 0), ("d",)))
    assert RS.field_value("evt.arg.flags", rm) == "AT_REMOVEDIR"
    assert RS.field_value("evt.arg.name", rm) == "/home/alice/d"
    assert RS.field_value("fd.name", rm) is None  # Falco sets no fd for these calls


def test_utimensat_times() -> None:
    times = (1_600_000_000, 1_500_000_000, 7 | 9 << 32)
    explicit = ev(T.UTIMENSAT, (FD, 0, 0xDEAD, 0, 0, 0), ("f",), extra=times)
    args = arguments(explicit)
    assert args["atime"] == (1_600_000_000, "2020-09-13T12:26:40.000000007Z")
    assert args["mtime"][1] == "2017-07-14T02:40:00.000000009Z"
    # UTIME_NOW / UTIME_OMIT in tv_nsec decide, whatever tv_sec holds (the kernel's reading): a time that
    # spells -1 or -2 seconds is an explicit time, never mistaken for them.
    marks = (5, 2**64 - 1, UTIME_NOW | UTIME_OMIT << 32)
    now_omit = ev(T.UTIMENSAT, (FD, 0, 0xDEAD, 0, 0, 0), ("f",), extra=marks)
    assert arguments(now_omit)["atime"] == (5, "UTIME_NOW")
    assert arguments(now_omit)["mtime"] == (-1, "UTIME_OMIT")
    minus_one = ev(T.UTIMENSAT, (FD, 0, 1, 0, 0, 0), ("f",), extra=(2**64 - 1, 0, 999_999_999))
    assert arguments(minus_one)["atime"] == (-1, "1969-12-31T23:59:59.999999999Z")
    null = ev(T.UTIMENSAT, (FD, 0, 0, 0, 0, 0), ("f",))  # no times pointer: both now, no time given
    assert "mtime" not in arguments(null) and "atime" not in arguments(null)
    huge = ev(T.UTIMENSAT, (FD, 0, 1, 0, 0, 0), ("f",), extra=(1 << 62, 0, 0))
    assert arguments(huge)["atime"] == (1 << 62, f"{1 << 62}s+0ns")  # no calendar: the numbers


@pytest.mark.parametrize(
    ("etype", "args", "strs", "extra", "want_type", "file_block"),
    [
        (T.UNLINK, (0,) * 6, ("/var/log/auth.log",), (0, 0, 0), "deletion",
         {"path": "/var/log/auth.log", "name": "auth.log", "directory": "/var/log"}),
        (T.CHMOD, (0, 0o4755, 0, 0, 0, 0), ("/tmp/sh",), (0, 0, 0), "change",
         {"path": "/tmp/sh", "name": "sh", "directory": "/tmp", "mode": "4755"}),
        (T.CHOWN, (0, 0, 0xFFFFFFFF, 0, 0, 0), ("/etc/shadow",), (0, 0, 0), "change",
         {"path": "/etc/shadow", "name": "shadow", "directory": "/etc", "uid": "0"}),
        (T.SYMLINK, (0,) * 6, ("/etc/shadow", "/tmp/s"), (0, 0, 0), "creation",
         {"path": "/tmp/s", "name": "s", "directory": "/tmp", "target_path": "/etc/shadow"}),
        (T.TRUNCATE, (0, 0, 0, 0, 0, 0), ("/var/log/wtmp",), (0, 0, 0), "change",
         {"path": "/var/log/wtmp", "name": "wtmp", "directory": "/var/log", "size": 0}),
        (T.UTIMENSAT, (FD, 0, 1, 0, 0, 0), ("/bin/ls",), (1_500_000_000, 1_500_000_000, 0), "change",
         {"path": "/bin/ls", "name": "ls", "directory": "/bin", "accessed": "2017-07-14T02:40:00.000000000Z",
          "mtime": "2017-07-14T02:40:00.000000000Z"}),
        (T.MKDIR, (0, 0o755, 0, 0, 0, 0), ("/dev/shm/.x",), (0, 0, 0), "creation",
         {"path": "/dev/shm/.x", "name": ".x", "directory": "/dev/shm"}),
    ],
)  # fmt: skip
def test_documents(etype: EventType, args: tuple[int, ...], strs: tuple[str, ...], extra: tuple[int, ...],
                   want_type: str, file_block: dict[str, object]) -> None:  # fmt: skip
    e = ev(etype, args, strs, extra)
    doc = EcsRenderer(HOST).event_doc(e, proc(), None, None, file_paths(e, resolver(proc())))
    assert doc["event"]["category"] == ["file"] and doc["event"]["type"] == [want_type]
    assert doc["event"]["action"] == SYSCALLS[etype].name and doc["sentinel"]["event"]["family"] == "file"
    assert doc["file"] == file_block


def test_rename_document_and_a_failure() -> None:
    e = ev(T.RENAME, (0,) * 6, ("x.tmp", "/etc/cron.d/job"), ret=-13)
    doc = EcsRenderer(HOST).event_doc(e, proc(), None, None, file_paths(e, resolver(proc())))
    assert doc["file"]["path"] == "/etc/cron.d/job"
    assert doc["sentinel"]["event"]["source_path"] == "/home/alice/x.tmp"
    assert doc["sentinel"]["event"]["arg"] == {"oldpath": "/home/alice/x.tmp", "newpath": "/etc/cron.d/job"}
    assert doc["sentinel"]["event"]["rawarg"] == {"oldpath": "x.tmp", "newpath": "/etc/cron.d/job"}
    assert doc["event"]["outcome"] == "failure" and doc["message"].endswith("failed: EACCES")
    bare = EcsRenderer(HOST).event_doc(e, None)  # no paths given: as spelled
    assert bare["file"]["path"] == "/etc/cron.d/job" and "directory" in bare["file"]


def test_hostile_paths_stay_valid_json(tmp_path: Path) -> None:
    from sentinel.text import dumps

    nasty = "/tmp/\udcff\x1b[31m\n\x00evil"
    e = ev(T.RENAME, (0,) * 6, (nasty, "a\udcfe"))
    doc = EcsRenderer(HOST).event_doc(e, proc(), None, None, file_paths(e, resolver(proc())))
    assert b"\n" not in dumps(doc)
    path = tmp_path / "c"
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        w.write_event(e)
    back = [x for x in CaptureReader(path) if isinstance(x, Event)]
    assert back[0].sys_strs == (nasty, "a\udcfe") and back[0].type is T.RENAME
