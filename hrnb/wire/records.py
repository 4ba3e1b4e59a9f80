"""The wire format: one JSON object per heart-rate sample, shared by the producer and the Lambda.

Stdlib only (plus ``hrnb.errors``): the Lambda build packages this very module into the
function zip, so the schema is shared by packaging, never by copying.

A record keeps the reference's fields (``timestamp``, ``heart_rate``) so its index mapping still
applies, and adds identity (``athlete_id``, ``session_id``, ``seq``), the rest of the 0x2A37
measurement, and ``sent_at``. Encoding and validation are pure; an invalid record raises
:class:`hrnb.errors.RecordError` naming the field.

A sample read without skin contact (``sensor_contact`` false) is data, not a heart rate: its
``heart_rate`` is null, so it is indexed as a gap that no statistic averages. Producers before
this rule sent the strap's value (usually 0 bpm) instead; validation still takes that form and
turns it into null, so old and new records mean the same and the schema version stays 1.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

from hrnb.errors import RecordError

SCHEMA_VERSION = 1
#: Kinesis caps one record's data blob at 1 MiB.
MAX_RECORD_BYTES = 1024 * 1024
#: Heart rates the pipeline believes; outside this the Lambda dead-letters the record.
PLAUSIBLE_HEART_RATE_BPM = (20, 250)
#: How far in the future a measurement time may be before it is dead-lettered (clock skew).
MAX_FUTURE_SKEW = timedelta(minutes=5)

#: The longest athlete, session or device id; the command line checks ids against this too.
MAX_ID_LENGTH = 128

# Matched with fullmatch: "$" would accept a trailing newline.
_ID = rf"[A-Za-z0-9][A-Za-z0-9_.:@-]{{0,{MAX_ID_LENGTH - 1}}}"
_ID_RE = re.compile(_ID)
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
_FIELDS = (
    "schema",
    "athlete_id",
    "session_id",
    "device_id",
    "seq",
    "timestamp",
    "heart_rate",
    "rr_intervals_ms",
    "sensor_contact",
    "energy_expended",
    "sent_at",
)
_FIELD_SET = frozenset(_FIELDS)
_TS = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"
_UINT16 = r"(0|[1-9][0-9]{0,4})"
#: encode_record's exact output (compact, fields in order), ASCII classes only; what it cannot
#: tell alone (int ranges, real dates, the rr numbers) canonical_record checks after it.
_CANONICAL_RE = re.compile(
    rf'\{{"schema":1,"athlete_id":"({_ID})","session_id":"({_ID})","device_id":"({_ID})",'
    rf'"seq":(0|[1-9][0-9]{{0,18}}),"timestamp":"({_TS})","heart_rate":(?:{_UINT16}|null),'
    rf'"rr_intervals_ms":\[([^\]]*)\],"sensor_contact":(true|false|null),'
    rf'"energy_expended":(?:{_UINT16}|null),"sent_at":(?:"({_TS})"|null)\}}'
)
_JSON_LITERALS = {"true": True, "false": False, "null": None}


class Record(TypedDict):
    """One heart-rate sample on the wire. Times are ISO-8601 UTC with milliseconds."""

    schema: int
    athlete_id: str
    session_id: str
    device_id: str
    seq: int  # monotonic per session, from 0
    timestamp: str  # measurement time
    heart_rate: int | None  # bpm; None exactly when sensor_contact is False
    rr_intervals_ms: list[float]
    sensor_contact: bool | None  # None: the sensor does not report contact
    energy_expended: int | None  # kJ
    sent_at: str | None  # when the producer accepted the sample


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z`` (``2026-11-29T06:10:00.123Z``)."""
    if moment.tzinfo is None:
        raise RecordError("timestamp must be timezone-aware (UTC)", field="timestamp")
    # isoformat (C, truncating to ms like the pattern) ends in "+00:00" for UTC; ~3x strftime.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_timestamp(text: str, *, field: str = "timestamp") -> datetime:
    """The inverse of :func:`format_timestamp`; anything else raises RecordError."""
    if not isinstance(text, str) or not _TIMESTAMP_RE.fullmatch(text):
        raise RecordError(
            f"{field} must be ISO-8601 UTC with milliseconds like 2026-11-29T06:10:00.123Z, "
            f"got {text!r}",
            field=field,
        )
    try:
        # The pattern above pins the shape; fromisoformat (C, ~20x strptime) checks the date.
        return datetime.fromisoformat(text)
    except ValueError:
        raise RecordError(f"{field} is not a real date and time: {text!r}", field=field) from None


def make_record(
    *,
    athlete_id: str,
    session_id: str,
    device_id: str,
    seq: int,
    timestamp: datetime,
    heart_rate: int | None,
    rr_intervals_ms: Iterable[float] = (),
    sensor_contact: bool | None = None,
    energy_expended: int | None = None,
    sent_at: datetime | None = None,
) -> Record:
    """Build and validate a record from Python values."""
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "athlete_id": athlete_id,
        "session_id": session_id,
        "device_id": device_id,
        "seq": seq,
        "timestamp": format_timestamp(timestamp),
        "heart_rate": heart_rate,
        "rr_intervals_ms": [float(v) for v in rr_intervals_ms],
        "sensor_contact": sensor_contact,
        "energy_expended": energy_expended,
        "sent_at": None if sent_at is None else format_timestamp(sent_at),
    }
    return validate_record(record)


def validate_record(obj: Any) -> Record:
    """Check every field's type and range; return the record (unknown keys rejected), with a
    heart rate read without skin contact turned into null."""
    if not isinstance(obj, Mapping):
        raise RecordError(f"a record must be a JSON object, got {type(obj).__name__}")
    if obj.keys() != _FIELD_SET:  # one comparison for the usual case: exactly the fields
        unknown = sorted(set(obj) - _FIELD_SET)
        if unknown:
            raise RecordError(f"unknown field(s): {', '.join(unknown)}", field=unknown[0])
        missing = [name for name in _FIELDS if name not in obj]
        raise RecordError(f"missing field(s): {', '.join(missing)}", field=missing[0])
    if obj["schema"] != SCHEMA_VERSION or isinstance(obj["schema"], bool):
        raise RecordError(
            f"schema must be {SCHEMA_VERSION}, got {obj['schema']!r}", field="schema"
        )
    for name in ("athlete_id", "session_id", "device_id"):
        value = obj[name]
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise RecordError(
                f"{name} must be 1-{MAX_ID_LENGTH} characters of letters, digits and _.:@- "
                f"starting with a letter or digit, got {value!r}",
                field=name,
            )
    _check_int(obj, "seq", 0, 2**63 - 1)
    parse_timestamp(obj["timestamp"])
    no_contact = obj["sensor_contact"] is False
    if obj["heart_rate"] is None and not no_contact:
        raise RecordError(
            "heart_rate is null but sensor_contact is not false: only a sample read without "
            "skin contact has no heart rate",
            field="heart_rate",
        )
    if obj["heart_rate"] is not None:
        _check_int(obj, "heart_rate", 0, 0xFFFF)
    rr = obj["rr_intervals_ms"]
    if not isinstance(rr, list):
        raise RecordError("rr_intervals_ms must be a list of milliseconds", field="rr_intervals_ms")
    for value in rr:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not 0 < value <= 64000
        ):
            raise RecordError(
                f"rr_intervals_ms must hold numbers in (0, 64000] ms, got {value!r}",
                field="rr_intervals_ms",
            )
    if obj["sensor_contact"] not in (None, True, False):
        raise RecordError(
            f"sensor_contact must be true, false or null, got {obj['sensor_contact']!r}",
            field="sensor_contact",
        )
    if obj["energy_expended"] is not None:
        _check_int(obj, "energy_expended", 0, 0xFFFF)
    if obj["sent_at"] is not None:
        parse_timestamp(obj["sent_at"], field="sent_at")
    record = {name: obj[name] for name in _FIELDS}
    if no_contact:
        record["heart_rate"] = None
    return record  # type: ignore[return-value]


def _check_int(obj: Mapping[str, Any], name: str, low: int, high: int) -> None:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RecordError(f"{name} must be an integer in {low}..{high}, got {value!r}", field=name)


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Validate and serialise to compact UTF-8 JSON, within Kinesis' 1 MiB record limit."""
    data = json.dumps(validate_record(record), separators=(",", ":")).encode()
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"record is {len(data)} bytes; Kinesis allows {MAX_RECORD_BYTES}")
    return data


def decode_record(data: bytes) -> Record:
    """Parse bytes off the stream; RecordError says whether it was UTF-8, JSON or the schema."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"record is not UTF-8 text: {exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"record is not JSON: {exc}") from None
    return validate_record(obj)


def canonical_record(data: bytes) -> Record | None:
    """The record when ``data`` is exactly :func:`encode_record`'s output for a valid record
    that validation leaves as it is; None for anything else, which :func:`decode_record` then
    judges (and names the problem).

    The fast path for well-formed records: one regular expression instead of the JSON parser
    and the field-by-field checks, with the same answer, so the Lambda can index the payload's
    own bytes (docs/benchmarks/handler.md).
    """
    try:
        match = _CANONICAL_RE.fullmatch(data.decode("ascii"))
    except UnicodeDecodeError:
        return None
    if match is None:
        return None
    (athlete_id, session_id, device_id, seq, timestamp, heart_rate, rr_text, contact, energy,
     sent_at) = match.groups()
    sensor_contact = _JSON_LITERALS[contact]
    if (heart_rate is None) is not (sensor_contact is False):  # an error, or 0 bpm made null
        return None
    rr: list[Any] = []
    if rr_text:
        for token in rr_text.split(","):
            value = _rr_value(token)
            if value is None:
                return None
            rr.append(value)
    seq_number = int(seq)
    bpm = None if heart_rate is None else int(heart_rate)
    kilojoules = None if energy is None else int(energy)
    if seq_number > 2**63 - 1 or (bpm or 0) > 0xFFFF or (kilojoules or 0) > 0xFFFF:
        return None
    try:
        datetime.fromisoformat(timestamp)  # a real date and time
        if sent_at is not None:
            datetime.fromisoformat(sent_at)
    except ValueError:
        return None
    return {
        "schema": SCHEMA_VERSION,
        "athlete_id": athlete_id,
        "session_id": session_id,
        "device_id": device_id,
        "seq": seq_number,
        "timestamp": timestamp,
        "heart_rate": bpm,
        "rr_intervals_ms": rr,
        "sensor_contact": sensor_contact,
        "energy_expended": kilojoules,
        "sent_at": sent_at,
    }


@functools.lru_cache(maxsize=4096)
def _rr_value(token: str) -> float | None:
    """An RR interval token as json reads it, or None when validation would not keep it as
    written: a float if written as Python writes one (with "." or "e"), else an int, exactly
    what json writes back (repr), in 0 < value <= 64000. Cached: a strap counts in 1/1024 s, so
    a session's intervals take a few hundred distinct values, and a float's repr is slow."""
    try:
        value: float = float(token)
        if repr(value) != token:
            value = int(token)
            if repr(value) != token:
                return None
    except ValueError:
        return None
    return value if 0 < value <= 64000 else None


def heart_rate_problem(heart_rate: int | None, sensor_contact: bool | None) -> str | None:
    """Why this heart rate would not be believed, or None. Without skin contact there is no
    heart rate to doubt: the sample is indexed as a gap."""
    if sensor_contact is False:
        return None
    low, high = PLAUSIBLE_HEART_RATE_BPM
    if heart_rate is None or not low <= heart_rate <= high:
        return f"heart_rate {heart_rate} bpm is outside {low}..{high} bpm"
    return None


def plausibility_problem(record: Record, *, now: datetime) -> str | None:
    """Why a structurally valid record should not be believed (and is dead-lettered), or None."""
    problem = heart_rate_problem(record["heart_rate"], record["sensor_contact"])
    if problem is not None:
        return problem
    if record["timestamp"] > _latest_timestamp(now):
        return (
            f"timestamp {record['timestamp']} is more than "
            f"{int(MAX_FUTURE_SKEW.total_seconds() // 60)} minutes in the future"
        )
    return None


@functools.lru_cache(maxsize=4)
def _latest_timestamp(now: datetime) -> str:
    """The last believable measurement time, formatted: validated timestamps have one fixed
    width and millisecond steps, so comparing the strings is comparing the times (a parse
    less per record)."""
    return format_timestamp(now + MAX_FUTURE_SKEW)


def document_id(record: Mapping[str, Any]) -> str:
    """The OpenSearch ``_id``: a re-sent or re-delivered record overwrites itself."""
    return f"{record['athlete_id']}/{record['session_id']}/{record['seq']}"


def partition_key(record: Mapping[str, Any]) -> str:
    """Kinesis partition key: per athlete, so order holds per athlete and athletes spread."""
    return str(record["athlete_id"])
