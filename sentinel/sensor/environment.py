"""Facts about the host that decide whether (and how) the sensor can run.

The agent calls these before loading probes and ``sentinel doctor`` reports them, so both agree on what a
usable host is. Every function that reads the filesystem takes its root paths as parameters so that tests
can point it at a fake tree.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sentinel.syscalls import SYSCALLS

TRACEFS_PATH = "/sys/kernel/tracing"
DEBUGFS_TRACEFS_PATH = "/sys/kernel/debug/tracing"
MODULES_ROOT = "/lib/modules"
HEADERS_MODE_FILE = "/var/lib/sentinel/headers-mode"

CAP_DAC_READ_SEARCH = 2
CAP_IPC_LOCK = 14
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39

# Beyond CAP_BPF + CAP_PERFMON: what the agent does with each, and what it loses without (docs/privileges.md).
AGENT_CAPABILITIES: dict[int, tuple[str, str]] = {
    CAP_IPC_LOCK: ("CAP_IPC_LOCK", "the perf buffers exceed kernel.perf_event_mlock_kb and cannot be opened"),
    CAP_SYS_PTRACE: (
        "CAP_SYS_PTRACE",
        "/proc/PID/exe, cwd and ns of processes with more capabilities are unreadable: events lack them",
    ),
    CAP_DAC_READ_SEARCH: (
        "CAP_DAC_READ_SEARCH",
        "cgroup ids resolve by walking the cgroup tree instead of open_by_handle_at (slower)",
    ),
}

# Every tracepoint the probes attach to, as "<category>/<event>" under tracefs' events/.
REQUIRED_TRACEPOINTS: list[str] = [
    "sched/sched_process_fork",
    "sched/sched_process_exec",
    "sched/sched_process_exit",
    "syscalls/sys_enter_execve",
    "syscalls/sys_exit_execve",
    "syscalls/sys_enter_execveat",
    "syscalls/sys_exit_execveat",
    "syscalls/sys_enter_open",
    "syscalls/sys_exit_open",
    "syscalls/sys_enter_openat",
    "syscalls/sys_exit_openat",
    "syscalls/sys_enter_openat2",
    "syscalls/sys_exit_openat2",
    "syscalls/sys_enter_creat",
    "syscalls/sys_exit_creat",
    "syscalls/sys_enter_connect",
    "syscalls/sys_exit_connect",
    "syscalls/sys_enter_chdir",
    "syscalls/sys_exit_chdir",
    "syscalls/sys_enter_fchdir",
    "syscalls/sys_exit_fchdir",
    "syscalls/sys_enter_clone",
    "syscalls/sys_exit_clone",
    "syscalls/sys_enter_clone3",
    "syscalls/sys_exit_clone3",
    "syscalls/sys_enter_socket",
    "syscalls/sys_exit_socket",
]

# Probes compiled in only when their tracepoints exist (the loader's HAVE_TP_* macros): legacy syscalls newer
# arches never had (arm64, riscv: libc uses openat there, so nothing is lost) and calls older kernels lack
# (openat2 came in 5.6, clone3 in 5.3; without clone3 libc uses clone, which is watched).
# The security syscalls (sentinel.syscalls) are optional too: a kernel without CONFIG_MODULES has no
# init_module tracepoints, one without CONFIG_BPF_SYSCALL no bpf; each is reported as absent.
OPTIONAL_SYSCALLS = ("open", "creat", "openat2", "clone3", *(s.tracepoint for s in SYSCALLS.values()))
REQUIRED_TRACEPOINTS += [
    f"syscalls/sys_{half}_{s.tracepoint}" for s in SYSCALLS.values() for half in ("enter", "exit")
]
OPTIONAL_TRACEPOINTS: frozenset[str] = frozenset(
    f"syscalls/sys_{half}_{call}" for call in OPTIONAL_SYSCALLS for half in ("enter", "exit")
)

HeadersMode = Literal["matching", "substitute", "missing"]


def ensure_bpffs(directory: str) -> bool:
    """A BPF filesystem at ``directory`` (mounted there if it is an empty mount point): where the probes pin
    what must outlive the agent. False (and the agent runs without pinning) when it cannot be had."""
    if not os.path.isdir(directory):
        return False
    if _is_bpffs(directory):
        return True
    try:
        subprocess.run(["mount", "-t", "bpf", "bpf", directory], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return _is_bpffs(directory)


def _is_bpffs(directory: str) -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            return any(line.split()[1:3] == [directory, "bpf"] for line in fh if len(line.split()) > 2)
    except OSError:
        return False


class EnvironmentProblem(Exception):
    """The host lacks something the sensor needs; the message says what to do about it."""


@dataclass(frozen=True)
class HeadersInfo:
    """Which kernel headers bcc will compile against, relative to the running kernel."""

    mode: HeadersMode
    running: str
    headers_version: str | None
    build_path: str | None
    detail: str


# --- kernel ------------------------------------------------------------------------------------------------


def kernel_release() -> str:
    """The running kernel's release string, as `uname -r` prints it."""
    return os.uname().release


def kernel_version_tuple(release: str | None = None) -> tuple[int, int, int]:
    """Leading numeric version of a release ("6.18.44-fc-v669" -> (6, 18, 44)); missing parts are 0."""
    release = kernel_release() if release is None else release
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", release)
    if not match:
        return (0, 0, 0)
    major, minor, patch = (int(part) if part else 0 for part in match.groups())
    return (major, minor, patch)


# --- kernel headers ----------------------------------------------------------------------------------------

_UTS_RE = re.compile(r'^\s*#define\s+UTS_RELEASE\s+"([^"]+)"', re.MULTILINE)


def _tree_version(tree: Path) -> str:
    """Version of a header tree: its generated utsrelease.h, else its directory name."""
    try:
        match = _UTS_RE.search((tree / "include/generated/utsrelease.h").read_text(errors="replace"))
    except OSError:
        match = None
    if match:
        return match.group(1)
    return tree.name.removeprefix("linux-headers-")


def headers_mode(release: str | None = None, modules_root: str = MODULES_ROOT) -> HeadersInfo:
    """Classify the headers bcc would use: ``/lib/modules/<release>/build`` (and ``source``), as bcc does."""
    running = kernel_release() if release is None else release
    moddir = Path(modules_root) / running
    build = moddir / "build"
    if not build.is_dir():
        what = f"{build} is a broken link to {os.readlink(build)}" if build.is_symlink() else f"no {build}"
        return HeadersInfo(
            "missing", running, None, None, f"{what} (the kernel headers bcc compiles against)"
        )
    tree = build.resolve()
    if not (tree / "Makefile").is_file() or not (tree / "include").is_dir():
        return HeadersInfo(
            "missing",
            running,
            None,
            str(tree),
            f"{tree} is not a kernel header tree (no Makefile or include/)",
        )
    source = moddir / "source"
    if not (tree / "include/linux").is_dir() and not (source / "include/linux").is_dir():
        return HeadersInfo(
            "missing",
            running,
            _tree_version(tree),
            str(tree),
            f"{tree} lacks include/linux and {source} does not provide it "
            "(Debian splits headers: link source to the matching -common tree)",
        )
    version = _tree_version(tree)
    if version == running:
        return HeadersInfo(
            "matching", running, version, str(tree), f"headers {version} match the running kernel"
        )
    return HeadersInfo(
        "substitute",
        running,
        version,
        str(tree),
        f"headers {version} used for kernel {running}: kernel struct offsets come from BTF, "
        "so struct layouts from these headers are never relied on",
    )


def recorded_headers_mode(path: str = HEADERS_MODE_FILE) -> str | None:
    """The mode scripts/setup.sh recorded, if it ran on this host."""
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


# --- tracefs -----------------------------------------------------------------------------------------------


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _tracefs_mounts(mounts_path: str) -> list[str]:
    """Mount points of every tracefs in the mount table, in table order."""
    points: list[str] = []
    try:
        with open(mounts_path) as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "tracefs":
                    # /proc/mounts escapes spaces and friends as octal (\040).
                    points.append(_OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), fields[1]))
    except OSError:
        pass
    return points


def find_tracefs(mounts_path: str = "/proc/mounts") -> str | None:
    """Where tracefs is mounted, preferring the locations bcc looks at; None when it is not mounted."""
    points = _tracefs_mounts(mounts_path)
    for preferred in (TRACEFS_PATH, DEBUGFS_TRACEFS_PATH):
        if preferred in points:
            return preferred
    return points[0] if points else None


def _mount_tracefs(target: str) -> None:
    """mount(2) directly, so the agent does not depend on mount(8) being on PATH."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", os.fsencode(target), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), target)


def ensure_tracefs(mounts_path: str = "/proc/mounts") -> str:
    """Return the tracefs mount point, mounting it at /sys/kernel/tracing first if nothing is mounted."""
    found = find_tracefs(mounts_path)
    if found:
        return found
    try:
        _mount_tracefs(TRACEFS_PATH)
    except OSError as exc:
        raise EnvironmentProblem(
            f"tracefs is not mounted and mounting it at {TRACEFS_PATH} failed ({exc.strerror}); "
            f"run as root: mount -t tracefs tracefs {TRACEFS_PATH} (or run scripts/setup.sh)"
        ) from exc
    return TRACEFS_PATH


def tracepoint_exists(tracefs: str, name: str) -> bool:
    """Whether ``<category>/<event>`` exists under tracefs (needs permission to read tracefs)."""
    return (Path(tracefs) / "events" / name).is_dir()


def missing_tracepoints(tracefs: str) -> tuple[list[str], list[str]]:
    """(required tracepoints that are absent, optional ones that are absent)."""
    absent = [name for name in REQUIRED_TRACEPOINTS if not tracepoint_exists(tracefs, name)]
    return (
        [name for name in absent if name not in OPTIONAL_TRACEPOINTS],
        [name for name in absent if name in OPTIONAL_TRACEPOINTS],
    )


# --- privileges --------------------------------------------------------------------------------------------


def effective_capabilities(status_text: str | None = None) -> int:
    """The CapEff bit mask of this process (or of a /proc/<pid>/status text)."""
    if status_text is None:
        status_text = Path("/proc/self/status").read_text()
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return 0


def missing_agent_capabilities(status_text: str | None = None) -> list[tuple[str, str]]:
    """(name, consequence) for each capability the agent uses beyond CAP_BPF + CAP_PERFMON that this
    process lacks in its effective set."""
    caps = effective_capabilities(status_text)
    return [info for cap, info in AGENT_CAPABILITIES.items() if not caps >> cap & 1]


def has_bpf_privileges(status_text: str | None = None, euid: int | None = None) -> tuple[bool, str]:
    """Whether BPF programs can be loaded and perf buffers read, and if not, what is missing.

    The effective capability set decides, not the uid: root inside a container may have dropped CAP_BPF,
    and a non-root service may hold exactly CAP_BPF + CAP_PERFMON.
    """
    euid = os.geteuid() if euid is None else euid
    caps = effective_capabilities(status_text)
    has = {cap: bool(caps >> cap & 1) for cap in (CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF)}
    who = "root" if euid == 0 else f"uid {euid}"
    if has[CAP_BPF] and has[CAP_PERFMON]:
        extra = "" if euid == 0 else " (non-root: see docs/privileges.md for the others the agent uses)"
        return True, f"{who} with CAP_BPF and CAP_PERFMON{extra}"
    if has[CAP_SYS_ADMIN]:
        return True, f"{who} with CAP_SYS_ADMIN (needed before 5.8; newer kernels need only BPF+PERFMON)"
    missing = [name for cap, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")) if not has[cap]]
    return False, (
        f"{who} lacks {' and '.join(missing)}: run as root, or grant CAP_BPF and CAP_PERFMON "
        "(e.g. systemd AmbientCapabilities=CAP_BPF CAP_PERFMON)"
    )


# --- identity and time -------------------------------------------------------------------------------------


def _read_first_line(*paths: str) -> str:
    """First non-empty file content among paths, stripped; "" when none can be read."""
    for path in paths:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return ""


def boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    """Identifies this boot: pids and kernel timestamps are only unique within one."""
    return _read_first_line(path)


def machine_id(paths: tuple[str, ...] = ("/etc/machine-id", "/var/lib/dbus/machine-id")) -> str:
    """Stable host identity for alerts; "" when the host has none (minimal containers)."""
    return _read_first_line(*paths)


def boot_time_ns() -> int:
    """Wall-clock epoch ns at boot, to turn bpf_ktime_get_boot_ns() stamps into wall time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
