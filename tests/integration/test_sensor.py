"""The live sensor on the real kernel: real processes, real opens and connects, exact captured fields."""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from sentinel.text import unescape, unescape_text

from .conftest import Agent, get

pytestmark = pytest.mark.kernel


def marker() -> str:
    return "m" + uuid.uuid4().hex[:12]


def execs_with_arg(agent: Agent, arg: str, **kw: Any) -> list[dict[str, Any]]:
    return agent.wait_for(
        lambda d: (
            get(d, "event.action") == "exec"
            and arg in (get(d, "process.args") or []) + (get(d, "sentinel.event.args") or [])
        ),
        what=f"exec with argument {arg}",
        **kw,
    )


def test_exec_argv_is_exact_including_spaces_quotes_and_bytes(agent: Agent, tmp_path: Path) -> None:
    m = marker()
    raw = b"bad\xff\xfe-bytes"
    args = [b"/bin/echo", m.encode(), b"two words", b'it\'s "quoted"', raw, b"tab\there", b"new\nline", b""]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, cwd=tmp_path)
    doc = execs_with_arg(agent, m)[0]
    got = get(doc, "process.args")
    assert got[:4] == ["/bin/echo", m, "two words", 'it\'s "quoted"']
    assert unescape(got[4]) == raw, "non-UTF-8 argv must round-trip through the escaped form"
    assert "process.args" in get(doc, "sentinel.escaped_fields")
    assert got[5:] == ["tab\there", "new\nline", ""]
    line = get(doc, "process.command_line")  # shell-quoted: splits back into the exact argv, bytes included
    assert "process.command_line" in get(doc, "sentinel.escaped_fields")
    assert [a.encode("utf-8", "surrogateescape") for a in shlex.split(unescape_text(line))] == args
    assert get(doc, "process.args_count") == len(args)
    assert get(doc, "process.executable") == os.path.realpath("/bin/echo")
    assert get(doc, "sentinel.event.filename") == "/bin/echo"
    assert get(doc, "process.working_directory") == str(tmp_path)
    assert get(doc, "process.parent.pid") == os.getpid()
    assert get(doc, "event.outcome") == "success"
    assert get(doc, "event.category") == ["process"] and get(doc, "event.type") == ["start"]


def test_three_level_ancestry_cwd_and_uid(agent: Agent, tmp_path: Path) -> None:
    m = marker()
    tmp_path.chmod(0o755)
    # sh -> sh -> /bin/true; "; true" keeps each shell from exec'ing its last command in place.
    inner = f"/bin/true {m}; true"
    outer = subprocess.Popen(
        ["/bin/sh", "-c", f"/bin/sh -c '{inner}'; true"], cwd=tmp_path, user=65534, group=65534
    )
    outer.wait()
    doc = execs_with_arg(agent, m)[0]
    assert get(doc, "process.user.id") == "65534"
    assert get(doc, "process.user.name") == "nobody"
    assert get(doc, "process.working_directory") == str(tmp_path)
    assert get(doc, "process.executable") == os.path.realpath("/bin/true")
    ancestors = get(doc, "sentinel.ancestors")
    # [inner sh, outer sh, pytest, ...]
    assert ancestors[1]["pid"] == outer.pid
    assert ancestors[2]["pid"] == os.getpid()
    assert get(doc, "process.parent.pid") == ancestors[0]["pid"]
    # shell-quoted (shlex.join): each line splits back into its process's argv
    assert get(doc, "process.parent.command_line") == shlex.join(["/bin/sh", "-c", inner])
    assert ancestors[1]["command_line"] == shlex.join(["/bin/sh", "-c", f"/bin/sh -c '{inner}'; true"])
    assert ancestors[0]["executable"] == os.path.realpath("/bin/sh")
    assert len({a["entity_id"] for a in ancestors}) == len(ancestors)


def test_process_that_exits_immediately_is_fully_enriched(agent: Agent, tmp_path: Path) -> None:
    m = marker()
    binary = tmp_path / "quick"
    shutil.copy("/bin/true", binary)
    subprocess.run([str(binary), m], check=True, cwd=tmp_path)
    doc = execs_with_arg(agent, m)[0]
    assert get(doc, "process.executable") == str(binary)
    assert get(doc, "process.name") == "quick"
    assert get(doc, "process.parent.pid") == os.getpid()
    assert get(doc, "process.working_directory") == str(tmp_path)
    pid = get(doc, "process.pid")
    agent.wait_for(lambda d: get(d, "event.action") == "exit" and get(d, "process.pid") == pid, what="exit")


def test_failed_exec_is_an_event(agent: Agent) -> None:
    m = marker()
    missing = f"/nonexistent/{m}"
    with pytest.raises(FileNotFoundError):
        subprocess.run([missing, m])
    doc = agent.wait_for(
        lambda d: get(d, "event.action") == "exec" and get(d, "sentinel.event.filename") == missing,
        what=missing,
    )[0]
    assert get(doc, "event.outcome") == "failure"
    assert get(doc, "error.code") == "ENOENT"
    assert get(doc, "sentinel.event.ret") == -errno.ENOENT
    assert get(doc, "sentinel.event.args") == [missing, m]


def test_zero_args_huge_argv_and_execveat(agent: Agent, helper_bin: Any, tmp_path: Path) -> None:
    tool = helper_bin("exec_argv")
    target = tmp_path / f"zero-{marker()}"
    shutil.copy("/bin/true", target)
    subprocess.run([tool, "zero", str(target)], check=True)
    doc = agent.wait_for(lambda d: get(d, "sentinel.event.filename") == str(target), what="zero-arg exec")[0]
    assert get(doc, "process.args") == []
    assert get(doc, "process.args_count") == 0

    big = tmp_path / f"big-{marker()}"
    shutil.copy("/bin/true", big)
    subprocess.run([tool, "big", "100", "1000", str(big)], check=True)  # 100 KB of arguments
    doc = agent.wait_for(lambda d: get(d, "sentinel.event.filename") == str(big), what="huge exec")[0]
    args = get(doc, "process.args")
    assert 4 <= len(args) < 100
    assert all(len(a) <= 1000 for a in args)
    assert args[0] == "A" * 1000
    assert get(doc, "sentinel.truncated.args") is True
    assert get(doc, "sentinel.truncated.args_total") == 100

    name = f"at-{marker()}"
    shutil.copy("/bin/true", tmp_path / name)
    subprocess.run([tool, "at", str(tmp_path), name, "x"], check=True)
    doc = agent.wait_for(lambda d: get(d, "sentinel.event.filename") == name, what="execveat")[0]
    assert get(doc, "process.args") == [name, "x"]
    assert get(doc, "process.executable") == str(tmp_path / name)


OPEN_SCRIPT = textwrap.dedent(
    """
    import os, sys
    base = sys.argv[1]
    os.chdir(base)
    fd = os.open("created.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640); os.close(fd)
    fd = os.open(os.path.join(base, "created.txt"), os.O_RDONLY); os.close(fd)
    try: os.open("missing.txt", os.O_RDONLY)
    except FileNotFoundError: pass
    dfd = os.open(os.path.join(base, "sub"), os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open("inner.txt", os.O_RDONLY, dir_fd=dfd); os.close(fd)
    os.setuid(65534)
    try: os.open("/etc/shadow", os.O_RDONLY)
    except PermissionError: pass
    """
)


def test_opens_flags_results_and_relative_paths(agent: Agent, tmp_path: Path) -> None:
    base = tmp_path / marker()
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "inner.txt").write_text("x")
    proc = subprocess.run([sys.executable, "-c", OPEN_SCRIPT, str(base)], check=True)
    assert proc.returncode == 0

    def opens(path: str, count: int = 1, pid: int | None = None) -> list[dict[str, Any]]:
        return agent.wait_for(
            lambda d: (
                get(d, "event.action") == "open"
                and get(d, "file.path") == path
                and (pid is None or get(d, "process.pid") == pid)
            ),
            count=count,
            what=f"open of {path}",
        )

    created = str(base / "created.txt")
    write, read = opens(created, count=2)
    assert get(write, "sentinel.event.raw_path") == "created.txt"
    assert {"O_WRONLY", "O_CREAT", "O_TRUNC"} <= set(get(write, "sentinel.event.flags"))
    assert get(write, "sentinel.event.requested_mode") == "0640" and "mode" not in write["file"]
    assert get(write, "event.type") == ["creation"] and get(write, "sentinel.event.created") is True
    assert get(write, "sentinel.event.ret") >= 0 and get(write, "event.outcome") == "success"
    assert get(read, "sentinel.event.flags")[0] == "O_RDONLY"
    assert get(read, "event.type") == ["access"]
    assert get(read, "file.name") == "created.txt" and get(read, "file.directory") == str(base)

    pid = get(write, "process.pid")
    assert pid != os.getpid()
    missing = opens(str(base / "missing.txt"), pid=pid)[0]
    assert get(missing, "error.code") == "ENOENT" and get(missing, "event.outcome") == "failure"

    inner = opens(str(base / "sub" / "inner.txt"), pid=pid)[0]
    assert get(inner, "sentinel.event.raw_path") == "inner.txt"
    assert get(inner, "sentinel.event.dirfd") >= 0

    shadow = agent.wait_for(
        lambda d: get(d, "file.path") == "/etc/shadow" and get(d, "process.pid") == get(inner, "process.pid"),
        what="/etc/shadow as nobody",
    )[0]
    assert get(shadow, "error.code") == "EACCES"
    assert get(shadow, "process.user.id") == "65534"


CONNECT_SCRIPT = textwrap.dedent(
    """
    import socket, sys, errno
    port4, port6, closed, upath = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    s = socket.create_connection(("127.0.0.1", port4)); s.close()
    s = socket.socket(socket.AF_INET6); s.connect(("::1", port6)); s.close()
    s = socket.socket(socket.AF_INET); rc = s.connect_ex(("127.0.0.1", closed))
    assert rc == errno.ECONNREFUSED, rc
    s = socket.socket(socket.AF_UNIX); s.connect(upath); s.close()
    s = socket.socket(socket.AF_INET); s.setblocking(False)
    rc = s.connect_ex(("127.0.0.1", port4)); assert rc in (0, errno.EINPROGRESS), rc
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("127.0.0.1", 53)); u.close()
    """
)


def test_connects_ipv4_ipv6_unix_refused_and_in_progress(agent: Agent, tmp_path: Path) -> None:
    l4 = socket.create_server(("127.0.0.1", 0))
    l6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    upath = str(tmp_path / f"{marker()}.sock")
    lu = socket.socket(socket.AF_UNIX)
    lu.bind(upath)
    lu.listen()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    closed = probe.getsockname()[1]
    probe.close()
    port4, port6 = l4.getsockname()[1], l6.getsockname()[1]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CONNECT_SCRIPT, str(port4), str(port6), str(closed), upath]
        )
        assert proc.returncode == 0
    finally:
        l4.close()
        l6.close()
        lu.close()

    def connects(pred: Any, what: str, count: int = 1) -> list[dict[str, Any]]:
        return agent.wait_for(
            lambda d: get(d, "event.action") == "connect" and pred(d), count=count, what=what
        )

    v4 = connects(lambda d: get(d, "destination.port") == port4, "ipv4", count=2)
    assert get(v4[0], "destination.ip") == "127.0.0.1"
    assert get(v4[0], "network.type") == "ipv4" and get(v4[0], "network.transport") == "tcp"
    assert get(v4[0], "event.outcome") == "success" and get(v4[0], "network.direction") == "egress"
    assert get(v4[1], "error.code") == "EINPROGRESS" and get(v4[1], "event.outcome") == "unknown"
    v6 = connects(lambda d: get(d, "destination.port") == port6, "ipv6")[0]
    assert get(v6, "destination.ip") == "::1" and get(v6, "network.type") == "ipv6"
    refused = connects(lambda d: get(d, "destination.port") == closed, "refused")[0]
    assert get(refused, "error.code") == "ECONNREFUSED" and get(refused, "event.outcome") == "failure"
    unix = connects(lambda d: get(d, "destination.address") == upath, "unix")[0]
    assert get(unix, "sentinel.event.family") == "AF_UNIX" and get(unix, "event.outcome") == "success"
    udp = connects(
        lambda d: get(d, "destination.port") == 53 and get(d, "process.pid") == get(v4[0], "process.pid"),
        "udp",
    )[0]
    assert get(udp, "network.transport") == "udp"


def test_agent_own_activity_is_absent(agent: Agent) -> None:
    m = marker()
    subprocess.run(["/bin/true", m], check=True)
    execs_with_arg(agent, m)
    own = agent.proc.pid
    assert not [d for d in agent.snapshot() if get(d, "process.pid") == own]


def test_every_line_is_json_and_ready_was_logged(agent: Agent) -> None:
    assert not agent.bad_lines, "\n".join(agent.bad_reasons[:3])
    ready = [d for d in agent.diagnostics if d.get("event") == "sentinel.ready"]
    assert ready and ready[0]["tracepoints"] >= 20
    starting = [d for d in agent.diagnostics if d.get("event") == "sentinel.starting"]
    assert starting and starting[0]["headers_mode"] in {"matching", "substitute"}


def test_hostile_path_bytes_and_control_characters(agent: Agent, tmp_path: Path) -> None:
    name = b"evil\xff\xfe\nline\x1b[31m\\x41" + marker().encode()
    target = os.fsencode(tmp_path) + b"/" + name
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)
    doc = agent.wait_for(
        lambda d: get(d, "event.action") == "open" and marker_in_path(d, name), what="hostile open"
    )[0]
    assert unescape(get(doc, "file.path")) == target
    assert "file.path" in get(doc, "sentinel.escaped_fields")


def marker_in_path(doc: dict[str, Any], name: bytes) -> bool:
    path = get(doc, "file.path")
    return (
        isinstance(path, str)
        and "file.path" in (get(doc, "sentinel.escaped_fields") or [])
        and unescape(path).endswith(name)
    )


@pytest.mark.parametrize("reader", ["mmap", "bcc"])
def test_losses_are_counted_and_reported(reader: str) -> None:
    """Stop a small-buffer agent, flood it, resume it: the kernel drops samples and the agent says so, with
    either perf-ring reader.

    Not the defaults, on purpose: 8 pages so that it loses; every open reported so that the count is exact.
    """
    lossy = Agent("--pages", "8", "--types", "open", "--open-dedup", "0", "--perf-reader", reader)
    try:
        lossy.proc.send_signal(signal.SIGSTOP)
        try:
            script = (
                "import os\nfor i in range(20000):\n    try: os.open(f'/nonexistent-loss/{i}', 0)\n"
                "    except OSError: pass\n"
            )
            subprocess.run([sys.executable, "-c", script], check=True)
        finally:
            lossy.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not [
            d for d in lossy.diagnostics if d.get("event") == "sentinel.events_lost"
        ]:
            time.sleep(0.1)
    finally:
        assert lossy.stop() == 0
    # Per buffer: the other small buffers may lose too while the agent is stopped (the host's forks and
    # exits, its kill() calls in the security buffer), each reported under its own name.
    reports = [d for d in lossy.diagnostics if d.get("event") == "sentinel.events_lost"]
    lost = [d for d in reports if d["buffer"] == "open"]
    assert lost, f"no loss reported: {lossy.diagnostics[-3:]}"
    assert lost[0]["lost"] > 0
    stopped = [d for d in lossy.diagnostics if d.get("event") == "sentinel.stopped"][-1]
    assert stopped["lost"]["open"] == sum(d["lost"] for d in lost)
    assert stopped["received"]["open"] + stopped["lost"]["open"] >= 20000


def test_the_default_reader_is_the_direct_one(agent: Agent) -> None:
    """x86-64 (our hosts, CI) reads the rings directly; falling back to bcc's reader silently would hide a
    broken reader behind a slower one."""
    ready = next(d for d in agent.diagnostics if d.get("event") == "sentinel.ready")
    assert ready["perf_reader"] == "mmap", ready["perf_reader"]


def test_bcc_reader_delivers_the_same_events(tmp_path: Path) -> None:
    """The fallback reader (other architectures) stays working: an exec and an open, exact."""
    other = Agent("--perf-reader", "bcc")
    try:
        ready = next(d for d in other.diagnostics if d.get("event") == "sentinel.ready")
        assert ready["perf_reader"] == "bcc"
        m = marker()
        target = tmp_path / m
        subprocess.run(["/bin/sh", "-c", f"cat {target} 2>/dev/null; true", m], check=True)
        execs_with_arg(other, m)
        opens = other.wait_for(
            lambda d: get(d, "event.action") == "open" and get(d, "file.path") == str(target), what="open"
        )
        assert get(opens[0], "event.outcome") == "failure"
    finally:
        assert other.stop() == 0
