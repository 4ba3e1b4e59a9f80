"""A real watch or strap over Bleak: scan, connect, subscribe, survive dropouts.

The reference read one byte of each notification from one hard-coded address for a fixed
15 minutes and stopped at the first dropout. :class:`BleakSource` finds the device by address or
name, reads battery level and sensor location, decodes every notification fully, and when the
link drops reports it (so a chart shows "—" rather than a frozen value), waits for the device to
advertise again and reconnects through ``bleak-retry-connector``, continuing the same session
and sequence. Bleak's own error types become :mod:`hrnb.errors` through
:func:`hrnb.boundary.bleak_errors`.

Any Bleak backend can be passed in; :mod:`hrnb.sources.emulated` provides one for tests and
demos, so they run exactly this code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakCharacteristicNotFoundError, BleakError
from bleak_retry_connector import BleakNotFoundError, establish_connection

from hrnb.boundary import bleak_errors
from hrnb.errors import DeviceNotFoundError, LinkError, MeasurementError, SourceError
from hrnb.hrm import (
    BATTERY_LEVEL_UUID,
    BODY_SENSOR_LOCATION_UUID,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    BodySensorLocation,
    parse_battery_level,
    parse_body_sensor_location,
    parse_measurement,
    rr_flag_without_intervals,
)
from hrnb.sources.base import DEFAULT_ATHLETE_ID, HeartRateSource, Session, utc_now_ms

logger = logging.getLogger(__name__)

_GARMIN_HINT = (
    "Make sure the watch is on, nearby and not connected to another app. Garmin watches only "
    "advertise heart rate with 'Broadcast HR' (Broadcast Heart Rate) switched on in the "
    "heart-rate settings or the activity's menu."
)


@dataclass(frozen=True, slots=True)
class FoundDevice:
    """A device seen advertising the Heart Rate service."""

    name: str | None
    address: str
    rssi: int  # dBm; closer to 0 is nearer


def _scanner_args(backend: type[BaseBleakScanner] | None, *,
                  heart_rate_only: bool) -> BleakScanner.ExtraArgs:
    """Bleak's scanner options; its ``backend`` takes a class or nothing (not None)."""
    args: BleakScanner.ExtraArgs = {}
    if heart_rate_only:
        args["service_uuids"] = [HEART_RATE_SERVICE_UUID]
    if backend is not None:
        args["backend"] = backend
    return args


async def scan(
    timeout_s: float = 5.0, *, backend: type[BaseBleakScanner] | None = None
) -> list[FoundDevice]:
    """Devices advertising the Heart Rate service (0x180D), strongest signal first."""
    with bleak_errors("scan for", "heart-rate devices"):
        found = await BleakScanner.discover(
            timeout_s, return_adv=True, **_scanner_args(backend, heart_rate_only=True)
        )
    devices = [
        FoundDevice(advertisement.local_name or device.name, device.address, advertisement.rssi)
        for device, advertisement in found.values()
        if HEART_RATE_SERVICE_UUID in advertisement.service_uuids
    ]
    return sorted(devices, key=lambda device: device.rssi, reverse=True)


def describe_devices(devices: Sequence[FoundDevice]) -> str:
    """What ``hrnb scan`` shows: one line per device, or why a watch may not show up."""
    if not devices:
        return "No device advertising heart rate (service 0x180D) was found. " + _GARMIN_HINT
    lines = [f"{'address':<17}  {'rssi':>8}  name"]
    lines += [f"{d.address:<17}  {d.rssi:>4} dBm  {d.name or '(no name)'}" for d in devices]
    lines.append("Stream one with --source ble:ADDRESS or --source ble:NAME.")
    return "\n".join(lines)


class BleakSource(HeartRateSource):
    """Heart rate from a BLE watch or strap, reconnecting across dropouts.

    ``target`` is an address or an advertised name (case-insensitive); None takes the first
    device advertising the Heart Rate service. Connection attempts go through
    ``bleak_retry_connector.establish_connection`` (``connect_attempts`` each); between failed
    rounds the source waits ``reconnect_delays_s`` (the last repeats) and scans again, until the
    device returns or the source is closed. After ``duration_s`` (if set) it disconnects and ends.
    Malformed notifications are logged, counted in ``rejected_payloads`` and skipped; those that
    flag RR intervals but carry none are kept and counted in ``rr_flagged_empty_payloads``.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        athlete_id: str = DEFAULT_ATHLETE_ID,
        session_id: str | None = None,
        duration_s: float | None = None,
        scan_timeout_s: float = 10.0,
        connect_attempts: int = 4,
        reconnect_delays_s: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
        scanner_backend: type[BaseBleakScanner] | None = None,
        client_backend: type[BaseBleakClient] | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.athlete_id = athlete_id
        self.duration_s = duration_s
        self._session_id = session_id
        self._scan_timeout_s = scan_timeout_s
        self._connect_attempts = connect_attempts
        self._reconnect_delays_s = tuple(reconnect_delays_s) or (1.0,)
        self._scanner_backend = scanner_backend
        self._client_backend = client_backend
        self.session: Session | None = None
        self.battery_level: int | None = None  # percent, read at each connection
        self.body_sensor_location: BodySensorLocation | None = None
        self.rejected_payloads = 0
        self.rr_flagged_empty_payloads = 0
        self.reconnects = 0

    async def _produce(self) -> None:
        try:
            async with asyncio.timeout(self.duration_s) as deadline:
                await self._follow_device()
        except TimeoutError:
            if not deadline.expired():
                raise
            if self.session is not None:
                await self._emit(
                    self.session.event("disconnected", utc_now_ms(), "session duration reached")
                )

    async def _follow_device(self) -> None:
        device = await self._find(self.target)
        if device is None:
            wanted = f"matching {self.target!r}" if self.target else "advertising heart rate"
            raise DeviceNotFoundError(
                f"No Bluetooth device {wanted} was seen within {self._scan_timeout_s:g} s. "
                + _GARMIN_HINT
                + " `hrnb scan` lists what is visible."
            )
        self.session = session = Session(self.athlete_id, device.address, self._session_id)
        loop = asyncio.get_running_loop()
        lost_at: float | None = None  # loop time of the last dropout; None before the first link
        failures = 0
        while True:
            if device is None:
                device = await self._find(session.device_id)
            client: BleakClient | None = None
            link_lost = asyncio.Event()
            if device is not None:
                try:
                    client = await self._connect(device, link_lost)
                except LinkError as exc:
                    if lost_at is None:
                        raise self._connect_failed(device, exc) from exc.__cause__
                    logger.info("Reconnecting to %s failed: %s", device.address, exc)
            if client is None:
                device = None
                await self._back_off(failures)
                failures += 1
                continue
            streaming = False
            try:
                with bleak_errors("set up", client.address, error=LinkError):
                    await self._start_streaming(client, session)
                streaming = True
                failures = 0
                if lost_at is None:
                    detail = self._describe(client)
                    await self._emit(session.event("connected", utc_now_ms(), detail))
                else:
                    self.reconnects += 1
                    detail = f"link restored after {loop.time() - lost_at:.1f} s; "
                    detail += self._describe(client)
                    await self._emit(session.event("reconnected", utc_now_ms(), detail))
                await link_lost.wait()
            except LinkError as exc:
                if lost_at is None and not link_lost.is_set():
                    raise
                logger.warning("%s", exc)
            finally:
                if not link_lost.is_set():
                    await _disconnect_quietly(client)
            # Reconnect once the device advertises again, rather than dialling into the void.
            device = None
            if streaming:
                lost_at = loop.time()
                logger.warning("Lost the link to %s; reconnecting", session.device_id)
                await self._emit(
                    session.event("disconnected", utc_now_ms(), "link lost; reconnecting")
                )
            else:
                await self._back_off(failures)
                failures += 1

    async def _back_off(self, failures: int) -> None:
        delays = self._reconnect_delays_s
        await asyncio.sleep(delays[min(failures, len(delays) - 1)])

    async def _find(self, wanted: str | None) -> BLEDevice | None:
        key = wanted.casefold() if wanted else None

        def matches(device: BLEDevice, advertisement: AdvertisementData) -> bool:
            if key is None:
                return HEART_RATE_SERVICE_UUID in advertisement.service_uuids
            names = (device.address, advertisement.local_name, device.name)
            return any(name is not None and name.casefold() == key for name in names)

        with bleak_errors("scan for", "heart-rate devices"):
            return await BleakScanner.find_device_by_filter(
                matches,
                timeout=self._scan_timeout_s,
                **_scanner_args(self._scanner_backend, heart_rate_only=key is None),
            )

    async def _connect(self, device: BLEDevice, link_lost: asyncio.Event) -> BleakClient:
        """A connected client; LinkError (retried after a dropout) when it cannot connect."""
        with bleak_errors("connect to", device.address, error=LinkError):
            return await establish_connection(
                BleakClient,
                device,
                device.name or device.address,
                disconnected_callback=lambda _client: link_lost.set(),
                max_attempts=self._connect_attempts,
                backend=self._client_backend,
            )

    def _connect_failed(self, device: BLEDevice, exc: LinkError) -> SourceError:
        if not isinstance(exc.__cause__, BleakNotFoundError):
            return exc
        return DeviceNotFoundError(
            f"{device.name or 'The device'} ({device.address}) was seen but could not be "
            f"connected: {exc.__cause__}. " + _GARMIN_HINT,
            service="bluetooth", action="connect to", code=exc.code, resource=device.address,
        )

    async def _start_streaming(self, client: BleakClient, session: Session) -> None:
        """Read device information, then subscribe; notifications feed the queue directly."""
        await self._read_device_information(client)

        def on_notification(_characteristic: object, data: bytearray) -> None:
            received_at = utc_now_ms()
            try:
                measurement = parse_measurement(data)
            except MeasurementError as exc:
                self.rejected_payloads += 1
                logger.warning("Skipping a notification from %s: %s", session.device_id, exc)
                return
            if rr_flag_without_intervals(data):
                self.rr_flagged_empty_payloads += 1
            for item in session.items(measurement, received_at):
                self._emit_nowait(item)

        try:
            await client.start_notify(HEART_RATE_MEASUREMENT_UUID, on_notification)
        except BleakCharacteristicNotFoundError as exc:
            await _disconnect_quietly(client)
            raise SourceError(
                f"{client.address} has no Heart Rate Measurement characteristic (0x2A37): "
                "is it a heart-rate sensor?"
            ) from exc

    async def _read_device_information(self, client: BleakClient) -> None:
        services = client.services
        if services.get_characteristic(BATTERY_LEVEL_UUID) is not None:
            try:
                self.battery_level = parse_battery_level(
                    await client.read_gatt_char(BATTERY_LEVEL_UUID)
                )
            except (BleakError, MeasurementError) as exc:
                logger.warning("Could not read the battery level of %s: %s", client.address, exc)
        if services.get_characteristic(BODY_SENSOR_LOCATION_UUID) is not None:
            try:
                self.body_sensor_location = parse_body_sensor_location(
                    await client.read_gatt_char(BODY_SENSOR_LOCATION_UUID)
                )
            except (BleakError, MeasurementError) as exc:
                logger.warning("Could not read the sensor location of %s: %s", client.address, exc)

    def _describe(self, client: BleakClient) -> str:
        parts = [f"{client.name} ({client.address})"]
        if self.battery_level is not None:
            parts.append(f"battery {self.battery_level}%")
        if self.body_sensor_location is not None:
            parts.append(f"sensor on {self.body_sensor_location.name.lower().replace('_', ' ')}")
        return ", ".join(parts)


async def _disconnect_quietly(client: BleakClient) -> None:
    """Disconnect when stopping; a failure here must not hide why we stopped."""
    try:
        async with asyncio.timeout(5.0):
            await client.disconnect()
    except (BleakError, OSError, TimeoutError) as exc:
        logger.warning("Disconnecting from %s failed: %s", client.address, exc)
