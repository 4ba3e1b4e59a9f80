"""Set-up, plan and teardown: every step in dependency order, and what remains afterwards."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from hrnb.config import Settings
from hrnb.provision.alerts import _alerts_step, _teardown_alerts, alerts_remaining
from hrnb.provision.base import (
    AwsClients,
    Progress,
    StepResult,
    _aws,
    _no_progress,
    _now,
    _opensearch,
    check_region,
)
from hrnb.provision.cost import CostEstimate, estimate_cost
from hrnb.provision.dashboards import _dashboards_step, dashboards_url
from hrnb.provision.domain import _describe_domain, _domain_step, _teardown_domain, opensearch_url
from hrnb.provision.function import (
    EventSourceOptions,
    LambdaArtifacts,
    _function_step,
    _layer_versions,
    _mapping_step,
    _mappings,
    _teardown_function,
    _teardown_layer,
    _teardown_mappings,
    _wait_reading,
)
from hrnb.provision.indices import _alert_state_step, _indices_step, _teardown_indices
from hrnb.provision.logs import _find_log_group, _log_group_step, _teardown_log_group
from hrnb.provision.queue import _queue_step, _teardown_queue, failure_queue_url
from hrnb.provision.role import _role_step, _teardown_role
from hrnb.provision.security import _admin_opensearch, _role_mapping_step
from hrnb.provision.state import StateFile, master_user_path
from hrnb.provision.stream import _describe_stream, _stream_step, _teardown_stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SetupReport:
    """Every step of ``setup()`` in order, and where the data plane answers."""

    results: tuple[StepResult, ...]
    opensearch_url: str | None

    @property
    def changed(self) -> bool:
        return any(result.changed for result in self.results)


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
                cost=estimate_cost(settings, prices, batch_size=options.batch_size,
                                   architecture=artifacts.architecture if artifacts
                                   else "x86_64"))


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
        StateFile(settings).update(region=settings.region)
    record(_stream_step(settings, aws, apply=apply))
    record(_role_step(settings, aws, apply=apply))
    record(_log_group_step(settings, aws, apply=apply))
    record(_domain_step(settings, aws, apply=apply, progress=progress,
                        operator_cidrs=operator_cidrs))
    record(_queue_step(settings, aws, apply=apply))
    url = opensearch_url(settings, aws)
    record(_role_mapping_step(settings, aws, apply=apply, url=url))
    for result in _indices_step(settings, apply=apply, url=url):
        record(result)
    record(_alert_state_step(settings, apply=apply, url=url))
    for result in _alerts_step(settings, aws, apply=apply):
        record(result)
    record(_function_step(settings, aws, apply=apply, artifacts=artifacts, url=url,
                          progress=progress))
    for result in _teardown_layer(settings, aws, apply=apply):  # an earlier hrnb's, detached
        record(result)
    trigger = _mapping_step(settings, aws, apply=apply, options=options)
    if apply and trigger.id:
        reading = _wait_reading(settings, trigger.id, progress)
        if reading:
            trigger = replace(trigger, detail=f"{trigger.detail}; {reading}")
    record(trigger)
    record(_dashboards_step(settings, apply=apply,
                            dashboards=dashboards or dashboards_url(settings, url)))
    if apply:
        StateFile(settings).update(opensearch_url=url, set_up_at=_now())
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
    for step in (_teardown_mappings, _teardown_function, _teardown_alerts, _teardown_layer,
                 _teardown_log_group, _teardown_queue, _teardown_role, _teardown_indices,
                 _teardown_domain, _teardown_stream):
        for result in step(settings, aws, apply=apply):
            results.append(result)
            log.info("teardown %s %s: %s %s", result.step, result.resource, result.action,
                     result.detail)
            progress(f"{result.step} {result.resource}: {result.action}")
    if not apply:
        return TeardownReport(tuple(results), ())
    deleted = {result.resource for result in results if result.action == "deleted"}
    if wait:
        _wait_gone(settings, aws, progress, deleted)
    left_alone = {result.resource for result in results if result.action == "skipped"}
    remaining = remaining_resources(settings, aws, left_alone=left_alone)
    if not remaining:
        StateFile(settings).delete()
        if not settings.is_local:  # the local node's master user belongs to the stack
            master_user_path(settings).unlink(missing_ok=True)
    return TeardownReport(tuple(results), remaining)


def _wait_gone(settings: Settings, aws: AwsClients, progress: Progress, deleted: set[str]) -> None:
    """Wait, bounded, until AWS has finished deleting the domain and the stream this teardown
    deleted (billing stops then); each poll says what is left. Whatever outlasts the wait is
    listed as remaining."""
    timeout_s, poll_s = (60.0, 1.0) if settings.is_local else (30 * 60.0, 15.0)
    checks = {
        settings.domain_name: lambda: _describe_domain(aws, settings.domain_name) is not None,
        settings.stream_name: lambda: _describe_stream(aws, settings.stream_name) is not None,
    }
    started = time.monotonic()
    while True:
        pending = [name for name, present in checks.items() if name in deleted and present()]
        elapsed = time.monotonic() - started
        if not pending or elapsed >= timeout_s:
            return
        progress(f"waiting for AWS to finish deleting {', '.join(pending)} "
                 f"({elapsed / 60:.0f} of at most {timeout_s / 60:.0f} min)")
        time.sleep(poll_s)


def remaining_resources(settings: Settings, clients: AwsClients | None = None, *,
                        left_alone: Collection[str] = ()) -> tuple[str, ...]:
    """Every resource with one of this prefix's names that still exists, described; those in
    ``left_alone`` (teardown found them not to be this prefix's) are not counted."""
    aws = clients or AwsClients(settings)
    found: list[tuple[str, str]] = []  # (name, description)
    stream = _describe_stream(aws, settings.stream_name)
    if stream is not None:
        found.append((settings.stream_name,
                      f"stream {settings.stream_name} ({stream['StreamStatus']})"))
    domain = _describe_domain(aws, settings.domain_name)
    if domain is not None:
        state = "deletion in progress" if domain.get("Deleted") else "active"
        found.append((settings.domain_name, f"domain {settings.domain_name} ({state})"))
    if _aws(settings.function_name, "read function", aws.lambda_.get_function,
            missing={"ResourceNotFoundException"}, FunctionName=settings.function_name):
        found.append((settings.function_name, f"function {settings.function_name}"))
    if _mappings(aws, settings):
        trigger = f"{settings.stream_name} -> {settings.function_name}"
        found.append((trigger, f"trigger {trigger}"))
    if _layer_versions(aws, settings.layer_name):
        found.append((settings.layer_name, f"layer {settings.layer_name}"))
    if _find_log_group(aws, settings.log_group_name) is not None:
        found.append((settings.log_group_name, f"log group {settings.log_group_name}"))
    if failure_queue_url(aws, settings) is not None:
        found.append((settings.failure_queue_name, f"queue {settings.failure_queue_name}"))
    found += alerts_remaining(settings, aws)
    if _aws(settings.role_name, "read role", aws.iam.get_role, missing={"NoSuchEntity"},
            RoleName=settings.role_name):
        found.append((settings.role_name, f"role {settings.role_name}"))
    if settings.is_local:
        client = _admin_opensearch(settings, settings.resolved_opensearch_url or "")
        for alias in (settings.index_name, settings.dlq_index_name, settings.alert_state_index):
            indices = _opensearch(alias, "read index", client.indices.get, missing_ok=True,
                                  index=alias) or {}
            found += [(name, f"index {name}") for name in indices]
    return tuple(description for name, description in found if name not in left_alone)
