"""Helpers shared by the tests and the benchmarks: free ports, temporary streams, putting
records on a stream and reading them back, checking delivery.

``faultproxy`` (a fault-injecting HTTP proxy) lives next to this module. ``child_producer_main``
is the body of a real producer process that tests kill to prove the spool survives a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import random
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
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


@functools.cache
def handler_module() -> ModuleType:
    """``lambda/handler.py`` imported from its folder in this interpreter (its pure steps and
    constants; the packaged function runs in ``hrnb.local.worker``)."""
    spec = importlib.util.spec_from_file_location(
        "hrnb_lambda_handler", Path(__file__).resolve().parents[2] / "lambda" / "handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A loopback TCP port nothing listens on right now, and the one after it too (a secured
    stack's node takes its front's port + 1 unless told otherwise).

    Chosen below the kernel's ephemeral range: a port the kernel handed out (``bind(0)``) may be
    given to an outgoing connection before the test's server binds it, which failed a CI run."""
    lowest_ephemeral = _lowest_ephemeral_port()
    chooser = random.SystemRandom()
    for _ in range(200):
        port = chooser.randrange(_LOWEST_TEST_PORT, lowest_ephemeral - 1)
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError(f"no free loopback port pair in {_LOWEST_TEST_PORT}-{lowest_ephemeral - 1}")


#: Test ports start above the project's own defaults (4566, 9200) and the helpers' ranges.
_LOWEST_TEST_PORT = 12000


def _lowest_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], Any], *, timeout_s: float = 30.0, what: str = "",
               interval_s: float = 0.1) -> Any:
    """Poll ``check`` until it returns something true (its value); AssertionError naming
    ``what`` after ``timeout_s``. The sleep is the polling interval: the wait ends on the
    condition, not on a guess of how long something takes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval_s)  # the polling interval (see the docstring)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what or check}")


async def eventually(check: Callable[[], Any], *, timeout_s: float = 10.0, what: str = "",
                     interval_s: float = 0.01) -> Any:
    """:func:`wait_until` on the event loop: the loop's other tasks run between polls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(interval_s)  # the polling interval, see wait_until
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what or check}")


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


def put_payloads(client: Any, stream_name: str, payloads: Sequence[bytes],
                 partition_key: str = "athlete-1") -> list[str]:
    """PutRecords in requests of 500 as any writer could; every entry must be accepted.
    Returns the sequence numbers in order."""
    sequence_numbers: list[str] = []
    for start in range(0, len(payloads), 500):
        answer = client.put_records(StreamName=stream_name, Records=[
            {"Data": data, "PartitionKey": partition_key}
            for data in payloads[start:start + 500]])
        assert answer["FailedRecordCount"] == 0, answer
        sequence_numbers += [entry["SequenceNumber"] for entry in answer["Records"]]
    return sequence_numbers


def read_shard(client: Any, stream_name: str, shard_id: str, *, at_least: int = 0,
               timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """One shard's records from its start, as GetRecords returns them: up to the first empty
    page, or, with ``at_least``, until that many arrived (AssertionError after ``timeout_s``)."""
    iterator = client.get_shard_iterator(
        StreamName=stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while iterator:
        page = client.get_records(ShardIterator=iterator, Limit=10000)
        records += page["Records"]
        iterator = page.get("NextShardIterator")
        if not at_least and not page["Records"] or at_least and len(records) >= at_least:
            break
        assert time.monotonic() < deadline, f"{len(records)} of {at_least} after {timeout_s} s"
    return records


def read_stream(client: Any, stream_name: str) -> list[StreamedRecord]:
    """Every record on every shard, from the start, in each shard's order (GetRecords)."""
    return [
        StreamedRecord(
            shard_id=shard["ShardId"],
            sequence_number=item["SequenceNumber"],
            partition_key=item["PartitionKey"],
            record=decode_record(item["Data"]),
        )
        for shard in client.list_shards(StreamName=stream_name)["Shards"]
        for item in read_shard(client, stream_name, shard["ShardId"])
    ]


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
            await asyncio.sleep(0.005 * int(athletes))  # pacing: about 200 records a second
        await producer.persisted()
        print("done", flush=True)
        await asyncio.sleep(3600)  # waits to be killed: the test's crash

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
