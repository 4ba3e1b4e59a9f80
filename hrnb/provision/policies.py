"""IAM and OpenSearch security documents for the indexer, as pure functions, plus the checker
that keeps them least-privilege.

Why apart from provisioning: the documents decide what a stolen Lambda credential could do, so
they are built from names alone and checked by plain tests, with no AWS call in sight.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any, NotRequired, TypedDict

POLICY_VERSION = "2012-10-17"

#: What the Lambda service needs to read a Kinesis stream through an event source mapping.
KINESIS_READ_ACTIONS = (
    "kinesis:DescribeStream",
    "kinesis:DescribeStreamSummary",
    "kinesis:GetRecords",
    "kinesis:GetShardIterator",
    "kinesis:ListShards",
)
#: The log group is created by set-up, so the function only writes streams and events into it.
LOG_WRITE_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
#: ``_bulk`` is a POST; PUT covers single-document writes.
OPENSEARCH_WRITE_ACTIONS = ("es:ESHttpPost", "es:ESHttpPut")


class Statement(TypedDict):
    """One IAM policy statement (only the keys hrnb writes)."""

    Sid: NotRequired[str]
    Effect: str
    Action: str | list[str]
    Resource: NotRequired[str | list[str]]
    Principal: NotRequired[dict[str, Any] | str]
    Condition: NotRequired[dict[str, Any]]


class PolicyDocument(TypedDict):
    """An IAM policy document."""

    Version: str
    Statement: list[Statement]


def partition_for(region: str) -> str:
    """The ARN partition of a region (``aws``, ``aws-cn`` or ``aws-us-gov``)."""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def stream_arn(partition: str, region: str, account_id: str, stream_name: str) -> str:
    return f"arn:{partition}:kinesis:{region}:{account_id}:stream/{stream_name}"


def log_group_arn(partition: str, region: str, account_id: str, log_group_name: str) -> str:
    """The ARN of a log group's streams (``:*``), which is what CreateLogStream and
    PutLogEvents are authorised against."""
    return f"arn:{partition}:logs:{region}:{account_id}:log-group:{log_group_name}:*"


def domain_arn(partition: str, region: str, account_id: str, domain_name: str) -> str:
    return f"arn:{partition}:es:{region}:{account_id}:domain/{domain_name}"


def index_resources(domain: str, index_names: Iterable[str]) -> list[str]:
    """HTTP-path resources of a domain for the given indices and everything below them
    (``<domain-arn>/heart_rate*`` covers ``/heart_rate/_bulk`` and ``/heart_rate-dlq/_doc/1``);
    an index whose name another one's pattern already covers adds nothing."""
    patterns: list[str] = []
    for name in sorted(set(index_names), key=len):
        if not any(fnmatch.fnmatchcase(name, f"{kept}*") for kept in patterns):
            patterns.append(name)
    return [f"{domain}/{name}*" for name in patterns]


def lambda_trust_policy() -> PolicyDocument:
    """Only the Lambda service may assume the indexer role."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def indexer_role_policy(
    *,
    stream: str,
    log_group: str,
    domain: str,
    index_names: Sequence[str],
    failure_queue: str,
    alert_topic: str,
) -> PolicyDocument:
    """The indexer's inline policy: read one stream, write one log group, write the heart-rate
    and dead-letter indices of one domain, and send the coordinates of given-up batches to one
    queue (Lambda sends the trigger's on-failure records with the function's role), and publish
    alert episodes to one topic (``index_names`` include the episode state index). Arguments
    are ARNs (``log_group`` as from :func:`log_group_arn`) and index names."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ReadHeartRateStream",
                "Effect": "Allow",
                "Action": list(KINESIS_READ_ACTIONS),
                "Resource": stream,
            },
            {
                "Sid": "WriteOwnLogGroup",
                "Effect": "Allow",
                "Action": list(LOG_WRITE_ACTIONS),
                "Resource": log_group,
            },
            {
                "Sid": "WriteHeartRateIndices",
                "Effect": "Allow",
                "Action": list(OPENSEARCH_WRITE_ACTIONS),
                "Resource": index_resources(domain, index_names),
            },
            {
                "Sid": "SendFailedBatchRecords",
                "Effect": "Allow",
                "Action": ["sqs:SendMessage"],
                "Resource": failure_queue,
            },
            {
                "Sid": "PublishAlertEpisodes",
                "Effect": "Allow",
                "Action": ["sns:Publish"],
                "Resource": alert_topic,
            },
        ],
    }


def alert_log_queue_policy(*, queue: str, topic: str) -> PolicyDocument:
    """The alert log queue's resource policy: only the alert topic may send to it."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "OnlyTheAlertTopicSends",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
            }
        ],
    }


def domain_access_policy(
    *,
    domain: str,
    indexer_role_arn: str,
    index_names: Sequence[str],
    operator_cidrs: Sequence[str] = (),
) -> PolicyDocument:
    """The domain's resource policy.

    The indexer role is admitted explicitly for its writes. The second statement lets requests
    reach the domain so that fine-grained access control decides: the internal master user
    (HTTP basic auth, also the Dashboards login) sends unsigned requests, which an IAM-only
    policy would refuse. ``operator_cidrs`` narrows that statement to the given source
    addresses; AWS documents this open-to-FGAC shape for internal-user-database domains.
    """
    gate: Statement = {
        "Sid": "FineGrainedAccessControlDecides",
        "Effect": "Allow",
        "Principal": {"AWS": "*"},
        "Action": "es:ESHttp*",
        "Resource": f"{domain}/*",
    }
    if operator_cidrs:
        gate["Condition"] = {"IpAddress": {"aws:SourceIp": list(operator_cidrs)}}
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "IndexerWrites",
                "Effect": "Allow",
                "Principal": {"AWS": indexer_role_arn},
                "Action": list(OPENSEARCH_WRITE_ACTIONS),
                "Resource": index_resources(domain, index_names),
            },
            gate,
        ],
    }


# --- OpenSearch security plugin (fine-grained access control) --------------------------------
def security_writer_role(index_names: Sequence[str], alert_state_index: str) -> dict[str, Any]:
    """Security-plugin role for the indexer: bulk-write and create the heart-rate indices; read
    and write (never create) the alert episode state, one document per athlete."""
    return {
        "description": "hrnb indexer: write heart-rate and dead-letter documents, keep alert "
                       "episode state",
        "cluster_permissions": ["indices:data/write/bulk", "indices:data/read/mget"],
        "index_permissions": [
            {
                "index_patterns": sorted({f"{name}*" for name in index_names}),
                "allowed_actions": ["write", "create_index"],
            },
            {
                "index_patterns": [f"{alert_state_index}*"],  # the alias and its index
                "allowed_actions": ["indices:data/read/get", "indices:data/read/mget*",
                                    "indices:data/write/index", "indices:data/write/bulk*"],
            },
        ],
    }


def security_reader_role(index_names: Sequence[str]) -> dict[str, Any]:
    """Security-plugin role for the operator's IAM identity: read and search heart-rate data."""
    return {
        "description": "hrnb operator: query heart-rate and dead-letter documents",
        "cluster_permissions": ["cluster_composite_ops_ro"],
        "index_permissions": [
            {
                "index_patterns": sorted({f"{name}*" for name in index_names}),
                "allowed_actions": ["read"],
            }
        ],
    }


def security_role_mapping(*principal_arns: str) -> dict[str, Any]:
    """Map IAM principals to a security-plugin role. Roles (also assumed-role sessions, given
    as their role ARN) are backend roles; IAM users and the account root are users (a root
    request carries no role, so as a backend role it would never match)."""
    roles = [arn for arn in principal_arns if ":role/" in arn]
    users = [arn for arn in principal_arns if ":role/" not in arn]
    return {"backend_roles": roles, "hosts": [], "users": users}


def iam_principal_arn(caller_arn: str) -> str:
    """The IAM ARN that fine-grained access control sees for a caller: an assumed-role session
    ``arn:aws:sts::1:assumed-role/Name/session`` becomes ``arn:aws:iam::1:role/Name``."""
    prefix, _, rest = caller_arn.partition(":assumed-role/")
    if not rest:
        return caller_arn
    partition_and_account = prefix.replace(":sts:", ":iam:", 1)
    return f"{partition_and_account}:role/{rest.split('/', 1)[0]}"


# --- least-privilege checker -----------------------------------------------------------------
def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def least_privilege_problems(
    document: PolicyDocument | dict[str, Any],
    *,
    allowed_resources: Iterable[str] | None = None,
) -> list[str]:
    """Everything in an identity policy that grants more than it names, one message each.

    Flags: ``NotAction``/``NotResource``/``NotPrincipal`` in an Allow, an action wildcard that
    spans a whole service (``*``, ``kinesis:*``), ``Resource: "*"``, and with
    ``allowed_resources`` any resource outside that list. An empty list means the document passes.
    """
    problems: list[str] = []
    allowed = None if allowed_resources is None else set(allowed_resources)
    statements = _as_list(document.get("Statement"))
    if not statements:
        problems.append("policy has no statements")
    for number, statement in enumerate(statements, start=1):
        where = f"statement {statement.get('Sid') or number}"
        if statement.get("Effect") != "Allow":
            continue
        for key in ("NotAction", "NotResource", "NotPrincipal"):
            if key in statement:
                problems.append(f"{where}: {key} grants everything not listed")
        actions = _as_list(statement.get("Action"))
        if not actions:
            problems.append(f"{where}: no Action")
        for action in actions:
            service, _, name = str(action).partition(":")
            if action == "*" or not name or name == "*":
                problems.append(f"{where}: action {action!r} grants a whole service")
        resources = _as_list(statement.get("Resource"))
        if not resources:
            problems.append(f"{where}: no Resource")
        for resource in resources:
            if resource == "*" and not statement.get("Condition"):
                problems.append(f"{where}: Resource '*' applies to every resource")
            elif allowed is not None and resource not in allowed:
                problems.append(f"{where}: resource {resource!r} is not one hrnb owns")
    return problems


# --- the operator: whoever runs set-up, teardown, stream, query and redrive -------------------
#: What each statement of the operator's policy is for; its actions, in the order set-up uses
#: them. One entry per resource, so removing one statement breaks exactly one part of the work.
OPERATOR_STATEMENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ManageHeartRateStream", (
        "kinesis:DescribeStreamSummary", "kinesis:DescribeStream", "kinesis:CreateStream",
        "kinesis:AddTagsToStream", "kinesis:ListTagsForStream", "kinesis:UpdateStreamMode",
        "kinesis:UpdateShardCount", "kinesis:IncreaseStreamRetentionPeriod",
        "kinesis:DecreaseStreamRetentionPeriod", "kinesis:DeleteStream")),
    ("ReadAndWriteHeartRateStream", (
        "kinesis:PutRecords", "kinesis:ListShards", "kinesis:GetShardIterator",
        "kinesis:GetRecords")),
    ("ManageIndexerRole", (
        "iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:ListRoleTags",
        "iam:UpdateAssumeRolePolicy", "iam:ListRolePolicies", "iam:GetRolePolicy",
        "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:ListAttachedRolePolicies",
        "iam:DetachRolePolicy", "iam:DeleteRole")),
    ("PassIndexerRoleToLambda", ("iam:PassRole",)),
    ("FindLogGroups", ("logs:DescribeLogGroups",)),
    ("ManageIndexerLogGroup", (
        "logs:CreateLogGroup", "logs:TagResource", "logs:ListTagsForResource",
        "logs:PutRetentionPolicy", "logs:DeleteLogGroup")),
    ("ManageDomain", (
        "es:DescribeDomain", "es:CreateDomain", "es:AddTags", "es:ListTags",
        "es:UpdateDomainConfig", "es:DeleteDomain")),
    # The function needs no layer: set-up and teardown delete the one an earlier hrnb published.
    ("DeleteEarlierIndexerLayer", ("lambda:ListLayerVersions", "lambda:DeleteLayerVersion")),
    ("ManageIndexerFunction", (
        "lambda:GetFunction", "lambda:ListTags", "lambda:CreateFunction", "lambda:TagResource",
        "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration",
        "lambda:DeleteFunction", "lambda:InvokeFunction")),
    ("ManageIndexerTrigger", (
        "lambda:ListEventSourceMappings", "lambda:CreateEventSourceMapping",
        "lambda:GetEventSourceMapping", "lambda:UpdateEventSourceMapping",
        "lambda:DeleteEventSourceMapping")),
    # The failure queue and the alert log queue: the same actions on both.
    ("ManageQueues", (
        "sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes",
        "sqs:SetQueueAttributes", "sqs:TagQueue",
        "sqs:ListQueueTags", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteQueue")),
    ("ManageAlertTopic", (
        "sns:ListTagsForResource", "sns:CreateTopic", "sns:TagResource",
        "sns:ListSubscriptionsByTopic", "sns:Subscribe", "sns:Unsubscribe", "sns:DeleteTopic")),
)


def operator_policy(
    *,
    stream: str,
    role: str,
    log_group: str,
    domain: str,
    function: str,
    layer: str,
    queue: str,
    alert_topic: str,
    alert_log_queue: str,
) -> PolicyDocument:
    """The least-privilege identity policy of the operator, the single source that
    docs/operations.md prints. Arguments are ARNs (``log_group`` as from
    :func:`log_group_arn`; ``layer`` without a version). Querying needs no statement: the
    domain's resource policy lets requests reach fine-grained access control, which decides.

    The trigger actions are authorised against ``*`` on AWS (ListEventSourceMappings and
    CreateEventSourceMapping have no resource), so that statement is narrowed by the
    ``lambda:FunctionArn`` condition instead."""
    log_group_base = log_group.removesuffix(":*")
    account_logs = log_group_base.split(":log-group:", 1)[0] + ":log-group:*"
    resources: dict[str, list[str]] = {
        "ManageHeartRateStream": [stream],
        "ReadAndWriteHeartRateStream": [stream],
        "ManageIndexerRole": [role],
        "PassIndexerRoleToLambda": [role],
        "FindLogGroups": [account_logs],
        "ManageIndexerLogGroup": [log_group_base, log_group],
        "ManageDomain": [domain],
        "DeleteEarlierIndexerLayer": [layer, f"{layer}:*"],
        "ManageIndexerFunction": [function],
        "ManageIndexerTrigger": ["*"],
        "ManageQueues": [queue, alert_log_queue],
        "ManageAlertTopic": [alert_topic],
    }
    statements: list[Statement] = []
    for sid, actions in OPERATOR_STATEMENTS:
        statement: Statement = {"Sid": sid, "Effect": "Allow", "Action": list(actions),
                                "Resource": resources[sid]}
        if sid == "ManageIndexerTrigger":
            statement["Condition"] = {"StringEquals": {"lambda:FunctionArn": function}}
        statements.append(statement)
    return {"Version": POLICY_VERSION, "Statement": statements}
