"""Delivered alert notifications: the SNS messages the alert log queue received, kept in an
append-only log in the state directory and listed once per episode.

Why a log: SQS hands each message out once (then it is deleted), so whatever ``hrnb alerts``,
the live-session cell or the live view has shown must survive on disk. A message is appended
(and flushed to disk) before it is deleted from the queue, so a crash in between shows it again
at worst, never loses it. The function publishes at least once, so listings dedupe by episode id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hrnb.config import Settings
from hrnb.errors import ConfigError
from hrnb.provision.alerts import alert_log_queue_url
from hrnb.provision.base import AwsClients, _aws

LOG_NAME = "alerts.jsonl"


@dataclass(frozen=True)
class Notification:
    """One delivered notification: the episode it announces and the SNS message carrying it."""

    episode_id: str
    athlete_id: str
    start: str  # UTC, the wire format
    peak_bpm: int
    threshold_bpm: int
    message: str
    message_id: str  # SNS's: the same publish delivered twice has the same one

    @classmethod
    def from_envelope(cls, envelope: Mapping[str, Any]) -> Notification:
        """From the SNS envelope an SQS subscription receives (not raw delivery)."""
        attributes = {name: value.get("Value") for name, value
                      in (envelope.get("MessageAttributes") or {}).items()}
        try:
            return cls(episode_id=attributes["episode_id"], athlete_id=attributes["athlete_id"],
                       start=attributes["start"], peak_bpm=int(attributes["peak_bpm"]),
                       threshold_bpm=int(attributes["threshold_bpm"]),
                       message=str(envelope.get("Message", "")),
                       message_id=str(envelope.get("MessageId", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"alert log queue holds a message that is not an hrnb episode "
                              f"({exc!r})", setting="alert_log_queue") from None


def log_path(settings: Settings) -> Path:
    return settings.state_dir / LOG_NAME


def drain(settings: Settings, clients: AwsClients | None = None) -> int:
    """Move every message waiting in the alert log queue into the log; how many moved."""
    aws = clients or AwsClients(settings)
    name = settings.alert_log_queue_name
    url = alert_log_queue_url(aws, settings)
    if url is None:
        raise ConfigError(f"queue {name} does not exist: run hrnb setup first", setting="prefix")
    path = log_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    moved = 0
    while True:
        answer = _aws(name, "read queue", aws.sqs.receive_message, QueueUrl=url,
                      MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=30)
        messages = answer.get("Messages") or []
        if not messages:
            return moved
        lines = [json.dumps(asdict(Notification.from_envelope(json.loads(message["Body"]))))
                 for message in messages]
        with path.open("a", encoding="utf-8") as log:
            log.write("".join(f"{line}\n" for line in lines))
            log.flush()
            os.fsync(log.fileno())
        for message in messages:
            _aws(name, "delete message from queue", aws.sqs.delete_message, QueueUrl=url,
                 ReceiptHandle=message["ReceiptHandle"])
        moved += len(messages)


def logged(settings: Settings) -> list[Notification]:
    """Every notification in the log, once per SNS message, in order of arrival."""
    path = log_path(settings)
    if not path.exists():
        return []
    seen: dict[str, Notification] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            notification = Notification(**json.loads(line))
            seen.setdefault(notification.message_id, notification)
    return list(seen.values())


def episodes(notifications: list[Notification]) -> list[Notification]:
    """One notification per episode (the first delivered), by start time."""
    first: dict[str, Notification] = {}
    for notification in notifications:
        first.setdefault(notification.episode_id, notification)
    return sorted(first.values(), key=lambda n: (n.start, n.athlete_id))


def delivered(settings: Settings, clients: AwsClients | None = None) -> list[Notification]:
    """Drain the queue, then every episode notified so far (deduplicated by episode id)."""
    drain(settings, clients)
    return episodes(logged(settings))
