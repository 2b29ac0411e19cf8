"""Real podman containers for the kernel tests: the base image, containers, pods and podman's API socket.

Nothing here skips: without root, podman or the image, the test fails and says why (a green run that
started no container would hide a broken container path). Every container carries the label
``sentinel.test.pid=<pid of the pytest process>``; whatever a killed session left behind is removed at the
next session's start, and nothing a live session owns is touched.

The image is ``localhost/sentinel-test-base:bookworm``, built once by ``scripts/container-image.sh`` (no
registry is reachable from the test hosts). It is a Debian minbase: coreutils, bash, dash, no procps.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE_SCRIPT = REPO / "scripts" / "container-image.sh"
IMAGE = "localhost/sentinel-test-base:bookworm"
LABEL = "sentinel.test"  # on everything the tests start: `podman ps -a --filter label=sentinel.test`
OWNER_LABEL = "sentinel.test.pid"  # the pytest process that started it
HEX64 = re.compile(r"[0-9a-f]{64}")
PODMAN_TIMEOUT = 60.0  # a podman command that takes longer than this is stuck (locks, a dead runtime)
IMAGE_TIMEOUT = 600.0  # debootstrap is about 30 s from a mirror; a slow one gets room


@dataclass(frozen=True, slots=True)
class Bind:
    """A bind mount of a host path into the container (``--mount type=bind``)."""

    source: str
    target: str
    readonly: bool = True

    def arg(self) -> str:
        for path in (self.source, self.target):
            if "," in path or "=" in path:  # --mount's own separators
                raise ValueError(f"bind mount path {path!r} holds ',' or '='")
        return f"type=bind,source={self.source},target={self.target}" + (
            ",readonly=true" if self.readonly else ""
        )


@dataclass(frozen=True, slots=True)
class Container:
    """A running container, as podman reports it after the start."""

    id: str  # the full 64-hex id
    name: str
    image: str  # the image name given to `podman run`
    pid: int  # the host pid of the container's init
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def exec(
        self, *argv: str, check: bool = True, timeout: float = PODMAN_TIMEOUT, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``podman exec`` a command in the container; fails the test when it fails and ``check`` is set."""
        return podman(
            "exec",
            *(("-i",) if input is not None else ()),
            self.id,
            *argv,
            check=check,
            timeout=timeout,
            input=input,
        )

    def inspect(self) -> dict[str, Any]:
        """``podman inspect`` of the container now (podman's own shape, not the Docker API's)."""
        return _inspect(self.id)


@dataclass(frozen=True, slots=True)
class Pod:
    id: str
    name: str
    infra_id: str


def podman(
    *args: str, check: bool = True, timeout: float = PODMAN_TIMEOUT, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run podman; with ``check``, a failure fails the test with podman's own words."""
    exe = shutil.which("podman")
    if exe is None:
        pytest.fail("podman is not installed: run scripts/setup.sh (as root)")
    try:
        done = subprocess.run(
            [exe, *args],
            capture_output=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"podman {' '.join(args)} did not finish within {timeout:.0f}s")
    if check and done.returncode != 0:
        pytest.fail(
            f"podman {' '.join(args)} exited {done.returncode}: {_text(done.stderr)}{_hint(done.stderr)}"
        )
    return done


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def _hint(stderr: bytes) -> str:
    """What a known failure means on these hosts."""
    if b"error setting rlimit" in stderr:
        return " (podman's default rlimits exceed what root may set here: scripts/setup.sh writes a drop-in)"
    if b"not found" in stderr and b"runtime" in stderr:
        return " (scripts/setup.sh installs runc and makes it podman's runtime)"
    return ""


def _inspect(ref: str) -> dict[str, Any]:
    out = podman("inspect", "--type", "container", ref).stdout
    docs = json.loads(out)
    if not isinstance(docs, list) or len(docs) != 1:
        pytest.fail(f"podman inspect {ref}: expected one document, got {out[:200]!r}")
    doc: dict[str, Any] = docs[0]
    return doc


def require_podman() -> None:
    if os.geteuid() != 0:
        pytest.fail("container tests need root (rootful podman): run the suite with scripts/run-tests.sh")
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run scripts/setup.sh (as root)")


def ensure_image() -> str:
    """The base image's name, built by scripts/container-image.sh when it does not exist yet."""
    require_podman()
    try:
        done = subprocess.run(
            ["bash", str(IMAGE_SCRIPT)],
            capture_output=True,
            timeout=IMAGE_TIMEOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "SENTINEL_TEST_IMAGE": IMAGE},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{IMAGE_SCRIPT.name} did not finish within {IMAGE_TIMEOUT:.0f}s")
    if done.returncode != 0:
        pytest.fail(f"{IMAGE_SCRIPT.name} could not build {IMAGE}:\n{_text(done.stderr)[-3000:]}")
    return IMAGE


def remove_leftovers() -> list[str]:
    """Remove the containers and pods of test sessions that are gone (killed before their cleanup ran)."""
    removed: list[str] = []
    for kind in ("container", "pod"):
        cmd = ("ps", "-a") if kind == "container" else ("pod", "ps")
        out = podman(*cmd, "--filter", f"label={OWNER_LABEL}", "--format", "{{.ID}} {{.Labels}}").stdout
        for line in _text(out).splitlines():
            ref, _, labels = line.partition(" ")
            owner = re.search(rf"{re.escape(OWNER_LABEL)}:(\d+)", labels)
            if owner and not _alive(int(owner[1])):
                rm = ("rm", "-f", "-t", "0") if kind == "container" else ("pod", "rm", "-f", "-t", "0")
                podman(*rm, ref, check=False)
                removed.append(ref)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def podman_image() -> str:
    """The base image (built on first use, ~40 s; cached in podman's store after that)."""
    image = ensure_image()
    remove_leftovers()
    return image


def unique_name(prefix: str = "sentinel-test") -> str:
    """A container or pod name no other session uses."""
    return f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}"


def start_container(
    image: str = IMAGE,
    *,
    name: str | None = None,
    labels: dict[str, str] | None = None,
    privileged: bool = False,
    network: str | None = None,
    pid: str | None = None,
    binds: Sequence[Bind] = (),
    pod: str | None = None,
    extra_args: Sequence[str] = (),
    command: Sequence[str] = ("sleep", "infinity"),
) -> Container:
    """``podman run -d``; the caller removes it (:func:`remove_container`). Prefer :func:`running_container`.

    ``network`` and ``pid`` are podman's modes (``"host"``); ``extra_args`` go before the image.
    """
    name = name or unique_name()
    all_labels = {LABEL: "1", OWNER_LABEL: str(os.getpid()), **(labels or {})}
    args = ["run", "-d", "--name", name]
    for key, value in all_labels.items():
        args += ["--label", f"{key}={value}"]
    if privileged:
        args.append("--privileged")
    if network is not None:
        args += ["--network", network]
    if pid is not None:
        args += ["--pid", pid]
    if pod is not None:
        args += ["--pod", pod]
    for bind in binds:
        args += ["--mount", bind.arg()]
    args += [*extra_args, image, *command]
    done = podman(*args, check=False)
    if done.returncode != 0:
        podman("rm", "-f", "-t", "0", "--ignore", name, check=False)  # a container created but not started
        pytest.fail(f"podman run {name} exited {done.returncode}: {_text(done.stderr)}{_hint(done.stderr)}")
    full_id = _text(done.stdout).splitlines()[-1] if done.stdout.strip() else ""
    try:
        doc = _inspect(name)
        state = doc.get("State") or {}
        container = Container(
            id=doc["Id"],
            name=doc["Name"],
            image=doc.get("ImageName") or (doc.get("Config") or {}).get("Image", ""),
            pid=int(state.get("Pid") or 0),
            labels=dict((doc.get("Config") or {}).get("Labels") or {}),
        )
        if not HEX64.fullmatch(container.id) or container.id != full_id:
            pytest.fail(f"podman run printed {full_id!r}, inspect says {container.id!r}")
        if not state.get("Running") or container.pid <= 0:
            logs = _text(podman("logs", name, check=False).stderr)
            pytest.fail(f"container {name} is not running (state {state.get('Status')!r}): {logs[-1000:]}")
    except BaseException:
        remove_container(name)
        raise
    return container


def remove_container(ref: str) -> None:
    """``podman rm -f -t 0`` (``sleep`` as PID 1 ignores SIGTERM: no stop timeout to wait out)."""
    podman("rm", "-f", "-t", "0", "--ignore", ref, check=False)


@contextmanager
def running_container(image: str = IMAGE, **kwargs: Any) -> Iterator[Container]:
    """A container for the ``with`` block, removed afterwards whatever happened (see start_container)."""
    container = start_container(image, **kwargs)
    try:
        yield container
    finally:
        remove_container(container.id)


@contextmanager
def running_pod(name: str | None = None) -> Iterator[Pod]:
    """A pod (its infra container runs catatonit from podman's locally built pause image); start
    containers in it with ``running_container(pod=pod.name)``. Removed with its containers afterwards."""
    name = name or unique_name("sentinel-test-pod")
    cgroup_path = ""
    pod_id = _text(
        podman(
            "pod",
            "create",
            "--name",
            name,
            "--label",
            f"{LABEL}=1",
            "--label",
            f"{OWNER_LABEL}={os.getpid()}",
        ).stdout
    )
    try:
        podman("pod", "start", name)
        fields = _text(
            podman("pod", "inspect", name, "--format", "{{.InfraContainerID}} {{.CgroupPath}}").stdout
        )
        infra, _, cgroup_path = fields.partition(" ")
        yield Pod(pod_id, name, infra)
    finally:
        podman("pod", "rm", "-f", "-t", "0", "--ignore", name, check=False)
        if cgroup_path:
            remove_empty_cgroup(cgroup_path)


def remove_empty_cgroup(path: str) -> None:
    """rmdir ``path`` on every cgroup hierarchy where it is left: podman 4.3 with cgroupfs on a hybrid host
    removes a pod's v1 controller directories but leaves the unified and name=systemd ones."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f if line.split()[2:3] in (["cgroup"], ["cgroup2"])]
    except OSError:
        return
    for mount_point in mounts:
        try:
            os.rmdir(mount_point.rstrip("/") + path)
        except OSError:
            continue  # not there, or not empty: never forced


def host_pid_of_exec(container: Container, argv: Sequence[str], timeout: float = 10.0) -> int:
    """Start ``argv`` detached in the container and return its host pid (found by its cmdline below
    the container's init pid namespace: podman exec's processes are not children of the init)."""
    before = set(_pids_in_ns_of(container.pid))
    podman("exec", "-d", container.id, *argv)
    deadline = time.monotonic() + timeout
    want = "\0".join(argv).encode()
    while time.monotonic() < deadline:
        for pid in set(_pids_in_ns_of(container.pid)) - before:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().rstrip(b"\0") == want:
                        return pid
            except OSError:
                continue
        time.sleep(0.02)
    pytest.fail(f"no process {list(argv)} appeared in container {container.name} within {timeout}s")


def _pids_in_ns_of(pid: int) -> Iterator[int]:
    """Host pids in the pid namespace of ``pid`` (for a ``--pid host`` container: every process)."""
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/ns/pid") == ns:
                    yield int(entry.name)
            except OSError:
                continue


# --- podman's Docker-compatible API ------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the Docker Engine API's transport)."""

    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def api_request(socket_path: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """One request on the API socket: (status, body)."""
    conn = UnixHTTPConnection(socket_path)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api_get(socket_path: str, path: str) -> tuple[int, Any]:
    """GET ``path`` on the API socket: (status, decoded JSON body)."""
    status, body = api_request(socket_path, path)
    return status, json.loads(body or b"null")


@contextmanager
def podman_service(socket_path: str, timeout: float = 15.0) -> Iterator[str]:
    """``podman system service --time=0`` on ``socket_path`` for the ``with`` block (the socket's path)."""
    require_podman()
    exe = shutil.which("podman")
    assert exe is not None
    proc = subprocess.Popen(
        [exe, "system", "service", "--time=0", f"unix://{socket_path}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = _text(proc.stderr.read() if proc.stderr else b"")
                pytest.fail(f"podman system service exited {proc.returncode}: {err}")
            try:
                if api_request(socket_path, "/_ping")[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"podman system service did not answer on {socket_path} within {timeout}s")
            time.sleep(0.05)
        yield socket_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
