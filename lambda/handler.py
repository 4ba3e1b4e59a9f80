"""AWS Lambda consumer: heart-rate records from Kinesis into OpenSearch, validated and idempotent.

Configured by environment variables: ``OPENSEARCH_ENDPOINT`` (the domain endpoint, with or without
``https://``; ``http://127.0.0.1:…`` on the local stack), ``INDEX_NAME`` (default ``heart_rate``),
``DLQ_INDEX_NAME`` (default ``heart_rate-dlq``), ``HR_ALERT_THRESHOLD`` (bpm, default 150) and
``AWS_REGION``. Requests are SigV4-signed (service ``es``) with the execution role's credentials,
which Lambda puts in ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``. HTTPS
is verified against the default trust store (the system's on AWS; ``SSL_CERT_FILE``, the local
CA, on the local stack), never switched off.

Per batch:

- each record is decoded straight from the event dict (base64, then JSON) and validated by the
  shared schema (``hrnb.wire.records``, packaged beside this file); a payload in exactly the
  producer's compact form is checked by one regular expression (``canonical_record``) and
  indexed as its own JSON plus three fields, with the same answer as the JSON path, which
  judges (and names the problem with) everything else;
- good records are indexed under ``_id`` = athlete/session/seq, so a re-sent or re-delivered
  record overwrites itself; ``kinesis_arrival``, ``ingested_at`` and ``alert`` are added;
- samples read without skin contact are good records too: indexed with ``heart_rate`` null and
  ``sensor_contact`` false (the shared schema turns an older producer's 0 bpm into null), so
  queries and charts show a gap and the dead-letter index holds only bad input;
- bad records (not base64, not JSON, schema violations, implausible heart rate or time) go to the
  dead-letter index with the raw payload, the reason and their Kinesis coordinates, keyed by the
  record's stream position so redelivery never duplicates them; they never fail the batch;
- the batch becomes ``_bulk`` bodies built here as bytes, posted with signed requests on
  keep-alive connections; the per-item answers are matched back by position. From 50 records
  up it goes out in two halves, the second decoded while the node indexes the first (two
  requests in flight; each request at most 1,000 actions and 5 MiB);
- items OpenSearch could not take for now (429, 5xx, timeouts, an outage) are returned as
  ``batchItemFailures`` so Lambda retries from the first of them and nothing is lost;
- with ``ALERT_TOPIC_ARN`` set (set-up sets it, with ``ALERT_STATE_INDEX``, ``SNS_ENDPOINT`` and
  the ``HR_ALERT_*`` episode rules), each athlete's alert episodes (``hrnb.wire.episodes``) are
  advanced over the indexed samples, kept in the state index with optimistic concurrency, and
  each new episode is published once to the SNS topic (at least once across a crash; the
  ``episode_id`` attribute dedupes). If the state or SNS fails, the whole batch is handed back.

Lean on purpose (``bench/bench_handler.py`` measures each choice; docs/benchmarks/handler.md):
standard library only, so no dependency layer. Not Powertools: its Kinesis data classes cost
more per record than the bulk round trip, and its Logger 0.4 ms an invocation for one line
(``hrnb.wire.jsonlog`` writes the same keys); no opensearch-py, whose per-item work cost more
than the round trip it wraps; no requests or requests-aws4auth, whose import alone took
126-222 ms of a cold start. Requests go over keep-alive connections of ``hrnb.wire.http1``
(http.client's two writes per request and its header parsing cost twice the CPU), signed by
``hrnb.wire.sigv4`` (checked byte for byte against botocore). The zips carry python3.12 bytecode,
so a cold start compiles nothing. Per record, the fast path checks a payload with one regular
expression instead of ``json.loads`` and the field checks, and skips encoding the document; a
``_bulk`` answer saying no item failed is counted, not parsed; the log gets one line per
batch, not per record. A batch's second half is decoded while the node indexes the first.
Credentials, identities and the event itself are never logged.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import os
import re
import ssl
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict, cast
from urllib.parse import urlsplit

from hrnb.errors import ConfigError, RecordError
from hrnb.wire import http1
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM, check_alert_threshold
from hrnb.wire.episodes import AlertRules, Episode, EpisodeState, advance
from hrnb.wire.jsonlog import JsonLog, LambdaContext
from hrnb.wire.records import (
    canonical_record,
    decode_record,
    document_id,
    format_timestamp,
    plausibility_problem,
)
from hrnb.wire.retry import is_retryable_status
from hrnb.wire.sigv4 import Credentials, SigV4Signer, canonical_query

log = JsonLog("hrnb-indexer")

#: Besides hrnb.wire.retry's statuses, the function retries 401/403: a new role's mapping to
#: an OpenSearch role takes a while to reach every node.
_AUTH_NOT_YET = frozenset({401, 403})
#: Bulk requests stay well under the smallest domain's 10 MiB HTTP payload limit.
_MAX_BULK_BYTES = 5 * 1024 * 1024
_MAX_BULK_ACTIONS = 1000
#: Requests awaiting their answers at once, and the smallest part of a batch sent alone.
_REQUESTS_IN_FLIGHT = 2
_MIN_PIPELINED_PART = 25
#: 429 items are retried in place this many times, after 0.2 s then 0.4 s, before Lambda retries.
_BULK_429_RETRIES = 2
_BULK_429_BACKOFF_S = 0.2
#: The longest one bulk request may take, and the margin kept before Lambda's own timeout.
_MAX_REQUEST_TIMEOUT_S = 30.0
_TIMEOUT_MARGIN_S = 2.0

#: What a _bulk answer is asked to keep (filter_path): per item, its status, result and error.
_ANSWER_FIELDS = "took,errors,items.*.status,items.*.result,items.*.error"
#: The query of every _bulk request: into set-up's aliases only (with them gone, a write fails
#: and is retried, never auto-creates an index with a dynamic mapping), the answer kept to
#: _ANSWER_FIELDS (a fifth of the bytes to parse); sent as SigV4 canonicalises it, so every
#: verifier agrees.
BULK_QUERY = canonical_query({"require_alias": "true", "filter_path": _ANSWER_FIELDS})
#: The start of a filtered answer (_ANSWER_FIELDS) in which no item failed.
_ALL_WRITTEN = re.compile(rb'\{"took":\d+,"errors":false,"items":\[')
#: Compact JSON, one encoder for every line (json.dumps with options builds a new one per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


class PartialItemFailure(TypedDict):
    itemIdentifier: str


class PartialItemFailureResponse(TypedDict):
    batchItemFailures: list[PartialItemFailure]


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


@dataclass(slots=True)  # not frozen: a frozen __init__ costs three times as much per record
class Delivery:
    """One Kinesis record turned into one bulk action: a heart-rate document or a dead letter."""

    record: Mapping[str, Any]  # the event's record, as Lambda passed it
    doc_id: str
    document: dict[str, Any]
    lines: str  # the two _bulk lines (action, the document as indexed), each ending in "\n"
    dead_letter: bool

    @property
    def sequence_number(self) -> str:
        return self.record["kinesis"]["sequenceNumber"]


#: What ``Indexer._send`` reports: deliveries with their results, None when all were written.
Sorted = tuple[Sequence[Delivery], Sequence[tuple[str, str]] | None]


@functools.cache
def _action_prefix(index: str) -> str:
    """``{"index":{"_index":<index>,"_id":`` once per index name, not once per document."""
    return f'{{"index":{{"_index":{_encode_json(index)},"_id":'


@dataclass
class Outcome:
    """What happened to a batch; ``failed`` holds sequence numbers to hand back to Lambda."""

    indexed: list[Delivery] = field(default_factory=list)  # documents written
    dead_lettered: int = 0
    alerts: int = 0
    failed: list[str] = field(default_factory=list)
    failure_statuses: Counter[str] = field(default_factory=Counter)


def to_delivery(
    record: Mapping[str, Any], config: IndexerConfig, now: datetime, ingested_at: str
) -> Delivery:
    """Decode and validate one record (pure): a document to index, or a dead letter saying why.

    ``ingested_at`` is ``now`` formatted, once per batch.
    """
    raw = record["kinesis"]["data"]
    try:
        # For a str (as Lambda passes it) b64decode is this call and its messages, plus a wrapper.
        data = binascii.a2b_base64(raw) if type(raw) is str else base64.b64decode(raw)
    except (binascii.Error, TypeError, ValueError) as exc:
        return dead_letter(record, config, now, reason=f"data is not base64: {exc}")
    parsed = canonical_record(data)  # the fast path: a well-formed record, parsed and checked
    if parsed is None:
        try:
            parsed = decode_record(data)
        except RecordError as exc:
            return dead_letter(record, config, now, reason=str(exc), field_name=exc.field)
        own_json = None
    else:
        own_json = data[:-1].decode("ascii")  # the payload is the record's compact JSON
    problem = plausibility_problem(parsed, now=now)
    if problem is not None:
        return dead_letter(record, config, now, reason=problem)
    heart_rate = parsed["heart_rate"]
    alert = heart_rate is not None and heart_rate > config.alert_threshold_bpm
    arrival = _arrival(record)
    document = cast("dict[str, Any]", parsed)  # a fresh dict, completed in place (no copy)
    document["kinesis_arrival"] = arrival
    document["ingested_at"] = ingested_at
    document["alert"] = alert
    # Both times are format_timestamp's: nothing to escape, so the payload's own JSON plus the
    # three fields is, byte for byte, what encoding the document gives (and costs far less).
    source = (_encode_json(document) if own_json is None else
              f'{own_json},"kinesis_arrival":"{arrival}","ingested_at":"{ingested_at}",'
              f'"alert":{"true" if alert else "false"}}}')
    # A valid record's ids are letters, digits and _.:@- (the schema's pattern) and its seq an
    # integer, so the _id is its own JSON string without escaping.
    doc_id = document_id(document)
    return Delivery(record, doc_id, document,
                    f'{_action_prefix(config.index_name)}"{doc_id}"}}}}\n{source}\n', False)


def dead_letter(
    record: Mapping[str, Any],
    config: IndexerConfig,
    now: datetime,
    *,
    reason: str,
    field_name: str | None = None,
) -> Delivery:
    """A dead-letter document keeping the raw payload, the reason and the record's coordinates.

    Its ``_id`` is the record's stream position, so a redelivered bad record overwrites itself.
    """
    payload = record["kinesis"]
    source_arn = record["eventSourceARN"]
    event_id = record["eventID"]
    raw = payload.get("data")
    document = {
        "reason": reason,
        "field": field_name,
        "raw_data": raw if isinstance(raw, str) else repr(raw),
        "event_id": event_id,
        "event_source_arn": source_arn,
        "shard_id": event_id.split(":", 1)[0],
        "partition_key": payload["partitionKey"],
        "sequence_number": payload["sequenceNumber"],
        "kinesis_arrival": _arrival(record),
        "dead_lettered_at": format_timestamp(now),
    }
    stream_name = source_arn.rsplit("/", 1)[-1]
    doc_id = f"{stream_name}:{event_id}"
    return Delivery(record, doc_id, document,
                    f"{_action_prefix(config.dlq_index_name)}{_encode_json(doc_id)}}}}}\n"
                    f"{_encode_json(document)}\n", True)


def _arrival(record: Mapping[str, Any]) -> str:
    return _format_epoch(float(record["kinesis"]["approximateArrivalTimestamp"]))


@functools.lru_cache(maxsize=1024)
def _format_epoch(seconds: float) -> str:
    """Epoch seconds as the schema writes times: what ``datetime.fromtimestamp`` and
    ``isoformat`` give (``format_timestamp``'s result for this UTC moment). Cached, as records
    put together share their (millisecond) arrival time; a new time is put together from its
    minute's cached text and its second's and millisecond's, for under half their cost."""
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)  # as datetime.fromtimestamp rounds: half to even
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    minute, second = divmod(int(whole), 60)
    return _utc_minute(minute) + _SECONDS[second] + _MILLIS[micros // 1000]


#: ":SS" and ".mmmZ" of every second and millisecond: a time is put together, not formatted.
_SECONDS = tuple(f":{second:02d}" for second in range(60))
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=64)
def _utc_minute(minute: int) -> str:
    """``YYYY-MM-DDTHH:MM`` of an epoch minute, UTC."""
    return datetime.fromtimestamp(minute * 60, tz=UTC).isoformat()[:16]


def _is_retryable(status: Any) -> bool:
    """True for throttling, server errors and transport failures (status "N/A", "TIMEOUT")."""
    return not isinstance(status, int) or is_retryable_status(status) or status in _AUTH_NOT_YET


def bulk_chunks(deliveries: Sequence[Delivery]) -> Iterator[tuple[list[Delivery], list[str]]]:
    """Deliveries with their ``_bulk`` lines, in chunks of at most 1,000 actions and 5 MiB."""
    chunk: list[Delivery] = []
    lines: list[str] = []
    size = 0
    for delivery in deliveries:
        entry = delivery.lines  # ASCII (the encoder escapes the rest): chars == bytes
        if chunk and (len(chunk) == _MAX_BULK_ACTIONS or size + len(entry) > _MAX_BULK_BYTES):
            yield chunk, lines
            chunk, lines, size = [], [], 0
        chunk.append(delivery)
        lines.append(entry)
        size += len(entry)
    if chunk:
        yield chunk, lines


def pipeline_parts(records: Sequence[Mapping[str, Any]]) -> list[Sequence[Mapping[str, Any]]]:
    """The batch in the parts it is decoded and posted in: halves from
    ``2 * _MIN_PIPELINED_PART`` records up (the second decoded while the node indexes the
    first), else whole. A smaller part would cost the node more than the overlap saves."""
    if len(records) < 2 * _MIN_PIPELINED_PART:
        return [records]
    half = (len(records) + 1) // 2
    return [records[:half], records[half:]]


class Transport:
    """SigV4-signed requests to one host on keep-alive connections (:mod:`hrnb.wire.http1`):
    one per request in flight, kept for the container's later requests.

    :meth:`send` signs and sends a request and returns at once; :meth:`Exchange.answer` reads
    the answer, so the caller can work while the server does (the indexer decodes the next part
    of a batch). HTTPS verifies the node's certificate against the default trust store: the
    system's on AWS, and ``SSL_CERT_FILE`` (the local CA) on the local stack.
    """

    def __init__(self, endpoint: str, signer: SigV4Signer) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"OPENSEARCH_ENDPOINT {endpoint!r} is not an http(s) URL",
                              setting="OPENSEARCH_ENDPOINT")
        self.host = parts.netloc
        self.signer = signer
        self._hostname, self._port = parts.hostname, parts.port
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._idle: list[http1.Connection] = []  # open or not, no request pending

    def post(self, path: str, query: str, body: bytes, timeout_s: float,
             content_type: str = "application/json") -> tuple[int, bytes]:
        """(status, body) of a signed POST; OSError or http1.ProtocolError when no answer
        came."""
        return self.send(path, query, body, timeout_s, content_type).answer()

    def send(self, path: str, query: str, body: bytes, timeout_s: float,
             content_type: str = "application/json") -> Exchange:
        """Sign and send a POST on an idle connection (a new one if none is idle); a failure
        to send is raised by the exchange's :meth:`~Exchange.answer`, like one to answer."""
        headers = self.signer.sign("POST", self.host, path, query,
                                   {"Content-Type": content_type}, body)
        connection = (self._idle.pop() if self._idle else
                      http1.Connection(self._hostname, self._port, self._tls))
        try:
            connection.send("POST", f"{path}?{query}", headers, body, timeout_s)
        except OSError as exc:  # the connection closed itself
            return Exchange(self, connection, exc)
        return Exchange(self, connection)


class Exchange:
    """A request sent on one of a transport's connections, its answer not yet read."""

    def __init__(self, transport: Transport, connection: http1.Connection,
                 failure: OSError | None = None) -> None:
        self._transport = transport
        self._connection = connection
        self._failure = failure

    def answer(self) -> tuple[int, bytes]:
        """(status, body); the connection goes back to the transport either way (closed if the
        exchange failed: the next request opens a new one)."""
        try:
            if self._failure is not None:
                raise self._failure
            return self._connection.read_response()
        finally:
            self._transport._idle.append(self._connection)


class Indexer:
    """Posts deliveries with signed ``_bulk`` requests and sorts the per-item results; one per
    container, so the connection and the signing key are reused across invocations."""

    def __init__(self, config: IndexerConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport
        # POST /<index>/_bulk, not /_bulk: the role may only write to heart_rate* paths.
        self.bulk_path = f"/{config.index_name}/_bulk"

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
        session_token = environ.get("AWS_SESSION_TOKEN") or None
        for name, value in (("AWS_ACCESS_KEY_ID", access_key),
                            ("AWS_SECRET_ACCESS_KEY", secret_key),
                            ("AWS_SESSION_TOKEN", session_token)):
            if value is not None and ("\r" in value or "\n" in value):
                # The key id and the token go into request headers, which a line break would
                # end early; the secret has none either. Refused, never sent or echoed.
                raise ConfigError(f"{name} holds a line break, which no AWS credential has",
                                  setting=name)
        credentials = Credentials(access_key, secret_key, session_token)
        signer = SigV4Signer(credentials, config.region, "es")
        return cls(config, Transport(config.endpoint, signer))

    def process(
        self, records: Sequence[Mapping[str, Any]], *, now: datetime, request_timeout_s: float
    ) -> Outcome:
        outcome = Outcome()
        ingested_at = format_timestamp(now)
        # Decoded part by part, as _send asks for them: the second part while the first is
        # being indexed (docs/benchmarks/handler.md).
        parts = ([to_delivery(record, self.config, now, ingested_at) for record in part]
                 for part in pipeline_parts(records))
        refused = self._tally(self._send(parts, request_timeout_s), outcome)
        # Documents OpenSearch refuses for good (a mapping conflict, say) are kept as dead letters.
        second_round = [
            dead_letter(delivery.record, self.config, now,
                        reason=f"OpenSearch rejected the document ({reason})")
            for delivery, reason in refused
        ]
        self._tally(self._send([second_round], request_timeout_s), outcome)
        return outcome

    def _tally(self, sent: Iterator[Sorted], outcome: Outcome) -> list[tuple[Delivery, str]]:
        """Count what ``_send`` reports into ``outcome``; the documents refused for good."""
        refused: list[tuple[Delivery, str]] = []
        for group, results in sent:
            if results is None:
                self._count_written(group, outcome)
                continue
            for delivery, (status, detail) in zip(group, results, strict=True):
                if status == "ok":
                    self._count_written((delivery,), outcome)
                elif status == "rejected" and not delivery.dead_letter:
                    refused.append((delivery, detail))
                else:
                    self._count_failure(delivery, detail, outcome)
        return refused

    def _send(
        self, parts: Iterable[Sequence[Delivery]], request_timeout_s: float
    ) -> Iterator[Sorted]:
        """Yield each delivery once, in order, in groups: a group with its (``"ok"`` |
        ``"retry"`` | ``"rejected"``, detail) per delivery, or with None when every one of
        them was written.

        Each part goes out as soon as it is made, in ``_bulk`` chunks, with up to
        ``_REQUESTS_IN_FLIGHT`` requests awaiting their answers: the next part is made while the
        node indexes the last. Items answered 429 are posted again in place (twice at most,
        backing off) before they are handed back.
        """
        in_flight: deque[tuple[list[Delivery], list[str], Exchange]] = deque()
        for part in parts:
            for chunk, lines in bulk_chunks(part):
                if len(in_flight) == _REQUESTS_IN_FLIGHT:
                    yield from self._settle(*in_flight.popleft(), request_timeout_s)
                in_flight.append((chunk, lines, self._start(lines, request_timeout_s)))
        while in_flight:
            yield from self._settle(*in_flight.popleft(), request_timeout_s)

    def _settle(self, chunk: list[Delivery], lines: list[str], exchange: Exchange,
                request_timeout_s: float) -> Iterator[Sorted]:
        """The results of one sent chunk, its throttled items posted again in place."""
        for attempt in range(_BULK_429_RETRIES + 1):
            if attempt:
                time.sleep(_BULK_429_BACKOFF_S * 2 ** (attempt - 1))
                exchange = self._start(lines, request_timeout_s)
            items = self._answer(exchange, len(chunk))
            if items is None:
                yield chunk, None
                return
            settled: list[Delivery] = []
            results: list[tuple[str, str]] = []
            throttled: list[Delivery] = []
            throttled_lines: list[str] = []
            last = attempt == _BULK_429_RETRIES
            for delivery, entry, item in zip(chunk, lines, items, strict=True):
                status = item.get("status", 500)
                if status == 429 and not last:
                    throttled.append(delivery)
                    throttled_lines.append(entry)
                    continue
                settled.append(delivery)
                if isinstance(status, int) and 200 <= status < 300:
                    results.append(("ok", ""))
                elif _is_retryable(status) or _no_alias(item):
                    results.append(("retry", str(status)))
                else:
                    results.append(("rejected", _describe_error(item)))
            yield settled, results
            if not throttled:
                return
            chunk, lines = throttled, throttled_lines

    def _start(self, lines: list[str], request_timeout_s: float) -> Exchange:
        """Send one signed ``_bulk`` request with these lines; its answer is read later."""
        return self.transport.send(self.bulk_path, BULK_QUERY, "".join(lines).encode(),
                                   request_timeout_s)

    @staticmethod
    def _answer(exchange: Exchange, count: int) -> list[dict[str, Any]] | None:
        """A ``_bulk`` request's per-item answers, or ``count`` copies of the request's own
        failure (status "N/A" or "TIMEOUT" when no answer came); None when the node wrote
        every item."""
        try:
            status, content = exchange.answer()
        except TimeoutError as exc:
            return [{"status": "TIMEOUT", "error": str(exc)}] * count
        except (OSError, http1.ProtocolError) as exc:
            return [{"status": "N/A", "error": str(exc) or type(exc).__name__}] * count
        if 200 <= status < 300:
            if _ALL_WRITTEN.match(content) and content.count(b'"result":') == count:
                # No item failed: the answer holds nothing else to read (parsing it would
                # cost 1.3 µs an item, docs/benchmarks/handler.md).
                return None
            return [item for answer in json.loads(content)["items"] for item in answer.values()]
        text = content.decode("utf-8", "replace")
        try:
            error = json.loads(content).get("error", text)
        except (ValueError, AttributeError):
            error = text
        return [{"status": status, "error": error}] * count

    @staticmethod
    def _count_written(deliveries: Iterable[Delivery], outcome: Outcome) -> None:
        for delivery in deliveries:
            if not delivery.dead_letter:
                outcome.indexed.append(delivery)
                continue
            outcome.dead_lettered += 1
            log.warning("record dead-lettered",
                        {"reason": delivery.document["reason"],
                         "shard_id": delivery.document["shard_id"],
                         "sequence_number": delivery.sequence_number})

    @staticmethod
    def _count_failure(delivery: Delivery, status: str, outcome: Outcome) -> None:
        outcome.failed.append(delivery.sequence_number)
        outcome.failure_statuses[status] += 1


def _no_alias(item: Mapping[str, Any]) -> bool:
    """The index alias set-up made is gone: retried (never dead-lettered) until it is back."""
    error = item.get("error")
    return isinstance(error, Mapping) and error.get("type") == "index_not_found_exception"


def _describe_error(item: Mapping[str, Any]) -> str:
    error = item.get("error")
    if isinstance(error, Mapping):
        return f"{error.get('type', 'error')}: {error.get('reason', '')}"
    return str(error)


# --- alert episodes: state in OpenSearch, notifications through SNS ----------------------------
class AlertError(Exception):
    """The episode state or SNS could not be reached or refused: the batch is handed back."""


_MESSAGE_ID = re.compile(rb"<MessageId>([^<]+)</MessageId>")
#: Optimistic-concurrency conflicts retried (reloading the state) before the batch is handed back.
_STATE_CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class AlertConfig:
    """Where episodes are kept and announced; alerts are off without ``ALERT_TOPIC_ARN``."""

    state_index: str
    topic_arn: str
    sns_endpoint: str
    rules: AlertRules

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlertConfig | None:
        topic_arn = environ.get("ALERT_TOPIC_ARN", "").strip()
        if not topic_arn:
            return None
        state_index = environ.get("ALERT_STATE_INDEX", "").strip()
        sns_endpoint = environ.get("SNS_ENDPOINT", "").strip().rstrip("/")
        for name, value in (("ALERT_STATE_INDEX", state_index), ("SNS_ENDPOINT", sns_endpoint)):
            if not value:
                raise ConfigError(f"{name} is not set: alerts need it with ALERT_TOPIC_ARN",
                                  setting=name)
        if urlsplit(sns_endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"SNS_ENDPOINT {sns_endpoint!r} is not an http(s) URL",
                              setting="SNS_ENDPOINT")
        return cls(state_index=state_index, topic_arn=topic_arn, sns_endpoint=sns_endpoint,
                   rules=AlertRules.from_env(environ))


class Alerter:
    """Advances each athlete's episode state over the batch's indexed samples, publishes each
    newly opened episode, then stores the state with optimistic concurrency.

    At-least-once: the notification goes out before the state that records it, so a worker
    killed in between sends the same episode again on the retry, never misses it; consumers
    dedupe by the ``episode_id`` message attribute. A redelivered batch changes no state (the
    state keeps the last sample's timestamp), so it publishes nothing.

    The container keeps each state it stored, with its version, and writes the next on top of
    it without reading it back (a round trip less per batch): a write from another container
    meanwhile fails the version check, and that state is read again. An episode is never
    announced from a kept state: a batch that opens one reads the state first. After any
    failure the kept states are dropped."""

    def __init__(self, config: AlertConfig, state: Transport, sns: Transport) -> None:
        self.config = config
        self.state = state  # the indexer's connection to the domain
        self.sns = sns
        self.mget_path = f"/{config.state_index}/_mget"
        self.bulk_path = f"/{config.state_index}/_bulk"
        # Into set-up's alias only: once torn down, a write fails instead of creating the index.
        self.bulk_query = canonical_query({
            "require_alias": "true",
            "filter_path": "items.*.status,items.*._seq_no,items.*._primary_term"})
        self._stored: dict[str, tuple[EpisodeState, tuple[int, int]]] = {}

    def process(self, documents: Sequence[Mapping[str, Any]], timeout_s: float) -> list[Episode]:
        """Episodes notified for these documents (in stream order); AlertError on failure."""
        samples: dict[str, list[tuple[str, int | None]]] = {}
        for document in documents:
            samples.setdefault(document["athlete_id"], []).append(
                (document["timestamp"], document["heart_rate"]))
        if not samples:  # every record dead-lettered or handed back: nothing to advance
            return []
        try:
            return self._advance(samples, timeout_s)
        except AlertError:
            self._stored.clear()
            raise

    def _advance(self, samples: Mapping[str, list[tuple[str, int | None]]],
                 timeout_s: float) -> list[Episode]:
        published: dict[str, Episode] = {}
        pending = set(samples)
        for _ in range(_STATE_CONFLICT_RETRIES + 1):
            kept = {athlete for athlete in pending if athlete in self._stored}
            states = self._load(sorted(pending), timeout_s)
            writes: dict[str, tuple[EpisodeState, tuple[int, int] | None]] = {}
            unsure: set[str] = set()
            for athlete in sorted(pending):
                stored, version = states[athlete]
                state, opened = advance(stored, athlete, samples[athlete],
                                        self.config.rules.for_athlete(athlete))
                if opened and athlete in kept:
                    # Another environment may have written the state since this one kept it:
                    # an episode is announced only from the state as stored, so read it first.
                    del self._stored[athlete]
                    unsure.add(athlete)
                    continue
                for episode in opened:
                    if episode.id not in published:
                        self._publish(episode, timeout_s)
                        published[episode.id] = episode
                if state != stored:
                    writes[athlete] = (state, version)
            pending = self._store(writes, timeout_s) | unsure
            if not pending:
                return list(published.values())
        raise AlertError(f"episode state of {', '.join(sorted(pending))} kept changing")

    @staticmethod
    def _post(transport: Transport, what: str, path: str, query: str, body: bytes,
              timeout_s: float, content_type: str = "application/json") -> bytes:
        try:
            status, content = transport.post(path, query, body, timeout_s, content_type)
        except (OSError, http1.ProtocolError) as exc:
            raise AlertError(f"{what}: {exc or type(exc).__name__}") from exc
        if not 200 <= status < 300:
            raise AlertError(f"{what}: {status} {content[:300].decode('utf-8', 'replace')}")
        return content

    def _load(self, athletes: Sequence[str], timeout_s: float
              ) -> dict[str, tuple[EpisodeState | None, tuple[int, int] | None]]:
        """Each athlete's stored state and its (seq_no, primary_term), None when new: as this
        container stored it, else read."""
        found: dict[str, tuple[EpisodeState | None, tuple[int, int] | None]] = {
            athlete: self._stored[athlete] for athlete in athletes if athlete in self._stored}
        unknown = [athlete for athlete in athletes if athlete not in found]
        if not unknown:
            return found
        body = _encode_json({"ids": unknown}).encode()
        docs = json.loads(self._post(self.state, "reading episode state", self.mget_path, "",
                                     body, timeout_s))["docs"]
        for doc in docs:
            if "error" in doc:
                raise AlertError(f"reading episode state: {doc['error']}")
            found[doc["_id"]] = ((doc["_source"]["state"], (doc["_seq_no"], doc["_primary_term"]))
                                 if doc.get("found") else (None, None))
        return found

    def _store(self, writes: Mapping[str, tuple[EpisodeState, tuple[int, int] | None]],
               timeout_s: float) -> set[str]:
        """Write the states, each only if unchanged since read; the athletes that conflicted."""
        if not writes:
            return set()
        lines = []
        for athlete, (state, version) in writes.items():
            if version is None:
                action: dict[str, Any] = {"create": {"_id": athlete}}
            else:
                action = {"index": {"_id": athlete, "if_seq_no": version[0],
                                    "if_primary_term": version[1]}}
            lines.append(f"{_encode_json(action)}\n{_encode_json({'state': state})}\n")
        content = self._post(self.state, "writing episode state", self.bulk_path,
                             self.bulk_query, "".join(lines).encode(), timeout_s)
        conflicts = set()
        for (athlete, (state, _)), item in zip(writes.items(), json.loads(content)["items"],
                                               strict=True):
            result = next(iter(item.values()))
            if result["status"] == 409:
                conflicts.add(athlete)
                self._stored.pop(athlete, None)  # read it again
            elif 200 <= result["status"] < 300:
                self._stored[athlete] = (state, (result["_seq_no"], result["_primary_term"]))
            else:
                raise AlertError(f"writing episode state of {athlete}: {result['status']}")
        return conflicts

    def _publish(self, episode: Episode, timeout_s: float) -> None:
        """One signed SNS Query API Publish; the episode's fields ride as message attributes."""
        form = {"Action": "Publish", "Version": "2010-03-31",
                "TopicArn": self.config.topic_arn, "Message": episode.message()}
        attributes = {"episode_id": episode.id, "athlete_id": episode.athlete_id,
                      "start": episode.start, "peak_bpm": str(episode.peak_bpm),
                      "threshold_bpm": str(episode.threshold_bpm)}
        for number, (name, value) in enumerate(attributes.items(), start=1):
            entry = f"MessageAttributes.entry.{number}"
            form |= {f"{entry}.Name": name, f"{entry}.Value.DataType": "String",
                     f"{entry}.Value.StringValue": value}
        content = self._post(self.sns, "publishing to SNS", "/", "",
                             canonical_query(form).encode(), timeout_s,
                             "application/x-www-form-urlencoded; charset=utf-8")
        found = _MESSAGE_ID.search(content)  # the one field read from the XML answer
        message_id = found.group(1).decode() if found else None
        log.warning("heart rate alert episode", {"episode": {
            "episode_id": episode.id, "athlete_id": episode.athlete_id, "start": episode.start,
            "peak_bpm": episode.peak_bpm, "threshold_bpm": episode.threshold_bpm,
            "message_id": message_id}})


@functools.cache
def alerter() -> Alerter | None:
    """The container's alerter (None when alerts are off): the state on the indexer's
    connection, SNS on its own, both signed with the indexer's credentials."""
    config = AlertConfig.from_env(os.environ)
    if config is None:
        return None
    bulk = indexer()
    signer = SigV4Signer(bulk.transport.signer.credentials, bulk.config.region, "sns")
    return Alerter(config, bulk.transport, Transport(config.sns_endpoint, signer))


def notify_episodes(records: Sequence[Mapping[str, Any]], outcome: Outcome,
                    request_timeout_s: float) -> None:
    """Run the alerter over the samples indexed before the first record handed back (Lambda
    redelivers from there, so later samples come again in order); if it fails, hand back the
    whole batch (indexing is idempotent)."""
    alerts = alerter()
    if alerts is None or not records:
        return
    first_failed = min((int(seq) for seq in outcome.failed), default=None)
    documents = [delivery.document for delivery in outcome.indexed
                 if first_failed is None or int(delivery.sequence_number) < first_failed]
    try:
        outcome.alerts = len(alerts.process(documents, request_timeout_s))
    except AlertError as exc:
        log.error("alert episodes not processed; batch handed back", {"reason": str(exc)})
        outcome.failed = [record["kinesis"]["sequenceNumber"] for record in records]
        outcome.failure_statuses["alerts"] += 1


@functools.cache
def indexer() -> Indexer:
    """The container's indexer: built at the first invocation, reused by every later one."""
    return Indexer.from_env(os.environ)


class InvocationContext(LambdaContext, Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def lambda_handler(event: dict[str, Any],
                   context: InvocationContext) -> PartialItemFailureResponse:
    """Index a Kinesis batch; report the records to retry as ``batchItemFailures``."""
    log.start(context)
    now = datetime.now(UTC)
    records = event["Records"]
    remaining_s = context.get_remaining_time_in_millis() / 1000
    request_timeout_s = max(1.0, min(_MAX_REQUEST_TIMEOUT_S, remaining_s - _TIMEOUT_MARGIN_S))
    outcome = indexer().process(records, now=now, request_timeout_s=request_timeout_s)
    notify_episodes(records, outcome, request_timeout_s)
    oldest = min((float(r["kinesis"]["approximateArrivalTimestamp"]) for r in records),
                 default=None)
    log.info("batch processed", {
        "records": len(records),
        "indexed": len(outcome.indexed),
        "dead_lettered": outcome.dead_lettered,
        "failed": len(outcome.failed),
        "alerts": outcome.alerts,
        "failure_statuses": dict(outcome.failure_statuses),
        "batch_lag_ms": None if oldest is None else round((now.timestamp() - oldest) * 1000),
    })
    failed = sorted(outcome.failed, key=int)  # stream order: Kinesis sequence numbers are numeric
    return {"batchItemFailures": [{"itemIdentifier": seq} for seq in failed]}
