"""Alert documents: ECS fields (rule, threat, severity, message, output fields), Falco's JSON, internal
alerts, and the structlog/orjson alert stream that writes them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from sentinel import __version__
from sentinel import log as logmod
from sentinel.alerts import internal
from sentinel.alerts.ecs import ECS_VERSION, EcsRenderer
from sentinel.alerts.mitre import TECHNIQUES, threat_from_tags
from sentinel.alerts.model import Alert
from sentinel.alerts.render import (
    EcsAlertRenderer,
    FalcoAlertRenderer,
    falco_clock,
    make_renderer,
    nest_fields,
    rule_id,
    severity,
)
from sentinel.alerts.writer import AlertWriter
from sentinel.events import AF_INET, EventType
from sentinel.rules.context import EvalContext
from sentinel.rules.model import PRIORITIES
from sentinel.text import unescape
from tests.unit.detect_fixtures import (
    HOST,
    HOST_SUGGESTED,
    SHA,
    FakeRuleSet,
    ListSink,
    S,
    ev,
    make_table,
    rule,
)

RFC3339_NS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def rfc3339(boot_ns: int) -> str:
    return EcsRenderer(HOST).timestamp(boot_ns)


def shell_context() -> EvalContext:
    """nginx (100) forks 200, which execs ``sh -c id``."""
    table = make_table()
    table.apply(ev(EventType.FORK, 1 * S, 100, comm="nginx", child_pid=200))
    exec_ev = ev(EventType.EXEC, 2 * S, 200, filename="/bin/sh", argv=["sh", "-c", "id"])
    proc = table.apply(exec_ev)
    return EvalContext(exec_ev, proc, None, HOST.boot_time_ns + exec_ev.ts_ns)


def open_context(path: str = "/etc/shadow") -> EvalContext:
    table = make_table()
    open_ev = ev(EventType.OPEN, 3 * S, 100, comm="nginx", path=path, ret=4)
    proc = table.apply(open_ev)
    return EvalContext(open_ev, proc, table.resolve_path(proc, open_ev.dirfd, open_ev.path), 0)


def make_alert(r: Any, ctx: EvalContext, **kw: Any) -> Alert:
    text, fields = FakeRuleSet([r]).output(r, ctx)
    return Alert(r, ctx, text, fields, ctx.ev.ts_ns, ruleset_version=SHA[:12], **kw)


def render_ecs(alert: Alert) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(EcsAlertRenderer(EcsRenderer(HOST)).render(alert)))


# -------------------------------------------------------------------------------------------- ECS alerts


def test_ecs_alert_for_a_shell_spawned_by_a_web_server() -> None:
    r = rule(
        "Shell Spawned By Web Server",
        priority="warning",
        tags=["host", "mitre_execution", "T1059.004"],
        output="Shell %proc.name spawned by %proc.pname",
    )
    doc = render_ecs(make_alert(r, shell_context()))
    assert doc["@timestamp"] == rfc3339(2 * S)  # the kernel event time
    assert doc["ecs"] == {"version": ECS_VERSION}
    event = doc["event"]
    assert event["kind"] == "alert"
    assert event["dataset"] == "sentinel.alerts"
    assert event["module"] == "sentinel"
    assert (event["category"], event["type"], event["action"]) == (["process"], ["start"], "exec")
    assert (event["severity"], event["risk_score"]) == (47, 47)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", event["id"])
    assert RFC3339_NS.match(event["created"])
    assert doc["rule"] == {
        "id": rule_id("Shell Spawned By Web Server"),
        "name": "Shell Spawned By Web Server",
        "description": "Shell Spawned By Web Server (test rule)",
        "ruleset": "sentinel",
        "version": SHA[:12],
        "author": ["sentinel"],
        "reference": "https://attack.mitre.org/techniques/T1059/004/",
    }
    assert doc["threat"] == {
        "framework": "MITRE ATT&CK",
        "tactic": {
            "id": ["TA0002"],
            "name": ["Execution"],
            "reference": ["https://attack.mitre.org/tactics/TA0002/"],
        },
        "technique": {
            "id": ["T1059"],
            "name": ["Command and Scripting Interpreter"],
            "reference": ["https://attack.mitre.org/techniques/T1059/"],
            "subtechnique": {
                "id": ["T1059.004"],
                "name": ["Unix Shell"],
                "reference": ["https://attack.mitre.org/techniques/T1059/004/"],
            },
        },
    }
    assert doc["message"] == "Shell sh spawned by nginx"
    assert doc["tags"] == ["host", "mitre_execution", "T1059.004"]
    assert doc["sentinel"]["rule"] == {
        "priority": "warning",
        "tags": ["host", "mitre_execution", "T1059.004"],
    }
    assert doc["sentinel"]["output_fields"] == {"proc": {"name": "sh", "pname": "nginx"}}
    assert "aggregation" not in doc["sentinel"]
    # The triggering event's process, with parent and ancestry, as `sentinel events` shows it.
    assert doc["process"]["pid"] == 200
    assert doc["process"]["args"] == ["sh", "-c", "id"]
    assert doc["process"]["parent"]["name"] == "nginx"
    assert doc["process"]["parent"]["executable"] == "/usr/sbin/nginx"
    assert [a["pid"] for a in doc["sentinel"]["ancestors"]] == [100, 1]
    assert doc["sentinel"]["event"]["filename"] == "/bin/sh"
    assert doc["host"]["hostname"] == "h"
    assert doc["agent"]["type"] == "sentinel"


def test_ecs_alert_for_a_credential_read_has_the_file_block() -> None:
    r = rule(
        "Read Sensitive File",
        priority="critical",
        tags=["mitre_credential_access", "T1003.008"],
        output="%proc.name read %fd.name",
    )
    doc = render_ecs(make_alert(r, open_context("/etc/shadow")))
    assert doc["file"] == {"path": "/etc/shadow", "name": "shadow", "directory": "/etc"}
    assert (doc["event"]["category"], doc["event"]["action"]) == (["file"], "open")
    assert (doc["event"]["severity"], doc["event"]["risk_score"]) == (99, 99)
    assert doc["threat"]["tactic"]["name"] == ["Credential Access"]
    assert doc["threat"]["technique"]["id"] == ["T1003"]
    assert doc["threat"]["technique"]["subtechnique"]["name"] == ["/etc/passwd and /etc/shadow"]
    assert doc["rule"]["reference"] == "https://attack.mitre.org/techniques/T1003/008/"
    assert doc["message"] == "nginx read /etc/shadow"
    assert doc["sentinel"]["output_fields"] == {"proc": {"name": "nginx"}, "fd": {"name": "/etc/shadow"}}


def test_ecs_alert_for_a_connect_has_the_destination() -> None:
    table = make_table()
    conn = ev(EventType.CONNECT, 5 * S, 100, comm="nginx", fd=3, family=AF_INET, address="10.0.0.9",
              port=4444, sock_type=1)  # fmt: skip
    ctx = EvalContext(conn, table.apply(conn), None, 0)
    doc = render_ecs(make_alert(rule("Outbound", priority="notice", output="%proc.name connect"), ctx))
    assert doc["destination"] == {"ip": "10.0.0.9", "port": 4444, "address": "10.0.0.9"}
    assert doc["network"]["transport"] == "tcp"
    assert doc["event"]["severity"] == 21
    assert "threat" not in doc  # no MITRE tags: no threat block
    assert "reference" not in doc["rule"]


def test_missing_output_values_are_json_null() -> None:
    doc = render_ecs(make_alert(rule("R", output="%proc.name %fd.name"), shell_context()))
    assert doc["sentinel"]["output_fields"]["fd"] == {"name": None}
    assert doc["message"] == "sh <NA>"


def test_rule_id_is_stable_and_short() -> None:
    assert rule_id("Shell Spawned By Web Server") == rule_id("Shell Spawned By Web Server")
    assert rule_id("a") != rule_id("b")
    assert re.fullmatch(r"[0-9a-f]{16}", rule_id("x"))


def test_rule_version_is_the_ruleset_sha() -> None:
    ctx = shell_context()
    r = rule("R")
    a = Alert(r, ctx, "t", {}, ctx.ev.ts_ns, ruleset_version="feedbeef1234")
    assert render_ecs(a)["rule"]["version"] == "feedbeef1234"


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        ("debug", 21),
        ("informational", 21),
        ("info", 21),
        ("notice", 21),
        ("warning", 47),
        ("error", 73),
        ("critical", 99),
        ("alert", 99),
        ("emergency", 99),
        ("WARNING", 47),
    ],
)
def test_severity_mapping(priority: str, expected: int) -> None:
    assert severity(priority) == expected
    doc = render_ecs(make_alert(rule("R", priority=priority), shell_context()))
    assert doc["event"]["severity"] == doc["event"]["risk_score"] == expected
    assert doc["sentinel"]["rule"]["priority"] == priority


def test_every_priority_has_a_severity() -> None:
    assert {severity(p) for p in PRIORITIES} == {21, 47, 73, 99}


def test_aggregated_alert_carries_count_and_times() -> None:
    ctx = shell_context()
    a = make_alert(rule("R"), ctx, aggregated=True, count=41, first_ns=3 * S, last_ns=9 * S)
    a.ts_ns = 9 * S
    doc = render_ecs(a)
    assert doc["sentinel"]["aggregation"] == {"count": 41, "first": rfc3339(3 * S), "last": rfc3339(9 * S)}
    assert (doc["event"]["start"], doc["event"]["end"]) == (rfc3339(3 * S), rfc3339(9 * S))
    assert doc["@timestamp"] == rfc3339(9 * S)


def test_event_doc_is_unchanged_by_alert_rendering() -> None:
    """Alerts reuse event_doc; the shared host/agent/process blocks must not be modified by it."""
    ctx = shell_context()
    ecs = EcsRenderer(HOST)
    before = orjson.loads(orjson.dumps(ecs.event_doc(ctx.ev, ctx.proc)))
    EcsAlertRenderer(ecs).render(make_alert(rule("R", tags=["T1059"]), ctx))
    after = orjson.loads(orjson.dumps(ecs.event_doc(ctx.ev, ctx.proc)))
    for doc in (before, after):
        for key in ("id", "created", "sequence"):
            del doc["event"][key]
    assert before == after
    assert after["event"]["kind"] == "event"
    assert "rule" not in after and "output_fields" not in after["sentinel"]


# ------------------------------------------------------------------------------------------ MITRE tags


def test_threat_from_falco_style_tags() -> None:
    t = threat_from_tags(["maturity_stable", "host", "mitre_persistence", "mitre_privilege_escalation",
                          "T1543.002", "T1543", "T1053.003", "PCI_DSS_10.2.5"])  # fmt: skip
    assert t.tactics == ["TA0003", "TA0004"]
    assert t.techniques == ["T1543", "T1053"]
    assert t.subtechniques == ["T1543.002", "T1053.003"]
    assert t.reference == "https://attack.mitre.org/techniques/T1543/002/"


@pytest.mark.parametrize(
    ("tag", "tactic"),
    [
        ("mitre_initial_access", "TA0001"),
        ("mitre_execution", "TA0002"),
        ("mitre_persistence", "TA0003"),
        ("mitre_privilege_escalation", "TA0004"),
        ("mitre_defense_evasion", "TA0005"),
        ("mitre_credential_access", "TA0006"),
        ("mitre_discovery", "TA0007"),
        ("mitre_lateral_movement", "TA0008"),
        ("mitre_collection", "TA0009"),
        ("mitre_exfiltration", "TA0010"),
        ("mitre_command_and_control", "TA0011"),
        ("mitre_impact", "TA0040"),
        ("mitre_resource_development", "TA0042"),
        ("mitre_reconnaissance", "TA0043"),
        ("MITRE_TA0005_defense_evasion", "TA0005"),
        ("TA0011", "TA0011"),
    ],
)
def test_tactic_tags(tag: str, tactic: str) -> None:
    assert threat_from_tags([tag]).tactics == [tactic]


def test_older_technique_tag_forms_and_unknown_ids() -> None:
    t = threat_from_tags(
        ["MITRE_T1059_command_and_scripting_interpreter", "t1059.004", "T9999", "mitre_bogus"]
    )
    assert t.tactics == []
    assert t.techniques == ["T1059", "T9999"]
    assert t.subtechniques == ["T1059.004"]
    ecs = t.to_ecs()
    assert ecs["technique"]["id"] == ["T1059", "T9999"]
    assert ecs["technique"]["name"] == ["Command and Scripting Interpreter"]  # the unknown id has no name
    assert "T9999" not in TECHNIQUES
    assert threat_from_tags(["host", "network"]).empty


# ------------------------------------------------------------------------------------------ Falco format


def test_falco_alert_json() -> None:
    r = rule("Shell Spawned By Web Server", priority="warning", tags=["mitre_execution", "T1059.004"],
             output="Shell %proc.name spawned by %proc.pname")  # fmt: skip
    ctx = shell_context()
    doc = FalcoAlertRenderer(EcsRenderer(HOST)).render(make_alert(r, ctx))
    when = rfc3339(2 * S)
    assert doc == {
        "time": when,
        "rule": "Shell Spawned By Web Server",
        "priority": "Warning",
        "source": "syscall",
        "hostname": "h",
        "output": f"{falco_clock(HOST.boot_time_ns + 2 * S)}: Warning Shell sh spawned by nginx",
        "tags": ["mitre_execution", "T1059.004"],
        "output_fields": {
            "proc.name": "sh",
            "proc.pname": "nginx",
            "evt.time": HOST.boot_time_ns + 2 * S,
            **HOST_SUGGESTED,  # Falco's default append_output: suggested_output: true
        },
    }


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host in UTC+5:30 (no daylight saving): Falco's evt.time is local time."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_falco_output_starts_with_falcos_default_time(zone: None) -> None:
    """`HH:MM:SS.nnnnnnnnn: Priority ...` in local time, as `falco -o json_output=true` prints it; `time` is
    ISO 8601 UTC, and evt.time stays the number of nanoseconds in output_fields."""
    ctx = shell_context()
    ctx.wall_ns = 1_700_000_002_123_456_789  # 2023-11-14T22:13:22.123456789Z
    doc = FalcoAlertRenderer(EcsRenderer(HOST)).render(make_alert(rule("R", output="x"), ctx))
    assert doc["output"] == "03:43:22.123456789: Warning x"  # 22:13 UTC is 03:43 the next day in UTC+5:30
    assert doc["time"] == "2023-11-14T22:13:22.123456789Z"
    assert doc["output_fields"]["evt.time"] == 1_700_000_002_123_456_789


def test_falco_time_format_iso_8601(zone: None) -> None:
    """Falco's time_format_iso_8601: the output starts with the ISO 8601 UTC time (%evt.time.iso8601), which
    takes evt.time's place in output_fields."""
    ctx = shell_context()
    ctx.wall_ns = 1_700_000_002_123_456_789
    doc = FalcoAlertRenderer(EcsRenderer(HOST), iso8601=True).render(make_alert(rule("R", output="x"), ctx))
    assert doc["output"] == "2023-11-14T22:13:22.123456789Z: Warning x"
    assert doc["output_fields"]["evt.time.iso8601"] == 1_700_000_002_123_456_789
    assert "evt.time" not in doc["output_fields"]
    renderer = make_renderer("falco", EcsRenderer(HOST), falco_iso8601=True)
    assert isinstance(renderer, FalcoAlertRenderer) and renderer.iso8601


@pytest.mark.parametrize(
    ("priority", "falco"),
    [("emergency", "Emergency"), ("alert", "Alert"), ("critical", "Critical"), ("error", "Error"),
     ("warning", "Warning"), ("notice", "Notice"), ("informational", "Informational"), ("debug", "Debug")],
)  # fmt: skip
def test_falco_priorities_are_capitalised(priority: str, falco: str) -> None:
    doc = FalcoAlertRenderer(EcsRenderer(HOST)).render(
        make_alert(rule("R", priority=priority), shell_context())
    )
    assert doc["priority"] == falco


def test_falco_aggregated_alert_has_the_count_in_output_fields() -> None:
    a = make_alert(rule("R"), shell_context(), aggregated=True, count=3, first_ns=2 * S, last_ns=5 * S)
    a.ts_ns = 5 * S
    doc = FalcoAlertRenderer(EcsRenderer(HOST)).render(a)
    assert doc["time"] == rfc3339(5 * S)
    assert doc["output_fields"]["sentinel.aggregation.count"] == 3
    assert doc["output_fields"]["evt.time"] == HOST.boot_time_ns + 5 * S


def test_make_renderer() -> None:
    ecs = EcsRenderer(HOST)
    assert isinstance(make_renderer("ecs", ecs), EcsAlertRenderer)
    assert isinstance(make_renderer("falco", ecs), FalcoAlertRenderer)
    with pytest.raises(ValueError, match="xml"):
        make_renderer("xml", ecs)


# --------------------------------------------------------------------------------------- internal alerts


def test_internal_events_lost_alert_ecs() -> None:
    doc = render_ecs(internal.events_lost(7 * S, "open", 123))
    assert doc["@timestamp"] == rfc3339(7 * S)
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["dataset"] == "sentinel.alerts"
    assert doc["event"]["category"] == ["host"]
    assert doc["event"]["action"] == "kernel-events-lost"
    assert doc["event"]["severity"] == 47
    assert doc["rule"]["name"] == "Kernel events lost"
    assert doc["rule"]["ruleset"] == "sentinel-internal"
    assert doc["rule"]["version"] == __version__
    assert doc["message"] == "Kernel events lost (buffer=open lost=123)"
    assert doc["sentinel"]["output_fields"] == {"buffer": "open", "lost": 123}
    assert doc["sentinel"]["rule"]["priority"] == "warning"
    assert "process" not in doc
    assert doc["host"]["hostname"] == "h"


def test_internal_reload_failed_alert() -> None:
    errors = ["r.yaml:3:5: error: unknown field 'proc.nme' [unknown-field]", "r.yaml:9:1: error: x"]
    a = internal.reload_failed(8 * S, errors, SHA, ["r.yaml"])
    doc = render_ecs(a)
    assert doc["rule"]["name"] == "Rules reload failed"
    assert doc["rule"]["ruleset"] == "sentinel-internal"
    assert doc["event"]["severity"] == 73
    assert doc["event"]["category"] == ["configuration"]
    assert doc["sentinel"]["rule"]["priority"] == "error"
    assert doc["sentinel"]["reload"] == {"errors": errors, "files": ["r.yaml"], "kept_sha256": SHA}
    assert "2 error(s)" in doc["message"]
    assert SHA[:12] in doc["message"]
    assert "proc.nme" in doc["message"]
    falco = FalcoAlertRenderer(EcsRenderer(HOST)).render(a)
    assert (falco["rule"], falco["priority"], falco["source"]) == ("Rules reload failed", "Error", "internal")


# ----------------------------------------------------------------------------------------- alert stream


def test_writer_renders_through_structlog_to_the_sink_not_the_diagnostics() -> None:
    sink = ListSink()
    writer = AlertWriter(EcsAlertRenderer(EcsRenderer(HOST)), sink)
    logmod.configure("debug")
    with capture_logs() as logs:
        writer.write(make_alert(rule("R"), shell_context()))
    assert logs == []  # alerts never reach the diagnostics stream
    (doc,) = sink.docs()
    assert doc["rule"]["name"] == "R"
    assert "event" in doc and doc["event"]["kind"] == "alert"  # structlog's own "event" key did not leak
    assert "log_level" not in doc and "alert" not in doc
    assert writer.written == 1 and writer.by_rule == {"R": 1}


def test_hostile_strings_stay_one_line_and_reversible() -> None:
    raw = b"/tmp/\xff\nevil"
    path = raw.decode("utf-8", "surrogateescape")
    ctx = open_context(path)
    sink = ListSink()
    AlertWriter(EcsAlertRenderer(EcsRenderer(HOST)), sink).write(
        make_alert(rule("R", output="%fd.name"), ctx)
    )
    (line,) = sink.lines
    assert b"\n" not in line
    doc = orjson.loads(line)
    assert "message" in doc["sentinel"]["escaped_fields"]
    assert unescape(doc["message"]) == raw
    assert unescape(doc["file"]["path"]) == raw


def test_nest_fields() -> None:
    assert nest_fields({"proc.name": "a", "proc.aname[2]": "b", "fd.name": None, "x": 1}) == {
        "proc": {"name": "a", "aname[2]": "b"},
        "fd": {"name": None},
        "x": 1,
    }
    # A name that is both a value and a prefix cannot nest: it keeps its dotted form.
    assert nest_fields({"a.b": 1, "a.b.c": 2}) == {"a": {"b": 1}, "a.b.c": 2}
    assert nest_fields({"a.b.c": 2, "a.b": 1}) == {"a": {"b": {"c": 2}}, "a.b": 1}
