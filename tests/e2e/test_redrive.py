"""The redrive path end to end: OpenSearch refuses for longer than the trigger's retry budget,
the given-up batches' coordinates land in the failure queue (as Lambda's on-failure records),
OpenSearch comes back, and ``hrnb redrive`` indexes every record of them, once."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from e2e_helpers import Pipeline, say
from support import wait_until
from support.faultproxy import FaultProxy, Refuse

from hrnb import provision
from hrnb.clients import aws_client
from hrnb.redrive import redrive
from hrnb.wire.records import encode_record, make_record

pytestmark = pytest.mark.stack

PipelineFactory = Callable[..., Pipeline]
RECORDS = 12


def test_batches_given_up_during_an_outage_are_redriven_once(
        pipeline: PipelineFactory) -> None:
    pipe = pipeline(opensearch_proxy=FaultProxy, shards=1,
                    options=provision.EventSourceOptions(max_retry_attempts=1))
    proxy = pipe.opensearch_proxy
    proxy.set_fault(Refuse())
    start = datetime.now(UTC) - timedelta(seconds=RECORDS)
    records = [make_record(athlete_id="redrive-a1", session_id="outage", device_id="strap",
                           seq=seq, timestamp=start + timedelta(seconds=seq), heart_rate=120,
                           rr_intervals_ms=(500.0,), sensor_contact=True)
               for seq in range(RECORDS)]
    keys = [("redrive-a1", "outage", seq) for seq in range(RECORDS)]
    pipe.put_raw([encode_record(record) for record in records], "redrive-a1")
    say(f"OpenSearch refuses; {RECORDS} records written; waiting for the trigger to give up")
    wait_until(lambda: len(pipe.poller.discarded(pipe.mapping_uuid)) == RECORDS,
               timeout_s=90, what="every batch given up")
    assert pipe.count() == 0
    sqs = aws_client(pipe.settings, "sqs")
    url = sqs.get_queue_url(QueueName=pipe.settings.failure_queue_name)["QueueUrl"]
    peek = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=0)
    body = json.loads(peek["Messages"][0]["Body"])
    assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert body["KinesisBatchInfo"]["streamArn"].endswith(f"stream/{pipe.stream_name}")
    assert {"shardId", "startSequenceNumber", "endSequenceNumber",
            "batchSize"} <= set(body["KinesisBatchInfo"])

    proxy.clear()
    report = redrive(pipe.settings, progress=say)
    assert report.complete, report
    assert report.batches == report.redriven > 0
    assert report.records == RECORDS
    pipe.wait_indexed(RECORDS, timeout_s=30)
    pipe.assert_exactly_once(keys)
    again = redrive(pipe.settings)  # nothing left: the queue was emptied
    assert (again.batches, again.records) == (0, 0)
    pipe.assert_exactly_once(keys)
