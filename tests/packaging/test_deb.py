"""The Debian package from `bash packaging/build-deb.sh`, installed with apt in a fresh Debian 12 root file
system (a podman container from the local debootstrap image), upgraded, and purged.

apt inside the container reaches the same Debian mirror as the host (checked: `apt-get update` there takes
~5 s), so the package's dependencies (python3-bpfcc, the kernel headers) come the way they would on a user's
host, and a wrong Depends fails here. The lean build (--no-train) keeps two builds and the install ~2 min.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.integration.podman import Bind, Container, ensure_image, remove_leftovers, running_container

from .steps import REPO, git_commit, run

pytestmark = pytest.mark.packaging

APT = "DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=120"


def build_deb(out: Path, version: str) -> Path:
    script = REPO / "packaging" / "build-deb.sh"
    done = run(["bash", script, "--no-train", "--version", version, "--out", out],
               timeout=600, env={"SENTINEL_DEB_COMPRESS": "gzip"})  # fmt: skip
    deb = Path(done.stdout.strip().splitlines()[-1])
    assert deb == out / f"sentinel_{version}_amd64.deb" and deb.is_file(), done.stdout
    return deb


def sh(c: Container, script: str, timeout: float = 300, check: bool = True) -> str:
    done = c.exec("bash", "-c", script, timeout=timeout, check=False)
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if check:
        assert done.returncode == 0, f"{script!r} exited {done.returncode}:\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Version 1 and a rebuilt version 2 of the package, from this checkout."""
    out = tmp_path_factory.mktemp("debs")
    return build_deb(out, "0.1.0~pkgtest1"), build_deb(out, "0.1.0~pkgtest2")


def test_install_upgrade_purge(debs: tuple[Path, Path]) -> None:
    v1, v2 = debs
    image = ensure_image()
    remove_leftovers()
    with running_container(image, binds=[Bind(str(v1.parent), "/debs")]) as c:
        sh(c, f"{APT} update >/dev/null")
        sh(c, f"{APT} install --no-install-recommends /debs/{v1.name} >/tmp/apt.log 2>&1 || "
              "{ tail -40 /tmp/apt.log; exit 1; }")  # fmt: skip
        version = sh(c, "sentinel --version")
        assert version.startswith("sentinel 0.1.0, build ") and git_commit()[:7] in version, version
        assert "sentinel/_data" not in sh(c, "sentinel rules validate")  # the deb's rules, not the wheel's
        validate = sh(c, "sentinel rules validate /usr/share/sentinel/rules /etc/sentinel/rules.local.yaml")
        assert "/usr/share/sentinel/rules/execution.yaml: Ok" in validate, validate
        assert " 0 errors" in sh(c, "sentinel config check")  # the conffile is valid as shipped
        sh(c, "test -d /var/log/sentinel && test -d /var/lib/sentinel && test -L /usr/bin/sentinel")
        sh(c, "sentinel model info --model default | tail -1 | grep -q verified")
        mode = sh(c, "cat /var/lib/sentinel/headers-mode").strip()
        assert mode in ("matching", "substitute"), mode  # postinst gave bcc kernel headers
        site = "/opt/sentinel/venv/lib/python3.11/site-packages"
        sh(c, f"test -f {site}/sentinel/__pycache__/cli.cpython-311.pyc")  # compiled by postinst

        # An administrator's change and the agent's state survive the upgrade.
        sh(c, "sed -i 's/^aggregation_window_s: 60 /aggregation_window_s: 90 /' /etc/sentinel/sentinel.yaml")
        sh(c, "grep -q '^aggregation_window_s: 90 ' /etc/sentinel/sentinel.yaml")
        sh(c, "echo baseline > /var/lib/sentinel/profiles.marker")
        sh(c, f"{APT} install --no-install-recommends /debs/{v2.name} >/tmp/apt2.log 2>&1 || "
              "{ tail -40 /tmp/apt2.log; exit 1; }")  # fmt: skip
        assert sh(c, "dpkg-query -W -f '${Version}' sentinel") == "0.1.0~pkgtest2"
        sh(c, "grep -q '^aggregation_window_s: 90 ' /etc/sentinel/sentinel.yaml")
        assert sh(c, "cat /var/lib/sentinel/profiles.marker").strip() == "baseline"
        assert " 0 errors" in sh(c, "sentinel config check")

        # Purge removes what the package and the agent made, the header links postinst added too.
        links = shlex.split(sh(c, "cat /var/lib/sentinel/headers-links 2>/dev/null; true"))
        sh(c, f"{APT} purge sentinel >/tmp/apt3.log 2>&1 || {{ tail -40 /tmp/apt3.log; exit 1; }}")
        made = ["/opt/sentinel", "/etc/sentinel", "/var/lib/sentinel", "/var/log/sentinel",
                "/usr/bin/sentinel", "/usr/share/sentinel", *links]  # fmt: skip
        left = sh(c, f"ls -d {' '.join(made)} 2>/dev/null; true")
        assert left.strip() == "", f"left after purge: {left}"
