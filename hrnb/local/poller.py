"""The local event source mapping: plays the Lambda service's Kinesis poller on one machine.

The emulator (moto) keeps the mapping, the function's configuration and the stream, but its own
Kinesis trigger cannot run code without Docker, so on the local stack the mapping is created
disabled and this poller does the work instead, with the mapping's settings (BatchSize,
MaximumBatchingWindowInSeconds, StartingPosition, FunctionResponseTypes, MaximumRetryAttempts,
MaximumRecordAgeInSeconds, BisectBatchOnFunctionError):

- per shard it gets an iterator, polls (every 250 ms by default) and invokes the function with at
  most BatchSize records, or fewer once the batching window has passed, in Lambda's exact Kinesis
  event shape;
- the function runs from its deployed zips (found in a local content-addressed store by the
  CodeSha256 the emulator reports) in a long-lived worker process (:mod:`hrnb.local.worker`),
  with temporary credentials of its execution role from the emulated STS; the function's
  configuration is read before every batch, so a batch after an update has completed runs the new
  code and settings in a new worker, as on AWS;
- a ``batchItemFailures`` answer resumes from the lowest failed sequence number; a function error
  retries the whole batch with backoff (halving it first if bisecting is on), at most
  MaximumRetryAttempts times (-1: until it succeeds); for a batch given up on, or records older
  than MaximumRecordAgeInSeconds, the mapping's on-failure destination (an SQS queue, from
  DestinationConfig) gets the same record Lambda sends (:func:`on_failure_record`: shard,
  sequence-number range, condition), and the records go to ``esm/<uuid>-discarded.jsonl`` too,
  never dropped silently;
- progress is checkpointed per shard, so a restart neither skips records nor replays the shard;
- iterator age and counters go to ``esm/status.json`` in the state directory.

Every Kinesis mapping of the selected functions is polled, whatever the State the emulator
shows; one worker per mapping runs one batch at a time (shards take turns). Without
``--function`` the functions are those of every prefix set up with this state directory (its
``provision-local-<prefix>.json`` files), so a prefix set up after ``hrnb local up`` is served
too; mappings are re-listed every 0.5 s, so a new or deleted trigger is followed at once and
``status.json`` says when a mapping is ``reading`` (what ``hrnb setup`` waits for). Run it with
``python -m hrnb.local.poller``; it logs to stderr.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict
from uuid import uuid4

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from hrnb.clients import aws_client
from hrnb.config import Settings
from hrnb.errors import ConfigError, StackError
from hrnb.local.code_store import unpacked_code
from hrnb.local.worker import FunctionSpec, InvokeResult, LambdaWorker, find_runtime_python
from hrnb.provision.state import esm_status_path, local_prefixes
from hrnb.wire.kinesis import kinesis_event
from hrnb.wire.retry import backoff_s

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sts import STSClient

logger = logging.getLogger(__name__)


DEFAULT_POLL_INTERVAL_S = 0.25


#: Lambda caps a synchronous invocation's request payload at 6 MB; leave room for the envelope.
MAX_EVENT_BYTES = 6 * 1024 * 1024 - 64 * 1024


_RECORD_ENVELOPE_BYTES = 512  # eventID, ARNs and keys around each record's data


_GET_RECORDS_LIMIT = 10_000


_RELOAD_INTERVAL_S = 0.5  # mappings are listed this often: a new trigger is read at once


_REFRESH_INTERVAL_S = 5.0  # credentials and shards are checked this often


_STATUS_INTERVAL_S = 1.0


_MAX_BACKOFF_S = 30.0
#: Delay before the next attempt at a failing batch: 0.5 s doubling, capped at 30 s.
batch_backoff_s = functools.partial(backoff_s, base_s=0.5, max_s=_MAX_BACKOFF_S)


_CREDENTIAL_MARGIN_S = 300.0


class ShardStatus(TypedDict):
    shard_id: str
    checkpoint: str | None  # last sequence number fully handled
    iterator_age_ms: int | None  # age of the newest record of the last batch, at invocation
    millis_behind_latest: int | None  # from the last GetRecords
    records_read: int
    records_succeeded: int
    invocations: int
    function_errors: int
    partial_failures: int
    records_discarded: int
    consecutive_failures: int
    last_error: str | None
    reading: bool  # a GetRecords has answered on this shard


class MappingStatus(TypedDict):
    uuid: str
    function_name: str
    event_source_arn: str
    batch_size: int
    batching_window_s: float
    starting_position: str
    report_batch_item_failures: bool
    max_retry_attempts: int
    max_record_age_s: int
    bisect_on_error: bool
    code_sha256: str | None
    python: str | None
    worker_pid: int | None
    worker_restarts: int
    last_error: str | None
    reading: bool  # the worker runs and every open shard has answered a GetRecords
    shards: list[ShardStatus]


class EsmStatus(TypedDict):
    pid: int
    started_at: str
    updated_at: str
    aws_endpoint_url: str | None
    mappings: list[MappingStatus]


def batch_length(records: Sequence[Mapping[str, Any]], batch_size: int,
                 max_event_bytes: int = MAX_EVENT_BYTES) -> int:
    """How many leading records make the next batch: at most ``batch_size``, under the payload
    limit, and always at least one."""
    total = 0
    for count, record in enumerate(records[:batch_size]):
        total += len(record["Data"]) * 4 // 3 + 4 + _RECORD_ENVELOPE_BYTES
        if total > max_event_bytes and count > 0:
            return count
    return min(len(records), batch_size)


def first_to_retry(payload: Any, sequence_numbers: Sequence[str]) -> int | None:
    """Index of the first record to retry after a ``batchItemFailures`` answer, None if all done.

    As Lambda does, an answer it cannot read (an identifier missing, empty or not in the batch)
    fails the whole batch.
    """
    if not isinstance(payload, Mapping) or not payload.get("batchItemFailures"):
        return None
    failures = payload["batchItemFailures"]
    position = {seq: index for index, seq in enumerate(sequence_numbers)}
    indexes = []
    for failure in failures if isinstance(failures, list) else [None]:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if identifier not in position:
            return 0
        indexes.append(position[identifier])
    return min(indexes)


@dataclass(frozen=True)
class MappingConfig:
    """The settings of one Kinesis event source mapping, as the emulator stores them."""

    uuid: str
    function_arn: str
    event_source_arn: str
    batch_size: int
    batching_window_s: float
    starting_position: str
    starting_position_timestamp: datetime | None
    report_batch_item_failures: bool
    max_retry_attempts: int  # -1: retry until the batch succeeds
    max_record_age_s: int  # -1: records never expire
    bisect_on_error: bool
    on_failure: str | None = None  # ARN of the SQS queue given-up batches are reported to

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> MappingConfig:
        return cls(
            uuid=raw["UUID"],
            function_arn=raw["FunctionArn"],
            event_source_arn=raw["EventSourceArn"],
            batch_size=int(raw.get("BatchSize") or 100),
            batching_window_s=float(raw.get("MaximumBatchingWindowInSeconds") or 0),
            starting_position=raw.get("StartingPosition") or "TRIM_HORIZON",
            starting_position_timestamp=raw.get("StartingPositionTimestamp"),
            report_batch_item_failures="ReportBatchItemFailures"
            in (raw.get("FunctionResponseTypes") or []),
            max_retry_attempts=int(raw.get("MaximumRetryAttempts", -1)),
            max_record_age_s=int(raw.get("MaximumRecordAgeInSeconds", -1)),
            bisect_on_error=bool(raw.get("BisectBatchOnFunctionError", False)),
            on_failure=((raw.get("DestinationConfig") or {}).get("OnFailure") or {}).get(
                "Destination") or None,
        )

    @property
    def stream_name(self) -> str:
        return self.event_source_arn.rsplit("/", 1)[-1]

    @property
    def function_name(self) -> str:
        return self.function_arn.split(":")[6]


@dataclass(frozen=True)
class Deployment:
    """What the function is right now: its code, settings and the role's credentials."""

    spec: FunctionSpec
    fingerprint: str  # see deployment_fingerprint
    code_sha256: str
    role_arn: str
    credentials_expire_at: float  # epoch seconds


def deployment_fingerprint(function_config: Mapping[str, Any]) -> str:
    """Changes whenever the code, settings or role of the function change."""
    keys = ("CodeSha256", "Layers", "Environment", "Handler", "Runtime", "Timeout", "MemorySize",
            "Role", "LastModified")
    return json.dumps({key: function_config.get(key) for key in keys}, sort_keys=True,
                      default=str)


def load_deployment(
    settings: Settings, lambda_client: LambdaClient, sts_client: STSClient,
    config: Mapping[str, Any], *, python: str | None = None,
) -> Deployment:
    """Unpack the function's code (``config`` from GetFunctionConfiguration) and assume its
    execution role, as Lambda does for a new execution environment. Layers are not mounted:
    hrnb's function has none, and a function that needs one fails here rather than passing;
    the log says so once per deployment, naming the layers."""
    task_root = unpacked_code(settings.cache_dir, config["CodeSha256"])
    layers = [layer["Arn"] for layer in config.get("Layers") or ()]
    if layers:
        logger.warning("%s has %d layer(s) attached (%s); the local poller does not mount "
                       "layers in /opt, so it runs the function from its own zip alone",
                       config["FunctionName"], len(layers), ", ".join(layers))
    runtime = config.get("Runtime") or "python3.12"
    interpreter = python or find_runtime_python(runtime)
    if interpreter is None:
        interpreter = sys.executable
        logger.warning("no %s interpreter found; running %s with %s", runtime,
                       config["FunctionName"], interpreter)
    role_arn = config["Role"]
    assumed = sts_client.assume_role(
        RoleArn=role_arn, RoleSessionName=config["FunctionName"][:64]
    )["Credentials"]
    variables = (config.get("Environment") or {}).get("Variables") or {}
    environment = {
        **variables,
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_ACCESS_KEY_ID": assumed["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": assumed["SecretAccessKey"],
        "AWS_SESSION_TOKEN": assumed["SessionToken"],
    }
    if settings.local_security:
        # The local domain endpoint's certificate comes from the local CA; Lambda's runtime
        # trusts the public CAs the same way (the handler reads SSL_CERT_FILE).
        environment["SSL_CERT_FILE"] = str(settings.local_ca_path)
    spec = FunctionSpec(
        function_name=config["FunctionName"],
        function_arn=config["FunctionArn"],
        handler=config.get("Handler") or "handler.lambda_handler",
        task_root=task_root,
        python=interpreter,
        environment=environment,
        timeout_s=float(config.get("Timeout") or 3),
        memory_mb=int(config.get("MemorySize") or 128),
    )
    return Deployment(
        spec=spec,
        fingerprint=deployment_fingerprint(config),
        code_sha256=config["CodeSha256"],
        role_arn=role_arn,
        credentials_expire_at=assumed["Expiration"].timestamp(),
    )


@dataclass
class ShardState:
    """Where one shard is: its iterator, records read but not yet handled, and counters."""

    shard_id: str
    parent_shard_id: str | None = None
    iterator: str | None = None
    buffer: list[Mapping[str, Any]] = field(default_factory=list)
    buffered_since: float | None = None  # monotonic time the oldest buffered record was read
    next_fetch_at: float = 0.0
    next_attempt_at: float = 0.0
    closed: bool = False  # the shard has no more records (resharded)
    from_starting_position: bool = False  # no checkpoint yet: use the mapping's position
    bisected_size: int | None = None  # a failing batch is halved until it succeeds
    status: ShardStatus = field(default_factory=lambda: ShardStatus(
        shard_id="", checkpoint=None, iterator_age_ms=None, millis_behind_latest=None,
        records_read=0, records_succeeded=0, invocations=0, function_errors=0,
        partial_failures=0, records_discarded=0, consecutive_failures=0, last_error=None,
        reading=False,
    ))

    def __post_init__(self) -> None:
        self.status["shard_id"] = self.shard_id

    @property
    def finished(self) -> bool:
        return self.closed and not self.buffer


class Checkpoints:
    """Per-shard progress of one mapping, in ``esm/<uuid>.json`` (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._shards: dict[str, dict[str, Any]] = json.loads(path.read_text())["shards"]
        except FileNotFoundError:
            self._shards = {}

    def position(self, shard_id: str) -> dict[str, Any] | None:
        return self._shards.get(shard_id)

    def known(self) -> bool:
        """True once this mapping has ever started, so new shards are children of a reshard."""
        return self.path.exists()

    def save(self, shard_id: str, position: dict[str, Any]) -> None:
        self._shards[shard_id] = position
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"shards": self._shards}, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


class MappingPoller:
    """Runs one event source mapping: its shards, its worker, its checkpoints."""

    def __init__(self, poller: EventSourceMappingPoller, config: MappingConfig) -> None:
        self.owner = poller
        self.config = config
        self.deployment: Deployment | None = None
        self.worker: LambdaWorker | None = None
        self.shards: dict[str, ShardState] = {}
        esm_dir = poller.settings.state_dir / "esm"
        self.checkpoints = Checkpoints(esm_dir / f"{config.uuid}.json")
        self.discarded_path = esm_dir / f"{config.uuid}-discarded.jsonl"
        self.last_error: str | None = None
        self.refreshed_at = -_REFRESH_INTERVAL_S  # monotonic time of the last refresh()

    # -- lifecycle --

    def refresh(self, config: MappingConfig) -> None:
        """Pick up new settings, a redeployed function, fresh credentials and new shards."""
        self.config = config
        self._follow_function()
        self._discover_shards()
        self.last_error = None
        self.refreshed_at = time.monotonic()

    def _follow_function(self) -> None:
        """Run what the function is now: a new worker when its code, settings or role changed
        or its credentials are near their end. Called before every batch too, as Lambda invokes
        the updated function from the moment the update completes, not seconds later."""
        owner = self.owner
        function_config = owner.lambda_client.get_function_configuration(
            FunctionName=self.config.function_arn)
        current = self.deployment
        if (current is not None
                and current.fingerprint == deployment_fingerprint(function_config)
                and current.credentials_expire_at - time.time() >= _CREDENTIAL_MARGIN_S):
            return
        deployment = load_deployment(owner.settings, owner.lambda_client, owner.sts_client,
                                     function_config, python=owner.python)
        if self.worker is not None:
            logger.info("%s: redeployed or credentials renewed; new worker",
                        self.config.function_name)
            self.worker.close()
        log_path = owner.settings.state_dir / "lambda-logs" / f"{self.config.function_name}.log"
        self.worker = LambdaWorker(deployment.spec, log_path=log_path)
        self.deployment = deployment

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()

    def _discover_shards(self) -> None:
        kinesis = self.owner.kinesis_client
        pages = kinesis.get_paginator("list_shards").paginate(StreamName=self.config.stream_name)
        first_start = not self.checkpoints.known()
        for page in pages:
            for shard in page["Shards"]:
                shard_id = shard["ShardId"]
                if shard_id in self.shards:
                    continue
                state = ShardState(shard_id, parent_shard_id=shard.get("ParentShardId"),
                                   from_starting_position=first_start)
                state.status["checkpoint"] = (self.checkpoints.position(shard_id) or {}).get(
                    "after_sequence_number")
                self.shards[shard_id] = state

    def _open_iterator(self, shard: ShardState) -> str:
        """An iterator from the checkpoint, else the starting position (new shards born of a
        reshard after the mapping started are read from their beginning)."""
        kinesis = self.owner.kinesis_client
        args: dict[str, Any] = {"StreamName": self.config.stream_name, "ShardId": shard.shard_id}
        saved = self.checkpoints.position(shard.shard_id)
        if shard.buffer:  # re-open after an expired iterator: continue after what is buffered
            args |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                     "StartingSequenceNumber": shard.buffer[-1]["SequenceNumber"]}
        elif saved and "after_sequence_number" in saved:
            args |= {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                     "StartingSequenceNumber": saved["after_sequence_number"]}
        elif saved and "at_timestamp" in saved:
            args |= {"ShardIteratorType": "AT_TIMESTAMP",
                     "Timestamp": datetime.fromtimestamp(saved["at_timestamp"], tz=UTC)}
        elif not shard.from_starting_position or self.config.starting_position == "TRIM_HORIZON":
            args |= {"ShardIteratorType": "TRIM_HORIZON"}
        elif self.config.starting_position == "AT_TIMESTAMP":
            args |= {"ShardIteratorType": "AT_TIMESTAMP",
                     "Timestamp": self.config.starting_position_timestamp}
        else:  # LATEST: remember when, so a restart before the first record skips nothing
            self.checkpoints.save(shard.shard_id, {"at_timestamp": time.time()})
            args |= {"ShardIteratorType": "LATEST"}
        shard.iterator = kinesis.get_shard_iterator(**args)["ShardIterator"]
        return shard.iterator

    # -- one step --

    def step(self, now: float) -> bool:
        """Fetch and invoke where due; True if anything was read or invoked."""
        busy = False
        for shard in list(self.shards.values()):
            parent = self.shards.get(shard.parent_shard_id or "")
            if shard.finished or (parent is not None and not parent.finished):
                continue  # children wait for their parent, as in Lambda
            try:
                busy |= self._fetch(shard, now)
                busy |= self._maybe_invoke(shard, time.monotonic())
            except (BotoCoreError, ClientError) as exc:
                shard.status["last_error"] = str(exc)
                shard.next_fetch_at = now + batch_backoff_s(2)
                if _error_code(exc) == "ExpiredIteratorException":
                    shard.iterator = None  # re-opened from the checkpoint at the next fetch
                else:
                    logger.warning("%s %s: %s", self.config.function_name, shard.shard_id, exc)
        return busy

    def _fetch(self, shard: ShardState, now: float) -> bool:
        wanted = self.config.batch_size - len(shard.buffer)
        if shard.closed or wanted <= 0 or now < shard.next_fetch_at:
            return False
        iterator = self._open_iterator(shard) if shard.iterator is None else shard.iterator
        response = self.owner.kinesis_client.get_records(
            ShardIterator=iterator, Limit=min(_GET_RECORDS_LIMIT, wanted)
        )
        records = response["Records"]
        shard.iterator = response.get("NextShardIterator")
        shard.closed = shard.iterator is None
        shard.status["millis_behind_latest"] = response.get("MillisBehindLatest")
        shard.status["reading"] = True
        if records:
            shard.status["records_read"] += len(records)
            if not shard.buffer:
                shard.buffered_since = now
            shard.buffer.extend(records)
            shard.next_fetch_at = now
        else:
            shard.next_fetch_at = now + self.owner.poll_interval_s
        return bool(records)

    def _maybe_invoke(self, shard: ShardState, now: float) -> bool:
        config = self.config
        if not shard.buffer or now < shard.next_attempt_at or self.worker is None:
            return False
        window_open = (shard.buffered_since is not None
                       and now - shard.buffered_since < config.batching_window_s)
        if len(shard.buffer) < config.batch_size and window_open and not shard.closed:
            return False
        if self._expire_old_records(shard):
            return True
        self._follow_function()
        assert self.deployment is not None
        size = min(config.batch_size, shard.bisected_size or config.batch_size)
        batch = shard.buffer[:batch_length(shard.buffer, size)]
        event = kinesis_event(
            batch, shard_id=shard.shard_id, stream_arn=config.event_source_arn,
            region=self.owner.settings.region, role_arn=self.deployment.role_arn,
        )
        newest = batch[-1]["ApproximateArrivalTimestamp"].timestamp()
        shard.status["iterator_age_ms"] = max(0, round((time.time() - newest) * 1000))
        shard.status["invocations"] += 1
        result = self.worker.invoke(event)
        self._settle(shard, batch, result)
        self.owner.write_status()
        return True

    def _expire_old_records(self, shard: ShardState) -> bool:
        """Discard leading records older than MaximumRecordAgeInSeconds, as Lambda does."""
        max_age = self.config.max_record_age_s
        if max_age < 0:
            return False
        oldest_allowed = time.time() - max_age
        expired = 0
        for record in shard.buffer:
            if record["ApproximateArrivalTimestamp"].timestamp() >= oldest_allowed:
                break
            expired += 1
        if expired:
            self._discard(shard, shard.buffer[:expired],
                          f"older than MaximumRecordAgeInSeconds ({max_age} s)",
                          condition="RecordAgeExceeded")
        return expired > 0

    def _settle(self, shard: ShardState, batch: list[Mapping[str, Any]],
                result: InvokeResult) -> None:
        """Advance past what succeeded; schedule a retry of the rest, or give it up."""
        sequence_numbers = [record["SequenceNumber"] for record in batch]
        if not result.ok:
            shard.status["function_errors"] += 1
            shard.status["last_error"] = (
                f"{result.error.get('errorType')}: {result.error.get('errorMessage')}"
                if result.error else None)
            logger.warning("%s %s: function error on %d records: %s", self.config.function_name,
                           shard.shard_id, len(batch), shard.status["last_error"])
            retry_from: int | None = 0
        elif self.config.report_batch_item_failures:
            retry_from = first_to_retry(result.payload, sequence_numbers)
            if retry_from is not None:
                shard.status["partial_failures"] += 1
        else:
            retry_from = None
        done = len(batch) if retry_from is None else retry_from
        if done:
            self._advance(shard, batch[:done])
            shard.status["records_succeeded"] += done
            shard.status["consecutive_failures"] = 0
        if retry_from is None:
            shard.next_attempt_at = 0.0
            shard.bisected_size = None
            shard.status["last_error"] = None
            return
        if not result.ok and self.config.bisect_on_error and len(batch) > 1:
            # Halve the failing batch to isolate the record at fault; splitting is not a retry.
            shard.bisected_size = len(batch) // 2
            shard.next_attempt_at = 0.0
            return
        shard.status["consecutive_failures"] += 1
        failures = shard.status["consecutive_failures"]
        limit = self.config.max_retry_attempts
        if done == 0 and limit >= 0 and failures > limit:
            self._discard(shard, batch, shard.status["last_error"] or "partial batch failure",
                          condition="RetryAttemptsExhausted",
                          function_error=None if result.ok else "Unhandled")
            return
        # Progress resets the count, so the rest goes again at once; no progress backs off.
        shard.next_attempt_at = time.monotonic() + (batch_backoff_s(failures) if done == 0 else 0.0)

    def _advance(self, shard: ShardState, handled: list[Mapping[str, Any]]) -> None:
        del shard.buffer[: len(handled)]
        shard.buffered_since = time.monotonic() if shard.buffer else None
        last = handled[-1]["SequenceNumber"]
        self.checkpoints.save(shard.shard_id, {"after_sequence_number": last})
        shard.status["checkpoint"] = last
        shard.from_starting_position = False

    def _discard(self, shard: ShardState, batch: list[Mapping[str, Any]], reason: str, *,
                 condition: str, function_error: str | None = None) -> None:
        """Give up on records (retries exhausted, or too old): report the batch to the
        on-failure destination as Lambda does, and keep the records in the discarded file."""
        logger.error("%s %s: giving up on %d records after %d attempts (%s); kept in %s",
                     self.config.function_name, shard.shard_id, len(batch),
                     shard.status["consecutive_failures"], reason, self.discarded_path)
        if self.config.on_failure and self.deployment is not None:
            self.owner.send_on_failure(self.config.on_failure, self.deployment, on_failure_record(
                self.config, shard.shard_id, batch, condition=condition,
                invoke_count=shard.status["consecutive_failures"],
                function_error=function_error))
        self.discarded_path.parent.mkdir(parents=True, exist_ok=True)
        with self.discarded_path.open("a") as out:
            for record in batch:
                out.write(json.dumps({
                    "shard_id": shard.shard_id,
                    "sequence_number": record["SequenceNumber"],
                    "partition_key": record["PartitionKey"],
                    "data": base64.b64encode(record["Data"]).decode("ascii"),
                    "reason": reason,
                }) + "\n")
        shard.status["records_discarded"] += len(batch)
        self._advance(shard, batch)
        shard.status["consecutive_failures"] = 0
        shard.bisected_size = None
        shard.next_attempt_at = 0.0

    def status(self) -> MappingStatus:
        config = self.config
        deployment = self.deployment
        return {
            "uuid": config.uuid,
            "function_name": config.function_name,
            "event_source_arn": config.event_source_arn,
            "batch_size": config.batch_size,
            "batching_window_s": config.batching_window_s,
            "starting_position": config.starting_position,
            "report_batch_item_failures": config.report_batch_item_failures,
            "max_retry_attempts": config.max_retry_attempts,
            "max_record_age_s": config.max_record_age_s,
            "bisect_on_error": config.bisect_on_error,
            "code_sha256": deployment.code_sha256 if deployment else None,
            "python": deployment.spec.python if deployment else None,
            "worker_pid": self.worker.pid if self.worker else None,
            "worker_restarts": self.worker.restarts if self.worker else 0,
            "last_error": self.last_error,
            "reading": self.worker is not None and bool(self.shards) and all(
                shard.status["reading"] or shard.closed for shard in self.shards.values()),
            "shards": [dict(shard.status) for shard in self.shards.values()],  # type: ignore[misc]
        }


def on_failure_record(config: MappingConfig, shard_id: str, batch: Sequence[Mapping[str, Any]],
                      *, condition: str, invoke_count: int,
                      function_error: str | None) -> dict[str, Any]:
    """What Lambda sends a Kinesis mapping's on-failure destination for a batch it gives up on:
    the coordinates of the records (shard, first and last sequence number), not the records."""
    record: dict[str, Any] = {
        "requestContext": {
            "requestId": str(uuid4()),
            "functionArn": config.function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "version": "1.0",
        "timestamp": _now_iso(),
        "KinesisBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": batch[0]["SequenceNumber"],
            "endSequenceNumber": batch[-1]["SequenceNumber"],
            "approximateArrivalOfFirstRecord": _iso(batch[0]["ApproximateArrivalTimestamp"]),
            "approximateArrivalOfLastRecord": _iso(batch[-1]["ApproximateArrivalTimestamp"]),
            "batchSize": len(batch),
            "streamArn": config.event_source_arn,
        },
    }
    if invoke_count:
        record["responseContext"] = {"statusCode": 200, "executedVersion": "$LATEST"}
        if function_error:
            record["responseContext"]["functionError"] = function_error
    return record


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error_code(exc: Exception) -> str | None:
    return exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None


class EventSourceMappingPoller:
    """Polls every Kinesis mapping of the selected functions until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        function_names: Sequence[str] | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        python: str | None = None,
    ) -> None:
        if function_names is not None and not function_names:
            raise ConfigError("name at least one function whose mappings to poll",
                              setting="function")
        if not 0.01 <= poll_interval_s <= 60:
            raise ConfigError(f"poll interval must be 0.01..60 s, got {poll_interval_s}",
                              setting="poll_interval")
        self.settings = settings
        self.function_names = None if function_names is None else tuple(function_names)
        self.poll_interval_s = poll_interval_s
        self.python = python
        self.lambda_client = aws_client(settings, "lambda")
        self.kinesis_client = aws_client(settings, "kinesis")
        self.sts_client = aws_client(settings, "sts")
        self.mappings: dict[str, MappingPoller] = {}
        self.started_at = _now_iso()
        self._last_status = 0.0

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop`` is set; finishes the invocation in flight, then stops workers."""
        next_reload = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_reload:
                    self.reload()
                    next_reload = now + _RELOAD_INTERVAL_S
                busy = False
                for mapping in list(self.mappings.values()):
                    try:
                        busy |= mapping.step(now)
                    except Exception as exc:  # keep the other mappings going; say what broke
                        logger.exception("%s: poller step failed", mapping.config.function_name)
                        mapping.last_error = f"{type(exc).__name__}: {exc}"
                    if stop.is_set():
                        break
                if time.monotonic() - self._last_status >= _STATUS_INTERVAL_S:
                    self.write_status()
                if not busy:
                    stop.wait(self.poll_interval_s)
        finally:
            for mapping in self.mappings.values():
                mapping.close()
            self.write_status()

    def served_functions(self) -> tuple[str, ...]:
        """The functions named on the command line, else those of every prefix set up with
        this state directory (read again at every reload)."""
        if self.function_names is not None:
            return self.function_names
        return tuple(self.settings.with_overrides(prefix=prefix).function_name
                     for prefix in local_prefixes(self.settings.state_dir))

    def reload(self) -> None:
        """Re-read mappings from the emulator (new, changed, deleted); refresh a mapping's
        function and shards when it is new or changed, else every few seconds."""
        seen: set[str] = set()
        for name in self.served_functions():
            try:
                raw_mappings = self._list_mappings(name)
            except (BotoCoreError, ClientError) as exc:
                logger.warning("cannot list the event source mappings of %s: %s", name, exc)
                seen |= {u for u, m in self.mappings.items() if m.config.function_name == name}
                continue
            for raw in raw_mappings:
                if ":kinesis:" not in raw["EventSourceArn"]:
                    continue
                config = MappingConfig.from_api(raw)
                seen.add(config.uuid)
                mapping = self.mappings.get(config.uuid)
                if mapping is None:
                    mapping = self.mappings[config.uuid] = MappingPoller(self, config)
                    logger.info("polling %s for %s (batch size %d, window %.1f s, %s)",
                                config.stream_name, config.function_name, config.batch_size,
                                config.batching_window_s, config.starting_position)
                elif (mapping.config == config and mapping.last_error is None
                      and time.monotonic() - mapping.refreshed_at < _REFRESH_INTERVAL_S):
                    continue
                try:
                    mapping.refresh(config)
                except (BotoCoreError, ClientError, StackError, OSError) as exc:
                    mapping.last_error = str(exc)
                    logger.warning("%s: %s", config.function_name, exc)
        for uuid in set(self.mappings) - seen:
            logger.info("mapping %s is gone; stopping it", uuid)
            self.mappings.pop(uuid).close()

    def send_on_failure(self, queue_arn: str, deployment: Deployment,
                        record: Mapping[str, Any]) -> None:
        """Send an on-failure record to an SQS destination with the function's role, as Lambda
        does; a failure is logged (the records are in the discarded file regardless)."""
        _, _, _, _, account, name = queue_arn.split(":", 5)
        environment = deployment.spec.environment
        sqs = boto3.client("sqs", endpoint_url=self.settings.resolved_aws_endpoint_url,
                           region_name=self.settings.region,
                           aws_access_key_id=environment["AWS_ACCESS_KEY_ID"],
                           aws_secret_access_key=environment["AWS_SECRET_ACCESS_KEY"],
                           aws_session_token=environment["AWS_SESSION_TOKEN"])
        try:
            url = sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))
        except (BotoCoreError, ClientError) as exc:
            logger.error("cannot send the on-failure record of %s to %s: %s",
                         record["KinesisBatchInfo"]["shardId"], queue_arn, exc)

    def _list_mappings(self, function_name: str) -> list[Mapping[str, Any]]:
        paginator = self.lambda_client.get_paginator("list_event_source_mappings")
        return [
            mapping
            for page in paginator.paginate(FunctionName=function_name)
            for mapping in page["EventSourceMappings"]
        ]

    def status(self) -> EsmStatus:
        return {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": _now_iso(),
            "aws_endpoint_url": self.settings.resolved_aws_endpoint_url,
            "mappings": [mapping.status() for mapping in self.mappings.values()],
        }

    def write_status(self) -> None:
        path = esm_status_path(self.settings.state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1))
        os.replace(tmp, path)
        self._last_status = time.monotonic()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")




def status_lines(status: EsmStatus) -> list[str]:
    """One human line per mapping and per shard, for ``hrnb local status``."""
    lines = []
    for mapping in status["mappings"]:
        problem = f", error: {mapping['last_error']}" if mapping["last_error"] else ""
        lines.append(
            f"{mapping['function_name']} <- {mapping['event_source_arn'].rsplit('/', 1)[-1]} "
            f"(batch size {mapping['batch_size']}, {mapping['starting_position']}, "
            f"worker pid {mapping['worker_pid'] or '-'}, "
            f"{'reading' if mapping.get('reading') else 'not reading yet'}){problem}"
        )
        for shard in mapping["shards"]:
            age = shard["iterator_age_ms"]
            lines.append(
                f"  {shard['shard_id']}: checkpoint {shard['checkpoint'] or '-'}, iterator age "
                f"{'-' if age is None else f'{age} ms'}, {shard['records_succeeded']} records in "
                f"{shard['invocations']} invocations, {shard['function_errors']} function errors, "
                f"{shard['partial_failures']} partial failures, "
                f"{shard['records_discarded']} discarded"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hrnb.local.poller``: poll until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m hrnb.local.poller",
        description="Local Kinesis event source mapping for Lambda."
    )
    parser.add_argument("--state-dir", type=Path, help="checkpoints, code store, status, logs")
    parser.add_argument("--aws-endpoint-url", help="the emulator (default: settings)")
    parser.add_argument("--region")
    parser.add_argument("--function", action="append", dest="functions",
                        help="function whose mappings to poll (repeatable; default: those of "
                             "every prefix set up with this state directory)")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL_S,
                        help="seconds between polls of an idle shard (default 0.25)")
    parser.add_argument("--python", help="interpreter for the function (default: its runtime's)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {name: value for name, value in (
        ("state_dir", args.state_dir), ("aws_endpoint_url", args.aws_endpoint_url),
        ("region", args.region)) if value is not None}
    try:
        # The poller's own state may live elsewhere; the CA is the stack's.
        settings = Settings.from_env().with_overrides(**overrides)
        if not settings.is_local:
            raise ConfigError("the local event source mapping only runs on the local target "
                              "(on AWS, Lambda polls the stream itself)", setting="target")
        poller = EventSourceMappingPoller(
            settings, function_names=args.functions,
            poll_interval_s=args.poll_interval, python=args.python,
        )
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logger.info("local event source mapping started (pid %d, state in %s)", os.getpid(),
                settings.state_dir)
    poller.run(stop)
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

