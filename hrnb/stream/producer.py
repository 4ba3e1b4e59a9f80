"""Streaming records to Kinesis without losing any: a batched, retrying, spooling producer.

::

    submit() ─queue─► spooler task ─► SQLite spool ─► sender task ─PutRecords─► Kinesis
                                          ▲                          │
                                          └──── remove acknowledged ◄┘

* ``submit()`` validates, encodes and queues; it never waits for the disk or the network, so a
  Bluetooth callback or a notebook cell is never stalled by Kinesis.
* The spooler writes each burst of queued records to the on-disk spool in one transaction
  (within milliseconds), so an outage, a crash or a kernel restart loses nothing: a new producer
  on the same spool sends the leftovers first.
* The sender puts the oldest spooled record of every partition key (athlete) into one
  ``PutRecords`` call, at most one per key. PutRecords does not keep the order of the entries of
  one request when some of them fail, so two records of one athlete in the same call could land
  out of order; with one per athlete, a failed entry simply stays the athlete's oldest record and
  goes again in the next call: only failed entries are resent and nothing overtakes them. A batch
  therefore spreads over athletes (up to 500 a call, 5 MiB a request), and it leaves after a
  short linger or as soon as every known athlete has a record in it.
* Throttling, internal failures, timeouts and connection errors back off with full jitter, per
  athlete (a failed call backs off all of its athletes), and retry for as long as it takes; only
  errors no retry can fix (missing stream, denied access) stop the producer, with the records
  still on disk.

All blocking work (boto3, SQLite) goes through ``asyncio.to_thread``, so the producer runs on
Jupyter's own loop as well as under ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from hrnb.boundary import aws_error, aws_errors
from hrnb.clients import aws_client
from hrnb.config import Settings
from hrnb.errors import ConfigError, ProducerError, ProvisionError, SpoolFullError
from hrnb.metrics import percentile
from hrnb.stream.spool import DEFAULT_MAX_BYTES, Spool, SpooledRecord, SpoolEntry
from hrnb.wire.records import encode_record, partition_key
from hrnb.wire.retry import backoff_s, is_retryable

if TYPE_CHECKING:  # AWS shapes from the boto3 type stubs (a dev dependency)
    from mypy_boto3_kinesis import KinesisClient
    from mypy_boto3_kinesis.type_defs import (
        PutRecordsOutputTypeDef,
        PutRecordsRequestEntryTypeDef,
    )

logger = logging.getLogger(__name__)

#: PutRecords service limits.
MAX_RECORDS_PER_REQUEST = 500
MAX_BYTES_PER_REQUEST = 5 * 1024 * 1024
#: Default wait for more athletes' records before a call leaves (the live path stays fast).
DEFAULT_LINGER_S = 0.05
_SPOOL_BURST = 1000
_LATENCY_WINDOW = 2048
_ROOM_AGAIN = 0.9  # a full spool accepts records again below this fraction of its bound
_WARN_EVERY_S = 10.0  # failures log a warning at most this often (info in between)


# --- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LatencyPercentiles:
    """Percentiles over the most recent observations (None until there is one)."""

    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    samples: int


@dataclass(frozen=True)
class ProducerMetrics:
    """A snapshot of what the producer did; the same fields every time."""

    submitted: int  # records accepted by submit()
    sent: int  # records Kinesis acknowledged
    retried: int  # re-sends of records after a failed attempt
    failed: int  # failed attempts: entries answered with an error, or all entries of a failed call
    spooled: int  # records on disk, not yet acknowledged
    queue_depth: int  # records accepted but not yet on disk
    calls: int  # PutRecords calls made
    errors: Mapping[str, int]  # failed attempts by error code or exception name
    send_latency: LatencyPercentiles  # PutRecords round trip
    delivery_latency: LatencyPercentiles  # accepted -> acknowledged, retries included
    spool_full: bool  # submit() refuses records until the backlog drains

    @property
    def unsent(self) -> int:
        """Accepted records Kinesis has not acknowledged yet (they are kept, not lost)."""
        return self.spooled + self.queue_depth


@dataclass(frozen=True)
class PutOutcome:
    """What one PutRecords call did to a batch."""

    acked: tuple[SpooledRecord, ...]
    failed: tuple[tuple[SpooledRecord, str], ...]  # (record, error code)
    call_error: str | None = None  # the whole call failed (retryably) with this code/exception


@dataclass(frozen=True)
class StreamStatus:
    """The Kinesis stream a producer writes to, as found before streaming."""

    stream_name: str
    status: str
    open_shards: int


# --- pure steps ---------------------------------------------------------------------------------
def plan_batch(
    heads: Iterable[SpooledRecord],
    *,
    max_records: int = MAX_RECORDS_PER_REQUEST,
    max_bytes: int = MAX_BYTES_PER_REQUEST,
) -> list[SpooledRecord]:
    """Oldest first, at most one record per partition key, within the request limits."""
    batch: list[SpooledRecord] = []
    keys: set[str] = set()
    size = 0
    for record in sorted(heads, key=lambda head: head.id):
        if record.partition_key in keys:
            continue
        if len(batch) == max_records or size + record.size > max_bytes:
            break
        batch.append(record)
        keys.add(record.partition_key)
        size += record.size
    return batch


def sort_out_response(batch: Sequence[SpooledRecord],
                      response: PutRecordsOutputTypeDef) -> PutOutcome:
    """Split a PutRecords answer into acknowledged and failed entries (same order as sent)."""
    results = response.get("Records", [])
    if len(results) != len(batch):
        raise ProducerError(
            f"PutRecords answered {len(results)} results for {len(batch)} records; "
            "cannot tell which were stored"
        )
    acked: list[SpooledRecord] = []
    failed: list[tuple[SpooledRecord, str]] = []
    for record, result in zip(batch, results, strict=True):
        code = result.get("ErrorCode")
        if code:
            failed.append((record, code))
        else:
            acked.append(record)
    return PutOutcome(acked=tuple(acked), failed=tuple(failed))


def percentiles(values: Iterable[float]) -> LatencyPercentiles:
    """p50/p95/p99 of ``values`` (milliseconds), as :func:`hrnb.metrics.percentile` defines."""
    ordered = sorted(values)
    if not ordered:
        return LatencyPercentiles(None, None, None, 0)
    return LatencyPercentiles(percentile(ordered, 0.50), percentile(ordered, 0.95),
                              percentile(ordered, 0.99), len(ordered))


# --- clients and the stream ---------------------------------------------------------------------
def kinesis_client(settings: Settings) -> KinesisClient:
    """A Kinesis client for the producer: no botocore retries (the producer owns the policy)."""
    return aws_client(
        settings,
        "kinesis",
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=3,
        read_timeout=15,
    )


def check_stream_ready(settings: Settings, *, client: KinesisClient | None = None,
                       lambda_client: Any = None) -> StreamStatus:
    """Refuse to stream unless set-up made the stream for this prefix and a trigger reads it.

    Only set-up creates streams (tagged with their prefix); a missing stream, one another
    prefix or tool made, or one no trigger reads (on the local target: that the local poller
    does not report reading) would take samples nobody indexes. One ProvisionError line says so
    and names ``hrnb setup``; it comes before any sample is accepted.
    """
    from hrnb.provision.base import OWNER_TAG
    from hrnb.provision.function import local_trigger_reading

    client = client or aws_client(settings, "kinesis")
    name = settings.stream_name
    where = f"prefix {settings.prefix!r}, {settings.target} target"

    def refuse(problem: str) -> ProvisionError:
        return ProvisionError(f"{problem} ({where}): run 'hrnb setup' first; nothing was sent",
                              resource=name)

    resource = f"Kinesis stream {name!r}"
    try:
        with aws_errors(ProvisionError, "kinesis", "look up", resource):
            summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
            tags = client.list_tags_for_stream(StreamName=name)["Tags"]
        with aws_errors(ProvisionError, "lambda", "list the triggers of", resource):
            lambda_client = lambda_client or aws_client(settings, "lambda")
            mappings = lambda_client.list_event_source_mappings(
                EventSourceArn=summary["StreamARN"])["EventSourceMappings"]
    except ProvisionError as exc:
        if exc.code == "ResourceNotFoundException":
            raise refuse(f"Kinesis stream {name!r} does not exist") from None
        raise
    owner = {tag["Key"]: tag["Value"] for tag in tags}.get(OWNER_TAG)
    if owner != settings.prefix:
        raise refuse(f"Kinesis stream {name!r} was not made by hrnb set-up for this prefix "
                     f"({OWNER_TAG}={owner!r}); remove it or choose another prefix")
    ours = [m for m in mappings if m["FunctionArn"].endswith(f":function:{settings.function_name}")]
    if settings.is_local:
        reading = any(local_trigger_reading(settings, m["UUID"]) for m in ours)
    else:
        reading = any(m.get("State") == "Enabled" for m in ours)
    if not reading:
        detail = ("no trigger of " + settings.function_name if not ours else
                  "the local poller does not read its trigger" if settings.is_local else
                  "its trigger is " + ", ".join(m.get("State", "?") for m in ours))
        raise refuse(f"nothing reads Kinesis stream {name!r}: {detail}")
    return StreamStatus(
        stream_name=name,
        status=summary["StreamStatus"],
        open_shards=summary.get("OpenShardCount", 0),
    )


# --- the producer -------------------------------------------------------------------------------
class KinesisProducer:
    """Batched, ordered-per-athlete, spooled delivery of wire records to one Kinesis stream.

    Use ``async with KinesisProducer.from_settings(settings) as producer:`` (or ``await
    start()`` / ``await close()`` from notebook cells) and call :meth:`submit` for each record.
    """

    def __init__(
        self,
        client: KinesisClient,
        stream_name: str,
        *,
        spool_path: str | Path,
        max_spool_bytes: int = DEFAULT_MAX_BYTES,
        linger_s: float = DEFAULT_LINGER_S,
        max_batch_records: int = MAX_RECORDS_PER_REQUEST,
        max_batch_bytes: int = MAX_BYTES_PER_REQUEST,
        backoff_base_s: float = 0.1,
        backoff_max_s: float = 5.0,
        seed: int | None = None,
        on_acknowledged: Callable[[Sequence[SpooledRecord]], None] | None = None,
    ) -> None:
        if not 0 <= linger_s <= 1:
            raise ConfigError(f"linger_s must be within 0..1 s, got {linger_s}", setting="linger_s")
        if not 1 <= max_batch_records <= MAX_RECORDS_PER_REQUEST:
            raise ConfigError(
                f"max_batch_records must be 1..{MAX_RECORDS_PER_REQUEST}, got {max_batch_records}",
                setting="max_batch_records",
            )
        if not 1 <= max_batch_bytes <= MAX_BYTES_PER_REQUEST:
            raise ConfigError(
                f"max_batch_bytes must be 1..{MAX_BYTES_PER_REQUEST}, got {max_batch_bytes}",
                setting="max_batch_bytes",
            )
        if not 0 < backoff_base_s <= backoff_max_s:
            raise ConfigError(
                f"need 0 < backoff_base_s <= backoff_max_s, got {backoff_base_s}, {backoff_max_s}",
                setting="backoff_base_s",
            )
        self.stream_name = stream_name
        self.spool_path = Path(spool_path)
        self._client = client
        self._max_spool_bytes = max_spool_bytes
        self._linger_s = linger_s
        self._max_batch_records = max_batch_records
        self._max_batch_bytes = max_batch_bytes
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._on_acknowledged = on_acknowledged  # told which records Kinesis acknowledged

        self._spool: Spool | None = None
        self._queue: asyncio.Queue[SpoolEntry] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._state = "new"  # new -> running -> closing -> closed
        self._error: ProducerError | None = None
        # Spool bound, counted at submit() over disk and queue: refusing starts when a record
        # does not fit and ends when the backlog is below _ROOM_AGAIN of the bound.
        self._refusing = False
        self._unspooled_bytes = 0
        # Records per partition key waiting in the spool; a key seen once stays known.
        self._pending: dict[str, int] = {}
        self._pending_total = 0
        self._unspooled = 0
        self._attempted: set[int] = set()
        # Per partition key: failed attempts in a row, and when (loop time) it may go again.
        self._failures_in_a_row: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._work = asyncio.Event()
        self._idle = asyncio.Event()
        # Counters.
        self._submitted = 0
        self._sent = 0
        self._retried = 0
        self._failed = 0
        self._calls = 0
        self._errors: Counter[str] = Counter()
        self._send_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._delivery_ms: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        client: KinesisClient | None = None,
        stream_name: str | None = None,
        spool_path: str | Path | None = None,
        **options: Any,
    ) -> KinesisProducer:
        """A producer for the configured stream and spool (``settings.spool_path``)."""
        return cls(
            client or kinesis_client(settings),
            stream_name or settings.stream_name,
            spool_path=spool_path or settings.spool_path,
            **options,
        )

    # --- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> KinesisProducer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the spool (resuming what an earlier run left) and start the background tasks."""
        if self._state != "new":
            raise ProducerError(f"this producer was already started (state: {self._state})")
        self._spool = await asyncio.to_thread(
            Spool, self.spool_path, max_bytes=self._max_spool_bytes, destination=self.destination
        )
        self._pending = await asyncio.to_thread(self._spool.counts_by_key)
        self._pending_total = sum(self._pending.values())
        if self._pending_total:
            logger.info(
                "resuming %s unacknowledged records from %s before new ones",
                self._pending_total,
                self.spool_path,
            )
            self._work.set()
        self._update_idle()
        self._state = "running"
        self._tasks = [
            asyncio.create_task(self._guarded(self._spool_forever()), name="hrnb-spooler"),
            asyncio.create_task(self._guarded(self._send_forever()), name="hrnb-sender"),
        ]

    async def persisted(self) -> None:
        """Wait until every record accepted so far is in the on-disk spool: from then on a
        crash of this process loses none of them. Raises ProducerError if the producer stopped
        for good first."""
        if self._state == "new":
            raise ProducerError("the producer has not started; nothing is being spooled")
        written = asyncio.ensure_future(self._queue.join())
        stopped = asyncio.ensure_future(self._idle.wait())  # also set when the producer fails
        try:
            await asyncio.wait({written, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            written.cancel()
            stopped.cancel()
        if self._error is not None:
            raise ProducerError(str(self._error)) from self._error

    async def flush(self, timeout: float | None = None) -> ProducerMetrics:
        """Wait until every accepted record is acknowledged, or ``timeout`` seconds pass.

        Returns the metrics either way (``unsent`` > 0 after a timeout: those records are kept).
        Raises ProducerError if the producer stopped for good.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        if self._error is not None:
            raise ProducerError(str(self._error)) from self._error
        return self.metrics()

    async def close(self, timeout: float | None = 30.0) -> ProducerMetrics:
        """Stop accepting, send what can be sent within ``timeout``, keep the rest on disk."""
        if self._state in ("new", "closed"):
            self._state = "closed"
            return self.metrics()
        self._state = "closing"
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
            spooler = self._tasks[0]
            if not spooler.done():
                # Whatever is still queued reaches the disk before the tasks stop.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._queue.join(), 10)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._spool is not None:
                await asyncio.to_thread(self._spool.close)
            self._state = "closed"
        final = self.metrics()
        if final.queue_depth:
            logger.error(
                "%s accepted records could not be written to the spool %s (see the error "
                "above) and are lost with this process",
                final.queue_depth,
                self.spool_path,
            )
        if final.spooled:
            logger.warning(
                "%s records are not acknowledged yet; they stay in %s and go first with the "
                "next producer on that spool",
                final.spooled,
                self.spool_path,
            )
        if self._error is not None:
            raise ProducerError(str(self._error)) from self._error
        return final

    # --- the public surface -----------------------------------------------------------------
    def submit(self, record: Mapping[str, Any]) -> None:
        """Accept one wire record for Kinesis and return at once.

        Raises RecordError (naming the field) for an invalid record, SpoolFullError while the
        spool is full, and ProducerError when the producer is not running or stopped for good.
        """
        if self._error is not None:
            raise ProducerError(str(self._error)) from self._error
        if self._state != "running":
            raise ProducerError(
                f"the producer is {self._state}; use 'async with' or await start() before submit()"
            )
        entry = SpoolEntry(
            partition_key=partition_key(record),
            data=encode_record(record),
            accepted_at=time.time(),
        )
        self._check_room(entry.size)
        self._queue.put_nowait(entry)
        self._submitted += 1
        self._unspooled += 1
        self._unspooled_bytes += entry.size
        self._idle.clear()

    def metrics(self) -> ProducerMetrics:
        """What the producer did so far (cheap: call it as often as the progress line needs)."""
        return ProducerMetrics(
            submitted=self._submitted,
            sent=self._sent,
            retried=self._retried,
            failed=self._failed,
            spooled=self._pending_total,
            queue_depth=self._unspooled,
            calls=self._calls,
            errors=MappingProxyType(dict(self._errors)),
            send_latency=percentiles(self._send_ms),
            delivery_latency=percentiles(self._delivery_ms),
            spool_full=self._refusing,
        )

    @property
    def destination(self) -> str:
        """The stream and endpoint this producer writes to (its spool is tied to it)."""
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        return f"stream {self.stream_name!r} at {endpoint or 'the default endpoint'}"

    @property
    def error(self) -> ProducerError | None:
        """Why the producer stopped for good, or None while it is healthy."""
        return self._error

    # --- background tasks -------------------------------------------------------------------
    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a background loop; a failure stops the producer with a ProducerError."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except ProducerError as exc:
            self._fail(exc)
        except Exception as exc:  # anything unexpected stops the producer, loudly
            failure = ProducerError(f"the producer stopped unexpectedly: {exc!r}")
            failure.__cause__ = exc
            self._fail(failure)

    def _fail(self, exc: ProducerError) -> None:
        logger.error("%s (%s records kept in %s)", exc, self._pending_total, self.spool_path)
        self._error = exc
        self._idle.set()

    def _update_idle(self) -> None:
        if self._unspooled == 0 and self._pending_total == 0:
            self._idle.set()
        else:
            self._idle.clear()

    async def _spool_forever(self) -> None:
        assert self._spool is not None
        while True:
            burst = [await self._queue.get()]
            while len(burst) < _SPOOL_BURST and not self._queue.empty():
                burst.append(self._queue.get_nowait())
            await self._store(burst)
            for _ in burst:
                self._queue.task_done()

    async def _store(self, burst: list[SpoolEntry]) -> None:
        """Append ``burst`` to the spool (submit() already made sure it fits)."""
        assert self._spool is not None
        await asyncio.to_thread(self._spool.append, burst)
        for entry in burst:
            self._pending[entry.partition_key] = self._pending.get(entry.partition_key, 0) + 1
        self._pending_total += len(burst)
        self._unspooled -= len(burst)
        self._unspooled_bytes -= sum(entry.size for entry in burst)
        self._work.set()

    def _spool_bytes_used(self) -> int:
        assert self._spool is not None
        return self._spool.stats().bytes + self._unspooled_bytes

    def _check_room(self, size: int) -> None:
        """Refuse (loudly, never by discarding) a record the spool bound has no room for."""
        used = self._spool_bytes_used()
        if not self._refusing and used + size <= self._max_spool_bytes:
            return
        if not self._refusing:
            self._refusing = True
            logger.warning(
                "the spool %s is full (%s of %s bytes): refusing new records until Kinesis "
                "acknowledges the backlog; nothing accepted is discarded",
                self.spool_path,
                used,
                self._max_spool_bytes,
            )
        raise SpoolFullError(
            f"the spool {self.spool_path} is full ({used} of {self._max_spool_bytes} bytes "
            "waiting for Kinesis): this record was refused, nothing accepted was discarded. "
            "Check the network and the stream, or give the producer a larger max_spool_bytes"
        )

    async def _send_forever(self) -> None:
        assert self._spool is not None
        calls_with_failures = 0
        last_warning_at = -_WARN_EVERY_S
        backlog = self._pending_total > 0
        while True:
            keys = await self._ready_keys_after_wait(linger=not backlog)
            heads = await asyncio.to_thread(self._spool.heads, keys)
            batch = plan_batch(
                heads, max_records=self._max_batch_records, max_bytes=self._max_batch_bytes
            )
            if not batch:
                raise ProducerError(
                    f"the spool {self.spool_path} holds none of the {self._pending_total} "
                    "records the producer counted; is another process editing it?"
                )
            outcome = await self._put(batch)
            if outcome.acked:
                await asyncio.to_thread(self._spool.remove, outcome.acked)
                self._acknowledge(outcome.acked)
            fatal = [code for _, code in outcome.failed if not is_retryable(code)]
            if fatal and outcome.call_error is None:
                raise ProducerError(
                    _fatal_message(self.stream_name, fatal[0], "in PutRecords entries")
                )
            if outcome.failed:
                calls_with_failures += 1
                self._back_off(outcome.failed)
                codes = Counter(code for _, code in outcome.failed)
                now = time.monotonic()
                loud = now - last_warning_at >= _WARN_EVERY_S
                last_warning_at = now if loud else last_warning_at
                (logger.warning if loud else logger.info)(
                    "%s of %s records not accepted by Kinesis (%s); retrying them with backoff "
                    "(%s calls in a row had failures, %s records kept in the spool)",
                    len(outcome.failed),
                    len(batch),
                    ", ".join(f"{code} x{n}" for code, n in codes.items()),
                    calls_with_failures,
                    self._pending_total,
                )
            elif calls_with_failures:
                logger.info(
                    "Kinesis accepts every record again after %s calls with failures",
                    calls_with_failures,
                )
                calls_with_failures = 0
            backlog = self._pending_total > 0

    def _ready_keys(self, now: float) -> list[str]:
        """Partition keys with a spooled record and no backoff running."""
        return [
            key
            for key, count in self._pending.items()
            if count and self._retry_at.get(key, 0.0) <= now
        ]

    async def _ready_keys_after_wait(self, *, linger: bool) -> list[str]:
        """Wait for a sendable record; then, unless behind, linger for other athletes' records."""
        loop = asyncio.get_running_loop()
        while not (ready := self._ready_keys(loop.time())):
            backoffs = [at for key, at in self._retry_at.items() if self._pending.get(key)]
            timeout = max(0.0, min(backoffs) - loop.time()) if backoffs else None
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), timeout)
        if not linger:
            return ready
        deadline = loop.time() + self._linger_s
        while len(ready) < min(self._max_batch_records, len(self._pending)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._work.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._work.wait(), remaining)
            ready = self._ready_keys(loop.time())
        return ready

    def _back_off(self, failed: Sequence[tuple[SpooledRecord, str]]) -> None:
        """Count failures and delay each failed athlete's next attempt (full jitter)."""
        self._failed += len(failed)
        self._errors.update(code for _, code in failed)
        now = asyncio.get_running_loop().time()
        for record, _ in failed:
            key = record.partition_key
            self._failures_in_a_row[key] = self._failures_in_a_row.get(key, 0) + 1
            self._retry_at[key] = now + backoff_s(
                self._failures_in_a_row[key],
                base_s=self._backoff_base_s,
                max_s=self._backoff_max_s,
                rng=self._rng,
            )

    async def _put(self, batch: list[SpooledRecord]) -> PutOutcome:
        """One PutRecords call; a failed call counts as every entry failed (if retryable)."""
        self._retried += sum(1 for record in batch if record.id in self._attempted)
        self._attempted.update(record.id for record in batch)
        entries: list[PutRecordsRequestEntryTypeDef] = [
            {"Data": record.data, "PartitionKey": record.partition_key} for record in batch
        ]
        self._calls += 1
        started = time.perf_counter()
        try:
            response = await asyncio.to_thread(
                self._client.put_records, StreamName=self.stream_name, Records=entries
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "Unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if not is_retryable(code, status):
                raise ProducerError(_fatal_message(self.stream_name, code, str(exc)),
                                    service="kinesis", action="put records to", code=code,
                                    resource=self.stream_name) from exc
        except (BotoConnectionError, HTTPClientError) as exc:  # retried, see the module doc
            code = type(exc).__name__
        except BotoCoreError as exc:  # no credentials or region: no retry can fix it
            raise aws_error(exc, ProducerError, "kinesis", "put records to",
                            f"stream {self.stream_name!r}") from exc
        else:
            self._send_ms.append((time.perf_counter() - started) * 1000)
            return sort_out_response(batch, response)
        return PutOutcome(
            acked=(), failed=tuple((record, code) for record in batch), call_error=code
        )

    def _acknowledge(self, records: Sequence[SpooledRecord]) -> None:
        now = time.time()
        for record in records:
            self._pending[record.partition_key] -= 1
            self._failures_in_a_row.pop(record.partition_key, None)
            self._retry_at.pop(record.partition_key, None)
            self._attempted.discard(record.id)
            self._delivery_ms.append(max(0.0, now - record.accepted_at) * 1000)
        self._pending_total -= len(records)
        self._sent += len(records)
        if self._on_acknowledged is not None:
            self._on_acknowledged(records)
        if self._refusing and self._spool_bytes_used() < _ROOM_AGAIN * self._max_spool_bytes:
            self._refusing = False
            logger.warning("the spool %s has room again; accepting records", self.spool_path)
        self._update_idle()


def _fatal_message(stream_name: str, code: str, detail: str) -> str:
    if code == "ResourceNotFoundException":
        hint = "the stream does not exist: run 'hrnb setup'"
    elif code in ("AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException"):
        hint = "the credentials may not write to this stream: check them and the IAM policy"
    else:
        hint = "a retry cannot fix this"
    return (
        f"Kinesis rejected records for stream {stream_name!r} with {code} ({detail}); {hint}. "
        "Unacknowledged records stay in the spool for the next producer"
    )
