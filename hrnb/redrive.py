"""Redrive: the batches the trigger gave up on, read again from the stream and indexed.

When OpenSearch refuses for longer than the trigger's retry budget, Lambda gives the batch up
and sends its coordinates (shard, first and last sequence number) to the failure queue, the
trigger's on-failure destination. ``redrive()`` (``hrnb redrive``, and a cell of notebook 01)
reads each such range back from the stream while its retention lasts and runs the function on
it again with Lambda's Kinesis event. The function indexes under a deterministic ``_id``
(athlete/session/seq), so a redriven record that was indexed after all is still one document.
A message is deleted only when every record of its range went through; what cannot be redriven
(records past the stream's retention, a function that fails again) is named in the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.provision.base import AwsClients, _aws
from hrnb.provision.queue import failure_queue_url
from hrnb.wire.kinesis import kinesis_event

#: One invocation's answer: None when it failed as a whole, else its payload.
Invoke = Callable[[Mapping[str, Any]], Any]


_ATTEMPTS = 3


_MAX_EVENT_RECORDS = 500


@dataclass(frozen=True)
class FailedBatch:
    """One on-failure record: where a given-up batch lies in the stream."""

    shard_id: str
    start: str
    end: str
    size: int
    condition: str
    receipt: str

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> FailedBatch:
        body = json.loads(message["Body"])
        info = body["KinesisBatchInfo"]
        return cls(shard_id=info["shardId"], start=info["startSequenceNumber"],
                   end=info["endSequenceNumber"], size=int(info["batchSize"]),
                   condition=str(body.get("requestContext", {}).get("condition", "")),
                   receipt=message["ReceiptHandle"])

    def describe(self) -> str:
        return f"{self.shard_id} {self.start}..{self.end} ({self.size} records, {self.condition})"


@dataclass(frozen=True)
class RedriveReport:
    """What a redrive did: batches found, redriven, and what could not be."""

    batches: int
    redriven: int
    records: int
    lost: tuple[str, ...]  # ranges (partly) past the stream's retention
    failed: tuple[str, ...]  # ranges the function failed on again (left in the queue)

    @property
    def complete(self) -> bool:
        return not self.lost and not self.failed


def redrive(settings: Settings, *, clients: AwsClients | None = None,
            invoke: Invoke | None = None,
            progress: Callable[[str], None] | None = None) -> RedriveReport:
    """Redrive every batch in the failure queue (see the module docstring). ``invoke`` runs
    the function: by default Lambda's Invoke on AWS, the deployed zips on the local stack."""
    aws = clients or AwsClients(settings)
    say = progress or (lambda _message: None)
    queue = failure_queue_url(aws, settings)
    if queue is None:
        raise ProvisionError(f"queue {settings.failure_queue_name} does not exist; run "
                             "'hrnb setup' first", resource=settings.failure_queue_name)
    run, close = (invoke, lambda: None) if invoke else _default_invoke(settings, aws)
    try:
        return _redrive(settings, aws, queue, run, say)
    finally:
        close()


def _redrive(settings: Settings, aws: AwsClients, queue: str, run: Invoke,
             say: Callable[[str], None]) -> RedriveReport:
    batches = redriven = records = 0
    lost: list[str] = []
    failed: list[str] = []
    while True:
        messages = _aws(settings.failure_queue_name, "read queue", aws.sqs.receive_message,
                        QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                        VisibilityTimeout=120).get("Messages", [])
        if not messages:
            break
        for message in messages:
            batch = FailedBatch.from_message(message)
            batches += 1
            found = _read_range(aws, settings, batch)
            if len(found) < batch.size:
                lost.append(f"{batch.describe()}: {batch.size - len(found)} records no longer "
                            "in the stream (retention)")
            if found and not _deliver(settings, aws, run, batch.shard_id, found):
                failed.append(f"{batch.describe()}: the function failed again")
                continue
            records += len(found)
            if len(found) == batch.size:
                redriven += 1
                _aws(settings.failure_queue_name, "delete message from queue",
                     aws.sqs.delete_message, QueueUrl=queue, ReceiptHandle=batch.receipt)
            say(f"redrove {batch.describe()}")
    return RedriveReport(batches, redriven, records, tuple(lost), tuple(failed))


def _read_range(aws: AwsClients, settings: Settings,
                batch: FailedBatch) -> list[dict[str, Any]]:
    """The records of a range still in the stream, in order."""
    name = settings.stream_name
    try:
        iterator = aws.kinesis.get_shard_iterator(
            StreamName=name, ShardId=batch.shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=batch.start)["ShardIterator"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("InvalidArgumentException",
                                                          "ResourceNotFoundException"):
            return []  # the start is past the retention, or the shard is gone
        raise
    found: list[dict[str, Any]] = []
    end = int(batch.end)
    while iterator:
        page = _aws(name, "read stream", aws.kinesis.get_records, ShardIterator=iterator,
                    Limit=1000)
        for record in page["Records"]:
            if int(record["SequenceNumber"]) > end:
                return found
            if int(record["SequenceNumber"]) >= int(batch.start):
                found.append(record)
        if not page["Records"] and not page.get("MillisBehindLatest"):
            return found
        iterator = page.get("NextShardIterator")
    return found


def _deliver(settings: Settings, aws: AwsClients, run: Invoke, shard_id: str,
             records: Sequence[Mapping[str, Any]]) -> bool:
    """Invoke the function with the records, in events of at most 500, resuming from the first
    failed item of a ``batchItemFailures`` answer; True when all went through."""
    position = 0
    attempts = 0
    while position < len(records):
        chunk = records[position:position + _MAX_EVENT_RECORDS]
        event = kinesis_event(chunk, shard_id=shard_id, stream_arn=aws.arns.stream,
                              region=settings.region, role_arn=aws.arns.role)
        answer = run(event)
        failures = [] if not isinstance(answer, Mapping) else [
            item.get("itemIdentifier") for item in answer.get("batchItemFailures") or []]
        if answer is not None and not failures:
            position += len(chunk)
            attempts = 0
            continue
        sequence = [record["SequenceNumber"] for record in chunk]
        done = min((sequence.index(item) for item in failures if item in sequence), default=0)
        position += done
        attempts = 0 if done else attempts + 1
        if attempts >= _ATTEMPTS:
            return False
        time.sleep(0.5 * attempts)
    return True


def _default_invoke(settings: Settings,
                    aws: AwsClients) -> tuple[Invoke, Callable[[], None]]:
    if settings.is_local:
        from hrnb.local.redrive import local_invoke

        return local_invoke(settings, aws)

    def invoke(event: Mapping[str, Any]) -> Any:
        answer = _aws(settings.function_name, "invoke function", aws.lambda_.invoke,
                      FunctionName=settings.function_name, Payload=json.dumps(event).encode())
        if answer.get("FunctionError"):
            return None
        return json.loads(answer["Payload"].read() or b"null")

    return invoke, lambda: None
