"""FIT files written by the tests with fit-tool, so each replay case has a file made for it.

Times are raw FIT ``date_time`` seconds: from 1989-12-31 UTC when 0x10000000 or more, else
device system time (seconds since power-on). fit-tool takes milliseconds since 1970.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fit_tool.data_message import DataMessage
from fit_tool.fit_file_builder import FitFileBuilder
from fit_tool.profile.messages.file_id_message import FileIdMessage
from fit_tool.profile.messages.hr_message import HrMessage
from fit_tool.profile.messages.hrv_message import HrvMessage
from fit_tool.profile.messages.record_message import RecordMessage
from fit_tool.profile.messages.timestamp_correlation_message import (
    TimestampCorrelationMessage,
)
from fit_tool.profile.profile_type import FileType, Manufacturer

FIT_EPOCH = datetime(1989, 12, 31, tzinfo=UTC)
_FIT_EPOCH_UNIX_S = 631065600
#: A UTC FIT time: 2024-11-08T11:33:20Z.
UTC_T0 = 1_100_000_000


def fit_ms(fit_s: float) -> int:
    """fit-tool's milliseconds since 1970 for raw FIT seconds."""
    return round((_FIT_EPOCH_UNIX_S + fit_s) * 1000)


def utc(fit_s: float) -> datetime:
    return FIT_EPOCH + timedelta(seconds=fit_s)


def file_id(created_s: int = UTC_T0) -> FileIdMessage:
    message = FileIdMessage()
    message.type = FileType.ACTIVITY
    message.manufacturer = Manufacturer.GARMIN.value
    message.time_created = fit_ms(created_s)
    return message


def record(time_s: int | None, heart_rate: int | None = None, *,
           compressed: bool = False) -> RecordMessage:
    """A record; ``compressed`` writes its time in a compressed-timestamp header instead."""
    message = RecordMessage()
    if time_s is not None and not compressed:
        message.timestamp = fit_ms(time_s)
    if heart_rate is not None:
        message.heart_rate = heart_rate
    message.compressed_time_s = time_s if compressed else None  # read by write_fit
    return message


def hrv(*rr_s: float) -> HrvMessage:
    message = HrvMessage()
    message.time = list(rr_s)
    return message


def correlation(utc_s: float, system_s: float) -> TimestampCorrelationMessage:
    message = TimestampCorrelationMessage()
    message.timestamp = fit_ms(int(utc_s))
    message.fractional_timestamp = utc_s - int(utc_s)
    message.system_timestamp = fit_ms(int(system_s))
    message.fractional_system_timestamp = system_s - int(system_s)
    return message


def hr_anchor(time_s: int, event_s: float, bpm: int) -> HrMessage:
    """An ``hr`` message that anchors the strap's beat clock (``event_s``) to ``time_s``."""
    message = HrMessage()
    message.timestamp = fit_ms(time_s)
    message.fractional_timestamp = 0.0  # the SDK's merge reads it from every anchor
    message.event_timestamp = [event_s]
    message.filtered_bpm = [bpm]
    return message


def hr_beats(events_s: list[float], bpms: list[int]) -> HrMessage:
    """Beats with full 32-bit event times."""
    message = HrMessage()
    message.event_timestamp = events_s
    message.filtered_bpm = bpms
    return message


def hr_beats_12(events_s: list[float], bpms: list[int]) -> HrMessage:
    """Eight beats packed as 12-bit event times (``event_timestamp_12``), as HRM-Swim writes."""
    assert len(events_s) == len(bpms) == 8
    bits = 0
    for index, event_s in enumerate(events_s):
        bits |= (round(event_s * 1024) & 0xFFF) << (12 * index)
    message = HrMessage()
    message.event_timestamp_12 = bits.to_bytes(12, "little")
    message.filtered_bpm = bpms
    return message


def write_fit(path: Path, messages: Iterable[DataMessage]) -> Path:
    """Write ``messages`` (a file_id first unless one is given) as a FIT file."""
    messages = list(messages)
    if not messages or not isinstance(messages[0], FileIdMessage):
        messages.insert(0, file_id())
    builder = FitFileBuilder(auto_define=True)
    builder.add_all(messages)
    fit = builder.build()
    for entry in fit.records:
        time_s = getattr(entry.message, "compressed_time_s", None)
        if not entry.header.is_definition and time_s is not None:
            entry.header.is_time_compressed = True
            entry.header.time_offset_seconds = time_s & 0x1F
    path.write_bytes(fit.to_bytes())
    return path
