"""What every provisioning step shares: results, the boto3 clients, ARNs, ownership tags and the
calls to boto3 and opensearch-py through :mod:`hrnb.boundary` (their errors become
ProvisionError)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

import boto3
from botocore.exceptions import ClientError

from hrnb.boundary import aws_error, aws_errors, opensearch_errors
from hrnb.clients import aws_client, boto_session
from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.provision import policies
from hrnb.provision.state import StateFile
from hrnb.wire.retry import backoff_s

Progress = Callable[[str], None]


Action = Literal["created", "updated", "unchanged", "skipped", "deleted", "absent"]


Architecture = Literal["x86_64", "arm64"]


#: Tag on every AWS resource set-up creates; its value is the settings' prefix.
OWNER_TAG = "hrnb:prefix"


def _no_progress(_message: str) -> None:
    """Default progress sink: the step log lines are enough when nobody watches."""


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepResult:
    """What one step did (or, in a plan or teardown preview, would do) to one resource."""

    step: str
    action: Action
    resource: str
    id: str | None = None  # ARN, UUID or URL once known
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.action in ("created", "updated", "deleted")


class AwsClients:
    """The boto3 clients provisioning uses, built once from Settings (or a given session)."""

    def __init__(self, settings: Settings, session: boto3.Session | None = None) -> None:
        self.session = session = session or boto_session(settings)  # models load once
        self.settings = settings
        self.kinesis = aws_client(settings, "kinesis", session=session)
        self.iam = aws_client(settings, "iam", session=session)
        self.logs = aws_client(settings, "logs", session=session)
        self.lambda_ = aws_client(settings, "lambda", session=session)
        self.opensearch = aws_client(settings, "opensearch", session=session)
        self.sts = aws_client(settings, "sts", session=session)
        self.sqs = aws_client(settings, "sqs", session=session)
        self.sns = aws_client(settings, "sns", session=session)

    @cached_property
    def caller_arn(self) -> str:
        identity = _aws("AWS account", "identify the caller of", self.sts.get_caller_identity)
        return identity["Arn"]

    @property
    def account_id(self) -> str:
        return self.caller_arn.split(":")[4]

    @cached_property
    def arns(self) -> Arns:
        return Arns.of(self.settings, self.account_id)


@dataclass(frozen=True)
class Arns:
    """ARNs of everything hrnb names, derived from the settings and the account."""

    partition: str
    stream: str
    role: str
    log_group: str  # as CreateLogStream/PutLogEvents see it (":*")
    domain: str
    function: str
    layer: str  # without a version
    queue: str
    alert_topic: str
    alert_log_queue: str

    @classmethod
    def of(cls, settings: Settings, account_id: str) -> Arns:
        partition = policies.partition_for(settings.region)
        region = settings.region
        return cls(
            partition=partition,
            stream=policies.stream_arn(partition, region, account_id, settings.stream_name),
            role=f"arn:{partition}:iam::{account_id}:role/{settings.role_name}",
            log_group=policies.log_group_arn(partition, region, account_id,
                                             settings.log_group_name),
            domain=policies.domain_arn(partition, region, account_id, settings.domain_name),
            function=(f"arn:{partition}:lambda:{region}:{account_id}:function:"
                      f"{settings.function_name}"),
            layer=f"arn:{partition}:lambda:{region}:{account_id}:layer:{settings.layer_name}",
            queue=f"arn:{partition}:sqs:{region}:{account_id}:{settings.failure_queue_name}",
            alert_topic=f"arn:{partition}:sns:{region}:{account_id}:{settings.alert_topic_name}",
            alert_log_queue=(f"arn:{partition}:sqs:{region}:{account_id}:"
                             f"{settings.alert_log_queue_name}"),
        )

    def operator_policy(self) -> policies.PolicyDocument:
        """The least-privilege policy of whoever runs hrnb for these resources."""
        return policies.operator_policy(stream=self.stream, role=self.role,
                                        log_group=self.log_group, domain=self.domain,
                                        function=self.function, layer=self.layer,
                                        queue=self.queue, alert_topic=self.alert_topic,
                                        alert_log_queue=self.alert_log_queue)


# --- calls through the error boundary ----------------------------------------------------------
def _service_of(call: Callable[..., Any]) -> str:
    """The AWS service a bound boto3 client method calls ("aws" for anything else)."""
    meta = getattr(getattr(call, "__self__", None), "meta", None)
    return str(meta.service_model.service_name) if meta is not None else "aws"


def _aws(resource: str, doing: str, call: Callable[..., Any], /, *,
         missing: Iterable[str] = (), **kwargs: Any) -> Any:
    """Call boto3; None when the AWS error code is one of ``missing``; any other failure is a
    ProvisionError naming the resource and what to do."""
    try:
        with aws_errors(ProvisionError, _service_of(call), doing, resource):
            return call(**kwargs)
    except ProvisionError as exc:
        if exc.code in set(missing):
            return None
        raise


#: How long set-up keeps retrying while IAM propagates a new role (AWS: seconds, rarely a minute).
PROPAGATION_TIMEOUT_S = 120.0


_PROPAGATION_BASE_S = 1.0


_PROPAGATION_CAP_S = 10.0


_JITTER = random.Random()


def propagating(exc: ClientError) -> bool:
    """True for the answers AWS gives while a new IAM role or user has not reached the other
    services yet: OpenSearch's ``InvalidTypeException: Error setting policy`` and Lambda's
    "cannot be assumed"."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    return ((code == "InvalidTypeException" and "Error setting policy" in message)
            or (code == "InvalidParameterValueException" and "cannot be assumed" in message))


class _Propagating(Exception):
    def __init__(self, error: ClientError) -> None:
        super().__init__(str(error))
        self.error = error


def _aws_retrying_propagation(resource: str, doing: str, call: Callable[..., Any], /, *,
                              progress: Progress, timeout_s: float = PROPAGATION_TIMEOUT_S,
                              **kwargs: Any) -> Any:
    """``_aws``, retrying with bounded, jittered back-off (full jitter, 1 s doubling to 10 s,
    at most ``timeout_s``) while IAM propagates, as Terraform's AWS provider does."""

    def attempt(**arguments: Any) -> Any:
        try:
            return call(**arguments)
        except ClientError as exc:
            if propagating(exc):
                raise _Propagating(exc) from exc
            raise

    started = time.monotonic()
    tries = 0
    while True:
        try:
            return _aws(resource, doing, attempt, **kwargs)
        except _Propagating as waiting:
            tries += 1
            delay = backoff_s(tries + 1, base_s=_PROPAGATION_BASE_S, max_s=_PROPAGATION_CAP_S,
                              rng=_JITTER)
            if time.monotonic() - started + delay > timeout_s:
                raise aws_error(waiting.error, ProvisionError, _service_of(call), doing,
                                resource) from waiting.error
            progress(f"{resource}: waiting for IAM to propagate a new role ({doing}, "
                     f"try {tries})")
            time.sleep(delay)


def _opensearch(resource: str, doing: str, call: Callable[..., Any], /, *,
                missing_ok: bool = False, **kwargs: Any) -> Any:
    """Call opensearch-py; None on 404 when ``missing_ok``; other failures are ProvisionErrors
    naming the index or template."""
    try:
        with opensearch_errors(ProvisionError, doing, resource):
            return call(**kwargs)
    except ProvisionError as exc:
        if missing_ok and exc.code == "404":
            return None
        raise


def _require_owned(kind: str, name: str, tags: Mapping[str, str], settings: Settings) -> None:
    owner = tags.get(OWNER_TAG)
    if owner != settings.prefix:
        found = f"tag {OWNER_TAG}={owner!r}" if owner else f"no {OWNER_TAG} tag"
        raise ProvisionError(
            f"{kind} {name} already exists but hrnb set-up for prefix {settings.prefix!r} did not "
            f"create it ({found}); choose another prefix (HRNB_PREFIX) or remove it yourself",
            resource=name,
        )


def _tag_list(tags: Iterable[Mapping[str, str]], key: str = "Key",
              value: str = "Value") -> dict[str, str]:
    return {tag[key]: tag[value] for tag in tags}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- preflight ---------------------------------------------------------------------------------
def check_region(settings: Settings, session: boto3.Session | None = None) -> None:
    """Refuse a region that does not offer every service hrnb needs, or that differs from the one
    this prefix was set up in (its resources would look absent)."""
    partition = policies.partition_for(settings.region)
    session = session or boto3.Session()
    for service in ("kinesis", "lambda", "opensearch", "logs"):
        if settings.region not in session.get_available_regions(service, partition):
            raise ProvisionError(
                f"region {settings.region!r} does not offer {service}; set HRNB_REGION to an AWS "
                "region such as ap-south-1",
                resource=f"region {settings.region}",
            )
    recorded = StateFile(settings).load().get("region")
    if recorded and recorded != settings.region:
        raise ProvisionError(
            f"prefix {settings.prefix!r} was set up in region {recorded}, but the settings say "
            f"{settings.region}; set HRNB_REGION={recorded} (or tear it down there first)",
            resource=f"region {settings.region}",
        )


def _owned_or_skip(kind: str, name: str, step: str, tags: Mapping[str, str],
                   settings: Settings) -> StepResult | None:
    if tags.get(OWNER_TAG) == settings.prefix:
        return None
    return StepResult(step, "skipped", name, None,
                      f"{kind} was not created by hrnb for prefix {settings.prefix!r}; left alone")

