"""Every test: the host's /etc/sentinel/sentinel.yaml (and drop-ins) stay out of the agent under test.

`sentinel run` reads the default configuration when no --config is given; a developer's or CI host's own
file must not change what the tests see. Subprocesses inherit the variable.

The run also reports the tests during which the pytest process itself grew most: a fixture that keeps
what a long-lived agent sends once filled the machine's memory, and the summary names such a test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["SENTINEL_CONFIG"] = "/nonexistent/sentinel-tests/sentinel.yaml"

GROWTH_REPORTED = 200 * 1024 * 1024  # bytes of RSS growth during one test worth naming
_PAGE = os.sysconf("SC_PAGE_SIZE")
_growth: list[tuple[int, str]] = []


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    before = _rss()
    yield
    grew = _rss() - before
    if grew >= GROWTH_REPORTED:
        _growth.append((grew, item.nodeid))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _growth:
        return
    terminalreporter.section("pytest process memory growth")
    terminalreporter.write_line(f"now {_rss() / 2**20:.0f} MiB resident; tests during which it grew most:")
    for grew, nodeid in sorted(_growth, reverse=True)[:10]:
        terminalreporter.write_line(f"  +{grew / 2**20:.0f} MiB  {nodeid}")
