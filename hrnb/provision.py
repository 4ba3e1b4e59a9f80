"""Provisioning as code: idempotent set-up, dry-run plan with costs, and clean teardown of the
stream, indexer role, log group, OpenSearch domain, indices, Lambda layer, function, trigger and
dashboards, on AWS and on the local stack with the same code.

Why: the reference was clicked together in the console, which is slow, easy to get subtly wrong
(the 403 when the Lambda role is not mapped in the security plugin, a yellow single-node index)
and leaves billable resources behind. Each ``ensure_*`` step looks first, changes only what
differs from the desired state, and says what it did; ``plan()`` runs the same steps without
changing anything. Every resource carries the tag ``hrnb:prefix``, so a name clash with
something hrnb did not create is an error instead of a takeover, and teardown never deletes it.

On the local target the control plane is the emulator and the data-plane steps go to the local
OpenSearch node (the emulated domain's endpoint is fictitious); there is no security plugin, so
role mapping reports ``skipped``. The event source mapping is created disabled there: the local
poller reads its settings and invokes the deployed code itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, partial
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from hrnb import policies
from hrnb.clients import aws_client, boto_session, opensearch_client
from hrnb.config import Settings
from hrnb.errors import ConfigError, ProvisionError
from hrnb.index_schema import dead_letter_template, index_template

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
Action = Literal["created", "updated", "unchanged", "skipped", "deleted", "absent"]
Architecture = Literal["x86_64", "arm64"]

#: Tag on every AWS resource set-up creates; its value is the settings' prefix.
OWNER_TAG = "hrnb:prefix"

# --- the reference configuration -------------------------------------------------------------
ENGINE_VERSION = "OpenSearch_2.19"
INSTANCE_TYPE = "t3.small.search"
INSTANCE_COUNT = 1
VOLUME_GIB = 10
VOLUME_IOPS = 3000
VOLUME_THROUGHPUT_MIBPS = 125
TLS_POLICY = "Policy-Min-TLS-1-2-2019-07"
MASTER_USER_NAME = "hrnb-admin"
STREAM_RETENTION_HOURS = 24
LOG_RETENTION_DAYS = 14
RUNTIME = "python3.12"
#: A _bulk of a few records needs little memory; 256 MB buys proportionally more CPU for TLS and
#: JSON. 30 s covers the handler's bulk retries with back-off several times over.
FUNCTION_MEMORY_MB = 256
FUNCTION_TIMEOUT_S = 30
LOCAL_DASHBOARDS_URL = "http://127.0.0.1:5601"

_HOURS_PER_MONTH = 730
_DOMAIN_POLL_S = 30.0
_DOMAIN_TIMEOUT_S = 60 * 60.0
_ROLE_PROPAGATION_TIMEOUT_S = 120.0

_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)
_CREDENTIAL_CODES = frozenset(
    {"UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
     "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException"}
)


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


@dataclass(frozen=True)
class SetupReport:
    """Every step of ``setup()`` in order, and where the data plane answers."""

    results: tuple[StepResult, ...]
    opensearch_url: str | None

    @property
    def changed(self) -> bool:
        return any(result.changed for result in self.results)


@dataclass(frozen=True)
class CostLine:
    """One billed item: USD per hour while it exists (or streams) and per month."""

    item: str
    hourly_usd: float
    monthly_usd: float
    basis: str


@dataclass(frozen=True)
class CostEstimate:
    """AWS list-price estimate. ``idle_hourly_usd`` is paid while the resources exist,
    ``streaming_hourly_usd`` on top while a session streams at the assumed rate."""

    lines: tuple[CostLine, ...]
    idle_hourly_usd: float
    streaming_hourly_usd: float
    monthly_usd: float
    priced_region: str
    price_source: str
    price_as_of: str
    assumptions: str


@dataclass(frozen=True)
class Plan:
    """What ``setup()`` would do, and what the result would cost on AWS."""

    target: str
    region: str
    steps: tuple[StepResult, ...]
    cost: CostEstimate

    @property
    def billable(self) -> bool:
        """False on the local stack, which costs nothing."""
        return self.target == "aws"

    @property
    def changes(self) -> tuple[StepResult, ...]:
        return tuple(step for step in self.steps if step.changed)


@dataclass(frozen=True)
class TeardownReport:
    """Every teardown step, then what still exists when it finished."""

    results: tuple[StepResult, ...]
    remaining: tuple[str, ...]

    @property
    def nothing_billable_remains(self) -> bool:
        return not self.remaining


# --- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LambdaArtifacts:
    """The built function zip and the dependency layer zip for one architecture."""

    function_zip: Path
    layer_zip: Path
    architecture: Architecture = "x86_64"
    handler: str = "handler.lambda_handler"

    def __post_init__(self) -> None:
        if self.architecture not in ("x86_64", "arm64"):
            raise ConfigError(
                f"architecture must be 'x86_64' or 'arm64', got {self.architecture!r}",
                setting="architecture",
            )

    @classmethod
    def from_build_dir(cls, build_dir: Path,
                       architecture: Architecture = "x86_64") -> LambdaArtifacts:
        """The zips ``infra_scripts/build_lambda.py`` wrote, located through its manifest."""
        manifest_path = build_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            layer_file = manifest["layers"][architecture]["file"]
            return cls(
                function_zip=build_dir / manifest["function"]["file"],
                layer_zip=build_dir / layer_file,
                architecture=architecture,
                handler=manifest["handler"],
            )
        except FileNotFoundError:
            raise ProvisionError(
                f"{manifest_path} not found: build the Lambda first "
                "(python infra_scripts/build_lambda.py)",
                resource=str(manifest_path),
            ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisionError(
                f"{manifest_path} has no {architecture} layer or is not a build manifest "
                f"({exc!r}); rebuild the Lambda",
                resource=str(manifest_path),
            ) from None

    def read(self, which: Literal["function", "layer"]) -> bytes:
        path = self.function_zip if which == "function" else self.layer_zip
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ProvisionError(
                f"cannot read the {which} zip {path}: {exc.strerror}; build the Lambda first",
                resource=str(path),
            ) from None


@dataclass(frozen=True)
class EventSourceOptions:
    """The Kinesis trigger. Retries and record age are bounded so a poison batch cannot block a
    shard for the stream's whole 24 h retention; bisecting isolates the bad record, which the
    handler dead-letters."""

    batch_size: int = 2
    batching_window_s: int = 0
    max_retry_attempts: int = 20
    max_record_age_s: int = 6 * 3600
    starting_position: Literal["LATEST", "TRIM_HORIZON"] = "LATEST"

    def __post_init__(self) -> None:
        checks = (
            ("batch_size", 1 <= self.batch_size <= 10000, "1..10000"),
            ("batching_window_s", 0 <= self.batching_window_s <= 300, "0..300 s"),
            ("max_retry_attempts", 0 <= self.max_retry_attempts <= 10000, "0..10000 (bounded)"),
            ("max_record_age_s", 60 <= self.max_record_age_s <= 604800, "60..604800 s (bounded)"),
        )
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"{name} must be {allowed}, got {getattr(self, name)}",
                                  setting=name)

    def desired(self, *, enabled: bool) -> dict[str, Any]:
        """The mapping's mutable settings, as the Lambda API names them."""
        return {
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.batching_window_s,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": self.max_retry_attempts,
            "MaximumRecordAgeInSeconds": self.max_record_age_s,
            "Enabled": enabled,
        }


@dataclass(frozen=True)
class MasterUser:
    """The domain's internal master user. The password never appears in a repr or a log."""

    username: str
    password: str = field(repr=False)


class AwsClients:
    """The boto3 clients provisioning uses, built once from Settings (or a given session)."""

    def __init__(self, settings: Settings, session: boto3.Session | None = None) -> None:
        self.session = session or boto_session(settings)  # one session: models load once
        make = partial(aws_client, settings, session=self.session)
        self.settings = settings
        self.kinesis = make("kinesis")
        self.iam = make("iam")
        self.logs = make("logs")
        self.lambda_ = make("lambda")
        self.opensearch = make("opensearch")
        self.sts = make("sts")

    @cached_property
    def caller_arn(self) -> str:
        identity = _aws("AWS account", "identify the caller of", self.sts.get_caller_identity)
        return identity["Arn"]

    @property
    def account_id(self) -> str:
        return self.caller_arn.split(":")[4]

    @cached_property
    def arns(self) -> _Arns:
        return _Arns.of(self.settings, self.account_id)


@dataclass(frozen=True)
class _Arns:
    """ARNs of everything hrnb names, derived from the settings and the account."""

    partition: str
    stream: str
    role: str
    log_group: str  # as CreateLogStream/PutLogEvents see it (":*")
    domain: str
    function: str

    @classmethod
    def of(cls, settings: Settings, account_id: str) -> _Arns:
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
        )


# --- error translation -------------------------------------------------------------------------
def _aws(resource: str, doing: str, call: Callable[..., Any], /, *,
         missing: Iterable[str] = (), **kwargs: Any) -> Any:
    """Call boto3; None when the error code is one of ``missing``; any other failure becomes a
    ProvisionError that names the resource and what to do."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in set(missing):
            return None
        raise _client_error(exc, resource, doing) from exc
    except NoCredentialsError as exc:
        raise ProvisionError(
            f"cannot {doing} {resource}: no AWS credentials found (configure them with "
            "'aws configure' or AWS_PROFILE)",
            resource=resource,
        ) from exc
    except BotoCoreError as exc:
        raise ProvisionError(
            f"cannot {doing} {resource}: {exc}. On the local target run 'hrnb local up'; "
            "on AWS check the region and the network",
            resource=resource,
        ) from exc


def _client_error(exc: ClientError, resource: str, doing: str) -> ProvisionError:
    """An AWS error as a ProvisionError: refused credentials, a missing permission (with the
    action AWS names), or anything else with its code."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _CREDENTIAL_CODES:
        return ProvisionError(
            f"cannot {doing} {resource}: the AWS credentials were refused ({code}). Check "
            "them ('aws sts get-caller-identity') and that the region is enabled for the "
            "account",
            resource=resource,
        )
    if code in _DENIED_CODES or status == 403:
        denied = _denied_action(message) or code
        return ProvisionError(
            f"cannot {doing} {resource}: permission missing ({denied}). Give the identity "
            "running set-up the permissions listed in docs/operations.md",
            resource=resource,
        )
    return ProvisionError(f"cannot {doing} {resource}: {code}: {message}", resource=resource)


def _denied_action(message: str) -> str | None:
    """The IAM action an AccessDenied message names (``kinesis:CreateStream``), if any."""
    found = re.search(r"not authorized to perform: ([\w-]+:[\w*]+)", message)
    return found.group(1) if found else None


def _opensearch(resource: str, doing: str, call: Callable[..., Any], /, *,
                missing_ok: bool = False, **kwargs: Any) -> Any:
    """Call opensearch-py; None on 404 when ``missing_ok``; other failures become
    ProvisionError naming the index or template."""
    from opensearchpy.exceptions import NotFoundError, OpenSearchException, TransportError

    try:
        return call(**kwargs)
    except NotFoundError:
        if missing_ok:
            return None
        raise ProvisionError(f"cannot {doing} {resource}: not found", resource=resource) from None
    except TransportError as exc:
        if exc.status_code in (401, 403):
            raise ProvisionError(
                f"cannot {doing} {resource}: OpenSearch refused the request "
                f"({exc.status_code}); check the master user in the state directory",
                resource=resource,
            ) from exc
        raise ProvisionError(f"cannot {doing} {resource}: {exc.error} ({exc.status_code}) "
                             f"{exc.info}", resource=resource) from exc
    except OpenSearchException as exc:
        raise ProvisionError(
            f"cannot {doing} {resource}: OpenSearch does not answer ({exc}). On the local "
            "target run 'hrnb local up'",
            resource=resource,
        ) from exc


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


# --- local state: resumable waits and the master user ------------------------------------------
class _StateFile:
    """Small JSON file per target and prefix in ``settings.state_dir``: where set-up was done and
    whether a domain creation is still pending, so an interrupted kernel can resume the wait."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.state_dir / f"provision-{settings.target}-{settings.prefix}.json"

    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"state file {self.path} is unreadable ({exc}); delete it and "
                                 "run set-up again", resource=str(self.path)) from None

    def update(self, **changes: Any) -> None:
        state = {**self.load(), **changes}
        _write_private(self.path, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), atomically, in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def master_user_path(settings: Settings) -> Path:
    """Where the domain's master user name and password live (mode 0600)."""
    return settings.state_dir / f"opensearch-master-{settings.target}-{settings.prefix}.json"


def generate_master_password(length: int = 32) -> str:
    """A random password meeting AWS's rule: upper and lower case, a digit, a special sign."""
    specials = "-_.!#%^*+="
    alphabet = string.ascii_letters + string.digits + specials
    classes = (string.ascii_lowercase, string.ascii_uppercase, string.digits, specials)
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(char in chars for char in password) for chars in classes):
            return password


def load_master_user(settings: Settings) -> MasterUser | None:
    """The stored master user, or None when set-up has not created one."""
    path = master_user_path(settings)
    try:
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to its owner (0600)", path)
            path.chmod(0o600)
        data = json.loads(path.read_text())
        return MasterUser(username=data["username"], password=data["password"])
    except FileNotFoundError:
        return None
    except (OSError, KeyError, TypeError, ValueError):
        raise ProvisionError(f"master user file {path} is unreadable; restore it or reset the "
                             "password in the AWS console", resource=str(path)) from None


def _create_master_user(settings: Settings) -> MasterUser:
    user = MasterUser(MASTER_USER_NAME, generate_master_password())
    _write_private(master_user_path(settings),
                   json.dumps({"username": user.username, "password": user.password}) + "\n")
    log.info("stored a new master user for domain %s in %s", settings.domain_name,
             master_user_path(settings))
    return user


class _DropSecret(logging.Filter):
    """Drops log records that would carry a secret."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        return self.secret not in record.getMessage()


@contextmanager
def _kept_out_of_logs(secret: str | None) -> Iterator[None]:
    """botocore logs every request's parameters and response body at DEBUG (``hrnb -v``), and
    the emulator echoes the master password back; while a call carries it, such records are
    dropped."""
    if secret is None:
        yield
        return
    drop = _DropSecret(secret)
    loggers = [logging.getLogger(name) for name in ("botocore.endpoint", "botocore.parsers")]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


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
    recorded = _StateFile(settings).load().get("region")
    if recorded and recorded != settings.region:
        raise ProvisionError(
            f"prefix {settings.prefix!r} was set up in region {recorded}, but the settings say "
            f"{settings.region}; set HRNB_REGION={recorded} (or tear it down there first)",
            resource=f"region {settings.region}",
        )


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
    if settings.stream_shards > 0 and summary.get("OpenShardCount") != settings.stream_shards:
        _aws(name, "reshard stream", aws.kinesis.update_shard_count, StreamName=name,
             TargetShardCount=settings.stream_shards, ScalingType="UNIFORM_SCALING")
        _wait_stream_active(aws, name)
    retention = summary.get("RetentionPeriodHours", STREAM_RETENTION_HOURS)
    if retention > STREAM_RETENTION_HOURS:
        _aws(name, "shorten retention of stream", aws.kinesis.decrease_stream_retention_period,
             StreamName=name, RetentionPeriodHours=STREAM_RETENTION_HOURS)
    elif retention < STREAM_RETENTION_HOURS:
        _aws(name, "lengthen retention of stream", aws.kinesis.increase_stream_retention_period,
             StreamName=name, RetentionPeriodHours=STREAM_RETENTION_HOURS)


def _wait_stream_active(aws: AwsClients, name: str) -> None:
    waiter = aws.kinesis.get_waiter("stream_exists")
    _aws(name, "wait for stream", waiter.wait, StreamName=name,
         WaiterConfig={"Delay": 2, "MaxAttempts": 90})


# --- IAM role ----------------------------------------------------------------------------------
def ensure_role(settings: Settings, clients: AwsClients | None = None) -> StepResult:
    """The indexer's execution role with exactly one inline least-privilege policy."""
    return _role_step(settings, clients or AwsClients(settings), apply=True)


def inline_policy_name(settings: Settings) -> str:
    return f"{settings.prefix}-indexer-least-privilege"


def role_policy(settings: Settings, arns: _Arns) -> policies.PolicyDocument:
    """The indexer role's inline policy for these settings."""
    return policies.indexer_role_policy(
        stream=arns.stream,
        log_group=arns.log_group,
        domain=arns.domain,
        index_names=(settings.index_name, settings.dlq_index_name),
    )


def _role_step(settings: Settings, aws: AwsClients, *, apply: bool) -> StepResult:
    name = settings.role_name
    policy_name = inline_policy_name(settings)
    desired_policy = role_policy(settings, aws.arns)
    found = _aws(name, "read role", aws.iam.get_role, missing={"NoSuchEntity"}, RoleName=name)
    if found is None:
        if apply:
            _aws(name, "create role", aws.iam.create_role, RoleName=name,
                 AssumeRolePolicyDocument=json.dumps(policies.lambda_trust_policy()),
                 Description=f"hrnb indexer ({settings.prefix}): stream -> OpenSearch",
                 Tags=[{"Key": OWNER_TAG, "Value": settings.prefix}])
            _aws(name, "attach inline policy to role", aws.iam.put_role_policy, RoleName=name,
                 PolicyName=policy_name, PolicyDocument=json.dumps(desired_policy))
        return StepResult("role", "created", name, aws.arns.role,
                          f"inline policy {policy_name}")
    tags = _aws(name, "read tags of role", aws.iam.list_role_tags, RoleName=name)
    _require_owned("IAM role", name, _tag_list(tags["Tags"]), settings)
    changes = []
    trust = _policy_json(found["Role"].get("AssumeRolePolicyDocument"))
    if _canonical(trust) != _canonical(policies.lambda_trust_policy()):
        changes.append("trust policy")
        if apply:
            _aws(name, "update trust policy of role", aws.iam.update_assume_role_policy,
                 RoleName=name, PolicyDocument=json.dumps(policies.lambda_trust_policy()))
    inline = _aws(name, "list policies of role", aws.iam.list_role_policies,
                  RoleName=name)["PolicyNames"]
    current = None
    if policy_name in inline:
        current = _aws(name, "read policy of role", aws.iam.get_role_policy, RoleName=name,
                       PolicyName=policy_name)["PolicyDocument"]
    if current is None or _canonical(_policy_json(current)) != _canonical(desired_policy):
        changes.append(f"inline policy {policy_name}")
        if apply:
            _aws(name, "update inline policy of role", aws.iam.put_role_policy, RoleName=name,
                 PolicyName=policy_name, PolicyDocument=json.dumps(desired_policy))
    for extra in sorted(set(inline) - {policy_name}):
        changes.append(f"removed extra inline policy {extra}")
        if apply:
            _aws(name, "remove extra policy from role", aws.iam.delete_role_policy,
                 RoleName=name, PolicyName=extra)
    attached = _aws(name, "list managed policies of role", aws.iam.list_attached_role_policies,
                    RoleName=name)["AttachedPolicies"]
    for policy in attached:
        changes.append(f"detached managed policy {policy['PolicyName']}")
        if apply:
            _aws(name, "detach managed policy from role", aws.iam.detach_role_policy,
                 RoleName=name, PolicyArn=policy["PolicyArn"])
    action: Action = "updated" if changes else "unchanged"
    return StepResult("role", action, name, found["Role"]["Arn"],
                      "; ".join(changes) or f"inline policy {policy_name}")


def _policy_json(document: Any) -> Any:
    """IAM returns policy documents decoded or as (URL-decoded) JSON text, depending on client."""
    if isinstance(document, str):
        from urllib.parse import unquote

        text = document if document.lstrip().startswith("{") else unquote(document)
        return json.loads(text)
    return document


def _canonical(value: Any) -> Any:
    """A policy in a comparable form: one-element lists as scalars, lists sorted."""
    if isinstance(value, Mapping):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        items = [_canonical(item) for item in value]
        if len(items) == 1:
            return items[0]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def covers(current: Any, desired: Any) -> bool:
    """True when ``current`` says everything ``desired`` says (pure). Services add keys of their
    own to what they store (``reserved``, ``fls``, an index pattern's ``fields``); those do not
    count as drift."""
    if isinstance(desired, Mapping):
        return isinstance(current, Mapping) and all(
            key in current and covers(current[key], value) for key, value in desired.items())
    if isinstance(desired, list | tuple):
        return (isinstance(current, list | tuple) and len(current) == len(desired)
                and all(covers(have, want) for have, want in zip(current, desired, strict=True)))
    return bool(current == desired)


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


# --- OpenSearch domain ---------------------------------------------------------------------------
def domain_request(settings: Settings, arns: _Arns, master: MasterUser | None,
                   operator_cidrs: Iterable[str] = ()) -> dict[str, Any]:
    """The CreateDomain request for the reference configuration (pure)."""
    request: dict[str, Any] = {
        "DomainName": settings.domain_name,
        "EngineVersion": ENGINE_VERSION,
        "ClusterConfig": {
            "InstanceType": INSTANCE_TYPE,
            "InstanceCount": INSTANCE_COUNT,
            "DedicatedMasterEnabled": False,
            "ZoneAwarenessEnabled": False,
        },
        "EBSOptions": {
            "EBSEnabled": True,
            "VolumeType": "gp3",
            "VolumeSize": VOLUME_GIB,
            "Iops": VOLUME_IOPS,
            "Throughput": VOLUME_THROUGHPUT_MIBPS,
        },
        "AccessPolicies": json.dumps(policies.domain_access_policy(
            domain=arns.domain,
            indexer_role_arn=arns.role,
            index_names=(settings.index_name, settings.dlq_index_name),
            operator_cidrs=tuple(operator_cidrs),
        )),
        "EncryptionAtRestOptions": {"Enabled": True},
        "NodeToNodeEncryptionOptions": {"Enabled": True},
        "DomainEndpointOptions": {"EnforceHTTPS": True, "TLSSecurityPolicy": TLS_POLICY},
        "AdvancedSecurityOptions": {
            "Enabled": True,
            "InternalUserDatabaseEnabled": True,
        },
        "TagList": [{"Key": OWNER_TAG, "Value": settings.prefix}],
    }
    if master is not None:
        request["AdvancedSecurityOptions"]["MasterUserOptions"] = {
            "MasterUserName": master.username,
            "MasterUserPassword": master.password,
        }
    return request


def domain_drift(status: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The UpdateDomainConfig sections whose current value differs from ``desired`` (pure).
    Fine-grained access control, once on, stays on, so its section is compared but never sent
    without a master user."""
    changes: dict[str, Any] = {}
    for section in ("ClusterConfig", "EBSOptions", "DomainEndpointOptions",
                    "EncryptionAtRestOptions", "NodeToNodeEncryptionOptions"):
        current = status.get(section) or {}
        wanted = desired[section]
        if any(current.get(key) != value for key, value in wanted.items()):
            changes[section] = wanted
    current_policy = _policy_json(status.get("AccessPolicies") or "{}")
    if _canonical(current_policy) != _canonical(json.loads(desired["AccessPolicies"])):
        changes["AccessPolicies"] = desired["AccessPolicies"]
    security = status.get("AdvancedSecurityOptions") or {}
    if not (security.get("Enabled") and security.get("InternalUserDatabaseEnabled")):
        changes["AdvancedSecurityOptions"] = desired["AdvancedSecurityOptions"]
    return changes


def ensure_domain(
    settings: Settings,
    clients: AwsClients | None = None,
    *,
    progress: Progress | None = None,
    operator_cidrs: Iterable[str] = (),
    poll_s: float = _DOMAIN_POLL_S,
    timeout_s: float = _DOMAIN_TIMEOUT_S,
) -> StepResult:
    """The OpenSearch domain in the reference configuration. Waiting for it (15-20 min on AWS)
    reports progress and survives an interrupted kernel: call again to resume the wait."""
    return _domain_step(settings, clients or AwsClients(settings), apply=True,
                        progress=progress or _no_progress, operator_cidrs=operator_cidrs,
                        poll_s=poll_s, timeout_s=timeout_s)


def _domain_call(aws: AwsClients, doing: str, call: Callable[..., Any], /,
                 **kwargs: Any) -> Any:
    """A control-plane call about the domain. Requests and responses can carry the master
    password (the emulator even echoes it back), so it is kept out of the logs throughout."""
    master = load_master_user(aws.settings)
    with _kept_out_of_logs(master.password if master else None):
        return _aws(aws.settings.domain_name, doing, call, **kwargs)


def _describe_domain(aws: AwsClients, name: str) -> dict[str, Any] | None:
    found = _domain_call(aws, "describe domain", aws.opensearch.describe_domain,
                         missing={"ResourceNotFoundException"}, DomainName=name)
    return None if found is None else found["DomainStatus"]


def _domain_step(settings: Settings, aws: AwsClients, *, apply: bool, progress: Progress,
                 operator_cidrs: Iterable[str] = (), poll_s: float = _DOMAIN_POLL_S,
                 timeout_s: float = _DOMAIN_TIMEOUT_S) -> StepResult:
    name = settings.domain_name
    state = _StateFile(settings)
    shape = (f"{ENGINE_VERSION}, {INSTANCE_COUNT} x {INSTANCE_TYPE}, gp3 {VOLUME_GIB} GiB/"
             f"{VOLUME_IOPS} IOPS, HTTPS TLS 1.2+, encrypted, fine-grained access control")
    status = _describe_domain(aws, name)
    if status is None:
        if not apply:
            return StepResult("domain", "created", name, aws.arns.domain,
                              f"{shape}; takes ~15-20 min on AWS")
        # The password is stored before the request, so no crash can lose it.
        master = load_master_user(settings) or _create_master_user(settings)
        state.update(region=settings.region, domain_pending="creation",
                     domain_requested_at=_now())
        _domain_call(aws, "create domain", aws.opensearch.create_domain,
                     **domain_request(settings, aws.arns, master, operator_cidrs))
        status = _wait_for_domain(settings, aws, progress, poll_s, timeout_s)
        return StepResult("domain", "created", name, status["ARN"],
                          f"{shape}; master user in {master_user_path(settings)}")
    tags = _aws(name, "read tags of domain", aws.opensearch.list_tags, ARN=status["ARN"])
    _require_owned("OpenSearch domain", name, _tag_list(tags["TagList"]), settings)
    if status.get("Deleted"):
        raise ProvisionError(f"domain {name} is being deleted; wait until it is gone, then run "
                             "set-up again", resource=name)
    version = str(status.get("EngineVersion", ""))
    if not version.startswith("OpenSearch_2."):
        raise ProvisionError(f"domain {name} runs {version}; hrnb needs OpenSearch 2.x. Upgrade "
                             "it or choose another prefix", resource=name)
    recorded = state.load()
    pending = recorded.get("domain_pending") or None  # "creation" / "update" left unfinished
    desired = domain_request(settings, aws.arns, None, operator_cidrs)
    drift = domain_drift(status, desired)
    if drift and apply:
        if "AdvancedSecurityOptions" in drift:
            master = load_master_user(settings) or _create_master_user(settings)
            drift["AdvancedSecurityOptions"] = domain_request(
                settings, aws.arns, master, operator_cidrs)["AdvancedSecurityOptions"]
        state.update(region=settings.region, domain_pending="update",
                     domain_requested_at=_now())
        _domain_call(aws, "update domain", aws.opensearch.update_domain_config,
                     DomainName=name, **drift)
    if apply and (pending or drift or status.get("Processing") or not _endpoint_of(status)):
        status = _wait_for_domain(settings, aws, progress, poll_s, timeout_s)
    if drift:
        return StepResult("domain", "updated", name, status["ARN"],
                          "repaired " + ", ".join(sorted(drift)))
    if pending:
        action: Action = "created" if pending == "creation" else "updated"
        requested = recorded.get("domain_requested_at", "earlier")
        detail = (f"resumed the wait for the {pending} requested {requested}" if apply else
                  f"the {pending} requested {requested} is unfinished; set-up waits for it")
        return StepResult("domain", action, name, status["ARN"], detail)
    return StepResult("domain", "unchanged", name, status["ARN"], shape)


def _endpoint_of(status: Mapping[str, Any]) -> str | None:
    return status.get("Endpoint") or (status.get("Endpoints") or {}).get("vpc")


def _wait_for_domain(settings: Settings, aws: AwsClients, progress: Progress, poll_s: float,
                     timeout_s: float) -> dict[str, Any]:
    """Poll until the domain is active with an endpoint; record that in the state file."""
    name = settings.domain_name
    state = _StateFile(settings)
    requested = state.load().get("domain_requested_at")
    started = time.monotonic()
    while True:
        since = f", requested {requested}" if requested else ""
        minutes = (time.monotonic() - started) / 60
        progress(f"domain {name}: waiting until it is active ({minutes:.0f} min in this call"
                 f"{since}; AWS takes ~15-20 min)")
        status = _describe_domain(aws, name)
        if status is None:
            raise ProvisionError(f"domain {name} disappeared while set-up waited for it",
                                 resource=name)
        endpoint = _endpoint_of(status)
        if not status.get("Processing") and endpoint:
            state.update(domain_pending=None, domain_endpoint=endpoint)
            return status
        if time.monotonic() - started > timeout_s:
            raise ProvisionError(f"domain {name} is still not active after {timeout_s / 60:.0f} "
                                 "min; run set-up again to keep waiting", resource=name)
        time.sleep(poll_s)


def opensearch_url(settings: Settings, clients: AwsClients | None = None) -> str | None:
    """Where the data plane answers: the local node, or ``https://<domain endpoint>`` once the
    domain is active (None before)."""
    if settings.is_local or settings.opensearch_url:
        return settings.resolved_opensearch_url
    status = _describe_domain(clients or AwsClients(settings), settings.domain_name)
    endpoint = None if status is None or status.get("Processing") else _endpoint_of(status)
    return f"https://{endpoint}" if endpoint else None


def _admin_opensearch(settings: Settings, url: str) -> Any:
    """A data-plane client with the rights to create templates: plain HTTP to the local node,
    the internal master user (HTTPS, basic auth) on AWS."""
    if settings.is_local:
        return opensearch_client(settings.with_overrides(opensearch_url=url), timeout=30.0)
    master = _require_master_user(settings)
    from opensearchpy import OpenSearch

    return OpenSearch(hosts=[url], http_auth=(master.username, master.password), use_ssl=True,
                      verify_certs=True, timeout=30.0)


def _require_master_user(settings: Settings) -> MasterUser:
    master = load_master_user(settings)
    if master is None:
        path = master_user_path(settings)
        raise ProvisionError(
            f"the domain's master user file {path} is missing, so set-up cannot sign in to "
            "configure the domain; reset the master password in the AWS console and write "
            '{"username": ..., "password": ...} there (mode 0600)',
            resource=str(path),
        )
    return master


# --- security plugin role mapping ----------------------------------------------------------------
def writer_role_name(settings: Settings) -> str:
    return f"{settings.prefix}-indexer-writer"


def reader_role_name(settings: Settings) -> str:
    return f"{settings.prefix}-operator-reader"


def ensure_role_mapping(settings: Settings, clients: AwsClients | None = None,
                        *, url: str | None = None) -> StepResult:
    """Map the indexer role (write) and the operator's IAM identity (read) to security-plugin
    roles, so signed requests are not refused with the well-known 403."""
    aws = clients or AwsClients(settings)
    return _role_mapping_step(settings, aws, apply=True,
                              url=url or opensearch_url(settings, aws))


def _role_mapping_step(settings: Settings, aws: AwsClients, *, apply: bool,
                       url: str | None) -> StepResult:
    resource = f"{writer_role_name(settings)}, {reader_role_name(settings)}"
    if settings.is_local:
        return StepResult("role mapping", "skipped", resource, None,
                          "the local OpenSearch node runs without the security plugin; "
                          "nothing to map")
    if url is None:
        return StepResult("role mapping", "created", resource, None,
                          "after the domain is active")
    client = _admin_opensearch(settings, url)
    indices = (settings.index_name, settings.dlq_index_name)
    wanted = (
        (writer_role_name(settings), policies.security_writer_role(indices), aws.arns.role),
        (reader_role_name(settings), policies.security_reader_role(indices),
         policies.iam_principal_arn(aws.caller_arn)),
    )
    changes = []
    for role_name, role_body, principal in wanted:
        mapping_body = policies.security_role_mapping(principal)
        for kind, body in (("roles", role_body), ("rolesmapping", mapping_body)):
            path = f"/_plugins/_security/api/{kind}/{role_name}"
            current = _opensearch(role_name, f"read security {kind} of", client.transport.
                                  perform_request, missing_ok=True, method="GET", url=path)
            if not covers((current or {}).get(role_name), body):
                changes.append(f"{kind[:-1]} {role_name}")
                if apply:
                    _opensearch(role_name, f"write security {kind} of",
                                client.transport.perform_request, method="PUT", url=path,
                                body=body)
    if not changes:
        return StepResult("role mapping", "unchanged", resource, url, "writer and reader mapped")
    return StepResult("role mapping", "updated", resource, url, "wrote " + ", ".join(changes))


# --- index templates and indices -----------------------------------------------------------------
def template_name(index_name: str) -> str:
    return f"{index_name}-template"


def ensure_indices(settings: Settings, *, url: str | None = None) -> tuple[StepResult, ...]:
    """Composable templates for the heart-rate and dead-letter indices, then the indices."""
    url = url or opensearch_url(settings)
    if url is None:
        raise ProvisionError("the domain has no endpoint yet; run the domain step first",
                             resource=settings.domain_name)
    return _indices_step(settings, apply=True, url=url)


def _indices_step(settings: Settings, *, apply: bool, url: str | None) -> tuple[StepResult, ...]:
    pairs = ((settings.index_name, index_template(settings.index_name)),
             (settings.dlq_index_name, dead_letter_template(settings.dlq_index_name)))
    if url is None:
        return tuple(
            StepResult(step, "created", name, None, "after the domain is active")
            for index, _body in pairs
            for step, name in (("index template", template_name(index)), ("index", index))
        )
    client = _admin_opensearch(settings, url)
    results = []
    for index, body in pairs:
        results.append(_template(client, template_name(index), body, apply=apply))
        results.append(_index(client, index, body, apply=apply))
    return tuple(results)


def _flat_settings(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(_flat_settings(item, f"{name}."))
        else:
            flat[name if name.startswith("index.") else f"index.{name}"] = str(item)
    return flat


def template_matches(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when a stored composable template already says what ``desired`` says (pure):
    OpenSearch returns settings nested and as strings, so both sides are flattened first."""
    current_template = current.get("template", {})
    return (
        list(current.get("index_patterns", [])) == list(desired["index_patterns"])
        and current.get("priority") == desired["priority"]
        and current_template.get("mappings") == desired["template"]["mappings"]
        and _flat_settings(current_template.get("settings", {}))
        == _flat_settings(desired["template"]["settings"])
    )


def _template(client: Any, name: str, body: Mapping[str, Any], *, apply: bool) -> StepResult:
    found = _opensearch(name, "read index template", client.indices.get_index_template,
                        missing_ok=True, name=name)
    templates = (found or {}).get("index_templates", [])
    if templates and template_matches(templates[0]["index_template"], body):
        return StepResult("index template", "unchanged", name, None,
                          f"pattern {', '.join(body['index_patterns'])}")
    if apply:
        _opensearch(name, "write index template", client.indices.put_index_template, name=name,
                    body=body)
    return StepResult("index template", "updated" if templates else "created", name, None,
                      f"pattern {', '.join(body['index_patterns'])}, replicas 0")


def _index(client: Any, index: str, body: Mapping[str, Any], *, apply: bool) -> StepResult:
    desired = body["template"]["mappings"]["properties"]
    found = _opensearch(index, "read mapping of index", client.indices.get_mapping,
                        missing_ok=True, index=index)
    if found is None:
        if apply:
            # The template supplies mapping and settings, as it will for a bulk that races us.
            _opensearch(index, "create index", client.indices.create, index=index)
        return StepResult("index", "created", index, None, "from its template")
    concrete = next(iter(found.values()))
    current = concrete.get("mappings", {}).get("properties", {})
    clashes = [f"{field_name} is {current[field_name].get('type')}, needs {spec.get('type')}"
               for field_name, spec in desired.items()
               if field_name in current and current[field_name].get("type") != spec.get("type")]
    if clashes:
        raise ProvisionError(
            f"index {index} exists with an incompatible mapping ({'; '.join(clashes)}); "
            "reindex it or delete it, then run set-up again",
            resource=index,
        )
    changes = []
    missing = {name: spec for name, spec in desired.items() if name not in current}
    if missing:
        changes.append("added fields " + ", ".join(sorted(missing)))
        if apply:
            _opensearch(index, "extend mapping of index", client.indices.put_mapping,
                        index=index, body={"properties": missing})
    index_settings = _opensearch(index, "read settings of index", client.indices.get_settings,
                                 index=index)
    replicas = next(iter(index_settings.values()))["settings"]["index"].get("number_of_replicas")
    if str(replicas) != "0":
        changes.append(f"replicas {replicas} -> 0 (one node: green, not yellow)")
        if apply:
            _opensearch(index, "set replicas of index", client.indices.put_settings, index=index,
                        body={"index": {"number_of_replicas": 0}})
    if changes:
        return StepResult("index", "updated", index, None, "; ".join(changes))
    return StepResult("index", "unchanged", index, None, "mapping and replicas as desired")


# --- Lambda layer, function, trigger -------------------------------------------------------------
def code_sha256(data: bytes) -> str:
    """A zip's digest as Lambda reports it (base64 of the raw sha256)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def ensure_layer(settings: Settings, artifacts: LambdaArtifacts,
                 clients: AwsClients | None = None) -> StepResult:
    """Publish the dependency layer when its content changed; keep only the newest version."""
    return _layer_step(settings, clients or AwsClients(settings), apply=True, artifacts=artifacts)


def _layer_versions(aws: AwsClients, name: str) -> list[dict[str, Any]]:
    found = _aws(name, "list versions of layer", aws.lambda_.list_layer_versions,
                 missing={"ResourceNotFoundException"}, LayerName=name)
    versions = [] if found is None else found["LayerVersions"]
    return sorted(versions, key=lambda version: version["Version"])


def _layer_step(settings: Settings, aws: AwsClients, *, apply: bool,
                artifacts: LambdaArtifacts | None) -> StepResult:
    name = settings.layer_name
    versions = _layer_versions(aws, name)
    if artifacts is None:
        if versions:
            return StepResult("layer", "skipped", name, versions[-1]["LayerVersionArn"],
                              "no build given: content not compared")
        return StepResult("layer", "created", name, None, "from the build")
    data = artifacts.read("layer")
    digest = code_sha256(data)
    if versions:
        newest = _aws(name, "read layer version", aws.lambda_.get_layer_version, LayerName=name,
                      VersionNumber=versions[-1]["Version"])
        if (newest["Content"]["CodeSha256"] == digest
                and newest.get("CompatibleArchitectures") == [artifacts.architecture]):
            if apply:
                _store_local_code(settings, data)
            return StepResult("layer", "unchanged", name, newest["LayerVersionArn"],
                              f"version {newest['Version']}, {artifacts.architecture}")
    action: Action = "updated" if versions else "created"
    if not apply:
        return StepResult("layer", action, name, None, f"new version, {artifacts.architecture}")
    published = _aws(name, "publish layer", aws.lambda_.publish_layer_version, LayerName=name,
                     Description=f"hrnb indexer dependencies ({settings.prefix})",
                     Content={"ZipFile": data}, CompatibleRuntimes=[RUNTIME],
                     CompatibleArchitectures=[artifacts.architecture])
    # Keep the version the function still uses until its update; older ones go now.
    stale = versions[:-1]
    for old in stale:
        _aws(name, "delete old layer version", aws.lambda_.delete_layer_version, LayerName=name,
             VersionNumber=old["Version"])
    _store_local_code(settings, data)
    return StepResult("layer", action, name, published["LayerVersionArn"],
                      f"version {published['Version']}, {artifacts.architecture}"
                      + (f"; removed {len(stale)} older" if stale else ""))


def _store_local_code(settings: Settings, data: bytes) -> None:
    """On the local stack, put a deployed zip where the local poller reads code from."""
    if not settings.is_local:
        return
    from hrnb.esm import store_local_code

    store_local_code(settings, data)


def function_environment(settings: Settings, url: str | None) -> dict[str, str]:
    """The function's environment variables (pure)."""
    return {
        "OPENSEARCH_ENDPOINT": url or "",
        "INDEX_NAME": settings.index_name,
        "DLQ_INDEX_NAME": settings.dlq_index_name,
        "HR_ALERT_THRESHOLD": str(settings.hr_alert_threshold_bpm),
    }


def ensure_function(
    settings: Settings,
    artifacts: LambdaArtifacts,
    clients: AwsClients | None = None,
    *,
    url: str | None = None,
    layer_version_arn: str | None = None,
    progress: Progress | None = None,
) -> StepResult:
    """The indexer function: code and configuration brought to the desired state."""
    aws = clients or AwsClients(settings)
    if layer_version_arn is None:
        versions = _layer_versions(aws, settings.layer_name)
        if not versions:
            raise ProvisionError("the layer has no version yet; run the layer step first",
                                 resource=settings.layer_name)
        layer_version_arn = versions[-1]["LayerVersionArn"]
    return _function_step(settings, aws, apply=True, artifacts=artifacts,
                          url=url or opensearch_url(settings, aws),
                          layer_version_arn=layer_version_arn,
                          progress=progress or _no_progress)


def _function_config(settings: Settings, aws: AwsClients, artifacts: LambdaArtifacts | None,
                     url: str | None, layer_version_arn: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Runtime": RUNTIME,
        "Role": aws.arns.role,
        "MemorySize": FUNCTION_MEMORY_MB,
        "Timeout": FUNCTION_TIMEOUT_S,
        "Environment": {"Variables": function_environment(settings, url)},
        "Description": f"hrnb indexer ({settings.prefix}): Kinesis -> OpenSearch",
    }
    if artifacts is not None:
        config["Handler"] = artifacts.handler
    if layer_version_arn is not None:
        config["Layers"] = [layer_version_arn]
    return config


def function_config_drift(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """Names of the configuration keys whose current value differs (pure)."""
    drift = []
    for key, value in desired.items():
        have = current.get(key)
        if key == "Layers":
            have = [layer["Arn"] for layer in have or []]
        if have != value:
            drift.append(key)
    return drift


def _function_step(settings: Settings, aws: AwsClients, *, apply: bool,
                   artifacts: LambdaArtifacts | None, url: str | None,
                   layer_version_arn: str | None, progress: Progress) -> StepResult:
    name = settings.function_name
    desired = _function_config(settings, aws, artifacts, url, layer_version_arn)
    found = _aws(name, "read function", aws.lambda_.get_function,
                 missing={"ResourceNotFoundException"}, FunctionName=name)
    data = artifacts.read("function") if artifacts is not None else None
    if found is None:
        if apply:
            if artifacts is None or data is None:
                raise ProvisionError("creating the function needs the built zips",
                                     resource=name)
            _create_function(settings, aws, desired, data, artifacts.architecture, progress)
            _store_local_code(settings, data)
        return StepResult("function", "created", name, aws.arns.function,
                          f"{RUNTIME}, {FUNCTION_MEMORY_MB} MB, {FUNCTION_TIMEOUT_S} s")
    _require_owned("Lambda function", name, found.get("Tags") or {}, settings)
    current = found["Configuration"]
    changes = []
    if data is not None and artifacts is not None:
        if (current.get("CodeSha256") != code_sha256(data)
                or current.get("Architectures", ["x86_64"]) != [artifacts.architecture]):
            changes.append("code")
            if apply:
                _wait_function(aws, name)
                _aws(name, "update code of function", aws.lambda_.update_function_code,
                     FunctionName=name, ZipFile=data, Architectures=[artifacts.architecture])
        if apply:
            _store_local_code(settings, data)
    if url is None and not apply:
        desired["Environment"] = current.get("Environment", {})  # endpoint not known yet
    drift = function_config_drift(current, desired)
    if drift:
        changes.extend(drift)
        if apply:
            _wait_function(aws, name)
            _aws(name, "update configuration of function",
                 aws.lambda_.update_function_configuration, FunctionName=name, **desired)
    if apply and changes:
        _wait_function(aws, name)
    if changes:
        return StepResult("function", "updated", name, current["FunctionArn"],
                          "changed " + ", ".join(changes))
    return StepResult("function", "unchanged", name, current["FunctionArn"],
                      f"{RUNTIME}, {FUNCTION_MEMORY_MB} MB, {FUNCTION_TIMEOUT_S} s")


def _create_function(settings: Settings, aws: AwsClients, config: Mapping[str, Any],
                     data: bytes, architecture: str, progress: Progress) -> None:
    """Create the function, retrying while a new role is not yet visible to Lambda (IAM is
    eventually consistent: a role made seconds ago can be refused)."""
    name = settings.function_name
    started = time.monotonic()
    while True:
        try:
            aws.lambda_.create_function(FunctionName=name, Code={"ZipFile": data},
                                        PackageType="Zip", Architectures=[architecture],
                                        Tags={OWNER_TAG: settings.prefix}, **config)
            break
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", ""))
            propagating = "cannot be assumed" in message
            if not propagating or time.monotonic() - started > _ROLE_PROPAGATION_TIMEOUT_S:
                raise _client_error(exc, name, "create function") from exc
            progress(f"function {name}: waiting for the new role to reach Lambda")
            time.sleep(5)
    _wait_function(aws, name, "function_active_v2")


def _wait_function(aws: AwsClients, name: str, waiter_name: str = "function_updated_v2") -> None:
    """Wait until Lambda accepts the next change (Active after create, Successful after update)."""
    waiter = aws.lambda_.get_waiter(waiter_name)
    _aws(name, "wait for function", waiter.wait, FunctionName=name,
         WaiterConfig={"Delay": 2, "MaxAttempts": 150})


def ensure_event_source_mapping(settings: Settings, clients: AwsClients | None = None,
                                options: EventSourceOptions | None = None) -> StepResult:
    """The Kinesis trigger of the function: enabled on AWS, disabled (read by the local poller)
    on the local stack."""
    return _mapping_step(settings, clients or AwsClients(settings), apply=True,
                         options=options or EventSourceOptions())


def _mappings(aws: AwsClients, settings: Settings) -> list[dict[str, Any]]:
    name = settings.function_name
    found = _aws(name, "list triggers of function", aws.lambda_.list_event_source_mappings,
                 missing={"ResourceNotFoundException"}, EventSourceArn=aws.arns.stream,
                 FunctionName=name)
    return [] if found is None else found["EventSourceMappings"]


def mapping_drift(current: Mapping[str, Any], desired: Mapping[str, Any]) -> list[str]:
    """Names of the mapping settings whose current value differs (pure)."""
    drift = []
    for key, value in desired.items():
        if key == "Enabled":
            have = current.get("State") in ("Enabled", "Enabling", "Creating")
        else:
            have = current.get(key)
            if key == "FunctionResponseTypes":
                have = list(have or [])
        if have != value:
            drift.append(key)
    return drift


def _mapping_step(settings: Settings, aws: AwsClients, *, apply: bool,
                  options: EventSourceOptions) -> StepResult:
    name = settings.function_name
    resource = f"{settings.stream_name} -> {name}"
    desired = options.desired(enabled=not settings.is_local)
    state = "enabled" if desired["Enabled"] else "disabled (the local poller runs it)"
    summary = (f"batch {options.batch_size}, window {options.batching_window_s} s, "
               f"{options.max_retry_attempts} retries, max age {options.max_record_age_s} s, "
               f"{state}")
    mappings = _mappings(aws, settings)
    if not mappings:
        if not apply:
            return StepResult("trigger", "created", resource, None, summary)
        created = _aws(resource, "create trigger", aws.lambda_.create_event_source_mapping,
                       EventSourceArn=aws.arns.stream, FunctionName=name,
                       StartingPosition=options.starting_position, **desired)
        _wait_mapping(aws, created["UUID"], resource)
        return StepResult("trigger", "created", resource, created["UUID"], summary)
    keep, *extra = mappings
    changes = mapping_drift(keep, desired)
    if changes and apply:
        _wait_mapping(aws, keep["UUID"], resource)
        _aws(resource, "update trigger", aws.lambda_.update_event_source_mapping,
             UUID=keep["UUID"], **desired)
        _wait_mapping(aws, keep["UUID"], resource)
    for duplicate in extra:
        changes.append(f"removed duplicate {duplicate['UUID']}")
        if apply:
            _aws(resource, "delete duplicate trigger", aws.lambda_.delete_event_source_mapping,
                 UUID=duplicate["UUID"])
    if changes:
        return StepResult("trigger", "updated", resource, keep["UUID"],
                          "repaired " + ", ".join(changes) + f" ({summary})")
    return StepResult("trigger", "unchanged", resource, keep["UUID"], summary)


def _wait_mapping(aws: AwsClients, uuid: str, resource: str, timeout_s: float = 300.0) -> None:
    """Wait while AWS is still creating/updating/enabling the mapping (the emulator never is)."""
    started = time.monotonic()
    while True:
        mapping = _aws(resource, "read trigger", aws.lambda_.get_event_source_mapping, UUID=uuid)
        if mapping.get("State") in ("Enabled", "Disabled"):
            return
        if time.monotonic() - started > timeout_s:
            raise ProvisionError(f"trigger {uuid} stayed {mapping.get('State')} for "
                                 f"{timeout_s:.0f} s", resource=resource)
        time.sleep(2)


# --- OpenSearch Dashboards -----------------------------------------------------------------------
DASHBOARDS_FILE = "dashboards.ndjson"


def dashboards_objects(settings: Settings) -> list[dict[str, Any]]:
    """The saved objects from ``hrnb/data/dashboards.ndjson`` with this settings' index pattern
    and alert threshold filled in (pure)."""
    text = resources.files("hrnb").joinpath("data", DASHBOARDS_FILE).read_text()
    objects = [json.loads(line) for line in text.splitlines() if line.strip()]
    for obj in objects:
        attributes = obj["attributes"]
        if obj["type"] == "index-pattern":
            attributes["title"] = f"{settings.index_name}*"
        elif obj["type"] == "visualization":
            vis_state = json.loads(attributes["visState"])
            vis_state["params"]["thresholdLine"]["value"] = settings.hr_alert_threshold_bpm
            attributes["visState"] = json.dumps(vis_state, separators=(",", ":"))
    return objects


def dashboards_url(settings: Settings, url: str | None) -> str | None:
    """OpenSearch Dashboards: beside the local node, or ``/_dashboards`` on the domain."""
    if settings.is_local:
        return LOCAL_DASHBOARDS_URL
    return f"{url}/_dashboards" if url else None


def ensure_dashboards(settings: Settings, *, url: str | None = None,
                      dashboards: str | None = None) -> StepResult:
    """Import the index pattern, the heart-rate chart and the dashboard when Dashboards answers;
    skipped, with the reason, when it does not."""
    target = dashboards or dashboards_url(settings, url or opensearch_url(settings))
    return _dashboards_step(settings, apply=True, dashboards=target)


def _dashboards_step(settings: Settings, *, apply: bool, dashboards: str | None) -> StepResult:
    import requests

    resource = "heart-rate dashboard"
    if dashboards is None:
        return StepResult("dashboards", "created", resource, None, "after the domain is active")
    session = requests.Session()
    session.headers["osd-xsrf"] = "true"
    if not settings.is_local:
        master = _require_master_user(settings)
        session.auth = (master.username, master.password)
        session.headers["securitytenant"] = "global"  # shared with every Dashboards user
    try:
        session.get(f"{dashboards}/api/status", timeout=3).raise_for_status()
    except requests.RequestException as exc:
        return StepResult("dashboards", "skipped", resource, dashboards,
                          f"OpenSearch Dashboards not reachable ({type(exc).__name__}); run "
                          f"set-up again when it runs, or import hrnb/data/{DASHBOARDS_FILE} "
                          "under Dashboards Management > Saved objects")
    objects = dashboards_objects(settings)
    try:
        current = session.post(
            f"{dashboards}/api/saved_objects/_bulk_get",
            json=[{"type": obj["type"], "id": obj["id"]} for obj in objects], timeout=10,
        )
        current.raise_for_status()
        stored = {(obj["type"], obj["id"]): obj.get("attributes")
                  for obj in current.json()["saved_objects"]}
        if all(covers(stored.get((obj["type"], obj["id"])), obj["attributes"])
               for obj in objects):
            return StepResult("dashboards", "unchanged", resource, dashboards,
                              f"{len(objects)} saved objects")
        action: Action = "updated" if any(stored.values()) else "created"
        if apply:
            ndjson = "".join(json.dumps(obj) + "\n" for obj in objects)
            response = session.post(
                f"{dashboards}/api/saved_objects/_import", params={"overwrite": "true"},
                files={"file": (DASHBOARDS_FILE, ndjson, "application/ndjson")}, timeout=30,
            )
            response.raise_for_status()
            if not response.json().get("success"):
                raise ProvisionError(f"Dashboards rejected the import: {response.text[:500]}",
                                     resource=resource)
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise ProvisionError(f"cannot import the dashboards into {dashboards}: {exc}",
                             resource=resource) from exc
    return StepResult("dashboards", action, resource, dashboards,
                      f"{len(objects)} saved objects (index pattern {settings.index_name}*)")


# --- set-up and plan -------------------------------------------------------------------------
def setup(
    settings: Settings,
    artifacts: LambdaArtifacts,
    *,
    clients: AwsClients | None = None,
    options: EventSourceOptions | None = None,
    progress: Progress | None = None,
    operator_cidrs: Iterable[str] = (),
    dashboards: str | None = None,
) -> SetupReport:
    """Bring every resource to the desired state, in dependency order. Safe to run again: an
    interrupted run resumes, a finished one reports everything unchanged."""
    return _run(settings, clients or AwsClients(settings), apply=True, artifacts=artifacts,
                options=options or EventSourceOptions(), progress=progress or _no_progress,
                operator_cidrs=operator_cidrs, dashboards=dashboards)


def plan(
    settings: Settings,
    artifacts: LambdaArtifacts | None = None,
    *,
    clients: AwsClients | None = None,
    options: EventSourceOptions | None = None,
    operator_cidrs: Iterable[str] = (),
    dashboards: str | None = None,
    prices: Mapping[str, Any] | None = None,
) -> Plan:
    """What ``setup()`` would create or change (nothing is changed), with its AWS cost."""
    options = options or EventSourceOptions()
    report = _run(settings, clients or AwsClients(settings), apply=False, artifacts=artifacts,
                  options=options, progress=_no_progress, operator_cidrs=operator_cidrs,
                  dashboards=dashboards)
    return Plan(target=settings.target, region=settings.region, steps=report.results,
                cost=estimate_cost(settings, prices, batch_size=options.batch_size))


def _run(settings: Settings, aws: AwsClients, *, apply: bool, artifacts: LambdaArtifacts | None,
         options: EventSourceOptions, progress: Progress, operator_cidrs: Iterable[str],
         dashboards: str | None) -> SetupReport:
    check_region(settings, aws.session)
    results: list[StepResult] = []

    def record(result: StepResult) -> StepResult:
        results.append(result)
        log.info("%s %s: %s %s", result.step, result.resource, result.action, result.detail)
        progress(f"{result.step} {result.resource}: {result.action}")
        return result

    progress(f"{'setting up' if apply else 'planning'} {settings.target} "
             f"({settings.region}, prefix {settings.prefix})")
    if apply:
        _StateFile(settings).update(region=settings.region)
    record(_stream_step(settings, aws, apply=apply))
    record(_role_step(settings, aws, apply=apply))
    record(_log_group_step(settings, aws, apply=apply))
    record(_domain_step(settings, aws, apply=apply, progress=progress,
                        operator_cidrs=operator_cidrs))
    url = opensearch_url(settings, aws)
    record(_role_mapping_step(settings, aws, apply=apply, url=url))
    for result in _indices_step(settings, apply=apply, url=url):
        record(result)
    layer = record(_layer_step(settings, aws, apply=apply, artifacts=artifacts))
    # In a plan a new layer version has no ARN yet; any placeholder shows the function changes.
    layer_arn = layer.id if layer.id else f"{settings.layer_name}:(new version)"
    record(_function_step(settings, aws, apply=apply, artifacts=artifacts, url=url,
                          layer_version_arn=layer_arn, progress=progress))
    record(_mapping_step(settings, aws, apply=apply, options=options))
    record(_dashboards_step(settings, apply=apply,
                            dashboards=dashboards or dashboards_url(settings, url)))
    if apply:
        _StateFile(settings).update(opensearch_url=url, set_up_at=_now())
    return SetupReport(results=tuple(results), opensearch_url=url)


# --- teardown ----------------------------------------------------------------------------------
def teardown_plan(settings: Settings, clients: AwsClients | None = None) -> tuple[StepResult, ...]:
    """What ``teardown()`` would delete (action ``deleted``) or find gone (``absent``)."""
    return _teardown(settings, clients or AwsClients(settings), apply=False,
                     progress=_no_progress).results


def teardown(settings: Settings, clients: AwsClients | None = None, *,
             progress: Progress | None = None, wait: bool = True) -> TeardownReport:
    """Delete everything set-up created, in dependency order, then look again and list what
    still exists (``wait`` lets AWS finish deleting the domain and stream first)."""
    return _teardown(settings, clients or AwsClients(settings), apply=True,
                     progress=progress or _no_progress, wait=wait)


def confirmed_teardown(
    settings: Settings,
    confirm: Callable[[tuple[StepResult, ...]], bool],
    clients: AwsClients | None = None,
    *,
    progress: Progress | None = None,
    wait: bool = True,
) -> TeardownReport | None:
    """``hrnb teardown``: show ``confirm`` what would be deleted and delete only if it returns
    True (``--yes`` passes ``lambda preview: True``). None when declined; when nothing exists,
    ``confirm`` is not asked and the report lists only absent resources."""
    aws = clients or AwsClients(settings)
    preview = _teardown(settings, aws, apply=False, progress=_no_progress).results
    if not any(step.action == "deleted" for step in preview):
        return TeardownReport(preview, remaining_resources(settings, aws))
    if not confirm(preview):
        return None
    return _teardown(settings, aws, apply=True, progress=progress or _no_progress, wait=wait)


def _teardown(settings: Settings, aws: AwsClients, *, apply: bool, progress: Progress,
              wait: bool = True) -> TeardownReport:
    check_region(settings, aws.session)
    results: list[StepResult] = []
    for step in (_teardown_mappings, _teardown_function, _teardown_layer, _teardown_log_group,
                 _teardown_role, _teardown_indices, _teardown_domain, _teardown_stream):
        for result in step(settings, aws, apply=apply):
            results.append(result)
            log.info("teardown %s %s: %s %s", result.step, result.resource, result.action,
                     result.detail)
            progress(f"{result.step} {result.resource}: {result.action}")
    if not apply:
        return TeardownReport(tuple(results), ())
    if wait:
        _wait_gone(settings, aws, progress)
    remaining = remaining_resources(settings, aws)
    if not remaining:
        _StateFile(settings).delete()
        master_user_path(settings).unlink(missing_ok=True)
    return TeardownReport(tuple(results), remaining)


def _owned_or_skip(kind: str, name: str, step: str, tags: Mapping[str, str],
                   settings: Settings) -> StepResult | None:
    if tags.get(OWNER_TAG) == settings.prefix:
        return None
    return StepResult(step, "skipped", name, None,
                      f"{kind} was not created by hrnb for prefix {settings.prefix!r}; left alone")


def _teardown_mappings(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    resource = f"{settings.stream_name} -> {settings.function_name}"
    mappings = _mappings(aws, settings)
    if not mappings:
        return [StepResult("trigger", "absent", resource)]
    results = []
    for mapping in mappings:
        if apply:
            _aws(resource, "delete trigger", aws.lambda_.delete_event_source_mapping,
                 UUID=mapping["UUID"])
        results.append(StepResult("trigger", "deleted", resource, mapping["UUID"]))
    return results


def _teardown_function(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.function_name
    found = _aws(name, "read function", aws.lambda_.get_function,
                 missing={"ResourceNotFoundException"}, FunctionName=name)
    if found is None:
        return [StepResult("function", "absent", name)]
    skipped = _owned_or_skip("function", name, "function", found.get("Tags") or {}, settings)
    if skipped:
        return [skipped]
    if apply:
        _aws(name, "delete function", aws.lambda_.delete_function, FunctionName=name)
    return [StepResult("function", "deleted", name, found["Configuration"]["FunctionArn"])]


def _teardown_layer(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.layer_name
    versions = _layer_versions(aws, name)
    if not versions:
        return [StepResult("layer", "absent", name)]
    if apply:
        for version in versions:
            _aws(name, "delete layer version", aws.lambda_.delete_layer_version, LayerName=name,
                 VersionNumber=version["Version"])
    return [StepResult("layer", "deleted", name, None, f"{len(versions)} version(s)")]


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


def _teardown_role(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.role_name
    found = _aws(name, "read role", aws.iam.get_role, missing={"NoSuchEntity"}, RoleName=name)
    if found is None:
        return [StepResult("role", "absent", name)]
    tags = _aws(name, "read tags of role", aws.iam.list_role_tags, RoleName=name)["Tags"]
    skipped = _owned_or_skip("IAM role", name, "role", _tag_list(tags), settings)
    if skipped:
        return [skipped]
    if apply:
        for policy_name in _aws(name, "list policies of role", aws.iam.list_role_policies,
                                RoleName=name)["PolicyNames"]:
            _aws(name, "delete policy of role", aws.iam.delete_role_policy, RoleName=name,
                 PolicyName=policy_name)
        for policy in _aws(name, "list managed policies of role",
                           aws.iam.list_attached_role_policies,
                           RoleName=name)["AttachedPolicies"]:
            _aws(name, "detach policy from role", aws.iam.detach_role_policy, RoleName=name,
                 PolicyArn=policy["PolicyArn"])
        _aws(name, "delete role", aws.iam.delete_role, RoleName=name)
    return [StepResult("role", "deleted", name, found["Role"]["Arn"])]


def _teardown_indices(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    indices = (settings.index_name, settings.dlq_index_name)
    if not settings.is_local:
        return [StepResult("index", "skipped", index, None, "deleted with the domain")
                for index in indices]
    client = _admin_opensearch(settings, settings.resolved_opensearch_url or "")
    results = []
    for index in indices:
        exists = _opensearch(index, "look up index", client.indices.exists, index=index)
        if apply and exists:
            _opensearch(index, "delete index", client.indices.delete, index=index)
        results.append(StepResult("index", "deleted" if exists else "absent", index))
        template = template_name(index)
        found = _opensearch(template, "look up index template",
                            client.indices.exists_index_template, name=template)
        if apply and found:
            _opensearch(template, "delete index template", client.indices.delete_index_template,
                        name=template)
        results.append(StepResult("index template", "deleted" if found else "absent", template))
    return results


def _teardown_domain(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    name = settings.domain_name
    status = _describe_domain(aws, name)
    if status is None:
        return [StepResult("domain", "absent", name)]
    tags = _aws(name, "read tags of domain", aws.opensearch.list_tags, ARN=status["ARN"])
    skipped = _owned_or_skip("domain", name, "domain", _tag_list(tags["TagList"]), settings)
    if skipped:
        return [skipped]
    if status.get("Deleted"):
        return [StepResult("domain", "deleted", name, status["ARN"], "deletion in progress")]
    if apply:
        _domain_call(aws, "delete domain", aws.opensearch.delete_domain, DomainName=name)
    return [StepResult("domain", "deleted", name, status["ARN"],
                       "takes ~10 min on AWS; its indices and dashboards go with it")]


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


def _wait_gone(settings: Settings, aws: AwsClients, progress: Progress,
               timeout_s: float = 30 * 60.0, poll_s: float = 15.0) -> None:
    """Wait until AWS has finished deleting the domain and the stream (billing stops then)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        pending = [name for name, present in (
            (settings.domain_name, _describe_domain(aws, settings.domain_name) is not None),
            (settings.stream_name, _describe_stream(aws, settings.stream_name) is not None),
        ) if present]
        if not pending:
            return
        progress(f"waiting for AWS to finish deleting {', '.join(pending)} "
                 f"({(time.monotonic() - started) / 60:.0f} min)")
        time.sleep(poll_s)


def remaining_resources(settings: Settings, clients: AwsClients | None = None) -> tuple[str, ...]:
    """Every resource with one of this prefix's names that still exists, described."""
    aws = clients or AwsClients(settings)
    remaining = []
    stream = _describe_stream(aws, settings.stream_name)
    if stream is not None:
        remaining.append(f"stream {settings.stream_name} ({stream['StreamStatus']})")
    domain = _describe_domain(aws, settings.domain_name)
    if domain is not None:
        state = "deletion in progress" if domain.get("Deleted") else "active"
        remaining.append(f"domain {settings.domain_name} ({state})")
    if _aws(settings.function_name, "read function", aws.lambda_.get_function,
            missing={"ResourceNotFoundException"}, FunctionName=settings.function_name):
        remaining.append(f"function {settings.function_name}")
    if _mappings(aws, settings):
        remaining.append(f"trigger {settings.stream_name} -> {settings.function_name}")
    if _layer_versions(aws, settings.layer_name):
        remaining.append(f"layer {settings.layer_name}")
    if _find_log_group(aws, settings.log_group_name) is not None:
        remaining.append(f"log group {settings.log_group_name}")
    if _aws(settings.role_name, "read role", aws.iam.get_role, missing={"NoSuchEntity"},
            RoleName=settings.role_name):
        remaining.append(f"role {settings.role_name}")
    if settings.is_local:
        client = _admin_opensearch(settings, settings.resolved_opensearch_url or "")
        for index in (settings.index_name, settings.dlq_index_name):
            if _opensearch(index, "look up index", client.indices.exists, index=index):
                remaining.append(f"index {index}")
    return tuple(remaining)


# --- cost --------------------------------------------------------------------------------------
PRICES_FILE = "prices.json"


def load_prices() -> dict[str, Any]:
    """The price table shipped in ``hrnb/data/prices.json`` (with its source and date)."""
    return json.loads(resources.files("hrnb").joinpath("data", PRICES_FILE).read_text())


def estimate_cost(
    settings: Settings,
    prices: Mapping[str, Any] | None = None,
    *,
    batch_size: int = 2,
    records_per_second: float = 2.0,
    record_bytes: int = 400,
    streaming_hours_per_month: float = 30.0,
    invocation_ms: float = 150.0,
    log_bytes_per_invocation: int = 600,
) -> CostEstimate:
    """Hourly and monthly AWS cost of the set-up (pure). Fixed items bill while they exist;
    usage items while a session streams at ``records_per_second`` (the reference's 2/s)."""
    table = prices or load_prices()
    region = settings.region if settings.region in table["regions"] else table["fallback_region"]
    price = table["regions"][region]
    seconds = 3600.0
    invocations_per_hour = records_per_second / batch_size * seconds
    gb_per_hour = records_per_second * record_bytes * seconds / 1e9

    def line(item: str, hourly: float, basis: str, monthly_hours: float) -> CostLine:
        return CostLine(item, hourly, hourly * monthly_hours, basis)

    fixed = [
        line(f"OpenSearch {INSTANCE_COUNT} x {INSTANCE_TYPE}",
             INSTANCE_COUNT * price["opensearch_instance_hour"][INSTANCE_TYPE],
             "per instance-hour", _HOURS_PER_MONTH),
        line(f"OpenSearch gp3 {VOLUME_GIB} GiB (3000 IOPS, 125 MiB/s included)",
             VOLUME_GIB * price["opensearch_gp3_gb_month"] / _HOURS_PER_MONTH,
             "per GB-month", _HOURS_PER_MONTH),
    ]
    if settings.stream_shards == 0:
        fixed.append(line("Kinesis on-demand stream", price["kinesis_on_demand_stream_hour"],
                          "per stream-hour", _HOURS_PER_MONTH))
        kinesis_data = gb_per_hour * (price["kinesis_on_demand_ingest_gb"]
                                      + price["kinesis_on_demand_retrieval_gb"])
        kinesis_basis = "per GB written and read"
    else:
        fixed.append(line(f"Kinesis {settings.stream_shards} shard(s)",
                          settings.stream_shards * price["kinesis_shard_hour"],
                          "per shard-hour", _HOURS_PER_MONTH))
        kinesis_data = records_per_second * seconds / 1e6 * price["kinesis_put_million_units"]
        kinesis_basis = "per million 25 KB PUT payload units"
    gb_seconds = invocations_per_hour * invocation_ms / 1000.0 * FUNCTION_MEMORY_MB / 1024.0
    usage = [
        line("Kinesis data", kinesis_data, kinesis_basis, streaming_hours_per_month),
        line("Lambda requests and compute",
             invocations_per_hour / 1e6 * price["lambda_million_requests"]
             + gb_seconds * price["lambda_gb_second_x86_64"],
             f"{invocations_per_hour:.0f} invocations/h of {invocation_ms:.0f} ms at "
             f"{FUNCTION_MEMORY_MB} MB", streaming_hours_per_month),
        line("CloudWatch Logs ingestion",
             invocations_per_hour * log_bytes_per_invocation / 1e9 * price["logs_ingest_gb"],
             "per GB ingested", streaming_hours_per_month),
    ]
    idle = sum(item.hourly_usd for item in fixed)
    streaming = sum(item.hourly_usd for item in usage)
    note = "" if region == settings.region else (
        f"; no prices for {settings.region} in the table, priced at {region} list prices")
    return CostEstimate(
        lines=tuple(fixed + usage),
        idle_hourly_usd=idle,
        streaming_hourly_usd=streaming,
        monthly_usd=sum(item.monthly_usd for item in fixed + usage),
        priced_region=region,
        price_source=table["source"],
        price_as_of=table["as_of"],
        assumptions=(f"{records_per_second:g} records/s of {record_bytes} B, batch "
                     f"{batch_size}, {streaming_hours_per_month:g} streaming hours a month, "
                     f"{_HOURS_PER_MONTH} h a month; excludes free tier, tax and data "
                     f"transfer{note}"),
    )
