"""systemd's notify protocol (sd_notify(3)), so that ``Type=notify`` and ``WatchdogSec=`` mean something.

``READY=1`` is sent once the probes are attached (a unit ordered after sentinel.service then starts with
the host watched), ``WATCHDOG=1`` from the agent's loop at half of ``$WATCHDOG_USEC`` — only from the loop:
a loop that stops progressing stops pinging and systemd restarts the agent — and ``STOPPING=1`` at
shutdown, each with a ``STATUS=`` line for ``systemctl status``. Messages are unix datagrams to
``$NOTIFY_SOCKET`` (a path, or an abstract name starting with ``@``). Without ``$NOTIFY_SOCKET`` (not under
systemd) every call does nothing; a failed send is counted, never raised: systemd's absence must not stop
detection.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


def socket_address(value: str) -> str | bytes | None:
    """``$NOTIFY_SOCKET`` as a connect address: ``@name`` is the abstract ``\\0name``; None if unusable."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value.startswith("/"):
        return value
    return None  # vsock addresses (vsock:CID:PORT) are for VMs and not supported here


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half the watchdog timeout), or None when no watchdog is asked of this process
    (``$WATCHDOG_PID`` names another one, or the values are not numbers)."""
    usec, for_pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    try:
        timeout_us = int(usec)
        if for_pid and int(for_pid) != pid:
            return None
    except ValueError:
        return None
    return timeout_us / 2e6 if timeout_us > 0 else None


class Notifier:
    """Sends notify messages for this process; inert when not started by systemd with ``Type=notify``."""

    def __init__(
        self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(env, os.getpid()) if self.address is not None else None
        self.clock = clock
        self.next_ping = 0.0
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None

    @property
    def active(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False (counted) when it could not be sent."""
        if self.address is None:
            return False
        text = "\n".join(line.replace("\n", " ") for line in lines)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(text.encode("utf-8", "replace"), self.address)
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        self.next_ping = self.clock()  # the first ping right away: the watchdog runs from READY on

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def tick(self) -> None:
        """From the agent's loop, every poll: a watchdog ping when one is due."""
        if self.interval is None:
            return
        now = self.clock()
        if now >= self.next_ping:
            self.next_ping = now + self.interval
            self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping: draining buffers, flushing outputs") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
