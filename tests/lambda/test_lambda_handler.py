"""The packaged handler, run from its built zips in a worker process, against the real node.

Events hold records that went through the emulated stream; faults (429 items, refused
connections, 503) are injected by a proxy between the handler and OpenSearch.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lambda_helpers import (
    ACCESS_KEY,
    ROLE_ARN,
    SECRET_KEY,
    SESSION_TOKEN,
    Indices,
    UnpackedCode,
    encoded,
    good_record,
    handler_environment,
)
from support.faultproxy import Delay, Drop, Matcher, Refuse, Respond, path_matches
from support.sigv4_gateway import KnownCredentials, SigV4Gateway

from hrnb.config import Settings
from hrnb.wire.records import (
    decode_record,
    document_id,
    encode_record,
    format_timestamp,
    make_record,
)

pytestmark = pytest.mark.stack

PIPELINE_FIELDS = {"kinesis_arrival", "ingested_at", "alert"}


def documents(opensearch: Any, index: str) -> list[dict[str, Any]]:
    """Every document of ``index`` (none if it does not exist), refreshed first."""
    opensearch.indices.refresh(index=index, ignore_unavailable=True)
    if not opensearch.indices.exists(index=index):
        return []
    hits = opensearch.search(index=index, body={"query": {"match_all": {}}, "size": 10000})
    return hits["hits"]["hits"]


def log_entries(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines()
            if line.startswith("{")]


def assert_no_secrets(log_path: Path) -> None:
    text = log_path.read_text()
    for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, ROLE_ARN):
        assert secret not in text


def sequence_numbers(records: list[dict[str, Any]]) -> list[str]:
    return [record["SequenceNumber"] for record in records]


def carrying(doc_id: str) -> Matcher:
    """Match the ``_bulk`` request that holds the document ``doc_id`` (one half of a batch)."""
    action = f'"_id":{json.dumps(doc_id)}'.encode()
    return lambda request: action in request.body


def from_first_failure(records: list[dict[str, Any]], payload: Any) -> list[dict[str, Any]]:
    """What Lambda delivers next: the batch from the first record handed back, onwards."""
    failed = {item["itemIdentifier"] for item in payload["batchItemFailures"]}
    first = next(n for n, record in enumerate(records) if record["SequenceNumber"] in failed)
    return records[first:]


def assert_redelivery_indexes_each_once(worker: Any, batch: Any, during: Any, opensearch: Any,
                                        index: str) -> None:
    """Lambda's retry from the first record ``during`` handed back: afterwards each record of
    the batch is in the index, once."""
    after = worker.invoke(batch.event(from_first_failure(batch.records, during.payload)))

    assert after.payload == {"batchItemFailures": []}
    ids = [hit["_id"] for hit in documents(opensearch, index)]
    expected = [document_id(decode_record(record["Data"])) for record in batch.records]
    assert sorted(ids) == sorted(expected)


@pytest.fixture
def gateway(settings: Settings) -> Any:
    with SigV4Gateway(
        str(settings.resolved_opensearch_url),
        [KnownCredentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)],
        region=settings.region,
    ) as proxy:
        yield proxy


def test_good_records_are_indexed_by_identity_with_pipeline_fields(
    settings: Settings, gateway: SigV4Gateway,
    opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any],
) -> None:
    heart_rates = [90, 151, 120, 200, 150]
    records = [good_record("s-good", seq, bpm) for seq, bpm in enumerate(heart_rates)]
    batch = through_stream(encoded(records))
    worker = start_worker(handler_environment(settings, gateway.url,
                                              indices))
    before = datetime.now(UTC)

    event = batch.event()
    result = worker.invoke(event)

    assert result.ok, result.error
    assert result.payload == {"batchItemFailures": []}
    found = {hit["_id"]: hit["_source"] for hit in documents(opensearch, indices.name)}
    assert sorted(found) == sorted(f"athlete-1/s-good/{seq}" for seq in range(5))
    for record, sent in zip(records, event["Records"], strict=True):
        source = found[f"athlete-1/s-good/{record['seq']}"]
        assert {k: v for k, v in source.items() if k not in PIPELINE_FIELDS} == record
        assert source["alert"] is (record["heart_rate"] > 150)
        arrival = datetime.fromtimestamp(sent["kinesis"]["approximateArrivalTimestamp"], UTC)
        assert source["kinesis_arrival"] == format_timestamp(arrival)
        ingested = datetime.strptime(source["ingested_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert ingested.replace(tzinfo=UTC) >= before - timedelta(milliseconds=1)
    entries = log_entries(worker.log_path)
    (summary,) = [e for e in entries if e.get("message") == "batch processed"]
    assert (summary["indexed"], summary["dead_lettered"], summary["failed"]) == (5, 0, 0)
    assert summary["batch_lag_ms"] >= 0
    assert_no_secrets(worker.log_path)


def test_every_kind_of_bad_record_is_dead_lettered_and_the_batch_goes_on(
    settings: Settings, gateway: SigV4Gateway,
    opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any],
) -> None:
    now = datetime.now(UTC)
    wrong_type = dict(good_record("s-bad", 2))
    wrong_type["heart_rate"] = "fast"
    missing_field = dict(good_record("s-bad", 3))
    del missing_field["device_id"]
    payloads = [
        encode_record(good_record("s-bad", 0)),
        b"{this is not json",
        json.dumps(wrong_type).encode(),
        json.dumps(missing_field).encode(),
        encode_record(good_record("s-bad", 4, heart_rate=12)),
        encode_record(good_record("s-bad", 5, heart_rate=251)),
        encode_record(make_record(athlete_id="athlete-1", session_id="s-bad", device_id="d",
                                  seq=6, timestamp=now + timedelta(minutes=10), heart_rate=80)),
        b"\xff\xfe not utf-8",
        encode_record(good_record("s-bad", 8)),  # its data is replaced by non-base64 below
        encode_record(good_record("s-bad", 9)),
    ]
    batch = through_stream(payloads)
    event = batch.event()
    event["Records"][8]["kinesis"]["data"] = "***not base64***"
    expected_reasons = {
        1: "not JSON",
        2: "heart_rate must be an integer",
        3: "missing field(s): device_id",
        4: "heart_rate 12 bpm is outside 20..250",
        5: "heart_rate 251 bpm is outside 20..250",
        6: "minutes in the future",
        7: "not UTF-8",
        8: "not base64",
    }
    worker = start_worker(handler_environment(settings, gateway.url,
                                              indices))

    result = worker.invoke(event)

    assert result.ok, result.error
    assert result.payload == {"batchItemFailures": []}
    indexed = {hit["_id"] for hit in documents(opensearch, indices.name)}
    assert indexed == {"athlete-1/s-bad/0", "athlete-1/s-bad/9"}
    letters = {hit["_source"]["sequence_number"]: hit["_source"]
               for hit in documents(opensearch, indices.dlq)}
    assert len(letters) == len(expected_reasons)
    for position, reason in expected_reasons.items():
        sent = event["Records"][position]
        letter = letters[sent["kinesis"]["sequenceNumber"]]
        assert reason in letter["reason"]
        assert letter["raw_data"] == sent["kinesis"]["data"]
        assert letter["event_id"] == sent["eventID"]
        assert letter["shard_id"] == batch.shard_id
        assert letter["partition_key"] == "athlete-1"
        assert letter["event_source_arn"] == batch.stream_arn
    assert letters[event["Records"][3]["kinesis"]["sequenceNumber"]]["field"] == "device_id"
    (summary,) = [e for e in log_entries(worker.log_path) if e.get("message") == "batch processed"]
    assert (summary["indexed"], summary["dead_lettered"], summary["failed"]) == (2, 8, 0)
    assert_no_secrets(worker.log_path)


def test_samples_without_skin_contact_are_indexed_as_gaps_not_dead_lettered(
    settings: Settings, gateway: SigV4Gateway,
    opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any],
) -> None:
    no_contact = make_record(athlete_id="athlete-1", session_id="s-contact", device_id="d",
                             seq=1, timestamp=datetime.now(UTC), heart_rate=0,
                             sensor_contact=False)
    older_producer = {**good_record("s-contact", 2), "heart_rate": 0, "sensor_contact": False}
    payloads = [encode_record(good_record("s-contact", 0, 160)), encode_record(no_contact),
                json.dumps(older_producer).encode(), encode_record(good_record("s-contact", 3))]
    batch = through_stream(payloads)
    worker = start_worker(handler_environment(settings, gateway.url, indices))

    result = worker.invoke(batch.event())

    assert result.ok, result.error
    found = {hit["_source"]["seq"]: hit["_source"] for hit in documents(opensearch, indices.name)}
    assert sorted(found) == [0, 1, 2, 3]
    for seq in (1, 2):
        assert (found[seq]["heart_rate"], found[seq]["sensor_contact"]) == (None, False)
        assert found[seq]["alert"] is False
    assert found[0]["alert"] is True
    assert documents(opensearch, indices.dlq) == []
    opensearch.indices.refresh(index=indices.name)
    stats = opensearch.search(index=indices.name, body={
        "size": 0, "aggs": {"bpm": {"stats": {"field": "heart_rate"}}}})["aggregations"]["bpm"]
    assert (stats["count"], stats["avg"]) == (2, 140.0)  # the gaps are not averaged as 0 bpm


def test_redelivering_a_batch_three_times_changes_no_count(
    settings: Settings, gateway: SigV4Gateway,
    opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any],
) -> None:
    records = [good_record("s-again", seq, bpm) for seq, bpm in enumerate([100, 170, 110, 120])]
    batch = through_stream([*encoded(records), b"not json either"])
    worker = start_worker(handler_environment(settings, gateway.url,
                                              indices))
    counts = []
    for _ in range(3):
        result = worker.invoke(batch.event())
        assert result.payload == {"batchItemFailures": []}
        counts.append((len(documents(opensearch, indices.name)),
                       len(documents(opensearch, indices.dlq))))
    assert counts == [(4, 1)] * 3


def test_throttled_bulk_items_alone_are_handed_back_and_then_indexed_once(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    records = [good_record("s-429", seq) for seq in range(9)]
    batch = through_stream(encoded(records))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.fail_bulk_items(lambda _meta, source: (source or {}).get("seq", -1) % 3 == 0)

    first = worker.invoke(batch.event())

    throttled = [batch.records[seq] for seq in (0, 3, 6)]
    assert first.payload == {"batchItemFailures": [
        {"itemIdentifier": seq} for seq in sequence_numbers(throttled)]}
    assert len(documents(opensearch, indices.name)) == 6
    assert gateway.items_failed == 3 * 3  # the first try and two in-place retries, then handed back

    gateway.fail_bulk_items(None)
    # Lambda resumes from the lowest failed sequence number: here the whole batch again.
    second = worker.invoke(batch.event())

    assert second.payload == {"batchItemFailures": []}
    ids = sorted(hit["_id"] for hit in documents(opensearch, indices.name))
    assert ids == sorted(f"athlete-1/s-429/{seq}" for seq in range(9))
    assert gateway.rejections() == []  # every request the handler sent was correctly signed
    assert gateway.accepted >= 2


def test_a_whole_bulk_request_throttled_once_is_retried_in_place(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    batch = through_stream(encoded([good_record("s-429-all", seq) for seq in range(4)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.set_fault(Respond(429, b'{"status":429,"error":{"type":"too_many_requests"}}',
                              match=path_matches(r"/_bulk"), times=1))

    result = worker.invoke(batch.event())

    assert result.payload == {"batchItemFailures": []}
    assert len(documents(opensearch, indices.name)) == 4
    assert gateway.counters().responded == 1


@pytest.mark.parametrize("fault", [Refuse(), Respond(503, b'{"status":503}')],
                         ids=["connection-refused", "http-503"])
def test_an_outage_hands_back_every_record_and_loses_none(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway, fault: Any,
) -> None:
    records = [good_record("s-down", seq) for seq in range(3)]
    batch = through_stream([*encoded(records), b"bad record during the outage"])
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.set_fault(fault)

    during = worker.invoke(batch.event())

    assert during.ok, during.error
    assert during.payload == {"batchItemFailures": [
        {"itemIdentifier": seq} for seq in sequence_numbers(batch.records)]}
    (summary,) = [e for e in log_entries(worker.log_path) if e.get("message") == "batch processed"]
    assert (summary["indexed"], summary["dead_lettered"], summary["failed"]) == (0, 0, 4)

    gateway.clear()
    after = worker.invoke(batch.event())

    assert after.payload == {"batchItemFailures": []}
    assert len(documents(opensearch, indices.name)) == 3
    assert len(documents(opensearch, indices.dlq)) == 1
    assert_no_secrets(worker.log_path)


def test_a_kept_alive_connection_the_domain_cut_while_idle_is_not_reused(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    batch = through_stream(encoded([good_record("s-idle", seq) for seq in range(4)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    assert worker.invoke(batch.event(batch.records[:2])).payload == {"batchItemFailures": []}
    gateway.cut_idle_connections()

    after = worker.invoke(batch.event(batch.records[2:]))

    assert after.payload == {"batchItemFailures": []}
    assert len(documents(opensearch, indices.name)) == 4


def test_a_module_missing_from_the_zip_fails_as_on_aws(
    settings: Settings, gateway: SigV4Gateway, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], unpacked: UnpackedCode, tmp_path: Path,
) -> None:
    incomplete = tmp_path / "task"
    shutil.copytree(unpacked.task_root, incomplete)
    (incomplete / "hrnb" / "wire" / "http1.py").unlink()
    (incomplete / "hrnb" / "wire" / "__pycache__" / "http1.cpython-312.pyc").unlink()
    batch = through_stream(encoded([good_record("s-missing", 0)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices),
                          task_root=incomplete)

    result = worker.invoke(batch.event())

    assert result.error is not None
    assert result.error["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'handler'" in result.error["errorMessage"]
    assert "http1" in result.error["errorMessage"]
    again = worker.invoke(batch.event())  # a failed init is retried in a fresh process
    assert again.error is not None and worker.restarts == 1


@pytest.mark.parametrize(("overrides", "named"), [
    ({"OPENSEARCH_ENDPOINT": ""}, "OPENSEARCH_ENDPOINT"),
    ({"HR_ALERT_THRESHOLD": "very high"}, "HR_ALERT_THRESHOLD"),
    ({"AWS_ACCESS_KEY_ID": ""}, "AWS_ACCESS_KEY_ID"),
    ({"AWS_SESSION_TOKEN": "sess-7f3a9\r\nX-Injected: yes"}, "AWS_SESSION_TOKEN"),
])
def test_bad_configuration_fails_the_invocation_naming_the_variable(
    settings: Settings, gateway: SigV4Gateway, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], overrides: dict[str, str], named: str,
) -> None:
    batch = through_stream(encoded([good_record("s-config", 0)]))
    environment = handler_environment(settings, gateway.url, indices)
    worker = start_worker({**environment, **overrides})

    result = worker.invoke(batch.event())

    assert result.error is not None and result.error["errorType"] == "ConfigError"
    assert named in result.error["errorMessage"]
    assert_no_secrets(worker.log_path)
    if named.startswith("AWS_"):  # a credential is never echoed either, not even in part
        seen = worker.log_path.read_text() + result.error["errorMessage"]
        for piece in filter(None, re.split(r"[\r\n]+", overrides[named])):
            assert piece not in seen


def test_the_sample_events_are_handled_as_documented(
    settings: Settings, gateway: SigV4Gateway,
    opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
) -> None:
    events_dir = Path(__file__).resolve().parents[1] / "events"
    worker = start_worker(handler_environment(settings, gateway.url,
                                              indices))

    for name in ("kinesis_heart_rate.json", "kinesis_bad_records.json"):
        result = worker.invoke(json.loads((events_dir / name).read_text()))
        assert result.payload == {"batchItemFailures": []}

    indexed = {hit["_id"]: hit["_source"] for hit in documents(opensearch, indices.name)}
    assert sorted(indexed) == ["athlete-1/2026-11-29-morning-run/0",
                               "athlete-1/2026-11-29-morning-run/1"]
    assert [indexed[k]["alert"] for k in sorted(indexed)] == [False, True]
    assert len(documents(opensearch, indices.dlq)) == 5


def test_a_document_opensearch_refuses_for_good_is_dead_lettered_not_retried(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    batch = through_stream(encoded([good_record("s-400", seq) for seq in range(3)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.fail_bulk_items(lambda _meta, source: (source or {}).get("seq") == 1, status=400)

    result = worker.invoke(batch.event())

    assert result.payload == {"batchItemFailures": []}
    assert {hit["_id"] for hit in documents(opensearch, indices.name)} == {
        "athlete-1/s-400/0", "athlete-1/s-400/2"}
    (letter,) = [hit["_source"] for hit in documents(opensearch, indices.dlq)]
    assert letter["sequence_number"] == batch.records[1]["SequenceNumber"]
    assert "OpenSearch rejected the document (mapper_parsing_exception" in letter["reason"]
    assert letter["raw_data"] == batch.event()["Records"][1]["kinesis"]["data"]


def test_a_batch_past_a_thousand_records_is_posted_in_two_bulk_requests(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    records = [good_record("s-big", seq, 100 + seq % 40) for seq in range(1200)]
    batch = through_stream(encoded(records))
    worker = start_worker(handler_environment(settings, gateway.url, indices))

    result = worker.invoke(batch.event())

    assert result.payload == {"batchItemFailures": []}
    assert gateway.accepted == 2  # two halves of 600 (under 1,000 actions), each signed
    assert gateway.rejections() == []
    ids = {hit["_id"] for hit in documents(opensearch, indices.name)}
    assert ids == {f"athlete-1/s-big/{seq}" for seq in range(1200)}


def test_a_batch_of_a_hundred_goes_out_as_two_requests_in_flight_at_once(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    batch = through_stream(encoded([good_record("s-pipe", seq) for seq in range(100)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    # The first half is still held when the second arrives.
    gateway.set_fault(Delay(0.5, match=path_matches(r"/_bulk")))

    result = worker.invoke(batch.event())

    assert result.payload == {"batchItemFailures": []}
    assert gateway.counters().most_in_flight == 2
    assert gateway.accepted == 2
    ids = [hit["_id"] for hit in documents(opensearch, indices.name)]
    assert sorted(ids) == sorted(f"athlete-1/s-pipe/{seq}" for seq in range(100))


def test_a_503_to_one_half_hands_back_that_half_only_and_redelivery_indexes_each_record_once(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    batch = through_stream(encoded([good_record("s-503-half", seq) for seq in range(100)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.set_fault(Respond(503, b'{"status":503}', match=carrying("athlete-1/s-503-half/0"),
                              times=1))

    during = worker.invoke(batch.event())

    assert during.payload == {"batchItemFailures": [
        {"itemIdentifier": seq} for seq in sequence_numbers(batch.records[:50])]}
    assert sorted(hit["_id"] for hit in documents(opensearch, indices.name)) == sorted(
        f"athlete-1/s-503-half/{seq}" for seq in range(50, 100))

    gateway.clear()
    assert_redelivery_indexes_each_once(worker, batch, during, opensearch, indices.name)


def test_an_answer_lost_after_the_node_wrote_the_second_half_is_retried_without_duplicates(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    batch = through_stream(encoded([good_record("s-lost-half", seq) for seq in range(100)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.set_fault(Drop(after_forward=True, match=carrying("athlete-1/s-lost-half/50"),
                           times=1))

    during = worker.invoke(batch.event())

    assert during.payload == {"batchItemFailures": [
        {"itemIdentifier": seq} for seq in sequence_numbers(batch.records[50:])]}
    assert gateway.counters().dropped == 1
    assert len(documents(opensearch, indices.name)) == 100  # the node did write the second half

    gateway.clear()
    assert_redelivery_indexes_each_once(worker, batch, during, opensearch, indices.name)


def test_throttled_items_in_the_first_half_are_retried_in_place_while_the_second_is_in_flight(
    settings: Settings, opensearch: Any, indices: Indices, start_worker: Callable[..., Any],
    through_stream: Callable[..., Any], gateway: SigV4Gateway,
) -> None:
    throttled_seqs = (3, 17, 41)
    batch = through_stream(encoded([good_record("s-429-half", seq) for seq in range(100)]))
    worker = start_worker(handler_environment(settings, gateway.url, indices))
    gateway.fail_bulk_items(lambda _meta, source: (source or {}).get("seq") in throttled_seqs)
    # The second half is held until the first half's in-place retries (0.2 s, 0.4 s) are done.
    gateway.set_fault(Delay(1.0, match=carrying("athlete-1/s-429-half/50"), times=1))

    during = worker.invoke(batch.event())

    assert during.payload == {"batchItemFailures": [
        {"itemIdentifier": batch.records[seq]["SequenceNumber"]} for seq in throttled_seqs]}
    assert gateway.items_failed == 3 * 3  # the first try and two in-place retries
    assert gateway.counters().most_in_flight == 2
    assert sorted(hit["_id"] for hit in documents(opensearch, indices.name)) == sorted(
        f"athlete-1/s-429-half/{seq}" for seq in range(100) if seq not in throttled_seqs)

    gateway.fail_bulk_items(None)
    assert_redelivery_indexes_each_once(worker, batch, during, opensearch, indices.name)
    assert gateway.rejections() == []
