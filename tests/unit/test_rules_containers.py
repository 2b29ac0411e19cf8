"""Container fields in rules: Falco's values for a process in a container and for the host, Falco's
``container`` macro (from Falco's own rule files) true exactly in containers, and fixtures that name one."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import orjson
import pytest
import yaml

from sentinel.alerts.ecs import EcsRenderer
from sentinel.containers import ContainerMeta, ContainerRef, K8sPod
from sentinel.containers.meta_view import MetaChange, MetadataView, MetaFields, fields_of
from sentinel.containers.metadata import Mount
from sentinel.events import Credentials
from sentinel.host import HostInfo
from sentinel.rules import load_text
from sentinel.rules.context import EvalContext
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
        ("container.name", None, "host"),  # the runtime's name: missing until it answers (as Falco)
        ("container.info", A[:12], "host"),
        ("container.image.repository", None, ""),  # the host: Falco's empty image and false flags
        ("container.privileged", None, False),
        ("container.labels", None, ""),
        ("k8s.pod.name", None, None),  # no pod on the host
        ("k8s.pod.labels", None, ""),
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


# --- runtime metadata -----------------------------------------------------------------------------------

POD_UID = "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab"
WEB = ContainerMeta(
    full_id=A, source="docker:/var/run/docker.sock", name="shop-web-1", image="nginx:1.25",
    image_repository="nginx", image_tag="1.25", image_digest="sha256:" + "cd" * 32, image_id="ef" * 32,
    labels=(("com.docker.compose.service", "web"), ("io.kubernetes.pod.name", "web-0")), privileged=True,
    host_network=False, host_pid=None,
    pod=K8sPod("web-0", "shop", POD_UID, "ab" * 32, (("app", "web"), ("tier", "front"))),
    mounts=(Mount("/var/run/docker.sock", "/var/run/docker.sock", "", True, "rprivate"),
            Mount("/srv/www", "/usr/share/nginx/html", "ro", False, "rprivate")),
)  # fmt: skip


def known(meta: ContainerMeta = WEB) -> dict[str, MetaFields]:
    """What a MetadataView's ``fields`` holds once the runtime answered for ``meta``'s container."""
    return {meta.full_id: fields_of(meta)}


def with_meta(ctx: EvalContext, fields: dict[str, MetaFields]) -> EvalContext:
    return dataclasses.replace(ctx, containers=fields)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("container.name", "shop-web-1"),
        ("container.image", "nginx:1.25"),
        ("container.image.repository", "nginx"),
        ("container.image.tag", "1.25"),
        ("container.image.digest", "sha256:" + "cd" * 32),
        ("container.image.id", "ef" * 32),
        ("container.privileged", True),
        ("container.host_network", False),
        ("container.host_pid", None),  # the runtime did not say: unknown, not false
        ("container.labels", "com.docker.compose.service:web"),  # kubelet's labels left out, as Falco does
        ("container.label[com.docker.compose.service]", "web"),
        ("container.label[io.kubernetes.pod.name]", "web-0"),
        ("container.label[absent]", None),
        ("k8s.pod.name", "web-0"),
        ("k8s.ns.name", "shop"),
        ("k8s.pod.uid", POD_UID),
        ("k8s.pod.id", POD_UID),
        ("k8s.pod.sandbox_id", "ab" * 6),
        ("k8s.pod.full_sandbox_id", "ab" * 32),
        ("k8s.pod.labels", "app:web, tier:front"),
        ("k8s.pod.label[app]", "web"),
        ("k8s.pod.label[nope]", None),
        ("container.mounts", "/var/run/docker.sock:/var/run/docker.sock::true:rprivate,"
                             "/srv/www:/usr/share/nginx/html:ro:false:rprivate"),
        ("container.mount[1]", "/srv/www:/usr/share/nginx/html:ro:false:rprivate"),
        ("container.mount[/etc*]", "none"),
        ("container.mount.dest[/var/run/docker.sock]", "/var/run/docker.sock"),
        ("container.mount.dest[/proc*]", "N/A"),
        ("container.mount.source[/usr/share/*]", "/srv/www"),
        ("container.mount.mode[/srv/www]", "ro"),
        ("container.mount.rdwr[0]", "true"),
        ("container.mount.propagation[1]", "rprivate"),
    ],
)
def test_fields_from_the_runtimes_answer(field: str, value: object) -> None:
    rs = ruleset(rule_yaml("evt.type = execve"))
    assert rs.field_value(field, with_meta(exec_ctx(in_container()), known())) == value
    if field not in ("k8s.pod.uid", "k8s.pod.id"):  # the rest needs the answer
        assert rs.field_value(field, exec_ctx(in_container())) is None


def test_falcos_sensitive_mount_macro_reads_the_mounts() -> None:
    """Falco's `sensitive_mount` (`not container.mount.dest[...] in ("<NA>","N/A")`): true with docker.sock
    mounted, false in a container without such mounts once its answer is in."""
    cond = 'not container.mount.dest[/var/run/docker.sock] in ("<NA>","N/A")'
    pending = exec_ctx(in_container())
    assert holds(cond, with_meta(pending, known()))
    plain = dataclasses.replace(WEB, mounts=())
    assert not holds(cond, with_meta(pending, known(plain)))


def test_the_pod_uid_from_the_cgroup_needs_no_answer() -> None:
    rs = ruleset(rule_yaml("evt.type = execve"))
    in_pod = dataclasses.replace(DOCKER_A, pod_uid=POD_UID)
    assert rs.field_value("k8s.pod.uid", exec_ctx(in_container(in_pod))) == POD_UID
    assert rs.field_value("k8s.pod.name", exec_ctx(in_container(in_pod))) is None


def test_unknown_metadata_is_missing_in_checks_as_falco_has_it() -> None:
    """Before the answer: `in` is false and `not ... in` true (Falco's plugin gives "" then: the same); after
    it, the values; another container's answer does not leak."""
    cond = "container and container.image.repository in (nginx, redis)"
    macro = falco_container_macro()
    pending = exec_ctx(in_container())
    assert not holds(cond, pending, macro)
    assert holds("container and not container.image.repository in (nginx, redis)", pending, macro)
    assert not holds("container.privileged = true", pending)
    assert not holds("container.privileged = false", pending)
    assert holds(cond, with_meta(pending, known()), macro)
    assert holds("container.privileged = true and k8s.ns.name = shop", with_meta(pending, known()))
    other = exec_ctx(in_container(ContainerRef("docker", "f" * 64, "f" * 12)))
    assert not holds(cond, with_meta(other, known()), macro)


def test_the_host_has_falcos_values() -> None:
    host = exec_ctx(in_container(None))
    assert holds("container.privileged = false and container.image.repository = ''", host)
    assert not holds("k8s.pod.name exists", host)
    assert not holds("container.label[app] exists", host)


def test_falcos_privileged_container_rule_fires_once_the_runtime_answered() -> None:
    """Falco's stable rule, unchanged with its whole file: it needs container.privileged, so it was a
    never-fire rule while that was not captured. debugfs in a privileged container fires once the runtime's
    answer is in; not before (unknown), not in an unprivileged container, not on the host."""
    rs = load_text(falco_file("falco_rules.yaml"), "falco_rules.yaml").ruleset
    assert rs is not None
    name = "Debugfs Launched in Privileged Container"
    assert name not in [r.name for r in rs.never_fire]

    def debugfs(ref: ContainerRef | None, fields: dict[str, MetaFields]) -> list[str]:
        proc = in_container(ref)
        proc.comm, proc.exe, proc.args = "debugfs", "/usr/sbin/debugfs", ["debugfs", "/dev/sda1"]
        return [r.name for r in rs.match(with_meta(exec_ctx(proc), fields))]

    assert name in debugfs(DOCKER_A, known())
    assert name not in debugfs(DOCKER_A, {})
    assert name not in debugfs(DOCKER_A, known(dataclasses.replace(WEB, privileged=False)))
    assert name not in debugfs(None, known())


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


def test_a_fixture_carries_the_runtimes_answer_as_sentinel_events_prints_it() -> None:
    """A document rendered with the metadata gives the rule fields back (labels without dots in their keys:
    documents write `.` as `_`); one marked pending gives none."""
    view = MetadataView()
    view.apply(MetaChange(A, "found", WEB))
    renderer = EcsRenderer(HostInfo("h", "m", "b", "6.18", 0))
    renderer.containers = view
    in_pod = dataclasses.replace(DOCKER_A, pod_uid=POD_UID)
    ctx = exec_ctx(in_container(in_pod))
    back = from_ecs(orjson.loads(orjson.dumps(renderer.event_doc(ctx.ev, ctx.proc))))
    rs = ruleset(rule_yaml("evt.type = execve"))
    live = with_meta(ctx, view.fields)
    label = "container.label[com_docker_compose_service]"
    fields = (
        "container.name", "container.image", "container.image.repository", "container.image.tag",
        "container.image.digest", "container.image.id", "container.privileged", "container.host_network",
        "container.host_pid", label, "k8s.pod.name", "k8s.ns.name", "k8s.pod.uid", "k8s.pod.labels",
        "k8s.pod.label[tier]",
    )  # fmt: skip
    for field in fields:
        live_name = "container.label[com.docker.compose.service]" if field == label else field
        want = rs.field_value(live_name, live)
        assert rs.field_value(field, back) == want, field
    pending = from_ecs(doc(container={"id": A}, sentinel={"container": {"metadata": "pending"}}))
    assert rs.field_value("container.name", pending) is None


def test_a_fixture_with_a_bad_container_block_is_refused() -> None:
    with pytest.raises(FixtureError):
        from_ecs(doc(container="docker"))
    with pytest.raises(FixtureError):
        from_ecs(doc(container={"id": [A]}))
    with pytest.raises(FixtureError, match="privileged must be true or false"):
        from_ecs(doc(container={"id": A, "security_context": {"privileged": "yes"}}))
    with pytest.raises(FixtureError, match=r"orchestrator\.resource\.label"):
        from_ecs(doc(container={"id": A}, orchestrator={"resource": {"name": "p", "label": "a:b"}}))
