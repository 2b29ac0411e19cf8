"""`sentinel doctor`: can the agent run on this host, and if not, what exactly to do about it.

Each check states its finding and a fix in plain words, because the person reading it is usually setting up
a host, not debugging sentinel. Warnings describe a degraded but correct agent; failures mean it cannot run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol, TextIO

from sentinel.events import Event, EventType
from sentinel.process.table import EXEC_MATCH_TICKS, NS_PER_SEC
from sentinel.resources import setup_hint
from sentinel.sensor import environment as env
from sentinel.sensor.koffsets import BTF_PATH, KernelOffsets, kernel_offsets
from sentinel.sensor.loader import OPTIONAL_PROBES, Sensor, SensorConfig, SensorError, tracepoint_present

Status = Literal["ok", "warn", "fail"]

MIN_KERNEL = (5, 8)
DISTRO_SITE = "/usr/lib/python3/dist-packages/"
EXEC_PATH = "/bin/true"  # what the compile check runs to see an exec event

# Why an optional tracepoint may be absent, and why that loses nothing (shown only for absent ones).
OPTIONAL_WHY = {
    "open": "arches without open(2), e.g. arm64: libc uses openat, which is watched",
    "creat": "arches without creat(2), e.g. arm64: libc uses openat, which is watched",
    "openat2": "kernels before 5.6 have no openat2",
    "clone3": "kernels before 5.3 have no clone3: libc uses clone, which is watched",
    "init_module": "a kernel without CONFIG_MODULES loads no modules",
    "finit_module": "a kernel without CONFIG_MODULES loads no modules",
    "delete_module": "a kernel without CONFIG_MODULES loads no modules",
    "bpf": "a kernel without CONFIG_BPF_SYSCALL has no bpf(2)",
}

# What the probes read through kernel offsets, in Event field names: absent (never zero) without them.
WITHOUT_OFFSETS = (
    "creds (euid, suid, fsuid, egid, sgid, fsgid, cap_effective, cap_permitted, loginuid, sessionid) "
    "and start_ns on every event, child_start_ns on forks, "
    "exe_name/exe_ino/exe_dev/exe_nlink (memfd and deleted executables) and tty_nr on execs"
)


@dataclass(frozen=True)
class Check:
    """One finding: what was checked, how it went, what it saw and how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str = ""


# --- individual checks -------------------------------------------------------------------------------------


def check_kernel() -> Check:
    """5.8 brings CAP_BPF/CAP_PERFMON and bpf_ktime_get_boot_ns, which the agent relies on."""
    release = env.kernel_release()
    version = env.kernel_version_tuple(release)
    if version[:2] >= MIN_KERNEL:
        return Check("kernel", "ok", f"{release} (>= 5.8: CAP_BPF, bpf_ktime_get_boot_ns)")
    return Check(
        "kernel",
        "warn",
        f"{release} is older than 5.8",
        "the agent needs CAP_SYS_ADMIN here and timestamps may drift across suspend; use a 5.8+ kernel",
    )


def check_btf(btf_path: str = BTF_PATH) -> Check:
    """Kernel struct offsets come only from BTF (the headers may be another kernel's): say what they give."""
    return btf_check(kernel_offsets(btf_path), btf_path, os.path.exists(btf_path))


def btf_check(offsets: KernelOffsets, btf_path: str, btf_exists: bool) -> Check:
    """The btf finding for ``offsets`` as the loader will compile them in."""
    if offsets.available:
        login = "login uid and session, " if offsets.login else ""
        detail = (
            f"kernel offsets from BTF ({btf_path}): "
            "credentials (euid/suid/fsuid/egid/sgid/fsgid, capabilities), "
            f"{login}process start times, executable identity (memfd/deleted), open de-duplication"
        )
        if offsets.namespaces:
            detail += ", setns targets, pidfd processes and user namespaces"
        else:
            detail += "; no setns targets, pidfd processes or user namespaces (their structs differ)"
        if offsets.pid_view:
            detail += ", the in-container view of exec and fork (vpid, pid and mount namespaces)"
        else:
            detail += "; no vpid or namespaces at exec and fork (from /proc only: struct pid differs)"
        if not offsets.login:
            detail += "; no login uid or session: task_struct has no loginuid (kernel without CONFIG_AUDIT)"
        return Check("btf", "ok", detail)
    if btf_exists:
        fix = (
            f"{btf_path} does not describe what the probes read; report this output as a sentinel bug "
            "(events stay correct, these fields are absent)"
        )
    else:
        fix = "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (events stay correct, these fields are absent)"
    return Check(
        "btf",
        "warn",
        f"no kernel offsets ({offsets.problem}): events lack {WITHOUT_OFFSETS}; "
        "open de-duplication is off (every open is reported)",
        fix,
    )


def check_privileges() -> Check:
    """Loading probes and reading perf buffers needs CAP_BPF + CAP_PERFMON (or root)."""
    ok, detail = env.has_bpf_privileges()
    missing = env.missing_agent_capabilities()
    if ok and missing:
        names = " ".join(name for name, _why in missing)
        why = "; ".join(f"without {name}: {what}" for name, what in missing)
        return Check("privileges", "warn", f"{detail}; {why}", f"grant {names} (docs/privileges.md)")
    if ok:
        return Check("privileges", "ok", detail)
    return Check("privileges", "fail", detail, "run `sentinel` as root or grant CAP_BPF and CAP_PERFMON")


def check_tracefs(can_mount: bool) -> tuple[Check, str | None]:
    """tracefs is where tracepoints are found; the agent mounts it itself, so doctor does the same."""
    found = env.find_tracefs()
    if found:
        return Check("tracefs", "ok", f"mounted at {found}"), found
    if not can_mount:
        return (
            Check(
                "tracefs",
                "fail",
                "not mounted, and mounting it needs privileges this process lacks",
                f"as root: mount -t tracefs tracefs {env.TRACEFS_PATH} (or {setup_hint()})",
            ),
            None,
        )
    try:
        mounted = env.ensure_tracefs()
    except env.EnvironmentProblem as exc:
        return Check("tracefs", "fail", str(exc), "check that the kernel has CONFIG_TRACING=y"), None
    return Check("tracefs", "ok", f"was not mounted; mounted it at {mounted}"), mounted


def check_tracepoints(tracefs: str | None) -> Check:
    """Every probe attaches to a tracepoint: a required one missing is a blind spot, an optional one not."""
    if tracefs is None:
        return Check("tracepoints", "fail", "not checked: tracefs is unavailable", "fix tracefs first")
    if not os.access(os.path.join(tracefs, "events"), os.R_OK | os.X_OK):
        return Check(
            "tracepoints",
            "fail",
            f"cannot read {tracefs}/events as uid {os.geteuid()}",
            "run as root, or grant CAP_DAC_READ_SEARCH (tracefs is mode 0700)",
        )
    required, _ = env.missing_tracepoints(tracefs)
    total = sum(name not in env.OPTIONAL_TRACEPOINTS for name in env.REQUIRED_TRACEPOINTS)
    optional = optional_tracepoints(tracefs)
    listing = ", ".join(f"{call} {'present' if present else 'absent'}" for call, present in optional.items())
    absent = [call for call, present in optional.items() if not present]
    detail = f"optional (probes compiled in only when present): {listing}"
    if absent:
        why = "; ".join(f"{call}: {OPTIONAL_WHY.get(call, 'not on this kernel')}" for call in absent)
        detail += f"; the probes for {', '.join(absent)} are not compiled in ({why})"
    if required:
        return Check(
            "tracepoints",
            "fail",
            f"missing {len(required)} of {total} required: {', '.join(required)}; {detail}",
            "use a kernel with CONFIG_FTRACE_SYSCALLS=y and CONFIG_TRACEPOINTS=y",
        )
    return Check("tracepoints", "ok", f"all {total} required present; {detail}")


def optional_tracepoints(tracefs: str) -> dict[str, bool]:
    """Syscall name -> whether the loader compiles its probes in (both enter and exit tracepoints exist)."""
    return {name.rsplit("sys_enter_", 1)[1]: tracepoint_present(tracefs, name) for name in OPTIONAL_PROBES}


def check_bcc() -> Check:
    """bcc exists only as Debian's python3-bpfcc, so the interpreter and venv layout matter."""
    fix = (
        "install python3-bpfcc and run from a venv created with --system-site-packages by /usr/bin/python3 "
        f"({setup_hint()})"
    )
    try:
        import bcc
    except Exception as exc:
        return Check("bcc", "fail", f"import bcc failed under {sys.executable}: {exc}", fix)
    where = getattr(bcc, "__file__", None) or "?"
    if not hasattr(bcc, "BPF"):
        return Check(
            "bcc",
            "fail",
            f"{where} is the unrelated PyPI package 'bcc', not BCC",
            f"pip uninstall bcc, then {fix}",
        )
    version = getattr(bcc, "__version__", "?")
    origin = "python3-bpfcc" if where.startswith(DISTRO_SITE) else f"bcc from {os.path.dirname(where)}"
    return Check("bcc", "ok", f"{origin} {version} importable")


def check_headers() -> Check:
    """bcc compiles against /lib/modules/<release>/build; which tree that is decides how much to trust."""
    info = env.headers_mode()
    recorded = env.recorded_headers_mode()
    note = f" (setup recorded: {recorded})" if recorded and recorded != info.mode else ""
    if info.mode == "matching":
        return Check("headers", "ok", f"{info.detail} ({info.build_path}){note}")
    if info.mode == "substitute":
        return Check(
            "headers",
            "warn",
            f"headers {info.headers_version} used for kernel {info.running} ({info.build_path}){note}",
            "kernel struct offsets come from BTF, never from these headers, so events stay correct; "
            f"{setup_hint()} or install linux-headers-{info.running} on a production host",
        )
    return Check("headers", "fail", f"{info.detail}{note}", f"bcc cannot compile probes: {setup_hint()}")


@contextmanager
def _capture_native_output() -> Iterator[Any]:
    """Collect what libbcc/clang print on fds 1 and 2 so it lands in the check, not over doctor's output."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            for fd in saved:
                os.dup2(tmp.fileno(), fd)
            yield tmp
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)


def _tail(tmp: Any, lines: int = 6) -> str:
    """Last few lines bcc printed, for a failure message."""
    tmp.seek(0)
    text = tmp.read().decode(errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:])


class ProbeSensor(Protocol):
    """What the compile check uses of :class:`Sensor` (tests pass fakes)."""

    attached: list[str]
    stash_mode: str
    kernel_offsets_mode: str

    def start(self) -> None: ...
    def poll(self, timeout_ms: int | None = None) -> list[Event]: ...
    def drain(self) -> list[Event]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class ProbeRun:
    """What the real probes reported of doctor's own open and exec: the evidence of the compile check."""

    attached: int
    stash_mode: str
    offsets_mode: str
    elapsed_s: float
    path: str  # the uniquely named file doctor created (events are matched by it, not by pid)
    argv: list[str]  # the EXEC_PATH doctor ran, with a unique argument
    pid: int  # doctor's pid and the child's, as doctor sees them
    exec_pid: int
    opened: Event | None
    executed: Event | None


@dataclass(frozen=True)
class SelfIdentity:
    """What /proc says about doctor itself, to compare with what the probes read from kernel structs."""

    resuid: tuple[int, int, int]
    resgid: tuple[int, int, int]
    cap_effective: int
    loginuid: int | None  # None: /proc/self/loginuid absent (no CONFIG_AUDIT)
    sessionid: int | None
    start_ticks: int  # /proc/self/stat field 22
    clk_tck: int
    exe_name: str  # the file EXEC_PATH resolves to, as the kernel names the running executable

    @classmethod
    def current(cls) -> SelfIdentity:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        return cls(
            resuid=os.getresuid(),
            resgid=os.getresgid(),
            cap_effective=env.effective_capabilities(),
            loginuid=_read_int("/proc/self/loginuid"),
            sessionid=_read_int("/proc/self/sessionid"),
            start_ticks=int(stat[stat.rindex(b")") + 1 :].split()[19]),
            clk_tck=os.sysconf("SC_CLK_TCK"),
            exe_name=os.path.basename(os.path.realpath(EXEC_PATH)),
        )


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def check_compile(make_sensor: Callable[[], ProbeSensor] | None = None, wait_s: float = 5.0) -> Check:
    """Compile, load and attach the real probes as the agent does, and see doctor's own syscalls come back.

    Only this proves the host runs sentinel: bcc, the headers, the verifier, every attach, the perf buffers,
    the decoder and, with BTF, the kernel offsets (credentials and start times are compared with /proc).
    """
    started = time.monotonic()
    # ignore_pid=0: doctor's own syscalls are the evidence, so they must not be filtered out like the agent's.
    sensor = make_sensor() if make_sensor else Sensor(SensorConfig(ignore_pid=0, scheduling="normal"))
    fix = f"{setup_hint()}, then rerun `sentinel doctor`"
    try:
        with _capture_native_output() as captured:
            try:
                sensor.start()
            except Exception as exc:
                output = _tail(captured)
                said = str(exc) if isinstance(exc, SensorError | env.EnvironmentProblem) else repr(exc)
                return Check(
                    "compile",
                    "fail",
                    f"the real probes did not start: {said}" + (f" [{output}]" if output else ""),
                    fix,
                )
        try:
            run = _exercise(sensor, started, wait_s)
        except Exception as exc:
            return Check("compile", "fail", f"the probes loaded but the test syscalls failed: {exc}", fix)
    finally:
        sensor.close()
    return judge_probe_run(run, SelfIdentity.current())


def _exercise(sensor: ProbeSensor, started: float, wait_s: float) -> ProbeRun:
    """Open a uniquely named file and run EXEC_PATH, then poll until both events are back (or time is up)."""
    fd, path = tempfile.mkstemp(prefix="sentinel-doctor-")
    os.close(fd)
    os.unlink(path)
    argv = [EXEC_PATH, os.path.basename(path)]
    child = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    child.wait()
    opened: Event | None = None
    executed: Event | None = None

    def take(events: list[Event]) -> None:
        nonlocal opened, executed
        for ev in events:
            if ev.type is EventType.OPEN and ev.path == path:
                opened = ev
            elif ev.type is EventType.EXEC and ev.argv == argv:
                executed = ev

    deadline = time.monotonic() + wait_s
    while (opened is None or executed is None) and time.monotonic() < deadline:
        take(sensor.poll(100))
    if opened is None or executed is None:
        take(sensor.drain())
    return ProbeRun(
        attached=len(sensor.attached),
        stash_mode=sensor.stash_mode,
        offsets_mode=sensor.kernel_offsets_mode,
        elapsed_s=time.monotonic() - started,
        path=path,
        argv=argv,
        pid=os.getpid(),
        exec_pid=child.pid,
        opened=opened,
        executed=executed,
    )


def judge_probe_run(run: ProbeRun, me: SelfIdentity) -> Check:
    """ok when both events arrived and, with BTF offsets, what they carry matches /proc."""
    head = (
        f"bpf_probes/sentinel.c compiled, loaded and attached to {run.attached} tracepoints in "
        f"{run.elapsed_s:.1f} s (stash: {run.stash_mode}; kernel offsets: {run.offsets_mode})"
    )
    opened, executed = run.opened, run.executed
    if opened is None or executed is None:
        unseen = [f"doctor's open of {run.path}"] if opened is None else []
        if executed is None:
            unseen.append(f"the exec of {' '.join(run.argv)}")
        return Check(
            "compile",
            "fail",
            f"{head}, but no event arrived for {' nor '.join(unseen)}",
            "check that syscall tracepoints fire on this kernel (perf trace -e 'syscalls:sys_enter_openat')",
        )
    if (opened.pid, executed.pid) != (run.pid, run.exec_pid):
        return Check(
            "compile",
            "fail",
            f"{head}; the events name pids {opened.pid} and {executed.pid} for doctor's {run.pid} and its "
            f"child's {run.exec_pid}: this runs in a PID namespace other than the host's, where the agent "
            "would watch itself and enrich processes from the wrong /proc entries",
            "run sentinel in the host's PID namespace (docker run --pid=host, Kubernetes hostPID: true)",
        )
    if run.offsets_mode != "btf":
        return Check(
            "compile",
            "ok",
            f"{head}; saw doctor's own open and exec (without credentials, start times or executable "
            "identity: see btf)",
        )
    problems = event_problems(opened, executed, me)
    if problems:
        return Check(
            "compile",
            "fail",
            f"{head}; the events arrived but disagree with /proc: {'; '.join(problems)}",
            "the kernel offsets taken from BTF do not match the running kernel: report this output as a "
            "sentinel bug",
        )
    return Check(
        "compile",
        "ok",
        f"{head}; saw doctor's own open and exec, their credentials, start time and executable identity "
        "matching /proc",
    )


def event_problems(opened: Event, executed: Event, me: SelfIdentity) -> list[str]:
    """Where what the probes read through kernel offsets differs from what /proc says (empty: all agree)."""
    problems: list[str] = []
    for what, ev in (("open", opened), ("exec", executed)):
        creds = ev.creds
        if creds is None:
            problems.append(f"the {what} event carries no credentials")
            continue
        pairs = [
            ("euid", creds.euid, me.resuid[1]),
            ("fsuid", creds.fsuid, me.resuid[1]),
            ("egid", creds.egid, me.resgid[1]),
            ("fsgid", creds.fsgid, me.resgid[1]),
        ]
        if what == "open":  # doctor's own; the exec's saved ids and capabilities follow the new image
            pairs += [("suid", creds.suid, me.resuid[2]), ("sgid", creds.sgid, me.resgid[2])]
            pairs.append(("cap_effective", hex(creds.cap_effective), hex(me.cap_effective)))
            if creds.loginuid is not None and me.loginuid is not None:
                pairs.append(("loginuid", creds.loginuid, me.loginuid))
            if creds.sessionid is not None and me.sessionid is not None:
                pairs.append(("sessionid", creds.sessionid, me.sessionid))
        wrong = [(name, seen, want) for name, seen, want in pairs if seen != want]
        if wrong:
            problems.append(
                f"the {what} event has {', '.join(f'{n} {seen}' for n, seen, _ in wrong)} where /proc has "
                + ", ".join(str(want) for _, _, want in wrong)
            )
    if not opened.start_ns:
        problems.append("the open event carries no process start time")
    elif abs(opened.start_ns * me.clk_tck // NS_PER_SEC - me.start_ticks) > EXEC_MATCH_TICKS:
        ticks = opened.start_ns * me.clk_tck // NS_PER_SEC
        problems.append(f"doctor's start time reads {ticks} ticks, /proc/self/stat has {me.start_ticks}")
    if not 0 < executed.start_ns <= executed.ts_ns:
        problems.append(f"the exec event's process start time {executed.start_ns} is not before the event")
    if executed.exe_nlink < 0:
        problems.append("the exec event carries no executable identity")
    elif executed.exe_name != me.exe_name or executed.exe_nlink == 0:
        problems.append(
            f"the exec event names the executable {executed.exe_name!r} (links {executed.exe_nlink}) where "
            f"{EXEC_PATH} is {me.exe_name!r}"
        )
    return problems


# --- driver ------------------------------------------------------------------------------------------------


def collect_checks(compile_test: bool | None = None) -> list[Check]:
    """Run every check; the compile test runs when asked, or by default when nothing else failed."""
    privileges = check_privileges()
    tracefs_check, tracefs = check_tracefs(can_mount=privileges.status == "ok")
    checks = [
        check_kernel(),
        check_btf(),
        privileges,
        tracefs_check,
        check_tracepoints(tracefs),
        check_bcc(),
        check_headers(),
    ]
    nothing_failed = all(check.status != "fail" for check in checks)
    if compile_test or (compile_test is None and nothing_failed):
        checks.append(check_compile())
    return checks


def _summary(checks: list[Check]) -> str:
    """One line a person can act on: can it run, and how many things to look at."""
    failed = [check.name for check in checks if check.status == "fail"]
    warned = [check.name for check in checks if check.status == "warn"]
    if failed:
        return f"sentinel cannot run here: {len(failed)} check(s) failed ({', '.join(failed)})"
    suffix = f" with {len(warned)} warning(s) ({', '.join(warned)})" if warned else ""
    return f"sentinel can run here{suffix}"


def run_doctor(as_json: bool = False, out: TextIO | None = None, compile_test: bool | None = None) -> int:
    """Print the checks (text or a JSON list) and return 0 when the agent can run, 1 otherwise."""
    out = sys.stdout if out is None else out
    checks = collect_checks(compile_test)
    if as_json:
        out.write(json.dumps([asdict(check) for check in checks], indent=2) + "\n")
    else:
        for check in checks:
            out.write(f"{check.status:<6}{check.name:<12}{check.detail}\n")
            if check.fix and check.status != "ok":
                out.write(f"{'':<18}fix: {check.fix}\n")
        out.write(_summary(checks) + "\n")
    return 1 if any(check.status == "fail" for check in checks) else 0
