"""Container metadata looked up off the pipeline thread, cached and bounded: :class:`MetadataService`.

Detection never waits for a runtime. The pipeline thread calls :meth:`~MetadataService.request` for a
container it sees (cheap, never blocks: a lock held for a few dictionary operations) and
:meth:`~MetadataService.get` when it builds an alert; one worker thread asks the runtimes. Events seen
before the answer carry the container's id only; :meth:`~MetadataService.take_completed` hands over the ids
answered since the last call, so the agent can complete those events or mark them as never to be completed.

- **Routing.** A container is asked of the endpoints of its runtime first, then of the other endpoints
  (cri-dockerd's containers look like containerd's in a cgroupfs layout; a docker socket may be podman's).
  Rootless endpoints (a user's own socket) are asked only about rootless containers; their answers could be
  that user's invention. LXC, nspawn and libvirt have no API to ask: such containers are not looked up.
- **Bounds.** Answers: an LRU of ``cache_size`` containers. Negative answers (no runtime knows the id, or
  none could say) are remembered per id and asked again after a delay that doubles each time (``retry_first``
  to ``retry_max``). The queue holds at most ``queue_size`` ids; beyond that a request is dropped and counted,
  and the next event of that container asks again. Completed answers wait in a bounded list.
- **A hung or hostile runtime.** Each lookup has a deadline (``timeout``); an endpoint that times out or
  cannot be reached is left alone for a delay that doubles up to ``retry_max``, so one hung daemon costs one
  timeout per period, not one per container. Oversized or malformed answers are refused by the clients.
- **Diagnostics.** An endpoint whose socket is absent is normal (that runtime is not installed) and silent.
  Any other reason it cannot be asked (a client library missing, permission, refused) is logged once as a
  warning, and again only after it had recovered. Counters per endpoint: :meth:`~MetadataService.stats`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from sentinel.containers.cgroup_path import CONTAINERD, CRIO, DOCKER, PODMAN, ContainerRef
from sentinel.containers.endpoints import (
    API_DOCKER,
    DEFAULT_ENDPOINTS,
    Endpoint,
    parse_endpoints,
    rootless_endpoints,
)
from sentinel.containers.metadata import (
    ContainerMeta,
    LookupTimeout,
    MetadataClient,
    RefusedAnswer,
    RuntimeUnavailable,
    SocketMissing,
)
from sentinel.log import get_logger

__all__ = [
    "FAILED",
    "FOUND",
    "NOT_FOUND",
    "PENDING",
    "SUPPORTED_RUNTIMES",
    "Answer",
    "MetadataService",
    "ServiceStats",
    "SourceStats",
    "make_client",
]

FOUND, NOT_FOUND, FAILED, PENDING = "found", "not_found", "failed", "pending"
SUPPORTED_RUNTIMES = frozenset({DOCKER, PODMAN, CONTAINERD, CRIO})
ROOTLESS_RESCAN = 30.0  # seconds between looks for users' sockets (users log in and out)


@dataclass(frozen=True, slots=True)
class Answer:
    """One lookup's outcome. ``reason``: ``found`` (``meta`` set), ``not_found`` (the runtimes asked do not
    know the id), ``failed`` (none could say: unreachable, timed out, refused); the last two are asked again
    later, and a later answer comes through :meth:`MetadataService.take_completed` again."""

    full_id: str
    meta: ContainerMeta | None
    reason: str


@dataclass(slots=True)
class SourceStats:
    """Per endpoint: lookups asked, and how each ended."""

    lookups: int = 0
    found: int = 0
    not_found: int = 0
    timeouts: int = 0
    refused: int = 0  # oversized, malformed, unexpected status
    unavailable: int = 0  # could not be asked (the lookup went to the next endpoint)
    failures: int = 0  # a client's own error (a bug): logged, never fatal
    skipped: int = 0  # lookups not asked because the endpoint was backing off
    state: str = "unknown"  # up, missing, down
    problem: str = ""


@dataclass(slots=True)
class ServiceStats:
    """The service's counters; ``sources`` by endpoint (``<kind>:<path>``)."""

    requests: int = 0
    cache_hits: int = 0
    pending_hits: int = 0
    negative_hits: int = 0
    queued: int = 0
    dropped: int = 0  # queue full
    unsupported: int = 0  # runtimes without an API (lxc, nspawn, libvirt-lxc)
    found: int = 0
    not_found: int = 0
    failed: int = 0
    evicted: int = 0
    completed_dropped: int = 0
    sources: dict[str, SourceStats] = field(default_factory=dict)


@dataclass(slots=True)
class _Source:
    endpoint: Endpoint
    client: MetadataClient
    stats: SourceStats
    down_until: float = 0.0
    backoff: float = 0.0
    warned: bool = False


@dataclass(slots=True)
class _Negative:
    until: float
    delay: float
    reason: str


def make_client(endpoint: Endpoint) -> MetadataClient:
    """The client for an endpoint's protocol (the CRI one imports grpc only when asked)."""
    if endpoint.protocol == API_DOCKER:
        from sentinel.containers.docker_api import DockerClient

        return DockerClient(endpoint.path, endpoint.kind)
    from sentinel.containers.cri import CriClient

    return CriClient(endpoint.path, endpoint.kind)


class MetadataService:
    """See the module docstring. Thread-safe for one pipeline thread and any readers."""

    def __init__(
        self,
        endpoints: Iterable[str | Endpoint] | None = None,
        *,
        rootless: bool = True,
        rootless_root: str = "/",
        timeout: float = 2.0,
        cache_size: int = 4096,
        negative_size: int = 4096,
        queue_size: int = 1024,
        completed_size: int = 4096,
        retry_first: float = 5.0,
        retry_max: float = 300.0,
        client_factory: Callable[[Endpoint], MetadataClient] = make_client,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        chosen = list(DEFAULT_ENDPOINTS if endpoints is None else endpoints)
        texts = [e for e in chosen if isinstance(e, str)]
        parsed = {(e.kind, e.path): e for e in parse_endpoints(texts)}
        for e in chosen:
            if isinstance(e, Endpoint):
                parsed.setdefault((e.kind, e.path), e)
        self.timeout = timeout
        self.cache_size, self.negative_size = cache_size, negative_size
        self.queue_size, self.completed_size = queue_size, completed_size
        self.retry_first, self.retry_max = retry_first, retry_max
        self._factory = client_factory
        self._clock = clock
        self._rootless = rootless
        self._rootless_root = rootless_root
        self._rootless_scanned = float("-inf")
        self._stats = ServiceStats()
        self._sources: list[_Source] = []  # the worker's (the list is replaced, never mutated, on rescans)
        for endpoint in parsed.values():
            self._add_source(endpoint)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._cache: OrderedDict[str, ContainerMeta] = OrderedDict()
        self._negative: OrderedDict[str, _Negative] = OrderedDict()
        self._pending: dict[str, ContainerRef] = {}
        self._queue: deque[str] = deque()
        self._completed: deque[Answer] = deque()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ---- the pipeline thread's side ------------------------------------------------------------------

    def request(self, ref: ContainerRef) -> bool:
        """Ask for ``ref``'s metadata unless it is known, pending or recently not found; never blocks.
        True when a lookup was queued."""
        full_id = ref.full_id
        with self._lock:
            stats = self._stats
            stats.requests += 1
            if full_id in self._cache:
                stats.cache_hits += 1
                return False
            if full_id in self._pending:
                stats.pending_hits += 1
                return False
            if ref.runtime not in SUPPORTED_RUNTIMES:
                stats.unsupported += 1
                return False
            negative = self._negative.get(full_id)
            if negative is not None and negative.until > self._clock():
                stats.negative_hits += 1
                return False
            if len(self._pending) >= self.queue_size or self._closed:
                stats.dropped += 1
                return False
            self._pending[full_id] = ref
            self._queue.append(full_id)
            stats.queued += 1
            self._wake.notify_all()
            return True

    def get(self, full_id: str) -> ContainerMeta | None:
        """The metadata of a container, if a runtime has answered for it (and it is still cached)."""
        with self._lock:
            meta = self._cache.get(full_id)
            if meta is not None:
                self._cache.move_to_end(full_id)
            return meta

    def state(self, full_id: str) -> str | None:
        """``found``, ``pending``, ``not_found``, ``failed``, or None (never asked, or forgotten)."""
        with self._lock:
            if full_id in self._cache:
                return FOUND
            if full_id in self._pending:
                return PENDING
            negative = self._negative.get(full_id)
            return negative.reason if negative is not None else None

    def take_completed(self) -> list[Answer]:
        """The answers since the last call, oldest first."""
        with self._lock:
            if not self._completed:
                return []
            done = list(self._completed)
            self._completed.clear()
            return done

    def forget(self, full_id: str) -> None:
        """Drop what is known of a container (it is gone; or renamed: ask again)."""
        with self._lock:
            self._cache.pop(full_id, None)
            self._negative.pop(full_id, None)

    def stats(self) -> ServiceStats:
        """A copy of the counters."""
        with self._lock:
            snapshot = replace(self._stats, sources={})
            for source in self._sources:
                snapshot.sources[source.endpoint.kind + ":" + source.endpoint.path] = replace(source.stats)
            return snapshot

    # ---- life --------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sentinel-container-meta", daemon=True)
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the worker (it finishes the lookup in hand: at most ``self.timeout``) and the clients."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(self.timeout + 1.0 if timeout is None else timeout)
        for source in self._sources:
            with contextlib.suppress(Exception):  # closing must not raise in shutdown paths
                source.client.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being looked up (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
            return True

    # ---- the worker --------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                full_id = self._queue.popleft()
                ref = self._pending[full_id]
                self._busy = True
            try:
                answer = self._lookup(ref)
            except Exception as exc:  # never lose the worker: count it as a failed lookup
                get_logger().error("sentinel.container_metadata_error", container_id=full_id, error=repr(exc))
                answer = Answer(full_id, None, FAILED)
            with self._lock:
                self._record(answer)
                del self._pending[full_id]
                self._busy = False
                self._wake.notify_all()

    def _record(self, answer: Answer) -> None:
        stats = self._stats
        if answer.meta is not None:
            stats.found += 1
            self._negative.pop(answer.full_id, None)
            self._cache[answer.full_id] = answer.meta
            self._cache.move_to_end(answer.full_id)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
                stats.evicted += 1
        else:
            if answer.reason == NOT_FOUND:
                stats.not_found += 1
            else:
                stats.failed += 1
            previous = self._negative.pop(answer.full_id, None)
            delay = self.retry_first if previous is None else min(previous.delay * 2, self.retry_max)
            self._negative[answer.full_id] = _Negative(self._clock() + delay, delay, answer.reason)
            if len(self._negative) > self.negative_size:
                self._negative.popitem(last=False)
        self._completed.append(answer)
        if len(self._completed) > self.completed_size:
            self._completed.popleft()
            stats.completed_dropped += 1

    def _route(self, ref: ContainerRef) -> list[_Source]:
        """Endpoints to ask, in order: the runtime's own first; users' sockets only for rootless ids."""
        if ref.rootless and self._rootless:
            self._rescan_rootless()
        sources = [s for s in self._sources if ref.rootless or s.endpoint.uid is None]
        sources.sort(key=lambda s: (s.endpoint.uid is None, not s.endpoint.serves(ref.runtime)))
        return sources

    def _lookup(self, ref: ContainerRef) -> Answer:
        told_not_found = False
        for source in self._route(ref):
            stats = source.stats
            now = self._clock()
            if source.down_until > now:
                stats.skipped += 1
                continue
            stats.lookups += 1
            try:
                meta = source.client.inspect(ref.full_id, self.timeout)
            except SocketMissing as exc:
                stats.unavailable += 1
                self._down(source, "missing", str(exc), warn=False)
                continue
            except RuntimeUnavailable as exc:
                stats.unavailable += 1
                self._down(source, "down", str(exc), warn=True)
                continue
            except LookupTimeout as exc:
                stats.timeouts += 1
                self._down(source, "down", str(exc), warn=True)
                continue
            except RefusedAnswer as exc:  # this container's answer, not the endpoint, is the problem
                stats.refused += 1
                get_logger().warning("sentinel.container_metadata_refused", source=source.client.source,
                                     container_id=ref.full_id, problem=str(exc))  # fmt: skip
                continue
            except Exception as exc:
                stats.failures += 1
                get_logger().error("sentinel.container_metadata_error", source=source.client.source,
                                   container_id=ref.full_id, error=repr(exc))  # fmt: skip
                continue
            self._up(source)
            if meta is not None:
                stats.found += 1
                return Answer(ref.full_id, meta, FOUND)
            stats.not_found += 1
            told_not_found = True
        return Answer(ref.full_id, None, NOT_FOUND if told_not_found else FAILED)

    def _down(self, source: _Source, state: str, problem: str, *, warn: bool) -> None:
        source.backoff = self.retry_first if source.backoff == 0 else min(source.backoff * 2, self.retry_max)
        source.down_until = self._clock() + source.backoff
        source.stats.state, source.stats.problem = state, problem
        if warn and not source.warned:
            source.warned = True
            get_logger().warning("sentinel.container_runtime_unavailable", source=source.client.source,
                                 problem=problem, retry_in=source.backoff)  # fmt: skip

    def _up(self, source: _Source) -> None:
        if source.warned:
            get_logger().info("sentinel.container_runtime_recovered", source=source.client.source)
        source.backoff, source.down_until, source.warned = 0.0, 0.0, False
        source.stats.state, source.stats.problem = "up", ""

    def _add_source(self, endpoint: Endpoint) -> None:
        client = self._factory(endpoint)
        self._sources = [*self._sources, _Source(endpoint, client, SourceStats())]

    def _rescan_rootless(self) -> None:
        now = self._clock()
        if now - self._rootless_scanned < ROOTLESS_RESCAN:
            return
        self._rootless_scanned = now
        known = {(s.endpoint.kind, s.endpoint.path) for s in self._sources}
        for endpoint in rootless_endpoints(self._rootless_root):
            if (endpoint.kind, endpoint.path) not in known:
                self._add_source(endpoint)

    @property
    def endpoints(self) -> Sequence[Endpoint]:
        return tuple(s.endpoint for s in self._sources)
