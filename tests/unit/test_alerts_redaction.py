"""Secrets never leave the host in an alert: the process block (process, parent, ancestors), an exec's
message and args, the rule's output and output fields, the anomaly model's explanations, in ECS and Falco
alike; without a redactor (or with an inactive one) every document is exactly what it was before.
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Any

import orjson
import pytest

from sentinel.alerts.ecs import EcsRenderer, hidden_spans, hide_known
from sentinel.alerts.model import ML_RULESET, Alert
from sentinel.alerts.render import EcsAlertRenderer, FalcoAlertRenderer, redact_fields
from sentinel.anomaly.live import ML_RULE
from sentinel.detect import DetectionStream
from sentinel.events import EventType
from sentinel.process.facts import ProcFacts
from sentinel.process.table import ProcessTable
from sentinel.redact import REDACTED, SCAN_LIMIT, Redactor
from sentinel.rules import load_text
from sentinel.rules.context import EvalContext
from sentinel.text import dumps
from tests.unit.detect_fixtures import HOST, ListSink, S, ev, table_with

SECRET = "S3cret"
MYSQL = ["mysql", "-uroot", f"-p{SECRET}", "db"]
MYSQL_REDACTED = ["mysql", "-uroot", f"-p{REDACTED}", "db"]
RULES = """\
- rule: Database Client With Password
  desc: A database client was given its password on the command line.
  condition: evt.type = execve and proc.name in (mysql, app, helper)
  output: "DB client %proc.cmdline (args=%proc.args parent=%proc.pcmdline gparent=%proc.acmdline[2] \
ancestors=%proc.acmdline user=%user.name)"
  priority: warning
  tags: [mitre_credential_access, T1552.001]

- rule: Exec Failed
  desc: An exec failed.
  condition: evt.type = execve and evt.failed = true
  output: "exec of %evt.arg.filename failed"
  priority: notice

- rule: Database Client Reads Config
  desc: The client opened a file.
  condition: evt.type in (open, openat) and proc.name = mysql
  output: "%proc.name read %fd.name (cmdline=%proc.cmdline)"
  priority: notice
"""


APP_ARGS = ["app", "--db-password", SECRET, "--port", "8080"]


def make_table(app_args: list[str] = APP_ARGS) -> ProcessTable:
    """init (1) → app (100), by default started with a password of its own on its command line."""
    return table_with(
        ProcFacts(pid=100, start_ticks=50, ppid=1, comm="app", exe="/opt/app/bin/app", cwd="/srv",
                  args=list(app_args))
    )  # fmt: skip


def stream(
    redactor: Redactor | None = None, fmt: str = "ecs", app_args: list[str] = APP_ARGS
) -> tuple[DetectionStream, ListSink]:
    result = load_text(RULES, "redaction.yaml")
    assert result.ruleset is not None, result.diagnostics
    sink = ListSink()
    kw: dict[str, Any] = {} if redactor is None else {"redactor": redactor}
    table = make_table(app_args)
    return DetectionStream(table, result.ruleset, HOST, sink, fmt=fmt, window_s=0, **kw), sink


def run_mysql(s: DetectionStream, argv: list[str] | None = None, ret: int = 0) -> None:
    """app (100) → sh -c "mysql …" (200) → the mysql exec (300)."""
    argv = MYSQL if argv is None else argv
    s.handle(ev(EventType.FORK, 1 * S, 100, comm="app", child_pid=200))
    s.handle(ev(EventType.EXEC, 2 * S, 200, filename="/bin/sh", argv=["sh", "-c", " ".join(argv)]))
    s.handle(ev(EventType.FORK, 3 * S, 200, child_pid=300))
    s.handle(ev(EventType.EXEC, 4 * S, 300, comm="mysql", filename="/usr/bin/mysql", argv=argv, ret=ret,
                argc_total=len(argv)))  # fmt: skip


def strings(value: Any) -> list[str]:
    """Every string in a document, keys excluded."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """A document without what differs between two renderers (ids, creation time)."""
    for key in ("id", "created"):
        doc["event"].pop(key, None)
    return doc


# ------------------------------------------------------------------------------------------ ECS alerts


def test_ecs_alert_carries_no_secret_anywhere() -> None:
    s, sink = stream(Redactor())
    run_mysql(s)
    s.close()
    (line,) = sink.lines
    assert SECRET.encode() not in line
    doc = orjson.loads(line)
    proc = doc["process"]
    assert proc["args"] == MYSQL_REDACTED
    assert proc["args_count"] == 4
    assert proc["command_line"] == "mysql -uroot '-p[REDACTED]' db"  # shell-quoted: splits back into args
    assert proc["parent"]["args"] == ["sh", "-c", "mysql -uroot -p[REDACTED] db"]
    assert proc["parent"]["command_line"] == "sh -c 'mysql -uroot -p[REDACTED] db'"
    assert [a["command_line"] for a in doc["sentinel"]["ancestors"]] == [
        "sh -c 'mysql -uroot -p[REDACTED] db'",
        "app --db-password '[REDACTED]' --port 8080",
        "init",
    ]
    assert doc["message"] == (
        "DB client mysql -uroot -p[REDACTED] db (args=-uroot -p[REDACTED] db "
        "parent=sh -c mysql -uroot -p[REDACTED] db gparent=app --db-password [REDACTED] --port 8080 "
        "ancestors=sh -c mysql -uroot -p[REDACTED] db,app --db-password [REDACTED] --port 8080,init "
        "user=root)"
    )
    fields = doc["sentinel"]["output_fields"]["proc"]
    assert fields["cmdline"] == "mysql -uroot -p[REDACTED] db"
    # argv[1:] alone has no "mysql" before -pS3cret: caught because redacting the argv hid it there
    assert fields["args"] == "-uroot -p[REDACTED] db"
    assert fields["pcmdline"] == "sh -c mysql -uroot -p[REDACTED] db"
    assert fields["acmdline[2]"] == "app --db-password [REDACTED] --port 8080"
    assert fields["acmdline"] == [
        "sh -c mysql -uroot -p[REDACTED] db",
        "app --db-password [REDACTED] --port 8080",
        "init",
    ]
    assert not any(SECRET in text for text in strings(doc))
    assert doc["rule"]["name"] == "Database Client With Password"
    assert doc["process"]["user"] == {"id": "0", "name": "root"}  # the rest of the document is as it was


def test_failed_exec_shows_the_attempt_redacted() -> None:
    s, sink = stream(Redactor())
    run_mysql(s, ret=-13)
    s.close()
    (line,) = sink.lines
    assert SECRET.encode() not in line
    doc = orjson.loads(line)
    assert doc["rule"]["name"] == "Exec Failed"
    assert doc["sentinel"]["event"]["args"] == MYSQL_REDACTED
    assert doc["error"]["code"] == "EACCES"


def test_event_doc_of_an_exec_is_redacted() -> None:
    """``sentinel events`` and captures render through event_doc: its args and message are covered too."""
    failed = ev(EventType.EXEC, 1 * S, 300, filename="/usr/bin/mysql", argv=MYSQL, ret=-2)
    doc = EcsRenderer(HOST, redactor=Redactor()).event_doc(failed, None)
    assert doc["sentinel"]["event"]["args"] == MYSQL_REDACTED
    assert doc["message"] == "exec /usr/bin/mysql mysql -uroot -p[REDACTED] db failed: ENOENT"
    assert SECRET.encode() not in dumps(doc)
    plain = EcsRenderer(HOST).event_doc(failed, None)
    assert plain["sentinel"]["event"]["args"] == MYSQL
    assert SECRET in plain["message"]


# ------------------------------------------------------------------------------------------ Falco alerts


def test_falco_alert_carries_no_secret() -> None:
    s, sink = stream(Redactor(), fmt="falco")
    run_mysql(s)
    s.close()
    (line,) = sink.lines
    assert SECRET.encode() not in line
    doc = orjson.loads(line)
    assert doc["output"] == (
        f"{doc['output'][:18]}: Warning DB client mysql -uroot -p[REDACTED] db (args=-uroot -p[REDACTED] db "
        "parent=sh -c mysql -uroot -p[REDACTED] db gparent=app --db-password [REDACTED] --port 8080 "
        "ancestors=sh -c mysql -uroot -p[REDACTED] db,app --db-password [REDACTED] --port 8080,init "
        "user=root)"
    )
    fields = doc["output_fields"]
    assert fields["proc.cmdline"] == "mysql -uroot -p[REDACTED] db"
    assert fields["proc.pcmdline"] == "sh -c mysql -uroot -p[REDACTED] db"
    assert fields["proc.acmdline[2]"] == "app --db-password [REDACTED] --port 8080"
    assert isinstance(fields["evt.time"], int)


def test_an_argument_with_spaces_is_hidden_whole_in_output_fields() -> None:
    """Joined into ``proc.cmdline``, ``--password "two words"`` reads as a one-word secret: the argv knows
    better, and the output fields follow the argv."""
    s, sink = stream(Redactor())
    s.handle(ev(EventType.FORK, 1 * S, 100, comm="app", child_pid=200))
    s.handle(ev(EventType.EXEC, 2 * S, 200, comm="app", filename="/opt/app/bin/app",
                argv=["app", "--password", "correct horse battery", "-v"]))  # fmt: skip
    s.close()
    (line,) = sink.lines
    assert b"horse" not in line and b"battery" not in line
    doc = orjson.loads(line)
    assert doc["process"]["command_line"] == "app --password '[REDACTED]' -v"
    assert doc["sentinel"]["output_fields"]["proc"]["cmdline"] == "app --password [REDACTED] -v"
    assert doc["sentinel"]["output_fields"]["proc"]["args"] == "--password [REDACTED] -v"


def test_a_secret_handed_down_is_hidden_in_the_child() -> None:
    """app got its password after --db-password; a child given it as a bare argument shows it nowhere."""
    s, sink = stream(Redactor())
    s.handle(ev(EventType.FORK, 1 * S, 100, comm="app", child_pid=200))
    s.handle(ev(EventType.EXEC, 2 * S, 200, comm="helper", filename="/opt/app/bin/helper",
                argv=["helper", "--connect", SECRET, "--verbose"]))  # fmt: skip
    s.close()
    (line,) = sink.lines
    assert SECRET.encode() not in line
    doc = orjson.loads(line)
    assert doc["process"]["args"] == ["helper", "--connect", REDACTED, "--verbose"]
    assert doc["sentinel"]["output_fields"]["proc"]["args"] == "--connect [REDACTED] --verbose"


def test_a_short_secret_does_not_eat_every_letter() -> None:
    s, sink = stream(Redactor(), app_args=["app", "--password", "x"])
    s.handle(ev(EventType.FORK, 1 * S, 100, comm="app", child_pid=200))
    s.handle(ev(EventType.EXEC, 2 * S, 200, comm="helper", filename="/opt/app/bin/helper",
                argv=["helper", "--proxy", "nginx", "x"]))  # fmt: skip
    s.close()
    doc = sink.docs()[0]
    assert doc["process"]["args"] == ["helper", "--proxy", "nginx", REDACTED]
    assert doc["process"]["parent"]["command_line"] == "app --password '[REDACTED]'"
    assert "--proxy nginx [REDACTED]" in doc["message"]


@pytest.mark.parametrize(
    ("original", "redacted", "spans"),
    [
        ("-pS3cret", "-p[REDACTED]", ((2, 8),)),
        ("two words", REDACTED, ((0, 9),)),
        ("a=X b=Y c", "a=[REDACTED] b=[REDACTED] c", ((2, 3), (6, 7))),
        ("k=ab k=ab k", "k=[REDACTED] k=[REDACTED] k", ((2, 4), (7, 9))),
        ("k=a k=b k=c k", "k=[REDACTED] k=[REDACTED] k=c k", ((2, 3), (6, 7))),
        # " k=" fits in two places: the answer covers every place a secret may have been
        ("k=a k=b k=c", "k=[REDACTED] k=[REDACTED]", ((2, 11),)),
        ("pw=" + "x" * 10, "pw=[REDACTED: 10 characters not scanned]", ((3, 13),)),
        ("unrelated", "something else", ((0, 9),)),  # no marker: the whole argument
    ],
)
def test_hidden_spans(original: str, redacted: str, spans: tuple[tuple[int, int], ...]) -> None:
    assert hidden_spans(original, redacted) == spans


def test_hide_known_merges_overlapping_occurrences() -> None:
    known = (("sh -c 'mysql -pA --password B'", ((15, 16),)), ("B'", ((0, 1),)), ("-pA", ((2, 3),)))
    text = "parent=sh -c 'mysql -pA --password B' user=B"
    assert hide_known(text, known) == "parent=sh -c 'mysql -p[REDACTED] --password [REDACTED]' user=B"
    assert hide_known("nothing here", known) == "nothing here"


# ------------------------------------------------------------------------------------------ patterns


def test_operator_pattern_with_a_secret_group() -> None:
    redactor = Redactor([re.compile(r"--db-key[= ](?P<secret>\S+)")], builtin=False)
    s, sink = stream(redactor)
    s.handle(ev(EventType.FORK, 1 * S, 100, comm="app", child_pid=200))
    s.handle(ev(EventType.EXEC, 2 * S, 200, comm="app", filename="/opt/app/bin/app",
                argv=["app", "--db-key=K3yOne", "--db-key", "K3yTwo", "--password", "visible"]))  # fmt: skip
    s.close()
    (line,) = sink.lines
    assert b"K3yOne" not in line and b"K3yTwo" not in line
    doc = orjson.loads(line)
    args = ["app", "--db-key=[REDACTED]", "--db-key", REDACTED, "--password", "visible"]
    assert doc["process"]["args"] == args
    assert doc["process"]["command_line"] == shlex.join(args)
    assert "--db-key=[REDACTED] --db-key [REDACTED]" in doc["message"]
    # the built-in set is off: the parent's --db-password stays (the operator chose so)
    assert doc["process"]["parent"]["command_line"] == f"app --db-password {SECRET} --port 8080"


# ------------------------------------------------------------------------------------------ off


@pytest.mark.parametrize("fmt", ["ecs", "falco"])
@pytest.mark.parametrize("argv", [MYSQL, ["mysql", "-e", "select 1", "db"]])
def test_without_an_active_redactor_documents_are_unchanged(fmt: str, argv: list[str]) -> None:
    docs = []
    app = APP_ARGS if argv is MYSQL else ["app", "--port", "8080"]
    for redactor in (None, Redactor([], builtin=False), Redactor()):
        s, sink = stream(redactor, fmt=fmt, app_args=app)
        assert s.ecs.redactor is redactor
        run_mysql(s, argv)
        s.close()
        docs.append([stable(d) if fmt == "ecs" else d for d in sink.docs()])
    plain, inactive, active = docs
    assert inactive == plain
    if argv is MYSQL:
        assert active != plain
        assert SECRET in orjson.dumps(plain).decode()
        assert SECRET not in orjson.dumps(active).decode()
    else:
        assert active == plain  # nothing to hide: the same documents


def test_inactive_redactor_returns_the_process_args_themselves() -> None:
    """No copies on the hot path when redaction is off."""
    s, _ = stream(Redactor([], builtin=False))
    run_mysql(s)
    proc = s.table.get(300)
    assert proc is not None
    block = s.ecs.process_block(proc, ev(EventType.OPEN, 5 * S, 300))
    assert block["args"] is proc.args


# ------------------------------------------------------------------------------------------ reload


def test_set_redactor_invalidates_cached_process_blocks() -> None:
    s, sink = stream()
    run_mysql(s)
    s.handle(ev(EventType.OPEN, 5 * S, 300, comm="mysql", path="/etc/my.cnf", ret=3))  # cached block reused
    s.set_redactor(Redactor())
    assert s.ecs.redactor is not None
    s.handle(ev(EventType.OPEN, 6 * S, 300, comm="mysql", path="/etc/my.cnf", ret=3))
    s.set_redactor(None)
    s.handle(ev(EventType.OPEN, 7 * S, 300, comm="mysql", path="/etc/my.cnf", ret=3))
    s.close()
    before, cached, redacted, after = sink.docs()
    assert before["process"]["args"] == cached["process"]["args"] == MYSQL
    assert redacted["process"]["args"] == MYSQL_REDACTED
    assert redacted["process"]["parent"]["command_line"] == "sh -c 'mysql -uroot -p[REDACTED] db'"
    assert SECRET.encode() not in sink.lines[2]
    assert after["process"]["args"] == MYSQL


def test_stream_set_redactor_applies_to_every_format() -> None:
    s, sink = stream(fmt="falco")
    s.set_redactor(Redactor())
    run_mysql(s)
    s.close()
    assert SECRET.encode() not in sink.lines[0]


# ------------------------------------------------------------------------------------------ hostile input


def test_hostile_bytes_and_huge_argv_do_not_break_rendering() -> None:
    hostile = ["mysql", f"-p{SECRET}\udcff\x00", "--password", "two\nlines\udc80", "\udcfe" * 3, "db\r\n"]
    s, sink = stream(Redactor())
    run_mysql(s, hostile)
    s.close()
    (line,) = sink.lines
    assert SECRET.encode() not in line and b"two" not in line
    doc = orjson.loads(line)
    assert doc["process"]["args"] == ["mysql", f"-p{REDACTED}", "--password", REDACTED, "\\xfe" * 3, "db\r\n"]
    assert "process.args" in doc["sentinel"]["escaped_fields"]
    # the parent's "sh -c" line held the same arguments: hidden there too, though text alone would not say
    # where "two\nlines" ends
    parent_args = doc["process"]["parent"]["args"]
    assert parent_args[2] == "mysql -p[REDACTED] --password [REDACTED] \\xfe\\xfe\\xfe db\r\n"
    assert b"lines" not in line

    huge = ["mysql", f"-p{SECRET}", *(["A" * 1000] * 100), "--password", SECRET]  # past SCAN_LIMIT
    assert len(" ".join(huge)) > SCAN_LIMIT
    s, sink = stream(Redactor())
    started = time.monotonic()
    run_mysql(s, huge)
    s.close()
    assert time.monotonic() - started < 10
    (line,) = sink.lines
    assert SECRET.encode() not in line
    doc = orjson.loads(line)
    assert len(doc["process"]["args"]) == len(huge)
    assert doc["process"]["args"][-1].startswith("[REDACTED")


# ------------------------------------------------------------------------------------------ anomaly alerts


def ml_alert() -> Alert:
    """A sentinel-ml alert as ``AnomalyEngine`` finalizes it: the explanation quotes the command line."""
    table = make_table()
    table.apply(ev(EventType.FORK, 1 * S, 100, comm="app", child_pid=300))
    exec_ev = ev(EventType.EXEC, 2 * S, 300, comm="mysql", filename="/usr/bin/mysql", argv=MYSQL)
    proc = table.apply(exec_ev)
    ctx = EvalContext(exec_ev, proc, None, HOST.boot_time_ns + exec_ev.ts_ns)
    quot = f"command line {' '.join(MYSQL)!r}"
    return Alert(
        rule=ML_RULE,
        ctx=ctx,
        output=f"Anomalous exec for this host by /usr/bin/mysql (pid 300): score 0.700 above threshold 0.600 "
        f"— {quot}",
        output_fields={"ml.score": 0.7, "proc.exe": "/usr/bin/mysql", "proc.pid": 300},
        ts_ns=exec_ev.ts_ns,
        ruleset=ML_RULESET,
        extra={
            "ml": {
                "score": 0.7,
                "explanation": [{"feature": "argv_entropy", "value": 3.1, "contribution": 0.2, "text": quot}],
                "incident": {"id": "abc", "root": {"pid": 300, "executable": "/usr/bin/mysql"}},
            }
        },
    )


def test_anomaly_alert_explanations_are_redacted() -> None:
    alert = ml_alert()
    ecs = EcsRenderer(HOST, redactor=Redactor())
    doc = EcsAlertRenderer(ecs).render(alert)
    line = dumps(doc)
    assert SECRET.encode() not in line
    assert doc["sentinel"]["ml"]["explanation"][0]["text"] == "command line 'mysql -uroot -p[REDACTED] db'"
    assert doc["sentinel"]["ml"]["explanation"][0]["value"] == 3.1
    assert doc["sentinel"]["ml"]["incident"]["root"] == {"pid": 300, "executable": "/usr/bin/mysql"}
    assert doc["message"].endswith("— command line 'mysql -uroot -p[REDACTED] db'")
    falco = FalcoAlertRenderer(ecs).render(alert)
    assert SECRET.encode() not in dumps(falco)
    # the alert itself is untouched: another format (or sink) renders from it again
    assert SECRET in alert.extra["ml"]["explanation"][0]["text"] and SECRET in alert.output
    plain = EcsAlertRenderer(EcsRenderer(HOST)).render(alert)
    assert plain["sentinel"]["ml"] == alert.extra["ml"]


def test_redact_fields_argv_lists_and_nesting() -> None:
    r = Redactor()
    fields = {
        "proc.args": ["--password", "two words", "-v"],  # an argv: the whole next argument is the secret
        "proc.acmdline": ["mysql -pX db", "init"],  # whole command lines, one by one
        "nested": {"deep": [{"text": "PGPASSWORD=pw psql"}], "n": 3, "none": None},
        "proc.pid": 7,
    }
    out = redact_fields(r, fields)
    assert out == {
        "proc.args": ["--password", REDACTED, "-v"],
        "proc.acmdline": ["mysql -p[REDACTED] db", "init"],
        "nested": {"deep": [{"text": "PGPASSWORD=[REDACTED] psql"}], "n": 3, "none": None},
        "proc.pid": 7,
    }
    assert fields["proc.args"] == ["--password", "two words", "-v"]  # a copy, not in place
    deep: Any = "token=abc"
    for _ in range(100):
        deep = [deep]
    assert "abc" not in orjson.dumps(redact_fields(r, {"x": deep})).decode()
