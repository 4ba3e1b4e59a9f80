"""Helpers shared by tests: temporary streams, reading a stream back, checking delivery.

``faultproxy`` (a fault-injecting HTTP proxy) lives next to this module. ``child_producer_main``
is the body of a real producer process that tests kill to prove the spool survives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hrnb.config import Settings
from hrnb.wire.records import Record, decode_record, make_record

Key = tuple[str, str, int]  # (athlete_id, session_id, seq)

_EPOCH = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test on a fresh event loop (pytest sees the same fixtures)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def admin_opensearch(settings: Settings) -> Any:
    """An OpenSearch client with every right, for tests that create, fill and inspect indices:
    the master user on the secured local stack (as set-up signs in on AWS), plain otherwise."""
    from hrnb.provision.security import _admin_opensearch

    return _admin_opensearch(settings, str(settings.resolved_opensearch_url))


def remove_role_mappings(settings: Settings) -> None:
    """Remove the security-plugin roles ensure_role_mapping made for ``settings`` (the local
    node outlives the tests)."""
    from hrnb.provision.security import reader_role_name, writer_role_name

    admin = admin_opensearch(settings)
    for kind in ("rolesmapping", "roles"):
        for role in (writer_role_name(settings), reader_role_name(settings)):
            admin.transport.perform_request(
                "DELETE", f"/_plugins/_security/api/{kind}/{role}", params={"ignore": 404})


def key_of(record: Record) -> Key:
    return (record["athlete_id"], record["session_id"], record["seq"])


def make_test_record(athlete_id: str, session_id: str, seq: int, heart_rate: int = 120) -> Record:
    """A valid record whose measurement time follows ``seq`` (one per 250 ms)."""
    return make_record(
        athlete_id=athlete_id,
        session_id=session_id,
        device_id=f"strap-{athlete_id}",
        seq=seq,
        timestamp=_EPOCH + timedelta(milliseconds=250 * seq),
        heart_rate=heart_rate,
        rr_intervals_ms=(60000 / heart_rate,),
        sensor_contact=True,
    )


@contextlib.contextmanager
def temporary_stream(client: Any, name: str, *, shards: int = 2) -> Iterator[str]:
    """A Kinesis stream that exists for the ``with`` block (deleted afterwards)."""
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    try:
        yield name
    finally:
        client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@dataclass(frozen=True)
class StreamedRecord:
    shard_id: str
    sequence_number: str
    partition_key: str
    record: Record


def read_stream(client: Any, stream_name: str) -> list[StreamedRecord]:
    """Every record on every shard, from the start, in each shard's order (GetRecords)."""
    streamed: list[StreamedRecord] = []
    shards = client.list_shards(StreamName=stream_name)["Shards"]
    for shard in shards:
        iterator = client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10000)
            for item in page["Records"]:
                streamed.append(
                    StreamedRecord(
                        shard_id=shard["ShardId"],
                        sequence_number=item["SequenceNumber"],
                        partition_key=item["PartitionKey"],
                        record=decode_record(item["Data"]),
                    )
                )
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return streamed


@dataclass(frozen=True)
class DeliveryReport:
    """How the stream's content compares with what was submitted."""

    expected: int
    delivered: int  # distinct (athlete, session, seq) found among the expected ones
    missing: tuple[Key, ...]
    unexpected: tuple[Key, ...]
    raw_duplicates: int  # extra copies on the stream (a resend after a lost answer)
    out_of_order: tuple[str, ...]  # athletes whose de-duplicated order differs from submission
    wrong_partition_key: int
    athletes_on_several_shards: tuple[str, ...]

    @property
    def exactly_once_in_order(self) -> bool:
        return not (
            self.missing
            or self.unexpected
            or self.out_of_order
            or self.wrong_partition_key
            or self.athletes_on_several_shards
        )


def check_delivery(streamed: Sequence[StreamedRecord], submitted: Iterable[Key]) -> DeliveryReport:
    """Compare the stream with the submitted keys: loss, duplicates, per-athlete order."""
    submitted = list(submitted)
    expected_order: dict[str, list[Key]] = defaultdict(list)
    for key in submitted:
        expected_order[key[0]].append(key)
    copies = Counter(key_of(item.record) for item in streamed)
    seen: set[Key] = set()
    streamed_order: dict[str, list[Key]] = defaultdict(list)
    shards_by_athlete: dict[str, set[str]] = defaultdict(set)
    for item in streamed:  # per athlete, records sit on one shard in stream order
        key = key_of(item.record)
        shards_by_athlete[key[0]].add(item.shard_id)
        if key not in seen:
            seen.add(key)
            streamed_order[key[0]].append(key)
    expected_set = set(submitted)
    return DeliveryReport(
        expected=len(expected_set),
        delivered=len(expected_set & seen),
        missing=tuple(sorted(expected_set - seen)),
        unexpected=tuple(sorted(seen - expected_set)),
        raw_duplicates=sum(count - 1 for count in copies.values()),
        out_of_order=tuple(
            sorted(
                athlete
                for athlete, keys in expected_order.items()
                if [k for k in streamed_order.get(athlete, []) if k in expected_set] != keys
            )
        ),
        wrong_partition_key=sum(
            1 for item in streamed if item.partition_key != item.record["athlete_id"]
        ),
        athletes_on_several_shards=tuple(
            sorted(athlete for athlete, shards in shards_by_athlete.items() if len(shards) > 1)
        ),
    )


def child_producer_main(argv: Sequence[str]) -> None:
    """A producer process for crash tests: ``ENDPOINT STREAM SPOOL ATHLETES COUNT SESSION PAUSE``.

    Submits COUNT records per athlete, round robin, about 200 a second, printing
    ``submitted N`` after each round. After PAUSE rounds it prints ``paused`` and waits for a
    line on stdin (the test breaks the network meanwhile); at the end it prints ``done`` and
    waits to be killed.
    """
    from hrnb.config import Settings
    from hrnb.stream.producer import KinesisProducer, kinesis_client

    endpoint, stream_name, spool_path, athletes, count, session, pause = argv
    settings = Settings.from_env(target="local", aws_endpoint_url=endpoint)

    async def run() -> None:
        producer = KinesisProducer(
            kinesis_client(settings), stream_name, spool_path=spool_path, backoff_max_s=0.5
        )
        await producer.start()
        submitted = 0
        for seq in range(int(count)):
            if seq == int(pause):
                print("paused", flush=True)
                await asyncio.to_thread(sys.stdin.readline)
            for athlete in range(int(athletes)):
                producer.submit(make_test_record(f"athlete-{athlete}", session, seq))
                submitted += 1
            print(f"submitted {submitted}", flush=True)
            await asyncio.sleep(0.005 * int(athletes))
        await asyncio.sleep(0.5)  # the spooler writes within milliseconds; leave it time anyway
        print("done", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(run())


def wait_for_line(stream: Any, predicate: Any, *, timeout_s: float) -> str:
    """Read lines from a child's stdout until one satisfies ``predicate``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise AssertionError("the child process ended early")
        if predicate(line.strip()):
            return line.strip()
    raise AssertionError(f"no matching line from the child within {timeout_s} s")



def create_function(lam: Any, **request: Any) -> Any:
    """CreateFunction as set-up makes it: retried while a new role has not propagated (the
    emulator refuses a role seconds old, as AWS does)."""
    from hrnb.provision.base import _aws_retrying_propagation

    return _aws_retrying_propagation(request["FunctionName"], "create function",
                                     lam.create_function, progress=lambda _message: None,
                                     **request)
