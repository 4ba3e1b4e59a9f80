"""The OpenSearch domain: its desired configuration, drift, the resumable wait, its endpoint."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hrnb.config import Settings
from hrnb.errors import ConfigError, ProvisionError
from hrnb.provision import policies
from hrnb.provision.base import (
    OWNER_TAG,
    Action,
    Arns,
    AwsClients,
    Progress,
    StepResult,
    _aws,
    _aws_retrying_propagation,
    _no_progress,
    _now,
    _owned_or_skip,
    _require_owned,
    _tag_list,
)
from hrnb.provision.role import _canonical, _policy_json
from hrnb.provision.state import (
    MasterUser,
    StateFile,
    _create_master_user,
    _kept_out_of_logs,
    load_master_user,
    master_user_path,
)

log = logging.getLogger(__name__)


# --- the reference configuration -------------------------------------------------------------
ENGINE_VERSION = "OpenSearch_2.19"


INSTANCE_TYPE = "t3.small.search"


INSTANCE_COUNT = 1


VOLUME_GIB = 10


VOLUME_IOPS = 3000


VOLUME_THROUGHPUT_MIBPS = 125


TLS_POLICY = "Policy-Min-TLS-1-2-2019-07"


_DOMAIN_POLL_S = 30.0


_DOMAIN_TIMEOUT_S = 60 * 60.0


# --- OpenSearch domain ---------------------------------------------------------------------------
def domain_request(settings: Settings, arns: Arns, master: MasterUser | None,
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
            index_names=(settings.index_name, settings.dlq_index_name,
                         settings.alert_state_index),
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
    """The OpenSearch domain in the reference configuration. Waiting for it (15-30 min on AWS)
    reports progress and survives an interrupted kernel: call again to resume the wait."""
    return _domain_step(settings, clients or AwsClients(settings), apply=True,
                        progress=progress or _no_progress, operator_cidrs=operator_cidrs,
                        poll_s=poll_s, timeout_s=timeout_s)


def _domain_call(aws: AwsClients, doing: str, call: Callable[..., Any], /, *,
                 progress: Progress | None = None, **kwargs: Any) -> Any:
    """A control-plane call about the domain. Requests and responses can carry the master
    password (the emulator even echoes it back), so it is kept out of the logs throughout.
    With ``progress``, the call is retried while IAM propagates the role its access policy
    names."""
    master = load_master_user(aws.settings)
    with _kept_out_of_logs(master.password if master else None):
        if progress is None:
            return _aws(aws.settings.domain_name, doing, call, **kwargs)
        return _aws_retrying_propagation(aws.settings.domain_name, doing, call,
                                         progress=progress, **kwargs)


def _describe_domain(aws: AwsClients, name: str) -> dict[str, Any] | None:
    found = _domain_call(aws, "describe domain", aws.opensearch.describe_domain,
                         missing={"ResourceNotFoundException"}, DomainName=name)
    return None if found is None else found["DomainStatus"]


def _domain_step(settings: Settings, aws: AwsClients, *, apply: bool, progress: Progress,
                 operator_cidrs: Iterable[str] = (), poll_s: float = _DOMAIN_POLL_S,
                 timeout_s: float = _DOMAIN_TIMEOUT_S) -> StepResult:
    name = settings.domain_name
    state = StateFile(settings)
    shape = (f"{ENGINE_VERSION}, {INSTANCE_COUNT} x {INSTANCE_TYPE}, gp3 {VOLUME_GIB} GiB/"
             f"{VOLUME_IOPS} IOPS, HTTPS TLS 1.2+, encrypted, fine-grained access control")
    status = _describe_domain(aws, name)
    if status is None:
        if not apply:
            return StepResult("domain", "created", name, aws.arns.domain,
                              f"{shape}; takes ~15-30 min on AWS")
        # The password is stored before the request, so no crash can lose it.
        master = load_master_user(settings) or _create_master_user(settings)
        state.update(region=settings.region, domain_pending="creation",
                     domain_requested_at=_now())
        _domain_call(aws, "create domain", aws.opensearch.create_domain, progress=progress,
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
                     progress=progress, DomainName=name, **drift)
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
    state = StateFile(settings)
    requested = state.load().get("domain_requested_at")
    started = time.monotonic()
    while True:
        since = f", requested {requested}" if requested else ""
        minutes = (time.monotonic() - started) / 60
        progress(f"domain {name}: waiting until it is active ({minutes:.0f} min in this call"
                 f"{since}; AWS takes ~15-30 min)")
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
    """Where the data plane answers: the local node, or ``https://<domain endpoint>`` as
    DescribeDomain reports it now (None before the domain is active). On AWS the endpoint
    carries a hash that changes when the domain is re-created, so a URL in the settings is
    never used for provisioning; the one found is cached in the state file."""
    if settings.is_local:
        return settings.resolved_opensearch_url
    status = _describe_domain(clients or AwsClients(settings), settings.domain_name)
    endpoint = None if status is None or status.get("Processing") else _endpoint_of(status)
    if endpoint is None:
        return None
    state = StateFile(settings)
    if state.load().get("domain_endpoint") != endpoint:
        state.update(domain_endpoint=endpoint)
    url = f"https://{endpoint}"
    if settings.opensearch_url and settings.opensearch_url.rstrip("/") != url:
        log.warning("HRNB_OPENSEARCH_URL=%s is not the endpoint of domain %s (%s); "
                    "provisioning uses the domain's", settings.opensearch_url,
                    settings.domain_name, url)
    return url


def data_plane_url(settings: Settings, clients: AwsClients | None = None) -> str:
    """The URL every OpenSearch client uses: ``HRNB_OPENSEARCH_URL`` when set, the local node,
    or on AWS the domain's endpoint, re-checked with DescribeDomain and cached in the state
    file (the cached one serves when DescribeDomain cannot be asked), so notebooks need no
    variable."""
    if settings.is_local or settings.opensearch_url:
        return str(settings.resolved_opensearch_url)
    cached = StateFile(settings).load().get("domain_endpoint")
    try:
        url = opensearch_url(settings, clients)
    except ProvisionError as exc:
        if not cached:
            raise
        log.warning("cannot re-check the endpoint of domain %s (%s); using the one set-up "
                    "recorded, %s", settings.domain_name, exc, cached)
        return f"https://{cached}"
    if url is None:
        raise ConfigError(
            f"no OpenSearch endpoint: domain {settings.domain_name} does not exist or is not "
            "active yet; run 'hrnb setup' (and let it finish)",
            setting="opensearch_url",
        )
    return url


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

