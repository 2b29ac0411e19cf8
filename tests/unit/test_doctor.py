"""`sentinel doctor`'s decisions and wording, on fake tracefs trees, fake BTF and fake probe evidence.

The real probes are loaded by tests/integration/test_doctor_live.py; here every input is built so that the
expected verdict follows from it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Collection
from pathlib import Path

import pytest

from sentinel import doctor
from sentinel.events import Credentials, Event, EventType
from sentinel.sensor import environment as env
from sentinel.sensor.koffsets import KernelOffsets
from sentinel.sensor.loader import OPTIONAL_PROBES

# --- tracepoints -------------------------------------------------------------------------------------------


def _tracefs(root: Path, absent: Collection[str] = ()) -> str:
    for name in env.REQUIRED_TRACEPOINTS:
        if name not in absent:
            (root / "events" / name).mkdir(parents=True)
    return str(root)


def test_loader_and_environment_agree_on_the_optional_tracepoints() -> None:
    halves = {
        name.replace("sys_enter_", f"sys_{half}_") for name in OPTIONAL_PROBES for half in ("enter", "exit")
    }
    assert halves == env.OPTIONAL_TRACEPOINTS
    assert env.OPTIONAL_TRACEPOINTS.issubset(env.REQUIRED_TRACEPOINTS)


def test_tracepoints_all_present_lists_every_optional_one(tmp_path: Path) -> None:
    check = doctor.check_tracepoints(_tracefs(tmp_path))
    assert check.status == "ok"
    required = len(env.REQUIRED_TRACEPOINTS) - len(env.OPTIONAL_TRACEPOINTS)
    assert check.detail.startswith(f"all {required} required present")
    for call in ("open", "creat", "openat2", "clone3"):
        assert f"{call} present" in check.detail
    assert "not compiled" not in check.detail


def test_tracepoints_absent_optional_ones_are_named_with_their_probes_left_out(tmp_path: Path) -> None:
    absent = {"syscalls/sys_enter_open", "syscalls/sys_exit_open", "syscalls/sys_exit_clone3"}
    check = doctor.check_tracepoints(_tracefs(tmp_path, absent))
    assert check.status == "ok"
    # clone3 lacks only its exit half: the loader needs both, so its probes are not compiled either.
    for call, state in (
        ("open", "absent"),
        ("creat", "present"),
        ("openat2", "present"),
        ("clone3", "absent"),
    ):
        assert f"{call} {state}" in check.detail
    assert "the probes for open, clone3 are not compiled in" in check.detail
    assert "libc uses clone" in check.detail
    optional = doctor.optional_tracepoints(_tracefs(tmp_path / "again", absent))
    assert {k: optional[k] for k in ("open", "creat", "openat2", "clone3")} == {
        "open": False,
        "creat": True,
        "openat2": True,
        "clone3": False,
    }
    assert optional["setuid"] and optional["umount"]  # the security syscalls, by tracepoint name


def test_tracepoints_missing_required_one_fails_and_names_it(tmp_path: Path) -> None:
    check = doctor.check_tracepoints(
        _tracefs(tmp_path, {"syscalls/sys_exit_connect", "syscalls/sys_enter_open"})
    )
    assert check.status == "fail"
    assert "missing 1 of" in check.detail
    assert "syscalls/sys_exit_connect" in check.detail
    assert "open absent" in check.detail
    assert "CONFIG_FTRACE_SYSCALLS" in check.fix


def test_tracepoints_without_tracefs_fail() -> None:
    assert doctor.check_tracepoints(None).status == "fail"


# --- btf ---------------------------------------------------------------------------------------------------


def test_btf_missing_warns_with_every_absent_field_and_the_fix(tmp_path: Path) -> None:
    path = str(tmp_path / "vmlinux")
    check = doctor.check_btf(path)
    assert check.status == "warn"
    assert path in check.detail
    for name in (
        "euid",
        "suid",
        "fsuid",
        "egid",
        "sgid",
        "fsgid",
        "cap_effective",
        "cap_permitted",
        "loginuid",
        "sessionid",
        "start_ns",
        "child_start_ns",
        "exe_name",
        "exe_ino",
        "exe_dev",
        "exe_nlink",
        "tty_nr",
    ):
        assert name in check.detail
    assert "open de-duplication is off (every open is reported)" in check.detail
    assert "CONFIG_DEBUG_INFO_BTF=y" in check.fix


def test_btf_unusable_file_warns_and_asks_for_a_report(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux"
    path.write_bytes(b"not btf at all")
    check = doctor.check_btf(str(path))
    assert check.status == "warn"
    assert "every open is reported" in check.detail
    assert "sentinel bug" in check.fix
    assert "CONFIG_DEBUG_INFO_BTF" not in check.fix


def test_btf_available_says_what_the_offsets_give() -> None:
    offsets = KernelOffsets(macros={"K_TASK_TGID": 1}, login=True, namespaces=True, pid_view=True)
    check = doctor.btf_check(offsets, "/x/vmlinux", True)
    assert check.status == "ok"
    assert check.detail == (
        "kernel offsets from BTF (/x/vmlinux): credentials (euid/suid/fsuid/egid/sgid/fsgid, capabilities), "
        "login uid and session, process start times, executable identity (memfd/deleted), "
        "open de-duplication, setns targets, pidfd processes and user namespaces, "
        "the in-container view of exec and fork (vpid, pid and mount namespaces)"
    )
    offsets.namespaces = False
    assert "no setns targets" in doctor.btf_check(offsets, "/x/vmlinux", True).detail
    offsets.pid_view = False
    assert "no vpid or namespaces at exec and fork" in doctor.btf_check(offsets, "/x/vmlinux", True).detail


def test_btf_without_audit_says_login_fields_are_absent() -> None:
    check = doctor.btf_check(KernelOffsets(macros={"K_TASK_TGID": 1}, login=False), "/x/vmlinux", True)
    assert check.status == "ok"
    assert "login uid and session," not in check.detail
    assert "no login uid or session" in check.detail
    assert "CONFIG_AUDIT" in check.detail


# --- the probe run's verdict -------------------------------------------------------------------------------

ME = doctor.SelfIdentity(
    resuid=(1000, 1000, 1000),
    resgid=(100, 100, 100),
    cap_effective=0,
    loginuid=1000,
    sessionid=7,
    start_ticks=12_345,
    clk_tck=100,
    exe_name="true",
)
CREDS = Credentials(1000, 1000, 1000, 100, 100, 100, 1000, 7, 0, 0)


def _open(**changes: object) -> Event:
    ev = Event(EventType.OPEN, 200 * 10**9, 4242, 4242, 1000, 100, "python", path="/tmp/sentinel-doctor-x")
    ev.creds = CREDS
    ev.start_ns = 12_345 * 10**7 + 3_000_000  # /proc rounds down to the tick
    for name, value in changes.items():
        setattr(ev, name, value)
    return ev


ARGV = [doctor.EXEC_PATH, "sentinel-doctor-x"]


def _exec(**changes: object) -> Event:
    ev = Event(EventType.EXEC, 201 * 10**9, 4243, 4243, 1000, 100, "true", filename=ARGV[0], argv=ARGV)
    ev.creds = CREDS._replace(cap_permitted=0)
    ev.start_ns = 200 * 10**9 + 1
    ev.exe_name, ev.exe_ino, ev.exe_dev, ev.exe_nlink = "true", 77, 0xFE00, 1
    for name, value in changes.items():
        setattr(ev, name, value)
    return ev


def _run(opened: Event | None, executed: Event | None, offsets_mode: str = "btf") -> doctor.ProbeRun:
    return doctor.ProbeRun(
        27, "task-storage", offsets_mode, 2.25, "/tmp/sentinel-doctor-x", ARGV, 4242, 4243, opened, executed
    )


def test_verdict_ok_reports_tracepoints_stash_offsets_and_time() -> None:
    check = doctor.judge_probe_run(_run(_open(), _exec()), ME)
    assert check.status == "ok"
    assert check.detail.startswith(
        "bpf_probes/sentinel.c compiled, loaded and attached to 27 tracepoints in 2.2 s "
        "(stash: task-storage; kernel offsets: btf)"
    )
    assert "matching /proc" in check.detail


@pytest.mark.parametrize(
    ("opened", "executed", "unseen"),
    [
        (None, _exec(), "doctor's open of /tmp/sentinel-doctor-x"),
        (_open(), None, f"the exec of {doctor.EXEC_PATH} sentinel-doctor-x"),
    ],
)
def test_verdict_fails_when_an_event_never_arrived(
    opened: Event | None, executed: Event | None, unseen: str
) -> None:
    check = doctor.judge_probe_run(_run(opened, executed), ME)
    assert check.status == "fail"
    assert check.detail.endswith(f"but no event arrived for {unseen}")
    assert "attached to 27 tracepoints" in check.detail


@pytest.mark.parametrize(("opened", "executed"), [(_open(pid=9), _exec()), (_open(), _exec(pid=9))])
def test_verdict_fails_in_another_pid_namespace(opened: Event, executed: Event) -> None:
    """Events name host pids: when they differ from doctor's own view, the agent would watch itself."""
    check = doctor.judge_probe_run(_run(opened, executed), ME)
    assert check.status == "fail"
    assert f"the events name pids {opened.pid} and {executed.pid} for doctor's 4242 and its child's 4243" in (
        check.detail
    )
    assert "--pid=host" in check.fix


def test_verdict_without_offsets_is_ok_and_does_not_ask_for_credentials() -> None:
    bare_open = _open(creds=None, start_ns=0)
    bare_exec = _exec(creds=None, start_ns=0, exe_name="", exe_nlink=-1)
    check = doctor.judge_probe_run(_run(bare_open, bare_exec, "none (no usable BTF at /x)"), ME)
    assert check.status == "ok"
    assert "kernel offsets: none (no usable BTF at /x)" in check.detail
    assert "see btf" in check.detail


@pytest.mark.parametrize(
    ("opened", "executed", "problem"),
    [
        (_open(creds=None), _exec(), "the open event carries no credentials"),
        (_open(), _exec(creds=None), "the exec event carries no credentials"),
        (_open(creds=CREDS._replace(euid=0)), _exec(), "the open event has euid 0 where /proc has 1000"),
        (
            _open(creds=CREDS._replace(sgid=5, fsgid=6)),
            _exec(),
            "has fsgid 6, sgid 5 where /proc has 100, 100",
        ),
        (_open(creds=CREDS._replace(cap_effective=1 << 21)), _exec(), "cap_effective 0x200000"),
        (_open(creds=CREDS._replace(sessionid=9)), _exec(), "sessionid 9 where /proc has 7"),
        (_open(), _exec(creds=CREDS._replace(egid=0)), "the exec event has egid 0 where /proc has 100"),
        (_open(start_ns=0), _exec(), "the open event carries no process start time"),
        (_open(start_ns=12_348 * 10**7), _exec(), "doctor's start time reads 12348 ticks"),
        (_open(), _exec(start_ns=0), "the exec event's process start time 0 is not before the event"),
        (_open(), _exec(start_ns=202 * 10**9), "is not before the event"),
        (_open(), _exec(exe_nlink=-1), "the exec event carries no executable identity"),
        (_open(), _exec(exe_name="dash"), "names the executable 'dash'"),
        (_open(), _exec(exe_nlink=0), "(links 0)"),
    ],
)
def test_verdict_fails_when_the_events_disagree_with_proc(
    opened: Event, executed: Event, problem: str
) -> None:
    check = doctor.judge_probe_run(_run(opened, executed), ME)
    assert check.status == "fail"
    assert "the events arrived but disagree with /proc" in check.detail
    assert problem in check.detail
    assert "sentinel bug" in check.fix


def test_exec_keeps_its_own_saved_ids_and_capabilities() -> None:
    """An exec may change saved ids and capabilities legitimately: only the open's are compared."""
    executed = _exec(creds=CREDS._replace(suid=0, sgid=0, cap_effective=0x1FF, loginuid=None, sessionid=None))
    assert doctor.event_problems(_open(), executed, ME) == []
    # and with a start time 2 ticks off, the agent's own tolerance, the open still matches
    assert doctor.event_problems(_open(start_ns=12_347 * 10**7), _exec(), ME) == []


def test_self_identity_reads_this_process() -> None:
    me = doctor.SelfIdentity.current()
    assert me.resuid == os.getresuid()
    assert me.resgid == os.getresgid()
    assert me.cap_effective == env.effective_capabilities()
    assert me.exe_name == os.path.basename(os.path.realpath(doctor.EXEC_PATH))
    with open("/proc/self/stat") as f:
        assert me.start_ticks == int(f.read().rsplit(")", 1)[1].split()[19])


# --- the compile check with fake sensors -------------------------------------------------------------------


class FakeSensor:
    """Stands in for Sensor: ``start`` may print like clang and raise; ``poll`` returns nothing."""

    def __init__(self, fail_with: Exception | None = None, native_output: bytes = b"") -> None:
        self.fail_with = fail_with
        self.native_output = native_output
        self.attached = ["syscalls:sys_enter_openat"] * 3
        self.stash_mode = "hash (task storage unavailable: test)"
        self.kernel_offsets_mode = "btf"
        self.closed = False
        self.polls = 0

    def start(self) -> None:
        os.write(2, self.native_output)
        if self.fail_with is not None:
            raise self.fail_with

    def poll(self, timeout_ms: int | None = None) -> list[Event]:
        self.polls += 1
        return []

    def drain(self) -> list[Event]:
        return []

    def close(self) -> None:
        self.closed = True


def test_compile_failure_carries_the_compiler_output_and_closes() -> None:
    from sentinel.sensor.loader import SensorError

    sensor = FakeSensor(SensorError("compiling failed"), b"/virtual/main.c:1:2: error: broken here\n")
    check = doctor.check_compile(lambda: sensor)
    assert check.status == "fail"
    assert check.detail == (
        "the real probes did not start: compiling failed [/virtual/main.c:1:2: error: broken here]"
    )
    assert "scripts/setup.sh" in check.fix
    assert sensor.closed


def test_compile_unexpected_error_is_named() -> None:
    sensor = FakeSensor(KeyError("events_exec"))
    check = doctor.check_compile(lambda: sensor)
    assert check.status == "fail"
    assert check.detail == "the real probes did not start: KeyError('events_exec')"
    assert sensor.closed


def test_compile_fails_when_the_probes_see_nothing() -> None:
    sensor = FakeSensor()
    check = doctor.check_compile(lambda: sensor, wait_s=0.3)
    assert check.status == "fail"
    assert "attached to 3 tracepoints" in check.detail
    assert "stash: hash (task storage unavailable: test)" in check.detail
    assert "no event arrived for doctor's open of " in check.detail
    assert f"nor the exec of {doctor.EXEC_PATH}" in check.detail
    assert sensor.polls >= 1
    assert sensor.closed


# --- driver ------------------------------------------------------------------------------------------------


def test_doctor_json_shape_on_this_machine() -> None:
    out = io.StringIO()
    rc = doctor.run_doctor(as_json=True, out=out, compile_test=False)
    checks = json.loads(out.getvalue())
    names = [check["name"] for check in checks]
    assert names == ["kernel", "btf", "privileges", "tracefs", "tracepoints", "bcc", "headers"]
    for check in checks:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in {"ok", "warn", "fail"}
        assert check["detail"]
        if check["status"] != "ok":
            assert check["fix"]
    assert rc == (1 if any(check["status"] == "fail" for check in checks) else 0)


def test_doctor_text_output_ends_with_summary() -> None:
    out = io.StringIO()
    rc = doctor.run_doctor(out=out, compile_test=False)
    lines = out.getvalue().splitlines()
    assert (
        lines[-1].startswith("sentinel can run here") if rc == 0 else lines[-1].startswith("sentinel cannot")
    )
    assert lines[0].split()[0] in {"ok", "warn", "fail"}


def test_summary_follows_the_worst_check() -> None:
    checks = [doctor.Check("a", "ok", "x"), doctor.Check("b", "warn", "y", "z")]
    assert doctor._summary(checks) == "sentinel can run here with 1 warning(s) (b)"
    checks.append(doctor.Check("c", "fail", "w", "v"))
    assert doctor._summary(checks) == "sentinel cannot run here: 1 check(s) failed (c)"
