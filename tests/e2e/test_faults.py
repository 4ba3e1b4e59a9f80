"""The fault suite: the whole local pipeline, one real fault per test.

source -> StreamSession (+ the live view's model) -> KinesisProducer -> emulated Kinesis ->
local event source mapping (its own process) -> the packaged handler in a worker process ->
OpenSearch. Every fault is injected at an HTTP or process boundary: a proxy that refuses,
fails entries, answers 429 or holds a request; an OpenSearch node stopped and started; a
worker or producer process killed with SIGKILL; a checkpoint rewound; a watch's link dropped;
bad records written to the stream by another writer. Each test then asserts that the set of
(athlete, session, seq) in OpenSearch is exactly the set the source produced, once each, and
that the live view kept showing fresh samples.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import psutil
import pytest
from e2e_helpers import (
    Key,
    Pipeline,
    ProducerProcess,
    SessionControl,
    SessionRun,
    decode_keys,
    run_session,
    say,
    spooled_on_disk,
)
from support import run_async, wait_until
from support.faultproxy import Delay, FailEntries, FaultProxy, Refuse, Respond, path_matches

from hrnb.live import DASH, line_xy
from hrnb.local import launcher
from hrnb.sources import (
    EmulatedHeartRateMonitor,
    EmulatedWatchSource,
    SimulatedAthlete,
    SimulatedSource,
)
from hrnb.wire.records import encode_record, make_record

pytestmark = pytest.mark.stack

ATHLETES = ("e2e-a1", "e2e-a2")
RATE_HZ = 2.0  # per athlete: 4 samples a second in all
SAMPLES_PER_S = RATE_HZ * len(ATHLETES)
KINESIS_OUTAGE_S = 30.0
THROTTLED_S = 10.0
#: What OpenSearch answers when its write queue is full.
REJECTED_EXECUTION = json.dumps({
    "error": {"type": "es_rejected_execution_exception",
              "reason": "rejected execution of coordinating operation (injected)"},
    "status": 429,
}).encode()

PipelineFactory = Callable[..., Pipeline]


def simulated(seed: int) -> SimulatedSource:
    """Two athletes at 2 Hz in real time, no contact losses (every sample carries a heart
    rate), until the test's script stops the session."""
    return SimulatedSource(ATHLETES, rate_hz=RATE_HZ, seed=seed, contact_loss_every_s=None)


def assert_delivered_exactly_once(pipe: Pipeline, run: SessionRun, *, live_since: str,
                                  timeout_s: float = 60.0) -> dict[Key, int]:
    """Every sample reached Kinesis and is indexed once, nothing was given up, and the live
    view kept going after ``live_since``. Returns each document's ``_version``."""
    assert run.summary.complete, run.summary
    assert len(run.keys) == run.summary.samples
    pipe.wait_indexed(len(run.keys), timeout_s=timeout_s)
    versions = pipe.assert_exactly_once(run.keys)
    pipe.assert_nothing_given_up()
    run.live.assert_kept_going(live_since)
    return versions


async def count_now(pipe: Pipeline) -> int:
    return await asyncio.to_thread(pipe.count)


# --- Kinesis side ----------------------------------------------------------------------------
@run_async
async def test_kinesis_unreachable_for_30_s(pipeline: PipelineFactory) -> None:
    pipe = pipeline(kinesis_proxy=True)
    proxy = pipe.kinesis_proxy

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_samples(8)
        live.mark("outage")
        proxy.set_fault(Refuse())
        say(f"Kinesis unreachable for {KINESIS_OUTAGE_S:.0f} s")
        await asyncio.sleep(KINESIS_OUTAGE_S)  # the outage's length is the scenario
        control.notes["at_the_end"] = control.session.progress().producer
        live.mark("restored")
        proxy.clear()
        say("Kinesis reachable again")
        await live.wait_samples(8, since="restored")
        await control.stop()

    run = await run_session(simulated(seed=1), pipe.producer(), script)

    during = run.live.between("outage", "restored")
    assert len(during) >= 0.8 * KINESIS_OUTAGE_S * SAMPLES_PER_S  # the live view never stalled
    at_the_end = run.notes["at_the_end"]
    assert at_the_end.unsent >= len(during)  # everything measured meanwhile waited on disk
    assert at_the_end.errors.get("EndpointConnectionError", 0) > 0
    assert_delivered_exactly_once(pipe, run, live_since="restored")


@run_async
async def test_30_percent_of_put_records_entries_failing(pipeline: PipelineFactory) -> None:
    pipe = pipeline(kinesis_proxy=True)
    proxy = pipe.kinesis_proxy

    async def script(control: SessionControl) -> None:
        live = control.live
        live.mark("failing")
        proxy.set_fault(FailEntries(0.3, seed=30))
        await live.wait_samples(48)
        live.mark("healthy")
        proxy.clear()
        await live.wait_samples(8, since="healthy")
        await control.stop()

    run = await run_session(simulated(seed=2), pipe.producer(), script)

    failed_entries = proxy.counters().failed_entries
    assert failed_entries >= 5
    assert run.summary.producer.failed == failed_entries  # each failed entry was seen...
    assert run.summary.producer.retried >= failed_entries  # ...and sent again
    assert_delivered_exactly_once(pipe, run, live_since="healthy")


# --- OpenSearch side -------------------------------------------------------------------------
@run_async
async def test_opensearch_answering_429_for_10_s(pipeline: PipelineFactory) -> None:
    pipe = pipeline(opensearch_proxy=FaultProxy)
    proxy = pipe.opensearch_proxy

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_samples(8)
        await asyncio.to_thread(wait_until, lambda: pipe.count() > 0, timeout_s=30,
                                what="the first documents")
        live.mark("throttled")
        proxy.set_fault(Respond(429, REJECTED_EXECUTION, match=path_matches(r"/_bulk")))
        control.notes["count_at_start"] = await count_now(pipe)
        say(f"OpenSearch answers 429 to every bulk request for {THROTTLED_S:.0f} s")
        await asyncio.sleep(THROTTLED_S)  # how long OpenSearch throttles is the scenario
        control.notes["count_at_end"] = await count_now(pipe)
        live.mark("accepting")
        proxy.clear()
        await live.wait_samples(8, since="accepting")
        await control.stop()

    run = await run_session(simulated(seed=3), pipe.producer(), script)

    counters = proxy.counters()
    assert counters.responded > 0 and counters.by_status.get(429) == counters.responded
    # Nothing got in while throttled (but the one batch already in flight, at most 2 records).
    assert run.notes["count_at_end"] - run.notes["count_at_start"] <= 2
    assert pipe.poller.counter("partial_failures") > 0  # handed back to the poller, retried
    assert_delivered_exactly_once(pipe, run, live_since="accepting")


@run_async
async def test_opensearch_node_restarted_mid_session(pipeline: PipelineFactory) -> None:
    pipe = pipeline(private_opensearch=True)
    node = pipe.node_settings

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_samples(8)
        await asyncio.to_thread(wait_until, lambda: pipe.count() >= 4, timeout_s=30,
                                what="the first documents")
        control.notes["count_before"] = await count_now(pipe)
        live.mark("stopping")
        say(f"stopping the OpenSearch node at {node.resolved_opensearch_url}")
        await asyncio.to_thread(launcher.down, node, only=(launcher.OPENSEARCH,),
                                progress=say)
        await asyncio.sleep(5.0)  # samples keep coming while the node is down
        say("starting the OpenSearch node again")
        await asyncio.to_thread(launcher.up, node, poller=False, progress=say)
        control.notes["count_after"] = await count_now(pipe)
        live.mark("restarted")
        await live.wait_samples(8, since="restarted")
        await control.stop()

    run = await run_session(simulated(seed=4), pipe.producer(), script)

    assert len(run.live.between("stopping", "restarted")) >= 5 * SAMPLES_PER_S * 0.8
    assert run.notes["count_after"] >= run.notes["count_before"]  # indexed data survived
    failures = pipe.poller.counter("partial_failures") + pipe.poller.counter("function_errors")
    assert failures > 0  # the handler could not index while the node was down
    assert_delivered_exactly_once(pipe, run, live_since="restarted", timeout_s=90.0)


# --- the Lambda side -------------------------------------------------------------------------
@run_async
async def test_lambda_worker_killed_mid_batch(pipeline: PipelineFactory) -> None:
    pipe = pipeline(opensearch_proxy=FaultProxy)
    proxy = pipe.opensearch_proxy
    poller = pipe.poller

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_samples(8)
        await asyncio.to_thread(wait_until, lambda: pipe.count() > 0, timeout_s=30,
                                what="the first documents")
        # Hold the next bulk request in the proxy, so the worker is killed while its batch is
        # on the wire: the request still reaches the node, the answer never reaches the worker.
        proxy.set_fault(Delay(2.0, match=path_matches(r"/_bulk"), times=1))
        await asyncio.to_thread(wait_until, lambda: proxy.counters().delayed >= 1,
                                timeout_s=30, what="a bulk request in flight")
        mapping = poller.mapping()
        assert mapping is not None and mapping["worker_pid"] is not None
        worker = psutil.Process(mapping["worker_pid"])
        assert any(part.endswith("hrnb/local/worker.py") for part in worker.cmdline())
        worker.send_signal(signal.SIGKILL)
        live.mark("killed")
        say(f"killed the Lambda worker (pid {worker.pid}) mid-batch")
        await asyncio.to_thread(
            wait_until, lambda: (poller.mapping() or {}).get("worker_restarts", 0) >= 1,
            timeout_s=30, what="a new worker")
        await live.wait_samples(8, since="killed")
        await control.stop()

    run = await run_session(simulated(seed=5), pipe.producer(), script)

    assert pipe.poller.counter("function_errors") >= 1
    assert "Runtime.ExitError" in poller.log_text()
    versions = assert_delivered_exactly_once(pipe, run, live_since="killed")
    # The batch in flight was written twice (the held request, then the retry): one document.
    assert any(version >= 2 for version in versions.values())


@run_async
async def test_a_batch_delivered_twice(pipeline: PipelineFactory) -> None:
    pipe = pipeline()
    poller = pipe.poller
    checkpoint_path = poller.checkpoint_path(pipe.mapping_uuid)
    replay_per_shard = 4

    def rewind_checkpoints() -> list[Key]:
        """Move each shard's checkpoint back by ``replay_per_shard`` records; their keys."""
        checkpoints = json.loads(checkpoint_path.read_text())
        replayed: list[Key] = []
        for shard_id, position in checkpoints["shards"].items():
            if "after_sequence_number" not in position:
                continue
            records = pipe.stream_records(shard_id)
            numbers = [record["SequenceNumber"] for record in records]
            done = numbers.index(position["after_sequence_number"]) + 1
            if done <= replay_per_shard:
                continue
            position["after_sequence_number"] = numbers[done - replay_per_shard - 1]
            replayed += decode_keys(records[done - replay_per_shard:done])
        checkpoint_path.write_text(json.dumps(checkpoints))
        return replayed

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_samples(20)
        await asyncio.to_thread(wait_until, lambda: pipe.count() >= 12, timeout_s=30,
                                what="12 documents")
        await asyncio.to_thread(poller.stop)  # finishes the batch in flight, checkpoints
        control.notes["replayed"] = await asyncio.to_thread(rewind_checkpoints)
        say(f"poller stopped; checkpoints rewound by {len(control.notes['replayed'])} records")
        await asyncio.sleep(2.0)  # samples keep coming while the poller is down
        poller.start()
        live.mark("poller restarted")
        await live.wait_samples(8, since="poller restarted")
        await control.stop()

    run = await run_session(simulated(seed=6), pipe.producer(), script)

    replayed = run.notes["replayed"]
    assert len(replayed) >= replay_per_shard
    versions = assert_delivered_exactly_once(pipe, run, live_since="poller restarted")
    # Exactly the rewound records were written a second time, over their own documents.
    assert {key for key, version in versions.items() if version >= 2} == set(replayed)
    handled = sum(batch["records"] for batch in poller.batches())
    assert handled >= len(run.keys) + len(replayed)  # the handler really saw them twice


# --- the watch -------------------------------------------------------------------------------
@run_async
async def test_ble_dropout_and_reconnect(pipeline: PipelineFactory) -> None:
    pipe = pipeline(shards=1)
    athlete_id = "e2e-ble"
    dropout_s = 3.0
    address = "EE:" + ":".join(uuid.uuid4().hex[i:i + 2].upper() for i in range(0, 10, 2))
    monitor = EmulatedHeartRateMonitor(address)
    source = EmulatedWatchSource(
        monitor, SimulatedAthlete(random.Random(7), contact_loss_every_s=None), rate_hz=4.0,
        athlete_id=athlete_id, scan_timeout_s=5.0, reconnect_delays_s=(0.2, 0.5),
    )

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_event("connected")
        await live.wait_samples(12)
        live.mark("dropout")
        monitor.go_out_of_range()
        await live.wait_event("disconnected")
        control.notes["header_during"] = live.model.header(athlete_id, datetime.now(UTC))
        await asyncio.sleep(dropout_s)  # the dropout's length is the scenario
        monitor.come_back_in_range()
        control.notes["reconnected"] = await live.wait_event("reconnected")
        live.mark("reconnected")
        await live.wait_samples(12, since="reconnected")
        await control.stop()

    run = await run_session(source, pipe.producer(), script)

    # The gap is reported: connection events, a dash in the header, a break in the chart.
    assert source.reconnects == 1
    during = run.notes["header_during"]
    assert during.bpm == DASH and during.connection.startswith("disconnected"), during
    restored = run.notes["reconnected"].detail
    assert float(restored.split("link restored after ")[1].split(" s")[0]) >= dropout_s
    window = run.live.model.athletes[athlete_id]
    first_after = run.live.since("reconnected")[0]
    after_the_first = list(window.points)[1:]
    assert [point.seq for point in after_the_first if point.after_break] == [first_after.seq]
    assert None in line_xy(window.points)[1]
    # What was measured is exactly what was sent: every notification a sample, no seq skipped.
    assert len(monitor.delivered) == len(run.keys)
    assert [seq for _, _, seq in run.keys] == list(range(len(run.keys)))
    assert len({session for _, session, _ in run.keys}) == 1
    assert_delivered_exactly_once(pipe, run, live_since="reconnected")
    # ... and the index shows the gap where the watch was away.
    hits = pipe.search.search(index=pipe.settings.index_name, body={
        "size": len(run.keys), "sort": [{"seq": "asc"}], "_source": ["seq", "timestamp"]},
    )["hits"]["hits"]
    times = [datetime.fromisoformat(hit["_source"]["timestamp"]) for hit in hits]
    gaps = [(later - earlier).total_seconds() for earlier, later in pairwise(times)]
    widest = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[widest] >= dropout_s
    assert hits[widest + 1]["_source"]["seq"] == first_after.seq
    assert sorted(gaps)[-2] < 1.0  # anywhere else samples come every 250 ms


# --- bad records on the stream ---------------------------------------------------------------
def poison_records(now: datetime) -> list[tuple[bytes, str]]:
    """Records another writer might put on the stream, each with what its dead letter says."""

    def record(seq: int, **changes: Any) -> dict[str, Any]:
        good = make_record(athlete_id="e2e-poison", session_id="poison", device_id="strap-x",
                           seq=seq, timestamp=now - timedelta(seconds=1), heart_rate=120)
        return {**good, **changes}

    def raw(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    without_seq = record(3)
    del without_seq["seq"]
    return [
        (b"\xff\xfe\x9c heart rate", "record is not UTF-8 text"),
        (b"HR=120 bpm", "record is not JSON"),
        (b"[120, 121]", "a record must be a JSON object"),
        (raw(record(1, heart_rate="120")), "heart_rate must be an integer"),
        (raw(record(2, pace="4:30")), "unknown field(s): pace"),
        (raw(without_seq), "missing field(s): seq"),
        (encode_record(record(4, heart_rate=300)), "heart_rate 300 bpm is outside 20..250 bpm"),
        (encode_record(record(5, timestamp=(now + timedelta(hours=1)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"))), "minutes in the future"),
    ]


@run_async
async def test_poison_records_mixed_into_the_stream(pipeline: PipelineFactory) -> None:
    pipe = pipeline(shards=1)
    poison = poison_records(datetime.now(UTC))

    async def script(control: SessionControl) -> None:
        live = control.live
        await live.wait_samples(8)
        live.mark("poisoned")
        payloads = [payload for payload, _ in poison]
        control.notes["sequence_numbers"] = await asyncio.to_thread(
            pipe.put_raw, payloads, ATHLETES[0])
        say(f"wrote {len(poison)} poison records between the athletes' samples")
        await live.wait_samples(8, since="poisoned")
        await control.stop()

    run = await run_session(simulated(seed=8), pipe.producer(), script)

    assert run.summary.complete, run.summary
    pipe.wait_indexed(len(run.keys))
    pipe.assert_exactly_once(run.keys)  # every good record once, no poison among them
    run.live.assert_kept_going("poisoned")
    wait_until(lambda: len(pipe.dead_letters()) >= len(poison), timeout_s=30,
               what="the dead letters")
    dead_letters = pipe.dead_letters()
    assert len(dead_letters) == len(poison)
    letters = {letter["sequence_number"]: letter for letter in dead_letters}
    numbers = run.notes["sequence_numbers"]
    assert set(letters) == set(numbers)
    (shard_id,) = pipe.shard_ids()
    for number, (payload, reason) in zip(numbers, poison, strict=True):
        letter = letters[number]
        assert reason in letter["reason"], (reason, letter["reason"])
        assert base64.b64decode(letter["raw_data"]) == payload
        assert letter["partition_key"] == ATHLETES[0]
        assert letter["shard_id"] == shard_id
        assert letter["event_source_arn"].endswith(f"/{pipe.stream_name}")
    assert pipe.poller.discarded(pipe.mapping_uuid) == []


# --- the producer process --------------------------------------------------------------------
def test_producer_killed_during_an_outage_and_restarted_on_its_spool(
    pipeline: PipelineFactory, tmp_path: Any,
) -> None:
    pipe = pipeline(kinesis_proxy=True)
    proxy = pipe.kinesis_proxy
    athlete_id = "e2e-p1"

    first = ProducerProcess(pipe, athlete_id=athlete_id, rate_hz=4.0, seed=9,
                            log_path=tmp_path / "producer-1.log")
    try:
        first.wait_samples(8)
        proxy.set_fault(Refuse())
        outage_from = len(first.samples)
        say("Kinesis unreachable; the producer process spools")
        # Killed as soon as the 12th sample of the outage is on disk (the next is 250 ms off).
        first.wait_samples(outage_from + 12, kind="persisted")
    finally:
        first.kill()
    say(f"producer process killed with {spooled_on_disk(pipe.spool_path)} records spooled")

    during = first.samples[outage_from:]
    left_behind = spooled_on_disk(pipe.spool_path)
    assert left_behind >= len(during) >= 12
    # The crashed process's live view kept showing each new sample during the outage.
    assert all(line["header_bpm"] == f"{line['heart_rate']} bpm" for line in during)
    assert [line["window_points"] for line in during] == list(
        range(during[0]["window_points"], during[0]["window_points"] + len(during)))

    proxy.clear()
    second = ProducerProcess(pipe, athlete_id=athlete_id, rate_hz=4.0, seed=10,
                             log_path=tmp_path / "producer-2.log")
    try:
        second.wait_samples(12)
        summary = second.stop()
    finally:
        second.kill()
    assert summary["unsent"] == 0
    assert spooled_on_disk(pipe.spool_path) == 0
    assert all(line["header_bpm"] == f"{line['heart_rate']} bpm" for line in second.samples)

    keys = first.keys + second.keys
    assert len({session for _, session, _ in keys}) == 2
    pipe.wait_indexed(len(keys))
    pipe.assert_exactly_once(keys)
    pipe.assert_nothing_given_up()
