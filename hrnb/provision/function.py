"""The Lambda function and its Kinesis trigger (event source mapping).

The function needs no dependency layer (``infra_scripts/build_lambda.py``): set-up detaches the
one an earlier hrnb published and deletes its versions, and teardown deletes any left."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hrnb.config import Settings
from hrnb.errors import ConfigError, ProvisionError
from hrnb.provision.alerts import sns_endpoint
from hrnb.provision.base import (
    OWNER_TAG,
    Architecture,
    AwsClients,
    Progress,
    StepResult,
    _aws,
    _aws_retrying_propagation,
    _no_progress,
    _owned_or_skip,
    _require_owned,
)
from hrnb.provision.domain import opensearch_url
from hrnb.provision.state import read_esm_status

RUNTIME = "python3.12"


#: A _bulk of a few records needs little memory; 256 MB buys proportionally more CPU for TLS and
#: JSON. 30 s covers the handler's bulk retries with back-off several times over.
FUNCTION_MEMORY_MB = 256


FUNCTION_TIMEOUT_S = 30


# --- inputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LambdaArtifacts:
    """The built function zip, and the architecture it is deployed for."""

    function_zip: Path
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
        """The zip ``infra_scripts/build_lambda.py`` wrote, located through its manifest."""
        manifest_path = build_dir / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            return cls(
                function_zip=build_dir / manifest["function"]["file"],
                architecture=architecture,
                handler=manifest["handler"],
            )
        except FileNotFoundError:
            raise ProvisionError(
                f"{manifest_path} not found: build the Lambda first "
                "(python infra_scripts/build_lambda.py)",
                resource=str(manifest_path),
            ) from None
        except OSError as exc:
            raise ProvisionError(f"cannot read {manifest_path}: {exc.strerror or exc}",
                                 service="file", action="read", resource=str(manifest_path),
                                 ) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise ProvisionError(
                f"{manifest_path} is not a build manifest ({exc!r}); rebuild the Lambda",
                resource=str(manifest_path),
            ) from None

    def read(self) -> bytes:
        try:
            return self.function_zip.read_bytes()
        except OSError as exc:
            raise ProvisionError(
                f"cannot read the function zip {self.function_zip}: {exc.strerror}; build the "
                "Lambda first",
                resource=str(self.function_zip),
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
    #: TRIM_HORIZON: a new trigger reads what was written before its first poll (LATEST would
    #: skip it); the document ``_id`` makes the re-read of anything older harmless.
    starting_position: Literal["LATEST", "TRIM_HORIZON"] = "TRIM_HORIZON"

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

    def desired(self, *, enabled: bool, on_failure: str) -> dict[str, Any]:
        """The mapping's mutable settings, as the Lambda API names them; ``on_failure`` is the
        ARN of the queue that gets the coordinates of every batch given up on."""
        return {
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.batching_window_s,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BisectBatchOnFunctionError": True,
            "MaximumRetryAttempts": self.max_retry_attempts,
            "MaximumRecordAgeInSeconds": self.max_record_age_s,
            "DestinationConfig": {"OnFailure": {"Destination": on_failure}},
            "Enabled": enabled,
        }


# --- Lambda function, trigger -------------------------------------------------------------------
def code_sha256(data: bytes) -> str:
    """A zip's digest as Lambda reports it (base64 of the raw sha256)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _layer_versions(aws: AwsClients, name: str) -> list[dict[str, Any]]:
    found = _aws(name, "list versions of layer", aws.lambda_.list_layer_versions,
                 missing={"ResourceNotFoundException"}, LayerName=name)
    versions = [] if found is None else found["LayerVersions"]
    return sorted(versions, key=lambda version: version["Version"])


def function_environment(settings: Settings, url: str | None,
                         alert_topic_arn: str) -> dict[str, str]:
    """The function's environment variables (pure): endpoints, indices, the episode rules and
    where episodes are kept and published."""
    return {
        "OPENSEARCH_ENDPOINT": url or "",
        "INDEX_NAME": settings.index_name,
        "DLQ_INDEX_NAME": settings.dlq_index_name,
        **settings.alert_rules.environment(),
        "ALERT_STATE_INDEX": settings.alert_state_index,
        "ALERT_TOPIC_ARN": alert_topic_arn,
        "SNS_ENDPOINT": sns_endpoint(settings),
    }


def ensure_function(
    settings: Settings,
    artifacts: LambdaArtifacts,
    clients: AwsClients | None = None,
    *,
    url: str | None = None,
    progress: Progress | None = None,
) -> StepResult:
    """The indexer function: code and configuration brought to the desired state."""
    aws = clients or AwsClients(settings)
    return _function_step(settings, aws, apply=True, artifacts=artifacts,
                          url=url or opensearch_url(settings, aws),
                          progress=progress or _no_progress)


def _function_config(settings: Settings, aws: AwsClients, artifacts: LambdaArtifacts | None,
                     url: str | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Runtime": RUNTIME,
        "Role": aws.arns.role,
        "MemorySize": FUNCTION_MEMORY_MB,
        "Timeout": FUNCTION_TIMEOUT_S,
        "Environment": {"Variables": function_environment(settings, url, aws.arns.alert_topic)},
        "Description": f"hrnb indexer ({settings.prefix}): Kinesis -> OpenSearch",
        # No layer: the handler is standard library only; one an earlier hrnb attached goes.
        "Layers": [],
    }
    if artifacts is not None:
        config["Handler"] = artifacts.handler
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
                   progress: Progress) -> StepResult:
    name = settings.function_name
    desired = _function_config(settings, aws, artifacts, url)
    found = _aws(name, "read function", aws.lambda_.get_function,
                 missing={"ResourceNotFoundException"}, FunctionName=name)
    data = artifacts.read() if artifacts is not None else None
    if found is None:
        if apply:
            if artifacts is None or data is None:
                raise ProvisionError("creating the function needs the built zips",
                                     resource=name)
            _create_function(settings, aws, desired, data, artifacts.architecture, progress)
        return StepResult("function", "created", name, aws.arns.function,
                          f"{RUNTIME}, {FUNCTION_MEMORY_MB} MB, {FUNCTION_TIMEOUT_S} s")
    _require_owned("Lambda function", name, _function_tags(aws, found), settings)
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


def _function_tags(aws: AwsClients, found: Mapping[str, Any]) -> dict[str, str]:
    """The function's tags. GetFunction carries them only when the caller may
    ``lambda:ListTags`` (and not at all for an untagged function), so ListTags answers then."""
    if "Tags" in found:
        return dict(found["Tags"] or {})
    configuration = found["Configuration"]
    listed = _aws(configuration["FunctionName"], "read tags of function", aws.lambda_.list_tags,
                  Resource=configuration["FunctionArn"])
    return dict(listed.get("Tags") or {})


def _create_function(settings: Settings, aws: AwsClients, config: Mapping[str, Any],
                     data: bytes, architecture: Architecture, progress: Progress) -> None:
    """Create the function; a role made seconds ago can be refused until IAM propagates."""
    name = settings.function_name
    _aws_retrying_propagation(name, "create function", aws.lambda_.create_function,
                              progress=progress, FunctionName=name, Code={"ZipFile": data},
                              PackageType="Zip", Architectures=[architecture],
                              Tags={OWNER_TAG: settings.prefix}, **config)
    _wait_function(aws, name, "function_active_v2")


def _wait_function(aws: AwsClients, name: str, waiter_name: Literal[
        "function_active_v2", "function_updated_v2"] = "function_updated_v2") -> None:
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
        have: Any
        if key == "Enabled":
            have = current.get("State") in ("Enabled", "Enabling", "Creating")
        else:
            have = current.get(key)
            if key == "FunctionResponseTypes":
                have = list(have or [])
            elif key == "DestinationConfig":
                on_failure = ((have or {}).get("OnFailure") or {}).get("Destination")
                have = {"OnFailure": {"Destination": on_failure}}
        if have != value:
            drift.append(key)
    return drift


def _mapping_step(settings: Settings, aws: AwsClients, *, apply: bool,
                  options: EventSourceOptions) -> StepResult:
    name = settings.function_name
    resource = f"{settings.stream_name} -> {name}"
    desired = options.desired(enabled=not settings.is_local, on_failure=aws.arns.queue)
    state = "enabled" if desired["Enabled"] else "disabled (the local poller runs it)"
    summary = (f"batch {options.batch_size}, window {options.batching_window_s} s, "
               f"{options.max_retry_attempts} retries, max age {options.max_record_age_s} s, "
               f"given-up batches to {settings.failure_queue_name}, {state}")
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


#: How long set-up waits for the local poller to read a new or repaired trigger.
_READING_TIMEOUT_S = 60.0


def _poller_alive(status: Mapping[str, Any] | None, within_s: float = 5.0) -> bool:
    """True when the local poller wrote its status lately (it does every second)."""
    if not status:
        return False
    updated = datetime.fromisoformat(status["updated_at"])
    return (datetime.now(UTC) - updated).total_seconds() <= within_s


def local_trigger_reading(settings: Settings, uuid: str) -> bool:
    """True when the local poller of this state directory reports the trigger reading."""
    status = read_esm_status(settings.state_dir)
    return _poller_alive(status) and any(
        mapping["uuid"] == uuid and mapping.get("reading")
        for mapping in (status or {}).get("mappings", []))


def _wait_reading(settings: Settings, uuid: str, progress: Progress) -> str:
    """On the local target, wait until the poller reads the trigger (AWS reads an Enabled one
    by itself). Without a poller, say so: nothing is lost (the trigger starts at TRIM_HORIZON),
    but nothing is indexed until ``hrnb local up`` starts one."""
    if not settings.is_local:
        return ""
    if not _poller_alive(read_esm_status(settings.state_dir)):
        return (f"no local poller runs for {settings.state_dir}: nothing is indexed until "
                "'hrnb local up' starts one")
    progress(f"trigger {uuid}: waiting for the local poller to read it")
    deadline = time.monotonic() + _READING_TIMEOUT_S
    while not local_trigger_reading(settings, uuid):
        if time.monotonic() > deadline:
            raise ProvisionError(
                f"the local poller has not read trigger {uuid} within {_READING_TIMEOUT_S:.0f} s; "
                "see 'hrnb local status' and its log", resource=uuid)
        time.sleep(0.2)
    return "read by the local poller"


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
    skipped = _owned_or_skip("function", name, "function", _function_tags(aws, found),
                             settings)
    if skipped:
        return [skipped]
    if apply:
        _aws(name, "delete function", aws.lambda_.delete_function, FunctionName=name)
    return [StepResult("function", "deleted", name, found["Configuration"]["FunctionArn"])]


def _teardown_layer(settings: Settings, aws: AwsClients, *, apply: bool) -> list[StepResult]:
    """Delete every version of the dependency layer an earlier hrnb published (the function no
    longer uses one): at teardown, and at set-up once the function is detached from it. Nothing
    to report when there is none."""
    name = settings.layer_name
    versions = _layer_versions(aws, name)
    if not versions:
        return []
    if apply:
        for version in versions:
            _aws(name, "delete layer version", aws.lambda_.delete_layer_version, LayerName=name,
                 VersionNumber=version["Version"])
    return [StepResult("layer", "deleted", name, None, f"{len(versions)} version(s)")]
