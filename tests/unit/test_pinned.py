"""The tamper pin's carry-over without CAP_SYS_ADMIN: the decisions, without a kernel (the kernel test
tests/integration/test_unit_privileges.py carries a real record over a restart)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sentinel.sensor import pinned
from sentinel.sensor.loader import Sensor, SensorConfig


def test_attr_packs_fields_in_order_in_a_zeroed_128_byte_buffer() -> None:
    buf = pinned._attr(("I", 7), ("I", 0), ("Q", 0x1122334455667788))
    assert len(buf) == 128
    assert struct.unpack_from("=IIQ", buf, 0) == (7, 0, 0x1122334455667788)
    assert buf.raw[16:] == b"\0" * 112


def test_nothing_pinned_adopts_nothing(tmp_path: Path) -> None:
    assert pinned.adopt_pin(str(tmp_path / "absent")) == []


def test_a_file_that_is_not_a_bpf_object_is_an_error_and_stays(tmp_path: Path) -> None:
    path = tmp_path / "not_a_map"
    path.write_text("x")
    with pytest.raises(pinned.PinError, match="not_a_map"):
        pinned.adopt_pin(str(path))
    assert path.exists()


def _sensor(pin: str, caps: int, monkeypatch: pytest.MonkeyPatch) -> Sensor:
    monkeypatch.setattr("sentinel.sensor.environment.effective_capabilities", lambda *_a: caps)
    s = Sensor(SensorConfig(tamper_pin=pin))
    s.tamper_pin = pin
    return s


def test_with_cap_sys_admin_bcc_reopens_the_pin_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = tmp_path / "pin"
    pin.write_text("x")
    s = _sensor(str(pin), 1 << 21, monkeypatch)
    assert s._adopt_tamper_pin() is None
    assert s.tamper_pin == str(pin) and pin.exists()


def test_without_it_an_unreadable_pin_leaves_the_agent_running_unpinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin = tmp_path / "pin"
    pin.write_text("x")
    s = _sensor(str(pin), (1 << 39) | (1 << 38), monkeypatch)
    assert s._adopt_tamper_pin() is None
    assert s.tamper_pin == "" and "pin" in s.tamper_pin_problem
