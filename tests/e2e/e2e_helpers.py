"""The pieces of the end-to-end fault suite: one provisioned pipeline, its poller process, a
streaming session with the live view listening, and the checks of what reached OpenSearch.

Fixtures live in ``conftest.py``; the tests and the fixtures share these classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opensearchpy import helpers
from support import put_payloads, read_shard

from hrnb.config import Settings
from hrnb.live import DASH, LiveModel
from hrnb.local.poller import MappingStatus
from hrnb.provision.state import read_esm_status as read_status
from hrnb.query import missing_seqs
from hrnb.sources import ConnectionEvent, HeartRateSource, Sample
from hrnb.stream.producer import KinesisProducer, kinesis_client
from hrnb.stream.session import StreamSession, StreamSummary, format_progress
from hrnb.wire.records import decode_record

Key = tuple[str, str, int]  # (athlete_id, session_id, seq): a sample's identity and its _id

#: How long indexing may take once the source stopped (the poller backs off up to 30 s).
INDEXING_TIMEOUT_S = 60.0


def say(message: str) -> None:
    """Progress of long steps (shown with ``pytest -s`` and in the report of a failed test)."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {message}", flush=True)


def key_of(item: Sample | Mapping[str, Any]) -> Key:
    if isinstance(item, Sample):
        return (item.athlete_id, item.session_id, item.seq)
    return (item["athlete_id"], item["session_id"], int(item["seq"]))


# --- the poller: python -m hrnb.local.poller ------------------------------------------------
class PollerProcess:
    """The local event source mapping for one function (or, ``every_prefix``, for every prefix
    set up with the settings' state directory, as ``hrnb local up`` runs it), as its own
    process (restartable)."""

    def __init__(self, settings: Settings, log_path: Path, *, every_prefix: bool = False) -> None:
        self.settings = settings
        self.log_path = log_path
        self.every_prefix = every_prefix
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        settings = self.settings
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hrnb.local.poller", "--state-dir", str(settings.state_dir),
                 "--aws-endpoint-url", str(settings.resolved_aws_endpoint_url),
                 "--region", settings.region, "--poll-interval", "0.1",
                 *([] if self.every_prefix else ["--function", settings.function_name])],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM finishes the invocation in flight and checkpoints first)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @property
    def esm_dir(self) -> Path:
        return self.settings.state_dir / "esm"

    def mapping(self) -> MappingStatus | None:
        status = read_status(self.settings.state_dir)
        if not status or not status["mappings"]:
            return None
        return status["mappings"][0]

    def counter(self, name: str) -> int:
        """A per-shard counter of the status file, summed over the shards."""
        mapping = self.mapping()
        return sum(shard[name] for shard in mapping["shards"]) if mapping else 0  # type: ignore[literal-required]

    def checkpoint_path(self, mapping_uuid: str) -> Path:
        return self.esm_dir / f"{mapping_uuid}.json"

    def discarded(self, mapping_uuid: str) -> list[dict[str, Any]]:
        """Records the poller gave up on (retries exhausted or too old): must stay empty."""
        path = self.esm_dir / f"{mapping_uuid}-discarded.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def batches(self) -> list[dict[str, Any]]:
        """The handler's own per-invocation summaries, from the function's log."""
        log = self.settings.state_dir / "lambda-logs" / f"{self.settings.function_name}.log"
        if not log.exists():
            return []
        entries = (json.loads(line) for line in log.read_text().splitlines()
                   if line.startswith("{"))
        return [entry for entry in entries if entry.get("message") == "batch processed"]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- the live view as a listener -------------------------------------------------------------
@dataclass(frozen=True)
class LiveSnapshot:
    """What the live model showed of one athlete at a mark."""

    samples_seen: int
    points: int
    last_seq: int | None


class LiveWatch:
    """The live view's pure model, fed like the dashboard (``on_item``), with named marks to
    compare what it showed before, during and after a fault."""

    def __init__(self) -> None:
        self.model = LiveModel()
        self.samples: list[Sample] = []
        self.events: list[ConnectionEvent] = []
        self._marks: dict[str, int] = {}
        self._snapshots: dict[str, dict[str, LiveSnapshot]] = {}

    def on_item(self, item: Sample | ConnectionEvent) -> None:
        self.model.apply(item, datetime.now(UTC))
        if isinstance(item, Sample):
            self.samples.append(item)
        else:
            self.events.append(item)

    def mark(self, name: str) -> None:
        self._marks[name] = len(self.samples)
        self._snapshots[name] = {
            athlete: LiveSnapshot(window.samples_seen, len(window.points), window.last_seq)
            for athlete, window in self.model.athletes.items()
        }

    def since(self, name: str) -> list[Sample]:
        return self.samples[self._marks[name]:]

    def between(self, first: str, second: str) -> list[Sample]:
        return self.samples[self._marks[first]:self._marks[second]]

    async def wait_samples(self, count: int, *, since: str | None = None,
                           timeout_s: float = 30.0) -> None:
        """Wait until ``count`` more samples arrived (after the mark ``since``)."""
        start = self._marks[since] if since else 0
        deadline = time.monotonic() + timeout_s
        while len(self.samples) - start < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the live view got {len(self.samples) - start} of "
                                     f"{count} samples within {timeout_s:.0f} s")
            await asyncio.sleep(0.05)  # polling interval

    async def wait_event(self, kind: str, *, timeout_s: float = 30.0) -> ConnectionEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events:
                if event.kind == kind:
                    return event
            await asyncio.sleep(0.05)  # polling interval
        raise AssertionError(f"no {kind!r} connection event within {timeout_s:.0f} s")

    def assert_kept_going(self, since: str) -> None:
        """After the mark ``since`` every athlete got new samples, its window grew, and the
        header shows the newest value (not a dash, not a frozen one)."""
        later = self.since(since)
        assert later, f"the live view got no sample after {since!r}"
        before = self._snapshots[since]
        for athlete in sorted({sample.athlete_id for sample in later}):
            window = self.model.athletes[athlete]
            newest = [sample for sample in later if sample.athlete_id == athlete][-1]
            then = before.get(athlete, LiveSnapshot(0, 0, None))
            assert window.samples_seen > then.samples_seen
            assert len(window.points) > then.points, f"{athlete}: the chart's window stopped"
            assert window.last_seq == newest.seq
            assert window.last_arrival is not None
            header = self.model.header(athlete, window.last_arrival)
            assert header.bpm == f"{newest.heart_rate} bpm" != DASH, header
            assert header.connection == "connected", header


# --- a streaming session with a fault script -----------------------------------------------
@dataclass
class SessionRun:
    """One session: every sample the source produced (in order), the summary, the live view,
    and what the fault script noted on the way."""

    keys: list[Key]
    summary: StreamSummary
    live: LiveWatch
    notes: dict[str, Any]


@dataclass
class SessionControl:
    """What a fault script holds: the running session and the live view."""

    session: StreamSession
    live: LiveWatch
    notes: dict[str, Any] = field(default_factory=dict)

    async def stop(self) -> None:
        await self.session.stop()


Script = Callable[[SessionControl], Awaitable[None]]


async def run_session(source: HeartRateSource, producer: KinesisProducer, script: Script, *,
                      flush_timeout_s: float = 90.0) -> SessionRun:
    """Stream ``source`` through ``producer`` with the live view listening while ``script``
    injects faults; the script ends the session (``control.stop()``). The producer is flushed
    before this returns."""
    live = LiveWatch()
    async with producer:
        session = StreamSession(source, producer, listeners=[live.on_item],
                                on_progress=lambda p: say(format_progress(p)),
                                progress_every_s=5.0, flush_timeout_s=flush_timeout_s)
        control = SessionControl(session, live)
        runner = asyncio.create_task(session.run())
        try:
            await script(control)
        finally:
            await session.stop()
            summary = await runner
    say(f"session over: {summary.samples} samples, {summary.producer.sent} sent, "
        f"{summary.producer.retried} retried, {summary.unsent} unsent")
    return SessionRun(keys=[key_of(sample) for sample in live.samples], summary=summary,
                      live=live, notes=control.notes)


# --- one provisioned pipeline --------------------------------------------------------------
@dataclass
class Pipeline:
    """Stream, function, trigger and indices of one test, and the processes around them."""

    settings: Settings  # this test's prefix, indices and state directory
    node_settings: Settings  # the OpenSearch node the indices live on (maybe a private one)
    mapping_uuid: str
    poller: PollerProcess
    search: Any  # opensearch-py client straight to the node (never through a proxy)
    kinesis: Any  # boto3 Kinesis client straight to the emulator
    producer_settings: Settings  # where the producer sends (maybe a fault proxy)
    spool_path: Path
    kinesis_proxy: Any = None  # FaultProxy between the producer and the emulator
    opensearch_proxy: Any = None  # FaultProxy between the function and the node

    @property
    def stream_name(self) -> str:
        return self.settings.stream_name

    def producer(self, **options: Any) -> KinesisProducer:
        return KinesisProducer(kinesis_client(self.producer_settings), self.stream_name,
                               spool_path=self.spool_path, **options)

    def shard_ids(self) -> list[str]:
        return [shard["ShardId"]
                for shard in self.kinesis.list_shards(StreamName=self.stream_name)["Shards"]]

    def stream_records(self, shard_id: str) -> list[dict[str, Any]]:
        """Every record of one shard, from its start, as GetRecords returns them."""
        return read_shard(self.kinesis, self.stream_name, shard_id)

    def put_raw(self, payloads: Sequence[bytes], partition_key: str) -> list[str]:
        """Write payloads on the stream as any other writer could; their sequence numbers."""
        return put_payloads(self.kinesis, self.stream_name, payloads, partition_key)

    # --- OpenSearch ----------------------------------------------------------------------
    def count(self, index: str | None = None) -> int:
        index = index or self.settings.index_name
        self.search.indices.refresh(index=index, ignore_unavailable=True)
        if not self.search.indices.exists(index=index):
            return 0
        return int(self.search.count(index=index)["count"])

    def wait_indexed(self, expected: int, *, timeout_s: float = INDEXING_TIMEOUT_S) -> float:
        """Poll the index until it holds ``expected`` documents (bounded; prints progress)."""
        started = time.monotonic()
        last_report = started
        count = -1
        while True:
            try:
                count = self.count()
            except Exception as exc:  # the node may be restarting: keep polling
                say(f"index not readable yet: {type(exc).__name__}")
            elapsed = time.monotonic() - started
            if count >= expected:
                say(f"indexed {count}/{expected} after {elapsed:.1f} s")
                return elapsed
            if elapsed > timeout_s:
                say(f"indexed only {count}/{expected} after {elapsed:.0f} s")
                return elapsed
            if time.monotonic() - last_report >= 3:
                say(f"indexed {count}/{expected} ({elapsed:.0f} s)")
                last_report = time.monotonic()
            time.sleep(0.25)  # polling interval of the index count

    def indexed_versions(self) -> dict[Key, int]:
        """Every document's identity and ``_version`` (2+: written again, never duplicated);
        checks that each ``_id`` is its identity."""
        index = self.settings.index_name
        self.search.indices.refresh(index=index)
        identities: Counter[Key] = Counter()
        versions: dict[Key, int] = {}
        for hit in helpers.scan(self.search, index=index, query={"version": True},
                                _source=["athlete_id", "session_id", "seq"]):
            key = key_of(hit["_source"])
            assert hit["_id"] == "/".join(map(str, key)), hit
            identities[key] += 1
            versions[key] = hit["_version"]
        duplicated = [key for key, copies in identities.items() if copies > 1]
        assert not duplicated, f"documents indexed more than once: {duplicated[:10]}"
        return versions

    def assert_exactly_once(self, expected_keys: Sequence[Key]) -> dict[Key, int]:
        """Zero loss and zero duplicates: the identities in the index are exactly the ones the
        source produced, by a scan, by the index's document count, by per-session cardinality
        of ``seq``, and by hrnb.query.missing_seqs. Returns each document's version."""
        expected = set(expected_keys)
        assert len(expected) == len(expected_keys), "the source repeated a sample identity"
        versions = self.indexed_versions()
        indexed = set(versions)
        missing = sorted(expected - indexed)
        unexpected = sorted(indexed - expected)
        assert not missing, f"{len(missing)} samples never indexed, e.g. {missing[:10]}"
        assert not unexpected, f"{len(unexpected)} documents nobody sent, e.g. {unexpected[:10]}"
        assert self.count() == len(expected)

        per_session = Counter((athlete, session) for athlete, session, _ in expected)
        index = self.settings.index_name
        answer = self.search.search(index=index, body={
            "size": 0,
            "aggs": {"sessions": {
                "multi_terms": {"terms": [{"field": "athlete_id"}, {"field": "session_id"}],
                                "size": 1000},
                "aggs": {"seqs": {"cardinality": {"field": "seq",
                                                  "precision_threshold": 40000}}},
            }},
        })
        buckets = answer["aggregations"]["sessions"]["buckets"]
        found = {tuple(bucket["key"]): (bucket["doc_count"], bucket["seqs"]["value"])
                 for bucket in buckets}
        assert found == {session: (n, n) for session, n in per_session.items()}

        for (athlete, session), _ in per_session.items():
            seqs = sorted(seq for a, s, seq in expected if (a, s) == (athlete, session))
            ranges = _runs(seqs)
            gaps = missing_seqs(self.search, index, athlete, session, ranges).df
            assert gaps.empty, gaps
        return versions

    def dead_letters(self) -> list[dict[str, Any]]:
        index = self.settings.dlq_index_name
        if not self.search.indices.exists(index=index):
            return []
        self.search.indices.refresh(index=index)
        return [hit["_source"] for hit in helpers.scan(self.search, index=index,
                                                       query={"query": {"match_all": {}}})]

    def assert_nothing_given_up(self) -> None:
        """No good record went to the dead-letter index, none was discarded by the poller."""
        assert self.dead_letters() == []
        assert self.poller.discarded(self.mapping_uuid) == []


def _runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def spooled_on_disk(path: Path) -> int:
    """Records waiting in a producer's spool, read without taking the producer's lock."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])


# --- a producer in its own process ---------------------------------------------------------
class ProducerProcess:
    """``producer_process.py`` as a child: one JSON line per sample on its stdout, read by a
    thread; ``stop()`` asks for a clean end, ``kill()`` sends SIGKILL."""

    SCRIPT = Path(__file__).with_name("producer_process.py")

    def __init__(self, pipeline: Pipeline, *, athlete_id: str, rate_hz: float, seed: int,
                 log_path: Path) -> None:
        self.lines: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(self.SCRIPT),
                 "--endpoint", str(pipeline.producer_settings.resolved_aws_endpoint_url),
                 "--stream", pipeline.stream_name, "--spool", str(pipeline.spool_path),
                 "--athlete", athlete_id, "--rate", str(rate_hz), "--seed", str(seed)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(json.loads(line))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def samples(self) -> list[dict[str, Any]]:
        with self._changed:
            return [line for line in self.lines if "sample" in line]

    @property
    def keys(self) -> list[Key]:
        return [key_of(line["sample"]) for line in self.samples]

    def wait_samples(self, count: int, *, timeout_s: float = 30.0,
                     kind: str = "sample") -> dict[str, Any]:
        """Wait until the child reported ``count`` samples in all (``kind="persisted"``: that
        many samples in its on-disk spool); the newest such line."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [line for line in self.lines if kind in line]
                if len(found) >= count:
                    return found[-1]
                remaining = deadline - time.monotonic()
                ended = self.process.poll() is not None and not self._reader.is_alive()
                if remaining <= 0 or ended:
                    raise AssertionError(f"the producer process reported {len(found)} of "
                                         f"{count} {kind} lines (exit code "
                                         f"{self.process.poll()})")
                self._changed.wait(remaining)

    def stop(self, *, timeout_s: float = 90.0) -> dict[str, Any]:
        """Ask for a clean end (the child flushes); its summary line."""
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        self.process.wait(timeout=timeout_s)
        self._reader.join(timeout=5)
        summaries = [line["summary"] for line in self.lines if "summary" in line]
        assert summaries, "the producer process ended without a summary"
        return summaries[-1]

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=5)


def decode_keys(records: Iterable[Mapping[str, Any]]) -> list[Key]:
    """Identities of stream records (GetRecords entries) holding valid wire records."""
    return [key_of(decode_record(record["Data"])) for record in records]
