"""Opt-in: a real watch or strap over a real Bluetooth radio (HRNB_HARDWARE=1).

Set HRNB_WATCH to its name or address (default: the first device advertising 0x180D); on a
Garmin, switch "Broadcast Heart Rate" on first. Never runs in CI: no radio there.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from hrnb.sources import BleakSource, ConnectionEvent, Sample, scan

pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(os.environ.get("HRNB_HARDWARE") != "1",
                       reason="needs a real BLE radio and watch: set HRNB_HARDWARE=1"),
]


def test_a_real_watch_streams_parsed_heart_rate() -> None:
    async def run() -> tuple[list[Sample], list[ConnectionEvent]]:
        target = os.environ.get("HRNB_WATCH")
        if target is None:
            found = await scan(10.0)
            assert found, "no device advertising heart rate: is Broadcast HR on?"
            target = found[0].address
        samples: list[Sample] = []
        events: list[ConnectionEvent] = []
        async with BleakSource(target, duration_s=20) as source:
            async for item in source:
                (samples if isinstance(item, Sample) else events).append(item)
        return samples, events

    samples, events = asyncio.run(run())
    assert events and events[0].kind == "connected"
    assert len(samples) >= 5
    assert [s.seq for s in samples] == list(range(len(samples)))
    in_contact = [s for s in samples if s.measurement.sensor_contact is not False]
    assert all(20 <= s.heart_rate <= 250 for s in in_contact)
