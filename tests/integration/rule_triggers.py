"""Shared by the kernel tests that fire a corpus's rules (Falco's stable file, SigmaHQ's Linux rules) on real
behaviour: what a trigger did, whose alerts count, and waiting for the rule's alert with a deadline."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import get
from .test_detection import Detector

ALERT_TIMEOUT = 20.0


@dataclass
class Fired:
    """What a trigger did: the processes whose alert counts, and a check of the alert's own fields."""

    pids: set[int]
    check: Callable[[dict[str, Any]], bool]
    what: str


def from_pids(alert: dict[str, Any], pids: set[int]) -> bool:
    if get(alert, "process.pid") in pids:
        return True
    return any(a.get("pid") in pids for a in get(alert, "sentinel.ancestors") or [])


def run(argv: list[str], ok: tuple[int, ...] = (0,), **kw: Any) -> int:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    rc = proc.wait(60)
    assert rc in ok, f"{argv} exited {rc}"
    return proc.pid


def brief(alert: dict[str, Any]) -> str:
    return f"{get(alert, 'rule.name')!r} pid={get(alert, 'process.pid')}: {get(alert, 'message')}"


def rules_detector(rules: Path, *args: str) -> Iterator[Detector]:
    """One ``sentinel run --rules RULES --model off --aggregation-window 0 [ARGS]`` for a module (under a
    module-scoped fixture). Aggregation off: each trigger's alert must be a line of its own, and folding by
    behaviour would fold a trigger into an earlier test's incidental match of the same rule by the same kind
    of program (these tests check that rules fire; tests/integration/test_noise.py checks the folding)."""
    d = Detector(("--rules", str(rules), "--model", "off", "--aggregation-window", "0", *args))
    yield d
    assert d.stop() == 0
    assert not d.bad, f"non-JSON alert lines: {d.bad[:3]}"


def wait_for_rule(
    detector: Detector, rule: str, fired: Fired, timeout: float = ALERT_TIMEOUT
) -> dict[str, Any]:
    """The first alert of ``rule`` from the trigger's processes that passes its check; fails naming the rule,
    the trigger and every alert its processes raised when none arrives in time."""
    deadline = time.monotonic() + timeout
    while True:
        alerts = list(detector.alerts)
        ours = [a for a in alerts if from_pids(a, fired.pids)]
        hits = [a for a in ours if get(a, "rule.name") == rule and fired.check(a)]
        if hits:
            return hits[0]
        if time.monotonic() > deadline:
            shown = "\n  ".join(brief(a) for a in ours) or "(none)"
            of_rule = sum(1 for a in ours if get(a, "rule.name") == rule)
            pytest.fail(
                f"{rule!r} did not fire within {timeout}s on {fired.what} (pids {sorted(fired.pids)}); "
                f"{of_rule} alert(s) of that rule failed the check; alerts from the trigger:\n  {shown}\n"
                f"rules seen: {sorted({get(a, 'rule.name') for a in alerts})}"
            )
        time.sleep(0.05)
