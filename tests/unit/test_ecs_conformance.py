"""ECS conformance of alert documents, against ECS's own field definitions (``shared/ecs/ecs_flat.yml``,
laid beside the repository; see its README).

Every field outside sentinel's namespace must be an ECS field, with a value of its type, an array only where
ECS normalises it to one, and allowed values where ECS lists them. Without ``shared/ecs/`` the tests fail
under ``CI=true`` and skip elsewhere (the input is not ours).
"""

from __future__ import annotations

import dataclasses
import os
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from sentinel.alerts.model import Alert
from sentinel.containers import ContainerRef
from sentinel.rules.context import EvalContext
from tests.unit.detect_fixtures import rule
from tests.unit.test_alerts_render import make_alert, open_context, render_ecs, shell_context
from tests.unit.test_alerts_sigma import sigma_rule

ECS_FLAT = Path(__file__).resolve().parents[3] / "shared" / "ecs" / "ecs_flat.yml"
OURS = ("sentinel.",)  # product-specific data, as ECS asks for custom fields
A = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
DOCKER_A = ContainerRef("docker", A, A[:12])
ROOTLESS_LXC = ContainerRef("lxc", "web01", "web01", rootless=True)

_STRINGS = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text", "date", "ip", "version"}
_INTS = {"long", "integer", "short", "byte", "unsigned_long"}
_NUMBERS = _INTS | {"float", "scaled_float", "double", "half_float"}


@cache
def ecs_fields() -> dict[str, dict[str, Any]]:
    if not ECS_FLAT.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"ECS field definitions are missing: {ECS_FLAT} (shared/ is beside the repo in CI)")
        pytest.skip(f"no {ECS_FLAT}")
    with ECS_FLAT.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def leaves(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted names of the document's values; lists of objects are walked into (ECS ``nested`` fields)."""
    out: list[tuple[str, Any]] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(leaves(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for v in value:
                out.extend(leaves(v, name + "."))
        else:
            out.append((name, value))
    return out


def _type_ok(ecs_type: str, value: Any) -> bool:
    if ecs_type in _STRINGS:
        return isinstance(value, str)
    if ecs_type in _INTS:
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type in _NUMBERS:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ecs_type == "boolean":
        return isinstance(value, bool)
    return ecs_type in ("object", "flattened", "nested")


def violations(doc: dict[str, Any]) -> list[str]:
    fields = ecs_fields()
    bad: list[str] = []
    for name, value in leaves(doc):
        if name.startswith(OURS) or value is None:
            continue
        spec = fields.get(name)
        if spec is None:
            bad.append(f"{name}: not an ECS field")
            continue
        is_array = "array" in (spec.get("normalize") or [])
        if isinstance(value, list):
            if not is_array:
                bad.append(f"{name}: an array, but ECS has one value")
            values = value
        else:
            values = [value]
        for v in values:
            if not _type_ok(spec["type"], v):
                bad.append(f"{name}: {v!r} is not of ECS type {spec['type']}")
        allowed = spec.get("allowed_values")
        if allowed:
            names = {a["name"] for a in allowed}
            bad.extend(f"{name}: {v!r} is not an allowed value" for v in values if v not in names)
    return bad


def container_context(ref: ContainerRef = DOCKER_A) -> EvalContext:
    ctx = shell_context()
    assert ctx.proc is not None
    ctx.proc.container = ref
    return ctx


def in_container_context() -> EvalContext:
    """The container's first process (vpid 1, its own pid and mount namespaces), its parent on the host."""
    ctx = container_context()
    proc = ctx.proc
    assert proc is not None and proc.parent is not None
    proc.vpid, proc.pid_ns, proc.mnt_ns, proc.host_pid_ns = 1, 4026532245, 4026532243, False
    proc.parent.vpid = proc.parent.pid
    return ctx


def alerts() -> dict[str, Alert]:
    falco = rule("Shell", tags=["mitre_execution", "T1059.004"], output="%proc.name %proc.pname")
    return {
        "falco-exec": make_alert(falco, shell_context()),
        "falco-exec-container": make_alert(falco, container_context()),
        "falco-exec-rootless-lxc": make_alert(falco, container_context(ROOTLESS_LXC)),
        "falco-exec-in-container-view": make_alert(falco, in_container_context()),
        "falco-open": make_alert(rule("Read", tags=["T1003.008"]), open_context()),
        "sigma-exec": make_alert(sigma_rule(), shell_context()),
        "sigma-minimal": make_alert(sigma_rule(references=[], license=None, logsource={}), shell_context()),
    }


@pytest.mark.parametrize("name", list(alerts()))
def test_alert_documents_conform_to_ecs(name: str) -> None:
    doc = render_ecs(alerts()[name])
    assert violations(doc) == []


def test_sigma_alert_sets_the_rule_fields_ecs_has() -> None:
    doc = render_ecs(alerts()["sigma-exec"])
    names = {n for n, _ in leaves(doc)}
    for field in ("rule.id", "rule.uuid", "rule.name", "rule.author", "rule.license", "rule.reference",
                  "rule.ruleset", "rule.category", "threat.software.id", "threat.tactic.id"):  # fmt: skip
        assert field in names
        assert field in ecs_fields()


def test_a_container_is_named_with_ecs_fields_and_the_host_is_not() -> None:
    """ECS container.id is the runtime's whole id and container.runtime the runtime (both keyword); the short
    id Falco and `docker ps` show and the rootless flag have no ECS field: sentinel.container. A host process
    has no container block (ECS has no value meaning the host)."""
    doc = render_ecs(alerts()["falco-exec-container"])
    assert doc["container"] == {"id": A, "runtime": "docker"}
    assert doc["sentinel"]["container"] == {"short_id": A[:12], "rootless": False}
    for name in ("container.id", "container.runtime"):
        assert ecs_fields()[name]["type"] == "keyword"
    host = render_ecs(alerts()["falco-exec"])
    assert "container" not in host and "container" not in host["sentinel"]


def test_the_in_container_view_uses_ecs_vpid_and_sentinel_namespaces() -> None:
    """ECS 9 has process.vpid and process.parent.vpid (long: the id in the process's own pid namespace) and
    host.pid_ns_ino; a process's namespaces have no ECS field: sentinel.process.pid_ns/mnt_ns/host_pid_ns."""
    from sentinel.alerts.ecs import EcsRenderer
    from sentinel.alerts.render import EcsAlertRenderer
    from tests.unit.test_alerts_render import HOST

    doc = render_ecs(alerts()["falco-exec-in-container-view"])
    assert doc["process"]["vpid"] == 1 and doc["process"]["parent"]["vpid"] == doc["process"]["parent"]["pid"]
    extra = doc["sentinel"]["process"]
    assert (extra["pid_ns"], extra["mnt_ns"], extra["host_pid_ns"]) == (4026532245, 4026532243, False)
    for name in ("process.vpid", "process.parent.vpid"):
        assert ecs_fields()[name]["type"] == "long"
    unknown = render_ecs(alerts()["falco-exec"])  # no offsets: absent, never 0
    assert "vpid" not in unknown["process"] and "pid_ns" not in unknown["sentinel"].get("process", {})
    host = dataclasses.replace(HOST, host_pid_ns=4026531836)
    alert = alerts()["falco-exec-in-container-view"]
    with_host = orjson.loads(orjson.dumps(EcsAlertRenderer(EcsRenderer(host)).render(alert)))
    assert with_host["host"]["pid_ns_ino"] == "4026531836" and violations(with_host) == []
    assert "pid_ns_ino" not in doc["host"]  # the host's pid namespace unknown (a capture from before it)


def test_the_checker_catches_what_it_should() -> None:
    assert violations({"rule": {"author": "x", "reference": ["a", "b"]}, "event": {"kind": "bogus"}}) == [
        "rule.reference: an array, but ECS has one value",
        "event.kind: 'bogus' is not an allowed value",
    ]
    assert violations({"rule": {"sigma_id": "x"}, "sentinel": {"anything": [1]}}) == [
        "rule.sigma_id: not an ECS field"
    ]
