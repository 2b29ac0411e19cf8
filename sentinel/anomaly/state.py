"""The host's anomaly state on disk: rarity baseline, learning sample and progress, the host-trained model.

Everything the agent learns about a host must survive restarts, or a reboot during the learning period would
start it over. Layout under ``<state_dir>/anomaly/``: ``rarity.json`` (the rarity tables), ``learning.json``
(time learned, events seen), ``sample.npz`` (a uniform reservoir sample of feature rows with their times,
arrays only, loaded with ``allow_pickle=False``) and ``model/`` (the model trained at the end of learning).
Files are replaced atomically (write, fsync, rename), so a crash leaves the previous version. A file that
cannot be read is moved aside as ``NAME.corrupt`` and reported; the agent starts that part afresh.

The rarity keys are process strings: ``rarity.json`` holds them escaped by the project's rule where they are
not UTF-8 (:mod:`sentinel.text`, listed under ``escaped_keys``), so it is valid JSON whatever a local user
named a file, and reloads to the same keys. A save that still fails is the caller's to count and report.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from sentinel.anomaly.features import N_FEATURES
from sentinel.anomaly.rarity import RarityState

DEFAULT_STATE_DIR = "/var/lib/sentinel"
SUBDIR = "anomaly"
RARITY_FILE = "rarity.json"
LEARNING_FILE = "learning.json"
SAMPLE_FILE = "sample.npz"
MODEL_DIR = "model"
STATE_VERSION = 1


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
    extended_logged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "learned_s": self.learned_s, "events": self.events,
                "started": self.started}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any) -> LearningProgress:
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("unknown learning state version")
        learned, events, started = data.get("learned_s"), data.get("events"), data.get("started")
        if not isinstance(learned, int | float) or learned < 0 or not isinstance(events, int) or events < 0:
            raise ValueError("learned_s and events must be non-negative numbers")
        if not isinstance(started, int | float):
            raise ValueError("started must be a number")
        return cls(float(learned), events, float(started))


class RowSample:
    """A uniform reservoir sample (Vitter's algorithm R) of feature rows, bounded at ``capacity`` rows.

    A learning period can see billions of events; a uniform sample keeps memory fixed while still covering
    the whole period, and ``seen`` lets the threshold budget be scaled back to real event counts.
    """

    def __init__(self, capacity: int = 100_000, seed: int | None = None) -> None:
        self.capacity = max(1, capacity)
        self.x = np.zeros((min(self.capacity, 1024), N_FEATURES), dtype=np.float32)
        self.wall = np.zeros(self.x.shape[0], dtype=np.int64)
        self.size = 0
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, row: list[float], wall_ns: int) -> None:
        self.seen += 1
        if self.size < self.capacity:
            if self.size == self.x.shape[0]:
                grow = min(self.capacity, self.x.shape[0] * 2)
                self.x = np.resize(self.x, (grow, N_FEATURES))
                self.wall = np.resize(self.wall, grow)
            i = self.size
            self.size += 1
        else:
            i = self._rng.randrange(self.seen)
            if i >= self.capacity:
                return
        self.x[i] = row
        self.wall[i] = wall_ns

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows and times in time order (a copy)."""
        order = np.argsort(self.wall[: self.size], kind="stable")
        return self.x[: self.size][order].astype(np.float64), self.wall[: self.size][order].copy()

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez(buf, x=self.x[: self.size], wall=self.wall[: self.size],
                 seen=np.array([self.seen], dtype=np.int64))  # fmt: skip
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path, capacity: int) -> RowSample:
        """Raises ValueError when the file is not a sample this agent wrote."""
        if not zipfile.is_zipfile(path):
            raise ValueError("not an npz archive")
        try:
            with np.load(path, allow_pickle=False) as npz:
                if set(npz.files) != {"x", "wall", "seen"}:
                    raise ValueError(f"arrays {sorted(npz.files)} != ['seen', 'wall', 'x']")
                x, wall, seen = npz["x"], npz["wall"], npz["seen"]
        except (OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise ValueError(f"corrupt ({exc})") from None
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"rows must be float32 with {N_FEATURES} columns")
        if wall.dtype != np.int64 or wall.shape != (x.shape[0],) or seen.shape != (1,):
            raise ValueError("times/seen have the wrong shape")
        if not np.all(np.isfinite(x)) or int(seen[0]) < x.shape[0]:
            raise ValueError("non-finite rows or an inconsistent count")
        sample = cls(capacity)
        n = min(x.shape[0], sample.capacity)
        sample.x = np.zeros((max(n, 1024) if n < sample.capacity else sample.capacity, N_FEATURES),
                            dtype=np.float32)  # fmt: skip
        sample.wall = np.zeros(sample.x.shape[0], dtype=np.int64)
        sample.x[:n], sample.wall[:n] = x[:n], wall[:n]
        sample.size, sample.seen = n, int(seen[0])
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

    def load_rarity(self) -> tuple[RarityState | None, str | None]:
        path = self.dir / RARITY_FILE
        if not path.exists():
            return None, None
        try:
            return RarityState.from_dict(orjson.loads(path.read_bytes())), None
        except (OSError, ValueError, TypeError) as exc:
            return None, f"{path}: {exc}; moved to {quarantine(path)}, the baseline starts afresh"

    def save_rarity(self, state: RarityState) -> None:
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
