"""Security syscall events off the wire, through captures and into documents, hostile input included."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.alerts.ecs import EcsRenderer
from sentinel.capture import CaptureReader, CaptureWriter, capture_header
from sentinel.events import Event, EventType
from sentinel.host import HostInfo
from sentinel.sensor import decoder
from sentinel.syscalls import MOUNT_FLAGS, SYSCALLS, arguments, clone_flag_names, flag_names, namespaces

HOST = HostInfo(hostname="h", machine_id="m", boot_id="b", kernel="6.18", boot_time_ns=1_700_000_000 * 10**9)


def sample(etype: int, args: tuple[int, ...], strs: list[bytes], extra: tuple[int, ...] = (0, 0, 0),
           lens: list[int] | None = None, nstr: int | None = None, ret: int = 0) -> bytes:  # fmt: skip
    header = decoder._BASE.pack(10, 0, 0, 42, 42, 0, 0, etype, 0, 0, b"caller") + bytes(48)
    lens = lens if lens is not None else [len(s) + 1 for s in strs] + [0] * (3 - len(strs))
    body = decoder.SYS_FIXED.pack(ret, *args, *extra, *lens, len(strs) if nstr is None else nstr)
    data = b"".join(s + b"\0" + bytes(decoder.SYS_STR_LEN - len(s) - 1) for s in strs)
    if strs:  # the probe sends up to the end of the last string
        data = data[: (len(strs) - 1) * decoder.SYS_STR_LEN + len(strs[-1]) + 1]
    return header + body + data


def test_a_mount_off_the_wire() -> None:
    ev = decoder.decode(sample(EventType.MOUNT, (1, 2, 3, 6, 0, 0), [b"src", b"/mnt/\xff", b"tmpfs"], ret=-2))
    assert ev.type is EventType.MOUNT and ev.ret == -2
    assert ev.sys_strs == ("src", "/mnt/\udcff", "tmpfs")
    assert arguments(ev)["flags"] == (6, "NOSUID|NODEV")
    assert arguments(ev)["dir"][1] == "/mnt/\udcff"


@pytest.mark.parametrize(
    ("lens", "nstr"),
    [([9999, 9999, 9999], 3), ([0, 0, 0], 200), ([5000, 1, 1], 1)],
)
def test_hostile_lengths_never_read_past_the_sample(lens: list[int], nstr: int) -> None:
    data = sample(EventType.CHROOT, (0,) * 6, [b"/x"], lens=lens, nstr=nstr)
    ev = decoder.decode(data)
    assert len(ev.sys_strs) <= 3 and all(len(s) <= decoder.SYS_STR_LEN for s in ev.sys_strs)


def test_a_short_sample_is_a_decode_error() -> None:
    with pytest.raises(decoder.DecodeError):
        decoder.decode(sample(EventType.SETUID, (0,) * 6, [])[:-20])


def test_security_events_survive_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "c"
    ev = Event(EventType.PTRACE, 5, 7, 7, 0, 0, "gdb", ret=-1, sys_args=(16, 1234, 0, 0, 0, 0),
               sys_extra=(0, 0, 0))  # fmt: skip
    mount = Event(EventType.MOUNT, 6, 7, 7, 0, 0, "mount", sys_args=(1, 2, 3, 0x1000, 0, 0),
                  sys_strs=("/dev/sda1", "/mnt/\udcff", "ext4"))  # fmt: skip
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        w.write_event(ev)
        w.write_event(mount)
        w.write_event(Event(EventType.OPEN, 7, 7, 7, 0, 0, "cat", path="/etc/hosts"))
    got = [e for e in CaptureReader(path) if isinstance(e, Event)]
    assert got[0].sys_args == ev.sys_args and got[0].type is EventType.PTRACE
    assert got[1].sys_strs == mount.sys_strs
    assert got[2].sys_args == () and got[2].sys_strs == ()


def test_a_capture_record_with_bad_syscall_elements_is_corrupt(tmp_path: Path) -> None:
    import msgpack

    path = tmp_path / "c"
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        w.write_event(Event(EventType.KILL, 5, 7, 7, 0, 0, "k", sys_args=(1, 9, 0, 0, 0, 0)))
    raw = path.read_bytes()
    objs = list(msgpack.Unpacker(__import__("io").BytesIO(raw), raw=False))
    bad = list(objs[1])
    from sentinel.capture.format import EVENT_V6_FIELDS

    bad[-3 - len(EVENT_V6_FIELDS)] = [1, "nine"]  # sys_args: before sys_extra, sys_strs and the v6 fields
    path.write_bytes(msgpack.packb(objs[0]) + msgpack.packb(bad))
    reader = CaptureReader(path)
    assert not [e for e in reader if isinstance(e, Event)]
    assert reader.problem is not None and "sys_args[1]" in reader.problem.message


def test_documents_say_what_the_call_did() -> None:
    r = EcsRenderer(HOST)
    ev = Event(EventType.UNSHARE, 5, 7, 7, 0, 0, "unshare", sys_args=(0x10020000, 0, 0, 0, 0, 0))
    doc = r.event_doc(ev, None)
    assert doc["event"]["action"] == "unshare" and doc["event"]["category"] == ["process"]
    assert doc["sentinel"]["event"]["arg"] == {"flags": "CLONE_NEWNS|CLONE_NEWUSER"}
    assert doc["sentinel"]["event"]["namespaces"] == ["mnt", "user"]
    tamper = Event(EventType.TAMPER, 5, 9, 9, 0, 0, "kill", sys_args=(1, 9, 4242))
    tdoc = r.event_doc(tamper, None)
    assert tdoc["sentinel"]["event"]["tamper"] == {"kind": "signal", "target_tid": 4242, "signal": "SIGKILL"}
    ids = Event(EventType.SETRESUID, 5, 7, 7, 0, 0, "su", sys_args=(0, 0xFFFFFFFF, 0x7FFFFFF0, 0, 0, 0))
    idoc = r.event_doc(ids, None)["sentinel"]["event"]
    # uids as Falco prints them (the host's name, -1 unchanged, else the number); rawarg keeps the numbers
    assert idoc["arg"] == {"ruid": "root", "euid": "-1", "suid": "2147483632"}
    assert idoc["rawarg"] == {"ruid": 0, "euid": 0xFFFFFFFF, "suid": 0x7FFFFFF0}


def test_flag_names_follow_falco() -> None:
    assert flag_names(0, MOUNT_FLAGS) == "0" and flag_names(1 | (1 << 30), MOUNT_FLAGS) == "RDONLY|0x40000000"
    assert clone_flag_names(0x10000000 | 0x80) == "CLONE_NEWUSER|CLONE_NEWTIME"
    assert namespaces(0x40000000) == ["net"]
    assert all(spec.name == t.name.lower() for t, spec in SYSCALLS.items())


def test_tamper_alerts_are_critical_except_a_service_managers_stop() -> None:
    from sentinel.alerts import internal

    kill = Event(EventType.TAMPER, 5, 9, 9, 0, 0, "kill", sys_args=(1, 9, 4242))
    alert = internal.tamper(kill)
    assert alert.rule.priority == "critical" and "SIGKILL" in alert.output
    stop = internal.tamper(Event(EventType.TAMPER, 5, 1, 1, 0, 0, "systemd", sys_args=(1, 15, 4242)))
    assert stop.rule.priority == "notice" and stop.rule.name == "Agent stopped or reloaded by a signal"
    trace = internal.tamper(
        Event(EventType.TAMPER, 5, 7, 7, 0, 0, "gdb", sys_args=(2, 16, 4242)), previous=True
    )
    assert trace.extra["tamper"]["previous_instance"] and "previous instance" in trace.output


def test_bpf_access_and_fd_theft_are_their_own_tamper_kinds() -> None:
    from sentinel.alerts import internal

    opened = internal.tamper(Event(EventType.TAMPER, 5, 7, 7, 0, 0, "bpftool", sys_args=(4, 14, 881)))
    assert opened.rule.name == "Agent's BPF objects opened by another process"
    assert opened.rule.priority == "warning"
    assert "map 881" in opened.output and "BPF_MAP_GET_FD_BY_ID" in opened.output
    assert opened.extra["tamper"]["object_id"] == 881
    stolen = internal.tamper(Event(EventType.TAMPER, 5, 7, 7, 0, 0, "grab", sys_args=(5, 12, 4242)))
    assert stolen.rule.priority == "critical" and "fd theft fd 12" in stolen.output
    r = EcsRenderer(HOST)
    doc = r.event_doc(Event(EventType.TAMPER, 5, 7, 7, 0, 0, "bpftool", sys_args=(4, 13, 77)), None)
    assert doc["sentinel"]["event"]["tamper"] == {"kind": "bpf access", "command": "BPF_PROG_GET_FD_BY_ID",
                                                  "object_id": 77}  # fmt: skip
    doc = r.event_doc(Event(EventType.TAMPER, 5, 7, 7, 0, 0, "grab", sys_args=(5, 12, 4242)), None)
    assert doc["sentinel"]["event"]["tamper"] == {"kind": "fd theft", "target_tid": 4242, "fd": 12}


def test_setns_and_userns_facts_in_documents() -> None:
    from sentinel.syscalls import NS_KINDS, USERNS_KNOWN

    r = EcsRenderer(HOST)
    mnt = 1 << NS_KINDS.index("mnt")
    ev = Event(EventType.SETNS, 5, 7, 7, 0, 0, "nsenter", sys_args=(3, 0, 0, 0, 0, 0),
               sys_extra=(4026531841, mnt << 32, 4026531837 | USERNS_KNOWN))  # fmt: skip
    detail = r.event_doc(ev, None)["sentinel"]["event"]
    assert detail["setns"] == {"init_ns": ["mnt"], "ns_inode": 4026531841}
    assert detail["userns"] == {"level": 0, "inode": 4026531837}
    pidfd = Event(EventType.SETNS, 5, 7, 7, 0, 0, "x", sys_args=(5, 0x20000, 0, 0, 0, 0), sys_extra=(9, 1, 0))
    detail = r.event_doc(pidfd, None)["sentinel"]["event"]
    assert detail["setns"] == {"init_ns": ["mnt"], "ns_inode": 9, "pid": 1} and "userns" not in detail
    bare = Event(EventType.MOUNT, 5, 7, 7, 0, 0, "m", sys_args=(0,) * 6, sys_extra=(0, 0, 0))
    assert "userns" not in r.event_doc(bare, None)["sentinel"]["event"]  # not read: absent, never 0


def test_pidfd_getfd_off_the_wire_and_through_a_capture(tmp_path: Path) -> None:
    ev = decoder.decode(sample(EventType.PIDFD_GETFD, (3, 12, 0, 0, 0, 0), [], extra=(0, 4242, 0)))
    assert ev.type is EventType.PIDFD_GETFD and ev.type_name == "pidfd_getfd"
    assert arguments(ev) == {"pid_fd": (3, 3), "target_fd": (12, 12), "flags": (0, "0x0")}
    path = tmp_path / "c.msgpack"
    with CaptureWriter(path, capture_header("test", host=HOST.to_dict())) as w:
        w.write_event(ev)
    back = [item for item in CaptureReader(path) if isinstance(item, Event)]
    assert back and back[0].sys_extra == (0, 4242, 0)


def test_own_bpf_ids_and_init_namespaces_from_proc(tmp_path: Path) -> None:
    import os

    from sentinel.sensor.loader import init_namespace_bits, own_bpf_object_ids
    from sentinel.syscalls import NS_KINDS

    (tmp_path / "fd").mkdir()
    (tmp_path / "fdinfo").mkdir()
    for fd, link, info in (
        ("3", "anon_inode:bpf-map", "pos:\t0\nmap_type:\t1\nmap_id:\t881\n"),
        ("4", "anon_inode:bpf-prog", "prog_type:\t5\nprog_id:\t902\n"),
        ("5", "/etc/passwd", "pos:\t0\nmap_id:\t999\n"),  # not a BPF object, whatever its fdinfo says
        ("6", "anon_inode:bpf-map", "map_id:\tnot-a-number\n"),
    ):
        os.symlink(link, tmp_path / "fd" / fd)
        (tmp_path / "fdinfo" / fd).write_text(info)
    os.symlink("anon_inode:bpf-map", tmp_path / "fd" / "7")  # closed before its fdinfo was read
    assert own_bpf_object_ids(str(tmp_path)) == {881, 902}
    ns = tmp_path / "ns"
    ns.mkdir()
    for name in ("mnt", "pid", "net", "user"):
        (ns / name).write_text("")
    os.link(ns / "pid", ns / "pid_for_children")
    (ns / "bogus").write_text("")
    bits, source = init_namespace_bits(str(ns))
    assert bits[os.stat(ns / "pid").st_ino] == 1 << NS_KINDS.index("pid")
    assert bits[os.stat(ns / "mnt").st_ino] == 1 << NS_KINDS.index("mnt")
    assert len(bits) == 4 and source == str(ns)
    # /proc/1/ns refused: the kernel's fixed numbers (mnt and net only from 6.18).
    old, where = init_namespace_bits(str(tmp_path / "missing"), release="6.1.0-27-amd64")
    assert 0xEFFFFFFC in old and 0xEFFFFFF8 not in old
    assert where == "kernel constants (cgroup,ipc,pid,time,user,uts)"
    new, _ = init_namespace_bits(str(tmp_path / "missing"), release="6.18.44-fc")
    assert new[0xEFFFFFF8] == 1 << NS_KINDS.index("mnt") and len(new) == 8
