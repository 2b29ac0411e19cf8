"""Loading rule files: items and keys, macros and lists, overrides, exceptions, several files in order, and
Falco-style files that must load unchanged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sentinel.events import EventType
from sentinel.rules import load_rules, load_text
from sentinel.rules.model import Diagnostic
from tests.unit.rules_support import (
    connect_ctx,
    errors,
    exec_ctx,
    open_ctx,
    proc_chain,
    refused,
    rule_yaml,
    ruleset,
)

# Falco-style rules of our own, using only exec/open/connect fields, as a Falco author would write them.
FALCO_STYLE = r"""
- required_engine_version: 0.26.0

- macro: spawned_process
  condition: (evt.type in (execve, execveat) and evt.dir=<)

- macro: open_write
  condition: (evt.type in (open,openat,openat2) and evt.is_open_write=true and fd.typechar='f' and fd.num>=0)

- macro: open_read
  condition: (evt.type in (open,openat,openat2) and evt.is_open_read=true and fd.typechar='f' and fd.num>=0)

- list: rfc_1918_addresses
  items: ['"10.0.0.0/8"', '"172.16.0.0/12"', '"192.168.0.0/16"']

- macro: outbound
  condition: >
    (((evt.type = connect and evt.dir=<) or
      (evt.type in (sendto,sendmsg) and evt.dir=< and
       fd.l4proto != tcp and fd.connected=false and fd.name_changed=true)) and
     (fd.typechar = 4 or fd.typechar = 6) and
     (fd.ip != "0.0.0.0" and fd.net != "127.0.0.0/8" and not fd.snet in (rfc_1918_addresses)) and
     (evt.rawres >= 0 or evt.res = EINPROGRESS))

- list: shell_binaries
  items: [ash, bash, csh, ksh, sh, tcsh, zsh, dash]

- list: http_server_binaries
  items: [nginx, httpd, httpd-foregroun, lighttpd, apache, apache2]

- list: db_server_binaries
  items: [mysqld, postgres, sqlplus]

- list: network_services
  items: [http_server_binaries, db_server_binaries, exim4]

- macro: shell_procs
  condition: proc.name in (shell_binaries)

- macro: sensitive_files
  condition: >
    fd.name startswith /etc and
    (fd.name in (/etc/shadow, /etc/sudoers, /etc/pam.conf) or fd.directory in (/etc/sudoers.d, /etc/pam.d))

- macro: never_true
  condition: (evt.num=0)

- macro: user_known_read_sensitive_files_activities
  condition: (never_true)

- rule: Run shell from a network service
  desc: A shell was spawned by a web or database server, often a web shell or an exploited service.
  condition: >
    spawned_process and shell_procs and proc.pname in (network_services)
    and not proc.cmdline contains "healthcheck"
  output: >
    Shell spawned by a network service (user=%user.name shell=%proc.name parent=%proc.pname
    cmdline=%proc.cmdline gparent=%proc.aname[2] container=%container.info)
  priority: WARNING
  tags: [host, process, mitre_execution, T1059.004]
  exceptions:
    - name: known_shell_wrappers
      fields: [proc.pname, proc.cmdline]
      comps: [=, startswith]
      values:
        - [nginx, "bash /usr/share/nginx/bin/reload"]

- rule: Read sensitive file untrusted
  desc: A file that holds credentials was read by a program not known to need it.
  condition: >
    open_read and sensitive_files and proc.name exists
    and not proc.name in (sshd, sudo, su, login, passwd, cron, systemd)
    and not user_known_read_sensitive_files_activities
  output: Sensitive file opened for reading (user=%user.name file=%fd.name program=%proc.name)
  priority: warning
  tags: [filesystem, mitre_credential_access]

- rule: Write below etc
  desc: A file below /etc was opened for writing.
  condition: open_write and fd.name startswith /etc/ and not proc.name in (dpkg, apt, vim)
  output: "File below /etc opened for writing (file=%fd.name flags=%evt.arg.flags program=%proc.name)"
  priority: error
  exceptions:
    - name: known_writers
      fields: proc.exepath
      values: [/usr/sbin/logrotate, /usr/bin/ucf]

- rule: Outbound connection from a shell
  desc: A shell connected out to a public address.
  condition: outbound and shell_procs
  output: "Shell connected out (connection=%fd.name program=%proc.name)"
  priority: NOTICE
  tags: [network, mitre_command_and_control]
"""


def test_falco_style_file_loads_unchanged_and_matches() -> None:
    res = load_text(FALCO_STYLE, "falco_style.yaml")
    assert errors(res.diagnostics) == []
    rs = res.ruleset
    assert rs is not None
    assert [r.name for r in rs.rules] == [
        "Run shell from a network service",
        "Read sensitive file untrusted",
        "Write below etc",
        "Outbound connection from a shell",
    ]
    warn_codes = {d.code for d in res.diagnostics}
    assert "event-type-not-captured" not in warn_codes  # sendto/sendmsg are captured (with a destination)
    assert "field-not-captured" in warn_codes  # evt.num (fd.connected, fd.name_changed are captured)
    shell = rs.rules[0]
    assert shell.priority == "warning" and shell.tags[-1] == "T1059.004"
    assert shell.event_types == frozenset({int(EventType.EXEC)})
    assert rs.rules[3].event_types == frozenset({int(EventType.CONNECT), EventType.SENDTO, EventType.SENDMSG})

    web = exec_ctx()
    assert [r.name for r in rs.match(web)] == ["Run shell from a network service"]
    text, fields = rs.output(shell, web)
    assert text == (
        "Shell spawned by a network service (user=www-data shell=bash parent=nginx cmdline=bash -c id; "
        "uname -a gparent=systemd container=host)"
    )
    assert fields["proc.aname[2]"] == "systemd"
    reload = exec_ctx(
        proc_chain(
            ("bash", "/usr/bin/bash", ["bash", "/usr/share/nginx/bin/reload", "x"]),
            ("nginx", "/usr/sbin/nginx", ["nginx"]),
        )
    )
    assert rs.match(reload) == []  # the exception
    assert rs.match(open_ctx("/etc/shadow", proc=proc_chain(("cat", "/usr/bin/cat", ["cat"])))) == [
        rs.rules[1]
    ]
    assert rs.match(open_ctx("/etc/shadow", proc=proc_chain(("sshd", "/usr/sbin/sshd", ["sshd"])))) == []
    both = rs.match(open_ctx("/etc/sudoers.d/x", proc=proc_chain(("cat", "/usr/bin/cat", ["cat"])), flags=2))
    assert [r.name for r in both] == ["Read sensitive file untrusted", "Write below etc"]  # all fire
    logrotate = proc_chain(("logrotate", "/usr/sbin/logrotate", ["logrotate"]))
    assert rs.match(open_ctx("/etc/x", proc=logrotate, flags=1)) == []
    assert [r.name for r in rs.match(connect_ctx("8.8.8.8", 53))] == ["Outbound connection from a shell"]
    assert rs.match(connect_ctx("10.2.3.4", 53)) == []  # rfc1918
    assert rs.match(connect_ctx("8.8.8.8", 53, ret=-111)) == []  # refused
    assert len(rs.match(connect_ctx("8.8.8.8", 53, ret=-115))) == 1  # EINPROGRESS


def test_defaults_and_optional_keys() -> None:
    rs = ruleset(
        rule_yaml(
            "evt.type = execve",
            extra="  enabled: false\n  source: syscall\n"
            "  warn_evttypes: false\n  skip-if-unknown-filter: false\n",
        )
    )
    r = rs.rules[0]
    assert not r.enabled and r.source == "syscall" and r.tags == []
    assert rs.match(exec_ctx()) == []  # disabled rules never match
    assert rs.enabled_rules == []


@pytest.mark.parametrize(
    ("text", "prio"),
    [
        ("WARNING", "warning"),
        ("Info", "informational"),
        ("informational", "informational"),
        ("CRITICAL", "critical"),
        ("Emergency", "emergency"),
        ("debug", "debug"),
    ],
)
def test_priorities_are_case_insensitive(text: str, prio: str) -> None:
    rs = ruleset(rule_yaml("evt.type = execve").replace("priority: warning", f"priority: {text}"))
    assert rs.rules[0].priority == prio


def test_macros_and_lists_nest_and_expand() -> None:
    text = """
- list: a
  items: [bash]
- list: b
  items: [a, sh, "quoted"]
- list: c
  items: [b, 4444]
- macro: m1
  condition: proc.name in (c)
- macro: m2
  condition: m1 and evt.type = execve
- rule: r
  desc: d
  condition: m2 and not proc.name in (quoted)
  output: o
  priority: info
"""
    rs = ruleset(text)
    assert rs.match(exec_ctx())
    assert rs.match(exec_ctx(proc_chain(("sh", "/bin/sh", ["sh"]))))
    assert not rs.match(exec_ctx(proc_chain(("zsh", "/bin/zsh", ["zsh"]))))
    assert rs.match(exec_ctx(proc_chain(("4444", "/x", ["4444"]))))  # numbers in lists are text too


def test_references_resolve_as_in_falco() -> None:
    # A rule sees every macro and list wherever defined; a condition sees every list; a macro sees only the
    # macros defined before it; inside a list only earlier lists expand (a later one's name is a value).
    text = """
- rule: r
  desc: d
  condition: evt.type = execve and later_macro and proc.name in (later_list)
  output: o
  priority: info
- macro: later_macro
  condition: proc.pname in (last_list)
- list: later_list
  items: [bash, nested]
- list: nested
  items: [zsh]
- list: last_list
  items: [sshd]
"""
    res = load_text(text, "t.yaml")
    assert errors(res.diagnostics) == [] and res.ruleset is not None
    later = next(d for d in res.diagnostics if d.code == "list-defined-later")
    assert (later.line, later.severity, later.item) == (10, "warning", "later_list")
    assert "literal value 'nested'" in later.message
    sshd = proc_chain(("bash", "/bin/bash", ["bash"]), ("sshd", "/usr/sbin/sshd", ["sshd"]))
    assert [r.name for r in res.ruleset.match(exec_ctx(sshd))] == ["r"]
    zsh = proc_chain(("zsh", "/bin/zsh", ["zsh"]), ("sshd", "/usr/sbin/sshd", ["sshd"]))
    assert res.ruleset.match(exec_ctx(zsh)) == []  # 'nested' was not expanded: zsh is not in later_list
    macro_first = """
- macro: early
  condition: proc.name = x and late
- macro: late
  condition: proc.pid > 1
""" + rule_yaml("evt.type = execve and early")
    res = load_text(macro_first, "t.yaml")
    assert refused(res) == ["r"]
    msg = next(d.message for d in res.diagnostics if d.code == "undefined-macro")
    assert "used before its definition (t.yaml:4)" in msg and "a rule may use any" in msg
    why = next(d.message for d in res.diagnostics if d.code == "rule-refused")
    assert why.startswith("rule 'r' is not loaded: in macro 'early': macro 'late' is used before")


def test_a_macro_cannot_refer_to_itself() -> None:
    text = """
- macro: m
  condition: proc.name = x
- macro: m
  override:
    condition: append
  condition: or m
- rule: r
  desc: d
  condition: evt.type = execve and m
  output: o
  priority: info
"""
    res = load_text(text, "t.yaml")
    assert [d.code for d in errors(res.diagnostics)] == ["macro-cycle"]


def test_override_append_and_replace() -> None:
    text = """
- list: shells
  items: [bash]
- macro: m
  condition: proc.name in (shells)
- rule: r
  desc: base
  condition: evt.type = execve and m
  output: base
  priority: info
  tags: [a]
- list: shells
  items: [zsh]
  override:
    items: append
- rule: r
  condition: and proc.pname = nginx
  desc: more
  output: "%proc.pname"
  tags: [b]
  priority: CRITICAL
  enabled: true
  override:
    condition: append
    desc: append
    output: append
    tags: append
    priority: replace
    enabled: replace
"""
    rs = ruleset(text)
    r = rs.rules[0]
    assert r.condition == "evt.type = execve and m and proc.pname = nginx"
    assert r.desc == "base more" and r.output == "base %proc.pname" and r.tags == ["a", "b"]
    assert r.priority == "critical"
    assert rs.match(exec_ctx())
    zsh = proc_chain(("zsh", "/bin/zsh", ["zsh"]), ("nginx", "/usr/sbin/nginx", ["nginx"]))
    assert rs.match(exec_ctx(zsh))
    text2 = (
        text
        + """
- macro: m
  condition: proc.name = dash
  override:
    condition: replace
- rule: r
  enabled: false
"""
    )
    rs2 = ruleset(text2)
    assert not rs2.rules[0].enabled
    text3 = text2.replace("- rule: r\n  enabled: false\n", "")
    rs3 = ruleset(text3)
    assert not rs3.match(exec_ctx())  # the macro now says dash
    assert rs3.match(
        exec_ctx(proc_chain(("dash", "/bin/dash", ["dash"]), ("nginx", "/usr/sbin/nginx", ["nginx"])))
    )


def test_override_errors() -> None:
    base = "- rule: r\n  desc: d\n  condition: evt.type = execve\n  output: o\n  priority: info\n"
    cases = {
        "- rule: nope\n  condition: and x\n  override:\n    condition: append\n": "override-unknown-item",
        "- macro: nope\n  condition: and x\n  override:\n    condition: append\n": "override-unknown-item",
        "- list: nope\n  items: [a]\n  override:\n    items: append\n": "override-unknown-item",
        "- rule: r\n  priority: info\n  override:\n    priority: append\n": "bad-override",
        "- rule: r\n  condition: x\n  override:\n    condition: merge\n": "bad-override",
        "- rule: r\n  override:\n    condition: append\n": "missing-key",
        "- rule: r\n  condition: and x\n  desc: y\n  override:\n    condition: append\n": "bad-override",
        "- rule: r\n  condition: and x\n  override: append\n": "bad-override",
        "- rule: r\n  condition: and x\n  append: true\n  override:\n    condition: append\n": "bad-override",
        "- rule: nope\n  enabled: false\n": "override-unknown-item",
        "- rule: nope\n  condition: and x\n  append: true\n": "override-unknown-item",
    }
    for tail, code in cases.items():
        res = load_text(base + tail, "t.yaml")
        assert code in [d.code for d in errors(res.diagnostics)], (tail, res.diagnostics)


def test_legacy_append_still_works_with_a_warning() -> None:
    text = """
- list: l
  items: [bash]
- rule: r
  desc: d
  condition: evt.type = execve and proc.name in (l)
  output: o
  priority: info
- list: l
  items: [zsh]
  append: true
- rule: r
  condition: and proc.pname = nginx
  append: true
"""
    res = load_text(text, "t.yaml")
    assert res.ruleset is not None
    assert [d.code for d in res.diagnostics].count("deprecated-append") == 2
    assert res.ruleset.rules[0].condition.endswith("and proc.pname = nginx")
    assert res.ruleset.match(exec_ctx())


def test_redefinition_replaces_with_a_warning() -> None:
    text = rule_yaml("evt.type = execve and proc.name = nope") + rule_yaml(
        "evt.type = execve and proc.name = bash"
    )
    res = load_text(text, "t.yaml")
    assert [d.code for d in res.diagnostics] == ["duplicate-item"]
    assert res.ruleset is not None and len(res.ruleset.rules) == 1
    assert res.ruleset.match(exec_ctx())


def test_exceptions() -> None:
    text = rule_yaml(
        "evt.type in (open, openat) and fd.name startswith /etc",
        extra="""  exceptions:
    - name: by_program_and_file
      fields: [proc.name, fd.name]
      comps: [=, pmatch]
      values:
        - [bash, [/etc/ssl, /etc/hosts]]
        - [cat, /etc/motd]
    - name: programs
      fields: proc.name
      values: [vim, nano]
    - name: prefixes
      fields: fd.name
      comps: startswith
      values: [/etc/apt/, /etc/dpkg/]
    - name: empty_for_users
      fields: [proc.name]
      values: []
    - name: listed
      fields: [proc.name, fd.directory]
      comps: [in, in]
      values:
        - [editors, [/etc/skel]]
""",
    )
    rs = ruleset("- list: editors\n  items: [ed, sed]\n" + text)

    def fires(path: str, prog: str) -> bool:
        return bool(rs.match(open_ctx(path, proc=proc_chain((prog, f"/usr/bin/{prog}", [prog])))))

    assert fires("/etc/passwd", "bash")
    assert not fires("/etc/ssl/certs/x.pem", "bash")
    assert not fires("/etc/hosts", "bash")
    assert fires("/etc/hosts", "cat")
    assert not fires("/etc/motd", "cat")
    assert not fires("/etc/anything", "vim")
    assert not fires("/etc/apt/sources.list", "bash")
    assert not fires("/etc/skel/.bashrc", "sed")
    assert fires("/etc/skel/.bashrc", "awk")


def test_exception_values_appended_by_override() -> None:
    text = (
        rule_yaml(
            "evt.type = execve and proc.name in (bash, zsh)",
            extra="  exceptions:\n    - name: e\n      fields: [proc.pname]\n      values: []\n",
        )
        + """
- rule: r
  exceptions:
    - name: e
      values: [[nginx]]
    - name: new_one
      fields: proc.name
      values: [zsh]
  override:
    exceptions: append
"""
    )
    rs = ruleset(text)
    assert not rs.match(exec_ctx())  # nginx parent excepted
    assert not rs.match(exec_ctx(proc_chain(("zsh", "/bin/zsh", ["zsh"]))))
    assert rs.match(exec_ctx(proc_chain(("bash", "/bin/bash", ["bash"]))))


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (
            "- name: e\n      fields: [proc.name, proc.pname]\n      comps: [=]\n      values: [[a, b]]",
            "exception-arity",
        ),
        ("- name: e\n      fields: [proc.name, proc.pname]\n      values: [[a]]", "exception-arity"),
        ("- name: e\n      fields: [proc.name, proc.pname]\n      values: [a]", "exception-arity"),
        ("- name: e\n      fields: [proc.nme]\n      values: [[a]]", "unknown-field"),
        ("- name: e\n      fields: [proc.name]\n      comps: [~=]\n      values: [[a]]", "bad-operator"),
        ("- name: e\n      fields: [proc.pid]\n      values: [[abc]]", "bad-value"),
        ("- fields: [proc.pid]\n      values: [[1]]", "missing-key"),
        ("- name: e\n      values: [[1]]", "missing-key"),
        ("- name: e\n      fields: {a: b}\n      values: [[1]]", "bad-type"),
        ("- name: e\n      fields: [proc.name]\n      values: 5", "bad-type"),
        ("- [a]", "bad-type"),
    ],
)
def test_exception_errors(exc: str, code: str) -> None:
    text = rule_yaml("evt.type = execve", extra=f"  exceptions:\n    {exc}\n")
    res = load_text(text, "t.yaml")
    assert code in [d.code for d in errors(res.diagnostics)], res.diagnostics


def test_several_files_in_order(tmp_path: Path) -> None:
    shipped = tmp_path / "rules"
    shipped.mkdir()
    (shipped / "00-macros.yaml").write_text(
        "- macro: spawned\n  condition: evt.type = execve\n- list: shells\n  items: [bash]\n"
    )
    (shipped / "10-rules.yaml").write_text(rule_yaml("spawned and proc.name in (shells)", name="shell"))
    (shipped / "10-rules.fixtures.yaml").write_text("[]\n")  # not a rules file
    (shipped / "notes.txt").write_text("ignored")
    local = tmp_path / "local.yaml"
    local.write_text("- list: shells\n  items: [zsh]\n  override:\n    items: replace\n")
    res = load_rules([shipped, local])
    assert [Path(f).name for f in res.files] == ["00-macros.yaml", "10-rules.yaml", "local.yaml"]
    assert res.ruleset is not None
    assert not res.ruleset.match(exec_ctx())  # bash no longer listed: the local file tuned the shipped rule
    assert res.ruleset.match(exec_ctx(proc_chain(("zsh", "/bin/zsh", ["zsh"]))))
    digest = hashlib.sha256()
    for f in res.files:
        digest.update(Path(f).read_bytes())
    assert res.ruleset.sha256 == digest.hexdigest()
    assert res.ruleset.rules[0].file.endswith("10-rules.yaml") and res.ruleset.rules[0].line == 1
    # The other order: the local file first cannot override what is not loaded yet.
    res2 = load_rules([local, shipped])
    assert [d.code for d in errors(res2.diagnostics)] == ["override-unknown-item"]


def test_unknown_keys_items_and_structure() -> None:
    res = load_text(rule_yaml("evt.type = execve", extra="  colour: red\n"), "t.yaml")
    assert [d.code for d in res.diagnostics] == ["unknown-key"] and res.ruleset is not None
    assert "colour" in res.diagnostics[0].message
    head = "- rule: r\n  desc: d\n  condition: evt.type=execve\n"
    cases = {
        "- rule: r\n  desc: d\n": "missing-key",
        "- frobnicate: x\n": "unknown-item",
        "- rule: r\n  macro: m\n": "bad-type",
        "rule: r\n": "not-a-list",
        "- just a string\n": "bad-type",
        "- rule: [a]\n": "bad-type",
        "- rule: ''\n": "bad-value",
        "- rule: r\n  desc: d\n  condition: ''\n  output: o\n  priority: info\n": "bad-value",
        "- rule: r\n  desc: d\n  condition: {a: b}\n  output: o\n  priority: info\n": "bad-type",
        head + "  output: o\n  priority: loud\n": "bad-value",
        head + "  output: o\n  priority: info\n  enabled: maybe\n": "bad-type",
        head + "  output: o\n  priority: info\n  tags: x\n": "bad-type",
        "- list: l\n  items: [[a]]\n": "bad-type",
        "- list: l\n  items: x\n": "bad-type",
        "- macro: m\n": "missing-key",
        "- required_engine_version: abc\n": "bad-value",
    }
    for text, code in cases.items():
        res = load_text(text, "t.yaml")
        assert code in [d.code for d in errors(res.diagnostics)], (text, res.diagnostics)
        assert res.ruleset is None


def test_empty_and_multi_document_files() -> None:
    assert load_text("", "t.yaml").ruleset is not None
    assert load_text("# only a comment\n", "t.yaml").ruleset is not None
    assert load_text("[]\n", "t.yaml").ruleset is not None
    res = load_text(
        rule_yaml("evt.type = execve", name="a") + "---\n" + rule_yaml("evt.type = execve", name="b")
    )
    assert res.ruleset is not None and [r.name for r in res.ruleset.rules] == ["a", "b"]


def test_yaml_values_are_taken_as_written() -> None:
    """No YAML 1.1 surprises: `no`, `on`, 0644 and 1e3 stay the text the author wrote."""
    text = """
- list: words
  items: [no, on, 0644, 1e3, ~]
- rule: r
  desc: d
  condition: evt.type = execve and proc.name in (words)
  output: o
  priority: info
"""
    rs = ruleset(text)
    for name in ("no", "on", "0644", "1e3"):
        assert rs.match(exec_ctx(proc_chain((name, "/x", [name])))), name


def test_merge_keys_and_anchors() -> None:
    text = """
- rule: base
  desc: &d shared description
  condition: evt.type = execve and proc.name = bash
  output: o
  priority: info
- <<: {desc: *d, output: o, priority: info}
  rule: other
  condition: evt.type = execve and proc.name = zsh
"""
    rs = ruleset(text)
    assert rs.rules[1].desc == "shared description"


def test_engine_version_and_sources() -> None:
    # As Falco: a file needing a newer rules-engine language, or another major, does not load.
    for wanted in ("99.0.0", "0.99.0", "1.0.0"):
        res = load_text(f"- required_engine_version: {wanted}\n", "t.yaml")
        assert [(d.code, d.severity) for d in res.diagnostics] == [("engine-version", "error")]
        assert res.ruleset is None and "0.60.0" in res.diagnostics[0].message
    for fine in ("10", "0.57.0", "0.60", "0.60.0"):
        assert load_text(f"- required_engine_version: {fine}\n", "t.yaml").diagnostics == []
    plugin = load_text("- required_plugin_versions:\n  - name: k8saudit\n    version: 0.1.0\n", "t.yaml")
    assert plugin.ruleset and [d.code for d in plugin.diagnostics] == ["plugin-not-available"]
    container = "- required_plugin_versions:\n  - name: container\n    version: 0.4.0\n"
    assert load_text(container, "t.yaml").diagnostics == []  # its fields are built in
    either = ("- required_plugin_versions:\n  - name: k8saudit-eks\n    version: 0.1.0\n"
              "    alternatives:\n      - name: container\n        version: 0.1.0\n")  # fmt: skip
    assert load_text(either, "t.yaml").diagnostics == []
    for bad, code in (
        ("- required_plugin_versions: x\n", "bad-type"),
        ("- required_plugin_versions:\n  - name: container\n", "missing-key"),
        ("- required_plugin_versions:\n  - name: container\n    version: 1.x\n", "bad-value"),
        ("- required_plugin_versions:\n  - name: a\n    version: 0.1.0\n    alternatives:\n"
         "      - name: a\n        version: 0.2.0\n", "bad-value"),
    ):  # fmt: skip
        res = load_text(bad, "t.yaml")
        assert [d.code for d in errors(res.diagnostics)] == [code] and res.ruleset is None, bad
    text = rule_yaml("ka.verb = create", extra="  source: k8s_audit\n")
    res = load_text(text, "t.yaml")
    assert res.ruleset is not None and [d.code for d in res.diagnostics] == ["unsupported-source"]
    assert res.ruleset.rules[0].skipped


def test_skip_if_unknown_filter() -> None:
    text = rule_yaml("evt.type = execve and k8s.foo = x", extra="  skip-if-unknown-filter: true\n")
    res = load_text(text, "t.yaml")
    assert res.ruleset is not None
    assert [(d.code, d.severity) for d in res.diagnostics] == [("unknown-field", "warning")]
    assert res.ruleset.rules[0].skipped == "unknown filter"
    assert res.ruleset.match(exec_ctx()) == []


def test_unused_macros_and_lists_warn() -> None:
    text = "- macro: m\n  condition: proc.name = x\n- list: l\n  items: [a]\n" + rule_yaml(
        "evt.type = execve"
    )
    res = load_text(text, "t.yaml")
    assert sorted(d.code for d in res.diagnostics) == ["unused-list", "unused-macro"]
    assert res.ruleset is not None


def test_event_type_warnings() -> None:
    res = load_text(rule_yaml("proc.name = bash"), "t.yaml")
    assert [d.code for d in res.diagnostics] == ["no-event-type"]
    assert res.ruleset is not None and res.ruleset.rules[0].event_types is None
    assert res.ruleset.match(exec_ctx()) and res.ruleset.match(open_ctx("/x"))
    quiet = load_text(rule_yaml("proc.name = bash", extra="  warn_evttypes: false\n"), "t.yaml")
    assert quiet.diagnostics == []
    res = load_text(rule_yaml("evt.type = ioctl"), "t.yaml")
    codes = [d.code for d in res.diagnostics]
    assert codes.count("event-type-not-captured") == 2  # the check, and the rule that can never match
    assert res.ruleset is not None and res.ruleset.rules[0].event_types == frozenset()


def test_unreadable_paths(tmp_path: Path) -> None:
    res = load_rules([tmp_path / "missing.yaml"])
    d = res.diagnostics[0]
    assert (d.code, d.line, d.column) == ("unreadable-file", 1, 1) and res.ruleset is None
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"- rule: caf\xe9\n")
    d = load_rules([bad]).diagnostics[0]
    assert (d.code, d.line, d.column) == ("yaml-error", 1, 12)


def test_enabled_toggle_and_contract_types() -> None:
    rs = ruleset(rule_yaml("evt.type = execve and proc.name = bash") + "- rule: r\n  enabled: false\n")
    assert not rs.rules[0].enabled
    assert isinstance(rs.rules[0].output_fields, tuple) and rs.rules[0].output_fields == ("proc.name",)
    assert isinstance(load_text("", "x").diagnostics, list)
    d = Diagnostic("error", "x", "m", "f", 1, 2, "s", "r")
    assert d.to_dict()["column"] == 2


def test_deep_macro_chains_are_refused_not_crashed() -> None:
    def chain(n: int) -> str:
        text = "- macro: m0\n  condition: proc.name = x\n"
        for i in range(1, n):
            text += f"- macro: m{i}\n  condition: (m{i - 1} and proc.pid > {i})\n"
        return text + rule_yaml(f"evt.type = execve and not m{n - 1}")

    assert load_text(chain(20), "t.yaml").ruleset is not None
    res = load_text(chain(300), "t.yaml")
    assert refused(res) == ["r"]
    assert [d.code for d in errors(res.diagnostics)] == ["syntax-error"]


def test_rules_that_can_never_fire_here_are_named() -> None:
    text = (
        rule_yaml("evt.type = execve and container.id != host", name="In a container")
        + rule_yaml("evt.type = execve and container.healthcheck = x", name="Health check")
        + rule_yaml("evt.type = ioctl and proc.name = x", name="Ioctl")
        + rule_yaml("evt.type = execve and not container.healthcheck = x", name="Not health check")
        + rule_yaml("evt.type = execve and container.image.repository = nginx", name="Image")
        + rule_yaml("evt.type = execve and proc.name = bash", name="Bash")
    )
    rs = ruleset(text)
    # container.id is known from the cgroup and the image from the runtime; health checks are not asked for
    assert [r.name for r in rs.never_fire] == ["Health check", "Ioctl"]
    assert [r.name for r in rs.refused] == []


def test_an_unknown_output_field_prints_na_and_the_rule_loads() -> None:
    res = load_text(rule_yaml("evt.type = execve", output="x=%proc.nope y=%proc.name"), "t.yaml")
    assert res.ruleset is not None and refused(res) == []
    (d,) = [d for d in res.diagnostics if d.code == "unknown-field"]
    assert d.severity == "warning" and "prints <NA>" in d.message and d.column > 1
    text, values = res.ruleset.output(res.ruleset.rules[0], exec_ctx())
    assert text == "x=<NA> y=bash" and values == {"proc.name": "bash"}


def test_a_rule_refused_for_a_broken_macro_is_named_each_time() -> None:
    text = (
        "- macro: broken\n  condition: proc.nmae = x\n"
        + rule_yaml("evt.type = execve and broken", name="First")
        + rule_yaml("evt.type = execve and broken", name="Second")
        + rule_yaml("evt.type = execve and proc.name = bash", name="Fine")
    )
    res = load_text(text, "t.yaml")
    assert refused(res) == ["First", "Second"] and not [d for d in res.diagnostics if d.severity == "error"]
    why = {d.item: d.message for d in res.diagnostics if d.code == "rule-refused"}
    assert why["First"].startswith("rule 'First' is not loaded: in macro 'broken': unknown field 'proc.nmae'")
    assert "it uses macro 'broken' (t.yaml:1), which cannot be compiled" in why["Second"]
    assert [r.name for r in res.ruleset.match(exec_ctx())] == ["Fine"]
