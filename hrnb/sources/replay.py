"""Replay a recorded session from a Garmin FIT file or a CSV, at 1×, N× or full speed.

FIT files (see :mod:`hrnb.sources.fit`): ``record`` messages give the heart-rate series, with
heart rate from ``hr`` messages merged in as Garmin's SDK merges it, and ``hrv`` messages the
beat-to-beat intervals, attached to the sample that follows them (as a strap sends the RR
intervals measured since its previous notification). Device-relative times (FIT system time) are
put on UTC by the file's ``timestamp_correlation`` message, or else replayed from the start of
replay with their spacing kept; :attr:`ReplaySource.time_base` says which. CSV files hold
``timestamp,heart_rate[,rr_intervals_ms]`` — ISO-8601 times with an offset (or Unix seconds),
whole bpm, RR intervals in ms separated by spaces or ``;`` — with or without a header row.

One time rule for both formats: samples never go back in time (equal times are kept). A
truncated or corrupt file, or one whose time goes backwards, replays the samples before the
problem, then raises :class:`~hrnb.errors.ReplayError` naming the file and, for time, the
position (``line 7``, ``record 12``). Bad CSV rows are logged with their line number, kept in
:attr:`ReplaySource.bad_rows` and skipped.

Files are read as they are replayed, a chunk at a time in a worker thread, so a notebook's event
loop never waits on the disk and a CSV of any size replays in bounded memory, its first sample
out at once. A FIT file is decoded whole first: Garmin's ``hr`` merge needs every message (FIT
recordings are a few MB at most). Only a CSV replayed faster than real time with ``retime``
reads the file twice, first to learn where it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import TextIO

from hrnb.boundary import file_errors
from hrnb.errors import ReplayError
from hrnb.hrm import Measurement
from hrnb.sources.base import DEFAULT_ATHLETE_ID, HeartRateSource, Session, session_start, to_utc_ms
from hrnb.sources.fit import FitContent, TimeBase, merge_heart_rates, read_fit_content, utc_of

logger = logging.getLogger(__name__)

REPLAY_SUFFIXES = (".fit", ".csv")
_CSV_COLUMNS = ("timestamp", "heart_rate", "rr_intervals_ms")
_RR_SEPARATORS = re.compile(r"[\s;]+")
_DEVICE_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@-]")
#: Samples handed from the reading thread to the replay at a time.
_CHUNK = 512


@dataclass(frozen=True, slots=True)
class RecordedSample:
    """One heart-rate reading as the file has it."""

    timestamp: datetime  # UTC (for a "relative" recording: only the spacing is meaningful)
    measurement: Measurement
    position: str  # where in the file: "line 7", "record 12"


@dataclass(frozen=True, slots=True)
class BadRow:
    """A CSV row that was skipped, and why."""

    line: int
    text: str
    reason: str


@dataclass
class Recording:
    """What reading a file has met so far: samples accepted, what was skipped, and any damage."""

    samples_read: int = 0
    last: RecordedSample | None = None
    bad_rows: list[BadRow] = field(default_factory=list)
    records_without_heart_rate: int = 0
    damage: str | None = None  # why reading stopped early (truncated, corrupt, time went back)
    damage_position: str | None = None  # where, when a position is to blame
    time_base: TimeBase = "utc"

    def accept(self, sample: RecordedSample) -> bool:
        """Take ``sample`` unless it goes back in time; then record why and return False."""
        previous = self.last
        if previous is not None and sample.timestamp < previous.timestamp:
            at, before = (x.timestamp.isoformat(timespec="milliseconds")
                          for x in (sample, previous))
            self.damage = (
                f"{sample.position} goes back in time ({at} is before {previous.position}'s "
                f"{before}); replay needs samples in time order"
            )
            self.damage_position = sample.position
            return False
        self.last = sample
        self.samples_read += 1
        return True


def open_recording(path: Path) -> tuple[Recording, Iterator[RecordedSample]]:
    """A .fit or .csv file's samples as an iterator, and what reading them meets (blocking: call
    it and the iterator in a thread). ReplayError if unusable."""
    suffix = path.suffix.lower()
    if suffix not in REPLAY_SUFFIXES:
        raise ReplayError(
            f"{path}: replay reads .fit or .csv files, not {suffix or 'files without a suffix'}",
            path=str(path),
        )
    recording = Recording()
    with _read_errors(path):
        samples = read_fit(path, recording) if suffix == ".fit" else read_csv(path, recording)
    return recording, samples


@contextlib.contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """OS errors (through :func:`hrnb.boundary.file_errors`) and text that is not UTF-8 CSV,
    while reading ``path``, become ReplayError naming it."""
    try:
        with file_errors("read", path, error=ReplayError):
            yield
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReplayError(f"{path} is not a UTF-8 text CSV file ({exc})", path=str(path),
                          action="read", code=type(exc).__name__) from exc


def take(path: Path, samples: Iterator[RecordedSample], count: int) -> list[RecordedSample]:
    """The next ``count`` samples at most (blocking, for a worker thread)."""
    with _read_errors(path):
        return list(islice(samples, count))


def read_fit(path: Path, recording: Recording) -> Iterator[RecordedSample]:
    """Heart-rate samples of a FIT file: records (``hr`` messages merged in) with RR intervals.
    The file is decoded here, at once; the samples are then handed out one by one."""
    content = read_fit_content(path)
    merge_heart_rates(content.hr_messages, content.records, path)
    recording.damage = content.damage
    bases: set[TimeBase] = set()
    for record in content.records:
        if record.time_s is not None and record.heart_rate is not None:
            bases.add(utc_of(record.time_s, content.correlation_s)[1])
    recording.time_base = "relative" if "relative" in bases else (
        "correlated" if "correlated" in bases else "utc")
    return _fit_samples(path, content, recording)


def _fit_samples(path: Path, content: FitContent, recording: Recording
                 ) -> Iterator[RecordedSample]:
    pending_rr: list[float] = []
    bases: set[TimeBase] = set()
    for record in content.records:
        pending_rr.extend(record.rr_ms)
        if record.time_s is None or record.heart_rate is None:
            recording.records_without_heart_rate += 1
            continue
        moment, base = utc_of(record.time_s, content.correlation_s)
        bases.add(base)
        if len(bases) > 1 and "relative" in bases:
            position = f"record {record.number}"
            raise ReplayError(
                f"{path}: {position} mixes device-relative time (seconds since power-on) with "
                "UTC times, and the file has no timestamp_correlation message to join them",
                path=str(path), position=position,
            )
        measurement = Measurement(record.heart_rate, None, None, tuple(pending_rr))
        sample = RecordedSample(moment, measurement, f"record {record.number}")
        if not recording.accept(sample):
            return
        yield sample
        pending_rr = []


def read_csv(path: Path, recording: Recording) -> Iterator[RecordedSample]:
    """Rows of ``timestamp,heart_rate[,rr_intervals_ms]``, read as they are asked for; bad ones
    become :class:`BadRow`."""
    handle = path.open(newline="", encoding="utf-8-sig")
    return _csv_samples(path, handle, recording)


def _csv_samples(path: Path, handle: TextIO, recording: Recording) -> Iterator[RecordedSample]:
    with handle:
        reader = csv.reader(handle)
        columns: dict[str, int] | None = None
        positional = False  # no header: exactly timestamp,heart_rate[,rr_intervals_ms]
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _header_columns(row, path)
                if columns is not None:
                    continue
                columns = {name: index for index, name in enumerate(_CSV_COLUMNS)}
                positional = True
            try:
                sample = _csv_sample(row, columns, positional, f"line {line}")
            except ValueError as exc:
                bad = BadRow(line, ",".join(row), str(exc))
                logger.warning("%s line %d skipped: %s (%r)", path.name, line, bad.reason, bad.text)
                recording.bad_rows.append(bad)
                continue
            if not recording.accept(sample):
                return
            yield sample


def _header_columns(row: list[str], path: Path) -> dict[str, int] | None:
    """Column positions named by a header row; None when the first row is data."""
    names = [cell.strip().lower() for cell in row]
    if "timestamp" not in names and "heart_rate" not in names:
        return None
    missing = [name for name in _CSV_COLUMNS[:2] if name not in names]
    if missing:
        raise ReplayError(
            f"{path}: the header row lacks column(s) {', '.join(missing)}: {','.join(row)}",
            path=str(path),
        )
    return {name: names.index(name) for name in _CSV_COLUMNS if name in names}


def _csv_sample(
    row: list[str], columns: dict[str, int], positional: bool, position: str
) -> RecordedSample:
    if positional and len(row) not in (2, 3):
        raise ValueError(f"expected timestamp,heart_rate[,rr_intervals_ms], got {len(row)} columns")
    if len(row) <= max(columns["timestamp"], columns["heart_rate"]):
        raise ValueError("row has fewer columns than the header")
    timestamp = _parse_timestamp(row[columns["timestamp"]].strip())
    text = row[columns["heart_rate"]].strip()
    try:
        heart_rate = int(text)
    except ValueError:
        raise ValueError(f"heart_rate {text!r} is not a whole number of bpm") from None
    if not 0 <= heart_rate <= 0xFFFF:
        raise ValueError(f"heart_rate {heart_rate} is outside 0..65535 bpm")
    rr: tuple[float, ...] = ()
    rr_column = columns.get("rr_intervals_ms")
    if rr_column is not None and rr_column < len(row) and row[rr_column].strip():
        rr = _parse_rr(row[rr_column].strip())
    return RecordedSample(timestamp, Measurement(heart_rate, None, None, rr), position)


def _parse_timestamp(text: str) -> datetime:
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"timestamp {text!r} is not a time")
        return datetime.fromtimestamp(seconds, UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither ISO-8601 (2026-11-29T06:10:00.123Z) nor Unix seconds"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset (add Z or +00:00)")
    return moment.astimezone(UTC)


def _parse_rr(text: str) -> tuple[float, ...]:
    values: list[float] = []
    for part in _RR_SEPARATORS.split(text):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"RR interval {part!r} is not a number of ms") from None
        if not (math.isfinite(value) and 0 < value <= 64000):
            raise ValueError(f"RR interval {part} ms is outside (0, 64000] ms")
        values.append(value)
    return tuple(values)


class ReplaySource(HeartRateSource):
    """A recorded session played back with its original spacing, ``speed`` times faster.

    ``speed=None`` replays as fast as the consumer takes it. Samples keep the file's timestamps
    unless ``retime`` is set: then the whole session is shifted to start now (at real time or
    slower) or to end by now (faster), never into the future. A recording whose times are only
    device-relative (:attr:`time_base` ``"relative"``) is always placed that way. ``duration_s``
    keeps only the first seconds of the recording.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        athlete_id: str = DEFAULT_ATHLETE_ID,
        session_id: str | None = None,
        speed: float | None = 1.0,
        duration_s: float | None = None,
        retime: bool = False,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.speed = speed
        self.duration_s = duration_s
        self.retime = retime
        device_id = "replay:" + _DEVICE_ID_UNSAFE.sub("_", self.path.name)
        self.session = Session(athlete_id, device_id[:128], session_id)
        self.bad_rows: list[BadRow] = []
        self.records_without_heart_rate = 0
        #: "utc" (the file's own times), "correlated" (device times put on UTC by the file's
        #: timestamp_correlation) or "relative" (device times, replayed from the start of replay).
        self.time_base: TimeBase | None = None  # known once the file is read

    async def _produce(self) -> None:
        recording, samples = await asyncio.to_thread(open_recording, self.path)
        self.bad_rows = recording.bad_rows  # grows as the file is read
        self.time_base = recording.time_base
        # The first sample alone, so it goes out as soon as it is read.
        chunk = await asyncio.to_thread(take, self.path, samples, 1)
        replayed = 0
        if chunk:
            replayed = await self._replay(recording, samples, chunk)
        self.records_without_heart_rate = recording.records_without_heart_rate
        if not replayed and recording.damage is None:
            raise ReplayError(
                f"{self.path} holds no heart-rate samples"
                + (f" ({len(self.bad_rows)} bad rows skipped)" if self.bad_rows else ""),
                path=str(self.path),
            )
        if recording.damage is not None:
            raise ReplayError(
                f"{self.path}: {recording.damage}; {replayed} heart-rate sample(s) before the "
                "damage were replayed",
                path=str(self.path), position=recording.damage_position,
            )

    async def _replay(self, recording: Recording, samples: Iterator[RecordedSample],
                      chunk: list[RecordedSample]) -> int:
        """Emit the samples, chunk by chunk as the thread reads them; how many were replayed."""
        session = self.session
        first = chunk[0].timestamp
        shift = timedelta(0)
        relative = recording.time_base == "relative"
        if relative:
            logger.info("%s: record times are device-relative (seconds since power-on, no "
                        "timestamp_correlation); replaying them from the start of replay",
                        self.path.name)
        if self.retime or relative:
            shift = session_start(await self._span_s(first), self.speed) - first
        detail = f"replaying {self.path.name}"
        if recording.time_base != "utc":
            detail += {"relative": ", device-relative times placed at the start of replay",
                       "correlated": ", device times put on UTC by timestamp_correlation",
                       }[recording.time_base]
        await self._emit(session.event("connected", to_utc_ms(first + shift), detail))
        loop = asyncio.get_running_loop()
        started = loop.time()
        replayed = 0
        last = first
        while chunk:
            for sample in chunk:
                offset_s = (sample.timestamp - first).total_seconds()
                if self.duration_s is not None and offset_s > self.duration_s:
                    chunk = []
                    break
                if self.speed is not None:
                    delay = started + offset_s / self.speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                elif replayed % 256 == 0:
                    await asyncio.sleep(0)
                received_at = to_utc_ms(sample.timestamp + shift)
                for item in session.items(sample.measurement, received_at):
                    await self._emit(item)
                replayed += 1
                last = sample.timestamp
            else:
                chunk = await asyncio.to_thread(take, self.path, samples, _CHUNK)
        detail = f"end of recording: {replayed} samples"
        if self.bad_rows:
            detail += f", {len(self.bad_rows)} bad rows skipped"
        await self._emit(session.event("disconnected", to_utc_ms(last + shift), detail))
        return replayed

    async def _span_s(self, first: datetime) -> float | None:
        """Seconds from the first sample to the last replayed, needed only to place a session
        played faster than real time so it ends by now (a second pass over the file)."""
        if self.speed is not None and self.speed <= 1.0:
            return None  # starts now; no need to know where it ends

        def last_timestamp() -> datetime:
            _, samples = open_recording(self.path)
            last = first
            with _read_errors(self.path):
                for sample in samples:
                    last = sample.timestamp
            return last

        span_s = (await asyncio.to_thread(last_timestamp) - first).total_seconds()
        return span_s if self.duration_s is None else min(span_s, self.duration_s)
