"""What every heart-rate source yields, and the one interface they all share.

A source is an async iterable of :class:`Sample` and :class:`ConnectionEvent` items. It runs
its work in a background task that feeds a queue (the pattern Bleak recommends for notification
callbacks), so iteration never blocks the event loop — Jupyter's included — and
:meth:`HeartRateSource.aclose` can stop it from any task, even while another task waits for the
next item.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from hrnb.hrm import Measurement
from hrnb.wire.records import Record, make_record

logger = logging.getLogger(__name__)

#: Who a single-athlete source (watch, emulated watch, replay) measures unless told otherwise.
DEFAULT_ATHLETE_ID = "athlete-1"

EventKind = Literal["connected", "disconnected", "reconnected", "contact_lost", "contact_restored"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement as received: who, which session, its place in it, and when (UTC, ms)."""

    athlete_id: str
    session_id: str
    device_id: str
    seq: int  # per session, from 0, no gaps while the source runs
    received_at: datetime  # UTC, millisecond precision
    measurement: Measurement

    @property
    def heart_rate(self) -> int:
        """Beats per minute."""
        return self.measurement.heart_rate

    def to_record(self, sent_at: datetime | None = None) -> Record:
        """The validated wire record for this sample (RecordError if a field is out of range)."""
        measurement = self.measurement
        return make_record(
            athlete_id=self.athlete_id,
            session_id=self.session_id,
            device_id=self.device_id,
            seq=self.seq,
            timestamp=self.received_at,
            heart_rate=measurement.heart_rate,
            rr_intervals_ms=measurement.rr_intervals_ms,
            sensor_contact=measurement.sensor_contact,
            energy_expended=measurement.energy_expended,
            sent_at=sent_at,
        )


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A change in what the source can deliver; a chart shows "—" after ``disconnected``."""

    kind: EventKind
    at: datetime  # UTC
    athlete_id: str
    device_id: str
    detail: str = ""


def to_utc_ms(moment: datetime) -> datetime:
    """``moment`` in UTC, truncated to milliseconds (the wire format's precision)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no timezone; hrnb times are UTC")
    utc = moment.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def utc_now_ms() -> datetime:
    """The current UTC time, truncated to milliseconds."""
    return to_utc_ms(datetime.now(UTC))


def session_start(span_s: float | None, speed: float | None) -> datetime:
    """When a session of ``span_s`` seconds played ``speed`` times faster should start.

    Played faster than real time, a session that starts now would carry timestamps from the
    future (which the pipeline refuses), so it is placed to end no later than the wall clock.
    An endless session (``span_s`` None) starts now.
    """
    now = utc_now_ms()
    if span_s is None or (speed is not None and speed <= 1.0):
        return now
    lead_s = span_s if speed is None else span_s * (1.0 - 1.0 / speed)
    return to_utc_ms(now - timedelta(seconds=lead_s))


def new_session_id() -> str:
    """A session id that sorts by start time and cannot collide: ``20261129T061000Z-1a2b3c4d``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


class Session:
    """One athlete's session on one device: numbers its samples and notices contact changes."""

    def __init__(self, athlete_id: str, device_id: str, session_id: str | None = None) -> None:
        self.athlete_id = athlete_id
        self.device_id = device_id
        self.session_id = session_id or new_session_id()
        self.next_seq = 0
        self._contact: bool | None = None

    def items(
        self, measurement: Measurement, received_at: datetime
    ) -> list[Sample | ConnectionEvent]:
        """The sample for ``measurement``, preceded by a contact event when contact changed."""
        items: list[Sample | ConnectionEvent] = []
        contact = measurement.sensor_contact
        if contact is not None and contact != self._contact:
            if contact is False:
                detail = "sensor reports no skin contact"
                items.append(self.event("contact_lost", received_at, detail))
            elif self._contact is False:
                items.append(self.event("contact_restored", received_at, "skin contact again"))
        if contact is not None:
            self._contact = contact
        items.append(
            Sample(
                self.athlete_id,
                self.session_id,
                self.device_id,
                self.next_seq,
                received_at,
                measurement,
            )
        )
        self.next_seq += 1
        return items

    def event(self, kind: EventKind, at: datetime, detail: str = "") -> ConnectionEvent:
        return ConnectionEvent(kind, at, self.athlete_id, self.device_id, detail)


_END = object()


class HeartRateSource(abc.ABC):
    """Async iterable of samples and connection events; single use; ``aclose`` stops it.

    Subclasses implement :meth:`_produce`, which hands items to :meth:`_emit` and returns when
    the source has nothing more to give; an exception it raises reaches the consumer after every
    item emitted before it. Use ``async with source:`` or call ``await source.aclose()``.
    """

    #: Items waiting for the consumer before :meth:`_emit` pauses the producer (backpressure).
    max_pending = 1024

    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] | None = None
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: Exception | None = None
        self._finished = False

    @abc.abstractmethod
    async def _produce(self) -> None:
        """Emit items until the source ends; runs as a task, cancelled by :meth:`aclose`."""

    def _emit_nowait(self, item: Sample | ConnectionEvent) -> None:
        """Hand one item to the consumer without waiting (from callbacks: nothing is dropped)."""
        assert self._queue is not None
        self._queue.put_nowait(item)

    async def _emit(self, item: Sample | ConnectionEvent) -> None:
        """Hand one item to the consumer; pause while ``max_pending`` items wait unread."""
        assert self._queue is not None
        self._queue.put_nowait(item)
        if self._queue.qsize() >= self.max_pending:
            self._room.clear()
            await self._room.wait()

    def _start(self) -> asyncio.Queue[object]:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"hrnb-{type(self).__name__}"
            )
        return self._queue

    async def _run(self) -> None:
        assert self._queue is not None
        try:
            await self._produce()
        except Exception as exc:  # handed to the consumer, who sees it after earlier items
            self._failure = exc
        finally:
            self._queue.put_nowait(_END)

    def __aiter__(self) -> HeartRateSource:
        return self

    async def __anext__(self) -> Sample | ConnectionEvent:
        if self._finished:
            raise StopAsyncIteration
        queue = self._start()
        item = await queue.get()
        if not self._room.is_set() and queue.qsize() <= self.max_pending // 2:
            self._room.set()
        if item is _END:
            self._finished = True
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            raise StopAsyncIteration
        return item  # type: ignore[return-value]

    async def aclose(self) -> None:
        """Stop producing and release the device or file; iteration then ends. Idempotent."""
        task = self._task
        if task is None:
            self._finished = True
            return
        await cancel_and_wait(task)

    async def __aenter__(self) -> HeartRateSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end; re-raise only if *we* are being cancelled too."""
    if task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
