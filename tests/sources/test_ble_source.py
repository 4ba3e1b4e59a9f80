"""BleakSource through Bleak's real client and scanner code, with an emulated watch as backend.

The emulated peripheral replaces only the operating system's radio; scanning, bleak-retry-
connector's establish_connection, GATT reads, notifications and disconnect callbacks all run as
they do against a real watch. Missing Bluetooth stacks are produced for real, at the D-Bus
boundary.
"""

from __future__ import annotations

import asyncio
import select
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hrnb.errors import BluetoothUnavailableError, DeviceNotFoundError
from hrnb.hrm import BodySensorLocation, encode_measurement, parse_measurement
from hrnb.sources import BleakSource, ConnectionEvent, FoundDevice, Sample, describe_devices, scan
from hrnb.sources.emulated import (
    EmulatedBleakClient,
    EmulatedBleakScanner,
    EmulatedHeartRateMonitor,
    EmulatedWatchSource,
)
from hrnb.sources.simulated import SimulatedAthlete, athlete_rng

Watch = Callable[..., EmulatedHeartRateMonitor]
Item = Sample | ConnectionEvent


def emulated_source(target: str | None, **options: object) -> BleakSource:
    options.setdefault("scan_timeout_s", 2.0)
    return BleakSource(
        target,
        scanner_backend=EmulatedBleakScanner,
        client_backend=EmulatedBleakClient,
        **options,  # type: ignore[arg-type]
    )


class Collector:
    """Consumes a source in its own task, as a notebook cell would."""

    def __init__(self, source: BleakSource) -> None:
        self.source = source
        self.items: list[Item] = []
        self.task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        async for item in self.source:
            self.items.append(item)

    @property
    def samples(self) -> list[Sample]:
        return [item for item in self.items if isinstance(item, Sample)]

    def kinds(self) -> list[str]:
        return [item.kind if isinstance(item, ConnectionEvent) else "sample" for item in self.items]

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.samples) < count:
                await asyncio.sleep(0.01)  # polling interval until the samples arrived

    async def close(self) -> None:
        await self.source.aclose()
        await asyncio.wait_for(self.task, 10.0)


def test_scan_lists_heart_rate_devices_strongest_first(emulated_watch: Watch) -> None:
    near = emulated_watch(name="Forerunner 255", rssi=-45)
    far = emulated_watch(name="HRM-Pro", rssi=-80)
    away = emulated_watch(name="Polar H10")
    away.in_range = False

    found = asyncio.run(scan(0.3, backend=EmulatedBleakScanner))

    ours = [
        device for device in found if device.address in {near.address, far.address, away.address}
    ]
    assert [(d.name, d.address, d.rssi) for d in ours] == [
        ("Forerunner 255", near.address, -45),
        ("HRM-Pro", far.address, -80),
    ]


def test_scan_report_lists_devices_or_explains_broadcast_hr() -> None:
    report = describe_devices([FoundDevice("Forerunner 255", "EE:00:00:00:00:09", -51)])
    assert "EE:00:00:00:00:09   -51 dBm  Forerunner 255" in report
    assert "--source ble:ADDRESS" in report
    assert "Broadcast HR" in describe_devices([])


@pytest.mark.parametrize("by", ["address", "name"])
def test_connects_reads_device_information_and_decodes_every_format(
    emulated_watch: Watch, by: str
) -> None:
    watch = emulated_watch(
        name="Forerunner 255", battery_level=64, body_sensor_location=BodySensorLocation.CHEST
    )
    target = watch.address.lower() if by == "address" else "forerunner 255"
    payloads = [
        encode_measurement(61),
        encode_measurement(61, uint16=True),
        encode_measurement(301, sensor_contact=True, rr_intervals_ms=(800.0, 796.875)),
        encode_measurement(90, sensor_contact=True, energy_expended=512),
    ]

    async def scenario() -> tuple[Collector, BleakSource]:
        source = emulated_source(target, athlete_id="rider-7")
        collector = Collector(source)
        await watch.wait_until_subscribed()
        for payload in payloads:
            assert watch.notify(payload)
        await collector.wait_for(len(payloads))
        await collector.close()
        return collector, source

    collector, source = asyncio.run(scenario())

    assert collector.kinds() == ["connected"] + ["sample"] * len(payloads)
    connected = collector.items[0]
    assert isinstance(connected, ConnectionEvent)
    assert "battery 64%" in connected.detail and "chest" in connected.detail
    assert (source.battery_level, source.body_sensor_location) == (64, BodySensorLocation.CHEST)
    samples = collector.samples
    assert [s.measurement for s in samples] == [parse_measurement(p) for p in payloads]
    assert [s.seq for s in samples] == [0, 1, 2, 3]
    assert {(s.athlete_id, s.device_id) for s in samples} == {("rider-7", watch.address)}
    assert all(s.received_at.microsecond % 1000 == 0 for s in samples)
    assert not watch.connected  # aclose disconnected the link


def test_dropout_is_reported_and_the_session_continues_without_duplicates(
    emulated_watch: Watch,
) -> None:
    watch = emulated_watch()
    gap_s = 0.6

    async def scenario() -> Collector:
        collector = Collector(emulated_source(watch.address, reconnect_delays_s=(0.1,)))
        await watch.wait_until_subscribed()
        for bpm in (70, 71, 72):
            watch.notify(encode_measurement(bpm, sensor_contact=True, rr_intervals_ms=(850.0,)))
        await collector.wait_for(3)

        watch.go_out_of_range()
        assert not watch.notify(encode_measurement(99))  # nobody hears the watch out of range
        await asyncio.sleep(gap_s)  # the dropout's length, which the assertions below check
        assert collector.kinds()[-1] == "disconnected"  # the chart shows "—" meanwhile
        watch.come_back_in_range()

        await watch.wait_until_subscribed()
        for bpm in (80, 81):
            watch.notify(encode_measurement(bpm, sensor_contact=True, rr_intervals_ms=(750.0,)))
        await collector.wait_for(5)
        await collector.close()
        return collector

    collector = asyncio.run(scenario())

    assert collector.kinds() == [
        "connected",
        *["sample"] * 3,
        "disconnected",
        "reconnected",
        *["sample"] * 2,
    ]
    samples = collector.samples
    assert [s.seq for s in samples] == [0, 1, 2, 3, 4]
    assert len({s.session_id for s in samples}) == 1
    assert [s.heart_rate for s in samples] == [70, 71, 72, 80, 81]
    assert [s.measurement for s in samples] == [parse_measurement(p) for p in watch.delivered]
    assert watch.connections == 2
    assert collector.source.reconnects == 1
    reconnected = collector.items[5]
    assert isinstance(reconnected, ConnectionEvent)
    reported_gap = float(reconnected.detail.split("after ")[1].split(" s")[0])
    assert reported_gap >= gap_s
    assert (samples[3].received_at - samples[2].received_at).total_seconds() >= gap_s


def test_repeated_forced_disconnects_never_duplicate_a_sample(emulated_watch: Watch) -> None:
    watch = emulated_watch()

    async def scenario() -> Collector:
        collector = Collector(emulated_source(watch.address, reconnect_delays_s=(0.05,)))
        sent = 0
        for _ in range(4):
            await watch.wait_until_subscribed()
            for _ in range(5):
                sent += 1
                watch.notify(encode_measurement(40 + sent))
            await collector.wait_for(sent)
            watch.drop_link()  # the watch still advertises: reconnect at once
        await watch.wait_until_subscribed()
        await collector.close()
        return collector

    collector = asyncio.run(scenario())

    samples = collector.samples
    assert [s.heart_rate for s in samples] == list(range(41, 61))
    assert [s.seq for s in samples] == list(range(20))
    assert collector.kinds().count("disconnected") == 4
    assert collector.kinds().count("reconnected") == 4
    assert watch.connections == 5
    assert collector.source.reconnects == 4


def test_malformed_notifications_are_counted_and_skipped(emulated_watch: Watch) -> None:
    watch = emulated_watch()

    async def scenario() -> tuple[Collector, BleakSource]:
        source = emulated_source(watch.address)
        collector = Collector(source)
        await watch.wait_until_subscribed()
        watch.notify(encode_measurement(70))
        watch.notify(bytes.fromhex("10 48 01"))  # a truncated RR interval
        watch.notify(b"")
        watch.notify(bytes.fromhex("14 5a"))  # RR flagged, none sent: kept, counted
        watch.notify(encode_measurement(71))
        await collector.wait_for(3)
        await collector.close()
        return collector, source

    collector, source = asyncio.run(scenario())

    assert [(s.seq, s.heart_rate) for s in collector.samples] == [(0, 70), (1, 90), (2, 71)]
    assert source.rejected_payloads == 2
    assert source.rr_flagged_empty_payloads == 1


def test_contact_loss_is_reported_as_events(emulated_watch: Watch) -> None:
    watch = emulated_watch()

    async def scenario() -> Collector:
        collector = Collector(emulated_source(watch.address))
        await watch.wait_until_subscribed()
        for contact in (True, False, False, True):
            watch.notify(encode_measurement(70 if contact else 0, sensor_contact=contact))
        await collector.wait_for(4)
        await collector.close()
        return collector

    kinds = asyncio.run(scenario()).kinds()

    assert kinds == [
        "connected",
        "sample",
        "contact_lost",
        "sample",
        "sample",
        "contact_restored",
        "sample",
    ]


def test_no_matching_device_says_how_to_make_a_garmin_visible(emulated_watch: Watch) -> None:
    emulated_watch(name="Someone else's strap")

    async def scenario() -> None:
        async for _ in emulated_source("Forerunner 965", scan_timeout_s=0.3):
            pass

    with pytest.raises(DeviceNotFoundError) as caught:
        asyncio.run(scenario())
    assert "'Forerunner 965'" in str(caught.value)
    assert "Broadcast HR" in str(caught.value)


def test_cancelling_the_consumer_then_closing_releases_the_watch(emulated_watch: Watch) -> None:
    watch = emulated_watch()

    async def scenario() -> None:
        source = emulated_source(watch.address)
        collector = Collector(source)
        await watch.wait_until_subscribed()
        collector.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await collector.task
        assert watch.connected
        await source.aclose()
        assert not watch.connected
        await source.aclose()  # idempotent

    asyncio.run(scenario())


def test_duration_ends_the_session_and_disconnects(emulated_watch: Watch) -> None:
    watch = emulated_watch()

    async def scenario() -> list[Item]:
        async with emulated_source(watch.address, duration_s=0.5) as source:
            return [item async for item in source]

    items = asyncio.run(scenario())

    assert [getattr(item, "kind", None) for item in items] == ["connected", "disconnected"]
    assert items[-1].detail == "session duration reached"  # type: ignore[union-attr]
    assert not watch.connected


def test_emulated_watch_source_streams_a_simulated_athlete_through_dropouts() -> None:
    athlete = SimulatedAthlete(athlete_rng(7, 0), contact_loss_every_s=None)
    monitor = EmulatedHeartRateMonitor("EE:00:00:00:FF:01")
    source = EmulatedWatchSource(
        monitor,
        athlete,
        rate_hz=20.0,
        dropout_every_s=0.6,
        dropout_length_s=0.3,
        athlete_id="demo",
        duration_s=2.5,
        reconnect_delays_s=(0.05,),
    )

    async def scenario() -> list[Item]:
        return [item async for item in source]

    items = asyncio.run(scenario())

    samples = [item for item in items if isinstance(item, Sample)]
    kinds = [item.kind for item in items if isinstance(item, ConnectionEvent)]
    assert kinds[0] == "connected" and kinds[-1] == "disconnected"
    assert kinds.count("reconnected") >= 1
    assert [s.seq for s in samples] == list(range(len(samples)))
    assert len(samples) > 15
    assert all(40 <= s.heart_rate <= 200 and s.measurement.sensor_contact for s in samples)
    assert not monitor.connected


# --- no Bluetooth stack: produced for real at the D-Bus boundary -------------------------------


def test_missing_dbus_socket_suggests_the_simulated_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-such-socket")

    with pytest.raises(BluetoothUnavailableError) as caught:
        asyncio.run(scan(0.2))
    assert "FileNotFoundError" in str(caught.value)
    assert "--source simulated" in str(caught.value)

    async def stream() -> None:
        async for _ in BleakSource("AA:BB:CC:DD:EE:FF", scan_timeout_s=0.2):
            pass

    with pytest.raises(BluetoothUnavailableError, match="--source simulated"):
        asyncio.run(stream())


@pytest.fixture
def dbus_without_bluez(tmp_path: Path) -> Iterator[str]:
    """A real D-Bus daemon on which no BlueZ service is registered."""
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed")
    socket = tmp_path / "bus"
    # --print-address writes the address once the daemon accepts connections; the socket file
    # alone appears at bind(), before listen(), and a connect then is refused.
    daemon = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1",
         f"--address=unix:path={socket}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        ready, _, _ = select.select([daemon.stdout], [], [], 10)
        assert ready and daemon.stdout.readline().startswith("unix:"), "dbus-daemon not ready"
        yield f"unix:path={socket}"
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_dbus_without_bluez_suggests_the_simulated_source(
    monkeypatch: pytest.MonkeyPatch, dbus_without_bluez: str
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", dbus_without_bluez)

    with pytest.raises(BluetoothUnavailableError) as caught:
        asyncio.run(scan(0.2))
    assert "ServiceUnknown" in str(caught.value)
    assert "--source simulated" in str(caught.value)
