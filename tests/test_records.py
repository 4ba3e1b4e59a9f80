"""The wire contract (hrnb.wire): the record the producer sends and the function indexes, and
Lambda's Kinesis event built from GetRecords entries. Both sides import these files, so what is
checked here is what crosses the process boundary."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hrnb.errors import RecordError
from hrnb.wire.records import (
    MAX_RECORD_BYTES,
    PLAUSIBLE_HEART_RATE_BPM,
    canonical_record,
    decode_record,
    document_id,
    encode_record,
    format_timestamp,
    make_record,
    parse_timestamp,
    partition_key,
    plausibility_problem,
    validate_record,
)

EVENTS_DIR = Path(__file__).resolve().parent / "events"
T0 = datetime(2026, 11, 29, 6, 10, 0, 123000, tzinfo=UTC)


def _record(**changes: object) -> dict[str, object]:
    record = dict(make_record(athlete_id="athlete-1", session_id="s1", device_id="strap-1",
                              seq=7, timestamp=T0, heart_rate=128, rr_intervals_ms=(468.8,),
                              sensor_contact=True, sent_at=T0 + timedelta(milliseconds=40)))
    record.update(changes)
    return record


def test_the_sample_event_holds_records_in_the_wire_format() -> None:
    event = json.loads((EVENTS_DIR / "kinesis_heart_rate.json").read_text())
    records = [decode_record(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]
    assert [document_id(r) for r in records] == ["athlete-1/2026-11-29-morning-run/0",
                                                 "athlete-1/2026-11-29-morning-run/1"]
    assert [partition_key(r) for r in records] == [r["kinesis"]["partitionKey"]
                                                   for r in event["Records"]]


def test_encoding_is_compact_json_and_round_trips() -> None:
    record = _record()
    data = encode_record(record)
    assert b" " not in data
    assert decode_record(data) == record
    assert list(json.loads(data)) == list(record)  # field order is the schema's


@pytest.mark.parametrize(("changes", "field"), [
    ({"schema": 2}, "schema"),
    ({"schema": True}, "schema"),
    ({"athlete_id": ""}, "athlete_id"),
    ({"athlete_id": "a/b"}, "athlete_id"),
    ({"session_id": "x" * 129}, "session_id"),
    ({"seq": -1}, "seq"),
    ({"seq": 1.0}, "seq"),
    ({"heart_rate": "fast"}, "heart_rate"),
    ({"heart_rate": True}, "heart_rate"),
    ({"heart_rate": 0x10000}, "heart_rate"),
    ({"timestamp": "2026-11-29T06:10:00Z"}, "timestamp"),
    ({"timestamp": "2026-02-30T06:10:00.000Z"}, "timestamp"),
    ({"rr_intervals_ms": [0]}, "rr_intervals_ms"),
    ({"rr_intervals_ms": [float("nan")]}, "rr_intervals_ms"),
    ({"rr_intervals_ms": 500}, "rr_intervals_ms"),
    ({"sensor_contact": "yes"}, "sensor_contact"),
    ({"energy_expended": -1}, "energy_expended"),
    ({"sent_at": "yesterday"}, "sent_at"),
    ({"colour": "red"}, "colour"),
])
def test_every_field_is_checked_and_named(changes: dict[str, object], field: str) -> None:
    with pytest.raises(RecordError) as caught:
        validate_record(_record(**changes))
    assert caught.value.field == field


def test_a_missing_field_is_named() -> None:
    record = _record()
    del record["device_id"]
    with pytest.raises(RecordError, match="missing field"):
        validate_record(record)


@pytest.mark.parametrize(("data", "needle"), [
    (b"\xff\xfe", "not UTF-8"), (b"{nope", "not JSON"), (b"[1, 2]", "JSON object")])
def test_undecodable_bytes_say_what_they_are_not(data: bytes, needle: str) -> None:
    with pytest.raises(RecordError, match=needle):
        decode_record(data)


def test_a_record_over_the_kinesis_limit_is_refused() -> None:
    with pytest.raises(RecordError, match=f"Kinesis allows {MAX_RECORD_BYTES}"):
        encode_record(_record(rr_intervals_ms=[500.0] * 250_000))


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.just(UTC)))
def test_timestamps_round_trip_at_millisecond_precision(moment: datetime) -> None:
    text = format_timestamp(moment)
    assert parse_timestamp(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_timestamps_are_utc_and_timezone_aware() -> None:
    assert format_timestamp(datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=2)))) == \
        "2026-01-01T06:00:00.000Z"
    with pytest.raises(RecordError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 1))


def test_plausibility_bounds_and_clock_skew() -> None:
    low, high = PLAUSIBLE_HEART_RATE_BPM
    record = validate_record(_record())
    assert plausibility_problem(record, now=T0) is None
    assert plausibility_problem({**record, "heart_rate": low}, now=T0) is None
    assert plausibility_problem({**record, "heart_rate": high}, now=T0) is None
    assert "outside" in str(plausibility_problem({**record, "heart_rate": high + 1}, now=T0))
    assert "outside" in str(plausibility_problem({**record, "heart_rate": low - 1}, now=T0))
    assert "in the future" in str(plausibility_problem(record, now=T0 - timedelta(minutes=6)))
    assert plausibility_problem(record, now=T0 - timedelta(minutes=4)) is None


_GOOD = encode_record(_record(energy_expended=512)).decode()


@pytest.mark.parametrize(("payload", "fast"), [
    (_GOOD, True),
    (encode_record(_record(sent_at=None, energy_expended=None, sensor_contact=None)), True),
    (encode_record(_record(heart_rate=None, sensor_contact=False, rr_intervals_ms=[])), True),
    (encode_record(_record(seq=2**63 - 1, energy_expended=0xFFFF, heart_rate=0xFFFF)), True),
    (encode_record(_record(rr_intervals_ms=[600, 64000, 1e-05, 0.5])), True),
    (_GOOD.replace('"heart_rate":128', '"heart_rate":0').replace('"sensor_contact":true',
                                                                  '"sensor_contact":false'), False),
    (_GOOD.replace('"heart_rate":128', '"heart_rate":null'), False),
    (_GOOD.replace('"seq":7', f'"seq":{2**63}'), False),
    (_GOOD.replace('"seq":7', '"seq":07'), False),
    (_GOOD.replace('"seq":7', '"seq":7.0'), False),
    (_GOOD.replace('"heart_rate":128', '"heart_rate":65536'), False),
    (_GOOD.replace('"energy_expended":512', '"energy_expended":65536'), False),
    (_GOOD.replace('"schema":1', '"schema":2'), False),
    (_GOOD.replace("2026-11-29T06:10:00.123Z", "2026-02-30T06:10:00.123Z"), False),
    (_GOOD.replace("2026-11-29T06:10:00.123Z", "2026-11-29T24:10:00.123Z"), False),
    (_GOOD.replace("2026-11-29T06:10:00.123Z", "2026-11-29T06:10:00.123+00:00"), False),
    (_GOOD.replace("2026-11-29T06:10:00.123Z", "\u0662026-11-29T06:10:00.123Z"), False),
    (_GOOD.replace('"athlete_id":"athlete-1"', '"athlete_id":"\\u0061thlete-1"'), False),
    (_GOOD.replace('"athlete_id":"athlete-1"', '"athlete_id":"-athlete"'), False),
    (_GOOD.replace('"athlete_id":"athlete-1"', f'"athlete_id":"{"a" * 129}"'), False),
    (_GOOD.replace('"athlete_id":"athlete-1"', '"athlete_id":"athléte"'), False),
    (_GOOD.replace('"athlete_id":"athlete-1"', '"athlete_id":"athlete-1","athlete_id":"b"'), False),
    (_GOOD.replace(',"seq"', ', "seq"'), False),
    (_GOOD + "\n", False),
    (_GOOD.replace('"sent_at":', '"extra":1,"sent_at":'), False),
    *[(_GOOD.replace("[468.8]", f"[{rr}]"), rr in ("600", "600.0", "1,2"))
      for rr in ("600", "600.0", "1,2", "6e2", "600.00", "-1", "0", "0.0", "64000.5", "1e400",
                 "NaN", "Infinity", "1,", " 1", "1_0", "+1", "true", '"1"', "\u0661")],
])
def test_well_formed_records_take_the_fast_path_with_the_same_answer(
        payload: str | bytes, fast: bool) -> None:
    data = payload.encode() if isinstance(payload, str) else payload
    fast_answer = canonical_record(data)
    assert (fast_answer is not None) is fast
    if fast_answer is None:
        return  # decode_record judges it, as before
    assert fast_answer == decode_record(data)
    assert list(fast_answer) == list(decode_record(data))
    assert encode_record(fast_answer) == data  # the payload is the record's own compact JSON


@given(seq=st.integers(0, 2**63 - 1), heart_rate=st.integers(0, 0xFFFF),
       rr=st.lists(st.one_of(st.integers(1, 64000),
                             st.floats(min_value=1e-9, max_value=64000, allow_nan=False))),
       contact=st.sampled_from([True, None]),
       athlete=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}", fullmatch=True))
def test_every_encoded_record_takes_the_fast_path(seq: int, heart_rate: int, rr: list[float],
                                                  contact: bool | None, athlete: str) -> None:
    record = _record(seq=seq, heart_rate=heart_rate, rr_intervals_ms=rr, sensor_contact=contact,
                     athlete_id=athlete)
    data = json.dumps(validate_record(record), separators=(",", ":")).encode()
    assert canonical_record(data) == decode_record(data)
