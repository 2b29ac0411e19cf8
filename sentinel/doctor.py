"""`sentinel doctor`: can the agent run on this host, and if not, what exactly to do about it.

Each check states its finding and a fix in plain words, because the person reading it is usually setting up
a host, not debugging sentinel. Warnings describe a degraded but correct agent; failures mean it cannot run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO

from sentinel.sensor import environment as env

Status = Literal["ok", "warn", "fail"]

MIN_KERNEL = (5, 8)
DISTRO_SITE = "/usr/lib/python3/dist-packages/"

# Counts its own getppid() calls: proves compile, load, attach and map reads all work, not just compile.
_TEST_PROGRAM = """
BPF_ARRAY(hits, u64, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != SELF_PID)
        return 0;
    int zero = 0;
    u64 *count = hits.lookup(&zero);
    if (count)
        __sync_fetch_and_add(count, 1);
    return 0;
}
"""


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


def check_btf() -> Check:
    """BTF is the only way to verify a struct offset on a kernel whose headers we lack."""
    if env.btf_available():
        return Check("btf", "ok", "/sys/kernel/btf/vmlinux readable")
    return Check(
        "btf",
        "warn",
        "/sys/kernel/btf/vmlinux missing or unreadable: struct offsets cannot be verified",
        "sentinel reads only tracepoint fields today, so events stay correct; "
        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
    )


def check_privileges() -> Check:
    """Loading probes and reading perf buffers needs CAP_BPF + CAP_PERFMON (or root)."""
    ok, detail = env.has_bpf_privileges()
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
                f"as root: mount -t tracefs tracefs {env.TRACEFS_PATH} (or run scripts/setup.sh)",
            ),
            None,
        )
    try:
        mounted = env.ensure_tracefs()
    except env.EnvironmentProblem as exc:
        return Check("tracefs", "fail", str(exc), "check that the kernel has CONFIG_TRACING=y"), None
    return Check("tracefs", "ok", f"was not mounted; mounted it at {mounted}"), mounted


def check_tracepoints(tracefs: str | None) -> Check:
    """Every probe attaches to a tracepoint; a missing required one means a blind spot."""
    if tracefs is None:
        return Check("tracepoints", "fail", "not checked: tracefs is unavailable", "fix tracefs first")
    if not os.access(os.path.join(tracefs, "events"), os.R_OK | os.X_OK):
        return Check(
            "tracepoints",
            "fail",
            f"cannot read {tracefs}/events as uid {os.geteuid()}",
            "run as root, or grant CAP_DAC_READ_SEARCH (tracefs is mode 0700)",
        )
    required, optional = env.missing_tracepoints(tracefs)
    total = len(env.REQUIRED_TRACEPOINTS)
    if required:
        return Check(
            "tracepoints",
            "fail",
            f"missing {len(required)} of {total}: {', '.join(required)}",
            "use a kernel with CONFIG_FTRACE_SYSCALLS=y and CONFIG_TRACEPOINTS=y",
        )
    note = f" (absent, optional on this arch: {', '.join(optional)})" if optional else ""
    return Check("tracepoints", "ok", f"{total - len(optional)} of {total} present{note}")


def check_bcc() -> Check:
    """bcc exists only as Debian's python3-bpfcc, so the interpreter and venv layout matter."""
    fix = (
        "install python3-bpfcc and run from a venv created with --system-site-packages by /usr/bin/python3 "
        "(scripts/setup.sh does both)"
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
    note = f" (setup.sh recorded: {recorded})" if recorded and recorded != info.mode else ""
    if info.mode == "matching":
        return Check("headers", "ok", f"{info.detail} ({info.build_path}){note}")
    if info.mode == "substitute":
        return Check(
            "headers",
            "warn",
            f"headers {info.headers_version} used for kernel {info.running} ({info.build_path}){note}",
            "sentinel reads only tracepoint fields and helpers, so events stay correct; run scripts/setup.sh "
            f"or install linux-headers-{info.running} on a production host",
        )
    return Check("headers", "fail", f"{info.detail}{note}", "bcc cannot compile probes: run scripts/setup.sh")


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


def check_compile() -> Check:
    """Compile, load and attach a tiny tracepoint program: the only proof that bcc works end to end."""
    started = time.monotonic()
    try:
        from bcc import BPF
    except Exception as exc:
        return Check("compile", "fail", f"not tried: import bcc failed ({exc})", "fix the bcc check first")
    with _capture_native_output() as captured:
        try:
            bpf = BPF(text=_TEST_PROGRAM, cflags=[f"-DSELF_PID={os.getpid()}"])
        except Exception as exc:
            output = _tail(captured)
            return Check(
                "compile",
                "fail",
                f"bcc could not compile/load a test program: {exc}" + (f" [{output}]" if output else ""),
                "run scripts/setup.sh (kernel headers, tracefs), then rerun `sentinel doctor`",
            )
    try:
        os.getppid()
        hits = bpf["hits"][0].value
    finally:
        bpf.cleanup()
    elapsed = time.monotonic() - started
    if hits < 1:
        return Check(
            "compile",
            "fail",
            f"test program attached in {elapsed:.1f} s but saw none of our syscalls",
            "check that syscall tracepoints fire (perf trace, or bpftrace) on this kernel",
        )
    return Check("compile", "ok", f"test tracepoint program compiled, attached and fired in {elapsed:.1f} s")


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
