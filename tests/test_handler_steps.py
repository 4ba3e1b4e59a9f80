"""The Lambda handler's pure steps, in-process on the sample events (no worker, no node).

lambda/handler.py is imported from its folder as the function's runtime imports it; its
configuration, the record-to-document step and the retry rule need no OpenSearch. The bulk
request and its per-item outcomes are exercised against a real node in tests/lambda/.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent
from support import handler_module

from hrnb.errors import ConfigError
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM
from hrnb.wire.records import format_timestamp

REPO_ROOT = Path(__file__).resolve().parents[1]
EVENTS_DIR = REPO_ROOT / "tests" / "events"
#: Shortly after the sample events' samples were measured (2026-11-29 06:10 UTC).
NOW = datetime(2026, 11, 29, 6, 10, 5, tzinfo=UTC)
INGESTED_AT = format_timestamp(NOW)  # the handler formats it once per batch


@pytest.fixture(scope="module")
def handler() -> ModuleType:
    return handler_module()


def _records(name: str) -> list[Any]:
    return list(KinesisStreamEvent(json.loads((EVENTS_DIR / name).read_text())).records)


def _config(handler: ModuleType, **environment: str) -> Any:
    return handler.IndexerConfig.from_env({"OPENSEARCH_ENDPOINT": "search-hrnb.example",
                                           "AWS_REGION": "ap-south-1", **environment})


def test_configuration_defaults_and_the_shared_threshold(handler: ModuleType) -> None:
    config = _config(handler)
    assert config.endpoint == "https://search-hrnb.example"
    assert (config.index_name, config.dlq_index_name) == ("heart_rate", "heart_rate-dlq")
    assert config.alert_threshold_bpm == DEFAULT_ALERT_THRESHOLD_BPM
    assert _config(handler, HR_ALERT_THRESHOLD="160").alert_threshold_bpm == 160


@pytest.mark.parametrize(("environment", "named"), [
    ({"OPENSEARCH_ENDPOINT": ""}, "OPENSEARCH_ENDPOINT"),
    ({"AWS_REGION": ""}, "AWS_REGION"),
    ({"HR_ALERT_THRESHOLD": "very high"}, "HR_ALERT_THRESHOLD"),
    ({"HR_ALERT_THRESHOLD": "251"}, "HR_ALERT_THRESHOLD"),
])
def test_bad_configuration_names_the_variable(handler: ModuleType, environment: dict[str, str],
                                              named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(handler, **environment)
    assert caught.value.setting == named


ALERTS = {"ALERT_TOPIC_ARN": "arn:aws:sns:ap-south-1:123456789012:hrnb-hr-alerts",
          "ALERT_STATE_INDEX": "hrnb-hr-alert-state",
          "SNS_ENDPOINT": "https://sns.ap-south-1.amazonaws.com"}


def test_alerts_are_off_without_a_topic_and_read_their_rules(handler: ModuleType) -> None:
    assert handler.AlertConfig.from_env({}) is None
    config = handler.AlertConfig.from_env({**ALERTS, "HR_ALERT_THRESHOLDS": "a1=170",
                                           "HR_ALERT_SUSTAIN_S": "8"})
    assert config.rules.for_athlete("a1").threshold_bpm == 170
    assert config.rules.for_athlete("a2").threshold_bpm == DEFAULT_ALERT_THRESHOLD_BPM
    assert config.rules.sustain_s == 8.0


@pytest.mark.parametrize(("environment", "named"), [
    ({"ALERT_STATE_INDEX": ""}, "ALERT_STATE_INDEX"),
    ({"SNS_ENDPOINT": ""}, "SNS_ENDPOINT"),
    ({"SNS_ENDPOINT": "sns.ap-south-1.amazonaws.com"}, "SNS_ENDPOINT"),
    ({"HR_ALERT_THRESHOLDS": "a1=fast"}, "HR_ALERT_THRESHOLDS"),
    ({"HR_ALERT_REARM_S": "-1"}, "HR_ALERT_REARM_S"),
])
def test_bad_alert_configuration_names_the_variable(handler: ModuleType,
                                                    environment: dict[str, str],
                                                    named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        handler.AlertConfig.from_env({**ALERTS, **environment})
    assert caught.value.setting == named


def test_good_records_become_documents_keyed_by_athlete_session_seq(handler: ModuleType) -> None:
    deliveries = [handler.to_delivery(record, _config(handler), NOW, INGESTED_AT)
                  for record in _records("kinesis_heart_rate.json")]
    assert [d.doc_id for d in deliveries] == ["athlete-1/2026-11-29-morning-run/0",
                                              "athlete-1/2026-11-29-morning-run/1"]
    actions = [json.loads(d.lines.splitlines()[0])["index"] for d in deliveries]
    assert [(d.dead_letter, d.document["alert"], action["_index"], action["_id"])
            for d, action in zip(deliveries, actions, strict=True)] == [
        (False, False, "heart_rate", deliveries[0].doc_id),
        (False, True, "heart_rate", deliveries[1].doc_id)]  # 128 and 156 bpm
    first = deliveries[0].document
    assert first["heart_rate"] == 128
    assert first["ingested_at"] == "2026-11-29T06:10:05.000Z"
    assert first["kinesis_arrival"].endswith("Z")
    assert deliveries[0].lines.endswith("\n")
    source = deliveries[0].lines.splitlines()[1]
    assert json.loads(source) == first
    # The payload's own JSON plus three fields is what encoding the document gives, byte for byte.
    assert source == json.dumps(first, separators=(",", ":"))


def test_bad_records_become_dead_letters_saying_why(handler: ModuleType) -> None:
    deliveries = [handler.to_delivery(record, _config(handler), NOW, INGESTED_AT)
                  for record in _records("kinesis_bad_records.json")]
    for d in deliveries:
        action, source = d.lines.splitlines()
        assert d.dead_letter
        assert json.loads(action) == {"index": {"_index": "heart_rate-dlq", "_id": d.doc_id}}
        assert json.loads(source) == d.document
    reasons = [d.document["reason"] for d in deliveries]
    for reason, expected in zip(reasons, ["not JSON", "heart_rate must be an integer",
                                          "heart_rate 12 bpm is outside 20..250",
                                          "heart_rate 251 bpm is outside 20..250",
                                          "not UTF-8"], strict=True):
        assert expected in reason
    # Keyed by stream position, so a redelivered bad record overwrites itself.
    assert deliveries[0].doc_id == "hrnb-sample-events:shardId-000000000000:3"
    assert deliveries[1].document["field"] == "heart_rate"


def test_arrival_times_format_as_datetime_does(handler: ModuleType) -> None:
    # Rounding to the microsecond is half to even, then the milliseconds are cut: the ties
    # and the carries into the next second, minute and year are where a shortcut would differ.
    edges = [0.0, 59.9995, 59.9999995, 1764648618.971, 1764648659.9994995, 1767225599.9999996,
             1_000_000_000.0004995, 1_000_000_000.0005005, -0.5, -59.9999996]
    generator = random.Random(16)
    arbitrary = [generator.uniform(-1e9, 4e9) for _ in range(20_000)]
    as_kinesis_writes = [generator.randrange(10**12, 4 * 10**12) / 1000 for _ in range(20_000)]
    for seconds in edges + arbitrary + as_kinesis_writes:
        expected = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")
        assert handler._format_epoch(seconds) == expected[:-6] + "Z", seconds


def test_retryable_item_statuses(handler: ModuleType) -> None:
    retryable = [s for s in (200, 400, 401, 403, 404, 408, 409, 429, 500, 503, "N/A", "TIMEOUT")
                 if handler._is_retryable(s)]
    assert retryable == [401, 403, 408, 429, 500, 503, "N/A", "TIMEOUT"]
