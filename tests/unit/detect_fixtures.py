"""Shared by the alert/detection tests: a process table, events, rules, and a small duck-typed ruleset.

``FakeRuleSet`` stands in for the engine's ``RuleSet`` (``rules``, ``sha256``, ``match``, ``output``) where a
test is about alerts rather than the rule language; conditions are plain Python predicates.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from sentinel import log as logmod
from sentinel.events import Event, EventType
from sentinel.host import HostInfo
from sentinel.process.facts import ProcFacts, ReplayFacts
from sentinel.process.table import ProcessTable
from sentinel.rules.context import EvalContext
from sentinel.rules.model import Rule

HOST = HostInfo(
    hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000_000_000_000
)
S = 1_000_000_000
SHA = "0123456789abcdef" * 4
# What a Falco-format alert of a host process adds to its output fields (Falco's default suggested output).
HOST_SUGGESTED = {
    "container.id": "host",
    "container.name": "host",
    "container.image.repository": "",  # Falco's host: empty image fields
    "container.image.tag": "",
    "k8s.pod.name": None,
    "k8s.ns.name": None,
}


def ev(etype: EventType, ts: int, pid: int, **kw: Any) -> Event:
    kw.setdefault("tid", pid)
    kw.setdefault("uid", 0)
    kw.setdefault("gid", 0)
    kw.setdefault("comm", "sh")
    return Event(type=etype, ts_ns=ts, pid=pid, **kw)


def table_with(child: ProcFacts) -> ProcessTable:
    """init (1) → ``child``, bootstrapped; users and groups all root."""
    facts = ReplayFacts()
    facts.feed(ProcFacts(pid=1, start_ticks=1, ppid=0, comm="init", exe="/sbin/init", cwd="/", args=["init"]))
    facts.feed(child)
    table = ProcessTable("b", facts, clk_tck=100, user_lookup=lambda _: "root", group_lookup=lambda _: "root")
    table.bootstrap()
    return table


def make_table() -> ProcessTable:
    """init (1) → nginx (100, cwd /srv/www) → nothing else yet."""
    return table_with(
        ProcFacts(pid=100, start_ticks=50, ppid=1, comm="nginx", exe="/usr/sbin/nginx", cwd="/srv/www",
                  args=["nginx"])
    )  # fmt: skip


def rule(
    name: str,
    priority: str = "warning",
    tags: list[str] | None = None,
    output: str = "%proc.name touched %fd.name",
    enabled: bool = True,
    when: Callable[[EvalContext], bool] | None = None,
) -> Rule:
    r = Rule(
        name=name,
        desc=f"{name} (test rule)",
        condition="(python predicate)",
        output=output,
        priority=priority,
        tags=list(tags or []),
        enabled=enabled,
    )
    r.matcher = when or (lambda _ctx: True)
    return r


def proc_name(ctx: EvalContext) -> str:
    return ctx.proc.comm if ctx.proc is not None else ctx.ev.comm


class FakeRuleSet:
    """Duck-typed RuleSet: every enabled rule whose predicate holds, in order; a tiny %field formatter."""

    def __init__(self, rules: list[Rule], sha256: str = SHA) -> None:
        self.rules = rules
        self.sha256 = sha256
        self.matched = 0

    def match(self, ctx: EvalContext) -> list[Rule]:
        self.matched += 1
        return [r for r in self.rules if r.enabled and r.matcher(ctx)]

    def field_value(self, name: str, ctx: EvalContext) -> Any:
        return {
            "proc.name": proc_name(ctx),
            "proc.pid": ctx.ev.pid,
            "proc.exepath": ctx.proc.exe if ctx.proc is not None else None,
            "proc.pname": ctx.proc.parent.comm if ctx.proc is not None and ctx.proc.parent else None,
            "fd.name": ctx.path,
            "evt.type": ctx.ev.type_name,
        }.get(name)

    def output(self, r: Rule, ctx: EvalContext) -> tuple[str, dict[str, Any]]:
        fields: dict[str, Any] = {}
        words = []
        for word in r.output.split(" "):
            if word.startswith("%"):
                value = self.field_value(word[1:], ctx)
                fields[word[1:]] = value
                words.append("<NA>" if value is None else str(value))
            else:
                words.append(word)
        return " ".join(words), fields


class ListSink:
    """A sink that keeps the lines it was given."""

    name = "list"

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.flushes = 0
        self.closed = False
        self.written = 0

    def write(self, line: bytes, priority: str = "warning") -> None:
        assert b"\n" not in line
        self.lines.append(line)
        self.written += 1

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True

    def docs(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


def bytes_lines(out: io.BytesIO) -> list[dict[str, Any]]:
    data = out.getvalue()
    assert data == b"" or data.endswith(b"\n")
    return [orjson.loads(line) for line in data.splitlines()]


@pytest.fixture(autouse=True)
def diagnostics_to_the_current_stderr() -> Any:
    """Diagnostics bind to the sys.stderr of the test that configured them (capsys's, closed afterwards):
    rebind after each test. Modules that call ``cli.main`` or ``log.configure`` under capsys import this."""
    yield
    logmod.configure("info")
