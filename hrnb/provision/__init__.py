"""Provisioning as code: idempotent set-up, dry-run plan with costs, and clean teardown of the
stream, indexer role, log group, OpenSearch domain, indices, Lambda function, trigger,
alert topic with its log queue and episode state index, and dashboards, on AWS and on the local
stack with the same code.

Why: the reference was clicked together in the console, which is slow, easy to get subtly wrong
(the 403 when the Lambda role is not mapped in the security plugin, a yellow single-node index)
and leaves billable resources behind. Each ``ensure_*`` step looks first, changes only what
differs from the desired state, and says what it did; ``plan()`` runs the same steps without
changing anything. Every resource carries the tag ``hrnb:prefix``, so a name clash with
something hrnb did not create is an error instead of a takeover, and teardown never deletes it.

On the local target the control plane is the emulator and the data-plane steps go to the local
OpenSearch node's SigV4 front (the emulated domain's endpoint is fictitious), whose security
plugin gets the same role mappings as on AWS (``skipped`` only with HRNB_OPENSEARCH_SECURITY=off).
The event source mapping is created disabled there: the local
poller reads its settings and invokes the deployed code itself.
"""

from __future__ import annotations

from hrnb.provision import policies
from hrnb.provision.alerts import ALERT_LOG_RETENTION_S, check_endpoint, ensure_alerts, subscribe
from hrnb.provision.base import (
    OWNER_TAG,
    Action,
    Architecture,
    Arns,
    AwsClients,
    Progress,
    StepResult,
    check_region,
)
from hrnb.provision.cost import PRICES_FILE, CostEstimate, CostLine, estimate_cost, load_prices
from hrnb.provision.dashboards import (
    DASHBOARDS_FILE,
    LOCAL_DASHBOARDS_URL,
    dashboards_objects,
    dashboards_url,
    ensure_dashboards,
)
from hrnb.provision.domain import (
    ENGINE_VERSION,
    INSTANCE_COUNT,
    INSTANCE_TYPE,
    TLS_POLICY,
    VOLUME_GIB,
    VOLUME_IOPS,
    VOLUME_THROUGHPUT_MIBPS,
    data_plane_url,
    domain_drift,
    domain_request,
    ensure_domain,
    opensearch_url,
)
from hrnb.provision.function import (
    FUNCTION_MEMORY_MB,
    FUNCTION_TIMEOUT_S,
    RUNTIME,
    EventSourceOptions,
    LambdaArtifacts,
    code_sha256,
    ensure_event_source_mapping,
    ensure_function,
    function_config_drift,
    function_environment,
    mapping_drift,
)
from hrnb.provision.indices import (
    ensure_alert_state,
    ensure_indices,
    template_matches,
    template_name,
)
from hrnb.provision.logs import LOG_RETENTION_DAYS, ensure_log_group
from hrnb.provision.queue import QUEUE_RETENTION_S, ensure_failure_queue
from hrnb.provision.role import covers, ensure_role, inline_policy_name, role_policy
from hrnb.provision.run import (
    Plan,
    SetupReport,
    TeardownReport,
    confirmed_teardown,
    plan,
    remaining_resources,
    setup,
    teardown,
    teardown_plan,
)
from hrnb.provision.security import ensure_role_mapping, reader_role_name, writer_role_name
from hrnb.provision.state import (
    MASTER_USER_NAME,
    MasterUser,
    generate_master_password,
    load_master_user,
    master_user_path,
)
from hrnb.provision.stream import STREAM_RETENTION_HOURS, ensure_stream

__all__ = [
    "ALERT_LOG_RETENTION_S",
    "Action",
    "Architecture",
    "Arns",
    "AwsClients",
    "CostEstimate",
    "CostLine",
    "DASHBOARDS_FILE",
    "ENGINE_VERSION",
    "EventSourceOptions",
    "FUNCTION_MEMORY_MB",
    "FUNCTION_TIMEOUT_S",
    "INSTANCE_COUNT",
    "INSTANCE_TYPE",
    "LOCAL_DASHBOARDS_URL",
    "LOG_RETENTION_DAYS",
    "LambdaArtifacts",
    "MASTER_USER_NAME",
    "MasterUser",
    "OWNER_TAG",
    "PRICES_FILE",
    "QUEUE_RETENTION_S",
    "Plan",
    "Progress",
    "RUNTIME",
    "STREAM_RETENTION_HOURS",
    "SetupReport",
    "StepResult",
    "TLS_POLICY",
    "TeardownReport",
    "VOLUME_GIB",
    "VOLUME_IOPS",
    "VOLUME_THROUGHPUT_MIBPS",
    "check_endpoint",
    "check_region",
    "code_sha256",
    "confirmed_teardown",
    "covers",
    "dashboards_objects",
    "dashboards_url",
    "data_plane_url",
    "domain_drift",
    "domain_request",
    "ensure_alert_state",
    "ensure_alerts",
    "ensure_dashboards",
    "ensure_domain",
    "ensure_event_source_mapping",
    "ensure_failure_queue",
    "ensure_function",
    "ensure_indices",
    "ensure_log_group",
    "ensure_role",
    "ensure_role_mapping",
    "ensure_stream",
    "estimate_cost",
    "function_config_drift",
    "function_environment",
    "generate_master_password",
    "inline_policy_name",
    "load_master_user",
    "load_prices",
    "mapping_drift",
    "master_user_path",
    "opensearch_url",
    "plan",
    "policies",
    "reader_role_name",
    "remaining_resources",
    "role_policy",
    "setup",
    "subscribe",
    "teardown",
    "teardown_plan",
    "template_matches",
    "template_name",
    "writer_role_name",
]
