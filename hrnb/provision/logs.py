"""The function's CloudWatch log group with a bounded retention."""

from __future__ import annotations

from typing import Any

from hrnb.config import Settings
from hrnb.provision.base import (
    OWNER_TAG,
    AwsClients,
    StepResult,
    _aws,
    _owned_or_skip,
    _require_owned,
)

LOG_RETENTION_DAYS = 14


# --- log group -------------------------------------------------------------------------------
def ensure_log_group(settings: Settings, clients: AwsClients | None = None) -> StepResult:
    """The function's log group, made by set-up (with a retention) so the role need not be
    allowed to create log groups, and teardown can remove the stored logs."""
    return _log_group_step(settings, clients or AwsClients(settings), apply=True)


def _find_log_group(aws: AwsClients, name: str) -> dict[str, Any] | None:
    groups = _aws(name, "look up log group", aws.logs.describe_log_groups,
                  logGroupNamePrefix=name)["logGroups"]
    return next((group for group in groups if group["logGroupName"] == name), None)


def _log_group_step(settings: Settings, aws: AwsClients, *, apply: bool) -> StepResult:
    name = settings.log_group_name
    group = _find_log_group(aws, name)
    if group is None:
        if apply:
            _aws(name, "create log group", aws.logs.create_log_group, logGroupName=name,
                 tags={OWNER_TAG: settings.prefix})
            _aws(name, "set retention of log group", aws.logs.put_retention_policy,
                 logGroupName=name, retentionInDays=LOG_RETENTION_DAYS)
        return StepResult("log group", "created", name, aws.arns.log_group.removesuffix(":*"),
                          f"retention {LOG_RETENTION_DAYS} days")
    arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
    tags = _aws(name, "read tags of log group", aws.logs.list_tags_for_resource,
                resourceArn=arn)["tags"]
    _require_owned("log group", name, tags, settings)
    if group.get("retentionInDays") == LOG_RETENTION_DAYS:
        return StepResult("log group", "unchanged", name, arn,
                          f"retention {LOG_RETENTION_DAYS} days")
    if apply:
        _aws(name, "set retention of log group", aws.logs.put_retention_policy,
             logGroupName=name, retentionInDays=LOG_RETENTION_DAYS)
    return StepResult("log group", "updated", name, arn,
                      f"retention {group.get('retentionInDays')} -> {LOG_RETENTION_DAYS} days")


def _teardown_log_group(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.log_group_name
    group = _find_log_group(aws, name)
    if group is None:
        return [StepResult("log group", "absent", name)]
    arn = group.get("logGroupArn") or group["arn"].removesuffix(":*")
    tags = _aws(name, "read tags of log group", aws.logs.list_tags_for_resource,
                resourceArn=arn)["tags"]
    skipped = _owned_or_skip("log group", name, "log group", tags, settings)
    if skipped:
        return [skipped]
    if apply:
        _aws(name, "delete log group", aws.logs.delete_log_group, logGroupName=name)
    return [StepResult("log group", "deleted", name, arn, f"{group.get('storedBytes', 0)} bytes")]

