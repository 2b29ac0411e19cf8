"""Container identity on this machine's real cgroup2 hierarchy.

Cgroups are made by hand with the names each runtime gives them (the runtimes themselves are not installed
here), a process is moved into each, and its cgroup id (the directory's inode, what
``bpf_get_current_cgroup_id`` returns) is resolved back to the path and the container: by file handle, by
walking, and through ``/proc/PID/cgroup``. Everything made is removed afterwards.

Needs root and a cgroup2 mount. Never skips: without them it fails and says why.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sentinel.containers import (
    Cgroup2Mount,
    CgroupResolver,
    ContainerRef,
    container_from_proc_cgroup,
    find_cgroup2_mount,
    read_proc_cgroup,
)
from sentinel.containers.cgroup_ids import FILEID_KERNFS

pytestmark = pytest.mark.kernel

A = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
U_ = "2f1e8c9a_1b2c_4d3e_9f8a_0123456789ab"
POD = U_.replace("_", "-")  # the pod uid as Kubernetes writes it (the systemd form has underscores)
USER = "user.slice/user-1000.slice/user@1000.service"

# (directory below the test's own top directory, the container expected)
LAYOUTS: list[tuple[bytes, ContainerRef | None]] = [
    (f"docker/{A}".encode(), ContainerRef("docker", A, A[:12])),
    (f"system.slice/docker-{A}.scope".encode(), ContainerRef("docker", A, A[:12])),
    (
        f"kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice/cri-containerd-{A}.scope".encode(),
        ContainerRef("containerd", A, A[:12], pod_uid=POD),
    ),
    (
        f"system.slice/containerd.service/kubepods-burstable-pod{U_}.slice:cri-containerd:{A}".encode(),
        ContainerRef("containerd", A, A[:12], pod_uid=POD),
    ),
    (f"kubepods/besteffort/pod{POD}/crio-{A}".encode(), ContainerRef("cri-o", A, A[:12], pod_uid=POD)),
    (f"machine.slice/libpod-{A}.scope/container".encode(), ContainerRef("podman", A, A[:12])),
    (f"machine.slice/libpod-conmon-{A}.scope".encode(), None),
    (
        f"{USER}/user.slice/libpod-{A}.scope/container".encode(),
        ContainerRef("podman", A, A[:12], rootless=True),
    ),
    (b"lxc.payload.web01", ContainerRef("lxc", "web01", "web01")),
    (b"lxc.monitor.web01", None),
    (b"machine.slice/machine-my\\x2dbox.scope/payload", ContainerRef("systemd-nspawn", "my-box", "my-box")),
    (b"machine.slice/machine-my\\x2dbox.scope/supervisor", None),
    (b"system.slice/ssh.service", None),
    (f"system.slice/docker-{A}.scope.evil".encode(), None),
    (b"odd\xff\x1b[31m name/x", None),
]


@dataclass
class Placed:
    rel: bytes
    path: str  # in the hierarchy, as /proc/PID/cgroup writes it
    inode: int
    proc: subprocess.Popen[bytes]
    expected: ContainerRef | None


def require_cgroup2() -> Cgroup2Mount:
    if os.geteuid() != 0:
        pytest.fail("container cgroup tests need root: run the suite with scripts/run-tests.sh as root")
    mount = find_cgroup2_mount()
    if mount is None:
        pytest.fail("no cgroup2 mount in /proc/self/mountinfo: these tests need a v2 or hybrid host")
    if mount.root != "/":
        pytest.fail(f"the cgroup2 mount {mount.mount_point} shows {mount.root}, not the whole hierarchy")
    return mount


def move(pid: int, directory: bytes) -> None:
    with open(directory + b"/cgroup.procs", "w") as f:
        f.write(str(pid))


def remove_tree(top: bytes) -> None:
    """rmdir bottom up; a cgroup whose last process has just been reaped may report EBUSY for a moment."""
    for _ in range(50):
        dirs = [root for root, _, _ in os.walk(top)] if os.path.isdir(top) else []
        for d in sorted(dirs, key=len, reverse=True):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
        if not os.path.exists(top):
            return
        time.sleep(0.05)
    raise AssertionError(f"could not remove {top!r}")


@pytest.fixture(scope="module")
def mount() -> Cgroup2Mount:
    return require_cgroup2()


@pytest.fixture(scope="module")
def top(mount: Cgroup2Mount) -> Iterator[tuple[bytes, str]]:
    """The test's own directory at the top of the hierarchy: (its mount path, its hierarchy path)."""
    name = f"sentinel-test-{os.getpid()}-{secrets.token_hex(4)}"
    directory = os.fsencode(mount.mount_point) + b"/" + name.encode()
    os.mkdir(directory)
    try:
        yield directory, "/" + name
    finally:
        remove_tree(directory)


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def placed(top: tuple[bytes, str]) -> Iterator[list[Placed]]:
    directory, hierarchy_path = top
    out: list[Placed] = []
    try:
        for rel, expected in LAYOUTS:
            cg = directory + b"/" + rel
            os.makedirs(cg)
            proc = sleeper()
            move(proc.pid, cg)
            path = hierarchy_path + "/" + rel.decode("utf-8", "surrogateescape")
            out.append(Placed(rel, path, os.stat(cg).st_ino, proc, expected))
        yield out
    finally:
        for p in out:
            p.proc.kill()
            p.proc.wait()


def layout_id(rel: bytes) -> str:
    return rel.decode("ascii", "backslashreplace")[-60:]


def test_kernel_facts_the_resolver_relies_on(top: tuple[bytes, str]) -> None:
    """The file handle of a cgroup2 directory is its inode (the kernfs id); v2 cgroups cannot be renamed;
    a cgroup name cannot hold a newline (so /proc/PID/cgroup lines cannot be forged)."""
    directory, _ = top
    d = directory + b"/facts"
    os.mkdir(d)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(struct.pack("=Ii", 128, 0) + bytes(128))
        mount_id = ctypes.c_int()
        assert libc.name_to_handle_at(-100, d, buf, ctypes.byref(mount_id), 0) == 0, os.strerror(
            ctypes.get_errno()
        )
        size, kind = struct.unpack_from("=Ii", buf.raw)
        assert (size, kind) == (8, FILEID_KERNFS)
        assert struct.unpack_from("=Q", buf.raw, 8)[0] == os.stat(d).st_ino
        with pytest.raises(PermissionError):
            os.rename(d, d + b"-renamed")
        with pytest.raises(OSError) as exc:
            os.mkdir(d + b"/a\nb")
        assert exc.value.errno == errno.EINVAL
    finally:
        os.rmdir(d)


def test_handles_are_used_as_root(mount: Cgroup2Mount) -> None:
    with CgroupResolver(mount) as res:
        assert res.uses_handles
        root = res.resolve(os.stat(mount.mount_point).st_ino)
        assert root is not None and root.path == "/" and root.container is None


@pytest.mark.parametrize("walk", [False, True], ids=["handle", "walk"])
def test_each_layout_resolves_from_its_id(mount: Cgroup2Mount, placed: list[Placed], walk: bool) -> None:
    with CgroupResolver(mount, use_handles=not walk) as res:
        assert res.uses_handles is not walk
        for p in placed:
            info = res.resolve(p.inode)
            assert info is not None, layout_id(p.rel)
            assert (info.path, info.container) == (p.path, p.expected), layout_id(p.rel)
        if walk:
            assert res.stats.walks == 1  # one walk answered every layout
        else:
            assert res.stats.walks == 0 and res.stats.handle_opens == len(placed)


def test_proc_cgroup_agrees(placed: list[Placed]) -> None:
    """The 0:: line of each process is the resolver's path, and names the same container."""
    for p in placed:
        text = read_proc_cgroup(p.proc.pid)
        assert text is not None
        assert f"0::{p.path}\n" in text, layout_id(p.rel)
        assert container_from_proc_cgroup(text) == p.expected, layout_id(p.rel)


@pytest.mark.parametrize("walk", [False, True], ids=["handle", "walk"])
def test_a_removed_cgroup_is_unknown(mount: Cgroup2Mount, top: tuple[bytes, str], walk: bool) -> None:
    directory, _ = top
    cg = directory + f"/gone-{int(walk)}/docker-{A}.scope".encode()
    os.makedirs(cg)
    inode = os.stat(cg).st_ino
    remove_tree(os.path.dirname(cg))
    with CgroupResolver(mount, use_handles=not walk) as res:
        assert res.resolve(inode) is None
        assert res.resolve(inode) is None
        if walk:
            assert (res.stats.walks, res.stats.throttled) == (1, 1)
        else:
            assert (res.stats.gone, res.stats.walks) == (1, 0)


BPF_PROGRAM = rb"""
BPF_HASH(ids, u32, u64);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 id = bpf_get_current_cgroup_id();
    ids.update(&tgid, &id);
    return 0;
}
"""


def test_bpf_cgroup_id_is_the_directory_inode(mount: Cgroup2Mount, top: tuple[bytes, str]) -> None:
    """End to end: the id a probe reads for a process resolves to the container it was placed in."""
    try:
        from bcc import BPF
    except ImportError as exc:
        pytest.fail(f"cannot import bcc ({exc}): use the project venv (system site packages)")
    directory, hierarchy_path = top
    rel = f"bpf/system.slice/docker-{A}.scope"
    cg = directory + b"/" + rel.encode()
    os.makedirs(cg)
    bpf = BPF(text=BPF_PROGRAM)
    code = "import os, sys; sys.stdin.readline(); os.getppid()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        move(child.pid, cg)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert child.wait(30) == 0
        ids = {k.value: v.value for k, v in bpf[b"ids"].items()}
        assert ids.get(child.pid) == os.stat(cg).st_ino
        with CgroupResolver(mount) as res:
            info = res.resolve(ids[child.pid])
        assert info is not None
        assert (info.path, info.container) == (f"{hierarchy_path}/{rel}", ContainerRef("docker", A, A[:12]))
    finally:
        child.kill()
        child.wait()
        bpf.cleanup()
        remove_tree(directory + b"/bpf")
