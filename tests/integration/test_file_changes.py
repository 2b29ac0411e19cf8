"""File changes made without an open, on the real kernel: each call made through syscall(2) by a real process,
successful and failing, with its paths resolved against the cwd and dirfds and its fields exact; the shipped
rules on them fire from a process no rule names."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import Agent, get
from .test_security_syscalls import calls_of, run_calls

pytestmark = pytest.mark.kernel


def one(agent: Agent, pid: int, action: str, pred: Any = None, count: int = 1) -> dict[str, Any]:
    docs = calls_of(agent, pid, action, count=count)
    if pred is None:
        return docs[0]
    hits = [d for d in docs if pred(d)]
    assert hits, f"no {action} matching in {[get(d, 'sentinel.event.arg') for d in docs]}"
    return hits[0]


def test_each_file_change_names_its_paths(agent: Agent, tmp_path: Path) -> None:
    t = str(tmp_path)
    pid = run_calls(
        f"""
        import time
        os.chdir({t!r})
        dfd = os.open({t!r}, os.O_RDONLY | os.O_DIRECTORY)
        sc("mkdir", b"d", 0o755)
        sc("mkdirat", dfd, b"e", 0o700)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644))
        sc("chmod", b"f", 0o4755)
        sc("fchmodat", dfd, b"f", 0o644)
        sc("fchmodat2", dfd, b"f", 0o600, 0)
        sc("chown", b"f", 0, 0xFFFFFFFF)
        sc("lchown", b"f", 0xFFFFFFFF, 0)
        sc("fchownat", dfd, b"f", 0, 0, 0x100)
        fd = os.open("f", os.O_WRONLY)
        sc("fchmod", fd, 0o640)
        sc("fchown", fd, 0, 0)
        sc("ftruncate", fd, 3)
        sc("truncate", b"f", 1)
        times = (ctypes.c_int64 * 4)(1546300800, 5, 0, (1 << 30) - 2)   # 2019-01-01, UTIME_OMIT
        sc("utimensat", -100, b"f", times, 0)
        sc("utimensat", dfd, b"f", None, 0)                              # both now
        sc("link", b"f", b"g")
        sc("linkat", dfd, b"g", dfd, b"h", 0)
        sc("symlink", b"../f", b"d/s")
        sc("symlinkat", b"/etc/shadow", dfd, b"sh")
        sc("rename", b"g", b"g2")
        sc("renameat", dfd, b"g2", dfd, b"g3")
        sc("renameat2", dfd, b"g3", dfd, b"h", 1)                        # RENAME_NOREPLACE: EEXIST
        sc("unlink", b"h")
        sc("unlinkat", dfd, b"d/s", 0)
        sc("unlinkat", dfd, b"e", 0x200)                                 # AT_REMOVEDIR
        sc("rmdir", b"d")
        sc("unlink", b"missing")
        time.sleep(1.5)   # the fd calls' path is read from /proc while the process lives
        """
    )
    st = os.stat(tmp_path / "f")
    mkdir = one(agent, pid, "mkdir")
    assert get(mkdir, "file.path") == f"{t}/d" and get(mkdir, "event.type") == ["creation"]
    assert get(mkdir, "sentinel.event.rawarg") == {"path": "d", "mode": 0o755}
    assert get(mkdir, "event.category") == ["file"] and get(mkdir, "sentinel.event.family") == "file"
    assert get(one(agent, pid, "mkdirat"), "sentinel.event.arg.path") == f"{t}/e"
    chmod = one(agent, pid, "chmod")
    assert get(chmod, "file.mode") == "4755" and "S_ISUID" in get(chmod, "sentinel.event.arg.mode")
    assert get(one(agent, pid, "fchmodat"), "sentinel.event.arg.filename") == f"{t}/f"
    fchmodat2 = one(agent, pid, "fchmodat2")
    assert get(fchmodat2, "file.mode") == "0600" and get(fchmodat2, "event.outcome") == "success"
    chown = one(agent, pid, "chown")
    assert get(chown, "file.uid") == "0" and get(chown, "file.gid") is None  # -1: unchanged
    assert get(chown, "sentinel.event.arg.gid") == "-1"  # unchanged
    assert get(chown, "sentinel.event.arg.uid") == "root" and get(chown, "sentinel.event.rawarg.uid") == 0
    assert get(one(agent, pid, "fchownat"), "sentinel.event.arg.flags") == "AT_SYMLINK_NOFOLLOW"
    assert get(one(agent, pid, "lchown"), "file.gid") == "0"
    for action in ("fchmod", "fchown", "ftruncate"):
        doc = one(agent, pid, action)
        assert get(doc, "file.inode") == str(st.st_ino), action
        assert get(doc, "file.device") == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", action
        assert get(doc, "file.path") == f"{t}/f", action
    assert get(one(agent, pid, "ftruncate"), "file.size") == 3
    assert get(one(agent, pid, "truncate"), "file.size") == 1
    utimes = calls_of(agent, pid, "utimensat", count=2)
    explicit = next(d for d in utimes if get(d, "sentinel.event.arg.atime"))
    assert get(explicit, "sentinel.event.arg.atime") == "2019-01-01T00:00:00.000000005Z"
    assert get(explicit, "sentinel.event.arg.mtime") == "UTIME_OMIT"
    assert get(explicit, "file.accessed") == "2019-01-01T00:00:00.000000005Z"
    assert get(explicit, "file.mtime") is None
    now = next(d for d in utimes if d is not explicit)
    assert get(now, "sentinel.event.arg.mtime") is None and get(now, "file.path") == f"{t}/f"
    link = one(agent, pid, "link")
    assert get(link, "file.path") == f"{t}/g" and get(link, "sentinel.event.source_path") == f"{t}/f"
    assert get(one(agent, pid, "linkat"), "sentinel.event.arg.newpath") == f"{t}/h"
    symlink = one(agent, pid, "symlink")
    assert get(symlink, "file.path") == f"{t}/d/s" and get(symlink, "file.target_path") == f"{t}/f"
    assert get(symlink, "sentinel.event.rawarg.target") == "../f"
    assert get(one(agent, pid, "symlinkat"), "file.target_path") == "/etc/shadow"
    rename = one(agent, pid, "rename")
    assert get(rename, "sentinel.event.source_path") == f"{t}/g" and get(rename, "file.path") == f"{t}/g2"
    assert get(rename, "event.type") == ["change"]
    assert get(one(agent, pid, "renameat"), "file.path") == f"{t}/g3"
    noreplace = one(agent, pid, "renameat2")
    assert get(noreplace, "error.code") == "EEXIST"
    assert get(noreplace, "sentinel.event.arg.flags") == "RENAME_NOREPLACE"
    unlinks = calls_of(agent, pid, "unlink", count=2)
    assert {get(d, "file.path") for d in unlinks} == {f"{t}/h", f"{t}/missing"}
    missing = next(d for d in unlinks if get(d, "file.path") == f"{t}/missing")
    assert get(missing, "error.code") == "ENOENT" and get(missing, "event.type") == ["deletion"]
    rmdir_at = one(agent, pid, "unlinkat", lambda d: get(d, "sentinel.event.arg.flags") == "AT_REMOVEDIR", 2)
    assert get(rmdir_at, "file.path") == f"{t}/e"
    assert get(one(agent, pid, "rmdir"), "file.path") == f"{t}/d"


def test_the_file_change_rules_fire_on_the_real_calls(tmp_path: Path) -> None:
    """Each shipped file-change rule, on the real kernel, from python3 making the calls itself."""
    from .test_detection import Detector

    tag = uuid.uuid4().hex[:8]
    log = Path(f"/var/log/sentinel-test-{tag}.log")
    stamped = Path(f"/usr/local/lib/sentinel-test-{tag}")
    pam_file = Path(f"/etc/pam.d/sentinel-test-{tag}")  # a PAM service nothing uses (pam is in every Debian)
    for path in (log, stamped):
        path.write_text("x\n")
    pam_file.write_text("# sentinel test\n")
    history = tmp_path / ".bash_history"
    history.write_text("ls\n")
    shadow = os.path.relpath("/etc/shadow", tmp_path)  # ../../../etc/shadow: resolved from the link's dir
    d = Detector(("--model", "off"))
    try:
        pid = run_calls(
            f"""
            sc("symlink", {shadow.encode()!r}, {str(tmp_path / "s").encode()!r})
            open({str(tmp_path / "sh").encode()!r}, "w").close()
            sc("chmod", {str(tmp_path / "sh").encode()!r}, 0o4755)
            sc("rename", {str(history).encode()!r}, {str(tmp_path / "gone").encode()!r})
            sc("unlink", {str(log).encode()!r})
            times = (ctypes.c_int64 * 4)(1262304000, 0, 1262304000, 0)        # 2010-01-01
            sc("utimensat", -100, {str(stamped).encode()!r}, times, 0)
            sc("fchownat", -100, {str(pam_file).encode()!r}, 0, 0, 0)
            """
        )
        expected = {
            "Link Created To A Sensitive File": "/etc/shadow",
            "Setuid Or Setgid Bit Set": str(tmp_path / "sh"),
            "Shell History Removed Or Truncated": str(history),
            "Log File Removed Or Truncated": str(log),
            "File Timestamps Changed In System Directories": str(stamped),
            "Owner Of A Sensitive File Changed": str(pam_file),
        }
        for rule, path in expected.items():
            alert = d.wait_alert(rule, lambda a: get(a, "process.pid") == pid, timeout=20.0)
            assert path in get(alert, "message"), (rule, get(alert, "message"))
    finally:
        for path in (log, stamped, pam_file):
            path.unlink(missing_ok=True)
        assert d.stop() == 0
