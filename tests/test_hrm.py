"""The Heart Rate codec against the Bluetooth SIG layout, byte by byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hrnb.errors import MeasurementError
from hrnb.hrm import (
    MAX_PAYLOAD_BYTES,
    BodySensorLocation,
    Measurement,
    encode_measurement,
    parse_battery_level,
    parse_body_sensor_location,
    parse_measurement,
    rr_flag_without_intervals,
)

RR_UNIT_MS = 1000 / 1024


def build_payload(flags: int, heart_rate: int, energy: int, rr_units: list[int]) -> bytes:
    """A payload laid out by hand from the spec, independently of hrnb.hrm."""
    out = bytes([flags])
    out += heart_rate.to_bytes(2 if flags & 0x01 else 1, "little")
    if flags & 0x08:
        out += energy.to_bytes(2, "little")
    if flags & 0x10:
        out += b"".join(unit.to_bytes(2, "little") for unit in rr_units)
    return out


@pytest.mark.parametrize("flags", range(32))
def test_every_flag_combination_decodes_its_fields(flags: int) -> None:
    heart_rate = 0x01A4 if flags & 0x01 else 0xA4  # 420 / 164 bpm
    energy = 0xBEEF
    rr_units = [1024, 512, 0xFFFF]
    payload = build_payload(flags, heart_rate, energy, rr_units)

    measurement = parse_measurement(payload)

    assert measurement.heart_rate == heart_rate
    expected_contact = {0: None, 2: None, 4: False, 6: True}[flags & 0x06]
    assert measurement.sensor_contact is expected_contact
    assert measurement.energy_expended == (energy if flags & 0x08 else None)
    expected_rr = (1000.0, 500.0, 0xFFFF * RR_UNIT_MS) if flags & 0x10 else ()
    assert measurement.rr_intervals_ms == expected_rr


@pytest.mark.parametrize("reserved", [0x20, 0x40, 0x80, 0xE0])
def test_reserved_flag_bits_are_ignored(reserved: int) -> None:
    assert parse_measurement(bytes([reserved | 0x16, 0x5A, 0x00, 0x04])) == Measurement(
        90, True, None, (1000.0,)
    )


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        ("00 48", Measurement(72)),
        ("01 48 00", Measurement(72)),
        ("01 2c 01", Measurement(300)),
        ("02 5a", Measurement(90, None)),  # contact bit without "supported": not supported
        ("04 5a", Measurement(90, False)),
        ("06 5a", Measurement(90, True)),
        ("08 5a 10 00", Measurement(90, None, 16)),
        ("10 5a 00 04", Measurement(90, None, None, (1000.0,))),
        ("1e 5a 34 12 00 04 00 02", Measurement(90, True, 0x1234, (1000.0, 500.0))),
        ("1f 2c 01 ff ff ff ff", Measurement(300, True, 0xFFFF, (0xFFFF * RR_UNIT_MS,))),
        ("00 00", Measurement(0)),
    ],
)
def test_spec_vectors(hex_payload: str, expected: Measurement) -> None:
    assert parse_measurement(bytes.fromhex(hex_payload)) == expected
    assert parse_measurement(bytearray.fromhex(hex_payload)) == expected  # what Bleak hands over


@pytest.mark.parametrize(
    ("hex_payload", "expected"),
    [
        # The reference's example packet: RR flagged, none sent in this notification.
        ("14 5a", Measurement(90, False, None, ())),
        ("17 01 01", Measurement(257, True, None, ())),
        ("18 5a 10 00", Measurement(90, None, 16, ())),
    ],
)
def test_rr_flag_without_values_is_accepted_and_told_apart(
    hex_payload: str, expected: Measurement
) -> None:
    data = bytes.fromhex(hex_payload)
    assert parse_measurement(data) == expected
    assert rr_flag_without_intervals(data)


@pytest.mark.parametrize(
    "hex_payload", ["00 48", "16 5a 00 04", "1f 2c 01 ff ff ff ff", "0e 5a 01 00"]
)
def test_payloads_that_agree_with_their_flags_are_not_told_apart(hex_payload: str) -> None:
    data = bytes.fromhex(hex_payload)
    parse_measurement(data)
    assert not rr_flag_without_intervals(data)


@pytest.mark.parametrize(
    ("hex_payload", "problem"),
    [
        ("", "empty"),
        ("00", "heart-rate field truncated"),
        ("01 48", "heart-rate field truncated"),
        ("1f", "heart-rate field truncated"),
        ("08 48 01", "energy-expended field truncated"),
        ("09 48 00 10", "energy-expended field truncated"),
        ("10 48 00 04 01", "odd length"),
        ("18 48 10 00 00", "odd length"),
        ("00 48 00", "RR intervals not flagged"),
        ("0e 48 10 00 00 04", "RR intervals not flagged"),
    ],
)
def test_malformed_payloads_name_the_problem_and_show_the_bytes(
    hex_payload: str, problem: str
) -> None:
    data = bytes.fromhex(hex_payload)
    with pytest.raises(MeasurementError) as caught:
        parse_measurement(data)
    assert isinstance(caught.value, ValueError)
    assert problem in str(caught.value)
    assert (hex_payload or "empty") in str(caught.value)
    assert caught.value.data == data


def test_payload_longer_than_any_notification_is_rejected() -> None:
    data = bytes([0x10, 0x48]) + b"\x00\x04" * (MAX_PAYLOAD_BYTES // 2)
    with pytest.raises(MeasurementError, match="longer than any notification"):
        parse_measurement(data)


rr_units = st.integers(min_value=0, max_value=0xFFFF)


@given(
    heart_rate=st.integers(min_value=0, max_value=0xFFFF),
    sensor_contact=st.sampled_from([None, True, False]),
    energy_expended=st.none() | st.integers(min_value=0, max_value=0xFFFF),
    rr=st.lists(rr_units, max_size=MAX_PAYLOAD_BYTES // 2 - 3),
    uint16=st.booleans(),
)
def test_parse_inverts_encode_over_the_whole_value_space(
    heart_rate: int,
    sensor_contact: bool | None,
    energy_expended: int | None,
    rr: list[int],
    uint16: bool,
) -> None:
    expected = Measurement(
        heart_rate, sensor_contact, energy_expended, tuple(unit * RR_UNIT_MS for unit in rr)
    )
    payload = encode_measurement(
        heart_rate,
        sensor_contact=sensor_contact,
        energy_expended=energy_expended,
        rr_intervals_ms=expected.rr_intervals_ms,
        uint16=uint16,
    )
    assert parse_measurement(payload) == expected
    assert bool(payload[0] & 0x01) == (uint16 or heart_rate > 0xFF)
    assert payload == build_payload(payload[0], heart_rate, energy_expended or 0, rr)


@given(st.floats(min_value=0.0, max_value=0xFFFF * RR_UNIT_MS))
def test_rr_intervals_round_trip_at_wire_resolution(rr_ms: float) -> None:
    (decoded,) = parse_measurement(encode_measurement(60, rr_intervals_ms=(rr_ms,))).rr_intervals_ms
    assert abs(decoded - rr_ms) <= RR_UNIT_MS / 2


@given(st.binary(max_size=48))
def test_any_bytes_decode_or_raise_measurement_error(data: bytes) -> None:
    try:
        measurement = parse_measurement(data)
    except MeasurementError:
        return
    assert 0 <= measurement.heart_rate <= 0xFFFF


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"heart_rate": -1}, "heart_rate"),
        ({"heart_rate": 0x10000}, "heart_rate"),
        ({"heart_rate": 60, "energy_expended": 0x10000}, "energy_expended"),
        ({"heart_rate": 60, "rr_intervals_ms": (64000.0,)}, "RR interval"),
        ({"heart_rate": 60, "rr_intervals_ms": (-1.0,)}, "RR interval"),
        ({"heart_rate": 60, "rr_intervals_ms": (800.0,) * 300}, "do not fit"),
    ],
)
def test_encode_rejects_values_the_format_cannot_carry(kwargs: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        encode_measurement(**kwargs)


def test_body_sensor_location() -> None:
    assert parse_body_sensor_location(b"\x02") is BodySensorLocation.WRIST
    assert parse_body_sensor_location(bytearray(b"\x01")) is BodySensorLocation.CHEST
    for bad, problem in ((b"", "1 byte"), (b"\x01\x02", "1 byte"), (b"\x07", "reserved")):
        with pytest.raises(MeasurementError, match=problem):
            parse_body_sensor_location(bad)


def test_battery_level() -> None:
    assert parse_battery_level(b"\x57") == 87
    assert parse_battery_level(b"\x00") == 0
    assert parse_battery_level(b"\x64") == 100
    for bad, problem in ((b"", "1 byte"), (b"\x50\x00", "1 byte"), (b"\x65", "above 100")):
        with pytest.raises(MeasurementError, match=problem):
            parse_battery_level(bad)
