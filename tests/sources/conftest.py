"""Fixtures for the heart-rate source tests: recorded files and emulated watches."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hrnb.sources.emulated import EmulatedHeartRateMonitor, add_peripheral, remove_peripheral

FIT_DATA = Path(__file__).resolve().parent.parent / "data" / "fit"
_addresses = itertools.count(1)


@pytest.fixture
def fit_data() -> Path:
    return FIT_DATA


@pytest.fixture
def emulated_watch() -> Iterator[Callable[..., EmulatedHeartRateMonitor]]:
    """Factory of emulated watches on the air; all are taken off the air after the test."""
    made: list[EmulatedHeartRateMonitor] = []

    def make(**options: object) -> EmulatedHeartRateMonitor:
        number = next(_addresses)
        address = f"EE:00:00:00:{number >> 8:02X}:{number & 0xFF:02X}"
        monitor = add_peripheral(EmulatedHeartRateMonitor(address, **options))  # type: ignore[arg-type]
        made.append(monitor)
        return monitor

    yield make
    for monitor in made:
        remove_peripheral(monitor)
