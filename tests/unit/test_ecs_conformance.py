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

from sentinel.alerts.ecs import EcsRenderer
from sentinel.alerts.model import Alert
from sentinel.alerts.render import EcsAlertRenderer
from sentinel.containers import ContainerMeta, ContainerRef, K8sPod
from sentinel.containers.meta_view import MetaChange, MetadataView
from sentinel.events import AF_INET, AF_INET6, AF_UNIX, FLAG_CREATED, FLAG_CREATED_KNOWN, Event, EventType
from sentinel.rules.context import EvalContext
from sentinel.sockets import SOCK_KNOWN, SOCK_STATE_KNOWN, SOCK_STATE_SHIFT
from sentinel.text import dumps
from tests.unit.detect_fixtures import HOST, S, rule
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
    """Dotted names of the document's values; lists of objects are walked into (ECS ``nested`` fields). An
    ECS ``object`` field (``container.labels``) is a value: its keys are the data's, not ECS's."""
    out: list[tuple[str, Any]] = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and _is_object(name):
            out.append((name, value))
        elif isinstance(value, dict):
            out.extend(leaves(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for v in value:
                out.extend(leaves(v, name + "."))
        else:
            out.append((name, value))
    return out


def _is_object(name: str) -> bool:
    spec = ecs_fields().get(name)
    return spec is not None and spec["type"] in ("object", "flattened")


def _type_ok(ecs_type: str, value: Any) -> bool:
    if ecs_type in _STRINGS:
        return isinstance(value, str)
    if ecs_type in _INTS:
        return isinstance(value, int) and not isinstance(value, bool)
    if ecs_type in _NUMBERS:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ecs_type == "boolean":
        return isinstance(value, bool)
    if ecs_type in ("object", "flattened"):  # keyword values under keys of any name (object_type keyword)
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return ecs_type == "nested"


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


WEB = ContainerMeta(
    full_id=A, source="docker:/var/run/docker.sock", name="shop-web-1", image="nginx:1.25",
    image_repository="nginx", image_tag="1.25", image_digest="sha256:" + "cd" * 32, image_id="ef" * 32,
    labels=(("app", "web"), ("app.kubernetes.io/name", "shop"), ("io.kubernetes.pod.name", "web-0")),
    privileged=True, host_network=False,
    pod=K8sPod("web-0", "shop", "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab", "ab" * 32, (("app", "web"),)),
)  # fmt: skip


def view_with(*changes: MetaChange) -> MetadataView:
    view = MetadataView()  # a replay's view: states from the changes given
    for change in changes:
        view.apply(change)
    return view


def render_with(alert: Alert, view: MetadataView) -> dict[str, Any]:
    ecs = EcsRenderer(HOST)
    ecs.containers = view
    return orjson.loads(orjson.dumps(EcsAlertRenderer(ecs).render(alert)))


METADATA_STATES = {
    "found": view_with(MetaChange(A, "pending"), MetaChange(A, "found", WEB)),
    "found-no-pod": view_with(MetaChange(A, "found", dataclasses.replace(WEB, pod=None, privileged=None))),
    "pending": view_with(MetaChange(A, "pending")),
    "unavailable": view_with(MetaChange(A, "not_found")),
}


@pytest.mark.parametrize("state", list(METADATA_STATES))
def test_container_documents_with_runtime_metadata_conform(state: str) -> None:
    falco = rule("Shell", tags=["mitre_execution"], output="%proc.name %container.name %k8s.pod.name")
    in_pod = dataclasses.replace(DOCKER_A, pod_uid="2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab")
    for ref in (DOCKER_A, in_pod):
        ctx = container_context(ref)
        ctx.containers = METADATA_STATES[state].fields
        doc = render_with(make_alert(falco, ctx), METADATA_STATES[state])
        assert violations(doc) == []


def test_runtime_metadata_fills_ecs_container_and_orchestrator() -> None:
    """name, image (repository, tag array, digest array), labels as an object (dots made `_`), privileged;
    the pod under orchestrator; what ECS lacks under sentinel.container, no pending mark once answered."""
    ctx = container_context()
    doc = render_with(make_alert(rule("Shell"), ctx), METADATA_STATES["found"])
    assert doc["container"] == {
        "id": A, "runtime": "docker", "name": "shop-web-1",
        "image": {"name": "nginx", "tag": ["1.25"], "hash": {"all": ["sha256:" + "cd" * 32]}},
        "labels": {"app": "web", "app_kubernetes_io/name": "shop", "io_kubernetes_pod_name": "web-0"},
        "security_context": {"privileged": True},
    }  # fmt: skip
    assert doc["sentinel"]["container"] == {
        "short_id": A[:12], "rootless": False, "source": "docker:/var/run/docker.sock", "image": "nginx:1.25",
        "image_id": "ef" * 32, "host_network": False,
    }  # fmt: skip
    assert doc["orchestrator"] == {
        "type": "kubernetes", "namespace": "shop",
        "resource": {"type": "pod", "name": "web-0", "id": "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab",
                     "label": ["app:web"]},
    }  # fmt: skip
    for name in ("container.name", "container.image.name", "container.security_context.privileged",
                 "orchestrator.type", "orchestrator.namespace", "orchestrator.resource.name"):  # fmt: skip
        assert name in ecs_fields()
    assert "array" in ecs_fields()["container.image.tag"]["normalize"]
    assert ecs_fields()["container.labels"]["type"] == "object"


def test_documents_before_the_answer_are_marked() -> None:
    ctx = container_context()
    for state, mark in (("pending", "pending"), ("unavailable", "unavailable")):
        doc = render_with(make_alert(rule("Shell"), ctx), METADATA_STATES[state])
        assert doc["container"] == {"id": A, "runtime": "docker"}
        assert doc["sentinel"]["container"]["metadata"] == mark
        assert "orchestrator" not in doc
    in_pod = container_context(dataclasses.replace(DOCKER_A, pod_uid="2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab"))
    doc = render_with(make_alert(rule("Shell"), in_pod), METADATA_STATES["pending"])
    assert doc["orchestrator"] == {
        "type": "kubernetes", "resource": {"type": "pod", "id": "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab"}
    }
    host = render_with(make_alert(rule("Shell"), shell_context()), METADATA_STATES["found"])
    assert "container" not in host and "orchestrator" not in host


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


# -------------------------------------------------------- every document type (issue 19), and its meanings

LOOPBACK = 0x0100007F  # 127.0.0.1 as the kernel's __be32 reads on little-endian
SOCKET_WORD = 443 | (40000 << 16) | (AF_INET << 32) | (1 << 48) | (1 << SOCK_STATE_SHIFT) | SOCK_STATE_KNOWN
SOCKET_WORD |= SOCK_KNOWN
SYS_SAMPLES: tuple[tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]], ...] = (
    ((0,) * 6, (0, 0, 0), ("", "", "")),  # nothing known
    ((3, 0o755, 1000, 1000, 0x10, 4), (LOOPBACK, 0, SOCKET_WORD), ("/tmp/a b", "../etc/shadow", "tmpfs")),
    ((-100, 0o4755, 0xFFFFFFFF, 0, -1, 200), (12345, (8 << 20) | 1, 0), ("\udcff", "x" * 300, "")),
)


def event_documents() -> dict[str, dict[str, Any]]:
    """One ECS event document per event family and variant: exec (success, failure), open (created, not,
    unknown, failed), connect (IPv4, IPv6, unix, in progress), fork, exit, chdir, and each security,
    socket and file-change syscall with a few argument sets, with a process and without one."""
    ctx = shell_context()
    proc = ctx.proc
    docs: dict[str, dict[str, Any]] = {}

    def add(name: str, ev: Event, with_proc: bool = True, path: str | None = None) -> None:
        renderer = EcsRenderer(HOST)
        doc = renderer.event_doc(ev, proc if with_proc else None, path)
        docs[name] = orjson.loads(dumps(doc))

    base = {"ts_ns": 5 * S, "pid": 200, "tid": 200, "uid": 33, "gid": 33, "comm": "sh"}
    add("exec", ctx.ev)
    add("exec-failed", Event(EventType.EXEC, **base, ret=-2, filename="/nope", argv=["nope", "-x"]))
    creat = 0o1101  # O_WRONLY|O_CREAT|O_TRUNC
    for name, flags, ret in (
        ("open-created", FLAG_CREATED_KNOWN | FLAG_CREATED, 3), ("open-existing", FLAG_CREATED_KNOWN, 3),
        ("open-unknown", 0, 3), ("open-failed", 0, -13),
    ):  # fmt: skip
        ev = Event(EventType.OPEN, **base, ret=ret, path="/tmp/f", open_flags=creat, mode=0o644, flags=flags)
        add(name, ev)
    add("open-read", Event(EventType.OPEN, **base, ret=3, path="rel", open_flags=0), path="/srv/rel")
    for name, family, address, port, ret in (
        ("connect4", AF_INET, "203.0.113.9", 443, 0), ("connect6", AF_INET6, "2001:db8::1", 53, -115),
        ("connect-unix", AF_UNIX, "/run/docker.sock", 0, 0),
        ("connect-refused", AF_INET, "10.0.0.1", 22, -111),
    ):  # fmt: skip
        add(name, Event(EventType.CONNECT, **base, ret=ret, fd=3, family=family, address=address, port=port,
                        sock_type=1))  # fmt: skip
    local = (LOOPBACK, 0, 40000 | (40000 << 16) | (AF_INET << 32) | (1 << 48) | SOCK_KNOWN)
    add("connect4-source", Event(EventType.CONNECT, **base, fd=3, family=AF_INET, address="127.0.0.1",
                                 port=8080, sock_type=1, sys_extra=local))  # fmt: skip
    add("fork", Event(EventType.FORK, **base, child_pid=201, clone_flags=0x11))
    add("exit", Event(EventType.EXIT, **base))
    add("chdir", Event(EventType.CHDIR, **base, path="/tmp"), path="/tmp")
    add("no-process", Event(EventType.EXIT, **base), with_proc=False)
    for etype in EventType:
        if etype < EventType.TAMPER:
            continue
        for i, (args, extra, strs) in enumerate(SYS_SAMPLES):
            for ret in (0, -1):
                ev = Event(etype, **base, ret=ret, sys_args=args, sys_extra=extra, sys_strs=strs)
                add(f"{etype.name.lower()}-{i}{'-failed' if ret else ''}", ev)
    return docs


DOCS = event_documents()


@pytest.mark.parametrize("name", list(DOCS))
def test_every_event_document_conforms_to_ecs(name: str) -> None:
    assert violations(DOCS[name]) == []


def every_alert() -> dict[str, dict[str, Any]]:
    """Each alert kind: a rule's (Falco-style and Sigma, on each event family), the anomaly model's, the
    agent's own (internal: lost events, reload failure, refused model, backlog, tamper, task failure) and an
    aggregation summary."""
    from sentinel.alerts import internal
    from sentinel.alerts.model import ML_RULESET
    from sentinel.anomaly.live import ML_RULE

    renderer = EcsAlertRenderer(EcsRenderer(HOST))
    out: dict[str, dict[str, Any]] = {}
    falco = rule("Any", tags=["mitre_execution", "T1059.004"], output="%proc.name %evt.type")
    ctx = shell_context()
    for name, doc in (("exec", ctx.ev),):
        out[f"rule-{name}"] = render_ecs(make_alert(falco, EvalContext(doc, ctx.proc, None, 0)))
    out["rule-open"] = render_ecs(make_alert(falco, open_context()))
    out["rule-sigma"] = render_ecs(make_alert(sigma_rule(), shell_context()))
    out["aggregation-summary"] = render_ecs(
        make_alert(falco, shell_context(), aggregated=True, count=7, first_ns=2 * S, last_ns=9 * S)
    )
    extra = {"ml": {"score": 0.7, "explanation": [{"feature": "argv_entropy", "value": 3.1}]}}
    ml = Alert(rule=ML_RULE, ctx=shell_context(), output="Anomalous exec", output_fields={"ml.score": 0.7},
               ts_ns=2 * S, ruleset=ML_RULESET, extra=extra)  # fmt: skip
    out["model"] = orjson.loads(dumps(renderer.render(ml)))
    tamper_ev = Event(EventType.TAMPER, 5 * S, 200, 200, 0, 0, "bpftool", sys_args=(0,) * 6)
    for name, alert in (
        ("internal-lost", internal.events_lost(5 * S, "exec", 12)),
        ("internal-reload", internal.reload_failed(5 * S, ["r.yaml:1:1: bad"], "ab" * 32, ["r.yaml"])),
        ("internal-model", internal.model_refused(5 * S, "/m", "not ours")),
        ("internal-backlog", internal.sink_backlog(5 * S, "siem", 20000, 10000, "retrying")),
        ("internal-spool", internal.spool_dropping(5 * S, "siem", 3)),
        ("internal-task", internal.task_failed(5 * S, "reload", "boom", 1, 1)),
        ("internal-tamper", internal.tamper(tamper_ev)),
    ):
        out[name] = orjson.loads(dumps(renderer.render(alert)))
    return out


ALERTS = every_alert()


@pytest.mark.parametrize("name", list(ALERTS))
def test_every_alert_kind_conforms_to_ecs(name: str) -> None:
    doc = ALERTS[name]
    assert doc["event"]["kind"] == "alert"
    assert violations(doc) == []
    assert isinstance(doc["rule"]["author"], list)  # ECS: an array


def test_the_new_fields_are_ecs_fields_of_the_right_type() -> None:
    """What issue 19 added or moved, checked against the schema itself."""
    fields = ecs_fields()
    assert fields["user.id"]["type"] == "keyword" and fields["group.name"]["type"] == "keyword"
    assert "array" in fields["rule.author"]["normalize"]
    assert fields["process.command_line"]["type"] == "wildcard"
    assert "creation" in {a["name"] for a in fields["event.type"]["allowed_values"]}
    exec_doc = DOCS["exec"]
    assert exec_doc["user"] == exec_doc["process"]["user"]
    assert exec_doc["group"] == exec_doc["process"]["group"]
    assert exec_doc["process"]["name"] == exec_doc["process"]["executable"].rpartition("/")[2]
    assert DOCS["open-created"]["event"]["type"] == ["creation"]
    assert DOCS["open-existing"]["event"]["type"] == ["change"]
    assert DOCS["open-unknown"]["event"]["type"] == ["change"]
    assert "mode" not in DOCS["open-created"]["file"]
    assert DOCS["open-created"]["sentinel"]["event"]["requested_mode"] == "0644"
    assert DOCS["connect4-source"]["source"] == {"ip": "127.0.0.1", "port": 40000, "address": "127.0.0.1"}
    assert fields["source.port"]["type"] == "long" and fields["source.ip"]["type"] == "ip"


# -------------------------------------------------------------------------- diagnostics (--log-format ecs)


def diagnostics(fmt: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    from sentinel import log as logmod

    logmod.configure("debug", fmt)
    try:
        log = logmod.get_logger()
        log.info("sentinel.ready", pid=42, host="h", probes=["exec", "open"], event_types=7)
        log.warning("sentinel.sink_backlog", sink="siem", backlog=10, path="/tmp/\udcff")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("sentinel.task_failed", task="reload")
    finally:
        logmod.configure("info")
    return [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]


def test_ecs_diagnostics_conform_and_keep_the_name_findable(capsys: pytest.CaptureFixture[str]) -> None:
    """--log-format ecs: each record is an ECS document that can share an index with the alerts (``event``
    an object), the record's name in ``message`` and ``event.action``, the rest under sentinel.diagnostic."""
    ready, backlog, failed = diagnostics("ecs", capsys)
    for doc in (ready, backlog, failed):
        assert violations(doc) == []
        assert doc["event"]["kind"] == "event" and doc["event"]["dataset"] == "sentinel.diagnostics"
    assert ready["message"] == ready["event"]["action"] == "sentinel.ready"
    assert ready["log"]["level"] == "info" and ready["@timestamp"].endswith("Z")
    assert ready["sentinel"]["diagnostic"] == {"pid": 42, "host": "h", "probes": ["exec", "open"],
                                               "event_types": 7}  # fmt: skip
    assert backlog["log"]["level"] == "warning"
    assert backlog["sentinel"]["diagnostic"]["path"] == "/tmp/\\xff"  # escaped, listed, still one JSON line
    assert "ValueError: boom" in failed["error"]["stack_trace"]


def test_default_diagnostics_are_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    """The default form keeps ``{"event": "sentinel.ready", "level": ...}``: tools that wait for it still work
    (and such records are not ECS documents: ``event`` is a string; hence the opt-in ECS form)."""
    ready, _, _ = diagnostics("json", capsys)
    assert ready["event"] == "sentinel.ready" and ready["level"] == "info" and ready["pid"] == 42
    assert "event: not an ECS field" in violations(ready)


def test_the_container_event_document_conforms_and_carries_the_mounts() -> None:
    """Falco's `container` event (made when a container's runtime answers): its document has the mounts under
    sentinel.container, and every other field is ECS's."""
    from sentinel.containers.metadata import Mount

    meta = dataclasses.replace(WEB, mounts=(Mount("/var/run/docker.sock", "/var/run/docker.sock", "", True,
                                                  "rprivate"),), mounts_truncated=True)  # fmt: skip
    view = view_with(MetaChange(A, "found", meta))
    ctx = in_container_context()
    renderer = EcsRenderer(HOST)
    renderer.containers = view
    ev = Event(EventType.CONTAINER, 5 * S, 200, 200, 0, 0, "sleep")
    doc = orjson.loads(dumps(renderer.event_doc(ev, ctx.proc)))
    assert violations(doc) == []
    assert doc["event"]["action"] == "container" and doc["event"]["category"] == ["process"]
    assert doc["sentinel"]["container"]["mounts"] == [
        {"source": "/var/run/docker.sock", "destination": "/var/run/docker.sock", "mode": "", "rw": True,
         "propagation": "rprivate"}
    ]  # fmt: skip
    assert doc["sentinel"]["container"]["mounts_truncated"] is True
    assert doc["message"] == "container shop-web-1 started (nginx:1.25)"
