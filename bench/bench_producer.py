"""Records per second into the emulated Kinesis: hrnb's batched producer beside the reference.

Side by side in one run, on the same records, alternating round by round, each measurement on a
fresh stream of the local stack (the emulator's PutRecord slows down as a shard fills):

- **reference**: the reference project's way, one synchronous ``put_record`` per sample with the
  constant partition key ``"partition-key"``, called where the sample arrives (so the source
  waits for every call);
- **producer**: :class:`hrnb.stream.producer.KinesisProducer` with its defaults (on-disk spool,
  PutRecords batches of at most one record per athlete, 50 ms linger); the records are submitted
  as fast as the source can and the clock stops when Kinesis acknowledged the last one.

For 1, 10 and 100 athletes it reports records/s (best of ``--rounds``), the ratio, PutRecords
calls, and how long the source is blocked per sample, checks that every record of every
measurement arrived, and writes ``docs/benchmarks/producer.md``. Needs the local stack
(``hrnb local up``)::

    python bench/bench_producer.py [--records 3000] [--rounds 3] [--athletes 1,10,100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # tests/support

from support import read_stream  # noqa: E402

from hrnb.config import Settings  # noqa: E402
from hrnb.stream.producer import KinesisProducer, kinesis_client  # noqa: E402
from hrnb.wire.records import Record, encode_record, make_record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_PARTITION_KEY = "partition-key"


@dataclass(frozen=True)
class Run:
    records: int
    seconds: float
    calls: int
    blocked_s: float  # total time the source spent inside put_record / submit

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    @property
    def blocked_us_per_sample(self) -> float:
        return self.blocked_s / self.records * 1e6


def make_records(athletes: int, total: int, session: str) -> list[Record]:
    start = datetime.now(UTC) - timedelta(hours=1)
    per_athlete = -(-total // athletes)
    return [
        make_record(
            athlete_id=f"bench-{athlete:03d}",
            session_id=session,
            device_id=f"strap-{athlete:03d}",
            seq=seq,
            timestamp=start + timedelta(milliseconds=250 * seq),
            heart_rate=120 + seq % 40,
            rr_intervals_ms=(500.0, 498.0),
            sensor_contact=True,
            energy_expended=None,
        )
        for seq in range(per_athlete)
        for athlete in range(athletes)
    ][:total]


def run_reference(client: Any, stream: str, records: Sequence[Record]) -> Run:
    """One put_record per sample, synchronous, constant key: what the reference did."""
    started = time.perf_counter()
    for record in records:
        client.put_record(
            StreamName=stream, Data=encode_record(record), PartitionKey=REFERENCE_PARTITION_KEY
        )
    seconds = time.perf_counter() - started
    return Run(len(records), seconds, len(records), seconds)


async def run_producer(client: Any, stream: str, records: Sequence[Record], spool: Path) -> Run:
    async with KinesisProducer(client, stream, spool_path=spool) as producer:
        started = time.perf_counter()
        blocked = 0.0
        for record in records:
            before = time.perf_counter()
            producer.submit(record)
            blocked += time.perf_counter() - before
        metrics = await producer.flush(timeout=600)
        seconds = time.perf_counter() - started
    if metrics.sent != len(records) or metrics.unsent:
        raise SystemExit(f"producer delivered {metrics.sent} of {len(records)} records")
    return Run(len(records), seconds, metrics.calls, blocked)


@contextlib.contextmanager
def fresh_stream(settings: Settings, client: Any, expected: int) -> Iterator[str]:
    """A new stream for one measurement; afterwards it must hold ``expected`` records."""
    stream = f"hrnb-bench-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=stream, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    client.get_waiter("stream_exists").wait(StreamName=stream,
                                            WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    try:
        yield stream
        found = count_on_stream(client, stream)
        if found != expected:
            raise SystemExit(f"{found} records on {stream}, {expected} sent")
    finally:
        client.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)


def count_on_stream(client: Any, stream: str) -> int:
    return len(read_stream(client, stream))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="records per round (3000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per athlete count (3)")
    parser.add_argument("--athletes", default="1,10,100", help="athlete counts (1,10,100)")
    parser.add_argument("--output", type=Path, default=ROOT / "docs/benchmarks/producer.md")
    args = parser.parse_args(argv)
    athlete_counts = [int(part) for part in args.athletes.split(",") if part]
    if args.records < 1 or args.rounds < 1 or not athlete_counts or min(athlete_counts) < 1:
        parser.error("--records, --rounds and every --athletes count must be positive")

    settings = Settings.from_env(target="local")
    client = kinesis_client(settings)
    results: dict[int, tuple[Run, Run]] = {}
    with tempfile.TemporaryDirectory(prefix="hrnb-bench-") as scratch:
        for athletes in athlete_counts:
            best_reference: Run | None = None
            best_producer: Run | None = None
            for round_number in range(1, args.rounds + 1):
                records = make_records(athletes, args.records, f"r{round_number}")
                # A fresh stream for every measurement: the emulator slows as a shard fills.
                with fresh_stream(settings, client, len(records)) as stream:
                    reference = run_reference(client, stream, records)
                spool = Path(scratch) / f"spool-{athletes}-{round_number}.sqlite3"
                with fresh_stream(settings, client, len(records)) as stream:
                    producer = asyncio.run(run_producer(client, stream, records, spool))
                print(
                    f"  {athletes:>4} athletes  round {round_number}/{args.rounds}:  "
                    f"reference {reference.per_second:8,.0f} rec/s   "
                    f"producer {producer.per_second:8,.0f} rec/s ({producer.calls} calls)",
                    flush=True,
                )
                if best_reference is None or reference.seconds < best_reference.seconds:
                    best_reference = reference
                if best_producer is None or producer.seconds < best_producer.seconds:
                    best_producer = producer
            assert best_reference is not None and best_producer is not None
            results[athletes] = (best_reference, best_producer)
    print("  checked: every record of every measurement was read back off its stream")

    command = "python bench/bench_producer.py " + " ".join(
        [f"--records {args.records}", f"--rounds {args.rounds}", f"--athletes {args.athletes}"]
    )
    report = render(results, command=command, records=args.records, rounds=args.rounds)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"wrote {args.output}")
    return 0


def render(results: dict[int, tuple[Run, Run]], *, command: str, records: int, rounds: int) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# Kinesis producer throughput",
        "",
        "Records per second into the emulated Kinesis of the local stack (moto server on "
        "loopback), the reference project's way beside `hrnb.stream.producer.KinesisProducer`, "
        f"alternating round by round on the same {records:,} records, each measurement on a "
        "fresh on-demand stream (the emulator slows down as a shard fills); "
        f"best of {rounds} rounds. The reference calls `put_record` once per sample with the "
        "constant partition key; the producer spools every record to SQLite, then sends "
        "PutRecords batches of at most one record per athlete (so a failed entry is never "
        "overtaken by a later record of the same athlete) and removes what Kinesis "
        "acknowledged. Every measurement's records were read back off its stream.",
        "",
        f"Command: `{command}`  ",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end (the emulator and other "
        "work share the machine, so absolute rates are noisy; the ratio is the figure to quote).",
        "",
        "| athletes | reference put_record (rec/s) | producer (rec/s) | ratio | producer calls "
        "| source blocked per sample: reference | producer |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for athletes, (reference, producer) in results.items():
        lines.append(
            f"| {athletes} | {reference.per_second:,.0f} | {producer.per_second:,.0f} | "
            f"{producer.per_second / reference.per_second:.2f}× | {producer.calls:,} | "
            f"{reference.blocked_us_per_sample / 1000:.2f} ms | "
            f"{producer.blocked_us_per_sample:.0f} µs |"
        )
    one = results.get(1)
    lines += [
        "",
        "Reading the table:",
        "",
        "- The producer's gain grows with the number of athletes, because a PutRecords call "
        "carries one record per athlete: with many athletes one call replaces hundreds of "
        "`put_record` calls.",
    ]
    if one is not None:
        lines.append(
            "- With a single athlete each call carries one record, like `put_record`, plus the "
            f"spool's bookkeeping ({one[1].per_second / one[0].per_second:.2f}× here). That is "
            "the price of strict per-athlete order under partial failures and of surviving a "
            "crash; one athlete's watch sends 1-4 samples a second, far below either rate."
        )
    lines += [
        "- What matters on the live path is the last two columns: the reference's source "
        "waits for a network round trip per sample (and stalls entirely during an outage), "
        "while `submit()` only validates, encodes and queues.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
