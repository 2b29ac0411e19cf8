"""`sentinel doctor` on this host: it loads the real probes and sees its own open and exec come back."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from sentinel.sensor.environment import find_tracefs
from sentinel.sensor.loader import OPTIONAL_PROBES, tracepoint_present

from .conftest import REPO, sentinel_cmd

pytestmark = pytest.mark.kernel


def doctor_json(
    env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> tuple[int, dict[str, dict[str, Any]]]:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root: run the suite with scripts/run-tests.sh as root")
    res = subprocess.run(
        [*prefix, *sentinel_cmd("doctor", "--json")], capture_output=True, cwd=REPO, timeout=120, env=env
    )
    try:
        checks = {c["name"]: c for c in orjson.loads(res.stdout)}
    except orjson.JSONDecodeError:
        pytest.fail(f"doctor --json printed no JSON: {res.stdout!r} {res.stderr!r}")
    return res.returncode, checks


@pytest.fixture(scope="module")
def doctor_run() -> tuple[int, dict[str, dict[str, Any]]]:
    return doctor_json()


def test_doctor_loads_the_real_probes_and_sees_its_own_syscalls(
    doctor_run: tuple[int, dict[str, dict[str, Any]]],
) -> None:
    rc, checks = doctor_run
    compile_check = checks["compile"]
    assert rc == 0, checks
    assert compile_check["status"] == "ok", compile_check
    detail = compile_check["detail"]
    attached = re.search(r"bpf_probes/sentinel\.c compiled, loaded and attached to (\d+) tracepoints", detail)
    assert attached, detail
    assert int(attached.group(1)) >= 20
    assert "kernel offsets: btf)" in detail
    assert re.search(r"stash: (task-storage|hash \()", detail)
    assert "saw doctor's own open and exec, their credentials, start time and executable identity" in detail
    assert checks["bcc"]["status"] == "ok"
    assert checks["headers"]["status"] in {"ok", "warn"}
    assert checks["btf"]["status"] == "ok"
    assert checks["btf"]["detail"].startswith(
        "kernel offsets from BTF (/sys/kernel/btf/vmlinux): credentials"
    )


def test_doctor_lists_each_optional_tracepoint_as_the_loader_sees_it(
    doctor_run: tuple[int, dict[str, dict[str, Any]]],
) -> None:
    _, checks = doctor_run
    tracefs = find_tracefs()
    assert tracefs is not None
    tracepoints = checks["tracepoints"]
    assert tracepoints["status"] == "ok", tracepoints
    for name in OPTIONAL_PROBES:
        call = name.rsplit("sys_enter_", 1)[1]
        state = "present" if tracepoint_present(tracefs, name) else "absent"
        assert f" {call} {state}" in tracepoints["detail"]


def test_doctor_fails_with_the_compiler_output_when_the_probes_do_not_compile(tmp_path: Path) -> None:
    (tmp_path / "sentinel.c").write_text("#error doctor-test-broken-probe\n")
    (tmp_path / "sentinel_security.c").write_text("")
    (tmp_path / "sentinel_files.c").write_text("")
    (tmp_path / "sentinel_net.c").write_text("")
    rc, checks = doctor_json({**os.environ, "SENTINEL_PROBES": str(tmp_path)})
    assert rc == 1
    compile_check = checks["compile"]
    assert compile_check["status"] == "fail"
    assert "the real probes did not start" in compile_check["detail"]
    assert "error: doctor-test-broken-probe" in compile_check["detail"]  # clang's own words, captured
    assert all(check["status"] != "fail" for name, check in checks.items() if name != "compile")


def test_doctor_exits_1_without_bpf_capabilities_and_skips_the_compile() -> None:
    """Root with an empty capability bounding set (a locked-down container) cannot load probes."""
    rc, checks = doctor_json(prefix=("setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"))
    assert rc == 1
    assert checks["privileges"]["status"] == "fail"
    assert "lacks CAP_BPF and CAP_PERFMON" in checks["privileges"]["detail"]
    assert "compile" not in checks  # by default the probes are compiled only when nothing else failed


def test_doctor_fails_in_a_pid_namespace_other_than_the_hosts() -> None:
    """The probes report host pids: an agent in its own PID namespace would watch itself and misread /proc."""
    rc, checks = doctor_json(prefix=("unshare", "--pid", "--fork", "--mount-proc", "--"))
    assert rc == 1
    compile_check = checks["compile"]
    assert compile_check["status"] == "fail"
    assert re.search(
        r"the events name pids \d+ and \d+ for doctor's 1 and its child's 2", compile_check["detail"]
    )
    assert "--pid=host" in compile_check["fix"]
