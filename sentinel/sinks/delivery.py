"""A network sink: the spool in front, a delivery thread behind it, a transport (HTTP, syslog TCP) at the end.

The detection loop only appends to the spool (memory, then one write per batch at ``flush()``); the thread
reads batches from the spool, hands them to the transport and acknowledges what the peer accepted. Failures
are retried with exponential backoff and full jitter (a fleet of agents does not reconnect in lockstep after
a SIEM outage); a batch the peer refuses for good (a 4xx) is dropped and counted so one bad alert cannot
stop the queue. On ``close()`` the thread keeps delivering for ``close_timeout_s`` and leaves the rest in the
spool for the next run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sentinel import tasks
from sentinel.log import get_logger
from sentinel.sinks.base import Episode, base_stats
from sentinel.sinks.spec import SinkConfig
from sentinel.sinks.spool import Batch, Spool, spool_dir

DELIVERED = "delivered"
RETRY = "retry"
REJECTED = "rejected"
TOO_LARGE = "too_large"  # the peer wants smaller batches (HTTP 413): halve and try again
IDLE_RECHECK_S = 0.1


@dataclass(slots=True)
class Outcome:
    status: str
    problem: str = ""
    retry_after: float | None = None  # the peer's own hint (HTTP Retry-After), within retry_max_s


class Transport(Protocol):
    batch_max: int

    def send(self, lines: list[bytes]) -> Outcome: ...
    def abort(self) -> None: ...  # from another thread: make a blocked send fail now
    def close(self) -> None: ...


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: Callable[[float, float], float]
) -> float:
    """Full jitter: uniform in [0, min(max, initial·2^(attempt-1))]."""
    cap = min(maximum, initial * (2 ** min(attempt - 1, 60)))
    return rng(0.0, cap)


class SpooledSink:
    """``write``/``flush`` never touch the network; ``stats()`` tells how delivery goes."""

    def __init__(
        self,
        cfg: SinkConfig,
        state_dir: str,
        transport: Transport,
        encode: Callable[[bytes, str], bytes] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.label()
        self.format = cfg.format
        self.transport = transport
        self.spool = Spool(spool_dir(state_dir, self.name), cfg.spool_max_bytes, self.name)
        self.written = 0
        self.delivered = 0
        self.errors = 0
        self.rejected = 0
        self.last_success: float | None = None
        self._encode = encode
        self._batch_max = max(1, transport.batch_max)
        self._limit = self._batch_max
        self._since: float | None = None  # when the consumer started waiting for a fuller batch
        self._stopping = False
        self._deadline = 0.0
        self._closed = False
        self._episode = Episode(self.name)
        self._rejecting = False
        self._rng = random.Random().uniform
        self._thread = threading.Thread(target=self._run, name=f"sentinel-sink {self.name}", daemon=True)
        self._thread.start()

    # ---- detection thread -------------------------------------------------------------------------------

    def write(self, line: bytes, priority: str = "warning") -> None:
        self.spool.append(self._encode(line, priority) if self._encode is not None else line)
        self.written += 1

    def flush(self) -> None:
        self.spool.flush()

    def reopen(self) -> None:
        """Nothing to reopen: the connection is the delivery thread's business."""

    def close(self) -> None:
        """Deliver what can be delivered within ``close_timeout_s``; the rest waits in the spool."""
        if self._closed:
            return
        self._closed = True
        self.spool.flush()
        with self.spool.ready:
            self._stopping = True
            self._deadline = time.monotonic() + max(0.0, self.cfg.close_timeout_s)
            self.spool.ready.notify_all()
        self._thread.join(self.cfg.close_timeout_s + 0.5)
        if self._thread.is_alive():
            self.transport.abort()  # a send blocked on a dead peer
            self._thread.join(2.0)
        self.transport.close()
        if not self._thread.is_alive():
            self.spool.close()
        left = self.spool.stats()["backlog_alerts"]
        if left:
            get_logger().warning("sentinel.sink_backlog_kept", sink=self.name, backlog=left)

    def stats(self) -> dict[str, Any]:
        spool = self.spool.stats()
        return base_stats(
            written=self.written,
            delivered=self.delivered,
            errors=self.errors + spool["spool_write_errors"],
            dropped=spool["dropped"],
            spool_dropped=spool["dropped"],
            rejected=self.rejected,
            corrupt=spool["corrupt"],
            backlog_alerts=spool["backlog_alerts"],
            backlog_bytes=spool["backlog_bytes"],
            spool_bytes=spool["spool_bytes"],
            last_success=self.last_success,
            status="failing" if self._episode.failing else "ok",
        )

    # ---- delivery thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        """Deliver until closing. Nothing else ends the thread: a failure of any kind (a transport or spool
        bug, an unexpected exception) is counted, reported (:mod:`sentinel.tasks`) and retried with backoff,
        because a thread that died silently would leave alerts piling up in the spool for ever."""
        batch: Batch | None = None
        attempt = 0
        while True:
            try:
                if batch is None or not self.spool.still_pending(batch):
                    batch = self._next_batch()
                    if batch is None:
                        return
                if not batch.lines:  # only corrupt lines: nothing to send
                    self.spool.ack(batch)
                    batch = None
                    continue
                outcome = self.transport.send(batch.lines)
                batch, attempt, delay = self._settle(batch, outcome, attempt)
            except Exception as exc:  # the batch stays where it is and is tried again
                self.errors += 1
                self._episode.fail(tasks.describe(exc))
                tasks.record("sink_delivery", exc, sink=self.name)
                attempt += 1
                delay = backoff_delay(attempt, self.cfg.retry_initial_s, self.cfg.retry_max_s, self._rng)
            if delay is not None and not self._sleep(delay):
                return

    def _settle(self, batch: Batch, outcome: Outcome, attempt: int) -> tuple[Batch | None, int, float | None]:
        """What the peer's answer means: the batch still to send (None when done with it), the attempt
        count and how long to back off before the next send (None: go on at once)."""
        if outcome.status == DELIVERED:
            self.spool.ack(batch)
            self.delivered += len(batch.lines)
            self.last_success = time.time()
            self._limit = self._batch_max
            self._rejecting = False
            self._episode.ok(errors=self.errors, delivered=self.delivered)
            return None, 0, None
        if outcome.status == TOO_LARGE and len(batch.lines) > 1:
            self._limit = max(1, len(batch.lines) // 2)
            return None, attempt, None  # read again from the same position, fewer lines
        if outcome.status in (REJECTED, TOO_LARGE):
            self.spool.ack(batch)
            self.rejected += len(batch.lines)
            self.errors += 1
            if not self._rejecting:  # once per episode: until a batch is accepted again
                self._rejecting = True
                get_logger().error(
                    "sentinel.sink_rejected", sink=self.name, problem=outcome.problem,
                    alerts=len(batch.lines), rejected=self.rejected,
                )  # fmt: skip
            return None, attempt, None
        self.errors += 1
        self._episode.fail(outcome.problem, backlog=self.spool.backlog())
        attempt += 1
        delay = backoff_delay(attempt, self.cfg.retry_initial_s, self.cfg.retry_max_s, self._rng)
        if outcome.retry_after is not None:
            delay = min(max(delay, outcome.retry_after), self.cfg.retry_max_s)
        return batch, attempt, delay

    def _next_batch(self) -> Batch | None:
        """Wait for ``batch_max`` lines, or for the first waiting line to be ``batch_wait_s`` old."""
        ready = self.spool.ready
        while True:
            with ready:
                while True:
                    now = time.monotonic()
                    avail = self.spool.backlog_nolock()
                    if self._stopping:
                        if avail == 0 or now >= self._deadline:
                            return None
                        break
                    if avail >= self._limit:
                        break
                    if avail == 0:
                        self._since = None
                        ready.wait()
                        continue
                    if self._since is None:
                        self._since = now
                    wait = self._since + self.cfg.batch_wait_s - now
                    if wait <= 0:
                        break
                    ready.wait(wait)
            batch = self.spool.peek(self._limit)
            if batch is not None:
                if self.spool.backlog() <= len(batch.lines):
                    self._since = None
                return batch
            with ready:
                ready.wait(IDLE_RECHECK_S)

    def _sleep(self, delay: float) -> bool:
        """Back off; False once stopping and past the deadline (the thread ends)."""
        ready = self.spool.ready
        end = time.monotonic() + delay
        with ready:
            while True:
                now = time.monotonic()
                limit = min(end, self._deadline) if self._stopping else end
                if now >= limit:
                    break
                ready.wait(limit - now)
            return not (self._stopping and time.monotonic() >= self._deadline)
