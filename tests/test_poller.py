"""The local event source mapping poller's pure steps, without a stack: batch sizing, Lambda's
partial-failure rule, the retry schedule and the status lines ``hrnb local status`` prints.
(tests/lambda/test_esm.py runs the poller itself against the stack.)"""

from __future__ import annotations

import json
from pathlib import Path

from hrnb.local.poller import batch_backoff_s, batch_length, first_to_retry, status_lines
from hrnb.provision.state import esm_status_path as status_path
from hrnb.provision.state import read_esm_status as read_status


def test_first_to_retry_follows_lambdas_rules() -> None:
    batch = ["11", "12", "13", "14"]
    assert first_to_retry({"batchItemFailures": []}, batch) is None
    assert first_to_retry(None, batch) is None
    assert first_to_retry({"batchItemFailures": [{"itemIdentifier": "14"},
                                                 {"itemIdentifier": "12"}]}, batch) == 1
    # An answer Lambda cannot read fails the whole batch.
    assert first_to_retry({"batchItemFailures": [{"itemIdentifier": "99"}]}, batch) == 0
    assert first_to_retry({"batchItemFailures": [{"itemIdentifier": ""}]}, batch) == 0
    assert first_to_retry({"batchItemFailures": [{}]}, batch) == 0
    assert first_to_retry({"batchItemFailures": "12"}, batch) == 0


def test_batches_stay_within_batch_size_and_the_payload_limit() -> None:
    small = [{"Data": b"x" * 100}] * 10
    assert batch_length(small, 4) == 4
    assert batch_length(small[:3], 4) == 3
    big = [{"Data": b"x" * 1024 * 1024}] * 10  # 1 MiB each, the Kinesis maximum
    assert batch_length(big, 10) == 4  # 4 x 1.33 MiB base64 fits 6 MB, 5 does not
    assert batch_length(big, 10, max_event_bytes=1) == 1  # never zero


def test_a_failing_batch_waits_half_a_second_doubling_up_to_30_s() -> None:
    assert [batch_backoff_s(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def test_status_lines_show_each_mapping_and_shard(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None  # never ran here
    shard = {"shard_id": "shardId-000000000000", "checkpoint": "49", "iterator_age_ms": 120,
             "millis_behind_latest": 0, "records_read": 10, "records_succeeded": 9,
             "invocations": 3, "function_errors": 1, "partial_failures": 1,
             "records_discarded": 0, "consecutive_failures": 0, "last_error": None}
    mapping = {"uuid": "u-1", "function_name": "hrnb-indexer",
               "event_source_arn": "arn:aws:kinesis:ap-south-1:123456789012:stream/hrnb-hr-stream",
               "batch_size": 100, "batching_window_s": 0.5, "starting_position": "LATEST",
               "report_batch_item_failures": True, "max_retry_attempts": 3,
               "max_record_age_s": 3600, "bisect_on_error": False, "code_sha256": None,
               "python": None, "worker_pid": None, "worker_restarts": 0,
               "last_error": "Timeout", "shards": [shard, {**shard, "iterator_age_ms": None,
                                                             "checkpoint": None}]}
    path = status_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(
        {"pid": 1, "started_at": "", "updated_at": "", "aws_endpoint_url": None,
         "mappings": [mapping]}))
    status = read_status(tmp_path)
    assert status is not None
    assert status_lines(status) == [
        "hrnb-indexer <- hrnb-hr-stream (batch size 100, LATEST, worker pid -, not reading yet),"
        " error: Timeout",
        "  shardId-000000000000: checkpoint 49, iterator age 120 ms, 9 records in 3 invocations,"
        " 1 function errors, 1 partial failures, 0 discarded",
        "  shardId-000000000000: checkpoint -, iterator age -, 9 records in 3 invocations,"
        " 1 function errors, 1 partial failures, 0 discarded",
    ]
