"""Host environment detection: header trees, capabilities, tracefs, identity (doctor: test_doctor.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sentinel.sensor import environment as env

RUNNING = "6.18.44-fc-v669"


def _header_tree(root: Path, name: str, uts: str | None, *, with_linux: bool = True) -> Path:
    """A minimal Debian-like /usr/src/linux-headers-* tree."""
    tree = root / "usr/src" / name
    (tree / "include/generated").mkdir(parents=True)
    (tree / "Makefile").write_text("include ../linux-headers-common/Makefile\n")
    if uts is not None:
        (tree / "include/generated/utsrelease.h").write_text(f'#define UTS_RELEASE "{uts}"\n')
    if with_linux:
        (tree / "include/linux").mkdir()
    return tree


def _moddir(root: Path, release: str = RUNNING) -> Path:
    moddir = root / "lib/modules" / release
    moddir.mkdir(parents=True)
    return moddir


def test_headers_missing_when_no_build_link(tmp_path: Path) -> None:
    _moddir(tmp_path)
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "missing"
    assert info.running == RUNNING
    assert info.build_path is None


def test_headers_missing_when_release_dir_absent(tmp_path: Path) -> None:
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "missing"


def test_headers_missing_when_build_link_is_broken(tmp_path: Path) -> None:
    moddir = _moddir(tmp_path)
    (moddir / "build").symlink_to(tmp_path / "nowhere")
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "missing"
    assert "broken link" in info.detail


def test_headers_matching(tmp_path: Path) -> None:
    tree = _header_tree(tmp_path, f"linux-headers-{RUNNING}", RUNNING)
    (_moddir(tmp_path) / "build").symlink_to(tree)
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "matching"
    assert info.headers_version == RUNNING
    assert info.build_path == str(tree)


def test_headers_substitute_debian_split_tree(tmp_path: Path) -> None:
    arch = _header_tree(tmp_path, "linux-headers-6.1.0-56-amd64", "6.1.0-56-amd64", with_linux=False)
    common = _header_tree(tmp_path, "linux-headers-6.1.0-56-common", None)
    moddir = _moddir(tmp_path)
    (moddir / "build").symlink_to(arch)
    (moddir / "source").symlink_to(common)
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "substitute"
    assert info.headers_version == "6.1.0-56-amd64"
    assert info.running == RUNNING


def test_headers_split_tree_without_source_is_missing(tmp_path: Path) -> None:
    arch = _header_tree(tmp_path, "linux-headers-6.1.0-56-amd64", "6.1.0-56-amd64", with_linux=False)
    (_moddir(tmp_path) / "build").symlink_to(arch)
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "missing"
    assert "-common" in info.detail


def test_headers_version_falls_back_to_directory_name(tmp_path: Path) -> None:
    tree = _header_tree(tmp_path, "linux-headers-6.1.0-56-amd64", None)
    (_moddir(tmp_path) / "build").symlink_to(tree)
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "substitute"
    assert info.headers_version == "6.1.0-56-amd64"


def test_headers_not_a_header_tree(tmp_path: Path) -> None:
    moddir = _moddir(tmp_path)
    (moddir / "build").mkdir()
    info = env.headers_mode(RUNNING, str(tmp_path / "lib/modules"))
    assert info.mode == "missing"


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("6.18.44-fc-v669", (6, 18, 44)),
        ("6.1.0-56-amd64", (6, 1, 0)),
        ("5.8", (5, 8, 0)),
        ("4", (4, 0, 0)),
        ("garbage", (0, 0, 0)),
    ],
)
def test_kernel_version_tuple(release: str, expected: tuple[int, int, int]) -> None:
    assert env.kernel_version_tuple(release) == expected


def _status(cap_eff: int) -> str:
    return f"Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\nCapBnd:\t000001ffffffffff\n"


def test_privileges_full_root() -> None:
    ok, detail = env.has_bpf_privileges(_status(0x000001FFFEFFFFFF), euid=0)
    assert ok
    assert "root" in detail


def test_privileges_bpf_and_perfmon_only() -> None:
    ok, _ = env.has_bpf_privileges(_status(1 << env.CAP_BPF | 1 << env.CAP_PERFMON), euid=998)
    assert ok


@pytest.mark.parametrize(
    ("caps", "missing"),
    [
        (1 << env.CAP_BPF, "CAP_PERFMON"),
        (1 << env.CAP_PERFMON, "CAP_BPF"),
        (0, "CAP_BPF and CAP_PERFMON"),
    ],
)
def test_privileges_missing_caps_are_named(caps: int, missing: str) -> None:
    ok, detail = env.has_bpf_privileges(_status(caps), euid=1000)
    assert not ok
    assert missing in detail


def test_privileges_root_with_dropped_caps_is_refused() -> None:
    ok, detail = env.has_bpf_privileges(_status(0), euid=0)
    assert not ok
    assert "root" in detail


def test_privileges_cap_sys_admin_suffices() -> None:
    ok, _ = env.has_bpf_privileges(_status(1 << env.CAP_SYS_ADMIN), euid=0)
    assert ok


def test_find_tracefs_prefers_bcc_locations(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "proc /proc proc rw 0 0\n"
        "tracefs /mnt/my\\040trace tracefs rw 0 0\n"
        "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n"
    )
    assert env.find_tracefs(str(mounts)) == "/sys/kernel/debug/tracing"
    mounts.write_text("tracefs /mnt/my\\040trace tracefs rw 0 0\n")
    assert env.find_tracefs(str(mounts)) == "/mnt/my trace"
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert env.find_tracefs(str(mounts)) is None


def test_ensure_tracefs_returns_existing_mount_without_mounting(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("tracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n")
    assert env.ensure_tracefs(str(mounts)) == "/sys/kernel/tracing"


def test_tracepoints_optional_ones_are_separated(tmp_path: Path) -> None:
    for name in env.REQUIRED_TRACEPOINTS:
        if name not in env.OPTIONAL_TRACEPOINTS:
            (tmp_path / "events" / name).mkdir(parents=True)
    required, optional = env.missing_tracepoints(str(tmp_path))
    assert required == []
    assert set(optional) == env.OPTIONAL_TRACEPOINTS
    assert env.tracepoint_exists(str(tmp_path), "syscalls/sys_enter_openat")
    assert not env.tracepoint_exists(str(tmp_path), "syscalls/sys_enter_open")


def test_identity_helpers(tmp_path: Path) -> None:
    (tmp_path / "machine-id").write_text("abc123\n")
    assert env.machine_id((str(tmp_path / "absent"), str(tmp_path / "machine-id"))) == "abc123"
    assert env.machine_id((str(tmp_path / "absent"),)) == ""
    assert env.boot_id(str(tmp_path / "absent")) == ""


def test_boot_time_is_in_the_past() -> None:
    boot = env.boot_time_ns()
    year_2000_ns = 946_684_800 * 10**9
    assert year_2000_ns < boot < time.time_ns()


def test_missing_agent_capabilities_name_what_is_lost() -> None:
    full = env.missing_agent_capabilities(_status(0x000001FFFEFFFFFF))
    assert full == []
    bpf_only = env.missing_agent_capabilities(_status(1 << env.CAP_BPF | 1 << env.CAP_PERFMON))
    assert [name for name, _ in bpf_only] == ["CAP_IPC_LOCK", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
    assert "perf buffers" in bpf_only[0][1]
