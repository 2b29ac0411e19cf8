"""packaging/container/seccomp-profile.py: the runtime's default profile, bpf(2) and perf_event_open(2)
allowed without CAP_SYS_ADMIN, everything else as the default has it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "packaging" / "container" / "seccomp-profile.py"
DEFAULT: dict[str, Any] = {  # the shape of containers-common's and Docker's profiles, abridged
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["bpf", "mount", "perf_event_open"], "action": "SCMP_ACT_ALLOW",
         "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["bpf", "perf_event_open"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    ],
}  # fmt: skip


def load() -> Any:
    spec = importlib.util.spec_from_file_location("seccomp_profile", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bpf_and_perf_allowed_unconditionally_rest_untouched() -> None:
    out = load().profile(DEFAULT)
    assert out["defaultAction"] == "SCMP_ACT_ERRNO"
    groups = out["syscalls"]
    assert groups[0] == DEFAULT["syscalls"][0]
    assert groups[1]["names"] == ["mount"] and groups[1]["includes"] == {"caps": ["CAP_SYS_ADMIN"]}
    assert len(groups) == 3  # the EPERM group held only the two syscalls: gone
    assert groups[-1]["names"] == ["bpf", "perf_event_open"] and groups[-1]["action"] == "SCMP_ACT_ALLOW"
    assert "includes" not in groups[-1] and "excludes" not in groups[-1]


def test_host_default_profile_when_present() -> None:
    host = Path("/usr/share/containers/seccomp.json")
    if not host.is_file():  # podman's containers-common: setup.sh installs it
        return
    import json

    out = load().profile(json.loads(host.read_text()))
    holding = [g for g in out["syscalls"] if {"bpf", "perf_event_open"} & set(g["names"])]
    assert len(holding) == 1 and holding[0]["action"] == "SCMP_ACT_ALLOW"
