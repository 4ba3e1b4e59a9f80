"""An emulated Heart Rate peripheral, plugged into Bleak as a custom backend.

Bleak's ``BleakScanner`` and ``BleakClient`` accept a ``backend=`` class. The classes here stand
in for the operating system's Bluetooth stack, so :class:`~hrnb.sources.ble.BleakSource` runs
its real code — scanning, ``bleak-retry-connector``, GATT reads, notifications, disconnect
callbacks — against a watch that lives in this process.

Peripherals are registered by address (:func:`add_peripheral`); a test holds the
:class:`EmulatedHeartRateMonitor` and drives it: :meth:`~EmulatedHeartRateMonitor.notify` sends a
payload (8- or 16-bit, RR intervals, contact lost...), :meth:`~EmulatedHeartRateMonitor.drop_link`
forces a disconnect, ``in_range`` decides whether it advertises and accepts connections. For demos,
:meth:`~EmulatedHeartRateMonitor.broadcast` feeds it from a simulated athlete, with optional
scripted dropouts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from bleak.args import SizedBuffer
from bleak.assigned_numbers import CharacteristicPropertyName
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import (
    BleakDeviceNotFoundError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)

from hrnb.hrm import (
    BATTERY_LEVEL_UUID,
    BATTERY_SERVICE_UUID,
    BODY_SENSOR_LOCATION_UUID,
    HEART_RATE_MEASUREMENT_UUID,
    HEART_RATE_SERVICE_UUID,
    BodySensorLocation,
)
from hrnb.sources.base import cancel_and_wait
from hrnb.sources.ble import BleakSource
from hrnb.sources.simulated import SimulatedAthlete

logger = logging.getLogger(__name__)

#: How often an emulated peripheral advertises while in range and not connected.
ADVERTISING_INTERVAL_S = 0.05
_CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"
_ATT_MTU = 23
_MEASUREMENT_HANDLE = 0x0011  # of the 0x2A37 characteristic in the table below

_peripherals: dict[str, EmulatedHeartRateMonitor] = {}


def add_peripheral(monitor: EmulatedHeartRateMonitor) -> EmulatedHeartRateMonitor:
    """Put ``monitor`` on the air: emulated scanners see it, emulated clients can connect."""
    key = monitor.address.upper()
    if key in _peripherals and _peripherals[key] is not monitor:
        raise ValueError(f"an emulated peripheral already uses address {monitor.address}")
    _peripherals[key] = monitor
    return monitor


def remove_peripheral(monitor: EmulatedHeartRateMonitor) -> None:
    """Take ``monitor`` off the air, dropping any connection."""
    monitor.drop_link("peripheral removed")
    if _peripherals.get(monitor.address.upper()) is monitor:
        del _peripherals[monitor.address.upper()]


class EmulatedHeartRateMonitor:
    """A watch's Heart Rate service (0x180D) and Battery service (0x180F), one link at a time."""

    def __init__(
        self,
        address: str,
        *,
        name: str = "HRNB Emulated HRM",
        rssi: int = -58,
        battery_level: int = 87,
        body_sensor_location: BodySensorLocation = BodySensorLocation.WRIST,
    ) -> None:
        self.address = address
        self.name = name
        self.rssi = rssi
        self.battery_level = battery_level
        self.body_sensor_location = body_sensor_location
        self.in_range = True
        self.delivered: list[bytes] = []  # payloads a connected subscriber was sent, in order
        self.connections = 0
        self._client: EmulatedBleakClient | None = None
        self._subscribed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def subscribed(self) -> bool:
        """A connected client has notifications on for 0x2A37."""
        return self._client is not None and self._client.measurement_callback is not None

    async def wait_until_subscribed(self, timeout_s: float = 10.0) -> None:
        """Wait until a client listens to heart-rate notifications (tests synchronise on it)."""
        async with asyncio.timeout(timeout_s):
            while not self.subscribed:
                self._subscribed.clear()
                await self._subscribed.wait()

    def notify(self, payload: bytes) -> bool:
        """Send one 0x2A37 notification; False when nobody is subscribed (it goes nowhere)."""
        client = self._client
        callback = client.measurement_callback if client is not None else None
        if callback is None:
            return False
        self.delivered.append(bytes(payload))
        # Like a real stack, the notification reaches the client from the event loop.
        asyncio.get_running_loop().call_soon(callback, bytearray(payload))
        return True

    def drop_link(self, reason: str = "link supervision timeout") -> None:
        """Force an unsolicited disconnect, as a dropout does; no-op when not connected."""
        client, self._client = self._client, None
        if client is not None:
            logger.info("Emulated %s drops its link: %s", self.address, reason)
            client.link_lost()

    def go_out_of_range(self) -> None:
        """Drop the link and stop advertising until :meth:`come_back_in_range`."""
        self.in_range = False
        self.drop_link("out of range")

    def come_back_in_range(self) -> None:
        self.in_range = True

    async def broadcast(
        self,
        athlete: SimulatedAthlete,
        *,
        rate_hz: float = 1.0,
        dropout_every_s: float | None = None,
        dropout_length_s: float = 5.0,
    ) -> None:
        """Notify the athlete's heart rate at ``rate_hz`` until cancelled (demos).

        The athlete's heart keeps beating while nobody listens. With ``dropout_every_s`` the
        watch goes out of range that often for ``dropout_length_s``, to show reconnection.
        """
        loop = asyncio.get_running_loop()
        period = 1.0 / rate_hz
        started = loop.time()
        tick = 0
        back_at: float | None = None
        next_dropout = dropout_every_s
        while True:
            tick += 1
            await asyncio.sleep(max(0.0, started + tick * period - loop.time()))
            elapsed = loop.time() - started
            if back_at is not None and elapsed >= back_at:
                self.come_back_in_range()
                back_at = None
            if next_dropout is not None and elapsed >= next_dropout:
                self.go_out_of_range()
                back_at = elapsed + dropout_length_s
                next_dropout += dropout_length_s + (dropout_every_s or 0.0)
            self.notify(athlete.next_payload(period))

    # --- used by the backend classes -----------------------------------------------------
    def attach(self, client: EmulatedBleakClient) -> None:
        if not self.in_range:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            )
        if self._client is not None and self._client is not client:
            raise BleakError(f"{self.address} is already connected to another central")
        self._client = client
        self.connections += 1

    def detach(self, client: EmulatedBleakClient) -> None:
        if self._client is client:
            self._client = None

    def subscription_changed(self) -> None:
        self._subscribed.set()

    def read(self, uuid: str) -> bytes:
        if uuid == BATTERY_LEVEL_UUID:
            return bytes([self.battery_level])
        if uuid == BODY_SENSOR_LOCATION_UUID:
            return bytes([self.body_sensor_location])
        raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.READ_NOT_PERMITTED)


def _gatt_table() -> BleakGATTServiceCollection:
    """The attribute table a Heart Rate sensor exposes; handles as a typical watch numbers them."""
    table = BleakGATTServiceCollection()

    def mtu_payload() -> int:
        return _ATT_MTU - 3

    heart_rate = BleakGATTService(None, 0x0010, HEART_RATE_SERVICE_UUID)
    battery = BleakGATTService(None, 0x0020, BATTERY_SERVICE_UUID)
    table.add_service(heart_rate)
    table.add_service(battery)
    characteristics: list[tuple[int, str, list[CharacteristicPropertyName], BleakGATTService]] = [
        (_MEASUREMENT_HANDLE, HEART_RATE_MEASUREMENT_UUID, ["notify"], heart_rate),
        (0x0014, BODY_SENSOR_LOCATION_UUID, ["read"], heart_rate),
        (0x0021, BATTERY_LEVEL_UUID, ["read", "notify"], battery),
    ]
    for handle, uuid, properties, service in characteristics:
        characteristic = BleakGATTCharacteristic(
            None,
            handle,
            uuid,
            properties,
            mtu_payload,
            service,
        )
        table.add_characteristic(characteristic)
        if "notify" in properties:
            table.add_descriptor(BleakGATTDescriptor(None, handle + 1, _CCCD_UUID, characteristic))
    return table


class EmulatedBleakScanner(BaseBleakScanner):
    """A Bleak scanner backend that hears the registered emulated peripherals advertise."""

    def __init__(
        self,
        detection_callback: Any,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        self._task = asyncio.get_running_loop().create_task(self._listen())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _listen(self) -> None:
        while True:
            for monitor in list(_peripherals.values()):
                if not monitor.in_range or monitor.connected:
                    continue  # a connected sensor stops advertising
                advertisement = AdvertisementData(
                    local_name=monitor.name,
                    manufacturer_data={},
                    service_data={},
                    service_uuids=[HEART_RATE_SERVICE_UUID, BATTERY_SERVICE_UUID],
                    tx_power=None,
                    rssi=monitor.rssi,
                    platform_data=(),
                )
                if not self.is_allowed_uuid(advertisement.service_uuids):
                    continue
                device = self.create_or_update_device(
                    monitor.address, monitor.address, monitor.name, monitor, advertisement
                )
                self.call_detection_callbacks(device, advertisement)
            await asyncio.sleep(ADVERTISING_INTERVAL_S)


class EmulatedBleakClient(BaseBleakClient):
    """A Bleak client backend whose link goes to a registered emulated peripheral."""

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
            **kwargs,
        )
        self._monitor: EmulatedHeartRateMonitor | None = None
        self._callbacks: dict[int, NotifyCallback] = {}

    @property
    def name(self) -> str:
        monitor = _peripherals.get(self.address.upper())
        return monitor.name if monitor is not None else self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return _ATT_MTU

    @property
    def is_connected(self) -> bool:
        return self._monitor is not None

    @property
    def measurement_callback(self) -> Callable[[bytearray], None] | None:
        """The callback Bleak registered for 0x2A37, if notifications are on."""
        return self._callbacks.get(_MEASUREMENT_HANDLE)

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await asyncio.sleep(0)  # connecting takes a radio round trip, never zero time
        monitor = _peripherals.get(self.address.upper())
        if monitor is None:
            raise BleakDeviceNotFoundError(
                self.address, f"Device with address {self.address} was not found."
            )
        monitor.attach(self)
        self._monitor = monitor
        self.services = _gatt_table()

    async def disconnect(self) -> None:
        monitor, self._monitor = self._monitor, None
        self._callbacks.clear()
        if monitor is not None:
            monitor.detach(self)

    def link_lost(self) -> None:
        """Called by the peripheral on a dropout: Bleak's disconnected callback runs next."""
        monitor, self._monitor = self._monitor, None
        self._callbacks.clear()
        if monitor is not None and self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Heart Rate sensors need no pairing; accepted and ignored."""

    async def unpair(self) -> None:
        """Nothing to forget: pairing is never stored."""

    def _require_link(self) -> EmulatedHeartRateMonitor:
        if self._monitor is None:
            raise BleakError("Not connected")
        return self._monitor

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        return bytearray(self._require_link().read(characteristic.uuid))

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        self._require_link()
        enabled = descriptor.characteristic_handle in self._callbacks
        return bytearray(b"\x01\x00" if enabled else b"\x00\x00")

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool
    ) -> None:
        self._require_link()
        raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)

    async def write_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, data: SizedBuffer
    ) -> None:
        self._require_link()
        raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        monitor = self._require_link()
        if "notify" not in characteristic.properties:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.REQUEST_NOT_SUPPORTED)
        self._callbacks[characteristic.handle] = callback
        monitor.subscription_changed()

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        monitor = self._require_link()
        self._callbacks.pop(characteristic.handle, None)
        monitor.subscription_changed()


class EmulatedWatchSource(BleakSource):
    """A :class:`BleakSource` on an emulated watch it puts on the air for its lifetime (demos)."""

    def __init__(
        self,
        monitor: EmulatedHeartRateMonitor,
        athlete: SimulatedAthlete,
        *,
        rate_hz: float = 1.0,
        dropout_every_s: float | None = None,
        dropout_length_s: float = 5.0,
        **source_options: Any,
    ) -> None:
        super().__init__(
            monitor.address,
            scanner_backend=EmulatedBleakScanner,
            client_backend=EmulatedBleakClient,
            **source_options,
        )
        self.monitor = monitor
        self._athlete = athlete
        self._rate_hz = rate_hz
        self._dropout_every_s = dropout_every_s
        self._dropout_length_s = dropout_length_s

    async def _produce(self) -> None:
        add_peripheral(self.monitor)
        broadcaster = asyncio.get_running_loop().create_task(
            self.monitor.broadcast(
                self._athlete,
                rate_hz=self._rate_hz,
                dropout_every_s=self._dropout_every_s,
                dropout_length_s=self._dropout_length_s,
            )
        )
        try:
            await super()._produce()
        finally:
            broadcaster.cancel()
            await asyncio.wait([broadcaster])
            remove_peripheral(self.monitor)
