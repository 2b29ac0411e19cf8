"""Facts about the host that produced the events: names, ids, kernel, and the boot epoch for timestamps.

The live agent reads them from the running system; replay takes them from the capture header, so rendered
documents carry the recording host's identity and correct wall-clock times.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import Any

from sentinel import __version__


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


# The kernel's fixed inode number of its initial pid namespace (PROC_PID_INIT_INO, since Linux 3.8).
INIT_PID_NS_INO = 0xEFFFFFFC


@dataclass(slots=True, frozen=True)
class HostInfo:
    hostname: str
    machine_id: str
    boot_id: str
    kernel: str
    boot_time_ns: int  # wall-clock epoch ns at boot: wall = boot_time_ns + CLOCK_BOOTTIME ns
    agent_version: str = __version__
    # Namespace inode numbers (0: unknown): the agent's mount namespace, where it resolves paths (a process
    # in another one names files the agent cannot look up by the same path), and pid 1's pid namespace.
    agent_mnt_ns: int = 0
    host_pid_ns: int = 0

    @property
    def agent_id(self) -> str:
        """Stable per host install, without leaking the machine id itself."""
        ident = f"sentinel:{self.machine_id or self.hostname}".encode("utf-8", "surrogateescape")  # any bytes
        return hashlib.sha256(ident).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostInfo:
        return cls(
            hostname=str(data.get("hostname", "")),
            machine_id=str(data.get("machine_id", "")),
            boot_id=str(data.get("boot_id", "")),
            kernel=str(data.get("kernel", "")),
            boot_time_ns=int(data.get("boot_time_ns", 0)),
            agent_version=str(data.get("agent_version", __version__)),
            agent_mnt_ns=_int(data.get("agent_mnt_ns")),
            host_pid_ns=_int(data.get("host_pid_ns")),
        )


def local_host() -> HostInfo:
    machine_id = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")
    boot_time_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    return HostInfo(
        hostname=socket.gethostname(),
        machine_id=machine_id,
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        kernel=os.uname().release,
        boot_time_ns=boot_time_ns,
        agent_mnt_ns=_ns_inode("/proc/self/ns/mnt"),
        host_pid_ns=_ns_inode("/proc/1/ns/pid") or INIT_PID_NS_INO,
    )


def _ns_inode(path: str) -> int:
    """The inode number of a namespace link, 0 when it cannot be read (pid 1's may be refused)."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _int(value: Any) -> int:
    """A header's optional integer (a capture from before it existed, or a hostile one: 0, unknown)."""
    return value if type(value) is int and 0 <= value < 1 << 64 else 0
