"""The Kinesis data stream: created with its owner tag, its capacity kept as configured,
deleted by teardown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.provision.base import (
    OWNER_TAG,
    Action,
    AwsClients,
    StepResult,
    _aws,
    _owned_or_skip,
    _require_owned,
    _tag_list,
)

STREAM_RETENTION_HOURS = 24


# --- Kinesis stream ------------------------------------------------------------------------------
def ensure_stream(settings: Settings, clients: AwsClients | None = None) -> StepResult:
    """The heart-rate stream: on-demand (``stream_shards=0``) or N shards, 24 h retention."""
    return _stream_step(settings, clients or AwsClients(settings), apply=True)


def _stream_step(settings: Settings, aws: AwsClients, *, apply: bool) -> StepResult:
    name = settings.stream_name
    mode = "on-demand" if settings.stream_shards == 0 else f"{settings.stream_shards} shard(s)"
    summary = _describe_stream(aws, name)
    if summary is None:
        if apply:
            request: dict[str, Any] = {"StreamName": name}
            if settings.stream_shards == 0:
                request["StreamModeDetails"] = {"StreamMode": "ON_DEMAND"}
            else:
                request["ShardCount"] = settings.stream_shards
                request["StreamModeDetails"] = {"StreamMode": "PROVISIONED"}
            _aws(name, "create stream", aws.kinesis.create_stream, **request)
            _wait_stream_active(aws, name)
            _aws(name, "tag stream", aws.kinesis.add_tags_to_stream, StreamName=name,
                 Tags={OWNER_TAG: settings.prefix})
            summary = _describe_stream(aws, name)
        arn = summary["StreamARN"] if summary else aws.arns.stream
        return StepResult("stream", "created", name, arn,
                          f"{mode}, retention {STREAM_RETENTION_HOURS} h")
    tags = _aws(name, "read tags of stream", aws.kinesis.list_tags_for_stream, StreamName=name)
    _require_owned("stream", name, _tag_list(tags["Tags"]), settings)
    if summary["StreamStatus"] == "DELETING":
        raise ProvisionError(f"stream {name} is being deleted; wait a minute and run set-up "
                             "again", resource=name)
    changes = _stream_changes(settings, summary)
    if changes and apply:
        _wait_stream_active(aws, name)
        _repair_stream(settings, aws, summary)
    action: Action = "updated" if changes else "unchanged"
    return StepResult("stream", action, name, summary["StreamARN"],
                      "; ".join(changes) or f"{mode}, retention {STREAM_RETENTION_HOURS} h")


def _describe_stream(aws: AwsClients, name: str) -> dict[str, Any] | None:
    found = _aws(name, "describe stream", aws.kinesis.describe_stream_summary,
                 missing={"ResourceNotFoundException"}, StreamName=name)
    return None if found is None else found["StreamDescriptionSummary"]


def _stream_changes(settings: Settings, summary: Mapping[str, Any]) -> list[str]:
    changes = []
    current_mode = summary.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
    if settings.stream_shards == 0 and current_mode != "ON_DEMAND":
        changes.append("capacity mode -> on-demand")
    if settings.stream_shards > 0:
        if current_mode != "PROVISIONED":
            changes.append("capacity mode -> provisioned")
        if summary.get("OpenShardCount") != settings.stream_shards:
            changes.append(f"shards {summary.get('OpenShardCount')} -> {settings.stream_shards}")
    if summary.get("RetentionPeriodHours") != STREAM_RETENTION_HOURS:
        changes.append(f"retention {summary.get('RetentionPeriodHours')} h -> "
                       f"{STREAM_RETENTION_HOURS} h")
    return changes


def _repair_stream(settings: Settings, aws: AwsClients, summary: Mapping[str, Any]) -> None:
    name = settings.stream_name
    current_mode = summary.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED")
    wanted_mode = "ON_DEMAND" if settings.stream_shards == 0 else "PROVISIONED"
    if current_mode != wanted_mode:
        _aws(name, "change capacity mode of stream", aws.kinesis.update_stream_mode,
             StreamARN=summary["StreamARN"], StreamModeDetails={"StreamMode": wanted_mode})
        _wait_stream_active(aws, name)
    if settings.stream_shards > 0:
        current = (_describe_stream(aws, name) or summary).get("OpenShardCount")
        for count in reshard_steps(int(current or settings.stream_shards),
                                   settings.stream_shards):
            _aws(name, "reshard stream", aws.kinesis.update_shard_count, StreamName=name,
                 TargetShardCount=count, ScalingType="UNIFORM_SCALING")
            _wait_stream_active(aws, name)
    retention = summary.get("RetentionPeriodHours", STREAM_RETENTION_HOURS)
    if retention > STREAM_RETENTION_HOURS:
        _aws(name, "shorten retention of stream", aws.kinesis.decrease_stream_retention_period,
             StreamName=name, RetentionPeriodHours=STREAM_RETENTION_HOURS)
    elif retention < STREAM_RETENTION_HOURS:
        _aws(name, "lengthen retention of stream", aws.kinesis.increase_stream_retention_period,
             StreamName=name, RetentionPeriodHours=STREAM_RETENTION_HOURS)


def reshard_steps(current: int, target: int) -> list[int]:
    """The shard counts to pass through from ``current`` to ``target``: UpdateShardCount at
    most doubles or halves per call (pure)."""
    steps = []
    while current != target:
        current = min(target, current * 2) if target > current else max(target, -(-current // 2))
        steps.append(current)
    return steps


def _wait_stream_active(aws: AwsClients, name: str) -> None:
    waiter = aws.kinesis.get_waiter("stream_exists")
    _aws(name, "wait for stream", waiter.wait, StreamName=name,
         WaiterConfig={"Delay": 2, "MaxAttempts": 90})


def _teardown_stream(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.stream_name
    summary = _describe_stream(aws, name)
    if summary is None:
        return [StepResult("stream", "absent", name)]
    tags = _aws(name, "read tags of stream", aws.kinesis.list_tags_for_stream, StreamName=name)
    skipped = _owned_or_skip("stream", name, "stream", _tag_list(tags["Tags"]), settings)
    if skipped:
        return [skipped]
    if apply and summary["StreamStatus"] != "DELETING":
        _aws(name, "delete stream", aws.kinesis.delete_stream, StreamName=name,
             EnforceConsumerDeletion=True)
    return [StepResult("stream", "deleted", name, summary["StreamARN"])]

