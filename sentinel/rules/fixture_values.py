"""Reading values out of a fixture document: typed, with an error naming the field when one is wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# network.transport as a socket type (SOCK_STREAM, SOCK_DGRAM), for connects and the socket calls alike.
TRANSPORTS = {"tcp": 1, "udp": 2}


class FixtureError(ValueError):
    """A fixture document that cannot be turned into an event."""


def as_map(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise FixtureError(f"{what} must be a mapping")
    return value


def as_int(value: Any, what: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise FixtureError(f"{what} must be a number")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FixtureError(f"{what} must be a number, not {value!r}") from None


def as_str(value: Any, what: str, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, (Mapping, list)):
        raise FixtureError(f"{what} must be a string")
    return str(value)
