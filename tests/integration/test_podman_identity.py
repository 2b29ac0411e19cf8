"""Container identity of real podman containers on this host.

One container per module (plus one privileged host-namespace container and one pod, each for one test).
A probe on ``sched_process_exec`` records ``bpf_get_current_cgroup_id()`` for a marker binary run once on
the host and once in the container; the ids must resolve (``CgroupResolver``, falling back to
``/proc/PID/cgroup`` where the id names no container) to podman's own id for the container and to the host
for the host. What podman does here (cgroup paths, namespaces, the API's fields) is in docs/containers.md,
"What podman does on this host".

Needs root, podman and the base image (scripts/setup.sh, scripts/container-image.sh). Never skips.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel.containers import (
    Cgroup2Mount,
    CgroupResolver,
    ContainerRef,
    container_from_cgroup,
    container_from_proc_cgroup,
    falco_fields,
    find_cgroup2_mount,
    parse_proc_cgroup,
    read_proc_cgroup,
)

from .podman import (
    HEX64,
    IMAGE,
    OWNER_LABEL,
    Bind,
    Container,
    api_get,
    host_pid_of_exec,
    podman,
    podman_service,
    running_container,
    running_pod,
)

pytestmark = pytest.mark.kernel

# The comm of the marker binary (a copy of /bin/true): 13 characters, below the kernel's 15.
MARK = "snt" + secrets.token_hex(5)
BIND_TARGET = "/mnt/sentinel"


def podman_ref(container: Container) -> ContainerRef:
    return ContainerRef("podman", container.id, container.id[:12])


def identify(resolver: CgroupResolver, cgroup_id: int, pid: int) -> ContainerRef | None:
    """The agent's order: the BPF id's cgroup when it names a container, else /proc/PID/cgroup."""
    info = resolver.resolve(cgroup_id)
    if info is not None and info.container is not None:
        return info.container
    text = read_proc_cgroup(pid)
    return container_from_proc_cgroup(text) if text is not None else None


def v2_path(pid: int) -> str:
    text = read_proc_cgroup(pid)
    assert text is not None, f"pid {pid} is gone"
    lines = [line for line in parse_proc_cgroup(text) if line.unified]
    assert len(lines) == 1, text
    return lines[0].path


def v2_inode(mount: Cgroup2Mount, pid: int) -> int:
    """The inode of the process's v2 cgroup directory: what bpf_get_current_cgroup_id() returns for it."""
    return os.stat(mount.mount_point.rstrip("/") + v2_path(pid)).st_ino


@pytest.fixture(scope="module")
def mount() -> Cgroup2Mount:
    found = find_cgroup2_mount()
    if found is None or found.root != "/":
        pytest.fail(f"these tests need the whole cgroup2 hierarchy mounted (found {found})")
    return found


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the marker binary; bind-mounted read-only into the module's container."""
    directory = tmp_path_factory.mktemp("podman-marker")
    true = shutil.which("true")
    assert true is not None
    shutil.copy(true, directory / MARK)
    return directory


@pytest.fixture(scope="module")
def container(podman_image: str, marker: Path) -> Iterator[Container]:
    binds = [Bind(str(marker), BIND_TARGET)]
    with running_container(podman_image, labels={"app": "sentinel-identity"}, binds=binds) as c:
        yield c


@dataclass(frozen=True)
class Execs:
    host_pid: int
    host_cgroup_id: int
    container_pid: int
    container_cgroup_id: int


def bpf_program() -> str:
    same = " && ".join(f"c[{i}] == '{ch}'" for i, ch in enumerate(MARK))
    return f"""
BPF_HASH(ids, u32, u64, 64);
TRACEPOINT_PROBE(sched, sched_process_exec) {{
    char c[16] = {{}};
    bpf_get_current_comm(&c, sizeof(c));
    if (!({same} && c[{len(MARK)}] == 0))
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 id = bpf_get_current_cgroup_id();
    ids.update(&tgid, &id);
    return 0;
}}
"""


@pytest.fixture(scope="module")
def execs(container: Container, marker: Path) -> Execs:
    """The marker run on the host and in the container, with the cgroup ids a probe read at their exec."""
    try:
        from bcc import BPF
    except ImportError as exc:
        pytest.fail(f"cannot import bcc ({exc}): use the project venv (system site packages)")
    bpf = BPF(text=bpf_program().encode())
    try:
        host = subprocess.Popen([str(marker / MARK)])
        assert host.wait(10) == 0
        container.exec(f"{BIND_TARGET}/{MARK}")
        ids = {k.value: v.value for k, v in bpf[b"ids"].items()}
    finally:
        bpf.cleanup()
    inside = [(pid, cgroup_id) for pid, cgroup_id in ids.items() if pid != host.pid]
    assert host.pid in ids and len(inside) == 1, f"expected one exec on the host, one in the container: {ids}"
    return Execs(host.pid, ids[host.pid], *inside[0])


def test_podman_reports_the_container(container: Container) -> None:
    assert HEX64.fullmatch(container.id)
    assert container.short_id == container.id[:12]
    assert container.image == IMAGE
    assert container.labels["app"] == "sentinel-identity"
    assert container.labels[OWNER_LABEL] == str(os.getpid())
    assert os.path.exists(f"/proc/{container.pid}")
    listed = podman("ps", "--filter", f"id={container.id}", "--format", "{{.ID}} {{.Names}}").stdout.split()
    assert listed == [container.short_id.encode(), container.name.encode()]


def test_init_has_its_own_pid_namespace(container: Container) -> None:
    """Host pid in /proc/PID/status's NSpid first, the in-container pid (1 for the init) last."""
    assert os.readlink(f"/proc/{container.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    with open(f"/proc/{container.pid}/status") as f:
        nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
    assert nspid == [str(container.pid), "1"]
    inside = container.exec("cat", "/proc/1/status").stdout.decode()
    assert next(line.split()[1:] for line in inside.splitlines() if line.startswith("NSpid:")) == ["1"]


def test_bpf_cgroup_id_is_the_container_cgroup(
    mount: Cgroup2Mount, container: Container, execs: Execs
) -> None:
    """The id a probe reads in the container is the inode of the init's v2 cgroup directory."""
    assert execs.container_cgroup_id == v2_inode(mount, container.pid)
    assert execs.host_cgroup_id == v2_inode(mount, os.getpid())  # the marker ran in pytest's cgroup


@pytest.mark.parametrize("walk", [False, True], ids=["handle", "walk"])
def test_resolver_names_the_container(
    mount: Cgroup2Mount, container: Container, execs: Execs, walk: bool
) -> None:
    with CgroupResolver(mount, use_handles=not walk) as res:
        assert res.uses_handles is not walk
        info = res.resolve(execs.container_cgroup_id)
        assert info is not None and info.path == v2_path(container.pid)
        assert identify(res, execs.container_cgroup_id, container.pid) == podman_ref(container)


def test_the_bpf_id_alone_names_the_container(
    mount: Cgroup2Mount, container: Container, execs: Execs
) -> None:
    """On this host (cgroupfs driver, hybrid) runc puts the container in the v2 hierarchy too: the BPF id
    names it without /proc. If this fails while test_resolver_names_the_container passes, the id names no
    container and the agent depends on the /proc fallback: docs/containers.md must say so."""
    with CgroupResolver(mount) as res:
        info = res.resolve(execs.container_cgroup_id)
    assert info is not None and info.container == podman_ref(container)


def test_proc_cgroup_names_the_container(container: Container) -> None:
    """Every line, v1 and v2, names the container (the fallback agrees with the BPF id)."""
    text = read_proc_cgroup(container.pid)
    assert text is not None
    assert container_from_proc_cgroup(text) == podman_ref(container)
    lines = parse_proc_cgroup(text)
    assert any(line.unified for line in lines)
    for line in lines:
        assert container_from_cgroup(line.path) == podman_ref(container), line


def test_exec_joins_the_container(container: Container) -> None:
    """A `podman exec` process is in the container's cgroup and its pid namespace, not conmon's."""
    pid = host_pid_of_exec(container, ["sleep", "3600.25"])
    try:
        assert v2_path(pid) == v2_path(container.pid)
        text = read_proc_cgroup(pid)
        assert text is not None and container_from_proc_cgroup(text) == podman_ref(container)
        assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{container.pid}/ns/pid")
    finally:
        os.kill(pid, signal.SIGKILL)


def test_the_host_is_the_host(mount: Cgroup2Mount, execs: Execs) -> None:
    with CgroupResolver(mount) as res:
        info = res.resolve(execs.host_cgroup_id)
        assert info is not None and info.container is None
        assert identify(res, execs.host_cgroup_id, os.getpid()) is None
    text = read_proc_cgroup(os.getpid())
    assert text is not None and container_from_proc_cgroup(text) is None
    assert falco_fields(None)["container.id"] == "host"


def test_privileged_container_in_host_namespaces(
    mount: Cgroup2Mount, podman_image: str, tmp_path: Path
) -> None:
    """--privileged --network host --pid host with a writable bind mount: still its own cgroup, so still
    named; its init is in the host's pid and net namespaces (NSpid has one pid)."""
    (tmp_path / "in").write_text("from the host\n")
    binds = [Bind(str(tmp_path), "/mnt/host", readonly=False)]
    with running_container(podman_image, privileged=True, network="host", pid="host", binds=binds) as c:
        host_config = c.inspect()["HostConfig"]
        assert (host_config["Privileged"], host_config["NetworkMode"], host_config["PidMode"]) == (
            True,
            "host",
            "host",
        )
        for ns in ("pid", "net"):
            assert os.readlink(f"/proc/{c.pid}/ns/{ns}") == os.readlink(f"/proc/self/ns/{ns}"), ns
        with open(f"/proc/{c.pid}/status") as f:
            assert next(line.split()[1:] for line in f if line.startswith("NSpid:")) == [str(c.pid)]
        assert c.exec("cat", "/mnt/host/in").stdout == b"from the host\n"
        c.exec("sh", "-c", "echo from the container > /mnt/host/out")
        assert (tmp_path / "out").read_text() == "from the container\n"
        with CgroupResolver(mount) as res:
            assert identify(res, v2_inode(mount, c.pid), c.pid) == podman_ref(c)


def test_pod_containers_are_named_not_the_pod(mount: Cgroup2Mount, podman_image: str) -> None:
    """A pod's containers sit below the pod's own cgroup (named by the pod's 64-hex id): each process is
    its container, the infra container's too; the pod's directory is no container."""
    with running_pod() as pod, running_container(podman_image, pod=pod.name) as app:
        app_path = v2_path(app.pid)
        pod_dir, _, leaf = app_path.rpartition("/")
        assert leaf.startswith(f"libpod-{app.id}") and pod.id in pod_dir, app_path
        infra_pid = int(podman("inspect", "--format", "{{.State.Pid}}", pod.infra_id).stdout)
        assert v2_path(infra_pid).rpartition("/")[0] == pod_dir
        with CgroupResolver(mount) as res:
            assert identify(res, v2_inode(mount, app.pid), app.pid) == podman_ref(app)
            infra = res.resolve(v2_inode(mount, infra_pid))
            assert infra is not None and infra.container == ContainerRef(
                "podman", pod.infra_id, pod.infra_id[:12]
            )
            pod_info = res.resolve(os.stat(mount.mount_point.rstrip("/") + pod_dir).st_ino)
            assert pod_info is not None and pod_info.container is None
    # podman leaves the pod's unified and name=systemd directories; running_pod removes them
    assert not os.path.exists(mount.mount_point.rstrip("/") + pod_dir)


def test_docker_api_fields(container: Container, podman_image: str, tmp_path: Path) -> None:
    """What a Docker-API client reads from podman's socket: the fields docs/containers.md lists."""
    with podman_service(str(tmp_path / "podman.sock")) as sock:
        status, doc = api_get(sock, f"/v1.41/containers/{container.id}/json")
        assert status == 200, doc
        assert doc["Id"] == container.id
        assert doc["Name"] == "/" + container.name  # the Docker API's leading slash
        assert doc["Config"]["Image"] == podman_image
        assert doc["Image"].startswith("sha256:") and HEX64.fullmatch(doc["Image"][7:])
        assert doc["Config"]["Labels"]["app"] == "sentinel-identity"
        host_config = doc["HostConfig"]
        assert host_config["Privileged"] is False
        assert host_config["NetworkMode"] == "bridge"
        assert host_config["PidMode"] == "private"  # Docker writes "" for the same thing
        assert doc["State"]["Pid"] == container.pid
        assert doc["Mounts"][0]["Destination"] == BIND_TARGET
        assert api_get(sock, f"/v1.41/containers/{container.short_id}/json")[1]["Id"] == container.id
        status, image = api_get(sock, f"/v1.41/images/{doc['Image']}/json")
        assert status == 200, image
        assert podman_image in image["RepoTags"]
        repo = podman_image.rpartition(":")[0]
        assert any(d.startswith(f"{repo}@sha256:") for d in image["RepoDigests"]), image["RepoDigests"]
        status, missing = api_get(sock, "/v1.41/containers/" + "0" * 64 + "/json")
        assert status == 404 and "no such container" in missing["message"]
