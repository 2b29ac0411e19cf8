"""Reading a capture back into the objects the live agent had, or saying exactly where and why it cannot.

Reading never raises on bad content once the first header is accepted: every readable record is yielded and
the first unreadable one ends the iteration, described by :attr:`CaptureReader.problem` (its byte offset
and what is wrong), so a crash-truncated capture still replays up to the crash. Files are read with a
streaming msgpack unpacker held to the limits in :mod:`sentinel.capture.format`, so a hostile file costs
bounded memory.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import msgpack

from sentinel.capture.format import (
    CONTAINER_RECORD_LEN,
    CONTAINER_RECORD_LEN_V5,
    EVENT_BIN_FIELDS,
    EVENT_FIELDS,
    EVENT_RECORD_LEN,
    EVENT_RECORD_LEN_V1,
    EVENT_RECORD_LEN_V2,
    EVENT_RECORD_LEN_V3,
    EVENT_V2_FIELDS,
    EVENT_V3_FIELDS,
    FACTS_FIELDS,
    FACTS_RECORD_LEN,
    FACTS_RECORD_LEN_V1,
    FACTS_RECORD_LEN_V2,
    KIND_CONTAINER,
    KIND_CONTAINER_META,
    KIND_EVENT,
    KIND_FACTS,
    KIND_FACTS_MISS,
    KIND_FD,
    KIND_IDENTITY,
    KIND_LOSS,
    KIND_NAMES,
    KIND_REALPATH,
    KIND_SNAPSHOT_END,
    MAX_ARRAY_LEN,
    MAX_CONTAINERS,
    MAX_MAP_LEN,
    MAX_RECORD_BYTES,
    MAX_STR_LEN,
    META_FIELDS_LEN,
    META_FIELDS_LEN_V7,
    MOUNT_FIELDS_LEN,
    NS_VIEW_LEN,
    POD_FIELDS_LEN,
    SYS_LIMITS,
    TEXT_ENCODING,
    TEXT_ERRORS,
    CaptureError,
    CaptureItem,
    CaptureProblem,
    ContainerFact,
    FactsMiss,
    FdFact,
    IdentityFact,
    LossReport,
    RealpathFact,
    SegmentStart,
    SnapshotEnd,
    header_problem,
    short_repr,
)
from sentinel.containers.cgroup_path import ContainerRef
from sentinel.containers.meta_view import FOUND, STATES, MetaChange
from sentinel.containers.metadata import ContainerMeta, K8sPod, Labels, Mount
from sentinel.events import KERNEL_TYPES, Credentials, Event, EventType, NsView

if TYPE_CHECKING:
    from sentinel.process.facts import ProcFacts

READ_SIZE = 256 << 10

_ENC = TEXT_ENCODING
_ERR = TEXT_ERRORS
_TYPES: dict[int, EventType] = {int(t): t for t in KERNEL_TYPES}
_EVENT_INT_POS = tuple(i + 1 for i, n in enumerate(EVENT_FIELDS) if n not in EVENT_BIN_FIELDS and n != "argv")
# The hot path checks every integer element at once (C loops); a bad record is walked to name the culprit.
_EVENT_INTS = operator.itemgetter(*_EVENT_INT_POS)
_V2_INT_POS = tuple(i for i, n in enumerate(EVENT_V2_FIELDS) if n not in ("creds", "exe_name"))
_V2_INTS = operator.itemgetter(*_V2_INT_POS)
_INT_ONLY = {int}
_EVENT_RECORD_LENS = frozenset(
    {EVENT_RECORD_LEN, EVENT_RECORD_LEN_V3, EVENT_RECORD_LEN_V2, EVENT_RECORD_LEN_V1}
)
# A version-2 record's integers, both parts at once (one C pass instead of two).
_ALL_INTS = operator.itemgetter(*_EVENT_INT_POS, *(EVENT_RECORD_LEN_V1 + i for i in _V2_INT_POS))
_INT_OR_NONE = {int, type(None)}  # credentials: the login uid and session id (6, 7) may be nil
_FACTS_INT_POS = tuple(
    i + 1
    for i, name in enumerate(FACTS_FIELDS)
    if name in ("pid", "start_ticks", "ppid", "uid", "gid", "tty_nr")
)


class _Bad(Exception):
    """A record that is valid msgpack but not valid capture layout (message says what is wrong)."""


class _TooManyContainers(ValueError):
    pass


class _CappedFile:
    """Hands the unpacker file bytes only up to ``cap``, set to MAX_RECORD_BYTES past the start of the record
    being decoded, so no record costs more input than that however its declared lengths add up (newer msgpack
    versions assemble large objects piecewise, so ``max_buffer_size`` alone does not bound a record)."""

    __slots__ = ("_raw", "cap", "capped", "pos")

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.pos = 0
        self.cap = MAX_RECORD_BYTES
        self.capped = False  # a read was refused at the cap

    def read(self, n: int) -> bytes:
        allowed = self.cap - self.pos
        if allowed <= 0:
            self.capped = True
            return b""
        data: bytes = self._raw.read(min(n, allowed))
        self.pos += len(data)
        return data


def _new_unpacker(fh: Any, budget: list[int]) -> msgpack.Unpacker:
    """An unpacker held to the format's limits; ``budget[0]`` is how many more containers it may build."""

    def count(obj: Any) -> Any:
        left = budget[0] - 1
        if left < 0:
            raise _TooManyContainers
        budget[0] = left
        return obj

    return msgpack.Unpacker(
        fh,
        read_size=READ_SIZE if fh is not None else 0,
        raw=False,
        use_list=True,
        strict_map_key=True,
        list_hook=count,
        object_hook=count,
        max_buffer_size=MAX_RECORD_BYTES + READ_SIZE,
        max_str_len=MAX_STR_LEN,
        max_bin_len=MAX_RECORD_BYTES,
        max_array_len=MAX_ARRAY_LEN,
        max_map_len=MAX_MAP_LEN,
        max_ext_len=0,
    )


def _unpack_failure(exc: Exception) -> tuple[str, str]:
    """``(kind, message)`` for an exception the unpacker raised on bad bytes."""
    if isinstance(exc, _TooManyContainers):
        return "corrupt", f"record holds more than {MAX_CONTAINERS} arrays/maps"
    if isinstance(exc, msgpack.BufferFull):
        return "corrupt", f"record is larger than the {MAX_RECORD_BYTES}-byte limit"
    if isinstance(exc, msgpack.StackError):
        return "corrupt", "arrays/maps nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "corrupt", "bytes are not valid msgpack"
    if isinstance(exc, UnicodeDecodeError):
        return "corrupt", "a msgpack string is not valid UTF-8"
    if isinstance(exc, OSError):
        return "io", f"read error: {exc.strerror or exc}"
    return "corrupt", f"undecodable record: {exc or type(exc).__name__}"


def check_header_bytes(data: bytes) -> None:
    """Raise ValueError unless ``data`` is one header this reader accepts (the writer's self-check)."""
    budget = [MAX_CONTAINERS]
    unpacker = _new_unpacker(None, budget)
    unpacker.feed(data)
    try:
        header = unpacker.unpack()
    except Exception as exc:
        raise ValueError(f"capture header would not be readable: {_unpack_failure(exc)[1]}") from exc
    problem = header_problem(header)
    if problem is not None or unpacker.tell() != len(data):
        raise ValueError(f"capture header would not be readable: {problem[1] if problem else 'extra bytes'}")


@functools.cache
def _procfacts() -> Callable[..., ProcFacts]:
    """ProcFacts, imported on first use so that reading events does not need the process package."""
    from sentinel.process.facts import ProcFacts

    return ProcFacts


def _text(value: object, what: str) -> str:
    if type(value) is not bytes:
        raise _Bad(f"{what} is {short_repr(value)}, expected bin")
    return value.decode(_ENC, _ERR)


def _opt_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _ints(record: list[Any], positions: tuple[int, ...], names: tuple[str, ...]) -> None:
    for i in positions:
        if type(record[i]) is not int:
            raise _Bad(f"{names[i - 1]} is {short_repr(record[i])}, expected an integer")


def _event_v2(ev: Event, extra: list[Any], checked: bool = False) -> None:
    """The version-2 elements of an event record: identity and credentials the probe read (``checked``:
    their integers are known to be integers)."""
    child_start_ns, exe_name, exe_ino, exe_dev, exe_nlink, tty_nr, start_ns, creds = extra
    if not checked and set(map(type, _V2_INTS(extra))) != _INT_ONLY:
        for name, value in zip(EVENT_V2_FIELDS, extra, strict=True):
            if name not in ("creds", "exe_name") and type(value) is not int:
                raise _Bad(f"{name} is {short_repr(value)}, expected an integer")
    if creds is not None:
        if type(creds) is not list or len(creds) != 10:
            raise _Bad(f"creds is {short_repr(creds)}, expected nil or an array of 10")
        types = set(map(type, creds))
        if types != _INT_ONLY and (types != _INT_OR_NONE or None in creds[:6] or None in creds[8:]):
            for i, value in enumerate(creds):
                if type(value) is not int and not (value is None and i in (6, 7)):
                    raise _Bad(f"creds[{i}] is {short_repr(value)}, expected an integer")
        ev.creds = Credentials(*creds)
    ev.start_ns, ev.child_start_ns, ev.exe_ino, ev.exe_dev, ev.exe_nlink, ev.tty_nr = (
        start_ns, child_start_ns, exe_ino, exe_dev, exe_nlink, tty_nr
    )
    if type(exe_name) is not bytes:
        raise _Bad(f"exe_name is {short_repr(exe_name)}, expected bin")
    ev.exe_name = exe_name.decode(_ENC, _ERR)


def _event_v3(ev: Event, sys_args: object, sys_extra: object, sys_strs: object) -> None:
    """The version-3 elements: a security syscall's arguments, values read behind pointers, strings."""
    for name, value in zip(EVENT_V3_FIELDS, (sys_args, sys_extra, sys_strs), strict=True):
        if value is None:
            continue
        if type(value) is not list or len(value) > SYS_LIMITS[name]:
            limit = SYS_LIMITS[name]
            raise _Bad(f"{name} is {short_repr(value)}, expected nil or an array of {limit} at most")
        want, what = (bytes, "bin") if name == "sys_strs" else (int, "an integer")
        for i, item in enumerate(value):
            if type(item) is not want:
                raise _Bad(f"{name}[{i}] is {short_repr(item)}, expected {what}")
    ev.sys_args = tuple(sys_args) if sys_args is not None else ()  # type: ignore[arg-type]
    ev.sys_extra = tuple(sys_extra) if sys_extra is not None else ()  # type: ignore[arg-type]
    ev.sys_strs = tuple(t.decode(_ENC, _ERR) for t in sys_strs) if sys_strs is not None else ()  # type: ignore[union-attr]


def _ns_view(value: object, what: str) -> NsView | None:
    """A version-6 ``ns``/``child_ns`` element: nil or [vpid, vtid, pid_ns, mnt_ns]."""
    if value is None:
        return None
    if type(value) is not list or len(value) != NS_VIEW_LEN or set(map(type, value)) != _INT_ONLY:
        raise _Bad(f"{what} is {short_repr(value)}, expected nil or an array of {NS_VIEW_LEN} integers")
    return NsView(*value)


def _length(record: list[Any], want: int) -> None:
    if len(record) != want:
        raise _Bad(f"has {len(record)} elements, expected {want}")


class CaptureReader:
    """Iterates over a capture's items in file order: :class:`SegmentStart` for each header, then
    :class:`~sentinel.events.Event`, ProcFacts, :class:`FdFact`, :class:`LossReport`, :class:`SnapshotEnd`,
    :class:`FactsMiss`, :class:`RealpathFact`, :class:`IdentityFact`, :class:`ContainerFact` and
    :class:`~sentinel.containers.meta_view.MetaChange` items.

    The constructor reads the first header and raises :class:`CaptureError` if the file is not a readable
    capture (missing, empty, another format or version). Iteration (once) never raises for bad content: it
    stops at the first unreadable record and sets :attr:`problem`. Events of types this version does not know
    are skipped and counted in :attr:`unknown_event_types`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.segments: list[SegmentStart] = []
        self.problem: CaptureProblem | None = None
        self.unknown_event_types: dict[int, int] = {}
        self._iterated = False
        try:
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()/iteration
        except OSError as exc:
            raise CaptureError(CaptureProblem(self.path, 0, "io", f"cannot open: {exc.strerror}")) from exc
        self._budget = [MAX_CONTAINERS]
        self._capped = _CappedFile(self._file)
        self._unpacker = _new_unpacker(self._capped, self._budget)
        try:
            self._read_first_header()
        except BaseException:
            self.close()
            raise

    @property
    def headers(self) -> list[dict[str, Any]]:
        """Headers of the segments seen so far (all of them once iteration has finished)."""
        return [s.header for s in self.segments]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[CaptureItem]:
        if self._iterated:
            raise ValueError(f"{self.path}: a CaptureReader can be iterated only once")
        self._iterated = True
        try:
            yield self.segments[0]
            yield from self._records()
        finally:
            self.close()

    def _read_first_header(self) -> None:
        try:
            header = self._unpacker.unpack()
        except msgpack.OutOfData:
            problem = self._end_problem(0)
            if problem is None:
                problem = CaptureProblem(self.path, 0, "not-a-capture", "empty file, not a capture")
            elif problem.kind == "truncated" and _starts_with_map(os.pread(self._file.fileno(), 1, 0)):
                problem = CaptureProblem(self.path, 0, "truncated", "file ends inside the capture header")
            elif problem.kind == "truncated":
                problem = CaptureProblem(
                    self.path,
                    0,
                    "not-a-capture",
                    "not a sentinel capture: it does not start with a header map",
                )
            else:
                problem = replace(
                    problem, kind="not-a-capture", message=f"not a sentinel capture: {problem.message}"
                )
            raise CaptureError(problem) from None
        except Exception as exc:
            kind, message = _unpack_failure(exc)
            if kind == "corrupt":
                kind, message = "not-a-capture", f"not a sentinel capture: {message}"
            raise CaptureError(CaptureProblem(self.path, 0, kind, message)) from None
        problem = header_problem(header)
        if problem is not None:
            kind, message = problem
            if kind == "not-a-capture":
                message = f"not a sentinel capture: {message}"
            raise CaptureError(CaptureProblem(self.path, 0, kind, message))
        self.segments.append(SegmentStart(0, 0, header))

    def _end_problem(self, start: int) -> CaptureProblem | None:
        """Why the unpacker ran out of input in the record at ``start``; None at a clean end of file."""
        size = os.fstat(self._file.fileno()).st_size
        if size <= start:
            return None
        if self._capped.capped and size > self._capped.cap:
            message = f"record is larger than the {MAX_RECORD_BYTES}-byte limit"
            return CaptureProblem(self.path, start, "corrupt", message)
        return CaptureProblem(
            self.path, start, "truncated", "file ends inside a record (the writer was interrupted)"
        )

    def _stop(self, offset: int, kind: str, message: str) -> None:
        self.problem = CaptureProblem(self.path, offset, kind, message)

    def _records(self) -> Iterator[CaptureItem]:
        unpacker = self._unpacker
        unpack = unpacker.unpack
        tell = unpacker.tell
        budget = self._budget
        capped = self._capped
        decode_event = self._decode_event
        while True:
            start = tell()
            budget[0] = MAX_CONTAINERS
            capped.cap = start + MAX_RECORD_BYTES
            try:
                record = unpack()
            except msgpack.OutOfData:
                self.problem = self._end_problem(start)
                return
            except Exception as exc:
                self._stop(start, *_unpack_failure(exc))
                return
            item: CaptureItem | None
            try:
                if type(record) is list and record and record[0] == KIND_EVENT and type(record[0]) is int:
                    item = decode_event(record)  # the hot path: no dispatch
                else:
                    item = self._decode_other(record, start)
            except _Bad as bad:
                known = type(record) is list and record and type(record[0]) is int
                what = KIND_NAMES.get(record[0], "") if known else ""
                self._stop(start, "corrupt", f"{what} record {bad}" if what else str(bad))
                return
            except CaptureError as exc:
                self.problem = exc.problem
                return
            if item is not None:
                yield item

    def _decode_event(self, record: list[Any]) -> Event | None:
        if len(record) < 2 or type(record[1]) is not int:
            raise _Bad("has no integer event type")
        etype = _TYPES.get(record[1])
        if etype is None:
            self.unknown_event_types[record[1]] = self.unknown_event_types.get(record[1], 0) + 1
            return None
        n = len(record)
        if n not in _EVENT_RECORD_LENS:
            raise _Bad(
                f"has {n} elements, expected {EVENT_RECORD_LEN} (or {EVENT_RECORD_LEN_V3}, "
                f"{EVENT_RECORD_LEN_V2} or {EVENT_RECORD_LEN_V1}: versions 3 to 5, 2 and 1)"
            )
        v2 = n >= EVENT_RECORD_LEN_V2
        if set(map(type, _ALL_INTS(record) if v2 else _EVENT_INTS(record))) != _INT_ONLY:
            for i in _EVENT_INT_POS:
                if type(record[i]) is not int:
                    raise _Bad(f"{EVENT_FIELDS[i - 1]} is {short_repr(record[i])}, expected an integer")
            v2_part = record[EVENT_RECORD_LEN_V1:EVENT_RECORD_LEN_V2]
            _event_v2(Event(EventType.EXIT, 0, 0, 0, 0, 0, ""), v2_part)  # names it
        # fmt: off
        (_, _, ts, pid, tid, uid, gid, comm, cgroup_id, flags, ret, filename, argv, argc_total, path,
         dirfd, open_flags, mode, repeat_count, fd, family, address, port, sock_type, child_pid,
         clone_flags) = record[:EVENT_RECORD_LEN_V1]
        # fmt: on
        if type(argv) is not list:
            raise _Bad(f"argv is {short_repr(argv)}, expected an array")
        try:
            # fmt: off
            ev = Event(
                etype, ts, pid, tid, uid, gid, comm.decode(_ENC, _ERR), cgroup_id, flags, ret,
                filename.decode(_ENC, _ERR), [a.decode(_ENC, _ERR) for a in argv], argc_total,
                path.decode(_ENC, _ERR), dirfd, open_flags, mode, repeat_count, fd, family,
                address.decode(_ENC, _ERR), port, sock_type, child_pid, clone_flags,
            )
            # fmt: on
        except AttributeError:  # something that should be bin is not: say which
            for name in EVENT_BIN_FIELDS:
                _text(record[1 + EVENT_FIELDS.index(name)], name)
            for n, arg in enumerate(argv):
                _text(arg, f"argv[{n}]")
            raise _Bad("has a field of the wrong type") from None
        if v2:
            _event_v2(ev, record[EVENT_RECORD_LEN_V1:EVENT_RECORD_LEN_V2], checked=True)
            if n >= EVENT_RECORD_LEN_V3:
                sys_args, sys_extra, sys_strs = record[EVENT_RECORD_LEN_V2:EVENT_RECORD_LEN_V3]
                if sys_args is not None or sys_extra is not None or sys_strs is not None:
                    _event_v3(ev, sys_args, sys_extra, sys_strs)
            if n == EVENT_RECORD_LEN:
                ns, child_ns = record[EVENT_RECORD_LEN_V3:]
                if ns is not None or child_ns is not None:
                    ev.ns, ev.child_ns = _ns_view(ns, "ns"), _ns_view(child_ns, "child_ns")
        return ev

    def _decode_other(self, record: object, start: int) -> CaptureItem:
        if type(record) is dict:
            problem = header_problem(record)
            if problem is not None:
                kind, message = problem
                if kind == "not-a-capture":
                    kind, message = "corrupt", f"a map that is not a segment header: {message}"
                raise CaptureError(CaptureProblem(self.path, start, kind, message))
            segment = SegmentStart(len(self.segments), start, record)
            self.segments.append(segment)
            return segment
        if type(record) is not list:
            raise _Bad(f"expected a record array or a header map, found {short_repr(record)}")
        if not record or type(record[0]) is not int:
            raise _Bad(
                f"record kind is {short_repr(record[0]) if record else 'missing'}, expected an integer"
            )
        kind = record[0]
        if kind == KIND_FACTS:
            if len(record) != FACTS_RECORD_LEN_V1 and len(record) != FACTS_RECORD_LEN_V2:
                _length(record, FACTS_RECORD_LEN)
            _ints(record, _FACTS_INT_POS, FACTS_FIELDS)
            values = dict(zip(FACTS_FIELDS, record[1:], strict=False))
            for name in ("exe_deleted", "exe_memfd"):
                if type(values.setdefault(name, False)) is not bool:
                    raise _Bad(f"{name} is {short_repr(values[name])}, expected a boolean")
            for name in ("pid_ns", "mnt_ns"):
                if type(values.setdefault(name, 0)) is not int:
                    raise _Bad(f"{name} is {short_repr(values[name])}, expected an integer")
            vpid = values.setdefault("vpid", None)
            if vpid is not None and type(vpid) is not int:
                raise _Bad(f"vpid is {short_repr(vpid)}, expected nil or an integer")
            values["comm"] = _text(values["comm"], "comm")
            values["exe"] = _opt_text(values["exe"], "exe")
            values["cwd"] = _opt_text(values["cwd"], "cwd")
            values["args"] = _split_args(values["args"])
            return _procfacts()(**values)
        if kind == KIND_FD:
            _length(record, 4)
            _ints(record, (1, 2), ("pid", "fd"))
            return FdFact(record[1], record[2], _opt_text(record[3], "path"))
        if kind == KIND_LOSS:
            _length(record, 4)
            _ints(record, (1, 3), ("ts_ns", "event_type", "count"))
            if type(record[2]) is not str:
                raise _Bad(f"event_type is {short_repr(record[2])}, expected str")
            return LossReport(record[1], record[2], record[3])
        if kind == KIND_SNAPSHOT_END:
            _length(record, 2)
            _ints(record, (1,), ("ts_ns",))
            return SnapshotEnd(record[1])
        if kind == KIND_FACTS_MISS:
            _length(record, 2)
            _ints(record, (1,), ("pid",))
            return FactsMiss(record[1])
        if kind == KIND_REALPATH:
            _length(record, 3)
            return RealpathFact(_text(record[1], "path"), _text(record[2], "resolved"))
        if kind == KIND_IDENTITY:
            _length(record, 4)
            path = _text(record[1], "path")
            if record[2] is None and record[3] is None:
                return IdentityFact(path, None)
            _ints(record, (2, 3), ("path", "ino", "dev"))
            return IdentityFact(path, (record[2], record[3]))
        if kind == KIND_CONTAINER:
            return _container(record)
        if kind == KIND_CONTAINER_META:
            return _container_meta(record)
        raise _Bad(f"unknown record kind {kind}")

    def _skip_rest(self) -> CaptureProblem | None:
        """Walk to the end without decoding; the problem that would stop a full read, as far as bytes tell."""
        unpacker = self._unpacker
        while True:
            start = unpacker.tell()
            self._capped.cap = start + MAX_RECORD_BYTES
            try:
                unpacker.skip()
            except msgpack.OutOfData:
                return self._end_problem(start)
            except Exception as exc:
                return CaptureProblem(self.path, start, *_unpack_failure(exc))


def _container(record: list[Any]) -> ContainerFact:
    if len(record) != CONTAINER_RECORD_LEN_V5:  # version 5: no pod uid
        _length(record, CONTAINER_RECORD_LEN)
    _ints(record, (1,), ("pid",))
    runtime, full_id, short, rootless = record[2:6]
    pod = record[6] if len(record) == CONTAINER_RECORD_LEN else None
    if type(rootless) is not bool:
        raise _Bad(f"rootless is {short_repr(rootless)}, expected a boolean")
    if runtime is None and full_id is None and short is None:
        return ContainerFact(record[1], None)
    if type(runtime) is not str:
        raise _Bad(f"runtime is {short_repr(runtime)}, expected str")
    pod_uid = _opt_text(pod, "pod_uid") or ""
    ref = ContainerRef(runtime, _text(full_id, "full_id"), _text(short, "id"), rootless, pod_uid)
    return ContainerFact(record[1], ref)


def _container_meta(record: list[Any]) -> MetaChange:
    _length(record, 4)
    full_id, state, meta = _text(record[1], "full_id"), record[2], record[3]
    if type(state) is not str or state not in STATES:
        raise _Bad(f"state is {short_repr(state)}, expected one of {', '.join(sorted(STATES))}")
    if (meta is None) != (state != FOUND):
        raise _Bad(f"meta is {short_repr(meta)} for state {state}: given exactly when found")
    return MetaChange(full_id, state, _meta(full_id, meta) if meta is not None else None)


def _meta(full_id: str, record: object) -> ContainerMeta:
    if type(record) is not list or len(record) not in (META_FIELDS_LEN, META_FIELDS_LEN_V7):
        raise _Bad(f"meta is {short_repr(record)}, expected an array of {META_FIELDS_LEN}")
    names = ("source", "name", "image", "image_repository", "image_tag", "image_digest", "image_id")
    text = {name: _text(value, name) for name, value in zip(names, record, strict=False)}
    labels = _labels(record[7], "labels")
    truncated = record[8]
    if type(truncated) is not bool:
        raise _Bad(f"labels_truncated is {short_repr(truncated)}, expected a boolean")
    flags = {}
    for name, value in zip(("privileged", "host_network", "host_pid", "host_ipc"), record[9:13], strict=True):
        if value is not None and type(value) is not bool:
            raise _Bad(f"{name} is {short_repr(value)}, expected a boolean or nil")
        flags[name] = value
    pod = record[13]
    if pod is not None:
        if type(pod) is not list or len(pod) != POD_FIELDS_LEN:
            raise _Bad(f"pod is {short_repr(pod)}, expected an array of {POD_FIELDS_LEN} or nil")
        pod_names = ("pod name", "pod namespace", "pod uid", "pod sandbox_id")
        name, namespace, uid, sandbox = (_text(v, n) for v, n in zip(pod, pod_names, strict=False))
        pod = K8sPod(name, namespace, uid, sandbox, _labels(pod[4], "pod labels"))
    mounts, mounts_truncated = None, False
    if len(record) == META_FIELDS_LEN:
        mounts, mounts_truncated = _mounts(record[14]), record[15]
        if type(mounts_truncated) is not bool:
            raise _Bad(f"mounts_truncated is {short_repr(mounts_truncated)}, expected a boolean")
    return ContainerMeta(full_id=full_id, **text, labels=labels, labels_truncated=truncated, **flags, pod=pod,
                         mounts=mounts, mounts_truncated=mounts_truncated)  # fmt: skip


def _mounts(value: object) -> tuple[Mount, ...] | None:
    if value is None:
        return None
    if type(value) is not list:
        raise _Bad(f"mounts is {short_repr(value)}, expected an array or nil")
    out = []
    for entry in value:
        if type(entry) is not list or len(entry) != MOUNT_FIELDS_LEN:
            raise _Bad(f"mount is {short_repr(entry)}, expected an array of {MOUNT_FIELDS_LEN}")
        rw = entry[3]
        if type(rw) is not bool:
            raise _Bad(f"mount rw is {short_repr(rw)}, expected a boolean")
        source, dest, mode, propagation = (_text(entry[i], "mount") for i in (0, 1, 2, 4))
        out.append(Mount(source, dest, mode, rw, propagation))
    return tuple(out)


def _labels(value: object, what: str) -> Labels:
    """A flat array of bin, key then value."""
    if type(value) is not list or len(value) % 2:
        raise _Bad(f"{what} is {short_repr(value)}, expected an array of keys and values")
    items = [_text(v, what) for v in value]
    return tuple(zip(items[::2], items[1::2], strict=True))


def _starts_with_map(first: bytes) -> bool:
    """Whether a msgpack stream starting with this byte starts with a map (fixmap, map16 or map32)."""
    return bool(first) and (0x80 <= first[0] <= 0x8F or first[0] in (0xDE, 0xDF))


def _split_args(raw: object) -> list[str] | None:
    """Facts args are one bin of NUL-terminated arguments (``/proc/<pid>/cmdline`` style)."""
    if raw is None:
        return None
    if type(raw) is not bytes:
        raise _Bad(f"args is {short_repr(raw)}, expected bin or nil")
    if not raw:
        return []
    if not raw.endswith(b"\0"):
        raise _Bad("args does not end with NUL")
    return [a.decode(_ENC, _ERR) for a in raw[:-1].split(b"\0")]


def find_readable_end(path: str | os.PathLike[str]) -> CaptureProblem | None:
    """Where a capture stops being readable msgpack (None if it is whole); fast, for the writer's append."""
    with CaptureReader(path) as reader:
        return reader._skip_rest()


@dataclass(slots=True)
class CaptureSummary:
    """What a capture holds, for ``sentinel capture info``-style output."""

    path: str
    headers: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)  # per record kind, headers included
    events: dict[str, int] = field(default_factory=dict)  # per event type name
    lost: dict[str, int] = field(default_factory=dict)  # samples lost per event type name
    unknown_event_types: dict[int, int] = field(default_factory=dict)
    problem: CaptureProblem | None = None


def describe(path: str | os.PathLike[str]) -> CaptureSummary:
    """Count a capture's records by kind and event type; raises CaptureError only if it is not a capture."""
    summary = CaptureSummary(os.fspath(path))
    records = summary.records
    with CaptureReader(path) as reader:
        for item in reader:
            if isinstance(item, Event):
                kind = "event"
                summary.events[item.type_name] = summary.events.get(item.type_name, 0) + 1
            elif isinstance(item, SegmentStart):
                kind = "header"
            elif isinstance(item, FdFact):
                kind = "fd"
            elif isinstance(item, LossReport):
                kind = "loss"
                summary.lost[item.event_type] = summary.lost.get(item.event_type, 0) + item.count
            elif isinstance(item, SnapshotEnd):
                kind = "snapshot_end"
            elif isinstance(item, FactsMiss):
                kind = "facts_miss"
            elif isinstance(item, RealpathFact):
                kind = "realpath"
            elif isinstance(item, IdentityFact):
                kind = "identity"
            elif isinstance(item, ContainerFact):
                kind = "container"
            elif isinstance(item, MetaChange):
                kind = "container_meta"
            else:
                kind = "facts"
            records[kind] = records.get(kind, 0) + 1
        summary.headers = reader.headers
        summary.unknown_event_types = dict(reader.unknown_event_types)
        summary.problem = reader.problem
    return summary
