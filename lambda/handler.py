"""AWS Lambda consumer: heart-rate records from Kinesis into OpenSearch, validated and idempotent.

Configured by environment variables: ``OPENSEARCH_ENDPOINT`` (the domain endpoint, with or without
``https://``; ``http://127.0.0.1:…`` on the local stack), ``INDEX_NAME`` (default ``heart_rate``),
``DLQ_INDEX_NAME`` (default ``heart_rate-dlq``), ``HR_ALERT_THRESHOLD`` (bpm, default 150) and
``AWS_REGION``. Requests are SigV4-signed (service ``es``) with the execution role's credentials,
which Lambda puts in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``.

Per batch:

- each record is decoded with Powertools' Kinesis data classes and validated by the shared schema
  (``hrnb.wire.records``, packaged beside this file);
- good records are indexed with one ``_bulk`` request under ``_id`` = athlete/session/seq, so a
  re-sent or re-delivered record overwrites itself; ``kinesis_arrival``, ``ingested_at`` and
  ``alert`` are added;
- samples read without skin contact are good records too: indexed with ``heart_rate`` null and
  ``sensor_contact`` false (the shared schema turns an older producer's 0 bpm into null), so
  queries and charts show a gap and the dead-letter index holds only bad input;
- bad records (not base64, not JSON, schema violations, implausible heart rate or time) go to the
  dead-letter index with the raw payload, the reason and their Kinesis coordinates, keyed by the
  record's stream position so redelivery never duplicates them; they never fail the batch;
- items OpenSearch could not take for now (429, 5xx, timeouts, an outage) are returned as
  ``batchItemFailures`` so Lambda retries from the first of them and nothing is lost.

Credentials, identities and the event itself are never logged.
"""

from __future__ import annotations

import binascii
import functools
import os
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from opensearchpy import OpenSearch, RequestsHttpConnection, helpers
from requests_aws4auth import AWS4Auth

from hrnb.errors import ConfigError, RecordError
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM, check_alert_threshold
from hrnb.wire.records import decode_record, document_id, format_timestamp, plausibility_problem
from hrnb.wire.retry import is_retryable_status

logger = Logger(service="hrnb-indexer", utc=True)

#: Besides hrnb.wire.retry's statuses, the function retries 401/403: a new role's mapping to
#: an OpenSearch role takes a while to reach every node.
_AUTH_NOT_YET = frozenset({401, 403})
#: Bulk requests stay well under the smallest domain's 10 MiB HTTP payload limit.
_MAX_BULK_BYTES = 5 * 1024 * 1024
_MAX_BULK_ACTIONS = 1000
#: 429 items are retried in place this many times (opensearch-py backs off) before Lambda retries.
_BULK_429_RETRIES = 2
_BULK_429_BACKOFF_S = 0.2
#: The longest one bulk request may take, and the margin kept before Lambda's own timeout.
_MAX_REQUEST_TIMEOUT_S = 30.0
_TIMEOUT_MARGIN_S = 2.0


@dataclass(frozen=True)
class IndexerConfig:
    """The function's settings, read from its environment once per container."""

    endpoint: str  # URL with scheme
    region: str
    index_name: str = "heart_rate"
    dlq_index_name: str = "heart_rate-dlq"
    alert_threshold_bpm: int = DEFAULT_ALERT_THRESHOLD_BPM

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> IndexerConfig:
        endpoint = environ.get("OPENSEARCH_ENDPOINT", "").strip().rstrip("/")
        if not endpoint:
            raise ConfigError(
                "OPENSEARCH_ENDPOINT is not set: give the function the domain endpoint",
                setting="OPENSEARCH_ENDPOINT",
            )
        if "://" not in endpoint:
            endpoint = f"https://{endpoint}"  # the console shows endpoints without a scheme
        region = environ.get("AWS_REGION", "").strip()
        if not region:
            raise ConfigError("AWS_REGION is not set", setting="AWS_REGION")
        threshold = check_alert_threshold(
            environ.get("HR_ALERT_THRESHOLD", str(DEFAULT_ALERT_THRESHOLD_BPM)),
            setting="HR_ALERT_THRESHOLD")
        return cls(
            endpoint=endpoint,
            region=region,
            index_name=environ.get("INDEX_NAME") or "heart_rate",
            dlq_index_name=environ.get("DLQ_INDEX_NAME") or "heart_rate-dlq",
            alert_threshold_bpm=threshold,
        )


@dataclass(frozen=True)
class Delivery:
    """One Kinesis record turned into one bulk action: a heart-rate document or a dead letter."""

    record: KinesisStreamRecord
    index: str
    doc_id: str
    document: dict[str, Any]
    dead_letter: bool
    alert: bool = False

    @property
    def sequence_number(self) -> str:
        return self.record.kinesis.sequence_number

    def action(self) -> dict[str, Any]:
        return {"_op_type": "index", "_index": self.index, "_id": self.doc_id,
                "_source": self.document}


@dataclass
class Outcome:
    """What happened to a batch; ``failed`` holds sequence numbers to hand back to Lambda."""

    indexed: int = 0
    dead_lettered: int = 0
    alerts: int = 0
    failed: list[str] = field(default_factory=list)
    failure_statuses: Counter[str] = field(default_factory=Counter)


def to_delivery(record: KinesisStreamRecord, config: IndexerConfig, now: datetime) -> Delivery:
    """Decode and validate one record (pure): a document to index, or a dead letter saying why."""
    payload = record.kinesis
    try:
        data = payload.data_as_bytes()
    except (binascii.Error, TypeError, ValueError) as exc:
        return dead_letter(record, config, now, reason=f"data is not base64: {exc}")
    try:
        parsed = decode_record(data)
    except RecordError as exc:
        return dead_letter(record, config, now, reason=str(exc), field_name=exc.field)
    problem = plausibility_problem(parsed, now=now)
    if problem is not None:
        return dead_letter(record, config, now, reason=problem)
    heart_rate = parsed["heart_rate"]
    alert = heart_rate is not None and heart_rate > config.alert_threshold_bpm
    document = {
        **parsed,
        "kinesis_arrival": _arrival(record),
        "ingested_at": format_timestamp(now),
        "alert": alert,
    }
    return Delivery(
        record=record,
        index=config.index_name,
        doc_id=document_id(parsed),
        document=document,
        dead_letter=False,
        alert=alert,
    )


def dead_letter(
    record: KinesisStreamRecord,
    config: IndexerConfig,
    now: datetime,
    *,
    reason: str,
    field_name: str | None = None,
) -> Delivery:
    """A dead-letter document keeping the raw payload, the reason and the record's coordinates.

    Its ``_id`` is the record's stream position, so a redelivered bad record overwrites itself.
    """
    payload = record.kinesis
    stream_name = record.event_source_arn.rsplit("/", 1)[-1]
    raw = payload.get("data")
    document = {
        "reason": reason,
        "field": field_name,
        "raw_data": raw if isinstance(raw, str) else repr(raw),
        "event_id": record.event_id,
        "event_source_arn": record.event_source_arn,
        "shard_id": record.event_id.split(":", 1)[0],
        "partition_key": payload.partition_key,
        "sequence_number": payload.sequence_number,
        "kinesis_arrival": _arrival(record),
        "dead_lettered_at": format_timestamp(now),
    }
    return Delivery(
        record=record,
        index=config.dlq_index_name,
        doc_id=f"{stream_name}:{record.event_id}",
        document=document,
        dead_letter=True,
    )


def _arrival(record: KinesisStreamRecord) -> str:
    seconds = record.kinesis.approximate_arrival_timestamp
    return format_timestamp(datetime.fromtimestamp(seconds, tz=UTC))


def _is_retryable(status: Any) -> bool:
    """True for throttling, server errors and transport failures (status "N/A", "TIMEOUT")."""
    return not isinstance(status, int) or is_retryable_status(status) or status in _AUTH_NOT_YET


class Indexer:
    """Sends deliveries with ``_bulk`` and sorts the per-item results; one per container."""

    def __init__(self, config: IndexerConfig, client: OpenSearch) -> None:
        self.config = config
        self.client = client

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Indexer:
        config = IndexerConfig.from_env(environ)
        access_key = environ.get("AWS_ACCESS_KEY_ID")
        secret_key = environ.get("AWS_SECRET_ACCESS_KEY")
        if not access_key or not secret_key:
            raise ConfigError(
                "no AWS credentials in the environment: Lambda sets AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY from the execution role",
                setting="AWS_ACCESS_KEY_ID",
            )
        auth = AWS4Auth(access_key, secret_key, config.region, "es",
                        session_token=environ.get("AWS_SESSION_TOKEN") or None)
        client = OpenSearch(
            hosts=[config.endpoint],
            http_auth=auth,
            connection_class=RequestsHttpConnection,
            timeout=_MAX_REQUEST_TIMEOUT_S,
            max_retries=0,  # Lambda redelivers what failed; retrying here would hide outages
        )
        return cls(config, client)

    def process(
        self, records: Iterable[KinesisStreamRecord], *, now: datetime, request_timeout_s: float
    ) -> Outcome:
        outcome = Outcome()
        deliveries = [to_delivery(record, self.config, now) for record in records]
        rejected: list[tuple[Delivery, str]] = []
        for delivery, status, result in self._send(deliveries, request_timeout_s):
            if status == "ok":
                self._count_success(delivery, result, outcome)
            elif status == "rejected" and not delivery.dead_letter:
                rejected.append((delivery, result))
            else:
                self._count_failure(delivery, result, outcome)
        # Documents OpenSearch refuses for good (a mapping conflict, say) are kept as dead letters.
        second_round = [
            dead_letter(delivery.record, self.config, now,
                        reason=f"OpenSearch rejected the document ({reason})")
            for delivery, reason in rejected
        ]
        for delivery, status, result in self._send(second_round, request_timeout_s):
            if status == "ok":
                self._count_success(delivery, result, outcome)
            else:
                self._count_failure(delivery, result, outcome)
        return outcome

    def _send(
        self, deliveries: list[Delivery], request_timeout_s: float
    ) -> Iterator[tuple[Delivery, str, str]]:
        """Yield (delivery, "ok" | "retry" | "rejected", detail) once per delivery."""
        if not deliveries:
            return
        waiting: dict[str, deque[Delivery]] = defaultdict(deque)
        for delivery in deliveries:
            waiting[delivery.doc_id].append(delivery)
        results = helpers.streaming_bulk(
            self.client,
            (delivery.action() for delivery in deliveries),
            # POST /<index>/_bulk, not /_bulk: the role may only write to heart_rate* paths.
            index=self.config.index_name,
            chunk_size=_MAX_BULK_ACTIONS,
            max_chunk_bytes=_MAX_BULK_BYTES,
            raise_on_error=False,
            raise_on_exception=False,
            max_retries=_BULK_429_RETRIES,
            # opensearch-py annotates int, but only sleeps it: 0.2 s works as well.
            initial_backoff=_BULK_429_BACKOFF_S,  # type: ignore[arg-type]
            request_timeout=request_timeout_s,
        )
        for ok, result in results:
            ((_op, item),) = result.items()
            delivery = waiting[item["_id"]].popleft()
            status = item.get("status")
            if ok:
                yield delivery, "ok", str(item.get("result", ""))
            elif _is_retryable(status):
                yield delivery, "retry", str(status)
            else:
                yield delivery, "rejected", _describe_error(item)

    def _count_success(self, delivery: Delivery, result: str, outcome: Outcome) -> None:
        if delivery.dead_letter:
            outcome.dead_lettered += 1
            logger.warning(
                "record dead-lettered",
                extra={"reason": delivery.document["reason"],
                       "shard_id": delivery.document["shard_id"],
                       "sequence_number": delivery.sequence_number},
            )
            return
        outcome.indexed += 1
        # Only the first write of a document alerts, so a redelivered batch does not alert twice.
        if delivery.alert and result == "created":
            outcome.alerts += 1
            document = delivery.document
            logger.warning(
                "heart rate alert",
                extra={"alert": {
                    "athlete_id": document["athlete_id"],
                    "session_id": document["session_id"],
                    "seq": document["seq"],
                    "timestamp": document["timestamp"],
                    "heart_rate_bpm": document["heart_rate"],
                    "threshold_bpm": self.config.alert_threshold_bpm,
                }},
            )

    @staticmethod
    def _count_failure(delivery: Delivery, status: str, outcome: Outcome) -> None:
        outcome.failed.append(delivery.sequence_number)
        outcome.failure_statuses[status] += 1


def _describe_error(item: Mapping[str, Any]) -> str:
    error = item.get("error")
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error)


@functools.cache
def indexer() -> Indexer:
    """The container's indexer: built at the first invocation, reused by every later one."""
    return Indexer.from_env(os.environ)


@logger.inject_lambda_context(log_event=False, clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """Index a Kinesis batch; report the records to retry as ``batchItemFailures``."""
    now = datetime.now(UTC)
    records = list(KinesisStreamEvent(event).records)
    remaining_s = context.get_remaining_time_in_millis() / 1000
    request_timeout_s = max(1.0, min(_MAX_REQUEST_TIMEOUT_S, remaining_s - _TIMEOUT_MARGIN_S))
    outcome = indexer().process(records, now=now, request_timeout_s=request_timeout_s)
    oldest = min((r.kinesis.approximate_arrival_timestamp for r in records), default=None)
    logger.info(
        "batch processed",
        extra={
            "records": len(records),
            "indexed": outcome.indexed,
            "dead_lettered": outcome.dead_lettered,
            "failed": len(outcome.failed),
            "alerts": outcome.alerts,
            "failure_statuses": dict(outcome.failure_statuses),
            "batch_lag_ms": None if oldest is None else round((now.timestamp() - oldest) * 1000),
        },
    )
    failed = sorted(outcome.failed, key=int)  # stream order: Kinesis sequence numbers are numeric
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}
