"""The compiled matcher: event-type index, hash indexes, every matching rule in load order, outputs."""

from __future__ import annotations

import random
from typing import Any

import pytest

from sentinel.events import AF_INET, AF_UNIX, EventType
from sentinel.rules import EvalContext, load_text
from sentinel.rules.codegen import INDEX_MIN_RULES
from sentinel.rules.compiler import event_names
from tests.unit.rules_support import (
    WALL,
    connect_ctx,
    exec_ctx,
    open_ctx,
    proc_chain,
    rule_yaml,
    ruleset,
    web_shell,
)

EXEC, OPEN, CONNECT = int(EventType.EXEC), int(EventType.OPEN), int(EventType.CONNECT)
MACROS = """
- macro: spawned
  condition: evt.type in (execve, execveat)
- macro: opened
  condition: evt.type in (open, openat, openat2)
"""


@pytest.mark.parametrize(
    ("condition", "types"),
    [
        ("evt.type = execve", {EXEC}),
        ("evt.type in (execve, open)", {EXEC, OPEN}),
        ("evt.type = execve and proc.name = x", {EXEC}),
        ("spawned and proc.name = x", {EXEC}),
        ("spawned or opened", {EXEC, OPEN}),
        ("spawned or proc.name = x", None),
        ("not evt.type = execve", None),
        ("evt.type != execve", None),
        ("proc.name = x", None),
        ("evt.type in (execve, open) and evt.type = open", {OPEN}),
        ("(evt.type = connect and fd.sport = 1) or (evt.type = execve and proc.name = x)", {EXEC, CONNECT}),
        ("evt.type = ioctl", set()),
        ("evt.type = ptrace", {EventType.PTRACE}),
        ("evt.type in (ioctl, execve)", {EXEC}),
        ("evt.type = creat", {OPEN}),
        ("evt.type in (clone, fork, procexit, chdir)", {4, 5, 6}),
    ],
)
def test_event_type_restriction(condition: str, types: set[int] | None) -> None:
    rs = ruleset(MACROS + rule_yaml(condition))
    r = rs.rules[0]
    assert r.event_types == (frozenset(types) if types is not None else None)
    assert event_names(r.ir) is None if types is None else True


def test_every_matching_rule_fires_in_load_order() -> None:
    text = "".join(
        rule_yaml(f"evt.type = execve and proc.name = bash and proc.pid > {i}", name=f"r{i}")
        for i in range(5)
    )
    text += rule_yaml("proc.name = bash", name="any-type")
    text += rule_yaml("evt.type = execve and proc.name = zsh", name="other")
    rs = ruleset(text)
    assert [r.name for r in rs.match(exec_ctx())] == ["r0", "r1", "r2", "r3", "r4", "any-type"]
    assert [r.name for r in rs.match(open_ctx("/x"))] == ["any-type"]


def random_ctx(rnd: random.Random) -> EvalContext:
    names = ["bash", "zsh", "nginx", "python3", "cat", "curl", "tool3", "svc1", "x"]
    exes = ["/usr/bin/bash", "/tmp/x", "/opt/vendor2/bin/a", "/usr/bin/child7", "/usr/sbin/nginx", ""]
    chain = [
        (rnd.choice(names), rnd.choice(exes), [rnd.choice(names), "-c", rnd.choice(["x2", "--opt0", "id"])])
        for _ in range(rnd.randint(1, 4))
    ]
    proc = proc_chain(*chain, uid=rnd.choice([0, 33, 1000]), user=rnd.choice(["root", "svc5", None]))
    kind = rnd.random()
    if kind < 0.4:
        paths = [
            "/etc/app2/x.conf",
            "/etc/shadow",
            "/var/lib/secret/file3",
            "/srv/data8/f",
            "/etc/pam.d/su",
            "/etc/sudoers.d/a",
            "rel/path",
            "/etc",
            "/",
            "/etc/app12/deep/x",
            "/opt/vendor5",
        ]
        ctx = open_ctx(
            rnd.choice(paths),
            flags=rnd.choice([0, 1, 2, 0o1101, 0o200000]),
            proc=proc,
            ret=rnd.choice([3, -2]),
        )
    elif kind < 0.8:
        ctx = exec_ctx(proc, ret=rnd.choice([0, 0, -13]))
    else:
        ctx = connect_ctx(
            rnd.choice(["10.0.0.1", "8.8.8.8", "/run/x.sock"]),
            rnd.choice([20004, 443, 0]),
            family=rnd.choice([AF_INET, AF_UNIX]),
            proc=proc,
        )
    if rnd.random() < 0.05:
        ctx.proc = None
    return ctx


def generated(n: int) -> str:
    out = [MACROS, "- list: shells\n  items: [bash, zsh]\n"]
    templates = [
        "spawned and proc.name = tool{i} and proc.args contains '--opt{i}'",
        "spawned and proc.pname in (svc{i}, bash) and proc.name in (shells)",
        "opened and fd.name startswith /etc/app{i}/ and not proc.name in (cat)",
        "opened and fd.name = /var/lib/secret/file{i} and not proc.exepath in (/usr/bin/rd{i})",
        "evt.type = connect and fd.sport = {port} and not proc.name in (curl)",
        "spawned and proc.exepath pmatch (/opt/vendor{i}) and proc.cmdline contains x{i}",
        "opened and (fd.name = /etc/shadow or fd.name startswith /etc/pam) and proc.name != x{i}",
        "spawned and proc.aname in (bash) and proc.exepath = /usr/bin/child{i}",
        "opened and fd.directory = /srv/data{i} and user.name != svc{i}",
        "spawned and (proc.exepath startswith /tmp/ or sentinel.exec.filename startswith /tmp/)"
        " and proc.pid > {i}",
        "proc.name startswith ba and user.uid = {uid}",
        "opened and fd.name pmatch (/etc, /opt) and evt.failed = false and proc.name = {name}",
    ]
    rnd = random.Random(5)
    for i in range(n):
        t = templates[i % len(templates)]
        cond = t.format(
            i=i % 10, port=20000 + i % 10, uid=rnd.choice([0, 33, 1000]), name=rnd.choice(["bash", "cat"])
        )
        out.append(rule_yaml(cond, name=f"g{i}"))
    return "".join(out)


def test_indexes_give_the_same_answers_as_a_plain_sequence() -> None:
    text = generated(240)
    indexed = ruleset(text)
    plain = ruleset(text, index_min=10**9)
    assert indexed.matchers[OPEN].indexed and not plain.matchers[OPEN].indexed
    rnd = random.Random(11)
    seen = 0
    for _ in range(3000):
        ctx = random_ctx(rnd)
        got = [r.name for r in indexed.match(ctx)]
        assert got == [r.name for r in plain.match(ctx)], ctx
        assert got == [r.name for r in indexed.rules if r.matcher(ctx)], ctx
        seen += bool(got)
    assert seen > 300  # the random events do reach the rules


def test_small_rulesets_are_a_plain_sequence() -> None:
    rs = ruleset(generated(INDEX_MIN_RULES - 1))
    assert all(not m.indexed for m in rs.matchers.values())


def test_without_a_process() -> None:
    rs = ruleset(
        rule_yaml("evt.type = execve and proc.name = bash and user.uid = 33", name="a")
        + rule_yaml("evt.type = execve and proc.pname = nginx", name="b")
    )
    ctx = exec_ctx()
    ctx.proc = None
    assert [r.name for r in rs.match(ctx)] == ["a"]  # the event's comm and uid; no parent known


def test_unknown_event_type_values_match_nothing() -> None:
    rs = ruleset(rule_yaml("proc.name = bash"))
    ctx = exec_ctx()
    ctx.ev.type = 99  # type: ignore[assignment]  # a newer sensor's event
    assert rs.match(ctx) == []


OUT_RULE = """
- rule: out
  desc: d
  condition: evt.type = execve
  output: >
    %proc.name ran %proc.cmdline (parent=%proc.pname gp=%proc.aname[2] ggp=%proc.aname[3] file=%fd.name
    uid=%user.uid failed=%evt.failed at %evt.time %% done; 100%sure %nodot. path=%(proc.exepath)
    low=%tolower(proc.pname) anc=%proc.aname)
  priority: info
"""


def test_output_formatting() -> None:
    rs = ruleset(OUT_RULE)
    rule = rs.rules[0]
    text, fields = rs.output(rule, exec_ctx())
    assert text == (
        "bash ran bash -c id; uname -a (parent=nginx gp=systemd ggp=<NA> file=<NA> uid=33 failed=false at "
        "22:13:20.123456789 % done; 100%sure %nodot. path=/usr/bin/bash low=nginx anc=nginx,systemd)"
    )
    assert fields == {
        "proc.name": "bash",
        "proc.cmdline": "bash -c id; uname -a",
        "proc.pname": "nginx",
        "proc.aname[2]": "systemd",
        "proc.aname[3]": None,
        "fd.name": None,
        "user.uid": 33,
        "evt.failed": False,
        "evt.time": WALL,
        "proc.exepath": "/usr/bin/bash",
        "tolower(proc.pname)": "nginx",
        "proc.aname": ["nginx", "systemd"],
    }
    assert rule.output_fields == tuple(fields)


def test_output_on_each_event_type_and_without_process() -> None:
    rs = ruleset(rule_yaml("proc.name exists", output="%evt.type %fd.name %fd.sport %proc.pname"))
    r = rs.rules[0]
    assert rs.output(r, open_ctx("/etc/x"))[0] == "openat /etc/x <NA> nginx"
    assert rs.output(r, connect_ctx("1.2.3.4", 80))[0] == "connect 0.0.0.0:0->1.2.3.4:80 80 nginx"
    ctx = exec_ctx()
    ctx.proc = None
    assert rs.output(r, ctx) == (
        "execve <NA> <NA> <NA>",
        {"evt.type": "execve", "fd.name": None, "fd.sport": None, "proc.pname": None},
    )


def test_hostile_values_in_outputs_are_kept_as_they_are() -> None:
    proc = web_shell()
    proc.comm = "a\udcff\x1b[0m"
    rs = ruleset(rule_yaml("evt.type = execve", output="%proc.name"))
    text, fields = rs.output(rs.rules[0], exec_ctx(proc))
    assert text == "a\udcff\x1b[0m" and fields["proc.name"] == proc.comm  # escaping is the encoder's job


def test_matchers_per_rule_and_constants_folded() -> None:
    rs = ruleset(
        MACROS
        + rule_yaml("spawned and fd.name = /x", name="never")
        + rule_yaml("opened and evt.source = syscall and evt.dir = <", name="always-on-open")
    )
    assert rs.matchers[EXEC].fn(exec_ctx()) == []
    assert "syscall" not in rs.matchers[OPEN].source  # folded: evt.source is always syscall
    assert [r.name for r in rs.match(open_ctx("/y"))] == ["always-on-open"]
    assert rs.rules[0].matcher(exec_ctx()) is False


def test_sha256_and_get() -> None:
    res = load_text(rule_yaml("evt.type = execve", name="a"), "a.yaml")
    assert res.ruleset is not None and len(res.ruleset.sha256) == 64
    assert res.ruleset.get("a") is res.ruleset.rules[0] and res.ruleset.get("b") is None


def test_compile_is_reasonably_fast() -> None:
    import time

    text = generated(600)
    t0 = time.perf_counter()
    rs = ruleset(text)
    assert time.perf_counter() - t0 < 10
    assert len(rs.rules) == 600


def _count(rs: Any) -> int:
    return sum(len(m.indexed) + len(m.sequential) for m in rs.matchers.values())


def test_disabled_and_skipped_rules_are_not_compiled() -> None:
    rs = ruleset(
        rule_yaml("evt.type = execve", name="a", extra="  enabled: false\n") + rule_yaml("evt.type = execve")
    )
    assert _count(rs) == 1


def test_with_enabled_by_name_and_tag() -> None:
    text = rule_yaml("evt.type = execve", name="a", extra="  tags: [noisy]\n") + rule_yaml(
        "evt.type = execve", name="b", extra="  enabled: false\n"
    )
    rs = ruleset(text)
    assert [r.name for r in rs.match(exec_ctx())] == ["a"]
    tuned = rs.with_enabled(enable=["b"], disable=["tag:noisy"])
    assert [r.name for r in tuned.match(exec_ctx())] == ["b"]
    assert [r.name for r in rs.match(exec_ctx())] == ["a"]  # the original is untouched
    if rs.sha256:  # the version names the rules that run
        assert tuned.sha256 != rs.sha256
        assert rs.with_enabled(enable=["a"]).sha256 == rs.sha256  # already on: nothing switched
    with pytest.raises(KeyError):
        rs.with_enabled(disable=["nope"])


def test_alternatives_on_one_field_fold_into_one_test_with_the_same_answers() -> None:
    from sentinel.rules.codegen import fold_alternatives
    from sentinel.rules.compiler import IOr

    eq = "proc.name = bash or proc.name = sh or proc.name = zsh or proc.pname = apache2"
    ends = (
        "(proc.exepath endswith /bash or sentinel.exec.filename endswith /bash) or "
        "(proc.exepath endswith /dash or sentinel.exec.filename endswith /dash)"
    )
    low = "tolower(proc.name) = BASH or tolower(proc.name) = ksh or tolower(proc.name) = csh"
    expected = {  # what each condition means, in plain Python
        eq: lambda name, exe: name in ("bash", "sh", "zsh"),
        ends: lambda name, exe: exe.endswith(("/bash", "/dash")),
        low: lambda name, exe: name.lower() in ("ksh", "csh"),  # a lowered field never equals "BASH"
    }
    for cond, want in expected.items():
        rs = ruleset(rule_yaml(f"evt.type = execve and ({cond})"))
        source = rs.matchers[int(EventType.EXEC)].source
        assert " in {" in source or ".endswith((" in source, source
        for name, exe in (("bash", "/usr/bin/bash"), ("dash", "/usr/bin/dash"), ("ksh", "/bin/ksh"),
                          ("BASH", "/opt/BASH"), ("python3", "/usr/bin/python3")):  # fmt: skip
            ctx = exec_ctx(proc_chain((name, exe, [name]), ("nginx", "/usr/sbin/nginx", ["nginx"])))
            ctx.ev.filename = exe
            assert bool(rs.match(ctx)) == want(name, exe), (cond, name)
    ir = ruleset(rule_yaml(f"evt.type = execve and ({eq})")).rules[0].ir
    (orig,) = [x for x in ir.items if isinstance(x, IOr)]
    assert len(fold_alternatives(orig.items)) == 2  # proc.name in {...} and the pname check
