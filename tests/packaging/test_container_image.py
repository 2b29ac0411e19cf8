"""The container image (packaging/container/Containerfile, the .deb inside) run by podman with the DaemonSet's
privileges only: host PID, the host's tracefs, BTF, modules and headers read-only, five capabilities, the
derived seccomp profile, a read-only root file system. A host process's behaviour raises a default rule's
alert in the container's output, and /healthz answers as the Kubernetes probes ask it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.podman import Bind, ensure_image, podman, remove_leftovers, running_container

from .steps import REPO, run

pytestmark = [pytest.mark.kernel, pytest.mark.packaging]

# Each proven necessary by dropping it (docs/packaging.md): without BPF or PERFMON no alert arrives,
# without IPC_LOCK the perf buffers cannot be mapped ("mmap: Operation not permitted").
CAPS = ("BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "IPC_LOCK")
HOST_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/btf", "/lib/modules", "/usr/src")
READY_TIMEOUT = 180.0  # clang compiles the probes inside the container, on a shared 2-CPU host
ALERT_TIMEOUT = 30.0
RULE = "Shadow File Read By Unexpected Program"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ensure_image()
    remove_leftovers()
    out = tmp_path_factory.mktemp("image")
    deb = run(["bash", REPO / "packaging" / "build-deb.sh", "--no-train", "--out", out], timeout=600,
              env={"SENTINEL_DEB_COMPRESS": "gzip"}).stdout.strip().splitlines()[-1]  # fmt: skip
    tag = f"localhost/sentinel:pkgtest-{int(time.time())}"
    build = REPO / "packaging" / "container" / "build-image.sh"
    run(["bash", build, "--deb", deb, "--tag", tag], timeout=900)
    yield tag
    podman("rmi", "-f", tag, check=False)


def docs(container_id: str) -> list[dict]:
    out = podman("logs", container_id, check=False, timeout=30)
    found = []
    for line in (out.stdout + out.stderr).splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def wait_for(container_id: str, pred, timeout: float, what: str) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in docs(container_id):
            if pred(d):
                return d
        time.sleep(1.0)
    tail = "\n".join(json.dumps(d)[:300] for d in docs(container_id)[-15:])
    pytest.fail(f"{what} not seen within {timeout:.0f}s; the container's last records:\n{tail}")


def test_host_process_alerts_in_the_least_privileged_container(image: str, tmp_path: Path) -> None:
    profile = tmp_path / "seccomp.json"
    profile.write_text(run(["python3", REPO / "packaging" / "container" / "seccomp-profile.py"]).stdout)
    state = tmp_path / "state"
    state.mkdir()
    extra = ["--cap-drop=all", *(f"--cap-add={c}" for c in CAPS), f"--security-opt=seccomp={profile}",
             "--security-opt=no-new-privileges", "--read-only", "--tmpfs=/tmp"]  # fmt: skip
    binds = [*(Bind(p, p) for p in HOST_MOUNTS), Bind(str(state), "/var/lib/sentinel", readonly=False)]
    command = ("run", "--output", "stdout", "--model", "off", "--metrics-address", "127.0.0.1:9464")
    with running_container(image, pid="host", binds=binds, extra_args=extra, command=command) as c:
        wait_for(c.id, lambda d: d.get("event") == "sentinel.ready", READY_TIMEOUT, "sentinel.ready")
        cat = tmp_path / "cat"
        shutil.copy("/bin/cat", cat)
        subprocess.run([str(cat), "/etc/shadow"], check=True, stdout=subprocess.DEVNULL)
        alert = wait_for(
            c.id,
            lambda d: (d.get("rule") or {}).get("name") == RULE
            and (d.get("process") or {}).get("executable") == str(cat),
            ALERT_TIMEOUT,
            f"{RULE!r} for the host's {cat}",
        )
        assert alert["file"]["path"] == "/etc/shadow"
        health = c.exec("/opt/sentinel/venv/bin/python", "-c",
                        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/healthz')"
                        ".read().decode())").stdout.decode()  # fmt: skip
        assert json.loads(health)["status"] in ("ok", "degraded"), health
        # The agent is the container's init (with --pid=host its /proc/1 is the host's: read it from here).
        status = Path(f"/proc/{c.pid}/status").read_text()
        caps = next(line for line in status.splitlines() if line.startswith("CapEff:"))
        assert int(caps.split()[1], 16) == sum(1 << n for n in (38, 39, 19, 2, 14)), caps  # exactly CAPS
