"""The handler's CPU per record without the HTTP round trip, measured in the Lambda interpreter.

Run by ``bench/bench_handler.py`` as ``python3.12 -I -S bench/handler_probe.py INPUT`` with the
unpacked function zip on ``sys.path`` (as ``hrnb.local.worker`` runs the handler), so it times
the packaged code on the runtime's Python. INPUT is a JSON file: ``paths`` (the zip's root, then
where Powertools is installed, for the comparisons below), ``environment`` (the function's
variables), ``rounds``, ``output`` (where the figures go; stdout carries the handler's logs) and
``batches``: for each batch size, its ``events``, ``answer`` and ``rewrite_answer``, the node's
real ``_bulk`` answers to the first write of a batch that size (``created`` items) and to a
rewrite (``updated``).

Everything is timed with ``time.process_time`` (CPU of this process only, no waiting), batch by
batch, the best of the rounds for each batch, summed and divided by the number of records:

- ``invocation``: ``lambda_handler`` on every event, the whole path (its log lines, decoding,
  validation, the bodies, SigV4 signing, parsing and sorting the answers), with the transport's
  sending replaced by the node's answer cut to each request's items (no network);
  ``invocation_rewrite`` the same with the answer to a rewrite;
- its steps alone: ``decode_validate`` (``to_delivery``), ``body`` (the ``_bulk`` bytes),
  ``sign`` (``hrnb.wire.sigv4`` on the body), ``fixed`` (``lambda_handler`` on an empty batch:
  the per-invocation cost, shared by the batch's records);
- the decoding alternatives: Powertools' Kinesis data classes against reading the event dict;
  the payload checked by ``canonical_record`` (one expression, the fast path) against
  ``decode_record`` (``json.loads`` and the field-by-field checks, the path for the rest);
- the log: one batch line, with the invocation's start, through ``hrnb.wire.jsonlog`` against
  Powertools' Logger and its ``inject_lambda_context`` (µs per invocation, not per record);
- the stdlib JSON work inside those steps (parsing the payloads, encoding the documents): the
  most a faster JSON library could save.

Writes one JSON object to ``output``. Stdlib, the zip and Powertools only.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def best_us_per_record(step: Callable[[int], object], batches: int, records: int,
                       rounds: int) -> float:
    """CPU µs per record of ``step`` run on each batch: per batch the best of the rounds (the
    run least disturbed by other work on the machine), summed."""
    best = [float("inf")] * batches
    for _ in range(rounds):
        for number in range(batches):
            started = time.process_time()
            step(number)
            best[number] = min(best[number], time.process_time() - started)
    return sum(best) / records * 1e6


def measure(handler: Any, indexer: Any, canned: Any, batch: dict[str, Any], rounds: int,
            context: type) -> dict[str, float]:
    """µs per record of the whole invocation and of its steps, for one batch size."""
    from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent

    events = batch["events"]
    now = datetime.now(UTC)
    ingested_at = handler.format_timestamp(now)

    def invoke(number: int, answer: str) -> None:
        canned.answer = batch[answer]
        reply = handler.lambda_handler(events[number], context())
        if reply["batchItemFailures"]:
            raise SystemExit(f"canned answer refused: {reply}")

    def invocation(number: int) -> None:
        invoke(number, "answer")

    def invocation_rewrite(number: int) -> None:
        invoke(number, "rewrite_answer")

    def decode_validate(number: int) -> list[Any]:
        return [handler.to_delivery(record, indexer.config, now, ingested_at)
                for record in events[number]["Records"]]

    deliveries = [decode_validate(number) for number in range(len(events))]

    def body(number: int) -> list[bytes]:
        return ["".join(lines).encode()
                for _, lines in handler.bulk_chunks(deliveries[number])]

    bodies = [body(number) for number in range(len(events))]

    def sign(number: int) -> None:
        transport = indexer.transport
        for data in bodies[number]:
            transport.signer.sign("POST", transport.host, indexer.bulk_path, handler.BULK_QUERY,
                                  {"Content-Type": "application/json"}, data)

    def fixed(number: int) -> None:
        handler.lambda_handler({"Records": []}, context())

    def powertools_decode(number: int) -> None:
        for record in KinesisStreamEvent(events[number]).records:
            record.kinesis.data_as_bytes()
            record.kinesis.approximate_arrival_timestamp  # noqa: B018 - timed access

    def dict_decode(number: int) -> None:
        for record in events[number]["Records"]:
            base64.b64decode(record["kinesis"]["data"])
            float(record["kinesis"]["approximateArrivalTimestamp"])

    payloads = [[base64.b64decode(record["kinesis"]["data"]) for record in event["Records"]]
                for event in events]

    def canonical(number: int) -> None:
        for data in payloads[number]:
            handler.canonical_record(data)

    def json_validate(number: int) -> None:
        for data in payloads[number]:
            handler.decode_record(data)

    def json_decode(number: int) -> None:
        for data in payloads[number]:
            json.loads(data)

    def json_encode(number: int) -> None:
        for delivery in deliveries[number]:
            handler._encode_json(delivery.document)

    steps = {"invocation": invocation, "invocation_rewrite": invocation_rewrite,
             "decode_validate": decode_validate, "body": body, "sign": sign, "fixed": fixed,
             "powertools_decode": powertools_decode, "dict_decode": dict_decode,
             "canonical": canonical, "json_validate": json_validate,
             "json_decode": json_decode, "json_encode": json_encode}
    count = sum(len(event["Records"]) for event in events)
    return {"records": count, **{name: best_us_per_record(step, len(events), count, rounds)
                                  for name, step in steps.items()}}


def log_line_us(context: type, rounds: int, lines: int = 2000) -> dict[str, float]:
    """CPU µs of one invocation's log work (its start and the batch line, written to memory),
    with ``hrnb.wire.jsonlog`` and with Powertools' Logger: the best of the rounds."""
    import io
    import logging

    from aws_lambda_powertools import Logger

    from hrnb.wire.jsonlog import JsonLog

    fields = {"records": 100, "indexed": 100, "dead_lettered": 0, "failed": 0, "alerts": 0,
              "failure_statuses": {}, "batch_lag_ms": 120}
    sink = io.StringIO()
    own = JsonLog("bench", sink)
    powertools = Logger(service="bench", utc=True, logger_handler=logging.StreamHandler(sink))

    def with_jsonlog() -> None:
        own.start(context())
        own.info("batch processed", fields)

    @powertools.inject_lambda_context(log_event=False, clear_state=True)
    def with_powertools(event: object, lambda_context: object) -> None:
        powertools.info("batch processed", extra=fields)

    def timed(write: Callable[[], object]) -> float:
        best = float("inf")
        for _ in range(rounds):
            sink.seek(0)
            sink.truncate()
            started = time.process_time()
            for _ in range(lines):
                write()
            best = min(best, time.process_time() - started)
        return best / lines * 1e6

    return {"jsonlog": timed(with_jsonlog),
            "powertools": timed(lambda: with_powertools({}, context()))}


def main(path: str) -> int:
    spec = json.loads(open(path).read())
    sys.path[:0] = spec["paths"]
    os.environ.update(spec["environment"])
    import handler

    class CannedBulk:
        """Answers each request with the node's real answer for a batch of this size, cut to
        the request's own items (the handler posts a batch of 50 or more in two halves)."""

        answer = b""

        def __init__(self, transport: Any) -> None:
            self.transport = transport

        def send(self, path: str, query: str, body: bytes, timeout_s: float,
                 content_type: str = "application/json") -> Any:
            self.transport.signer.sign("POST", self.transport.host, path, query,
                                       {"Content-Type": content_type}, body)  # as sent
            return CannedExchange(self.cut(self.answer, body.count(b"\n") // 2))

        @staticmethod
        @functools.cache
        def cut(answer: bytes, items: int) -> bytes:
            parsed = json.loads(answer)
            return json.dumps({**parsed, "items": parsed["items"][:items]},
                              separators=(",", ":")).encode()

    class CannedExchange:
        def __init__(self, content: bytes) -> None:
            self.content = content

        def answer(self) -> tuple[int, bytes]:
            return 200, self.content

    class Context:
        function_name = "bench"
        memory_limit_in_mb = 128
        invoked_function_arn = "arn:bench"
        aws_request_id = "bench"

        def get_remaining_time_in_millis(self) -> int:
            return 60_000

    indexer = handler.indexer()
    canned = CannedBulk(indexer.transport)
    indexer.transport.send = canned.send
    results = {}
    for size, batch in spec["batches"].items():
        batch["answer"] = batch["answer"].encode()
        batch["rewrite_answer"] = batch["rewrite_answer"].encode()
        results[size] = measure(handler, indexer, canned, batch, spec["rounds"], Context)
    results["log"] = log_line_us(Context, spec["rounds"])
    with open(spec["output"], "w") as out:  # stdout carries the handler's logs
        json.dump(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
