"""A producer in its own process, for the crash test: a simulated athlete streamed through
:class:`hrnb.stream.session.StreamSession` into :class:`hrnb.stream.producer.KinesisProducer`, as
``hrnb stream`` does, with the live view's model listening.

Each sample becomes one JSON line on stdout as soon as the producer accepted it: its identity,
what the live header shows and the producer's counters; a ``persisted`` line follows once the
producer has it in the on-disk spool. A line ``stop`` on stdin ends the
session cleanly (flush, then a ``summary`` line); the test may instead SIGKILL the process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime

from hrnb.config import Settings
from hrnb.live import LiveModel
from hrnb.sources import ConnectionEvent, Sample, SimulatedSource
from hrnb.stream.producer import KinesisProducer, kinesis_client
from hrnb.stream.session import StreamSession


async def run(args: argparse.Namespace) -> None:
    settings = Settings.from_env(target="local", aws_endpoint_url=args.endpoint)
    source = SimulatedSource([args.athlete], rate_hz=args.rate, seed=args.seed,
                             contact_loss_every_s=None)
    producer = KinesisProducer(kinesis_client(settings), args.stream, spool_path=args.spool,
                               backoff_max_s=1.0)
    live = LiveModel()
    announcing: set[asyncio.Task[None]] = set()

    async def announce_persisted(seq: int) -> None:
        await producer.persisted()
        print(json.dumps({"persisted": seq}), flush=True)

    def report(item: Sample | ConnectionEvent) -> None:
        now = datetime.now(UTC)
        live.apply(item, now)
        if not isinstance(item, Sample):
            return
        metrics = producer.metrics()
        header = live.header(item.athlete_id, now)
        print(json.dumps({
            "sample": {"athlete_id": item.athlete_id, "session_id": item.session_id,
                       "seq": item.seq},
            "heart_rate": item.heart_rate,
            "header_bpm": header.bpm,
            "window_points": len(live.athletes[item.athlete_id].points),
            "sent": metrics.sent,
            "unsent": metrics.unsent,
        }), flush=True)
        task = asyncio.get_running_loop().create_task(announce_persisted(item.seq))
        announcing.add(task)
        task.add_done_callback(announcing.discard)

    async with producer:
        session = StreamSession(source, producer, listeners=[report], flush_timeout_s=60)
        streaming = asyncio.create_task(session.run())
        await asyncio.to_thread(sys.stdin.readline)  # "stop", or end of input
        await session.stop()
        summary = await streaming
    print(json.dumps({"summary": {"samples": summary.samples, "sent": summary.producer.sent,
                                  "unsent": summary.unsent}}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="Kinesis endpoint (a fault proxy)")
    parser.add_argument("--stream", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--athlete", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
