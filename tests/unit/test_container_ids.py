"""Container identity from cgroup paths: every runtime's layouts, the host, strictness, nesting and fuzzing.

The paths are the ones the runtimes write (docker, containerd and Kubernetes through CRI, CRI-O, podman,
LXC/LXD, systemd-nspawn, libvirt-lxc), as ``/proc/PID/cgroup`` shows them on v1, v2 and hybrid hosts.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sentinel.containers import HOST, ContainerRef, container_from_cgroup, containers_in_cgroup, falco_fields
from sentinel.containers import k8s_pod_uid as pod_uid
from sentinel.containers.cgroup_path import (
    CONTAINERD,
    CRIO,
    DOCKER,
    LIBVIRT_LXC,
    LXC,
    NSPAWN,
    PODMAN,
)

A = "3ad7b26ded6d8e7b23da7d48fe889434573036c27ae5a74837233de441c3601e"
B = "9f0c1d2e3b4a59687766554433221100ffeeddccbbaa99887766554433221100"
P = "5e1c0f8ad2b34c6a9e7f00112233445566778899aabbccddeeff001122334455"  # a podman pod id
U = "2f1e8c9a-1b2c-4d3e-9f8a-0123456789ab"  # a pod uid
U_ = U.replace("-", "_")  # as kubelet's systemd driver writes it in a slice name
STATIC = "0f6d1c2b3a4958677685a4b3c2d1e0f9"  # a static pod's uid: md5 hex, no dashes
BE = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U_}.slice"
BU = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{U_}.slice"
USER = "/user.slice/user-1000.slice/user@1000.service"
CONTAINERD_SERVICE = "/system.slice/containerd.service"
NSPAWN_SERVICE = "/machine.slice/systemd-nspawn@debian12.service"
DOCKER_A = ContainerRef(DOCKER, A, A[:12])
HEX_RUNTIMES = {DOCKER, CONTAINERD, CRIO, PODMAN}

# (path, runtime, full id or name, rootless)
CONTAINERS = [
    # docker: cgroupfs driver (the v1 lines of a v1 or hybrid host, or v2), systemd driver
    (f"/docker/{A}", DOCKER, A, False),
    (f"/system.slice/docker-{A}.scope", DOCKER, A, False),
    (f"/system.slice/docker-{A}.scope/init.scope", DOCKER, A, False),  # systemd inside, private cgroupns
    (f"{USER}/app.slice/docker-{A}.scope", DOCKER, A, True),  # rootless docker
    (f"{BE}/docker-{A}.scope", DOCKER, A, False),  # Kubernetes through cri-dockerd
    # containerd: Kubernetes (cgroupfs and systemd drivers, guaranteed/burstable/besteffort), ctr, nerdctl
    (f"/kubepods/besteffort/pod{U}/{A}", CONTAINERD, A, False),
    (f"/kubepods/pod{U}/{A}", CONTAINERD, A, False),
    (f"/kubepods/burstable/pod{STATIC}/{A}", CONTAINERD, A, False),
    (f"{BE}/cri-containerd-{A}.scope", CONTAINERD, A, False),
    (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{A}.scope", CONTAINERD, A, False),
    (f"{CONTAINERD_SERVICE}/kubepods-burstable-pod{U_}.slice:cri-containerd:{A}", CONTAINERD, A, False),
    (f"/default/{A}", CONTAINERD, A, False),  # ctr run: /<namespace>/<id>
    (f"/k8s.io/{A}", CONTAINERD, A, False),
    (f"/system.slice/nerdctl-{A}.scope", CONTAINERD, A, False),
    # CRI-O: systemd driver (and crun's sub-cgroup), cgroupfs driver
    (f"{BU}/crio-{A}.scope", CRIO, A, False),
    (f"{BU}/crio-{A}.scope/container", CRIO, A, False),
    (f"/kubepods/burstable/pod{U}/crio-{A}", CRIO, A, False),
    (f"/crio/{A}", CRIO, A, False),
    # podman: systemd (root, pods, rootless, the "container" sub-cgroup of cgroup v2 delegation), cgroupfs
    (f"/machine.slice/libpod-{A}.scope", PODMAN, A, False),
    (f"/machine.slice/libpod-{A}.scope/container", PODMAN, A, False),
    (f"/machine.slice/machine-libpod_pod_{P}.slice/libpod-{A}.scope/container", PODMAN, A, False),
    (f"/libpod_parent/libpod-{A}", PODMAN, A, False),
    (f"/libpod_parent/{P}/libpod-{A}", PODMAN, A, False),  # a pod's directory is not a container
    (f"/machine.slice/libpod-payload-{A}.scope", PODMAN, A, False),  # --cgroups=split
    (f"{USER}/user.slice/libpod-{A}.scope/container", PODMAN, A, True),
    (f"{USER}/user.slice/user-libpod_pod_{P}.slice/libpod-{A}.scope/container", PODMAN, A, True),
    # LXC (legacy /lxc/<name>, 3.x /lxc.payload/<name>, 4+ and LXD lxc.payload.<name>)
    ("/lxc/web01", LXC, "web01", False),
    ("/lxc/web01/system.slice/cron.service", LXC, "web01", False),
    ("/lxc.payload/web01", LXC, "web01", False),
    ("/lxc.payload.web01", LXC, "web01", False),
    ("/lxc.payload.web01/init.scope", LXC, "web01", False),
    ("/lxc.payload.myproject_web01", LXC, "myproject_web01", False),  # LXD project prefix
    (f"{USER}/app.slice/lxc.payload.web01", LXC, "web01", True),  # unprivileged LXC
    ("/lxc.payload.café", LXC, "café", False),  # printable non-ASCII names are names
    # systemd-nspawn: machinectl start (systemd-nspawn@.service --keep-unit), a plain run (machine-X.scope)
    (f"{NSPAWN_SERVICE}/payload", NSPAWN, "debian12", False),
    (f"{NSPAWN_SERVICE}/payload/system.slice/cron.service", NSPAWN, "debian12", False),
    ("/machine.slice/machine-debian12.scope/payload", NSPAWN, "debian12", False),
    ("/machine.slice/machine-debian12.scope", NSPAWN, "debian12", False),  # legacy hierarchy: no payload
    ("/machine.slice/machine-my\\x2dbox.scope/payload/init.scope", NSPAWN, "my-box", False),
    ("/machine.slice/machine-web\\x2d01\\x2eprod.scope/payload", NSPAWN, "web-01.prod", False),
    # libvirt-lxc (Falco's matcher; here so its machine scopes are not taken for nspawn)
    ("/machine.slice/machine-lxc\\x2d2293906\\x2dlibvirt\\x2dcontainer.scope/libvirt", LIBVIRT_LXC,
     "libvirt-container", False),
    ("/libvirt/lxc/mybox", LIBVIRT_LXC, "mybox", False),
    ("/mybox.libvirt-lxc", LIBVIRT_LXC, "mybox", False),
]  # fmt: skip

HOST_PATHS = [
    "/",
    "",
    "/init.scope",
    "/system.slice/ssh.service",
    "/system.slice/docker.service",
    "/system.slice/containerd.service",
    "/system.slice/crio.service",
    "/user.slice/user-1000.slice/session-3.scope",
    f"{USER}/app.slice/dbus.service",
    f"{USER}/init.scope",
    "/process_api/96bd5e31357a6c2d209eb5e4eb901075",  # Falco's containerd matcher calls this a container
    # conmon and monitors: the runtime's process beside the container, on the host
    f"/machine.slice/libpod-conmon-{A}.scope",
    f"{USER}/user.slice/libpod-conmon-{A}.scope",
    f"{BU}/crio-conmon-{A}.scope",
    f"/kubepods/burstable/pod{U}/crio-conmon-{A}",
    "/lxc.monitor.web01",
    "/lxc.monitor/web01",
    "/lxc.pivot",
    "/machine.slice/machine-debian12.scope/supervisor",
    "/machine.slice/systemd-nspawn@debian12.service",  # nspawn itself (and, on v1, its payload: unknowable)
    "/machine.slice/systemd-nspawn@debian12.service/supervisor",
    "/machine.slice/machine-qemu\\x2d1\\x2dwin11.scope/libvirt/vcpu0",  # a VM: qemu is a host process
    # a pod or a pod's directory without a container
    BE,
    "/kubepods/besteffort",
    f"/kubepods/besteffort/pod{U}",
    f"/machine.slice/machine-libpod_pod_{P}.slice",
    f"/libpod_parent/{P}",
    "/docker",
    "/lxc",
    "/lxc/",
    "/lxc.payload.",
    "/lxc.payload/",
]

# Hostile or malformed names: never an id (each would otherwise be one character away from a real layout).
NOT_IDS = [
    f"/system.slice/docker-{A}.scope.evil",
    f"/system.slice/docker-{A}.scope\n",
    f"/system.slice/docker-{A}.scope ",
    f"/system.slice/docker-{A[:63]}.scope",  # 63 hex digits
    f"/system.slice/docker-{A}0.scope",  # 65
    f"/system.slice/docker-{A.upper()}.scope",  # upper case: no runtime writes it
    f"/system.slice/docker-{A[:10]}F{A[11:]}.scope",
    f"/docker/{A.upper()}",
    f"/docker/{A[:63]}",
    f"/docker/{A}0",
    f"/docker/g{A[1:]}",
    f"/docker/{A}.scope",
    f"/docker/{A[:32]}",
    f"/system.slice/xdocker-{A}.scope",
    f"/system.slice/docker_{A}.scope",
    f"/system.slice/docker--{A}.scope",
    f"/system.slice/docker-{A}.slice",
    f"/system.slice/docker-{A}.service",
    f"/system.slice/docker-{A}\x00.scope",
    f"/system.slice/docker-{A[:-1]}\u0661.scope",  # ARABIC-INDIC DIGIT ONE: \d would take it
    f"/system.slice/docker-{A[:-1]}\uff41.scope",  # FULLWIDTH LATIN SMALL LETTER A
    f"/system.slice/docker-{A[:-1]}\udcff.scope",  # a byte that is not UTF-8
    f"/system.slice/containerd.service/kubepods-pod{U_}.slice:cri-containerd:{A}:x",
    f"/system.slice/containerd.service/:cri-containerd:{A}",
    f"/machine.slice/libpod-conmon-{A}.scope/container",
    # names: the host's own name, whitespace, control characters, undecodable bytes, too long, dot names
    "/lxc.payload.host",
    "/lxc/host",
    "/lxc.payload.a b",
    "/lxc.payload.a\tb",
    "/lxc.payload.\x1b[31mred",
    "/lxc.payload.a\u200bb",  # ZERO WIDTH SPACE: not printable
    "/lxc.payload.a\udcffb",
    "/lxc.payload." + "x" * 256,
    "/lxc.payload..",
    "/lxc/..",
    "/machine.slice/machine-host.scope/payload",
    "/machine.slice/machine-a\\x0ab.scope/payload",  # an escaped newline
    "/machine.slice/machine-a\\x2fb.scope/payload",  # an escaped slash
    "/machine.slice/machine-a\\x2.scope/payload",  # a broken escape
    "/machine.slice/machine-a\\b.scope/payload",
    "/machine.slice/machine-a\\x5cx2db.scope/payload",  # an escaped backslash: decoded once, then refused
    "/machine.slice/machine-" + "a" * 65 + ".scope/payload",
    "/machine.slice/machine-.scope/payload",
    "/machine.slice/machine-a b.scope/payload",
    "/machine.slice/machine-caf\\xc3\\xa9.scope/payload",  # not a hostname
    "/machine.slice/systemd-nspawn@host.service/payload",
]


@pytest.mark.parametrize(("path", "runtime", "full_id", "rootless"), CONTAINERS)
def test_each_runtime_layout(path: str, runtime: str, full_id: str, rootless: bool) -> None:
    """A container below a kubelet pod slice or directory carries the pod's uid (none of these nests)."""
    short = full_id[:12] if runtime in HEX_RUNTIMES else full_id
    pod = pod_uid(path) or ""
    assert container_from_cgroup(path) == ContainerRef(runtime, full_id, short, rootless, pod)


@pytest.mark.parametrize("path", HOST_PATHS)
def test_the_host(path: str) -> None:
    assert container_from_cgroup(path) is None
    assert containers_in_cgroup(path) == ()


@pytest.mark.parametrize("path", NOT_IDS)
def test_malformed_names_are_no_container(path: str) -> None:
    assert container_from_cgroup(path) is None


def test_short_id_is_falcos_twelve_characters() -> None:
    ref = container_from_cgroup(f"/system.slice/docker-{A}.scope")
    assert ref is not None
    assert (ref.id, ref.full_id) == ("3ad7b26ded6d", A)


def test_a_directory_below_a_mount_is_a_path_too() -> None:
    """A directory below a mount names the same container; the mount's own components match nothing."""
    for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"):
        assert container_from_cgroup(f"{mount}/system.slice/docker-{A}.scope") == DOCKER_A
        assert container_from_cgroup(mount) is None


def test_outermost_container_wins_and_the_chain_is_available() -> None:
    """A contained process can make cgroups below its own and name them anything: only the outer part of
    the path is the host's. Docker-in-docker and kind list their nested containers in the chain."""
    dind = f"/docker/{A}/docker/{B}"
    kind = f"/system.slice/docker-{A}.scope/kubepods/besteffort/pod{U}/{B}"
    forged = f"/system.slice/docker-{A}.scope/system.slice/docker-{B}.scope"
    for path, inner, pod in ((dind, DOCKER, ""), (kind, CONTAINERD, U), (forged, DOCKER, "")):
        assert container_from_cgroup(path) == ContainerRef(DOCKER, A, A[:12])
        chain = containers_in_cgroup(path)
        assert chain == (ContainerRef(DOCKER, A, A[:12]), ContainerRef(inner, B, B[:12], pod_uid=pod))
    lxc_docker = f"/lxc.payload.web01/system.slice/docker-{A}.scope"
    assert [r.runtime for r in containers_in_cgroup(lxc_docker)] == [LXC, DOCKER]


def test_rootless_only_below_a_users_manager() -> None:
    """A user@UID.service inside a container (its own systemd) does not make the container rootless."""
    inside = f"/system.slice/docker-{A}.scope/user.slice/user-1000.slice/user@1000.service/app.slice"
    assert container_from_cgroup(inside) == ContainerRef(DOCKER, A, A[:12], rootless=False)
    chain = containers_in_cgroup(f"/system.slice/docker-{A}.scope/{USER[1:]}/user.slice/libpod-{B}.scope")
    assert [r.rootless for r in chain] == [False, True]
    not_a_manager = f"/user.slice/user@x.service/libpod-{A}.scope"
    assert container_from_cgroup(not_a_manager) == ContainerRef(PODMAN, A, A[:12])


def test_the_pod_uid_is_the_one_above_the_container() -> None:
    """Only the pod slice or directory between the container and the one outside it counts: kind's node
    container is in no pod, a pod's container does not hand its pod to a container nested deeper, and
    ``pod<uid>`` outside ``kubepods`` is no pod."""
    in_pod = ContainerRef(CONTAINERD, A, A[:12], False, U)
    assert container_from_cgroup(f"{BE}/cri-containerd-{A}.scope") == in_pod
    nested = f"/kubepods/besteffort/pod{U}/{A}/docker/{B}"
    assert [r.pod_uid for r in containers_in_cgroup(nested)] == [U, ""]
    assert container_from_cgroup(f"/pod{U}/{A}") == ContainerRef(CONTAINERD, A, A[:12])
    flat = f"{CONTAINERD_SERVICE}/kubepods-burstable-pod{U_}.slice:cri-containerd:{A}"
    assert container_from_cgroup(flat) == in_pod


def test_falco_fields_of_the_host_and_of_a_container() -> None:
    assert falco_fields(None) == {"container.id": HOST, "container.full_id": HOST, "container.type": HOST}
    ref = container_from_cgroup(f"{BU}/crio-{A}.scope")
    assert falco_fields(ref) == {"container.id": A[:12], "container.full_id": A, "container.type": "cri-o"}
    assert falco_fields(container_from_cgroup("/lxc.payload.web01"))["container.id"] == "web01"


@pytest.mark.parametrize(
    ("path", "uid"),
    [
        (f"/kubepods/besteffort/pod{U}/{A}", U),
        (f"/kubepods/pod{U}/{A}", U),
        (f"/kubepods/burstable/pod{U}", U),
        (f"{BE}/cri-containerd-{A}.scope", U),
        (f"{BU}/crio-{A}.scope/container", U),
        (f"/kubepods.slice/kubepods-pod{U_}.slice/cri-containerd-{A}.scope", U),
        (f"/system.slice/containerd.service/kubepods-burstable-pod{U_}.slice:cri-containerd:{A}", U),
        (f"/kubepods/burstable/pod{STATIC}/{A}", STATIC),
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice", STATIC),
        (f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
         f"kubelet-kubepods-besteffort-pod{U_}.slice/cri-containerd-{A}.scope", U),  # --cgroup-root=/kubelet
        (f"/system.slice/docker-{A}.scope/kubepods/besteffort/pod{U}/{B}", U),  # kind
        (f"/pod{U}/{A}", None),  # not below kubepods
        (f"/kubepods/besteffort/pod{U.upper()}/{A}", None),
        (f"/kubepods/besteffort/pod{U_}/{A}", None),  # underscores belong to the systemd form
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{U}.slice", None),  # nor dashes
        (f"/kubepods/besteffort/pod{U}x/{A}", None),
        (f"/kubepods/besteffort/pod{STATIC[:-1]}/{A}", None),
        ("/kubepods/besteffort/podxyz", None),
        (f"/system.slice/docker-{A}.scope", None),
        ("/", None),
    ],
)  # fmt: skip
def test_k8s_pod_uid(path: str, uid: str | None) -> None:
    assert pod_uid(path) == uid


# --- fuzzing -----------------------------------------------------------------------------------------------

_COMPONENT_FORMS = (
    "docker-{}.scope",
    "cri-containerd-{}.scope",
    "nerdctl-{}.scope",
    "crio-{}.scope",
    "crio-{}",
    "libpod-{}.scope",
    "libpod-{}",
    "libpod-payload-{}.scope",
    "libpod-payload-{}",
    "{}",
)


def assert_sound(ref: ContainerRef, path: str) -> None:
    """What any answer must be: a hex id in one of its runtime's exact forms in the path, or a valid name."""
    assert ref.runtime in HEX_RUNTIMES | {LXC, LIBVIRT_LXC, NSPAWN}
    if ref.runtime in HEX_RUNTIMES:
        assert re.fullmatch("[0-9a-f]{64}", ref.full_id)
        assert ref.id == ref.full_id[:12]
        parts = path.split("/")
        forms = {form.format(ref.full_id) for form in _COMPONENT_FORMS}
        assert any(p in forms or p.endswith(f".slice:cri-containerd:{ref.full_id}") for p in parts)
    else:
        assert ref.id == ref.full_id != HOST
        assert 0 < len(ref.id) <= 255 and ref.id.isprintable()
        assert not any(c.isspace() for c in ref.id) and ref.id not in (".", "..")
        assert ref.id in path or ref.runtime in (NSPAWN, LIBVIRT_LXC)  # machine names come unescaped


def check(path: str) -> None:
    ref = container_from_cgroup(path)
    chain = containers_in_cgroup(path)
    assert (ref is None) == (chain == ()) and (ref is None or chain[0] == ref)
    for r in chain:
        assert_sound(r, path)
        assert not r.pod_uid or r.pod_uid in path or r.pod_uid.replace("-", "_") in path
    pod_uid(path)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_bytes_never_crash_and_never_mint_an_id(data: bytes) -> None:
    check(data.decode("utf-8", "surrogateescape"))


_REAL_PARTS = [
    "", "system.slice", "kubepods", "kubepods.slice", "besteffort", f"pod{U}", "docker", "libpod_parent",
    "lxc", "lxc.payload", "lxc.payload.web", "lxc.monitor.web", "machine.slice", "machine-a\\x2db.scope",
    "payload", "supervisor", "user@1000.service", "systemd-nspawn@x.service", "libvirt", "crio", "container",
    A, B, f"docker-{A}.scope", f"libpod-conmon-{A}.scope", f"crio-{B}", f"k.slice:cri-containerd:{A}", "host",
]  # fmt: skip


def _mutate(part: str, how: int, ch: str) -> str:
    if not part:
        return ch
    at = how % (len(part) + 1)
    return [part[:at] + ch + part[at:], part[:at] + part[at + 1 :], part[:at] + ch + part[at + 1 :]][how % 3]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_REAL_PARTS),
            st.integers(0, 300),
            st.sampled_from(list("aF0-._: \n\x00/\\\udcff\u0661x")),
            st.booleans(),
        ),
        max_size=8,
    )
)
def test_fuzz_real_components_mutated(parts: list[tuple[str, int, str, bool]]) -> None:
    """Real components, some one character off: an answer is always one of the exact forms."""
    check("/" + "/".join(_mutate(p, how, ch) if mutate else p for p, how, ch, mutate in parts))


def test_every_one_character_change_of_an_id_is_refused() -> None:
    forms = ("/system.slice/docker-{}.scope", "/docker/{}", BU + "/crio-{}.scope", "/libpod_parent/libpod-{}")
    for form in forms:
        for i in range(64):
            for ch in ("g", "G", "A", "-", "", "00", " ", "\n"):
                bad = A[:i] + ch + A[i + 1 :]
                assert container_from_cgroup(form.format(bad)) is None, (form, bad)


def test_huge_and_deep_paths_are_linear() -> None:
    """Far beyond what the kernel writes (PATH_MAX): still an answer, quickly."""
    cases = [
        "/" + "a" * 2_000_000,
        "/x" * 200_000 + f"/docker-{A}.scope",
        "/lxc.monitor.x" * 100_000,
        "/" + "kubelet-" * 100_000 + "kubepods-podx.slice",
        "/" + "a-" * 200_000 + ".slice:cri-containerd:" + A,
        "/machine-" + "\\x2d" * 100_000 + ".scope",
    ]
    start = time.perf_counter()
    for path in cases:
        check(path)
    assert time.perf_counter() - start < 5.0
    assert container_from_cgroup("/x" * 200_000 + f"/docker-{A}.scope") == DOCKER_A
