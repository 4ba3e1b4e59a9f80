"""The SQS queue the trigger sends the coordinates of given-up batches to (its on-failure
destination), so ``hrnb redrive`` can re-read them from the stream while retention lasts."""

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

#: SQS's maximum: the messages outlive the stream's 24 h retention, so a late redrive can
#: still say which records are gone.
QUEUE_RETENTION_S = 14 * 24 * 3600


_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def ensure_failure_queue(settings: Settings, clients: AwsClients | None = None) -> StepResult:
    """The trigger's on-failure destination, tagged as hrnb's."""
    return _queue_step(settings, clients or AwsClients(settings), apply=True)


def failure_queue_url(aws: AwsClients, settings: Settings) -> str | None:
    found = _aws(settings.failure_queue_name, "look up queue", aws.sqs.get_queue_url,
                 missing=_MISSING, QueueName=settings.failure_queue_name)
    return None if found is None else str(found["QueueUrl"])


def _queue_tags(aws: AwsClients, name: str, url: str) -> dict[str, str]:
    return dict(_aws(name, "read tags of queue", aws.sqs.list_queue_tags,
                     QueueUrl=url).get("Tags") or {})


def _queue_step(settings: Settings, aws: AwsClients, *, apply: bool) -> StepResult:
    name = settings.failure_queue_name
    url = failure_queue_url(aws, settings)
    detail = "on-failure destination of the trigger; messages kept 14 days"
    if url is None:
        if apply:
            _aws(name, "create queue", aws.sqs.create_queue, QueueName=name,
                 Attributes={"MessageRetentionPeriod": str(QUEUE_RETENTION_S)},
                 tags={OWNER_TAG: settings.prefix})
        return StepResult("failure queue", "created", name, aws.arns.queue, detail)
    _require_owned("SQS queue", name, _queue_tags(aws, name, url), settings)
    attributes: dict[str, Any] = _aws(name, "read queue", aws.sqs.get_queue_attributes,
                                      QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])
    retention = attributes.get("Attributes", {}).get("MessageRetentionPeriod")
    if retention != str(QUEUE_RETENTION_S):
        if apply:
            _aws(name, "set retention of queue", aws.sqs.set_queue_attributes, QueueUrl=url,
                 Attributes={"MessageRetentionPeriod": str(QUEUE_RETENTION_S)})
        return StepResult("failure queue", "updated", name, aws.arns.queue,
                          f"retention {retention} s -> {QUEUE_RETENTION_S} s")
    return StepResult("failure queue", "unchanged", name, aws.arns.queue, detail)


def _teardown_queue(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.failure_queue_name
    url = failure_queue_url(aws, settings)
    if url is None:
        return [StepResult("failure queue", "absent", name)]
    skipped = _owned_or_skip("SQS queue", name, "failure queue",
                             _queue_tags(aws, name, url), settings)
    if skipped:
        return [skipped]
    if apply:
        _aws(name, "delete queue", aws.sqs.delete_queue, QueueUrl=url)
    return [StepResult("failure queue", "deleted", name, aws.arns.queue,
                       "with any records of given-up batches not yet redriven")]
