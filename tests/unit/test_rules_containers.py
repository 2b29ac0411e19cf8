"""Container fields in rules: Falco's values for a process in a container and for the host, Falco's
``container`` macro (from Falco's own rule files) true exactly in containers, and fixtures that name one."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from sentinel.containers import ContainerRef
from sentinel.events import Credentials
from sentinel.rules import load_text
from sentinel.rules.fixture_context import from_ecs
from sentinel.rules.fixtures import FixtureError
from tests.unit.rules_support import exec_ctx, holds, open_ctx, rule_yaml, ruleset, web_shell

A = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
DOCKER_A = ContainerRef("docker", A, A[:12])
NSPAWN = ContainerRef("systemd-nspawn", "build-box", "build-box")
FALCO_DIR = Path(__file__).resolve().parents[3] / "shared" / "falco"
CAP_SYS_ADMIN = 1 << 21


def in_container(ref: ContainerRef | None = DOCKER_A):  # type: ignore[no-untyped-def]
    proc = web_shell()
    proc.container = ref
    return proc


def falco_file(name: str) -> str:
    path = FALCO_DIR / name
    if not path.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Falco's rules are missing: {path} (shared/ is laid beside the repo in CI)")
        pytest.skip(f"no {path}")
    return path.read_text(encoding="utf-8")


def falco_container_macro() -> str:
    """Falco's own ``container`` macro, as its stable rules define it."""
    items = yaml.safe_load(falco_file("falco_rules.yaml"))
    (macro,) = [i for i in items if i.get("macro") == "container"]
    assert macro["condition"].replace(" ", "") == "(container.id!=host)"
    return yaml.safe_dump([macro])


@pytest.mark.parametrize(
    ("field", "container", "host"),
    [
        ("container.id", A[:12], "host"),
        ("container.full_id", A, "host"),
        ("container.type", "docker", "host"),
        ("container.name", None, "host"),  # the runtime's name: not asked for yet (Falco: until its lookup)
        ("container.info", A[:12], "host"),
        ("container.image.repository", None, None),  # the image: a later part
    ],
)
def test_field_values_in_a_container_and_on_the_host(field: str, container: object, host: object) -> None:
    rs = ruleset(rule_yaml("evt.type = execve"))
    assert rs.field_value(field, exec_ctx(in_container())) == container
    assert rs.field_value(field, exec_ctx(in_container(None))) == host


def test_named_runtimes_have_the_name_as_id() -> None:
    rs = ruleset(rule_yaml("evt.type = execve"))
    ctx = exec_ctx(in_container(NSPAWN))
    assert [rs.field_value(f, ctx) for f in ("container.id", "container.full_id", "container.type")] == [
        "build-box",
        "build-box",
        "systemd-nspawn",
    ]


def test_falcos_container_macro_holds_exactly_in_containers() -> None:
    macro = falco_container_macro()
    assert holds("evt.type = execve and container", exec_ctx(in_container()), macro)
    assert holds("evt.type = execve and container", exec_ctx(in_container(NSPAWN)), macro)
    assert not holds("evt.type = execve and container", exec_ctx(in_container(None)), macro)
    assert holds("evt.type = execve and not container", exec_ctx(in_container(None)), macro)
    assert holds("container.id = 3ad7b26ded6d and container.type = docker", exec_ctx(in_container()))
    assert holds("container.name = host", exec_ctx(in_container(None)))
    assert not holds("container.name exists", exec_ctx(in_container()))


def test_rules_on_the_container_macro_are_no_longer_never_fire() -> None:
    rs = ruleset(falco_container_macro() + rule_yaml("evt.type = execve and container", name="In"))
    assert rs.never_fire == []


def test_falcos_release_agent_rule_fires_in_a_container_only() -> None:
    """Falco's stable rule, loaded unchanged with its whole file: a root process with CAP_SYS_ADMIN
    writing a cgroup v1 release_agent is a container escape in a container, and nothing on the host."""
    rs = load_text(falco_file("falco_rules.yaml"), "falco_rules.yaml").ruleset
    assert rs is not None
    name = "Detect release_agent File Container Escapes"
    assert name not in [r.name for r in rs.never_fire]

    def write_release_agent(ref: ContainerRef | None):  # type: ignore[no-untyped-def]
        proc = in_container(ref)
        proc.uid = 0
        proc.creds = Credentials(0, 0, 0, 0, 0, 0, 0, 1, CAP_SYS_ADMIN, CAP_SYS_ADMIN)
        return open_ctx("/sys/fs/cgroup/rdma/release_agent", flags=1, proc=proc)

    assert name in [r.name for r in rs.match(write_release_agent(DOCKER_A))]
    assert name not in [r.name for r in rs.match(write_release_agent(None))]


# --- fixtures -------------------------------------------------------------------------------------------


def doc(**blocks: object) -> dict[str, object]:
    return {"event": {"action": "exec"}, "process": {"executable": "/bin/sh", "args": ["sh"]}, **blocks}


def test_a_fixture_names_its_container_as_sentinel_events_prints_it() -> None:
    ctx = from_ecs(
        doc(
            container={"id": A, "runtime": "cri-o"},
            sentinel={"container": {"short_id": A[:12], "rootless": True}},
        )
    )
    assert ctx.proc is not None
    assert ctx.proc.container == dataclasses.replace(DOCKER_A, runtime="cri-o", rootless=True)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"id": A}, DOCKER_A),  # runtime: docker unless given; the short id from a 64-hex id
        ({"id": "build-box", "runtime": "systemd-nspawn"}, NSPAWN),
        ({"id": A[:12]}, ContainerRef("docker", A[:12], A[:12])),
        ({"id": "host"}, None),  # Falco's way of saying the host
        ({}, None),
    ],
)
def test_fixture_container_forms(block: dict[str, str], expected: ContainerRef | None) -> None:
    ctx = from_ecs(doc(container=block))
    assert ctx.proc is not None and ctx.proc.container == expected


def test_a_fixture_with_a_bad_container_block_is_refused() -> None:
    with pytest.raises(FixtureError):
        from_ecs(doc(container="docker"))
    with pytest.raises(FixtureError):
        from_ecs(doc(container={"id": [A]}))
