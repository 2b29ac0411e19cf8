"""Sigma's auditd logsource: EXECVE (aN = argv[N] of an exec), SYSCALL (sentinel's syscall events by name,
exe, comm, euid), PATH (the paths of opens, execs and file changes), and located refusals for what sentinel's
events do not carry (audit rule keys, raw SYSCALL arguments, nametype, user-space and other record types)."""

from __future__ import annotations

from sentinel.events import EventType
from tests.unit.rules_support import exec_ctx, open_ctx, proc_chain
from tests.unit.sigma_support import sigma_load

AUDITD = "service: auditd"


def rules(detection: str):  # type: ignore[no-untyped-def]
    from sentinel.rules import load_text
    from tests.unit.sigma_support import sigma_yaml

    got = load_text(sigma_yaml(detection).replace("category: process_creation", AUDITD), "r.yml")
    assert got.ruleset is not None, got.diagnostics
    return got


def fires(detection: str, ctx) -> bool:  # type: ignore[no-untyped-def]
    got = rules(detection)
    refused = [d for d in got.diagnostics if d.refuses]
    assert not refused, [str(d) for d in refused]
    return bool(got.ruleset.match(ctx))


def refusal(detection: str) -> str:
    got = rules(detection)
    causes = [d for d in got.diagnostics if d.refuses and d.code != "rule-refused"]
    assert causes and got.ruleset.refused, "the rule loaded"
    assert all(c.line > 1 for c in causes), [str(c) for c in causes]  # located at the detection
    return " ".join(c.message for c in causes)


def run(*argv: str, exe: str = "/usr/bin/getcap", uid: int = 0):  # type: ignore[no-untyped-def]
    proc = proc_chain(
        (argv[0].rsplit("/", 1)[-1], exe, list(argv)), ("bash", "/usr/bin/bash", ["bash"]), uid=uid
    )
    return exec_ctx(proc, filename=exe)


def test_execve_arguments_are_argv_by_index() -> None:
    sel = "sel:\n  type: EXECVE\n  a0: getcap\n  a1: '-r'\n  a2: /\ncondition: sel"
    assert fires(sel, run("getcap", "-r", "/"))
    assert not fires(sel, run("getcap", "-r", "/usr"))
    assert not fires(sel, run("/usr/sbin/getcap", "-r", "/"))  # a0 is argv[0] as passed
    assert fires(
        "sel:\n  type: execve\n  a3|startswith: '--cpu'\ncondition: sel", run("x", "a", "b", "--CPU-p")
    )
    assert not fires("sel:\n  type: EXECVE\n  a5: x\ncondition: sel", run("x", "a"))  # past the last: missing
    assert not fires(sel, open_ctx("/"))  # an EXECVE record is an exec
    got = rules(sel)
    assert got.ruleset.rules[0].event_types == {EventType.EXEC}


def test_execve_number_values_and_no_type_means_the_arguments() -> None:
    assert fires("sel:\n  type: EXECVE\n  a0: chmod\n  a1: 777\ncondition: sel", run("chmod", "777", "f"))
    # A rule with no type: a string a1 can only be an EXECVE argument (SYSCALL's are hex registers).
    assert fires("sel:\n  a1|startswith: '--cpu-priority'\ncondition: sel", run("xmrig", "--cpu-priority=5"))


def test_execve_keywords_search_the_arguments() -> None:
    det = "sel:\n  type: EXECVE\nkw:\n  '|all':\n    - truncate\n    - '-s'\ncondition: sel and kw"
    assert fires(det, run("truncate", "-s", "0", "f"))
    assert not fires(det, run("truncate", "--len", "0", "f"))
    det2 = "sel:\n  type: EXECVE\nkw:\n  - '--to-ports 42'\ncondition: sel and kw"
    assert fires(det2, run("iptables", "-j", "REDIRECT", "--to-ports", "4242"))


def test_syscall_record_is_any_syscall_event_by_name_exe_comm_euid() -> None:
    www = run("sh", "-c", "id", exe="/usr/bin/dash", uid=33)
    assert fires("sel:\n  type: SYSCALL\n  SYSCALL: [execve, execveat]\n  euid: 33\ncondition: sel", www)
    assert not fires("sel:\n  type: SYSCALL\n  SYSCALL: execve\n  euid: 33\ncondition: sel", run("sh"))
    assert fires("sel:\n  type: SYSCALL\n  exe|startswith: /usr/bin/\ncondition: sel", www)
    assert fires("sel:\n  type: SYSCALL\n  comm: sh\ncondition: sel", www)
    assert fires(
        "sel:\n  type: SYSCALL\n  comm: getcap\ncondition: sel", open_ctx("/etc/x", proc=run("getcap").proc)
    )
    memfd = rules("sel:\n  type: SYSCALL\n  SYSCALL: memfd_create\ncondition: sel").ruleset.rules[0]
    assert memfd.event_types == {EventType.MEMFD_CREATE}


def test_path_record_is_the_path_of_an_open_an_exec_or_a_file_change() -> None:
    sel = "sel:\n  type: PATH\n  name: /etc/ld.so.preload\ncondition: sel"
    assert fires(sel, open_ctx("/etc/ld.so.preload"))
    assert fires(sel, open_ctx("/etc/ld.so.preload", flags=0o1101))
    assert not fires(sel, open_ctx("/etc/ld.so.conf"))
    assert fires("sel:\n  type: PATH\n  name: /usr/bin/getcap\ncondition: sel", run("getcap"))
    types = rules(sel).ruleset.rules[0].event_types
    assert {EventType.OPEN, EventType.EXEC, EventType.RENAME, EventType.UNLINK, EventType.SYMLINK} <= types
    assert EventType.CONNECT not in types  # fd.name of a socket is not a path


def test_mixed_record_types_read_each_field_in_its_own_record() -> None:
    det = (
        "exe_sel:\n  type: EXECVE\n  a0: arecord\nsys_sel:\n  type: SYSCALL\n  exe|endswith: /ecasound\n"
        "  SYSCALL: memfd_create\ncondition: 1 of *_sel"
    )
    assert fires(det, run("arecord", "-vv"))
    assert not fires(det, run("ecasound"))  # an exec of ecasound is not its memfd_create


def test_what_sentinel_does_not_carry_is_refused_with_the_reason() -> None:
    assert "auditctl -k" in refusal("sel:\n  key: susp_activity\ncondition: sel")
    assert "raw registers" in refusal("sel:\n  type: SYSCALL\n  SYSCALL: connect\n  a0: 26\ncondition: sel")
    assert "'personality'" in refusal("sel:\n  type: SYSCALL\n  SYSCALL: personality\ncondition: sel")
    assert "nametype" in refusal("sel:\n  type: PATH\n  nametype: CREATE\n  name: /x\ncondition: sel")
    assert "written by programs" in refusal("sel:\n  type: ADD_USER\ncondition: sel")
    assert "written by programs" in refusal("sel:\n  type: USER_TTY\ncondition: sel")
    assert "systemd" in refusal("sel:\n  type: SERVICE_STOP\n  unit: ufw\ncondition: sel")
    assert "hex-encoded" in refusal("sel:\n  type: PROCTITLE\n  proctitle: 6964\ncondition: sel")
    assert "CWD" in refusal("sel:\n  type: CWD\n  cwd: /tmp\ncondition: sel")
    assert "SOCKADDR" in refusal("sel:\n  type: SOCKADDR\n  saddr: x\ncondition: sel")
    assert "keywords" in refusal("sel:\n  type: PATH\nkw:\n  - passwd\ncondition: sel and kw")
    # one unsupported half of an OR refuses the whole rule: half a rule would be silently weaker
    assert "ADD_USER" in refusal(
        "a:\n  type: SYSCALL\n  exe|endswith: /useradd\nb:\n  type: ADD_USER\ncondition: a or b"
    )


def test_other_services_stay_unsupported() -> None:
    got = sigma_load("sel:\n  Image: x\ncondition: sel")
    assert got.ruleset is not None and got.ruleset.enabled_rules
