"""Heart rate in a Garmin FIT file: ``record`` and ``hrv`` messages, ``hr`` messages merged in,
and every time put on one clock.

**Reader.** ``fitdecode`` decodes the file (CRC checked, compressed-timestamp headers applied).
Garmin's own Python decoder (``garmin-fit-sdk``) cannot be the reader: it refuses
compressed-timestamp headers ("not currently supported"), which watches write.

**hr messages.** Straps that record and forward later (HRM-Pro, HRM-Swim) store heart rate in
``hr`` messages, not in ``record`` messages. :func:`merge_heart_rates` is a line-by-line port of
the FIT SDK's ``merge_heart_rates`` / ``expand_heart_rates`` (``garmin_fit_sdk/hr_mesg_utils.py``,
profile 21.218): each ``hr`` message with a ``timestamp`` anchors the beat times
(``event_timestamp``, 1/1024 s, or ``event_timestamp_12``: eight 12-bit deltas accumulated onto
the last ``event_timestamp``); beats are expanded at 250 ms across gaps of up to 5 s, and each
record gets the rounded mean of the beats after the previous record up to itself. Ported rather
than imported because the SDK's merge works on its own decoder's message dicts, raises bare
``RuntimeError`` on bad input, and ships under the FIT Protocol License rather than an
open-source one (hrnb's runtime dependencies are open source). The tests compare this port with
the SDK itself (a dev dependency) on files they write. ``event_timestamp_12`` is unpacked here
from its raw bytes because fitdecode adds the deltas to the last ``timestamp`` instead of
accumulating them as the SDK does.

**Clocks.** A FIT ``date_time`` of 0x10000000 or more counts seconds from 1989-12-31 UTC; below
that it is *system time*, seconds since the device powered on (ANT-FS dumps, compressed
timestamps before any full one). System times are put on UTC by the file's first
``timestamp_correlation`` message; without one the recording is marked ``relative`` and the
replay starts it at the start of replay, keeping its spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import fitdecode

from hrnb.errors import ReplayError

#: FIT ``date_time`` zero: 1989-12-31T00:00:00Z.
FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)
#: ``date_time`` values below this are system time (seconds since device power-on).
SYSTEM_TIME_LIMIT = 0x10000000
#: How a recording's times relate to UTC.
TimeBase = Literal["utc", "correlated", "relative"]

_EVENT_UNITS_PER_S = 1024
_EVENT_12_BITS = 12
_EVENT_12_MASK = (1 << _EVENT_12_BITS) - 1
_EVENT_ROLLOVER_S = 0x400000  # event_timestamp is a uint32 of 1/1024 s: it wraps every 2^22 s
_GAP_STEP_S = 0.25  # expand_heart_rates: carry a beat forward in 250 ms steps ...
_GAP_MAX_STEPS = 20  # ... for up to 5 s


@dataclass
class FitRecord:
    """One ``record`` message; ``heart_rate`` may be filled in from ``hr`` messages."""

    number: int  # 1-based among the file's record messages
    time_s: int | None  # raw FIT date_time: UTC or system time, see SYSTEM_TIME_LIMIT
    heart_rate: int | None
    rr_ms: tuple[float, ...]  # hrv intervals written since the previous record


@dataclass
class HrMessage:
    """One ``hr`` message: beat times in seconds of the strap's 1/1024 s clock and their bpm."""

    number: int  # 1-based among the file's hr messages
    anchor_s: float | None  # timestamp + fractional_timestamp (FIT seconds), when present
    event_times_s: list[float]
    bpm: list[int | None]


@dataclass
class FitContent:
    """What a FIT file holds for replay, and why reading stopped early, if it did."""

    records: list[FitRecord] = field(default_factory=list)
    hr_messages: list[HrMessage] = field(default_factory=list)
    correlation_s: float | None = None  # UTC minus system time, from timestamp_correlation
    damage: str | None = None


def read_fit_content(path: Path) -> FitContent:
    """Decode ``path``; decoding problems end the content early with ``damage`` set."""
    content = FitContent()
    pending_rr: list[float] = []
    event_accumulator: int | None = None  # last event_timestamp, 1/1024 s (the SDK's accumulator)
    try:
        with fitdecode.FitReader(
            str(path),
            check_crc=fitdecode.CrcCheck.RAISE,
            error_handling=fitdecode.ErrorHandling.RAISE,
        ) as reader:
            for frame in reader:
                if not isinstance(frame, fitdecode.FitDataMessage):
                    continue
                if frame.name == "hrv":
                    # Raw values are whole milliseconds (the profile scales them to seconds).
                    pending_rr.extend(float(v) for v in _raw_values(frame, "time") if v < 0xFFFF)
                elif frame.name == "record":
                    content.records.append(FitRecord(
                        number=len(content.records) + 1,
                        time_s=_raw_scalar(frame, "timestamp"),
                        heart_rate=_raw_scalar(frame, "heart_rate", invalid=0xFF),
                        rr_ms=tuple(pending_rr),
                    ))
                    pending_rr = []
                elif frame.name == "hr":
                    message, event_accumulator = _hr_message(
                        frame, len(content.hr_messages) + 1, event_accumulator)
                    content.hr_messages.append(message)
                elif frame.name == "timestamp_correlation" and content.correlation_s is None:
                    content.correlation_s = _correlation_s(frame)
    except fitdecode.FitEOFError as exc:
        content.damage = f"the file is truncated ({exc})"
    except fitdecode.FitCRCError as exc:
        content.damage = f"a checksum does not match, the file is corrupt ({exc})"
    except fitdecode.FitHeaderError as exc:
        content.damage = f"a FIT header is corrupt ({exc})"
    except fitdecode.FitError as exc:
        content.damage = f"the FIT data cannot be decoded ({exc})"
    except (AssertionError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # fitdecode's own checks on malformed definitions surface as these, not as FitError.
        content.damage = f"the FIT data cannot be decoded ({type(exc).__name__}: {exc})"
    return content


def _field_data(frame: fitdecode.FitDataMessage, name: str) -> Any:
    """The field as written in the message (not one fitdecode expanded from a component)."""
    for data in frame.fields:
        if data.name == name and data.field_def is not None:
            return data
    if name == "timestamp" and frame.time_offset is not None:  # compressed-timestamp header
        return next((data for data in frame.fields if data.name == name), None)
    return None


def _raw_values(frame: fitdecode.FitDataMessage, name: str) -> list[int]:
    """The field's raw integers (an array field gives several); none when absent or invalid."""
    data = _field_data(frame, name)
    if data is None or data.value is None:
        return []
    raw = data.raw_value
    values = raw if isinstance(raw, tuple | list) else (raw,)
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool)]


def _raw_scalar(
    frame: fitdecode.FitDataMessage, name: str, invalid: int | None = None
) -> int | None:
    values = _raw_values(frame, name)
    if len(values) != 1 or values[0] == invalid:
        return None
    return values[0]


def _scaled_scalar(frame: fitdecode.FitDataMessage, name: str) -> float | None:
    data = _field_data(frame, name)
    value = None if data is None else data.value
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _hr_message(
    frame: fitdecode.FitDataMessage, number: int, accumulator: int | None
) -> tuple[HrMessage, int | None]:
    """The message's beats, as the SDK's decoder expands them, and the updated accumulator."""
    anchor = _raw_scalar(frame, "timestamp")
    anchor_s = None
    if anchor is not None:
        anchor_s = anchor + (_scaled_scalar(frame, "fractional_timestamp") or 0.0)
    events = _raw_values(frame, "event_timestamp")
    if events:
        accumulator = events[-1]
    packed = _raw_values(frame, "event_timestamp_12")
    if packed and accumulator is not None:
        # As in the SDK, the expanded values replace the message's own event_timestamp.
        bits = int.from_bytes(bytes(v & 0xFF for v in packed), "little")
        events, last = [], accumulator
        for index in range(len(packed) * 8 // _EVENT_12_BITS):
            value = (bits >> (_EVENT_12_BITS * index)) & _EVENT_12_MASK
            accumulator += (value - last) & _EVENT_12_MASK
            last = value
            events.append(accumulator)
    bpm: list[int | None] = [v if v != 0xFF else None for v in _raw_values(frame, "filtered_bpm")]
    times = [v / _EVENT_UNITS_PER_S for v in events]
    return HrMessage(number, anchor_s, times, bpm), accumulator


def _correlation_s(frame: fitdecode.FitDataMessage) -> float | None:
    utc = _raw_scalar(frame, "timestamp")
    system = _raw_scalar(frame, "system_timestamp")
    if utc is None or system is None or utc < SYSTEM_TIME_LIMIT:
        return None
    utc_s = utc + (_scaled_scalar(frame, "fractional_timestamp") or 0.0)
    system_s = system + (_scaled_scalar(frame, "fractional_system_timestamp") or 0.0)
    return utc_s - system_s


def expand_heart_rates(messages: list[HrMessage], path: Path) -> list[tuple[float, int]]:
    """(FIT seconds, bpm) per beat, gaps up to 5 s filled every 250 ms (the SDK's expansion)."""
    beats: list[tuple[float, int]] = []
    anchor_s: float | None = None
    anchor_event_s = 0.0
    for message in messages:
        if message.anchor_s is not None:
            if len(message.event_times_s) != 1:
                count = len(message.event_times_s)
                raise _hr_error(path, message, "an anchoring hr message (one with a timestamp) "
                                f"needs exactly one event_timestamp, not {count}")
            anchor_s, anchor_event_s = message.anchor_s, message.event_times_s[0]
        if anchor_s is None:
            raise _hr_error(path, message, "beats come before any hr message with a timestamp")
        if len(message.event_times_s) != len(message.bpm):
            raise _hr_error(path, message, f"{len(message.event_times_s)} event times but "
                            f"{len(message.bpm)} filtered_bpm values")
        for event_s, bpm in zip(message.event_times_s, message.bpm, strict=True):
            if event_s < anchor_event_s:
                if anchor_event_s - event_s <= _EVENT_ROLLOVER_S:
                    raise _hr_error(path, message, "an event_timestamp is earlier than its "
                                    "anchor's, so its time cannot be worked out")
                event_s += _EVENT_ROLLOVER_S
            if bpm is None:
                continue  # an invalid value: the SDK would fail on it; hrnb leaves the beat out
            time_s = anchor_s + (event_s - anchor_event_s)
            if beats:
                previous_s, previous_bpm = beats[-1]
                gap_ms = abs(time_s - previous_s) * 1000
                step = 1
                while gap_ms > _GAP_STEP_S * 1000 and step <= _GAP_MAX_STEPS:
                    beats.append((previous_s + _GAP_STEP_S * step, previous_bpm))
                    gap_ms -= _GAP_STEP_S * 1000
                    step += 1
            beats.append((time_s, bpm))
    return beats


def merge_heart_rates(messages: list[HrMessage], records: list[FitRecord], path: Path) -> None:
    """Fill each timed record's heart rate with the mean of the beats since the previous record,
    as the SDK does (including its quirks: a record is only updated once a later beat is seen,
    and a record at the same second as the previous one looks one second back)."""
    timed = [record for record in records if record.time_s is not None]
    if not messages or not timed:
        return
    beats = expand_heart_rates(messages, path)
    index = 0
    range_start: float | None = None
    for record in timed:
        assert record.time_s is not None
        total = count = 0
        range_end = float(record.time_s)
        if range_start is None:
            range_start = range_end
        if range_start == range_end:
            range_start -= 1
            index = index - 1 if index >= 1 else 0
        while index < len(beats):
            beat_s, bpm = beats[index]
            if range_start < beat_s <= range_end:
                total += bpm
                count += 1
            elif beat_s > range_end:
                if count:
                    record.heart_rate = int(total / count + 0.5)
                range_start = range_end
                break
            index += 1


def _hr_error(path: Path, message: HrMessage, problem: str) -> ReplayError:
    return ReplayError(f"{path}: hr message {message.number}: {problem}", path=str(path),
                       position=f"hr message {message.number}")


def utc_of(time_s: int, correlation_s: float | None) -> tuple[datetime, TimeBase]:
    """The moment a raw FIT ``date_time`` stands for, and on which clock it was put."""
    if time_s >= SYSTEM_TIME_LIMIT:
        return FIT_EPOCH + timedelta(seconds=time_s), "utc"
    if correlation_s is not None:
        return FIT_EPOCH + timedelta(seconds=time_s + correlation_s), "correlated"
    return FIT_EPOCH + timedelta(seconds=time_s), "relative"
