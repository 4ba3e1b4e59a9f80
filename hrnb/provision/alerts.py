"""The alert topic the function publishes each episode to, and the SQS queue subscribed to it:
the record of delivered notifications that ``hrnb alerts`` reads (on AWS as locally, where the
emulator's SNS delivers to it). People subscribe by email, SMS or HTTPS with
:func:`subscribe`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from hrnb.config import Settings
from hrnb.errors import ConfigError
from hrnb.provision import policies
from hrnb.provision.base import (
    OWNER_TAG,
    AwsClients,
    StepResult,
    _aws,
    _owned_or_skip,
    _require_owned,
    _tag_list,
)

#: What the log queue keeps: SQS's maximum, so notifications nobody listed yet are not lost.
ALERT_LOG_RETENTION_S = 14 * 24 * 3600
_QUEUE_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_TOPIC_MISSING = {"NotFound", "NotFoundException"}
_E164_RE = re.compile(r"\+[1-9]\d{6,14}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

Protocol = Literal["email", "sms", "https"]


def sns_endpoint(settings: Settings) -> str:
    """Where the function sends Publish: the emulator locally, the regional endpoint on AWS."""
    if settings.is_local:
        return str(settings.resolved_aws_endpoint_url)
    suffix = ".cn" if settings.region.startswith("cn-") else ""
    return f"https://sns.{settings.region}.amazonaws.com{suffix}"


def alert_log_queue_url(aws: AwsClients, settings: Settings) -> str | None:
    found = _aws(settings.alert_log_queue_name, "look up queue", aws.sqs.get_queue_url,
                 missing=_QUEUE_MISSING, QueueName=settings.alert_log_queue_name)
    return None if found is None else str(found["QueueUrl"])


def _topic_tags(aws: AwsClients, arn: str) -> dict[str, str] | None:
    """The topic's tags; None when it does not exist."""
    found = _aws(arn, "read tags of topic", aws.sns.list_tags_for_resource,
                 missing=_TOPIC_MISSING | {"ResourceNotFound"}, ResourceArn=arn)
    return None if found is None else _tag_list(found.get("Tags") or [])


def _subscriptions(aws: AwsClients, arn: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token: dict[str, str] = {}
    while True:
        page = _aws(arn, "list subscriptions of topic", aws.sns.list_subscriptions_by_topic,
                    missing=_TOPIC_MISSING, TopicArn=arn, **token) or {}
        found += page.get("Subscriptions", [])
        if not page.get("NextToken"):
            return found
        token = {"NextToken": page["NextToken"]}


def ensure_alerts(settings: Settings, clients: AwsClients | None = None
                  ) -> tuple[StepResult, ...]:
    """The alert topic, the log queue only it may send to, and the queue's subscription."""
    return tuple(_alerts_step(settings, clients or AwsClients(settings), apply=True))


def _alerts_step(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    """The topic, the log queue (only the topic may send to it) and its subscription."""
    topic, queue = aws.arns.alert_topic, aws.arns.alert_log_queue
    results = []
    tags = _topic_tags(aws, topic)
    if tags is None:
        if apply:
            _aws(settings.alert_topic_name, "create topic", aws.sns.create_topic,
                 Name=settings.alert_topic_name, Tags=[{"Key": OWNER_TAG,
                                                        "Value": settings.prefix}])
        results.append(StepResult("alert topic", "created", settings.alert_topic_name, topic,
                                  "the function publishes one message per episode"))
    else:
        _require_owned("SNS topic", settings.alert_topic_name, tags, settings)
        results.append(StepResult("alert topic", "unchanged", settings.alert_topic_name, topic))
    name = settings.alert_log_queue_name
    attributes = {"MessageRetentionPeriod": str(ALERT_LOG_RETENTION_S),
                  "Policy": json.dumps(policies.alert_log_queue_policy(queue=queue,
                                                                       topic=topic))}
    url = alert_log_queue_url(aws, settings)
    if url is None:
        if apply:
            url = _aws(name, "create queue", aws.sqs.create_queue, QueueName=name,
                       Attributes=attributes, tags={OWNER_TAG: settings.prefix})["QueueUrl"]
        results.append(StepResult("alert log queue", "created", name, queue,
                                  "subscribed to the topic; only the topic may send"))
    else:
        queue_tags = _aws(name, "read tags of queue", aws.sqs.list_queue_tags,
                          QueueUrl=url).get("Tags") or {}
        _require_owned("SQS queue", name, queue_tags, settings)
        current = _aws(name, "read queue", aws.sqs.get_queue_attributes, QueueUrl=url,
                       AttributeNames=["MessageRetentionPeriod", "Policy"]).get("Attributes", {})
        drift = [key for key, value in attributes.items()
                 if (json.loads(current.get(key) or "null") if key == "Policy"
                     else current.get(key)) != (json.loads(value) if key == "Policy" else value)]
        if drift and apply:
            _aws(name, "set attributes of queue", aws.sqs.set_queue_attributes, QueueUrl=url,
                 Attributes=attributes)
        results.append(StepResult("alert log queue", "updated" if drift else "unchanged", name,
                                  queue, f"changed {', '.join(drift)}" if drift else ""))
    subscribed = tags is not None and any(
        sub.get("Protocol") == "sqs" and sub.get("Endpoint") == queue
        for sub in _subscriptions(aws, topic))
    if not subscribed and apply:
        _aws(name, "subscribe queue to topic", aws.sns.subscribe, TopicArn=topic,
             Protocol="sqs", Endpoint=queue, ReturnSubscriptionArn=True)
    results.append(StepResult("alert subscription", "unchanged" if subscribed else "created",
                              f"{settings.alert_topic_name} -> {name}", None, "sqs"))
    return results


def check_endpoint(protocol: str, endpoint: str) -> Protocol:
    """``endpoint`` fits ``protocol`` (E.164 for SMS, https:// for HTTPS); ConfigError naming
    the problem otherwise."""
    if protocol == "sms" and _E164_RE.fullmatch(endpoint):
        return "sms"
    if protocol == "email" and _EMAIL_RE.fullmatch(endpoint):
        return "email"
    if protocol == "https" and endpoint.startswith("https://") and len(endpoint) > 8:
        return "https"
    wanted = {"sms": "a phone number in E.164 form, e.g. +14155550123",
              "email": "an email address", "https": "a URL starting with https://"}
    if protocol not in wanted:
        raise ConfigError(f"cannot subscribe by {protocol!r}: use email, sms or https",
                          setting="protocol")
    raise ConfigError(f"{protocol} subscription: {endpoint!r} is not {wanted[protocol]}",
                      setting=protocol)


def subscribe(settings: Settings, protocol: str, endpoint: str,
              clients: AwsClients | None = None) -> str:
    """Subscribe a person to the alert topic; the subscription ARN ("pending confirmation" for
    email and HTTPS until they confirm)."""
    checked = check_endpoint(protocol, endpoint)
    aws = clients or AwsClients(settings)
    topic = aws.arns.alert_topic
    tags = _topic_tags(aws, topic)
    if tags is None:
        raise ConfigError(f"topic {settings.alert_topic_name} does not exist: run hrnb setup first",
                          setting="prefix")
    _require_owned("SNS topic", settings.alert_topic_name, tags, settings)
    found = _aws(topic, "subscribe to topic", aws.sns.subscribe, TopicArn=topic,
                 Protocol=checked, Endpoint=endpoint)
    return str(found["SubscriptionArn"])


def _teardown_alerts(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    """Every subscription of the topic (nothing keeps sending), the topic, the log queue."""
    topic = aws.arns.alert_topic
    results: list[StepResult] = []
    tags = _topic_tags(aws, topic)
    if tags is None:
        results.append(StepResult("alert topic", "absent", settings.alert_topic_name))
    else:
        skipped = _owned_or_skip("SNS topic", settings.alert_topic_name, "alert topic", tags,
                                 settings)
        if skipped:
            results.append(skipped)
        else:
            for sub in _subscriptions(aws, topic):
                arn = sub.get("SubscriptionArn", "")
                if apply and arn.startswith("arn:"):  # "PendingConfirmation" cannot be removed
                    _aws(arn, "unsubscribe", aws.sns.unsubscribe, missing=_TOPIC_MISSING,
                         SubscriptionArn=arn)
                results.append(StepResult("alert subscription", "deleted",
                                          f"{sub.get('Protocol')} subscription", arn))
            if apply:
                _aws(topic, "delete topic", aws.sns.delete_topic, TopicArn=topic)
            results.append(StepResult("alert topic", "deleted", settings.alert_topic_name, topic))
    name = settings.alert_log_queue_name
    url = alert_log_queue_url(aws, settings)
    if url is None:
        results.append(StepResult("alert log queue", "absent", name))
        return results
    queue_tags: Mapping[str, str] = _aws(name, "read tags of queue", aws.sqs.list_queue_tags,
                                         QueueUrl=url).get("Tags") or {}
    skipped = _owned_or_skip("SQS queue", name, "alert log queue", queue_tags, settings)
    if skipped:
        return [*results, skipped]
    if apply:
        _aws(name, "delete queue", aws.sqs.delete_queue, QueueUrl=url)
    results.append(StepResult("alert log queue", "deleted", name, aws.arns.alert_log_queue,
                              "with notifications not yet listed by hrnb alerts"))
    return results


def alerts_remaining(settings: Settings, aws: AwsClients) -> list[tuple[str, str]]:
    """(name, description) of the topic and log queue when they still exist."""
    found = []
    if _topic_tags(aws, aws.arns.alert_topic) is not None:
        found.append((settings.alert_topic_name, f"topic {settings.alert_topic_name}"))
    if alert_log_queue_url(aws, settings) is not None:
        found.append((settings.alert_log_queue_name, f"queue {settings.alert_log_queue_name}"))
    return found
