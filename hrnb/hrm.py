"""The Bluetooth SIG Heart Rate codec: 0x2A37 measurements, 0x2A38 sensor location, 0x2A19 battery.

Pure functions, no I/O. The reference decoded only byte 1 (an 8-bit heart rate); real straps and
watches also send 16-bit values, sensor contact, energy expended and RR intervals, all announced
by the flags byte:

    bit 0     heart-rate value format: 0 = uint8, 1 = uint16 little-endian (bpm)
    bits 1-2  sensor contact: 0b0x = feature not supported, 0b10 = no contact, 0b11 = contact
    bit 3     energy expended present (uint16, kJ, saturates at 65535)
    bit 4     RR intervals present (the rest of the payload, uint16 each, 1/1024 s)
    bits 5-7  reserved, ignored

A payload that disagrees with its flags raises :class:`~hrnb.errors.MeasurementError` showing the
bytes (a field cut short, bytes nothing announced, half an RR value); nothing is ever guessed.

One disagreement is accepted on purpose: bit 4 set with no RR values after the fixed fields
(``14 5a``, ``17 01 01``). The SIG defines bit 4 as "one or more RR-Interval values are present"
and Nordic's library rejects such payloads, but straps send them when no beat ended since the last
notification (the reference project's example packet is one), and every field the payload does
carry is complete. Rejecting it would throw away a true heart rate to punish an empty list, so it
decodes to a measurement with no RR intervals; :func:`rr_flag_without_intervals` tells a source
to count it (``BleakSource.rr_flagged_empty_payloads``).

Parsing runs once per notification for every athlete, so the layouts are precompiled
:class:`struct.Struct` objects chosen by the flags.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from hrnb.errors import MeasurementError

HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"
BODY_SENSOR_LOCATION_UUID = "00002a38-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE_UUID = "0000180f-0000-1000-8000-00805f9b34fb"
BATTERY_LEVEL_UUID = "00002a19-0000-1000-8000-00805f9b34fb"

#: Largest payload an ATT notification can carry (ATT_MTU 517 - 3); bounds the RR count.
MAX_PAYLOAD_BYTES = 514

_FORMAT_UINT16 = 0x01
_CONTACT_BITS = 0x06
_CONTACT_SUPPORTED = 0x04
_CONTACT_DETECTED = 0x02
_ENERGY_PRESENT = 0x08
_RR_PRESENT = 0x10
_KNOWN_FLAGS = 0x1F

#: RR units: 1/1024 s. 1000/1024 is exact in binary, so ms values stay exact.
_RR_UNIT_MS = 1000 / 1024
_rr_units_to_ms = _RR_UNIT_MS.__mul__
_MAX_RR_MS = 0xFFFF * _RR_UNIT_MS


@dataclass(frozen=True, slots=True)
class Measurement:
    """One decoded Heart Rate Measurement notification."""

    heart_rate: int  # bpm
    sensor_contact: bool | None = None  # None: the sensor does not report contact
    energy_expended: int | None = None  # kJ since the last reset; None when not in this payload
    rr_intervals_ms: tuple[float, ...] = ()  # beat-to-beat intervals since the last notification


class BodySensorLocation(enum.IntEnum):
    """Where the sensor sits (0x2A38); values 7-255 are reserved by the Bluetooth SIG."""

    OTHER = 0
    CHEST = 1
    WRIST = 2
    FINGER = 3
    HAND = 4
    EAR_LOBE = 5
    FOOT = 6


# Per flag bits 0-4: (fixed part: flags, heart rate[, energy]; energy?; RR?; sensor contact).
_Layout = tuple[struct.Struct, bool, bool, bool | None]


def _layout(flags: int) -> _Layout:
    hr_format = "H" if flags & _FORMAT_UINT16 else "B"
    has_energy = bool(flags & _ENERGY_PRESENT)
    contact = flags & _CONTACT_BITS
    return (
        struct.Struct("<B" + hr_format + ("H" if has_energy else "")),
        has_energy,
        bool(flags & _RR_PRESENT),
        None if not contact & _CONTACT_SUPPORTED else bool(contact & _CONTACT_DETECTED),
    )


_LAYOUTS = tuple(_layout(flags) for flags in range(_KNOWN_FLAGS + 1))
_RR_STRUCTS = tuple(struct.Struct(f"<{count}H") for count in range(MAX_PAYLOAD_BYTES // 2 + 1))
_UINT8 = struct.Struct("<B")

# A frozen dataclass's __init__ sets each field through object.__setattr__; writing the slots
# directly builds the same object in half the time, which matters once per notification. (Read
# from the class __dict__: type checkers do not model slot descriptors.)
_new_measurement = object.__new__
_set_heart_rate = Measurement.__dict__["heart_rate"].__set__
_set_sensor_contact = Measurement.__dict__["sensor_contact"].__set__
_set_energy_expended = Measurement.__dict__["energy_expended"].__set__
_set_rr_intervals_ms = Measurement.__dict__["rr_intervals_ms"].__set__


def _measurement(
    heart_rate: int, sensor_contact: bool | None, energy: int | None, rr: tuple[float, ...]
) -> Measurement:
    measurement = _new_measurement(Measurement)
    _set_heart_rate(measurement, heart_rate)
    _set_sensor_contact(measurement, sensor_contact)
    _set_energy_expended(measurement, energy)
    _set_rr_intervals_ms(measurement, rr)
    return measurement


def parse_measurement(data: bytes | bytearray | memoryview) -> Measurement:
    """Decode a 0x2A37 payload; MeasurementError names what is missing or left over."""
    size = len(data)
    if not size:
        raise MeasurementError("empty Heart Rate Measurement payload", data=bytes(data))
    flags = data[0]
    header, has_energy, has_rr, sensor_contact = _LAYOUTS[flags & _KNOWN_FLAGS]
    fixed = header.size
    if size < fixed:
        raise _truncated(flags, bytes(data))
    if has_energy:
        _, heart_rate, energy = header.unpack_from(data)
    else:
        _, heart_rate = header.unpack_from(data)
        energy = None
    if size == fixed:
        return _measurement(heart_rate, sensor_contact, energy, ())
    extra = size - fixed
    if not has_rr:
        raise MeasurementError(
            f"{extra} byte(s) after the last field announced by flags 0x{flags:02x} "
            "(RR intervals not flagged)",
            data=bytes(data),
        )
    if extra & 1:
        raise MeasurementError(
            f"RR interval list has an odd length ({extra} bytes): its last value is truncated",
            data=bytes(data),
        )
    if size > MAX_PAYLOAD_BYTES:
        raise MeasurementError(
            f"payload of {size} bytes is longer than any notification can be ({MAX_PAYLOAD_BYTES})",
            data=bytes(data),
        )
    rr = tuple(map(_rr_units_to_ms, _RR_STRUCTS[extra >> 1].unpack_from(data, fixed)))
    return _measurement(heart_rate, sensor_contact, energy, rr)


def rr_flag_without_intervals(data: bytes | bytearray | memoryview) -> bool:
    """True for a payload :func:`parse_measurement` accepted although its flags announce RR
    intervals and it carries none (see the module docstring)."""
    flags = data[0]
    return bool(flags & _RR_PRESENT) and len(data) == _LAYOUTS[flags & _KNOWN_FLAGS][0].size


def _truncated(flags: int, data: bytes) -> MeasurementError:
    hr_bytes = 2 if flags & _FORMAT_UINT16 else 1
    if len(data) < 1 + hr_bytes:
        width = "uint16" if hr_bytes == 2 else "uint8"
        return MeasurementError(
            f"heart-rate field truncated: flags 0x{flags:02x} announce a {width} value "
            f"({hr_bytes} byte(s)) but {len(data) - 1} follow",
            data=data,
        )
    return MeasurementError(
        f"energy-expended field truncated: flags 0x{flags:02x} announce 2 bytes but "
        f"{len(data) - 1 - hr_bytes} follow the heart rate",
        data=data,
    )


def encode_measurement(
    heart_rate: int,
    *,
    sensor_contact: bool | None = None,
    energy_expended: int | None = None,
    rr_intervals_ms: tuple[float, ...] | list[float] = (),
    uint16: bool = False,
) -> bytes:
    """Build a 0x2A37 payload, the inverse of :func:`parse_measurement`.

    ``uint16`` forces the 16-bit value format; values above 255 always use it. RR intervals are
    rounded to the wire's 1/1024 s resolution. Out-of-range values raise ValueError.
    """
    if not 0 <= heart_rate <= 0xFFFF:
        raise ValueError(f"heart_rate must be 0..65535 bpm, got {heart_rate}")
    wide = uint16 or heart_rate > 0xFF
    flags = _FORMAT_UINT16 if wide else 0
    if sensor_contact is not None:
        flags |= _CONTACT_SUPPORTED | (_CONTACT_DETECTED if sensor_contact else 0)
    if energy_expended is not None:
        if not 0 <= energy_expended <= 0xFFFF:
            raise ValueError(f"energy_expended must be 0..65535 kJ, got {energy_expended}")
        flags |= _ENERGY_PRESENT
    units = [_rr_ms_to_units(value) for value in rr_intervals_ms]
    if units:
        flags |= _RR_PRESENT
    header, has_energy, _, _ = _LAYOUTS[flags]
    if has_energy:
        fixed = header.pack(flags, heart_rate, energy_expended)
    else:
        fixed = header.pack(flags, heart_rate)
    if len(fixed) + 2 * len(units) > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"{len(units)} RR intervals do not fit in one notification ({MAX_PAYLOAD_BYTES} bytes)"
        )
    return fixed + _RR_STRUCTS[len(units)].pack(*units) if units else fixed


def _rr_ms_to_units(value_ms: float) -> int:
    units = round(value_ms * 1024 / 1000)
    if not 0 <= units <= 0xFFFF:
        raise ValueError(f"RR interval must be 0..{_MAX_RR_MS:.1f} ms, got {value_ms}")
    return units


def parse_body_sensor_location(data: bytes | bytearray | memoryview) -> BodySensorLocation:
    """Decode 0x2A38 (one byte); reserved or missing values raise MeasurementError."""
    raw = bytes(data)
    if len(raw) != 1:
        raise MeasurementError(f"Body Sensor Location must be 1 byte, got {len(raw)}", data=raw)
    (value,) = _UINT8.unpack(raw)
    try:
        return BodySensorLocation(value)
    except ValueError:
        raise MeasurementError(
            f"Body Sensor Location {value} is reserved (known: 0-6)", data=raw
        ) from None


def parse_battery_level(data: bytes | bytearray | memoryview) -> int:
    """Decode 0x2A19: battery charge in percent (0-100)."""
    raw = bytes(data)
    if len(raw) != 1:
        raise MeasurementError(f"Battery Level must be 1 byte, got {len(raw)}", data=raw)
    (percent,) = _UINT8.unpack(raw)
    if percent > 100:
        raise MeasurementError(f"Battery Level {percent}% is above 100%", data=raw)
    return percent
