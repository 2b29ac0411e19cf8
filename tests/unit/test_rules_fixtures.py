"""Rule fixtures: events rebuilt from ECS documents (round trip through EcsRenderer), the runner, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.alerts.ecs import EcsRenderer
from sentinel.events import AF_INET6, AF_UNIX
from sentinel.host import HostInfo
from sentinel.rules import EvalContext
from sentinel.rules.fields import FIELDS_LIST
from sentinel.rules.fixtures import FixtureError, from_ecs, parse_time, run_fixtures
from tests.unit.rules_support import (
    BOOT_TS,
    WALL,
    connect_ctx,
    exec_ctx,
    open_ctx,
    rule_yaml,
    ruleset,
    web_shell,
)
from tests.unit.test_cli import run
from tests.unit.test_rules_fields import in_container

REPO = Path(__file__).resolve().parents[2]
HOST = HostInfo("h", "m", "b", "6.1", WALL - BOOT_TS)  # so that the kernel time renders as WALL
RS = ruleset(rule_yaml("evt.type = execve"))

# What an ECS document cannot carry back: execveat/openat2/creat are all "execve"/"open" there; for other
# events than exec, the process's exec filename is not rendered (the executable stands in for it).
LOSSY = {"evt.type", "sentinel.exec.filename"}


def round_trip(ctx: EvalContext) -> EvalContext:
    doc = EcsRenderer(HOST).event_doc(ctx.ev, ctx.proc, ctx.path)
    return from_ecs(orjson.loads(orjson.dumps(doc)))


def values(ctx: EvalContext) -> dict[str, Any]:
    out = {}
    for f in FIELDS_LIST:
        if not f.filled:
            continue  # always missing, on any event
        names = [f.name] if f.arg != "index?" else [f.name, f"{f.name}[0]", f"{f.name}[1]", f"{f.name}[2]"]
        if f.arg == "key":
            names = [f"{f.name}[app]"]
        for name in names:
            if name not in LOSSY:
                out[name] = RS.field_value(name, ctx)
    return out


@pytest.mark.parametrize(
    "ctx",
    [
        exec_ctx(),
        exec_ctx(ret=-13),
        open_ctx(
            "/etc/cron.d/job", flags=0o1101, raw="cron.d/job", ret=4, mode=0o600, repeat_count=2, dirfd=7
        ),
        open_ctx("/nope", ret=-2),
        connect_ctx("203.0.113.9", 4444),
        connect_ctx("2001:db8::9", 53, family=AF_INET6, sock_type=2, ret=-115),
        connect_ctx("/run/docker.sock", 0, family=AF_UNIX),
        exec_ctx(in_container()),
    ],
    ids=["exec", "failed-exec", "open", "failed-open", "connect", "connect6", "unix", "in-container"],
)
def test_from_ecs_round_trips_every_field(ctx: EvalContext) -> None:
    ctx.proc.tty_nr = 34817  # type: ignore[union-attr]  # /dev/pts/1
    back = round_trip(ctx)
    assert values(back) == values(ctx)


def test_from_ecs_with_few_fields() -> None:
    """Hand-written fixtures leave out what does not matter."""
    ctx = from_ecs(
        {
            "event": {"action": "exec"},
            "process": {"executable": "/usr/bin/curl", "args": ["curl", "-s", "http://x"]},
        }
    )
    assert RS.field_value("proc.name", ctx) == "curl"
    assert RS.field_value("proc.cmdline", ctx) == "curl -s http://x"
    assert RS.field_value("sentinel.exec.filename", ctx) == "/usr/bin/curl"
    assert RS.field_value("proc.pname", ctx) is None
    assert RS.field_value("user.uid", ctx) == 0
    opened = from_ecs({"file": {"path": "/etc/shadow"}, "event": {"type": ["access"]}})
    assert RS.field_value("evt.type", opened) == "openat"
    assert RS.field_value("evt.is_open_read", opened) is True
    assert RS.field_value("fd.nameraw", opened) == "/etc/shadow"
    written = from_ecs(
        {
            "event": {"action": "open", "type": ["change", "creation"]},
            "file": {"path": "/x"},
            "sentinel": {"event": {"type": "creat"}},
        }
    )
    assert RS.field_value("evt.is_open_write", written) and RS.field_value("evt.type", written) == "creat"
    flags = from_ecs(
        {
            "event": {"action": "open"},
            "file": {"path": "/x", "mode": "0755"},
            "sentinel": {"event": {"flags": "O_WRONLY|O_CREAT"}},
        }
    )
    assert RS.field_value("evt.arg.mode", flags) == "0755"
    conn = from_ecs(
        {
            "destination": {"ip": "10.0.0.1", "port": 22},
            "network": {"transport": "tcp"},
            "event": {"outcome": "unknown"},
        }
    )
    assert RS.field_value("fd.name", conn) == "0.0.0.0:0->10.0.0.1:22"
    assert RS.field_value("evt.res", conn) == "EINPROGRESS"
    failed = from_ecs(
        {
            "event": {"action": "open", "outcome": "failure"},
            "file": {"path": "/x"},
            "error": {"code": "ENOENT"},
        }
    )
    assert RS.field_value("evt.res", failed) == "ENOENT"
    chained = from_ecs(
        {
            "event": {"action": "exec"},
            "process": {
                "name": "sh",
                "parent": {"pid": 100, "name": "nginx", "executable": "/usr/sbin/nginx"},
            },
            "sentinel": {
                "ancestors": [
                    {"pid": 100, "executable": "/usr/sbin/nginx", "command_line": "nginx"},
                    {"pid": 1, "executable": "/usr/lib/systemd/systemd", "command_line": "/sbin/init"},
                ]
            },
        }
    )
    assert RS.field_value("proc.aname", chained) == ["nginx", "systemd"]
    assert RS.field_value("proc.apid[2]", chained) == 1
    assert RS.field_value("proc.ppid", chained) == 100


@pytest.mark.parametrize(
    "doc",
    [
        {"event": {"action": "teleport"}},
        {"process": {"pid": "abc"}},
        {"process": "nope"},
        {"@timestamp": "yesterday"},
        {"event": {"action": "open"}, "file": {"path": "/x"}, "sentinel": {"event": {"flags": ["O_BOGUS"]}}},
        {"event": {"action": "open"}, "error": {"code": "ENOTANERRNO"}},
        {"sentinel": {"ancestors": "x"}},
        {"event": {"action": "open"}, "file": {"mode": "rwx"}},
        [],
    ],
)
def test_from_ecs_rejects_malformed_documents(doc: Any) -> None:
    with pytest.raises(FixtureError):
        from_ecs(doc)


def test_parse_time() -> None:
    assert parse_time("2023-11-14T22:13:20.123456789Z") == WALL
    assert parse_time("2023-11-14T22:13:20Z") == WALL - 123_456_789
    assert parse_time("2023-11-14T23:13:20.5+01:00") == WALL - 123_456_789 + 500_000_000
    assert parse_time(5) == 5


RULES = """
- rule: Shell From Web Server
  desc: d
  condition: evt.type = execve and proc.name in (bash, sh) and proc.pname = nginx
  output: "%proc.name"
  priority: warning
- rule: Shadow Read
  desc: d
  condition: evt.type in (open, openat) and fd.name = /etc/shadow and not proc.name = sshd
  output: "%fd.name"
  priority: warning
- rule: Untested
  desc: d
  condition: evt.type = connect and fd.sport = 1
  output: "%fd.name"
  priority: warning
"""
FIXTURES = """
- name: nginx spawns a shell
  event:
    event: {action: exec, outcome: success}
    process: {pid: 4242, name: sh, executable: /usr/bin/dash, args: [sh, -c, id],
              parent: {pid: 100, name: nginx, executable: /usr/sbin/nginx, args: [nginx]}}
  expect: [Shell From Web Server]
- name: cron runs a shell
  event:
    event: {action: exec}
    process: {name: sh, parent: {pid: 100, name: cron}}
  expect: []
- name: cat reads shadow
  event: {event: {action: open}, file: {path: /etc/shadow}, process: {name: cat}}
  expect: [Shadow Read]
- name: sshd reads shadow
  event: {event: {action: open}, file: {path: /etc/shadow}, process: {name: sshd}}
  expect: []
"""


def make_rules(tmp_path: Path, fixtures: str = FIXTURES) -> Path:
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.yaml").write_text(RULES)
    (d / "a.fixtures.yaml").write_text(fixtures)
    return d


def test_runner_reports_per_fixture_and_per_rule(tmp_path: Path) -> None:
    report = run_fixtures([make_rules(tmp_path)])
    assert report.ok, report.to_dict()
    assert [r.ok for r in report.results] == [True, True, True, True]
    cov = report.coverage
    assert (cov["Shell From Web Server"].positive, cov["Shell From Web Server"].negative) == (1, 1)
    assert (cov["Shadow Read"].positive, cov["Shadow Read"].negative) == (1, 1)
    assert (cov["Untested"].positive, cov["Untested"].negative) == (0, 0)
    missing = [d for d in report.diagnostics if d.code == "missing-fixture"]
    assert [d.item for d in missing] == ["Untested"] and missing[0].line == 12


def test_runner_failures(tmp_path: Path) -> None:
    broken = (
        FIXTURES.replace("expect: [Shadow Read]", "expect: []")
        + """
- name: unknown rule expected
  event: {event: {action: exec}}
  expect: [No Such Rule]
- name: bad event
  event: {event: {action: teleport}}
  expect: []
"""
    )
    report = run_fixtures([make_rules(tmp_path, broken)])
    assert not report.ok
    failed = {r.fixture.name: r for r in report.failed}
    assert set(failed) == {"cat reads shadow", "unknown rule expected", "bad event"}
    assert failed["cat reads shadow"].fired == ["Shadow Read"]
    assert "teleport" in (failed["bad event"].error or "")
    unknown = [d for d in report.diagnostics if d.code == "unknown-rule"]
    assert unknown and unknown[0].line == 20
    assert report.coverage["Shadow Read"].failed == 1


def test_runner_with_bad_fixture_files(tmp_path: Path) -> None:
    for text, code in [
        ("- name: x\n  event: [\n", "yaml-error"),
        ("a: b\n", "not-a-list"),
        ("- name: x\n", "missing-key"),
        ("- name: x\n  event: {}\n  expect: 5\n", "bad-type"),
    ]:
        sub = tmp_path / code
        sub.mkdir()
        report = run_fixtures([make_rules(sub, text)])
        assert not report.ok and code in [d.code for d in report.diagnostics], text


def test_cli_rules_test(tmp_path: Path) -> None:
    d = make_rules(tmp_path)
    out = run("rules", "test", str(d))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 fixture(s): 4 passed, 0 failed" in out.stdout
    assert "Untested" in out.stdout and "missing fixtures" in out.stdout
    (d / "a.fixtures.yaml").write_text(FIXTURES.replace("expect: []", "expect: [Shadow Read]", 1))
    out = run("rules", "test", "--json", str(d / "a.yaml"))
    doc = orjson.loads(out.stdout)
    assert out.returncode == 1 and doc["failed"] == 1 and doc["fixtures"][1]["missing"] == ["Shadow Read"]
    out = run("rules", "test", str(d / "a.fixtures.yaml"))  # naming the fixtures file works too
    assert out.returncode == 1 and "FAIL cron runs a shell" in out.stdout


def test_fixture_with_process_table_shapes() -> None:
    proc = web_shell()
    ctx = exec_ctx(proc)
    back = round_trip(ctx)
    assert back.proc is not None and back.proc.parent is not None
    assert back.proc.parent.parent is not None and back.proc.parent.parent.comm == "systemd"
    assert back.proc.depth == 2


def test_a_parent_known_only_by_pid() -> None:
    proc = web_shell()
    proc.parent = None  # the table knew the ppid, not the process
    back = round_trip(exec_ctx(proc))
    assert back.proc is not None and back.proc.parent is None and back.proc.ppid == 900
    assert RS.field_value("proc.pname", back) is None


def test_a_fixture_expecting_a_refused_rule_says_it_was_refused(tmp_path: Path) -> None:
    rules_dir = make_rules(tmp_path, FIXTURES)
    rules = rules_dir / "a.yaml"
    rules.write_text(RULES.replace("evt.type = execve", "evt.type = execve and proc.nmae = x", 1))
    report = run_fixtures([rules_dir])
    problems = [d.message for d in report.diagnostics if d.code == "unknown-rule"]
    assert problems and all("which was refused: " in m and "proc.nmae" in m for m in problems)
    assert not report.ok
