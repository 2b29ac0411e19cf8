"""``/proc/PID/cgroup`` on v1, v2 and hybrid hosts, mountinfo, and the cgroup id resolver's walk (on plain
directories: file handles need a real cgroup2 mount, see tests/integration/test_container_cgroups.py)."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.containers import (
    Cgroup2Mount,
    CgroupInfo,
    CgroupResolver,
    ContainerRef,
    container_from_proc_cgroup,
    find_cgroup2_mount,
    parse_proc_cgroup,
    read_proc_cgroup,
)
from sentinel.containers.cgroup_ids import parse_cgroup2_mounts
from sentinel.containers.procfs import CgroupLine, proc_cgroup_answer

A = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
B = "9f0c1d2e3b4a59687766554433221100ffeeddccbbaa99887766554433221100"
DOCKER_A = ContainerRef("docker", A, A[:12])
DOCKER_B = ContainerRef("docker", B, B[:12])
V1_CONTROLLERS = ["cpu,cpuacct", "memory", "pids", "devices", "freezer", "blkio", "net_cls,net_prio"]


def v1_lines(path: str, systemd: str | None = None) -> str:
    lines = [f"{n}:{c}:{path}" for n, c in enumerate(V1_CONTROLLERS, 2)]
    lines.append(f"1:name=systemd:{systemd or path}")
    return "\n".join(lines) + "\n"


# --- /proc/PID/cgroup ------------------------------------------------------------------------------------


def test_v2_host() -> None:
    assert container_from_proc_cgroup(f"0::/system.slice/docker-{A}.scope\n") == DOCKER_A
    assert container_from_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n") is None


def test_v1_host_cgroupfs_driver() -> None:
    assert container_from_proc_cgroup(v1_lines(f"/docker/{A}")) == DOCKER_A
    assert container_from_proc_cgroup(v1_lines("/system.slice/ssh.service")) is None


def test_hybrid_host_prefers_the_unified_line_when_it_names_a_container() -> None:
    text = v1_lines(f"/docker/{B}") + f"0::/system.slice/docker-{A}.scope\n"
    assert container_from_proc_cgroup(text) == DOCKER_A


def test_hybrid_host_cgroupfs_driver_left_the_unified_line_at_the_daemon() -> None:
    """runc with the cgroupfs driver on a hybrid host: only the v1 lines name the container."""
    text = v1_lines(f"/docker/{A}") + "0::/system.slice/containerd.service\n"
    assert container_from_proc_cgroup(text) == DOCKER_A


def test_v1_lines_that_disagree_resolve_to_name_systemd_then_the_first() -> None:
    assert container_from_proc_cgroup(v1_lines(f"/docker/{A}", systemd=f"/docker/{B}")) == DOCKER_B
    assert container_from_proc_cgroup(v1_lines(f"/docker/{A}", systemd="/")) == DOCKER_A
    text = f"4:memory:/docker/{B}\n3:pids:/docker/{A}\n1:name=systemd:/\n"
    assert container_from_proc_cgroup(text) == DOCKER_B


def test_parse_keeps_colons_in_the_path() -> None:
    path = f"/system.slice/containerd.service/kubepods-pod1.slice:cri-containerd:{A}"
    assert parse_proc_cgroup(f"0::{path}\n") == [CgroupLine(0, (), path)]
    assert container_from_proc_cgroup(f"0::{path}\n") == ContainerRef("containerd", A, A[:12])


def test_parse_the_three_kinds_of_line() -> None:
    text = f"5:cpu,cpuacct:/a\n1:name=systemd:/b\n0::/docker/{A}\n"
    lines = parse_proc_cgroup(text)
    assert lines == [
        CgroupLine(5, ("cpu", "cpuacct"), "/a"),
        CgroupLine(1, ("name=systemd",), "/b"),
        CgroupLine(0, (), f"/docker/{A}"),
    ]
    assert [line.unified for line in lines] == [False, False, True]


def test_garbage_lines_are_skipped_never_used() -> None:
    garbage = [
        "",
        "garbage",
        f"x:cpu:/docker/{A}",
        "1:cpu",
        f"1:cpu:docker/{A}",  # not absolute
        f"-1:cpu:/docker/{A}",
        f"+1:cpu:/docker/{A}",
        f" 1:cpu:/docker/{A}",
        f"\u0661:cpu:/docker/{A}",  # ARABIC-INDIC DIGIT ONE: int() would take it
        f"99999999999:cpu:/docker/{A}",
        f"0:cpu:/docker/{A}",  # hierarchy 0 is v2's, which has no controllers
        f"3::/docker/{A}",  # and a v1 hierarchy has some
        f"3:cpu,:/docker/{A}",
        f"1:name=systemd:/docker/{A}\r",
        f"\x00:\x00:/docker/{A}",
    ]
    assert parse_proc_cgroup("\n".join(garbage)) == [CgroupLine(1, ("name=systemd",), f"/docker/{A}\r")]
    assert container_from_proc_cgroup("\n".join(garbage)) is None
    assert container_from_proc_cgroup("\n".join([*garbage, f"0::/docker/{A}"])) == DOCKER_A


def test_odd_bytes_in_a_path_are_kept() -> None:
    assert parse_proc_cgroup("0::/odd\udcff\x1b\n") == [CgroupLine(0, (), "/odd\udcff\x1b")]
    assert container_from_proc_cgroup("0::/odd\udcff\x1b\n") is None


def test_a_hierarchy_listed_twice_is_not_believed() -> None:
    """The kernel writes each hierarchy once; a text with two v2 lines is not the kernel's."""
    text = f"0::/system.slice/docker-{A}.scope\n0::/system.slice/docker-{B}.scope\n"
    assert parse_proc_cgroup(text) == []
    assert container_from_proc_cgroup(text + f"1:name=systemd:/docker/{B}\n") == DOCKER_B


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_proc_cgroup(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    for line in parse_proc_cgroup(text):
        assert line.path.startswith("/") and line.hierarchy >= 0
    ref = container_from_proc_cgroup(text)
    assert ref is None or ref.full_id in text or ref.runtime in ("systemd-nspawn", "libvirt-lxc")


def test_read_proc_cgroup(tmp_path: Path) -> None:
    assert parse_proc_cgroup(read_proc_cgroup(os.getpid()) or "")  # any host: v1, v2 or hybrid lines
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_bytes(b"0::/odd\xff\n")
    assert read_proc_cgroup(42, proc=str(tmp_path)) == "0::/odd\udcff\n"
    assert read_proc_cgroup(43, proc=str(tmp_path)) is None


# --- mountinfo --------------------------------------------------------------------------------------------

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_cgroup2_mount_of_a_hybrid_host() -> None:
    assert parse_cgroup2_mounts(MOUNTINFO) == [Cgroup2Mount("/sys/fs/cgroup/unified", "/")]


def test_cgroup2_mounts_escapes_optional_fields_and_subtrees() -> None:
    text = (
        "50 27 0:38 /system.slice/a\\040b /mnt/with\\040space\\134x rw shared:7 master:1 - cgroup2 x rw\n"
        "51 27 0:38 / /sys/fs/cgroup rw,nosuid shared:8 - cgroup2 cgroup2 rw,nsdelegate\n"
        "52 27 0:39 / /mnt/fake rw - tmpfs cgroup2 rw\n"  # a tmpfs whose source is named cgroup2
        "garbage line\n"
    )
    mounts = parse_cgroup2_mounts(text)
    assert mounts == [
        Cgroup2Mount("/mnt/with space\\x", "/system.slice/a b"),
        Cgroup2Mount("/sys/fs/cgroup", "/"),
    ]


def test_find_cgroup2_mount_prefers_the_whole_hierarchy(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    sub = "50 27 0:38 /sub /mnt/sub rw - cgroup2 cgroup2 rw\n"
    info.write_text(sub + "51 27 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert find_cgroup2_mount(str(info)) == Cgroup2Mount("/sys/fs/cgroup", "/")
    info.write_text(sub)
    assert find_cgroup2_mount(str(info)) == Cgroup2Mount("/mnt/sub", "/sub")
    info.write_text(MOUNTINFO.replace("cgroup2 cgroup2", "cgroup cgroup"))
    assert find_cgroup2_mount(str(info)) is None
    assert find_cgroup2_mount(str(tmp_path / "missing")) is None


# --- the resolver, walking (plain directories stand in for a cgroup2 mount) ---------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_tree(root: Path, *rels: str) -> dict[str, int]:
    inodes = {}
    for rel in rels:
        (root / rel).mkdir(parents=True, exist_ok=True)
        inodes[rel] = (root / rel).stat().st_ino
    return inodes


def test_walk_resolves_and_a_miss_storm_walks_once(tmp_path: Path) -> None:
    ino = make_tree(tmp_path, f"system.slice/docker-{A}.scope/container", "user.slice")
    clock = Clock()
    with CgroupResolver(Cgroup2Mount(str(tmp_path), "/"), walk_interval=5.0, clock=clock) as res:
        assert res.available and not res.uses_handles  # plain directories: no kernfs handles
        info = res.resolve(ino[f"system.slice/docker-{A}.scope/container"])
        assert info == CgroupInfo(f"/system.slice/docker-{A}.scope/container", DOCKER_A)
        assert res.resolve(ino["user.slice"]) == CgroupInfo("/user.slice", None)  # from the same walk
        assert res.resolve(tmp_path.stat().st_ino) == CgroupInfo("/", None)
        assert res.stats.walks == 1
        for unknown in range(10**9, 10**9 + 50):  # a storm of unknown ids: no second walk
            assert res.resolve(unknown) is None
        assert (res.stats.walks, res.stats.throttled) == (1, 50)
        late = make_tree(tmp_path, "machine.slice/machine-box.scope/payload")
        path = "machine.slice/machine-box.scope/payload"
        assert res.resolve(late[path]) is None  # made after the walk, next walk not due
        clock.now += 5.0
        assert res.resolve(late[path]) == CgroupInfo("/" + path, ContainerRef("systemd-nspawn", "box", "box"))
        assert res.stats.walks == 2
        before = res.stats.hits
        res.resolve(late[path])
        assert res.stats.hits == before + 1


def test_walk_of_a_subtree_mount_gives_hierarchy_paths(tmp_path: Path) -> None:
    ino = make_tree(tmp_path, "kubepods/besteffort")
    res = CgroupResolver(Cgroup2Mount(str(tmp_path), "/kind/node"), use_handles=False)
    assert res.resolve(ino["kubepods/besteffort"]) == CgroupInfo("/kind/node/kubepods/besteffort", None)
    assert res.resolve(tmp_path.stat().st_ino) == CgroupInfo("/kind/node", None)


def test_walk_and_cache_are_bounded(tmp_path: Path) -> None:
    ino = make_tree(tmp_path, *(f"d{i}" for i in range(10)))
    clock = Clock()
    res = CgroupResolver(Cgroup2Mount(str(tmp_path), "/"), max_walk_dirs=4, cache_size=2, clock=clock)
    found = [res.resolve(ino[f"d{i}"]) for i in range(10)]
    assert res.stats.walk_truncated == 1 and res.stats.walk_dirs == 4
    assert sum(info is not None for info in found) == 3  # the mount's own directory is one of the four
    assert len(res._cache) <= 2


def test_odd_names_and_bad_ids(tmp_path: Path) -> None:
    odd = os.fsencode(tmp_path) + b"/odd\xff\x1b[31m"
    os.mkdir(odd)
    res = CgroupResolver(Cgroup2Mount(str(tmp_path), "/"), use_handles=False)
    assert res.resolve(os.stat(odd).st_ino) == CgroupInfo("/odd\udcff\x1b[31m", None)
    for bad in (0, -1, 2**64, 2**70):
        assert res.resolve(bad) is None


def test_no_cgroup2_mount_is_not_available(tmp_path: Path) -> None:
    res = CgroupResolver(None)
    assert not res.available and res.resolve(1) is None
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO.replace("cgroup2 cgroup2", "cgroup cgroup"))
    assert not CgroupResolver.for_host(str(info)).available
    gone = CgroupResolver(Cgroup2Mount(str(tmp_path / "missing"), "/"))
    assert not gone.available and gone.resolve(1) is None


def test_what_an_exiting_task_shows_is_not_conclusive() -> None:
    """kernel/cgroup/cgroup.c: a zombie shows / in every v1 hierarchy; its v2 path gets " (deleted)" once its
    cgroup is removed. Neither says the process was on the host."""
    assert proc_cgroup_answer(v1_lines(f"/docker/{A}") + "0::/\n") == (DOCKER_A, True)
    assert proc_cgroup_answer(v1_lines("/system.slice/ssh.service") + "0::/\n") == (None, True)
    assert proc_cgroup_answer(v1_lines("/") + "0::/system.slice/containerd.service\n") == (None, False)
    assert proc_cgroup_answer(v1_lines("/")) == (None, False)
    assert proc_cgroup_answer(f"0::/system.slice/docker-{A}.scope (deleted)\n") == (None, False)
    assert proc_cgroup_answer("0::/user.slice/session-2.scope\n") == (None, True)
    assert proc_cgroup_answer("") == (None, True)
