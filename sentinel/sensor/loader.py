"""Compile and attach the BCC probes, poll the perf buffers, and hand back time-ordered events.

One perf buffer per event family (exec, open, connect, proc) so that kernel-side losses are counted per type
by ``lost_cb``. Wakeups are batched (``wakeup_events``) because per-event wakeups cost ~7x on syscall-heavy
loops; a forced ``perf_buffer_consume`` after every poll drains CPUs whose batch is not full yet, so latency
stays bounded by the poll interval. Per-CPU rings are not ordered against each other: samples are sorted by
kernel time and the newest few milliseconds are held back until the next poll so a child's exec never
overtakes its parent's fork.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel import resources
from sentinel.events import Event, EventType
from sentinel.sensor.decoder import DecodeError, decode
from sentinel.sensor.environment import (
    OPTIONAL_SYSCALLS,
    ensure_bpffs,
    ensure_tracefs,
    kernel_version_tuple,
    tracepoint_exists,
)
from sentinel.sensor.koffsets import BTF_PATH, kernel_offsets
from sentinel.sensor.perfring import PerfReader
from sentinel.sensor.perfring import supported as perfring_supported
from sentinel.syscalls import NS_KINDS, TAMPER_BPF, tamper_fields

BUFFERS = ("exec", "open", "connect", "proc", "sys")
# Emptied in the middle of long batches too (Sensor.service): opens may be shed under overload, these never.
PRIORITY_BUFFERS = ("exec", "proc", "sys")
DECODE_SERVICE_EVERY = 2048  # records decoded between two reads of the priority rings (~5 ms)
TAMPER_PIN = "/sys/fs/bpf/sentinel_tamper"  # the kernel's record of tamper attempts, outliving the agent
STAT_NAMES = (
    "submit_failed_exec",
    "submit_failed_open",
    "submit_failed_connect",
    "submit_failed_proc",
    "open_suppressed",
    "exec_stash_miss",
    "stash_full",
    "argv_truncated",
    "submit_failed_sys",
    "loader_opens_filtered",
)


class SensorError(RuntimeError):
    """The probes could not be compiled or attached; the message says why and what to do."""


@dataclass(slots=True)
class SensorConfig:
    """Probe and transport settings (all have defaults that hold 50k events/s on 2 CPUs)."""

    # Per CPU, in 4 KiB pages. Execs get 2 MiB: a /bin/true exec is ~430 bytes, so ~1.6 s of 3,000 execs/s
    # on one CPU while the agent is stalled or starved (1 MiB lost execs in CI under an open storm).
    pages: dict[str, int] = field(
        default_factory=lambda: {"exec": 512, "open": 1024, "connect": 128, "proc": 256, "sys": 128}
    )
    wakeup_events: int = 64
    poll_timeout_ms: int = 50
    holdback_ms: float = 5.0
    # While events are held back, the next poll comes holdback_ms + 1 later — or busy_wait_ms when the last
    # poll brought busy_batch events or more: under load a poll every 6 ms (300 a second at 1,600 execs/s)
    # cost ~1.5 % of a CPU in per-poll work; a quiet host's alerts keep the short wait.
    busy_batch: int = 32
    busy_wait_ms: float = 20.0
    open_dedup_s: float = 30.0  # 0 disables in-kernel de-duplication of identical opens
    loader_opens: str = "filter"  # filter: ld.so's library opens after exec are counted, not sent; report
    ignore_pid: int = field(default_factory=os.getpid)
    scheduling: str = "batch"  # batch | normal | idle: see apply_scheduling
    # auto: read the rings directly (sentinel/sensor/perfring.py) where supported, else bcc's reader; "bcc"
    # and "mmap" force one (tests keep both working).
    perf_reader: str = "auto"
    # Where the kernel keeps tamper records (signals, ptrace aimed at the agent) across the agent's death;
    # $SENTINEL_TAMPER_PIN names another (one per agent when several run on a host; tests).
    tamper_pin: str = field(default_factory=lambda: os.environ.get("SENTINEL_TAMPER_PIN") or TAMPER_PIN)


SCHED_POLICIES = {"batch": os.SCHED_BATCH, "normal": os.SCHED_OTHER, "idle": os.SCHED_IDLE}


def apply_scheduling(name: str) -> str:
    """Run the agent under ``name``'s CPU scheduling policy; returns what is in force.

    With the normal policy the agent, waking up for each batch of samples, preempts the very processes it
    watches (a fork+exec loop measured 1.5-1.7x slower beside it); SCHED_BATCH keeps its fair share of CPU
    but never preempts on wake-up (1.2x). SCHED_IDLE is cheaper still but starves the agent, and so loses
    events, on a busy host.
    """
    try:
        os.sched_setscheduler(0, SCHED_POLICIES[name], os.sched_param(0))
    except (KeyError, OSError):
        return "normal"
    return name


def find_probe_dir() -> Path:
    """The probes: ``$SENTINEL_PROBES``, the checkout's ``bpf_probes/``, the deb's, the wheel's copy."""
    found = resources.find(
        "SENTINEL_PROBES", "bpf_probes", lambda c: all((c / n).is_file() for n in PROBE_FILES)
    )
    if found is not None:
        return found
    raise SensorError(
        f"bpf_probes/{', '.join(PROBE_FILES)} not found (set SENTINEL_PROBES to their directory)"
    )


# The probe source, in the order it is put together (the later files use the first one's helpers).
PROBE_FILES = ("sentinel.c", "sentinel_security.c", "sentinel_files.c", "sentinel_net.c")
# Optional tracepoints (environment.OPTIONAL_SYSCALLS) and the macro that compiles their probes in.
OPTIONAL_PROBES: dict[str, str] = {
    f"syscalls/sys_enter_{call}": f"HAVE_TP_{call.upper()}" for call in OPTIONAL_SYSCALLS
}
SIGNAL_TRACEPOINT = "signal/signal_generate"  # tamper evidence for every signal aimed at the agent


def tracepoint_present(tracefs: str, name: str) -> bool:
    """Both halves of a syscall's tracepoints (enter and exit) exist."""
    return tracepoint_exists(tracefs, name) and tracepoint_exists(
        tracefs, name.replace("sys_enter_", "sys_exit_")
    )


def c_string(text: str) -> str:
    """A C string literal for a -D flag (a path: no quotes or backslashes expected, escaped anyway)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def probe_cflags(
    probe_dir: Path, cfg: SensorConfig, present: list[str], init_ns: dict[int, int] | None = None
) -> list[str]:
    """Compiler flags for bpf_probes/sentinel.c, given the optional tracepoints ``present`` and pid 1's
    namespaces ``init_ns`` (:func:`init_namespace_bits`; kernel offsets are added by the caller)."""
    flags = [
        f"-I{probe_dir}",
        f"-DSELF_TGID={cfg.ignore_pid}",
        f"-DOPEN_DEDUP_NS={int(cfg.open_dedup_s * 1e9)}ULL",
        f"-DLOADER_FILTER={int(cfg.loader_opens == 'filter')}",
        "-Wno-unused-function",
        "-Wno-macro-redefined",
    ]
    flags += [f"-D{OPTIONAL_PROBES[name]}" for name in present if name in OPTIONAL_PROBES]
    if SIGNAL_TRACEPOINT in present:
        flags.append("-DHAVE_TP_SIGNAL_GENERATE")
    if cfg.tamper_pin:
        flags.append(f"-DTAMPER_PIN={c_string(cfg.tamper_pin)}")
    if init_ns:
        test = "|".join(f"((x)=={ino}ULL?{bit}:0)" for ino, bit in sorted(init_ns.items()))
        flags.append(f"-DINIT_NS_BITS(x)=({test})")
    return flags


# The kernel's fixed inode numbers of its initial namespaces (PROC_*_INIT_INO, include/linux/proc_ns.h):
# ipc, uts, user, pid, cgroup and time for years; mnt and net from 6.18 on (allocated at boot before).
INIT_NS_INODES = {"ipc": 0xEFFFFFFF, "uts": 0xEFFFFFFE, "user": 0xEFFFFFFD, "pid": 0xEFFFFFFC,
                  "cgroup": 0xEFFFFFFB, "time": 0xEFFFFFFA}  # fmt: skip
INIT_NS_INODES_6_18 = {"net": 0xEFFFFFF9, "mnt": 0xEFFFFFF8}


def init_namespace_bits(ns_dir: str = "/proc/1/ns", release: str | None = None) -> tuple[dict[int, int], str]:
    """pid 1's namespaces (fixed for the boot) as inode -> bit of its kind (``syscalls.NS_KINDS``), and
    where they came from: a setns into one of them is how a process leaves a container for the host.

    Read from ``/proc/1/ns``; where that is refused (a pid 1 holding capabilities the agent lacks), the
    kernel's fixed numbers for its initial namespaces stand in (mnt and net only on 6.18 and later)."""
    out: dict[int, int] = {}
    try:
        names = os.listdir(ns_dir)
    except OSError:
        names = []
    for name in names:
        kind = name.removesuffix("_for_children")
        if kind not in NS_KINDS:
            continue
        try:
            ino = os.stat(f"{ns_dir}/{name}").st_ino
        except OSError:
            continue
        out[ino] = out.get(ino, 0) | 1 << NS_KINDS.index(kind)
    if out:
        return out, ns_dir
    fixed = dict(INIT_NS_INODES)
    if kernel_version_tuple(release)[:2] >= (6, 18):
        fixed.update(INIT_NS_INODES_6_18)
    source = f"kernel constants ({','.join(sorted(fixed))})"
    return {ino: 1 << NS_KINDS.index(kind) for kind, ino in fixed.items()}, source


def probe_source(probe_dir: Path) -> bytes:
    """The PROBE_FILES in order, as one text: bcc generates tracepoint argument structs only for probes in
    the main source text. Raises SensorError naming a file that cannot be read."""
    parts = []
    for name in PROBE_FILES:
        try:
            parts.append((probe_dir / name).read_bytes())
        except OSError as exc:
            raise SensorError(f"cannot read {probe_dir / name}: {exc.strerror or exc}") from exc
    return b"\n".join(parts)


def own_bpf_object_ids(proc_self: str = "/proc/self") -> set[int]:
    """The ids of the BPF programs, maps and links this process holds (from fdinfo): another process
    opening one of them by id is tamper evidence."""
    ids: set[int] = set()
    try:
        fds = os.listdir(f"{proc_self}/fd")
    except OSError:
        return ids
    for fd in fds:
        try:
            if not os.readlink(f"{proc_self}/fd/{fd}").startswith("anon_inode:bpf-"):
                continue
            with open(f"{proc_self}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue  # closed meanwhile
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("prog_id", "map_id", "link_id") and value.strip().isdigit():
                ids.add(int(value))
    return ids


def boottime_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


class Sensor:
    """The live event source. ``start()`` attaches everything; ``poll()`` returns events in time order."""

    def __init__(self, config: SensorConfig | None = None) -> None:
        self.config = config or SensorConfig()
        self.bpf: Any = None
        self.perf_lost: dict[str, int] = dict.fromkeys(BUFFERS, 0)  # from lost_cb (PERF_RECORD_LOST)
        self.submit_failed: dict[str, int] = dict.fromkeys(BUFFERS, 0)  # from the probes' own counters
        # The probes' counters once the rings were open: bcc attaches the tracepoints as it loads them, a
        # moment before, and what failed then (sends, execs entered before their exit probe) happened while
        # the agent was not watching yet: reported once (sentinel.ready), not as losses (counted from here).
        self.at_ready: dict[str, int] = {}
        self.exec_stash_missed = 0  # execs whose exit found no stashed entry (evicted): never sent, so lost
        self.lost: dict[str, int] = dict.fromkeys(BUFFERS, 0)  # reported so far: the larger of the two
        self.received: dict[str, int] = dict.fromkeys(BUFFERS, 0)
        self.decode_errors = 0
        self._raw: list[bytes] = []
        self._held: list[Event] = []
        self._last_batch = 0  # records the last poll read (busy_batch)
        self.reader: PerfReader | None = None  # None: bcc's reader (a ctypes callback per sample)
        self.perf_reader_mode = ""  # "mmap", "bcc" or "bcc (why the direct reader is not used)"
        self.attached: list[str] = []
        self.stash_mode = ""
        self.scheduling = ""
        self.kernel_offsets_mode = ""  # "btf", or "none (why)": credentials, exe identity, open dedup
        self.optional_absent: list[str] = []  # optional tracepoints this kernel lacks (not attached)
        self.tamper_pin = ""  # the pinned map of tamper records, "" when bpffs is not available
        self.tamper_pin_problem = ""  # why a pin that exists could not be carried over (no CAP_SYS_ADMIN)
        self.previous_tamper: list[Event] = []  # records aimed at earlier instances, read at start
        self.own_bpf_ids: set[int] = set()  # ids of this instance's BPF programs and maps
        self.namespace_facts = False
        self.pid_view = False  # exec and fork events say vpid, pid and mount namespace (PID_VIEW offsets)
        self.init_ns_source = ""  # where pid 1's namespaces came from: /proc/1/ns or the kernel's constants

    @property
    def open_dedup_active(self) -> bool:
        """In-kernel open de-duplication runs only with kernel offsets: its key names files by object."""
        return self.config.open_dedup_s > 0 and self.kernel_offsets_mode == "btf"

    @property
    def before_ready(self) -> dict[str, int]:
        """Per buffer, the sends that failed before the rings were open."""
        return {name: self.at_ready.get(f"submit_failed_{name}", 0) for name in BUFFERS}

    @property
    def loader_opens_mode(self) -> str:
        """What happens to the loader's opens: filtering needs kernel offsets (the opened file's name)."""
        if self.config.loader_opens == "filter" and self.kernel_offsets_mode != "btf":
            return "report (no kernel offsets)"
        return self.config.loader_opens

    def start(self) -> None:
        tracefs = ensure_tracefs()
        self.scheduling = apply_scheduling(self.config.scheduling)
        try:
            from bcc import BPF
        except ImportError as exc:  # pragma: no cover - depends on the host
            raise SensorError(
                f"cannot import bcc ({exc}): install python3-bpfcc and use a venv created with "
                "--system-site-packages (scripts/setup.sh does both)"
            ) from exc
        probe_dir = find_probe_dir()
        cfg = self.config
        present = [name for name in OPTIONAL_PROBES if tracepoint_present(tracefs, name)]
        self.optional_absent = [name for name in OPTIONAL_PROBES if name not in present]
        if tracepoint_exists(tracefs, SIGNAL_TRACEPOINT):
            present.append(SIGNAL_TRACEPOINT)
        else:
            self.optional_absent.append(SIGNAL_TRACEPOINT)
        if cfg.tamper_pin:
            self.tamper_pin = cfg.tamper_pin if ensure_bpffs(os.path.dirname(cfg.tamper_pin)) else ""
        adopted = self._adopt_tamper_pin()
        init_ns, self.init_ns_source = init_namespace_bits()
        cflags = probe_cflags(probe_dir, cfg, present, init_ns)
        if not self.tamper_pin:
            cflags.append("-DNO_TAMPER_PIN")
        # $SENTINEL_BTF names another BTF file; a missing one runs the agent as on a host without BTF.
        offsets = kernel_offsets(os.environ.get("SENTINEL_BTF") or BTF_PATH)
        self.kernel_offsets_mode = offsets.mode
        self.namespace_facts = offsets.namespaces  # setns targets, pidfd processes, user namespaces
        self.pid_view = offsets.pid_view
        cflags += offsets.cflags()
        src = probe_source(probe_dir)
        try:
            # $SENTINEL_STASH=hash runs the hash-map fallback on a kernel that has task storage (tests).
            if os.environ.get("SENTINEL_STASH") == "hash":
                raise SensorError("SENTINEL_STASH=hash")
            self.bpf = BPF(text=src, cflags=[*cflags, "-DUSE_TASK_STORAGE"])
            self.stash_mode = "task-storage"
        except Exception as first:
            # Kernels before 5.11 (or without BTF) have no task storage for tracing programs: use hash maps.
            if adopted is not None and os.path.exists(self.tamper_pin):
                os.unlink(self.tamper_pin)  # the failed attempt's new (empty) pin: bcc could not reopen it
            try:
                self.bpf = BPF(text=src, cflags=cflags)
                self.stash_mode = f"hash (task storage unavailable: {str(first)[:200]})"
            except Exception as exc:
                raise SensorError(f"compiling/attaching bpf_probes/sentinel.c failed: {exc}") from exc
        self.attached = [tp.decode() if isinstance(tp, bytes) else str(tp) for tp in self.bpf.tracepoint_fds]
        if adopted:
            self._restore_tamper_records(adopted)
        self.refresh_self_tids()
        self.own_bpf_ids = own_bpf_object_ids()
        ids = self.bpf["own_bpf_ids"]
        for obj_id in self.own_bpf_ids:
            ids[ctypes.c_uint32(obj_id)] = ctypes.c_uint8(1)
        self._open_buffers()
        self.at_ready = self.kernel_stats()

    def _open_buffers(self) -> None:
        """Open the perf rings: read directly where supported (one copy per poll instead of a ctypes callback
        per sample), else, or if that fails, through bcc."""
        cfg = self.config
        why = ""
        if cfg.perf_reader == "mmap" or (cfg.perf_reader == "auto" and perfring_supported()):
            from bcc.utils import get_online_cpus

            reader = PerfReader()
            try:
                cpus = get_online_cpus()
                for name in BUFFERS:
                    table = self.bpf[f"events_{name}"]
                    for cpu, fd in reader.open(name, cpus, cfg.pages[name], cfg.wakeup_events):
                        table[table.Key(cpu)] = table.Leaf(fd)
            except (OSError, ValueError) as exc:
                reader.close()
                if cfg.perf_reader == "mmap":
                    raise SensorError(f"opening the perf rings failed: {exc}") from exc
                why = f" (direct reader failed: {exc})"
            else:
                self.reader = reader
                self.perf_reader_mode = "mmap"
                return
        elif cfg.perf_reader == "auto":
            why = " (direct reading needs x86-64 memory ordering)"
        for name in BUFFERS:
            self.bpf[f"events_{name}"].open_perf_buffer(
                self._on_sample,
                page_cnt=cfg.pages[name],
                lost_cb=self._lost_callback(name),
                wakeup_events=cfg.wakeup_events,
            )
        self.perf_reader_mode = "bcc" + why

    def refresh_self_tids(self) -> None:
        """Tell the probes the agent's threads (a signal to any of them is tamper evidence)."""
        if self.bpf is None:
            return
        table = self.bpf["self_tids"]
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            tids = [os.getpid()]
        for tid in tids:
            table[ctypes.c_uint32(tid)] = ctypes.c_uint8(1)

    def _on_sample(self, _cpu: int, data: int, size: int) -> None:
        self._raw.append(ctypes.string_at(data, size))

    def _lost_callback(self, name: str) -> Callable[[int], None]:
        def lost(count: int) -> None:
            self.perf_lost[name] += count

        return lost

    def take_losses(self, read_kernel: bool = True) -> list[tuple[str, int]]:
        """Samples lost since the last call, per buffer.

        Two views of the same drops: the probes count every failed ``perf_submit`` at once, while the perf
        ring reports a PERF_RECORD_LOST only when the next sample fits (on a quiet CPU, maybe much later).
        Losses are the larger of the two running totals, so nothing is missed or counted twice.
        """
        if read_kernel and self.bpf is not None:
            stats = self.kernel_stats()
            base = self.at_ready
            for name in BUFFERS:
                key = f"submit_failed_{name}"
                self.submit_failed[name] = stats.get(key, 0) - base.get(key, 0)
            self.exec_stash_missed = stats.get("exec_stash_miss", 0) - base.get("exec_stash_miss", 0)
        out = []
        for name in BUFFERS:
            total = max(self.perf_lost[name], self.submit_failed[name])
            if name == "exec":
                total += self.exec_stash_missed  # never reached the ring: another drop, not a view of one
            if total > self.lost[name]:
                out.append((name, total - self.lost[name]))
                self.lost[name] = total
        return out

    def poll(self, timeout_ms: int | None = None) -> list[Event]:
        """Wait for samples, drain every CPU and return the events that are safe to process, in time order.

        Events newer than ``holdback_ms`` *at the time the buffers were drained* wait for the next poll (an
        event on another CPU may still be on its way); while some wait, that poll is short. The cut-off was
        once taken before the wait, which held everything that arrived during it for a whole extra poll:
        ~100 ms of alert latency on a quiet host.
        """
        timeout = self.config.poll_timeout_ms if timeout_ms is None else timeout_ms
        if self._held:  # (the ordering hold-back: see holdback_ms; busy_wait_ms under load)
            cfg = self.config
            busy = self._last_batch >= cfg.busy_batch
            timeout = min(timeout, int(cfg.busy_wait_ms if busy else cfg.holdback_ms + 1))
        reader = self.reader
        if reader is not None:
            reader.poll(timeout)
            self._read_rings(reader)
        else:
            self.bpf.perf_buffer_poll(timeout)
            self.bpf.perf_buffer_consume()
        return self._release(boottime_ns() - int(self.config.holdback_ms * 1e6), service=True)

    def service(self) -> None:
        """Empty the rings of the buffers nothing may be lost from (execs, forks and exits, security
        syscalls) into the next poll's batch, without decoding them: the loop calls it every
        :data:`sentinel.pipeline.SERVICE_EVERY` events of a long batch. A poll under an open storm takes a
        whole open ring per CPU (4 MiB, over a second of the agent's work); the exec rings overflowed
        meanwhile. With the direct reader only (bcc's consumes every buffer at once)."""
        if self.reader is not None:
            self._read_rings(self.reader, PRIORITY_BUFFERS)

    def _read_rings(self, reader: PerfReader, names: tuple[str, ...] | None = None) -> None:
        reader.read(self._raw, names)
        for name, count in reader.take_lost().items():
            self.perf_lost[name] += count
        if reader.malformed:  # a record the ring layout cannot explain: counted, that batch skipped
            self.decode_errors += reader.malformed
            reader.malformed = 0

    def drain(self) -> list[Event]:
        """Everything still buffered (at shutdown)."""
        if self.reader is not None:
            self._read_rings(self.reader)
        else:
            self.bpf.perf_buffer_consume()
        return self._release(None)

    def _release(self, cutoff: int | None, service: bool = False) -> list[Event]:
        """Decode what was read and split it at ``cutoff``. Decoding a storm's batch (two full open rings)
        takes longer than the exec rings hold under load: with ``service`` the priority rings are emptied
        into the next batch every :data:`DECODE_SERVICE_EVERY` records meanwhile (not at shutdown's drain,
        whose batch is the last)."""
        raw, self._raw = self._raw, []
        self._last_batch = len(raw)
        events = self._held
        received, buffer_of = self.received, _BUFFER_OF
        every = DECODE_SERVICE_EVERY if service and self.reader is not None else 0
        for i, data in enumerate(raw, 1):
            if every and not i % every:
                self.service()
            try:
                ev = decode(data)
            except DecodeError:
                self.decode_errors += 1
                continue
            events.append(ev)
            received[buffer_of[ev.type]] += 1
        events.sort(key=_ts)
        if cutoff is None or not events or events[-1].ts_ns <= cutoff:
            self._held = []
            return events
        split = len(events)
        while split > 0 and events[split - 1].ts_ns > cutoff:
            split -= 1
        self._held = events[split:]
        return events[:split]

    def kernel_stats(self) -> dict[str, int]:
        """The probes' own counters (failed submits, suppressed opens...), summed over CPUs."""
        if self.bpf is None:
            return {}
        table = self.bpf["stats"]
        out: dict[str, int] = {}
        for idx, name in enumerate(STAT_NAMES):
            values = table[ctypes.c_int(idx)]
            out[name] = int(sum(values))
        return out

    def _own_tids(self) -> set[int]:
        try:
            return {int(t) for t in os.listdir("/proc/self/task")} | {os.getpid()}
        except OSError:
            return {os.getpid()}

    def _tamper_records(self) -> list[tuple[Any, Event]]:
        if self.bpf is None:
            return []
        table = self.bpf["tamper_log"]
        out = []
        for key, value in list(table.items()):
            try:
                ev = decode(ctypes.string_at(ctypes.addressof(value), ctypes.sizeof(value)))
            except DecodeError:
                self.decode_errors += 1
                continue
            out.append((key, ev))
        return out

    def _remove_tamper_records(self, aimed_at_self: bool) -> list[Event]:
        """Remove from the pinned map the records aimed at this instance (``aimed_at_self``) or at earlier
        ones, and return them oldest first."""
        own = self._own_tids()
        removed = []
        table = self.bpf["tamper_log"] if self.bpf is not None else None
        for key, ev in self._tamper_records():
            fields = tamper_fields(ev)
            mine = self.own_bpf_ids if fields.kind == TAMPER_BPF else own  # a BPF record names an object id
            if (fields.target_tid in mine) is aimed_at_self:
                removed.append(ev)
                del table[key]  # type: ignore[index]
        return sorted(removed, key=_ts)

    def _adopt_tamper_pin(self) -> list[tuple[bytes, bytes]] | None:
        """Without CAP_SYS_ADMIN bcc cannot reopen a pinned map (:mod:`sentinel.sensor.pinned`): read the
        previous records and unlink the pin before compiling. None when bcc reopens it itself (or no pin)."""
        from sentinel.sensor.environment import CAP_SYS_ADMIN, effective_capabilities
        from sentinel.sensor.pinned import PinError, adopt_pin

        if not self.tamper_pin or effective_capabilities() >> CAP_SYS_ADMIN & 1:
            return None
        try:
            return adopt_pin(self.tamper_pin)
        except (PinError, OSError) as exc:
            self.tamper_pin_problem = f"{self.tamper_pin}: {exc}"
            self.tamper_pin = ""  # records die with this instance; it still runs
            return None

    def _restore_tamper_records(self, entries: list[tuple[bytes, bytes]]) -> None:
        """Write the previous instance's records into the freshly pinned map (read by take_tamper_records)."""
        table = self.bpf["tamper_log"]  # type: ignore[index]
        for key, value in entries:
            if len(key) == ctypes.sizeof(table.Key) and len(value) == ctypes.sizeof(table.Leaf):
                table[table.Key.from_buffer_copy(key)] = table.Leaf.from_buffer_copy(value)

    def take_tamper_records(self) -> list[Event]:
        """Tamper records the kernel kept for earlier instances (one killed by SIGKILL could not report its
        own), oldest first; they are removed from the pinned map once read."""
        return self._remove_tamper_records(aimed_at_self=False)

    def close(self) -> None:
        if self.bpf is not None:
            # What was aimed at this instance was reported live: the next start reports only what it could
            # not (a SIGKILL never reaches here).
            self._remove_tamper_records(aimed_at_self=True)
            self.bpf.cleanup()
            self.bpf = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def _ts(ev: Event) -> int:
    return ev.ts_ns


def _buffer_of(kind: EventType) -> str:
    if kind >= EventType.SETUID:
        return "sys"
    if kind is EventType.EXEC:
        return "exec"
    if kind is EventType.OPEN:
        return "open"
    if kind is EventType.CONNECT:
        return "connect"
    return "proc"


_BUFFER_OF: dict[EventType, str] = {t: _buffer_of(t) for t in EventType}
