"""The default container rules, and Falco's own, on real podman containers and the real kernel.

`sentinel run` with the shipped rules, and a second one with Falco's stable rules loaded unchanged, watch
while commands run in a podman container (`podman exec`): a terminal shell, a package manager, a binary
written below /usr/local/bin, an attempt on a cgroup release_agent, connects to the Kubernetes API server's
in-cluster address (given to the container's network namespace, a listener behind it). Each alert names the
container (the whole id and the runtime, as ECS has them); the same commands on the host raise none of the
container rules. Needs root, podman and the base image (scripts/setup.sh, scripts/container-image.sh).
Never skips.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from .conftest import get
from .podman import Container, running_container
from .test_detection import Detector
from .test_falco_stable_rules import FALCO_RULES

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def watched(podman_image: str) -> Iterator[tuple[Detector, Detector, Container]]:
    if not FALCO_RULES.is_file():
        pytest.fail(f"Falco's rules are missing: {FALCO_RULES} (shared/ is laid beside the repo in CI)")
    ours = Detector()
    falco = Detector(("--rules", str(FALCO_RULES), "--format", "falco", "--model", "off"))
    try:
        with running_container(podman_image) as c:
            yield ours, falco, c
    finally:
        assert ours.stop() == 0 and falco.stop() == 0
        assert not ours.bad and not falco.bad


def in_container(alert: dict[str, Any], c: Container) -> bool:
    return get(alert, "container.id") == c.id


def wait_falco(falco: Detector, rule: str, c: Container, timeout: float = 15.0) -> dict[str, Any]:
    """A Falco-format alert (``rule``, ``output_fields``) of ``rule`` for container ``c``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in list(falco.alerts):
            if a.get("rule") == rule and (a.get("output_fields") or {}).get("container.id") == c.short_id:
                return a
        time.sleep(0.05)
    seen = sorted({a.get("rule") for a in falco.alerts})
    pytest.fail(f"no Falco {rule!r} alert within {timeout}s; rules seen: {seen}")


def check_container(alert: dict[str, Any], c: Container) -> None:
    assert get(alert, "container.id") == c.id
    assert get(alert, "container.runtime") == "podman"
    assert get(alert, "sentinel.container.short_id") == c.short_id


def test_terminal_shell_in_a_container(watched: tuple[Detector, Detector, Container]) -> None:
    ours, falco, c = watched
    subprocess.run(["podman", "exec", "-t", c.id, "bash", "-c", "exit 0"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=60)  # fmt: skip
    alert = ours.wait_alert("Terminal Shell In Container", lambda a: in_container(a, c))
    check_container(alert, c)
    assert get(alert, "process.name") == "bash"
    # Falco's own rule, on the same behaviour: its container macro and container_entrypoint hold here too.
    found = wait_falco(falco, "Terminal shell in container", c)
    assert found["priority"] == "Notice"


def test_package_manager_in_a_container(watched: tuple[Detector, Detector, Container]) -> None:
    ours, _falco, c = watched
    c.exec("apt-get", "--version")
    alert = ours.wait_alert("Package Manager Run In Container", lambda a: in_container(a, c))
    check_container(alert, c)
    assert get(alert, "process.executable") == "/usr/bin/apt-get"


def test_binary_written_in_a_container(watched: tuple[Detector, Detector, Container]) -> None:
    ours, _falco, c = watched
    c.exec("cp", "/bin/true", "/usr/local/bin/planted")
    alert = ours.wait_alert(
        "Binary Directory Written In Container",
        lambda a: in_container(a, c) and get(a, "file.path") == "/usr/local/bin/planted",
    )
    check_container(alert, c)


def test_release_agent_attempt_from_a_container(watched: tuple[Detector, Detector, Container]) -> None:
    """An unprivileged container sees the v1 hierarchies read-only: the open fails (EROFS), the attempt is
    what the rule reports."""
    ours, _falco, c = watched
    c.exec("sh", "-c", "echo /x > /sys/fs/cgroup/cpu/release_agent", check=False)
    alert = ours.wait_alert(
        "Cgroup Release Agent Written From Container",
        lambda a: in_container(a, c) and get(a, "file.path") == "/sys/fs/cgroup/cpu/release_agent",
    )
    check_container(alert, c)
    assert get(alert, "event.outcome") == "failure"


# A listener on the API server's in-cluster address (and the API server's own port), run by a host process in
# a network namespace: the container's, or a fresh one for the host case. Each accepted connection is closed.
LISTENER = """
import socket, sys
socks = []
for host, port in ((sys.argv[1], 443), ("127.0.0.1", 6443)):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    socks.append(s)
print("ready", flush=True)
import select
while True:
    for s in select.select(socks, [], [])[0]:
        s.accept()[0].close()
"""
API_ADDRESS = "10.96.0.1"  # the default service address of a kubeadm cluster's `kubernetes` service


@contextmanager
def api_listener(netns_of: int) -> Iterator[None]:
    """The address on the loopback of ``netns_of``'s network namespace and a listener on it (port 443, and
    6443 on 127.0.0.1)."""
    enter = ["nsenter", "-t", str(netns_of), "-n"]
    subprocess.run([*enter, "ip", "addr", "replace", f"{API_ADDRESS}/32", "dev", "lo"], check=True)
    proc = subprocess.Popen([*enter, "python3", "-c", LISTENER, API_ADDRESS], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        yield
    finally:
        proc.kill()
        proc.wait()


def test_kubernetes_api_server_contacted_from_a_container(
    watched: tuple[Detector, Detector, Container],
) -> None:
    """A connect from the container to the in-cluster API address on 443, and to 6443 anywhere; bash's
    /dev/tcp and perl are what an intruder without tools has."""
    ours, _falco, c = watched
    # Two programs: repeats of one behaviour (rule, program, parent, user, image) fold into a later summary.
    perl = "IO::Socket::INET->new(PeerAddr => '127.0.0.1:6443') or exit 1"
    with api_listener(c.pid):
        c.exec("bash", "-c", f"exec 3<>/dev/tcp/{API_ADDRESS}/443")
        c.exec("perl", "-MIO::Socket::INET", "-e", perl)
    rule = "Kubernetes API Server Contacted From Container"
    for address, port, exe in ((API_ADDRESS, 443, "bash"), ("127.0.0.1", 6443, "perl")):
        alert = ours.wait_alert(
            rule,
            lambda a, address=address, port=port: in_container(a, c)
            and get(a, "destination.ip") == address
            and get(a, "destination.port") == port,
        )
        check_container(alert, c)
        assert get(alert, "process.executable").rsplit("/", 1)[-1].startswith(exe)


def test_the_same_commands_on_the_host_raise_no_container_rule(
    watched: tuple[Detector, Detector, Container],
) -> None:
    ours, _falco, _c = watched
    subprocess.run(["apt-get", "--version"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["script", "-qec", "bash -c 'exit 0'", "/dev/null"], check=True, stdout=subprocess.DEVNULL)
    # The API server's address from a host process (in a network namespace of its own, its cgroup the host's).
    api = subprocess.Popen(["unshare", "-n", "sleep", "30"])
    try:
        time.sleep(0.2)
        subprocess.run(["nsenter", "-t", str(api.pid), "-n", "ip", "link", "set", "lo", "up"], check=True)
        with api_listener(api.pid):
            subprocess.run(
                ["nsenter", "-t", str(api.pid), "-n", "bash", "-c", f"exec 3<>/dev/tcp/{API_ADDRESS}/443"],
                check=True,
            )
    finally:
        api.kill()
        api.wait()
    time.sleep(3.0)  # the agent's poll interval is 50 ms: their alerts, if any, are written by now
    container_rules = {
        "Terminal Shell In Container",
        "Package Manager Run In Container",
        "Binary Directory Written In Container",
        "Cgroup Release Agent Written From Container",
        "Kubernetes API Server Contacted From Container",
    }
    for a in ours.alerts:
        if get(a, "rule.name") in container_rules:
            assert get(a, "container.id"), f"a container rule fired on the host: {a}"
