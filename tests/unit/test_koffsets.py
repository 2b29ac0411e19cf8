"""Kernel offsets for the probes: all-or-nothing, sizes checked, optional login fields, fallbacks."""

from __future__ import annotations

from pathlib import Path

from sentinel.sensor.btf import BtfError
from sentinel.sensor.koffsets import NAMESPACES, OPTIONAL, PID_VIEW, REQUIRED, compute, kernel_offsets


class FakeBtf:
    """Answers offset_of/field_size/has_field from a table of (struct, path) -> (offset, size)."""

    def __init__(
        self, fields: dict[tuple[str, str], tuple[int, int]], sizes: dict[str, int] | None = None
    ) -> None:
        self.fields = fields
        self.sizes = {"upid": 16} if sizes is None else sizes

    def _get(self, struct: str, path: str) -> tuple[int, int]:
        try:
            return self.fields[(struct, path)]
        except KeyError:
            raise BtfError(f"struct {struct} has no field {path}") from None

    def offset_of(self, struct: str, path: str) -> int:
        return self._get(struct, path)[0]

    def field_size(self, struct: str, path: str) -> int:
        return self._get(struct, path)[1]

    def has_field(self, struct: str, path: str) -> bool:
        return (struct, path) in self.fields

    def size_of(self, struct: str) -> int:
        try:
            return self.sizes[struct]
        except KeyError:
            raise BtfError(f"no struct {struct}") from None


def full_layout() -> dict[tuple[str, str], tuple[int, int]]:
    """Every field the probes need, with struct cred laid out as in 6.x kernels."""
    fields: dict[tuple[str, str], tuple[int, int]] = {}
    for i, (struct, path, size) in enumerate({**REQUIRED, **OPTIONAL, **NAMESPACES, **PID_VIEW}.values()):
        fields[(struct, path)] = (8 * i, size or 16)
    fields[("upid", "nr")] = (0, 4)
    fields[("upid", "ns")] = (8, 8)
    cred = {"suid": 16, "euid": 24, "fsuid": 32, "sgid": 20, "egid": 28, "fsgid": 36}
    for name, offset in cred.items():
        fields[("cred", name)] = (offset, 4)
    fields[("cred", "cap_permitted")] = (56, 8)
    fields[("cred", "cap_effective")] = (64, 8)
    fields[("task_struct", "start_boottime")] = (1560, 8)
    fields[("file", "f_inode")] = (32, 8)
    fields[("file", "f_path")] = (64, 16)
    fields[("path", "mnt")] = (0, 8)
    fields[("path", "dentry")] = (8, 8)
    return fields


def test_every_offset_resolves() -> None:
    result = compute(FakeBtf(full_layout()))  # type: ignore[arg-type]
    assert result.available and result.mode == "btf" and result.login
    assert result.macros["K_FILE_SPAN_OFF"] == 32 and result.macros["K_FILE_SPAN_WORDS"] == 6
    assert result.macros["K_TASK_START_BOOTTIME"] == 1560
    flags = result.cflags()
    assert flags[0] == "-DHAVE_KOFFSETS" and "-DK_CRED_EUID=24" in flags


def test_one_missing_field_means_no_offsets_at_all_and_says_which() -> None:
    layout = full_layout()
    del layout[("file", "f_inode")]
    del layout[("mm_struct", "exe_file")]
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert not result.available and result.cflags() == []
    assert "f_inode" in result.problem and "exe_file" in result.problem  # every problem at once
    assert result.mode.startswith("none (")


def test_a_field_of_another_size_is_refused() -> None:
    layout = full_layout()
    layout[("inode", "i_ino")] = (64, 4)  # a 32-bit i_ino: the probe reads 8 bytes
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert not result.available and "i_ino is 4 bytes" in result.problem


def test_file_fields_too_far_apart_are_refused() -> None:
    layout = full_layout()
    layout[("file", "f_path")] = (200, 16)
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert not result.available and "f_path and f_inode" in result.problem


def test_without_audit_login_fields_are_left_out_but_the_rest_works() -> None:
    layout = full_layout()
    del layout[("task_struct", "loginuid")]
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert result.available and not result.login
    assert "K_TASK_LOGINUID" not in result.macros and "K_TASK_SESSIONID" not in result.macros


def test_namespace_offsets_are_all_or_none_and_apart_from_the_rest() -> None:
    layout = full_layout()
    layout[("pid", "numbers")] = (96, 0)
    layout[("upid", "nr")] = (4, 4)
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert result.namespaces and "-DHAVE_NS_OFFSETS" in result.cflags()
    assert result.macros["K_PID_NUMBERS_NR"] == 100 and "K_UPID_NR" not in result.macros
    del layout[("nsproxy", "pid_ns_for_children")]
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert result.available and not result.namespaces  # the rest still works
    assert "-DHAVE_NS_OFFSETS" not in result.cflags() and "K_CRED_USER_NS" not in result.macros


def test_pid_view_offsets_need_the_namespace_group_and_a_sane_upid() -> None:
    """The vpid and namespaces of exec and fork: all or none, and only with the namespace group (whose
    nsproxy and inum offsets they use). Without them the rest still works and events carry no view."""
    layout = full_layout()
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert result.pid_view and "-DHAVE_PIDVIEW_OFFSETS" in result.cflags()
    assert result.macros["K_UPID_SIZE"] == 16 and result.macros["K_UPID_NS"] == 8
    for sizes in ({}, {"upid": 8}, {"upid": 4096}):  # no struct upid, too small for its ns, not that struct
        broken = FakeBtf(layout, sizes)
        result = compute(broken)  # type: ignore[arg-type]
        assert result.available and result.namespaces and not result.pid_view
        assert "-DHAVE_PIDVIEW_OFFSETS" not in result.cflags() and "K_UPID_SIZE" not in result.macros
    without = dict(layout)
    del without[("task_struct", "thread_pid")]  # before 4.19: task->pids[PIDTYPE_PID].pid
    result = compute(FakeBtf(without))  # type: ignore[arg-type]
    assert result.available and not result.pid_view and "K_TASK_THREAD_PID" not in result.macros
    no_ns = dict(layout)
    del no_ns[("nsproxy", "mnt_ns")]
    result = compute(FakeBtf(no_ns))  # type: ignore[arg-type]
    assert result.available and not result.namespaces and not result.pid_view


def test_older_kernels_name_the_start_time_real_start_time() -> None:
    layout = full_layout()
    del layout[("task_struct", "start_boottime")]
    layout[("task_struct", "real_start_time")] = (1500, 8)
    result = compute(FakeBtf(layout))  # type: ignore[arg-type]
    assert result.macros["K_TASK_START_BOOTTIME"] == 1500


def test_missing_btf_file(tmp_path: Path) -> None:
    result = kernel_offsets(tmp_path / "vmlinux")
    assert not result.available and str(tmp_path / "vmlinux") in result.problem


def test_this_kernel_gives_every_offset() -> None:
    """The machines this project runs on have BTF; a kernel test would fail later anyway without it."""
    result = kernel_offsets()
    assert result.available, result.problem
    assert result.namespaces, "the namespace offsets (setns targets, pidfds, user namespaces) did not resolve"
    assert result.pid_view, "the pid view offsets (vpids and namespaces of exec and fork) did not resolve"
