"""Heart-rate sources: one async interface over a watch, an emulated watch, simulated athletes
and recorded sessions, so notebooks, the CLI and tests all run the same code path.

    async with from_spec("simulated", athletes=3) as source:
        async for item in source:        # Sample | ConnectionEvent
            ...
"""

from hrnb.sources.base import ConnectionEvent, EventKind, HeartRateSource, Sample
from hrnb.sources.ble import BleakSource, FoundDevice, describe_devices, scan
from hrnb.sources.emulated import EmulatedHeartRateMonitor, EmulatedWatchSource
from hrnb.sources.replay import BadRow, ReplaySource
from hrnb.sources.simulated import SimulatedAthlete, SimulatedSource
from hrnb.sources.spec import from_spec

__all__ = [
    "BadRow",
    "BleakSource",
    "ConnectionEvent",
    "EmulatedHeartRateMonitor",
    "EmulatedWatchSource",
    "EventKind",
    "FoundDevice",
    "HeartRateSource",
    "ReplaySource",
    "Sample",
    "SimulatedAthlete",
    "SimulatedSource",
    "describe_devices",
    "from_spec",
    "scan",
]
