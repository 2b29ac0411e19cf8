"""The agent's health as ``/healthz`` reports it: a few facts the agent sets, judged when someone asks.

The agent's loop only stores facts (a timestamp per poll, a flag when the probes attach, a sink's state
when it changes, a loss count when the sensor reports one); judging them (is the loop stale, were events
lost in the last minute) happens in :meth:`Health.report`, on the HTTP server's thread, so the hot path
pays one attribute store per poll. Nothing here raises into the agent.

Checks (each ``ok``, ``degraded`` or ``failing``; the overall status is the worst of them):

- ``probes``: the tracepoints are attached. Not attached (still starting, or the sensor failed) is
  ``failing``: the agent sees nothing.
- ``event_loop``: the loop polled within ``stale_after_s`` (default 10 s; it polls every 50 ms). A stale or
  never-started loop is ``failing``: a wedged agent sees nothing either.
- ``sinks``: every alert output that reported a state. Some failing is ``degraded``; all failing is
  ``failing`` (alerts are not getting out). No sink reported yet is ``ok``.
- ``model``: the anomaly model's state. ``off``, ``learning`` and ``detection`` are ``ok``; anything else
  (``failed``, ``refused``…) is ``degraded``: the rules still run.
- ``losses``: kernel events lost within the last ``loss_window_s`` (default 60 s). Any is ``degraded``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

OK, DEGRADED, FAILING = "ok", "degraded", "failing"
_RANK = {OK: 0, DEGRADED: 1, FAILING: 2}
MODEL_OK_STATES = frozenset({"off", "learning", "detection"})


def worst(statuses: list[str]) -> str:
    """The most severe of ``statuses`` (ok when there are none)."""
    return max(statuses, key=_RANK.__getitem__, default=OK)


class Health:
    """Facts about the running agent; ``report()`` turns them into the ``/healthz`` document.

    Setters are called from the agent's loop thread, ``report`` from the HTTP server's threads: plain
    attribute stores are atomic under the GIL, and the two containers (sinks, losses) are guarded by a lock
    that the loop takes only when a sink changes state or events are lost.
    """

    def __init__(
        self,
        stale_after_s: float = 10.0,
        loss_window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.loss_window_s = loss_window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._probes: tuple[bool, str] = (False, "not attached yet")
        self._last_tick: float | None = None
        self._sinks: dict[str, tuple[bool, str]] = {}
        self._model: tuple[str, str] = ("off", "")
        self._losses: deque[tuple[float, int]] = deque(maxlen=10_000)  # (when, count); at most 80 a second

    # ------------------------------------------------------------------------- fed by the agent

    def loop_tick(self) -> None:
        """Once per poll: the loop is alive. One clock read and one store."""
        self._last_tick = self._clock()

    def set_probes(self, attached: bool, detail: str = "") -> None:
        """After ``sensor.start()`` (True) or when the sensor fails or is closed (False, with why)."""
        self._probes = (bool(attached), detail)

    def set_sink(self, name: str, ok: bool, detail: str = "") -> None:
        """A sink's current state: on failure and recovery, or at every snapshot (it is cheap)."""
        with self._lock:
            self._sinks[str(name)] = (bool(ok), detail)

    def set_sinks_from_stats(self, stats: Mapping[str, Mapping[str, Any]]) -> None:
        """Every sink's state from :func:`sentinel.metrics.sink_stats` (``healthy``, 1 when absent)."""
        for name, st in stats.items():
            healthy = st.get("healthy", 1)
            self.set_sink(name, bool(healthy), "" if healthy else "writes failing")

    def set_model(self, state: str, detail: str = "") -> None:
        """The anomaly model's phase (off | learning | detection) or a failure state (failed, refused…)."""
        self._model = (str(state), detail)

    def record_loss(self, count: int) -> None:
        """Kernel events lost just now (``run_live``'s ``on_loss`` delta)."""
        if count <= 0:
            return
        now = self._clock()
        with self._lock:
            self._losses.append((now, int(count)))
            self._prune(now)

    # ------------------------------------------------------------------------- read by /healthz

    def report(self) -> dict[str, Any]:
        """``{"status": ok|degraded|failing, "checks": {name: {"status": …, …}}}``; never raises."""
        try:
            checks = {
                "probes": self._check_probes(),
                "event_loop": self._check_loop(),
                "sinks": self._check_sinks(),
                "model": self._check_model(),
                "losses": self._check_losses(),
            }
        except Exception as exc:  # a bug here must show as a failing check, not a dead endpoint
            return {"status": FAILING, "checks": {"health": {"status": FAILING, "error": repr(exc)}}}
        return {"status": worst([c["status"] for c in checks.values()]), "checks": checks}

    def _check_probes(self) -> dict[str, Any]:
        attached, detail = self._probes
        out: dict[str, Any] = {"status": OK if attached else FAILING, "attached": attached}
        if detail:
            out["detail"] = detail
        return out

    def _check_loop(self) -> dict[str, Any]:
        last = self._last_tick
        if last is None:
            return {
                "status": FAILING,
                "detail": "the event loop has not started",
                "stale_after_s": self.stale_after_s,
            }
        age = max(0.0, self._clock() - last)
        return {
            "status": OK if age <= self.stale_after_s else FAILING,
            "last_iteration_age_s": round(age, 3),
            "stale_after_s": self.stale_after_s,
        }

    def _check_sinks(self) -> dict[str, Any]:
        with self._lock:
            sinks = dict(self._sinks)
        failing = sorted(name for name, (ok, _) in sinks.items() if not ok)
        if not failing:
            status = OK
        elif len(failing) == len(sinks):
            status = FAILING
        else:
            status = DEGRADED
        out: dict[str, Any] = {
            "status": status,
            "sinks": {name: OK if ok else FAILING for name, (ok, _) in sorted(sinks.items())},
        }
        details = {name: detail for name, (ok, detail) in sinks.items() if not ok and detail}
        if details:
            out["detail"] = details
        return out

    def _check_model(self) -> dict[str, Any]:
        state, detail = self._model
        out: dict[str, Any] = {"status": OK if state in MODEL_OK_STATES else DEGRADED, "state": state}
        if detail:
            out["detail"] = detail
        return out

    def _check_losses(self) -> dict[str, Any]:
        now = self._clock()
        with self._lock:
            self._prune(now)
            lost = sum(n for _, n in self._losses)
        return {"status": DEGRADED if lost else OK, "lost": lost, "window_s": self.loss_window_s}

    def _prune(self, now: float) -> None:
        """Drop losses older than the window (caller holds the lock)."""
        horizon = now - self.loss_window_s
        losses = self._losses
        while losses and losses[0][0] < horizon:
            losses.popleft()
