"""packaging/kubernetes/ validates offline against the Kubernetes API schema (kubernetes-validate, which ships
the schemas: no cluster, no network), strictly (unknown fields are errors), and grants the DaemonSet the same
privileges the container test proves enough."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from .steps import REPO, run
from .test_container_image import CAPS, HOST_MOUNTS

pytestmark = pytest.mark.packaging

MANIFESTS = REPO / "packaging" / "kubernetes"
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"


def validate(*files: Path, check: bool = True) -> str:
    done = run([VALIDATE, "--strict", "--no-warn", *files], check=check, timeout=120)
    return done.stdout + done.stderr


def test_manifests_match_the_schema() -> None:
    files = sorted(p for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml")
    assert {p.name for p in files} >= {"daemonset.yaml", "configmap.yaml", "namespace.yaml"}
    out = validate(*files)
    assert out.count("passed") == len(files), out


def test_the_validator_rejects_a_broken_daemonset(tmp_path: Path) -> None:
    broken = tmp_path / "daemonset.yaml"
    text = (MANIFESTS / "daemonset.yaml").read_text()
    broken.write_text(text.replace("hostPID: true", "hostPid: true"))  # a misspelt field
    done = run([VALIDATE, "--strict", "--no-warn", broken], check=False)
    assert done.returncode != 0, done.stdout


def test_daemonset_privileges_are_the_proven_ones() -> None:
    ds = yaml.safe_load((MANIFESTS / "daemonset.yaml").read_text())
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": list(CAPS)}
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in HOST_MOUNTS:
        assert mounts[path].get("readOnly") is True, path
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"] and container["resources"]["requests"]
    data = yaml.safe_load((MANIFESTS / "configmap.yaml").read_text())["data"]
    config = yaml.safe_load(data["sentinel.yaml"])
    assert config["metrics"]["address"].endswith(":9464")
