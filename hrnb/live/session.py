"""A live session as a notebook runs it, and the set-up's end-to-end check.

The notebook needs three things the streaming pump (:mod:`hrnb.stream.session`) and the dashboard
(:mod:`hrnb.live`) do not decide on their own:

* :class:`LiveSession` runs source → producer → Kinesis with the dashboard as listener, as a
  background task on the kernel's running loop, so every cell stays usable while it streams;
  ``await live.stop()`` (the stop cell) or ``await live.wait()`` (a headless run with a set
  duration) ends it cleanly, flushing the producer.
* :meth:`LiveSession.finish` waits until the index holds every sample seen live (the indexed
  panel shows it catching up) and builds a :class:`SessionReport`: samples streamed, indexed,
  missing, latency percentiles per hop, alerts. :func:`write_report` stores it as the JSON file
  that ``make demo`` prints with :func:`format_report`.
* :func:`verify_pipeline` sends check records until one comes back from the index, proving the
  stream, the trigger, the function and the index work together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrnb import query
from hrnb.boundary import file_errors, opensearch_errors
from hrnb.config import Settings
from hrnb.errors import HrnbError, ProvisionError
from hrnb.live.dashboard import LiveDashboard
from hrnb.live.indexed import IndexedStatus, indexed_rows
from hrnb.search_client import opensearch_client
from hrnb.sources.base import HeartRateSource, new_session_id, utc_now_ms
from hrnb.stream.producer import KinesisProducer, check_stream_ready
from hrnb.stream.session import StreamProgress, StreamSession, StreamSummary
from hrnb.wire.records import document_id, make_record

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

logger = logging.getLogger(__name__)

#: The JSON summary a headless live session writes into its output directory.
SUMMARY_FILE = "live_session_summary.json"
#: The athlete id of :func:`verify_pipeline`'s check records (filter it out of statistics).
CHECK_ATHLETE_ID = "pipeline-check"


# --- the report ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AthleteReport:
    """One athlete's session: what the live side saw and what the index holds."""

    athlete_id: str
    session_id: str
    samples: int  # samples the dashboard received
    indexable: int  # of those, indexed as data: plausible or no skin contact (the rest dead-letter)
    indexed: int  # documents in the index for this session
    missing: int  # indexable samples the index does not hold
    missing_runs: str  # e.g. "50–54, 61"


@dataclass(frozen=True)
class SessionReport:
    """How a live session went end to end; ``to_json()`` is what the summary file holds."""

    source: str
    stream: str
    index: str
    duration_s: float
    samples_streamed: int  # samples read from the source
    records_sent: int  # acknowledged by Kinesis
    unsent: int  # accepted but not acknowledged: kept in the spool for the next run
    indexed: int
    missing: int
    caught_up: bool  # the index held every indexable sample before the wait ran out
    athletes: tuple[AthleteReport, ...]
    latency_ms: Mapping[str, Mapping[str, float | int | None]]  # hop -> p50/p95/p99/max/samples
    alerts: tuple[Mapping[str, Any], ...]  # threshold episodes found in the index

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_ms"] = {hop: dict(row) for hop, row in self.latency_ms.items()}
        data["alerts"] = [dict(alert) for alert in self.alerts]
        return data


def _finite(value: Any) -> float | int | None:
    """A JSON-safe number: NaN (no samples) becomes None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def write_report(report: SessionReport, path: str | Path,
                 exports: Sequence[str | Path] = ()) -> Path:
    """The summary JSON (with the exported files' paths) for ``make demo`` and the tests."""
    target = Path(path)
    data = report.to_json()
    data["files"] = [str(Path(file).resolve()) for file in exports]
    data["written_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    with file_errors("write the session summary", target):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return target


def format_report(data: Mapping[str, Any]) -> str:
    """A few lines from a summary file's contents, as ``make demo`` prints them."""
    end_to_end = data["latency_ms"].get("measured→indexed", {})

    def ms(key: str) -> str:
        value = end_to_end.get(key)
        return "-" if value is None else f"{value:.0f} ms"

    lines = [
        f"streamed {data['samples_streamed']} samples in {data['duration_s']:.0f} s "
        f"from {len(data['athletes'])} athlete(s) ({data['source']})",
        f"kinesis: {data['records_sent']} acknowledged, {data['unsent']} unsent",
        f"{data['indexed']} of {sum(a['indexable'] for a in data['athletes'])} indexed, "
        f"{data['missing']} missing"
        + "".join(f" ({a['athlete_id']}/{a['session_id']}: {a['missing_runs']})"
                  for a in data["athletes"] if a["missing"])
        + ("" if data["caught_up"] else " (the index had not caught up when the wait ended)"),
        f"measured→indexed: p50 {ms('p50')}, p95 {ms('p95')}, p99 {ms('p99')}",
        # Runs above the threshold, as the data shows them; the notified episodes (sustained,
        # with a re-arm level) are what 'hrnb alerts' lists.
        f"above the threshold: {len(data['alerts'])} run(s) (notified episodes: 'hrnb alerts')"
        + "".join(f"\n  {a['athlete_id']}: {a['duration_s']:.0f} s, peak {a['peak_bpm']} bpm"
                  for a in data["alerts"]),
    ]
    lines += [f"file: {file}" for file in data.get("files", [])]
    return "\n".join(lines)


# --- the live session ----------------------------------------------------------------------------
class LiveSession:
    """Source → Kinesis with the dashboard listening, as a background task of the notebook.

    ::

        live = LiveSession(settings, source, dashboard)
        await live.start()              # returns at once; the cell is free again
        live.progress()                 # any time
        await live.stop()               # the stop cell (or: await live.wait())
        report = await live.finish()    # wait for the index, then the numbers
    """

    def __init__(
        self,
        settings: Settings,
        source: HeartRateSource,
        dashboard: LiveDashboard,
        *,
        producer: KinesisProducer | None = None,
        flush_timeout_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.source = source
        self.dashboard = dashboard
        self.producer = producer or KinesisProducer.from_settings(settings)
        self.stream = StreamSession(source, self.producer, listeners=[dashboard],
                                    flush_timeout_s=flush_timeout_s)
        self.summary: StreamSummary | None = None
        self._task: asyncio.Task[StreamSummary] | None = None
        self._closed = False

    async def start(self) -> None:
        """Check that set-up made the stream and a trigger reads it, start the producer, the
        dashboard's refresh and the pump; returns as soon as they run."""
        if self._task is not None:
            raise HrnbError("this live session was already started; make a new one")
        await asyncio.to_thread(check_stream_ready, self.settings)
        await self.producer.start()
        try:
            await self.dashboard.start()
        except BaseException:
            self._closed = True
            await self.producer.close()
            raise
        self._task = asyncio.get_running_loop().create_task(self.stream.run(),
                                                            name="hrnb-live-session")
        logger.info("live session streaming to %s", self.producer.stream_name)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def progress(self) -> StreamProgress:
        """Samples read, records submitted, producer metrics so far."""
        return self.stream.progress()

    async def wait(self, timeout_s: float | None = None) -> StreamSummary:
        """Until the source ends by itself (a set duration, the end of a replay); then as
        :meth:`stop`. TimeoutError after ``timeout_s`` leaves the session running."""
        done, _ = await asyncio.wait({self._started()}, timeout=timeout_s)
        if not done:
            raise TimeoutError(f"the source is still streaming after {timeout_s} s")
        return await self.stop()

    async def stop(self) -> StreamSummary:
        """End the session: close the source, flush and close the producer (what Kinesis has
        not acknowledged stays in the spool). Safe to call again."""
        task = self._started()
        if not task.done():
            await self.stream.stop()
        try:
            self.summary = await task
        finally:
            if not self._closed:
                self._closed = True
                await self.producer.close(timeout=0)  # the session flushed already
        return self.summary

    async def catch_up(self, timeout_s: float = 60.0, poll_s: float = 1.0) -> IndexedStatus:
        """Poll the index (the panel shows each poll) until it holds every indexable sample
        the dashboard saw, or ``timeout_s`` passes; returns the last poll."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.dashboard.poll_index()
            if _caught_up(status, self.dashboard) or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(poll_s)

    async def finish(self, catch_up_s: float = 60.0) -> SessionReport:
        """Stop if still running, wait for the index to catch up, stop the dashboard's
        refresh, and report."""
        summary = await self.stop()
        status = await self.catch_up(catch_up_s)
        await self.dashboard.stop()
        return await asyncio.to_thread(self._report, summary, _caught_up(status, self.dashboard))

    def _started(self) -> asyncio.Task[StreamSummary]:
        if self._task is None:
            raise HrnbError("the live session has not started: run 'await live.start()' first")
        return self._task

    def _report(self, summary: StreamSummary, caught_up: bool) -> SessionReport:
        client = self.dashboard.client or opensearch_client(self.settings)
        index = self.settings.index_name
        model = self.dashboard.model
        # No grace period: the session is over, every sample seen should be indexed by now.
        rows = indexed_rows(client, index, model.progress(self.dashboard.clock(), grace_s=0.0))
        athletes = [
            AthleteReport(
                athlete_id=row.athlete_id,
                session_id=row.session_id,
                samples=model.athletes[row.athlete_id].samples_seen,
                indexable=row.seen_live,
                indexed=row.indexed,
                missing=row.missing,
                missing_runs=row.missing_runs,
            )
            for row in rows
        ]
        sessions = [a.session_id for a in athletes]
        latency: dict[str, dict[str, float | int | None]] = {}
        alerts: list[dict[str, Any]] = []
        if sessions:
            for row in query.latency(client, index, session_id=sessions,
                                     searchable=self.dashboard.probe).df.to_dict("records"):
                latency[row["hop"]] = {
                    "p50": _finite(row["p50_ms"]), "p95": _finite(row["p95_ms"]),
                    "p99": _finite(row["p99_ms"]), "max": _finite(row["max_ms"]),
                    "samples": _finite(row["samples"])}
            crossings = query.threshold_crossings(client, self.settings, session_id=sessions).df
            alerts = [
                {"athlete_id": row["athlete_id"], "start": row["start"].isoformat(),
                 "end": row["end"].isoformat(), "duration_s": float(row["duration_s"]),
                 "peak_bpm": int(row["peak_bpm"])}
                for row in crossings.to_dict("records")
            ]
        return SessionReport(
            source=type(self.source).__name__,
            stream=self.producer.stream_name,
            index=index,
            duration_s=round(summary.duration_s, 3),
            samples_streamed=summary.samples,
            records_sent=summary.producer.sent,
            unsent=summary.unsent,
            indexed=sum(a.indexed for a in athletes),
            missing=sum(a.missing for a in athletes),
            caught_up=caught_up,
            athletes=tuple(athletes),
            latency_ms=latency,
            alerts=tuple(alerts),
        )


def _caught_up(status: IndexedStatus, dashboard: LiveDashboard) -> bool:
    """Every athlete on screen has a row and the index holds all the samples it saw."""
    sessions = sum(1 for w in dashboard.model.athletes.values() if w.session_id is not None)
    return (status.error is None and len(status.rows) == sessions
            and all(row.indexed >= row.seen_live for row in status.rows))


# --- the set-up's check --------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineCheck:
    """A check record that went stream → function → index."""

    document_id: str
    records_sent: int  # check records sent before one came back (the trigger may start late)
    seconds: float  # from the first send until the document was found
    document: Mapping[str, Any]  # as indexed, with the function's kinesis_arrival/ingested_at


async def verify_pipeline(
    settings: Settings,
    *,
    timeout_s: float = 90.0,
    resend_every_s: float = 5.0,
    client: OpenSearch | None = None,
) -> PipelineCheck:
    """Send a check record (athlete ``pipeline-check``) and wait until the index returns it.

    A further check record goes every ``resend_every_s`` until one arrives (one lost to a
    fault need not fail the check). ProvisionError when none does within ``timeout_s``.
    """
    client = client or opensearch_client(settings)
    session_id = new_session_id()
    started = time.monotonic()
    sent: list[str] = []
    async with KinesisProducer.from_settings(settings) as producer:
        while time.monotonic() - started < timeout_s:
            record = make_record(athlete_id=CHECK_ATHLETE_ID, session_id=session_id,
                                 device_id="hrnb-setup", seq=len(sent), timestamp=utc_now_ms(),
                                 heart_rate=60, sent_at=utc_now_ms())
            producer.submit(record)
            sent.append(document_id(record))
            await producer.flush(timeout=resend_every_s)
            resend_at = time.monotonic() + resend_every_s
            while time.monotonic() < min(resend_at, started + timeout_s):
                for doc_id in sent:
                    try:
                        with opensearch_errors(ProvisionError, "read the check record from",
                                               f"index {settings.index_name!r}"):
                            found = await asyncio.to_thread(client.get,
                                                            index=settings.index_name, id=doc_id)
                    except ProvisionError as exc:
                        if exc.code == "404":
                            continue
                        raise
                    return PipelineCheck(doc_id, len(sent), round(time.monotonic() - started, 3),
                                         found["_source"])
                await asyncio.sleep(0.5)
    where = ("is the local event source mapping poller running? ('hrnb local status'; "
             "its log is in the state directory)" if settings.is_local else
             f"see the function's log group {settings.log_group_name} and the trigger's state")
    raise ProvisionError(
        f"none of {len(sent)} check records reached index {settings.index_name!r} within "
        f"{timeout_s:.0f} s through stream {settings.stream_name} and function "
        f"{settings.function_name}: {where}",
        resource=settings.function_name,
    )
