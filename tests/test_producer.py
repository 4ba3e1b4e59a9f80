"""The Kinesis producer: pure batching/retry steps, then real faults between it and the emulator.

Faults are injected by a real HTTP proxy on loopback (tests/support/faultproxy.py) between the
producer's boto3 client and the emulated Kinesis; every test reads the stream back over all
shards and checks: nothing lost, exactly once after de-duplication, per-athlete order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    Key,
    check_delivery,
    child_producer_main,
    free_port,
    key_of,
    make_test_record,
    read_stream,
    run_async,
    temporary_stream,
    wait_for_line,
)
from support.faultproxy import (
    Delay,
    Drop,
    FailEntries,
    FaultProxy,
    Refuse,
    Respond,
    kinesis_operation,
)

from hrnb.clients import aws_client
from hrnb.config import Settings
from hrnb.errors import ConfigError, ProducerError, ProvisionError, RecordError, SpoolFullError
from hrnb.stream.producer import (
    KinesisProducer,
    LatencyPercentiles,
    check_stream_ready,
    kinesis_client,
    percentiles,
    plan_batch,
    sort_out_response,
)
from hrnb.stream.spool import Spool, SpooledRecord

# --- pure steps -----------------------------------------------------------------------------------


def spooled(record_id: int, key: str, size: int = 100) -> SpooledRecord:
    return SpooledRecord(partition_key=key, data=b"x" * size, accepted_at=0.0, id=record_id)


def test_a_batch_takes_the_oldest_record_of_each_athlete_once() -> None:
    heads = [spooled(7, "b"), spooled(3, "a"), spooled(9, "a"), spooled(5, "c")]
    assert [r.id for r in plan_batch(heads)] == [3, 5, 7]


def test_a_batch_stays_within_the_record_and_byte_limits() -> None:
    heads = [spooled(i, f"athlete-{i}") for i in range(600)]
    assert len(plan_batch(heads)) == 500
    assert len(plan_batch(heads, max_records=10)) == 10
    # 100 bytes of data plus the key: only whole records that fit.
    sizes = [r.size for r in heads[:4]]
    assert len(plan_batch(heads, max_bytes=sum(sizes) - 1)) == 3
    assert len(plan_batch(heads, max_bytes=sum(sizes))) == 4


def test_the_response_is_split_into_acknowledged_and_failed_entries() -> None:
    batch = [spooled(1, "a"), spooled(2, "b"), spooled(3, "c")]
    outcome = sort_out_response(
        batch,
        {
            "FailedRecordCount": 1,
            "Records": [
                {"SequenceNumber": "1", "ShardId": "shardId-0"},
                {"ErrorCode": "InternalFailure", "ErrorMessage": "boom"},
                {"SequenceNumber": "2", "ShardId": "shardId-0"},
            ],
        },
    )
    assert [r.id for r in outcome.acked] == [1, 3]
    assert [(r.id, code) for r, code in outcome.failed] == [(2, "InternalFailure")]
    with pytest.raises(ProducerError, match="2 results for 3 records"):
        sort_out_response(batch, {"Records": [{}, {}]})


def test_percentiles_interpolate_between_ranks() -> None:
    result = percentiles(float(v) for v in range(1, 101))
    assert (result.p50_ms, result.p95_ms, result.p99_ms) == pytest.approx((50.5, 95.05, 99.01))
    assert result.samples == 100
    assert percentiles([]) == LatencyPercentiles(None, None, None, 0)
    assert percentiles([4.0]) == LatencyPercentiles(4.0, 4.0, 4.0, 1)


@pytest.mark.parametrize(
    ("option", "value"),
    [("linger_s", 2.0), ("max_batch_records", 501), ("max_batch_bytes", 0), ("backoff_base_s", 0)],
)
def test_bad_options_name_the_option(tmp_path: Path, option: str, value: float) -> None:
    with pytest.raises(ConfigError) as caught:
        KinesisProducer(object(), "s", spool_path=tmp_path / "spool.db", **{option: value})
    assert caught.value.setting == option


@run_async
async def test_submit_needs_a_running_producer_and_a_valid_record(tmp_path: Path) -> None:
    producer = KinesisProducer(object(), "s", spool_path=tmp_path / "spool.db")
    with pytest.raises(ProducerError, match="await start"):
        producer.submit(make_test_record("a", "s1", 0))
    await producer.start()
    try:
        bad = {**make_test_record("a", "s1", 0), "heart_rate": "fast"}
        with pytest.raises(RecordError) as caught:
            producer.submit(bad)
        assert caught.value.field == "heart_rate"
        assert producer.metrics().submitted == 0
    finally:
        await producer.close(timeout=0)


@run_async
async def test_persisted_returns_once_every_accepted_record_is_on_disk(tmp_path: Path) -> None:
    """Nothing answers at the endpoint, so every record stays in the spool: persisted() is the
    moment they are all there, with no sleep to guess it."""
    unreachable = Settings.from_env(target="local", aws_endpoint_url=f"http://127.0.0.1:{free_port()}")
    producer = KinesisProducer(kinesis_client(unreachable), "s", spool_path=tmp_path / "spool.db")
    with pytest.raises(ProducerError, match="has not started"):
        await producer.persisted()
    await producer.start()
    try:
        for seq in range(500):
            producer.submit(make_test_record(f"athlete-{seq % 7}", "s1", seq))
        await producer.persisted()
        assert spooled_on_disk(tmp_path / "spool.db") == 500
        assert producer.metrics().queue_depth == 0
    finally:
        await producer.close(timeout=0)


# --- against the emulated Kinesis, through the fault proxy ----------------------------------------

@pytest.fixture
def kinesis(settings: Settings) -> Any:
    return kinesis_client(settings)


@pytest.fixture
def stream(kinesis: Any, unique_name: Callable[[str], str]) -> Iterator[str]:
    with temporary_stream(kinesis, unique_name("hrnb-test-producer"), shards=4) as name:
        yield name


@pytest.fixture
def proxy(settings: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(settings.resolved_aws_endpoint_url or "") as running:
        yield running


def producer_through(
    proxy: FaultProxy, settings: Settings, stream: str, spool: Path, **options: Any
) -> KinesisProducer:
    client = kinesis_client(settings.with_overrides(aws_endpoint_url=proxy.url))
    return KinesisProducer(client, stream, spool_path=spool, **options)


async def submit_steadily(
    producer: KinesisProducer,
    athletes: int,
    per_athlete: int,
    *,
    rate_hz: float,
    session: str = "s1",
    first_seq: int = 0,
) -> list[Key]:
    """Round-robin records at ``rate_hz`` per athlete; the keys in submission order."""
    keys: list[Key] = []
    for seq in range(first_seq, first_seq + per_athlete):
        for athlete in range(athletes):
            record = make_test_record(f"athlete-{athlete}", session, seq)
            producer.submit(record)
            keys.append(key_of(record))
        await asyncio.sleep(1 / rate_hz)  # the submission rate is the scenario
    return keys


def spooled_on_disk(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]


@pytest.mark.stack
@run_async
async def test_every_record_arrives_once_in_order_batched_over_athletes(
    settings: Settings, kinesis: Any, stream: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    async with producer_through(proxy, settings, stream, tmp_path / "spool.db") as producer:
        keys = await submit_steadily(producer, 8, 40, rate_hz=200)
        metrics = await producer.flush(timeout=60)

    report = check_delivery(read_stream(kinesis, stream), keys)
    assert report.exactly_once_in_order, report
    assert report.raw_duplicates == 0
    assert (metrics.sent, metrics.spooled, metrics.queue_depth, metrics.failed) == (320, 0, 0, 0)
    assert metrics.calls < 320 / 2  # batched: several athletes per PutRecords
    assert proxy.counters().forwarded == metrics.calls
    assert metrics.send_latency.p50_ms is not None
    assert metrics.send_latency.p50_ms <= metrics.send_latency.p99_ms  # type: ignore[operator]
    assert metrics.delivery_latency.samples == 320
    assert spooled_on_disk(tmp_path / "spool.db") == 0


@pytest.mark.stack
@run_async
async def test_partial_failures_resend_only_failed_entries_without_reordering(
    settings: Settings, kinesis: Any, stream: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    proxy.set_fault(FailEntries(0.3, seed=4))
    async with producer_through(proxy, settings, stream, tmp_path / "spool.db") as producer:
        keys = await submit_steadily(producer, 6, 60, rate_hz=100)
        metrics = await producer.flush(timeout=120)

    injected = proxy.counters().failed_entries
    report = check_delivery(read_stream(kinesis, stream), keys)
    assert report.exactly_once_in_order, report
    # The proxy keeps failed entries from the emulator, so a resend is never a duplicate.
    assert report.raw_duplicates == 0
    assert injected > 0.15 * len(keys)
    assert metrics.failed == injected
    assert metrics.retried == injected
    assert metrics.sent == len(keys)
    assert set(metrics.errors) == {"ProvisionedThroughputExceededException", "InternalFailure"}


@pytest.mark.stack
@run_async
async def test_throttled_and_failing_calls_back_off_and_lose_nothing(
    settings: Settings, kinesis: Any, stream: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    async with producer_through(proxy, settings, stream, tmp_path / "spool.db") as producer:
        proxy.set_fault(
            Respond.kinesis_error("ProvisionedThroughputExceededException", probability=0.5)
        )
        keys = await submit_steadily(producer, 4, 30, rate_hz=50)
        proxy.set_fault(Respond.kinesis_error("InternalFailure", status=500, times=5))
        keys += await submit_steadily(producer, 4, 30, rate_hz=50, first_seq=30)
        metrics = await producer.flush(timeout=120)

    report = check_delivery(read_stream(kinesis, stream), keys)
    assert report.exactly_once_in_order, report
    assert report.raw_duplicates == 0
    assert metrics.errors["ProvisionedThroughputExceededException"] > 0
    assert metrics.errors["InternalFailure"] > 0
    assert metrics.retried == metrics.failed > 0
    assert proxy.counters().by_status[400] > 0


@pytest.mark.stack
@run_async
async def test_answers_slower_than_the_read_timeout_are_retried(
    settings: Settings, kinesis: Any, stream: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The emulator stores the late calls too: the resends show up as raw duplicates."""
    slow_client = aws_client(
        settings.with_overrides(aws_endpoint_url=proxy.url),
        "kinesis",
        retries={"total_max_attempts": 1, "mode": "standard"},
        read_timeout=1,
    )
    proxy.set_fault(Delay(1.5, match=kinesis_operation("PutRecords"), times=3))
    async with KinesisProducer(slow_client, stream, spool_path=tmp_path / "spool.db") as producer:
        keys = await submit_steadily(producer, 3, 20, rate_hz=20)
        metrics = await producer.flush(timeout=60)
    for _ in range(50):  # the last late call may still be on its way to the emulator
        if proxy.counters().forwarded == metrics.calls:
            break
        await asyncio.sleep(0.1)  # polling interval

    report = check_delivery(read_stream(kinesis, stream), keys)
    assert report.exactly_once_in_order, report
    timed_out = metrics.errors["ReadTimeoutError"]
    assert 3 <= timed_out <= 9  # three calls of one to three athletes each
    assert report.raw_duplicates == timed_out
    assert metrics.retried == timed_out
    assert proxy.counters().delayed == 3


@pytest.mark.stack
@run_async
async def test_an_outage_mid_session_is_spooled_then_drained_in_order(
    settings: Settings, kinesis: Any, stream: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """10 s without Kinesis in a 16 s session: 2 s of lost answers, then refused connections."""
    spool_path = tmp_path / "spool.db"
    async with producer_through(proxy, settings, stream, spool_path) as producer:
        session = asyncio.create_task(submit_steadily(producer, 3, 160, rate_hz=10))
        # The sleeps are the scenario's phases: 3 s healthy, 2 s of lost answers, 8 s refused.
        await asyncio.sleep(3)  # a phase of the scenario
        proxy.set_fault(Drop(after_forward=True))  # stored by the emulator, answer lost
        await asyncio.sleep(2)  # a phase of the scenario
        proxy.set_fault(Refuse())
        sent_at_outage = producer.metrics().sent
        await asyncio.sleep(8)  # a phase of the scenario
        during = producer.metrics()
        on_disk = spooled_on_disk(spool_path)
        proxy.clear()
        keys = await session
        metrics = await producer.flush(timeout=60)

    assert during.sent == sent_at_outage  # nothing got through the refused connections
    assert during.spooled >= 3 * 10 * 5  # about 8 s of records wait, on disk
    assert on_disk == during.spooled
    report = check_delivery(read_stream(kinesis, stream), keys)
    assert report.exactly_once_in_order, report
    assert report.raw_duplicates > 0  # lost answers were resent: de-duplication is needed
    assert metrics.sent == len(keys) == 480
    assert metrics.errors.get("EndpointConnectionError", 0) > 0
    assert metrics.errors.get("ConnectionClosedError", 0) > 0


@pytest.mark.stack
def test_a_killed_producer_leaves_a_spool_that_the_next_one_drains_first(
    settings: Settings, kinesis: Any, stream: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    spool_path = tmp_path / "spool.db"
    tests_dir = str(Path(__file__).parent)
    script = (
        f"import sys; sys.path.insert(0, {tests_dir!r}); "
        f"from support import {child_producer_main.__name__}; "
        f"{child_producer_main.__name__}(sys.argv[1:])"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, proxy.url, stream, str(spool_path), "3", "200", "first",
         "50"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(child.stdout, lambda line: line == "paused", timeout_s=60)
        proxy.set_fault(Refuse())
        child.stdin.write("go\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        wait_for_line(child.stdout, lambda line: line == "done", timeout_s=60)
        left_behind = spooled_on_disk(spool_path)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    proxy.clear()
    assert left_behind >= 3 * 150  # everything after the pause, unacknowledged

    first_run = [key_of(make_test_record(f"athlete-{a}", "first", s))
                 for s in range(200) for a in range(3)]

    async def second_run() -> list[Key]:
        producer = producer_through(proxy, settings, stream, spool_path)
        async with producer:
            keys = await submit_steadily(producer, 3, 50, rate_hz=100, session="second")
            await producer.flush(timeout=60)
        return keys

    second = asyncio.run(second_run())
    report = check_delivery(read_stream(kinesis, stream), first_run + second)
    assert report.exactly_once_in_order, report  # the old session before the new, per athlete
    with Spool(spool_path) as spool:
        assert len(spool) == 0


@pytest.mark.stack
@run_async
async def test_a_full_spool_refuses_new_records_loudly_and_keeps_the_accepted_ones(
    settings: Settings,
    kinesis: Any,
    stream: str,
    proxy: FaultProxy,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy.set_fault(Refuse())
    accepted: list[Key] = []
    refused = 0
    async with producer_through(
        proxy, settings, stream, tmp_path / "spool.db", max_spool_bytes=1024 * 1024,
        backoff_max_s=0.5,
    ) as producer:
        for seq in range(2500):
            for athlete in range(3):
                record = make_test_record(f"athlete-{athlete}", "s1", seq)
                try:
                    producer.submit(record)
                except SpoolFullError:
                    refused += 1
                    continue
                accepted.append(key_of(record))
            await asyncio.sleep(0)  # yields to the producer's tasks between rounds
        full = producer.metrics()
        proxy.clear()
        metrics = await producer.flush(timeout=120)
        producer.submit(make_test_record("athlete-0", "s2", 0))  # room again
        accepted.append(("athlete-0", "s2", 0))

    assert refused > 0 and full.spool_full
    assert "is full" in caplog.text
    assert metrics.sent == len(accepted) - 1
    report = check_delivery(read_stream(kinesis, stream), accepted)
    assert report.exactly_once_in_order, report


@pytest.mark.stack
@run_async
async def test_a_missing_stream_stops_the_producer_and_keeps_the_records(
    settings: Settings, proxy: FaultProxy, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    spool_path = tmp_path / "spool.db"
    producer = producer_through(proxy, settings, unique_name("hrnb-missing"), spool_path)
    await producer.start()
    producer.submit(make_test_record("athlete-0", "s1", 0))
    with pytest.raises(ProducerError, match="ResourceNotFoundException.*hrnb setup"):
        await producer.flush(timeout=30)
    with pytest.raises(ProducerError, match="ResourceNotFoundException"):
        producer.submit(make_test_record("athlete-0", "s1", 1))
    with pytest.raises(ProducerError):
        await producer.close()
    with Spool(spool_path) as spool:
        assert len(spool) == 1


@pytest.mark.stack
def test_streaming_never_creates_the_stream(
    settings: Settings, kinesis: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Issue #12 item 3: only set-up creates streams; a missing one stops the command."""
    own = settings.with_overrides(prefix=unique_name("fresh"), state_dir=tmp_path)
    with pytest.raises(ProvisionError, match="does not exist .*run 'hrnb setup' first") as caught:
        check_stream_ready(own, client=kinesis)
    assert caught.value.resource == own.stream_name
    assert own.stream_name not in kinesis.list_streams()["StreamNames"]


@pytest.mark.stack
def test_a_foreign_or_unread_stream_stops_the_command(
    settings: Settings, kinesis: Any, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Issue #12 item 3: an untagged stream (made by someone else), or one of this prefix that
    no trigger reads, takes no sample."""
    own = settings.with_overrides(prefix=unique_name("foreign"), state_dir=tmp_path)
    kinesis.create_stream(StreamName=own.stream_name, ShardCount=1)
    try:
        kinesis.get_waiter("stream_exists").wait(StreamName=own.stream_name)
        with pytest.raises(ProvisionError, match="not made by hrnb set-up.*'hrnb setup'"):
            check_stream_ready(own, client=kinesis)
        kinesis.add_tags_to_stream(StreamName=own.stream_name, Tags={"hrnb:prefix": own.prefix})
        with pytest.raises(ProvisionError, match="nothing reads .*'hrnb setup'"):
            check_stream_ready(own, client=kinesis)
    finally:
        kinesis.delete_stream(StreamName=own.stream_name)

