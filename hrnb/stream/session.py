"""A streaming session: samples from a source become records for Kinesis, and every item reaches
the listeners (the live chart) as it arrives.

::

    HeartRateSource ──► StreamSession ──submit(record)──► KinesisProducer ──► Kinesis
                             │
                             └──► listeners: every Sample and ConnectionEvent, in order

The session never waits on Kinesis (``submit`` only queues), so the chart stays live during an
outage while the producer spools. A sample whose record is invalid is logged and skipped, a
listener that raises is dropped with a logged traceback, and both leave the stream going.
:func:`run_stream` is the whole ``hrnb stream`` command minus printing; :func:`format_progress`
and :func:`format_summary` are its presenters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hrnb.config import Settings
from hrnb.errors import ConfigError, HrnbError, RecordError, SpoolFullError
from hrnb.query.progress import SeqRanges
from hrnb.sources import ConnectionEvent, HeartRateSource, Sample, from_spec
from hrnb.stream.producer import (
    KinesisProducer,
    LatencyPercentiles,
    ProducerMetrics,
    check_stream_ready,
    kinesis_client,
)
from hrnb.stream.spool import SpooledRecord

if TYPE_CHECKING:
    from mypy_boto3_kinesis import KinesisClient

logger = logging.getLogger(__name__)

Item = Sample | ConnectionEvent
Listener = Callable[[Item], None]
ProgressCallback = Callable[["StreamProgress"], None]


@dataclass(frozen=True)
class StreamProgress:
    """Where a running session stands (the CLI's progress line, a notebook's status)."""

    elapsed_s: float
    samples: int  # samples read from the source
    submitted: int  # records handed to the producer
    invalid: int  # samples whose record failed validation (logged, not sent)
    refused: int  # records the producer refused while its spool was full (logged)
    events: int  # connection events (connected, disconnected, contact lost, ...)
    last_heart_rate_bpm: Mapping[str, int]  # per athlete
    producer: ProducerMetrics


@dataclass(frozen=True)
class StreamSummary:
    """How a session went, once the source ended and the producer flushed."""

    duration_s: float
    samples: int
    submitted: int
    invalid: int
    refused: int
    events: int
    athletes: tuple[str, ...]
    sessions: tuple[str, ...]
    stopped: bool  # stopped on request (Ctrl-C, stop()) rather than the source ending
    producer: ProducerMetrics
    index_check: IndexCheck | None = None  # None: not verified (--no-verify)

    @property
    def unsent(self) -> int:
        """Records not acknowledged yet; they wait in the spool for the next run."""
        return self.producer.unsent

    @property
    def complete(self) -> bool:
        """Every sample reached Kinesis and, when verified, the index."""
        indexed = self.index_check is None or not self.index_check.missing
        return self.unsent == 0 and self.invalid == 0 and self.refused == 0 and indexed


# --- what the index holds of what Kinesis acknowledged -------------------------------------------
class AckLedger:
    """The samples Kinesis acknowledged, per athlete session, as seq ranges (bounded: an
    unbroken session is one range). Pass it as the producer's ``on_acknowledged``."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str, str], SeqRanges] = {}

    def __call__(self, records: Sequence[SpooledRecord]) -> None:
        for record in records:
            data = json.loads(record.data)
            key = (data["athlete_id"], data["session_id"])
            seen = self.sessions.get(key)
            if seen is None:
                seen = self.sessions[key] = SeqRanges(max_ranges=1000)  # one query's worth
            seen.add(int(data["seq"]))

    @property
    def count(self) -> int:
        return sum(seen.count for seen in self.sessions.values())


@dataclass(frozen=True)
class IndexCheck:
    """What the index held of the acknowledged samples when the catch-up ended."""

    acknowledged: int
    missing: int
    missing_runs: tuple[tuple[str, str, str], ...]  # (athlete, session, "3–5, 9")
    waited_s: float
    error: str | None = None  # the index could not be asked: everything counts as missing

    @property
    def indexed(self) -> int:
        return self.acknowledged - self.missing

    def line(self) -> str:
        """``N of M indexed, K missing (athlete/session: seq ranges)``."""
        text = f"{self.indexed} of {self.acknowledged} indexed, {self.missing} missing"
        if self.error:
            return f"{text} (the index did not answer: {self.error})"
        if self.missing_runs:
            text += " (" + "; ".join(f"{athlete}/{session}: {runs}"
                                     for athlete, session, runs in self.missing_runs) + ")"
        return text


def verify_indexed(settings: Settings, ledger: AckLedger, *, timeout_s: float = 60.0,
                   poll_s: float = 1.0, client: Any = None) -> IndexCheck:
    """Poll the index until it holds every acknowledged sample or ``timeout_s`` passes
    (blocking); the answer names the missing seq ranges per athlete session."""
    from hrnb.query import missing_seqs
    from hrnb.search_client import opensearch_client

    client = client or opensearch_client(settings)
    started = time.monotonic()
    while True:
        runs: list[tuple[str, str, str]] = []
        missing = 0
        error = None
        try:
            for (athlete, session), seen in ledger.sessions.items():
                found = missing_seqs(client, settings.index_name, athlete, session,
                                     seen.ranges()).df
                if len(found):
                    missing += int(found["count"].sum())
                    runs.append((athlete, session, ", ".join(
                        f"{a}" if a == b else f"{a}–{b}"
                        for a, b in zip(found["first_seq"], found["last_seq"], strict=True))))
        except HrnbError as exc:
            error, missing, runs = str(exc), ledger.count, []
        waited = time.monotonic() - started
        if not missing or waited >= timeout_s:
            return IndexCheck(ledger.count, missing, tuple(runs), round(waited, 1), error)
        time.sleep(poll_s)


class StreamSession:
    """Pumps one source into one producer and fans every item out to listeners.

    ``run()`` returns when the source ends or :meth:`stop` is called, after flushing the
    producer for up to ``flush_timeout_s``. Use it as a background task in a notebook::

        session = StreamSession(source, producer, listeners=[chart.update])
        task = asyncio.create_task(session.run())
        session.progress()          # any time
        await session.stop()        # or let the source end
        summary = await task
    """

    def __init__(
        self,
        source: HeartRateSource,
        producer: KinesisProducer,
        *,
        listeners: Iterable[Listener] = (),
        on_progress: ProgressCallback | None = None,
        progress_every_s: float = 1.0,
        flush_timeout_s: float = 30.0,
    ) -> None:
        if progress_every_s <= 0:
            raise ConfigError("progress_every_s must be positive", setting="progress_every_s")
        if flush_timeout_s < 0:
            raise ConfigError("flush_timeout_s must not be negative", setting="flush_timeout_s")
        self._source = source
        self._producer = producer
        self._listeners = list(listeners)
        self._on_progress = on_progress
        self._progress_every_s = progress_every_s
        self._flush_timeout_s = flush_timeout_s
        self._started_at: float | None = None
        self._ended_at: float | None = None
        self._stop_requested = False
        self._stopper: asyncio.Task[None] | None = None
        self._samples = 0
        self._submitted = 0
        self._invalid = 0
        self._refused = 0
        self._events = 0
        self._last_heart_rate: dict[str, int] = {}
        self._sessions: dict[str, None] = {}

    def add_listener(self, listener: Listener) -> None:
        """Also send every further item to ``listener`` (called on the event loop)."""
        self._listeners.append(listener)

    def progress(self) -> StreamProgress:
        """A snapshot; cheap enough for every progress tick."""
        start = self._started_at
        end = self._ended_at or time.monotonic()
        return StreamProgress(
            elapsed_s=0.0 if start is None else end - start,
            samples=self._samples,
            submitted=self._submitted,
            invalid=self._invalid,
            refused=self._refused,
            events=self._events,
            last_heart_rate_bpm=MappingProxyType(dict(self._last_heart_rate)),
            producer=self._producer.metrics(),
        )

    async def stop(self) -> None:
        """End the session: the source is closed, then ``run()`` flushes and returns."""
        self._stop_requested = True
        await self._source.aclose()

    def request_stop(self) -> None:
        """:meth:`stop` from synchronous code, e.g. a signal handler on the loop."""
        if self._stopper is None:
            self._stopper = asyncio.get_running_loop().create_task(self.stop())

    async def run(self) -> StreamSummary:
        """Stream until the source ends or :meth:`stop`; flush; summarise.

        A source failure or a ProducerError propagates after the flush: what was accepted stays
        in the spool either way.
        """
        if self._started_at is not None:
            raise RuntimeError("a StreamSession runs once; make a new one")
        self._started_at = time.monotonic()
        ticker = asyncio.create_task(self._tick()) if self._on_progress else None
        try:
            async for item in self._source:
                self._handle(item)
        finally:
            self._ended_at = time.monotonic()
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await self._source.aclose()
            metrics = await self._producer.flush(self._flush_timeout_s)
            self._report_progress()
        return StreamSummary(
            duration_s=self._ended_at - self._started_at,
            samples=self._samples,
            submitted=self._submitted,
            invalid=self._invalid,
            refused=self._refused,
            events=self._events,
            athletes=tuple(self._last_heart_rate),
            sessions=tuple(self._sessions),
            stopped=self._stop_requested,
            producer=metrics,
        )

    # --- internals --------------------------------------------------------------------------
    def _handle(self, item: Item) -> None:
        if isinstance(item, Sample):
            self._samples += 1
            self._last_heart_rate[item.athlete_id] = item.heart_rate
            self._sessions.setdefault(item.session_id)
            self._send(item)
        else:
            self._events += 1
            logger.info("%s %s: %s %s", item.athlete_id, item.device_id, item.kind, item.detail)
        for listener in list(self._listeners):
            try:
                listener(item)
            except Exception:  # a broken chart must not stop the stream
                logger.exception("listener %r failed; it gets no further items", listener)
                self._listeners.remove(listener)

    def _send(self, sample: Sample) -> None:
        try:
            record = sample.to_record(sent_at=datetime.now(UTC))
        except RecordError as exc:
            self._invalid += 1
            logger.warning(
                "sample %s/%s/%s is not a valid record (%s); skipped, the stream goes on",
                sample.athlete_id,
                sample.session_id,
                sample.seq,
                exc,
            )
            return
        try:
            self._producer.submit(record)
        except SpoolFullError as exc:
            if self._refused == 0 or self._refused % 1000 == 0:
                logger.warning("%s (%s samples refused so far)", exc, self._refused + 1)
            self._refused += 1
            return
        self._submitted += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._progress_every_s)
            self._report_progress()

    def _report_progress(self) -> None:
        if self._on_progress is None:
            return
        try:
            self._on_progress(self.progress())
        except Exception:
            logger.exception("the progress callback failed")


# --- the ``hrnb stream`` command ---------------------------------------------------------------
@dataclass(frozen=True)
class StreamOptions:
    """The flags of ``hrnb stream``. Source flags are checked by :func:`hrnb.sources.from_spec`."""

    source: str = "simulated"
    duration_s: float | None = None
    athletes: int = 1
    athlete_id: str | None = None
    rate_hz: float = 1.0
    speed: float | None = 1.0
    seed: int | None = None
    flush_timeout_s: float = 30.0
    spool_path: Path | None = None
    verify: bool = True  # wait for the index and say what it holds (--no-verify: skip)
    verify_timeout_s: float = 60.0


def parse_stream_options(
    source: str | None = None,
    *,
    duration_s: float | None = None,
    athletes: int | None = None,
    athlete_id: str | None = None,
    rate_hz: float | None = None,
    speed: float | None = 1.0,
    seed: int | None = None,
    flush_timeout_s: float = 30.0,
    spool_path: str | Path | None = None,
    verify: bool = True,
    verify_timeout_s: float = 60.0,
) -> StreamOptions:
    """Turn CLI values (None: flag not given) into checked options; ConfigError names the flag.

    Nothing connects or writes. The source's own flags are checked by building (not starting)
    the source: :func:`hrnb.sources.from_spec` is the one place that knows them.
    """
    if flush_timeout_s is None or not 0 <= flush_timeout_s <= 24 * 3600:
        raise ConfigError(
            f"--flush-timeout must be 0..86400 seconds, got {flush_timeout_s!r}",
            setting="--flush-timeout",
        )
    if not 0 <= verify_timeout_s <= 3600:
        raise ConfigError(
            f"--verify-timeout must be 0..3600 seconds, got {verify_timeout_s!r}",
            setting="--verify-timeout",
        )
    if spool_path is not None and Path(spool_path).is_dir():
        raise ConfigError(
            f"--spool {spool_path} is a directory; give a file path such as "
            f"{Path(spool_path) / 'spool.sqlite3'}",
            setting="--spool",
        )
    options = StreamOptions(
        source=(source or "simulated").strip(),
        duration_s=duration_s,
        athletes=1 if athletes is None else athletes,
        athlete_id=athlete_id,
        rate_hz=1.0 if rate_hz is None else rate_hz,
        speed=speed,
        seed=seed,
        flush_timeout_s=flush_timeout_s,
        spool_path=None if spool_path is None else Path(spool_path).expanduser(),
        verify=verify,
        verify_timeout_s=verify_timeout_s,
    )
    open_source(options)  # a constructed source does nothing until iterated
    return options


def open_source(options: StreamOptions) -> HeartRateSource:
    """The source the options name (not started: iterate it to start)."""
    return from_spec(
        options.source,
        athletes=options.athletes,
        athlete_id=options.athlete_id,
        rate_hz=options.rate_hz,
        duration_s=options.duration_s,
        speed=options.speed,
        seed=options.seed,
    )


async def run_stream(
    options: StreamOptions,
    settings: Settings,
    *,
    on_progress: ProgressCallback | None = None,
    listeners: Iterable[Listener] = (),
    client: KinesisClient | None = None,
    progress_every_s: float = 1.0,
) -> StreamSummary:
    """``hrnb stream``: check that set-up made the stream and a trigger reads it, stream, then
    (unless ``options.verify`` is off) wait, bounded, for the index to hold every sample Kinesis
    acknowledged and say which it does not.

    Ctrl-C (SIGINT) ends the session cleanly: the source closes, the producer flushes, the
    summary comes back; a second Ctrl-C interrupts at once (unsent records stay spooled).
    """
    source = open_source(options)
    client = client or kinesis_client(settings)
    await asyncio.to_thread(check_stream_ready, settings, client=client)
    ledger = AckLedger()
    producer = KinesisProducer.from_settings(
        settings, client=client, spool_path=options.spool_path, on_acknowledged=ledger
    )
    await producer.start()
    try:
        session = StreamSession(
            source,
            producer,
            listeners=listeners,
            on_progress=on_progress,
            progress_every_s=progress_every_s,
            flush_timeout_s=options.flush_timeout_s,
        )
        with _stop_on_interrupt(session):
            summary = await session.run()
    finally:
        await producer.close(timeout=0)  # run() flushed for flush_timeout_s already
    if not options.verify:
        return summary
    check = await asyncio.to_thread(verify_indexed, settings, ledger,
                                    timeout_s=options.verify_timeout_s)
    return replace(summary, index_check=check)


@contextlib.contextmanager
def _stop_on_interrupt(session: StreamSession) -> Iterator[None]:
    loop = asyncio.get_running_loop()

    def first_interrupt() -> None:
        logger.warning("stopping: flushing what was accepted (Ctrl-C again to quit at once)")
        loop.remove_signal_handler(signal.SIGINT)
        session.request_stop()

    try:
        loop.add_signal_handler(signal.SIGINT, first_interrupt)
        installed = True
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        installed = False
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)


# --- presenters --------------------------------------------------------------------------------
def format_progress(progress: StreamProgress) -> str:
    """One line for the terminal, e.g. ``00:42  126 samples  sent 120  spooled 6 ...``."""
    producer = progress.producer
    minutes, seconds = divmod(int(progress.elapsed_s), 60)
    heart_rates = " ".join(
        f"{athlete} {bpm}" for athlete, bpm in list(progress.last_heart_rate_bpm.items())[:4]
    )
    more = len(progress.last_heart_rate_bpm) - 4
    parts = [
        f"{minutes:02d}:{seconds:02d}",
        f"{progress.samples} samples",
        f"sent {producer.sent}",
        f"spooled {producer.spooled}",
        f"queue {producer.queue_depth}",
        f"retried {producer.retried}",
        f"p95 {_ms(producer.send_latency)}",
    ]
    if progress.invalid:
        parts.append(f"invalid {progress.invalid}")
    if progress.refused or producer.spool_full:
        parts.append(f"REFUSED {progress.refused} (spool full)")
    if heart_rates:
        parts.append(f"bpm: {heart_rates}" + (f" +{more} more" if more > 0 else ""))
    return "  ".join(parts)


def format_summary(summary: StreamSummary) -> str:
    """A few lines for the end of ``hrnb stream``."""
    producer = summary.producer
    why = "stopped" if summary.stopped else "source ended"
    lines = [
        f"streamed {summary.duration_s:.1f} s ({why}): {summary.samples} samples from "
        f"{len(summary.athletes)} athlete(s), {summary.events} connection event(s)",
        f"kinesis: {producer.sent} sent in {producer.calls} calls, {producer.retried} retried, "
        f"{producer.failed} failed attempts"
        + (f" ({_codes(producer.errors)})" if producer.errors else ""),
        f"latency: send p50 {_ms(producer.send_latency, 'p50_ms')} / "
        f"p95 {_ms(producer.send_latency)} / p99 {_ms(producer.send_latency, 'p99_ms')}, "
        f"delivery p95 {_ms(producer.delivery_latency)}",
    ]
    if summary.invalid:
        lines.append(f"{summary.invalid} invalid samples were skipped (see the log)")
    if summary.refused:
        lines.append(f"{summary.refused} samples were refused because the spool was full")
    if summary.unsent:
        lines.append(
            f"{summary.unsent} records are not acknowledged yet: they stay in the spool and "
            "are sent first by the next 'hrnb stream'"
        )
    else:
        lines.append("every accepted record was acknowledged by Kinesis")
    check = summary.index_check
    if check is None:
        lines.append("index: not checked (--no-verify)")
    else:
        lines.append(f"index: {check.line()}"
                     + (f" after waiting {check.waited_s:.0f} s" if check.missing else ""))
    return "\n".join(lines)


def _ms(latency: LatencyPercentiles, field: str = "p95_ms") -> str:
    value = getattr(latency, field)
    return "-" if value is None else f"{value:.0f} ms"


def _codes(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{code} x{count}" for code, count in sorted(errors.items()))
