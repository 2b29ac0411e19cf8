"""Builders shared by the rule-engine tests: processes, events and contexts without a kernel or /proc."""

from __future__ import annotations

import functools
import itertools
from typing import Any

from sentinel.events import AF_INET, Credentials, Event, EventType
from sentinel.process.table import Process
from sentinel.rules import EvalContext, RuleSet, load_text
from sentinel.rules.model import Diagnostic

WALL = 1_700_000_000_123_456_789
BOOT_TS = 50_000_000_000


def proc_chain(*links: tuple[str, str, list[str]], uid: int = 0, user: str | None = "root") -> Process:
    """Processes child first: ``proc_chain(("bash", "/usr/bin/bash", ["bash"]), ("nginx", ...), ...)``."""
    procs = []
    for i, (comm, exe, args) in enumerate(links):
        procs.append(
            Process(
                pid=1000 - i * 100 if i else 4242,
                ppid=0,
                start_ns=BOOT_TS - 10_000_000_000 * (i + 1),
                entity_id=f"ent{i}",
                comm=comm,
                exe=exe,
                filename=exe,
                args=list(args),
                cwd="/srv" if i == 0 else "/",
                uid=uid,
                gid=uid,
                user_name=user,
                group_name=user,
            )
        )
    for child, parent in itertools.pairwise(procs):
        child.parent = parent
        child.ppid = parent.pid
    return procs[0]


def web_shell() -> Process:
    proc = proc_chain(
        ("bash", "/usr/bin/bash", ["bash", "-c", "id; uname -a"]),
        ("nginx", "/usr/sbin/nginx", ["nginx", "-g", "daemon off;"]),
        ("systemd", "/usr/lib/systemd/systemd", ["/sbin/init"]),
        uid=33,
        user="www-data",
    )
    # As the probes read them: www-data throughout, logged in as www-data (session 2), CAP_CHOWN, CAP_NET_RAW.
    proc.creds = Credentials(33, 33, 33, 33, 33, 33, 33, 2, 0x2001, 0x2001 | 1 << 21)
    return proc


def event(etype: EventType, proc: Process | None = None, **kw: Any) -> Event:
    pid = proc.pid if proc is not None else 4242
    kw.setdefault("comm", proc.comm if proc is not None else "x")
    kw.setdefault("uid", proc.uid if proc is not None else 0)
    kw.setdefault("gid", proc.gid if proc is not None else 0)
    return Event(type=etype, ts_ns=BOOT_TS, pid=pid, tid=pid, **kw)


def exec_ctx(proc: Process | None = None, **kw: Any) -> EvalContext:
    proc = proc if proc is not None else web_shell()
    kw.setdefault("filename", proc.exe)
    kw.setdefault("argv", list(proc.args))
    kw.setdefault("argc_total", len(kw["argv"]))
    return EvalContext(event(EventType.EXEC, proc, **kw), proc, None, WALL)


def open_ctx(
    path: str,
    flags: int = 0,
    proc: Process | None = None,
    raw: str | None = None,
    ret: int = 3,
    evflags: int = 0,
    **kw: Any,
) -> EvalContext:
    """An open of ``path`` (resolved) with O_* ``flags``; ``evflags`` are the event header's FLAG_* bits."""
    proc = proc if proc is not None else web_shell()
    raw_path = raw if raw is not None else path
    ev = event(EventType.OPEN, proc, path=raw_path, open_flags=flags, ret=ret, flags=evflags, **kw)
    return EvalContext(ev, proc, path, WALL)


def connect_ctx(
    address: str = "203.0.113.7",
    port: int = 4444,
    family: int = AF_INET,
    sock_type: int = 1,
    proc: Process | None = None,
    ret: int = 0,
) -> EvalContext:
    proc = proc if proc is not None else web_shell()
    ev = event(
        EventType.CONNECT, proc, fd=5, family=family, address=address, port=port, sock_type=sock_type, ret=ret
    )
    return EvalContext(ev, proc, None, WALL)


def rule_yaml(condition: str, name: str = "r", output: str = "out %proc.name", extra: str = "") -> str:
    cond = condition.replace("\n", " ")
    return (
        f"- rule: {name}\n  desc: test\n  condition: {quote_yaml(cond)}\n  output: {quote_yaml(output)}\n"
        f"  priority: warning\n{extra}"
    )


def quote_yaml(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Errors, and the problems that refused a rule (warnings then: the other rules load)."""
    return [d for d in diags if d.severity == "error" or d.refuses]


def refused(res: Any) -> list[str]:
    """Names of the rules a load refused (None ruleset: the whole load failed → ["*"])."""
    if res.ruleset is None:
        return ["*"]
    return [r.name for r in res.ruleset.refused]


def ruleset(text: str, **kw: Any) -> RuleSet:
    res = load_text(text, "test.yaml", **kw)
    assert res.ruleset is not None, [str(d) for d in errors(res.diagnostics)]
    return res.ruleset


@functools.lru_cache(maxsize=1024)
def _single(condition: str, prelude: str) -> RuleSet:
    return ruleset(prelude + rule_yaml(condition))


def holds(condition: str, ctx: EvalContext, prelude: str = "") -> bool:
    """Whether a condition matches ``ctx`` (through the index and through the rule's own matcher)."""
    rs = _single(condition, prelude)
    via_match = bool(rs.match(ctx))
    via_matcher = bool(rs.rules[-1].matcher(ctx))
    assert via_match == via_matcher, condition
    return via_match
