"""The host's anomaly state on disk: behaviour profiles, learning sample and progress, the host-trained model.

Everything the agent learns about a host must survive restarts, or a reboot during the learning period would
start it over. Layout under ``<state_dir>/anomaly/``: ``profiles.json`` (the host's behaviour profiles),
``learning.json`` (time learned, events seen, when the model is next trained), ``sample.msgpack`` (a uniform
reservoir sample of rows with their profile keys and times) and ``model/`` (the model trained from them).
Files are replaced atomically (write, fsync, rename), so a crash leaves the previous version. A file that
cannot be read is moved aside as ``NAME.corrupt`` and reported; the agent starts that part afresh. Files an
older agent wrote (``rarity.json``, ``sample.npz``, version 1) are not read: learning starts over, and the
log says so.

Profile keys are process strings: ``profiles.json`` holds them escaped by the project's rule where they are
not UTF-8 (:mod:`sentinel.text`), the sample as raw bytes (msgpack), so both reload to the same keys whatever
a local user named a file. A save that still fails is the caller's to count and report.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import orjson

from sentinel.anomaly.features import N_FEATURES
from sentinel.anomaly.profiles import ProfileState
from sentinel.text import raw_bytes

DEFAULT_STATE_DIR = "/var/lib/sentinel"
SUBDIR = "anomaly"
RARITY_FILE = "profiles.json"
LEARNING_FILE = "learning.json"
SAMPLE_FILE = "sample.msgpack"
SAMPLE_VERSION = 2
MODEL_DIR = "model"
STATE_VERSION = 2


def anomaly_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / SUBDIR


def atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, fsynced: readers and crashes see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def quarantine(path: Path) -> Path:
    """Move an unreadable state file aside (kept for inspection) so the next save does not overwrite it."""
    dest = path.with_name(path.name + ".corrupt")
    with contextlib.suppress(OSError):
        os.replace(path, dest)
    return dest


@dataclass(slots=True)
class LearningProgress:
    """How long this host has been learned (agent running time, not wall time) and how much it saw."""

    learned_s: float = 0.0
    events: int = 0
    started: float = field(default_factory=time.time)  # wall time learning began (unix seconds)
    next_train_s: float = 0.0  # learned time at which the model is (re)trained; 0: at the warm-up's end
    trainings: int = 0
    last_trained: float = 0.0  # unix seconds; 0: never
    extended_logged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "learned_s": self.learned_s, "events": self.events,
                "started": self.started, "next_train_s": self.next_train_s, "trainings": self.trainings,
                "last_trained": self.last_trained}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> LearningProgress:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ValueError(f"learning state version {version!r}, this agent keeps {STATE_VERSION} "
                             "(an older agent wrote it: learning starts over)")  # fmt: skip
        learned, events, started = data.get("learned_s"), data.get("events"), data.get("started")
        if not isinstance(learned, int | float) or learned < 0 or not isinstance(events, int) or events < 0:
            raise ValueError("learned_s and events must be non-negative numbers")
        if not isinstance(started, int | float):
            raise ValueError("started must be a number")
        nxt, trainings = data.get("next_train_s", 0.0), data.get("trainings", 0)
        last = data.get("last_trained", 0.0)
        if not isinstance(nxt, int | float) or nxt < 0 or not isinstance(trainings, int) or trainings < 0:
            raise ValueError("next_train_s and trainings must be non-negative numbers")
        if not isinstance(last, int | float):
            raise ValueError("last_trained must be a number")
        return cls(float(learned), events, float(started), float(nxt), trainings, float(last))


Key = tuple[int, str, str, str]  # (feature column or -1, profile kind, subject, item): see RowFacts.keys


class RowSample:
    """A uniform reservoir sample of rows with their profile keys, bounded at ``capacity`` rows.

    A learning period can see billions of events; a uniform sample keeps memory fixed while still covering
    the whole period, and ``seen`` lets the threshold budget be scaled back to real event counts. Each row
    keeps the keys it was measured on (training re-measures it against the final profiles, leaving itself
    out) and its live values (the held-out rows, as detection would have seen them).

    Once full, the reservoir decides in advance how many events to pass over before the next one it keeps
    (Li's algorithm L), so an event it will not keep costs a counter: asking a random number for every event
    cost the live agent 5 µs an event (measured with cProfile: 0.6 s per 120k events), for rows it dropped.
    """

    def __init__(self, capacity: int = 100_000, seed: int | None = None) -> None:
        self.capacity = max(1, capacity)
        # (live row as float32, wall time, weight, keys): 44 bytes a row instead of a list of floats
        self.rows: list[tuple[array, int, float, tuple[Key, ...]]] = []
        self.seen = 0
        self._rng = random.Random(seed)
        self._w = 1.0  # algorithm L's state: the largest of the kept rows' uniform keys
        self.next_kept = 1  # the ``seen`` number of the next event the reservoir keeps

    @property
    def size(self) -> int:
        return len(self.rows)

    def due(self) -> bool:
        """Whether the next event is one the reservoir keeps (then :meth:`add` needs its row and keys)."""
        return self.seen + 1 >= self.next_kept

    def add(self, row: list[float], wall_ns: int, keys: list[Key] | tuple[Key, ...] = (),
            weight: float = 1.0) -> None:  # fmt: skip
        self.seen += 1
        if self.seen < self.next_kept:
            return
        item = (array("f", row), wall_ns, weight, tuple(keys))
        if len(self.rows) < self.capacity:
            self.rows.append(item)
            self.next_kept = self.seen + 1
            if len(self.rows) == self.capacity:
                self._w = math.exp(math.log(self._uniform()) / self.capacity)
                self._skip()
            return
        self.rows[self._rng.randrange(self.capacity)] = item
        self._w *= math.exp(math.log(self._uniform()) / self.capacity)
        self._skip()

    def pass_over(self) -> None:
        """Count an event the caller knows is not due (:meth:`due` was false): nothing else to do."""
        self.seen += 1

    def _uniform(self) -> float:
        return self._rng.random() or 1e-300  # (0, 1): log() needs it positive

    def _skip(self) -> None:
        """Draw how many events pass before the next kept one (geometric with the current ``_w``)."""
        w = min(self._w, 1.0 - 1e-16)
        self.next_kept = self.seen + int(math.log(self._uniform()) / math.log1p(-w)) + 1

    def resume(self) -> None:
        """After loading: the reservoir's state for ``seen`` events kept in ``capacity`` rows (the largest of
        the kept keys is the ``capacity``-th smallest of ``seen`` uniforms: Beta(k, n - k + 1))."""
        if len(self.rows) < self.capacity or self.seen <= self.capacity:
            self.next_kept = self.seen + 1
            if len(self.rows) >= self.capacity:
                self._w = math.exp(math.log(self._uniform()) / self.capacity)
                self._skip()
            return
        self._w = self._rng.betavariate(self.capacity, self.seen - self.capacity + 1)
        self._skip()

    def ordered(self) -> list[tuple[array, int, float, tuple[Key, ...]]]:
        """The rows in time order (a copy)."""
        return sorted(self.rows, key=lambda r: r[1])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Live rows and times in time order."""
        rows = self.ordered()
        x = np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), N_FEATURES)
        return x, np.array([r[1] for r in rows], dtype=np.int64)

    def to_bytes(self) -> bytes:
        """msgpack: keys as bytes (``os.fsencode``), so any name a process used survives the round trip."""
        strings: dict[str, int] = {}

        def ref(text: str) -> int:
            i = strings.get(text)
            if i is None:
                i = strings[text] = len(strings)
            return i

        rows = [[list(map(float, x)), wall, weight, [[c, ref(k), ref(s), ref(i)] for c, k, s, i in keys]]
                for x, wall, weight, keys in self.rows]  # fmt: skip
        return msgpack.packb({
            "version": SAMPLE_VERSION,
            "features": N_FEATURES,
            "seen": self.seen,
            "strings": [raw_bytes(t) for t in strings],
            "rows": rows,
        })  # fmt: skip

    @classmethod
    def load(cls, path: Path, capacity: int) -> RowSample:
        """Raises ValueError when the file is not a sample this agent wrote."""
        try:
            data = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
        except OSError as exc:
            raise ValueError(f"unreadable ({exc.strerror or exc})") from None
        except Exception as exc:  # msgpack raises several types on corrupt input
            raise ValueError(f"corrupt ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or data.get("version") != SAMPLE_VERSION:
            raise ValueError(f"not a version {SAMPLE_VERSION} learning sample (another agent wrote it)")
        if data.get("features") != N_FEATURES:
            raise ValueError(f"rows have {data.get('features')!r} features, this agent {N_FEATURES}")
        strings, rows, seen = data.get("strings"), data.get("rows"), data.get("seen")
        if not isinstance(strings, list) or not all(isinstance(t, bytes) for t in strings):
            raise ValueError("strings must be a list of byte strings")
        if not isinstance(rows, list) or not isinstance(seen, int) or seen < len(rows):
            raise ValueError("rows must be a list and seen at least their number")
        text = [os.fsdecode(t) for t in strings]
        sample = cls(capacity)
        try:
            for x, wall, weight, keys in rows[: sample.capacity]:
                if len(x) != N_FEATURES or not all(isinstance(v, float) and math.isfinite(v) for v in x):
                    raise ValueError("a row has the wrong length or a non-finite value")
                if not isinstance(wall, int) or not isinstance(weight, float) or not weight > 0:
                    raise ValueError("a row's time or weight is invalid")
                parsed = tuple((int(c), text[k], text[s], text[i]) for c, k, s, i in keys)
                if any(c >= N_FEATURES for c, *_ in parsed):
                    raise ValueError("a key names a feature column out of range")
                sample.rows.append((array("f", x), wall, weight, parsed))
        except (TypeError, IndexError) as exc:
            raise ValueError(f"malformed row ({exc})") from None
        sample.seen = seen
        sample.resume()
        return sample


class HostState:
    """Reads and writes the files under ``<state_dir>/anomaly``; every problem is returned as text."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = anomaly_dir(state_dir)

    @property
    def model_dir(self) -> Path:
        return self.dir / MODEL_DIR

    def ensure(self) -> None:
        """Create the directory (0700: it holds command-line derived keys) or raise OSError."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = self.dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()

    def load_profiles(self) -> tuple[ProfileState | None, str | None]:
        path = self.dir / RARITY_FILE
        if not path.exists():
            return None, None
        try:
            return ProfileState.from_dict(orjson.loads(path.read_bytes())), None
        except (OSError, ValueError, TypeError) as exc:
            return None, f"{path}: {exc}; moved to {quarantine(path)}, the baseline starts afresh"

    def save_profiles(self, state: ProfileState) -> None:
        atomic_write(self.dir / RARITY_FILE, orjson.dumps(state.to_dict(json_safe=True)))

    def load_learning(self, capacity: int) -> tuple[LearningProgress | None, RowSample | None, list[str]]:
        problems: list[str] = []
        progress = sample = None
        path = self.dir / LEARNING_FILE
        if path.exists():
            try:
                progress = LearningProgress.from_dict(orjson.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError) as exc:
                problems.append(f"{path}: {exc}; moved to {quarantine(path)}, learning starts over")
        spath = self.dir / SAMPLE_FILE
        if spath.exists() and progress is not None:
            try:
                sample = RowSample.load(spath, capacity)
            except ValueError as exc:
                problems.append(f"{spath}: {exc}; moved to {quarantine(spath)}, learning starts over")
                progress = None
        elif progress is not None:
            progress = None  # progress without its sample cannot train: start over rather than lie
        return progress, sample, problems

    def save_learning(self, progress: LearningProgress, sample: RowSample) -> None:
        atomic_write(self.dir / SAMPLE_FILE, sample.to_bytes())
        atomic_write(self.dir / LEARNING_FILE, orjson.dumps(progress.to_dict()))
