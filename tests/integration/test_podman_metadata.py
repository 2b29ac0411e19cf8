"""Runtime metadata in alerts, on the real kernel with real podman containers.

`sentinel run` with the shipped rules and ``containers: {endpoints: [podman:<socket>]}`` pointing at a
``podman system service`` started for the module. A privileged container with labels runs ``cat
/etc/shadow`` (the shipped "Shadow File Read By Unexpected Program" fires for it): the ECS alert names the
container by its whole id and, once podman has answered, by its name, image (repository and tag), labels
and privileged flag; an alert written before the answer carries the id and ``sentinel.container.metadata:
pending``. The Falco-format copy of the same alerts (a second sink) has the suggested output fields filled.
A host process's alert has no container block.

Needs root, podman and the base image (scripts/setup.sh, scripts/container-image.sh). Never skips.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import get
from .podman import IMAGE, Bind, Container, podman_service, running_container
from .test_detection import Detector

pytestmark = pytest.mark.kernel

RULE = "Shadow File Read By Unexpected Program"
LABELS = {"app": "shop", "io.example.tier": "web"}


@dataclass
class Agent:
    detector: Detector
    socket: str
    falco: Path  # the Falco-format sink's file

    def falco_alerts(self) -> list[dict[str, Any]]:
        if not self.falco.exists():
            return []
        return [orjson.loads(line) for line in self.falco.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def agent(podman_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("meta")
    with podman_service(str(tmp / "podman.sock")) as sock:
        config = tmp / "sentinel.yaml"
        falco = tmp / "falco.json"
        config.write_text(
            "aggregation_window_s: 0\nmodel: 'off'\n"
            f"sinks:\n  - {{kind: stdout}}\n  - {{kind: file, target: {falco}, format: falco}}\n"
            f"containers:\n  endpoints: ['podman:{sock}']\n"
        )
        detector = Detector(("--config", str(config)))
        try:
            yield Agent(detector, sock, falco)
        finally:
            assert detector.stop() == 0
            assert not detector.bad, f"non-JSON alert lines: {detector.bad[:3]}"


def read_shadow(agent: Agent, container: Container, after: int = 0) -> dict[str, Any]:
    """``cat /etc/shadow`` in the container; its alert (one written after ``after`` alerts)."""
    container.exec("cat", "/etc/shadow")
    seen = agent.detector.alerts

    def mine(a: dict[str, Any]) -> bool:
        return get(a, "container.id") == container.id and seen.index(a) >= after

    return agent.detector.wait_alert(RULE, mine, timeout=20)


def test_the_ready_record_names_the_endpoint(agent: Agent) -> None:
    ready = next(d for d in agent.detector.diagnostics if d.get("event") == "sentinel.ready")
    info = ready["containers"]
    assert info["metadata"] is True
    assert info["endpoints"] == [{"endpoint": f"podman:{agent.socket}", "socket": True}]


def test_a_containers_alerts_carry_what_podman_says(agent: Agent, podman_image: str) -> None:
    with running_container(podman_image, labels=LABELS, privileged=True) as c:
        first = read_shadow(agent, c)
        assert first["container"]["id"] == c.id and first["container"]["runtime"] == "podman"
        assert first["sentinel"]["container"]["short_id"] == c.short_id
        if "name" not in first["container"]:  # written before podman answered: said so
            assert first["sentinel"]["container"]["metadata"] == "pending"
        print(f"first alert in the container: {first['sentinel']['container'].get('metadata', 'complete')}")
        time.sleep(1.0)  # the answer takes a few ms; the agent takes it at its next poll
        second = read_shadow(agent, c, after=len(agent.detector.alerts))
        block, extra = second["container"], second["sentinel"]["container"]
        assert block["id"] == c.id and block["name"] == c.name
        repository, _, tag = IMAGE.rpartition(":")
        assert block["image"]["name"] == repository and block["image"]["tag"] == [tag]
        assert block["labels"]["app"] == "shop" and block["labels"]["io_example_tier"] == "web"  # dedotted
        assert block["labels"]["sentinel_test"] == "1"  # the test helper's own label, dedotted too
        assert block["security_context"] == {"privileged": True}
        assert "metadata" not in extra
        assert extra["source"] == f"podman:{agent.socket}" and extra["image"] == podman_image
        assert len(extra["image_id"]) == 64 and extra["host_network"] is False
        assert "orchestrator" not in second  # not a Kubernetes pod
        falco = wait_falco(agent, c, lambda f: f.get("container.name") == c.name)
        assert falco["container.id"] == c.short_id
        assert (falco["container.image.repository"], falco["container.image.tag"]) == (repository, tag)
        assert falco["k8s.pod.name"] is None and falco["k8s.ns.name"] is None


def test_an_unprivileged_container_says_so(agent: Agent, podman_image: str) -> None:
    with running_container(podman_image) as c:
        time.sleep(0.5)  # the container's start already asked podman
        alert = read_shadow(agent, c)
        deadline = time.monotonic() + 10
        while "name" not in alert["container"] and time.monotonic() < deadline:
            time.sleep(0.5)
            alert = read_shadow(agent, c, after=len(agent.detector.alerts))
        assert alert["container"]["name"] == c.name
        assert alert["container"]["security_context"] == {"privileged": False}


SENSITIVE = "Sensitive Host Path Mounted In Container"


def test_a_container_started_with_the_hosts_etc_mounted(agent: Agent, podman_image: str) -> None:
    """The host's /etc bind-mounted: once podman has answered, the `container` event carries the mounts and
    the shipped rule fires for it, naming the container's first process (pid 1 inside); a container without
    such a mount raises nothing (its own alert shows podman answered for it)."""
    with running_container(podman_image, binds=[Bind("/etc", "/host-etc")]) as c:
        alert = agent.detector.wait_alert(SENSITIVE, lambda a: get(a, "container.id") == c.id, timeout=20)
    assert get(alert, "event.action") == "container"
    assert get(alert, "container.name") == c.name
    mount = {"source": "/etc", "destination": "/host-etc", "rw": False}
    mounts = get(alert, "sentinel.container.mounts")
    assert any(mount.items() <= m.items() for m in mounts), mounts
    assert get(alert, "process.pid") == c.pid and get(alert, "process.vpid") == 1
    assert "/etc:/host-etc:" in alert["message"]
    with running_container(podman_image) as plain:
        alert = read_shadow(agent, plain)
        deadline = time.monotonic() + 10
        while "name" not in alert["container"] and time.monotonic() < deadline:  # until podman answered
            time.sleep(0.5)
            alert = read_shadow(agent, plain, after=len(agent.detector.alerts))
        assert alert["container"]["name"] == plain.name
        time.sleep(1.0)
    assert not [a for a in agent.detector.alerts if get(a, "rule.name") == SENSITIVE
                and get(a, "container.id") == plain.id]  # fmt: skip


def test_a_host_process_alert_has_no_container_block(agent: Agent, tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    shutil.copy("/bin/cat", cat)
    subprocess.run([str(cat), "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
    alert = agent.detector.wait_alert(RULE, lambda a: get(a, "process.executable") == str(cat))
    assert "container" not in alert and "orchestrator" not in alert
    assert "container" not in alert["sentinel"]
    falco = wait_falco(agent, None, lambda f: f.get("proc.exepath") == str(cat))
    assert (falco["container.id"], falco["container.name"]) == ("host", "host")
    assert falco["container.image.repository"] == ""  # Falco's host: empty image fields


@contextmanager
def hung_runtime(path: str) -> Iterator[str]:
    """A unix socket that accepts connections and never answers: a hung daemon."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        server.close()


def test_alerts_never_wait_for_a_hung_runtime(podman_image: str, tmp_path: Path) -> None:
    """The runtime does not answer: the container's alerts come at once, marked pending while the lookup
    waits (2 s), then unavailable; the whole id is always there."""
    with hung_runtime(str(tmp_path / "hung.sock")) as sock:
        config = tmp_path / "sentinel.yaml"
        endpoints = f"containers: {{endpoints: ['podman:{sock}']}}\n"
        config.write_text(f"aggregation_window_s: 0\nmodel: 'off'\n{endpoints}")
        detector = Detector(("--config", str(config)))
        agent = Agent(detector, sock, tmp_path / "none.json")
        try:
            with running_container(podman_image) as c:
                started = time.monotonic()
                first = read_shadow(agent, c)
                assert time.monotonic() - started < 2.0, "the alert waited for the runtime"
                assert first["container"] == {"id": c.id, "runtime": "podman"}
                assert first["sentinel"]["container"]["metadata"] == "pending"
                time.sleep(2.5)  # the lookup's deadline passes: no runtime could say
                later = read_shadow(agent, c, after=len(detector.alerts))
                assert later["container"] == {"id": c.id, "runtime": "podman"}
                assert later["sentinel"]["container"]["metadata"] == "unavailable"
        finally:
            assert detector.stop() == 0
        stopped = next(d for d in detector.diagnostics if d.get("event") == "sentinel.stopped")
        service = stopped["container_metadata"]["service"]
        assert service["failed"] >= 1 and service["sources"][f"podman:{sock}"]["timeouts"] >= 1
        event = "sentinel.container_runtime_unavailable"
        warned = [d for d in detector.diagnostics if d.get("event") == event]
        assert warned and warned[0]["source"] == f"podman:{sock}"


def wait_falco(agent: Agent, container: Container | None, pred: Any, timeout: float = 15.0) -> dict[str, Any]:
    """The output fields of a Falco-format alert of the rule, in ``container`` (None: the host)."""
    want = container.short_id if container is not None else "host"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for alert in agent.falco_alerts():
            fields = alert.get("output_fields") or {}
            if alert.get("rule") == RULE and fields.get("container.id") == want and pred(fields):
                return dict(fields)
        time.sleep(0.1)
    pytest.fail(f"no Falco-format {RULE!r} alert for {want} within {timeout}s")


def test_the_host_model_learns_a_containers_programs_per_image(podman_image: str, tmp_path: Path) -> None:
    """`sentinel run --model auto` (learning) with podman answering: once the answer is in, what runs in the
    container is counted under its image (`[<repository>] <program>`), what runs on the host under its plain
    path; the profiles the agent saves at shutdown say so."""
    from sentinel.anomaly.profiles import HOST
    from sentinel.anomaly.state import HostState

    state_dir = tmp_path / "state"
    with podman_service(str(tmp_path / "podman.sock")) as sock:
        config = tmp_path / "sentinel.yaml"
        config.write_text(f"aggregation_window_s: 0\ncontainers:\n  endpoints: ['podman:{sock}']\n")
        detector = Detector(("--config", str(config), "--model", "auto", "--state-dir", str(state_dir)))
        try:
            with running_container(podman_image) as c:
                alert = None
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:  # until podman's answer names the image
                    c.exec("cat", "/etc/shadow")
                    time.sleep(0.5)
                    named = [a for a in detector.alerts if get(a, "container.id") == c.id
                             and get(a, "container.image.name")]  # fmt: skip
                    if named:
                        alert = named[-1]
                        break
                assert alert is not None, "podman never answered for the container"
                for _ in range(3):
                    c.exec("ls", "/")
                subprocess.run(["ls", "/"], check=True, stdout=subprocess.DEVNULL)
                time.sleep(1.0)
        finally:
            assert detector.stop() == 0
    image = get(alert, "container.image.name")
    profiles, problem = HostState(state_dir).load_profiles()
    assert problem is None and profiles is not None
    exe = profiles.tables["exe"]
    ls_in_image = f"[{image}] /usr/bin/ls"
    assert exe.count(HOST, ls_in_image) > 0, ls_in_image
    assert exe.count(HOST, "/usr/bin/ls") > 0  # the host's own ls
