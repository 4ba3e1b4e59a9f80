"""The indexer's IAM and security documents, and the least-privilege checker (pure)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hrnb.provision import policies

ACCOUNT = "123456789012"
STREAM = f"arn:aws:kinesis:ap-south-1:{ACCOUNT}:stream/hrnb-hr-stream"
LOG_GROUP = f"arn:aws:logs:ap-south-1:{ACCOUNT}:log-group:/aws/lambda/hrnb-indexer:*"
DOMAIN = f"arn:aws:es:ap-south-1:{ACCOUNT}:domain/hrnb-hr"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/hrnb-indexer-role"
QUEUE = f"arn:aws:sqs:ap-south-1:{ACCOUNT}:hrnb-indexer-failed"
TOPIC = f"arn:aws:sns:ap-south-1:{ACCOUNT}:hrnb-hr-alerts"
ALERT_LOG = f"arn:aws:sqs:ap-south-1:{ACCOUNT}:hrnb-hr-alerts-log"


def indexer_policy() -> dict[str, Any]:
    return dict(policies.indexer_role_policy(
        stream=STREAM, log_group=LOG_GROUP, domain=DOMAIN,
        index_names=("heart_rate", "heart_rate-dlq", "hrnb-hr-alert-state"),
        failure_queue=QUEUE, alert_topic=TOPIC,
    ))


def test_indexer_policy_is_least_privilege() -> None:
    allowed = {STREAM, LOG_GROUP, f"{DOMAIN}/heart_rate*", f"{DOMAIN}/hrnb-hr-alert-state*",
               QUEUE, TOPIC}
    assert policies.least_privilege_problems(indexer_policy(), allowed_resources=allowed) == []


def test_indexer_policy_grants_exactly_the_named_actions() -> None:
    granted = {
        (action, resource)
        for statement in indexer_policy()["Statement"]
        for action in statement["Action"]
        for resource in policies._as_list(statement["Resource"])
    }
    assert granted == {
        ("kinesis:DescribeStream", STREAM),
        ("kinesis:DescribeStreamSummary", STREAM),
        ("kinesis:GetRecords", STREAM),
        ("kinesis:GetShardIterator", STREAM),
        ("kinesis:ListShards", STREAM),
        ("logs:CreateLogStream", LOG_GROUP),
        ("logs:PutLogEvents", LOG_GROUP),
        ("es:ESHttpPost", f"{DOMAIN}/heart_rate*"),
        ("es:ESHttpPut", f"{DOMAIN}/heart_rate*"),
        ("es:ESHttpPost", f"{DOMAIN}/hrnb-hr-alert-state*"),
        ("es:ESHttpPut", f"{DOMAIN}/hrnb-hr-alert-state*"),
        ("sqs:SendMessage", QUEUE),
        ("sns:Publish", TOPIC),  # the alert topic, and nothing else of SNS
    }


def test_only_the_alert_topic_may_send_to_the_alert_log_queue() -> None:
    document = policies.alert_log_queue_policy(queue=ALERT_LOG, topic=TOPIC)
    (statement,) = document["Statement"]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}
    assert (statement["Action"], statement["Resource"]) == ("sqs:SendMessage", ALERT_LOG)
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": TOPIC}}


def _broken(path: tuple[int, str], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(indexer_policy())
    number, key = path
    document["Statement"][number][key] = value
    return document


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        (_broken((0, "Action"), "*"), "grants a whole service"),
        (_broken((0, "Action"), ["kinesis:*"]), "grants a whole service"),
        (_broken((2, "Action"), ["es:*"]), "grants a whole service"),
        (_broken((1, "Resource"), "*"), "Resource '*'"),
        (_broken((0, "Resource"), [STREAM, "*"]), "Resource '*'"),
        (_broken((0, "NotAction"), ["iam:*"]), "NotAction"),
        (_broken((0, "Resource"), STREAM.replace("hrnb-hr-stream", "someone-else")),
         "not one hrnb owns"),
        (_broken((2, "Resource"), f"{DOMAIN}/*"), "not one hrnb owns"),
        ({"Version": "2012-10-17", "Statement": []}, "no statements"),
    ],
)
def test_checker_flags_what_grants_too_much(document: dict[str, Any], complaint: str) -> None:
    allowed = {STREAM, LOG_GROUP, f"{DOMAIN}/heart_rate*"}
    problems = policies.least_privilege_problems(document, allowed_resources=allowed)
    assert any(complaint in problem for problem in problems), problems


def test_checker_ignores_deny_statements() -> None:
    document = indexer_policy()
    document["Statement"].append({"Effect": "Deny", "Action": "*", "Resource": "*"})
    assert policies.least_privilege_problems(document) == []


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("heart_rate", "heart_rate-dlq"), [f"{DOMAIN}/heart_rate*"]),
        (("heart_rate-dlq", "heart_rate"), [f"{DOMAIN}/heart_rate*"]),
        (("hr", "dead"), [f"{DOMAIN}/hr*", f"{DOMAIN}/dead*"]),
    ],
)
def test_index_resources_cover_each_index_once(names: tuple[str, ...],
                                               expected: list[str]) -> None:
    assert sorted(policies.index_resources(DOMAIN, names)) == sorted(expected)


def test_trust_policy_admits_only_lambda() -> None:
    (statement,) = policies.lambda_trust_policy()["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"


def test_domain_policy_admits_the_indexer_and_stays_within_the_domain() -> None:
    document = policies.domain_access_policy(domain=DOMAIN, indexer_role_arn=ROLE,
                                             index_names=("heart_rate", "heart_rate-dlq"))
    indexer, gate = document["Statement"]
    assert indexer["Principal"] == {"AWS": ROLE}
    assert indexer["Resource"] == [f"{DOMAIN}/heart_rate*"]
    assert set(indexer["Action"]) == {"es:ESHttpPost", "es:ESHttpPut"}
    assert gate["Resource"] == f"{DOMAIN}/*"
    assert "Condition" not in gate
    for statement in document["Statement"]:
        assert all(str(resource).startswith(f"{DOMAIN}/")
                   for resource in policies._as_list(statement["Resource"]))


def test_domain_policy_narrows_to_operator_addresses() -> None:
    document = policies.domain_access_policy(domain=DOMAIN, indexer_role_arn=ROLE,
                                             index_names=("heart_rate",),
                                             operator_cidrs=("203.0.113.7/32",))
    gate = document["Statement"][1]
    assert gate["Condition"] == {"IpAddress": {"aws:SourceIp": ["203.0.113.7/32"]}}


@pytest.mark.parametrize(
    ("caller", "principal"),
    [
        (f"arn:aws:sts::{ACCOUNT}:assumed-role/Admin/alice@example.com",
         f"arn:aws:iam::{ACCOUNT}:role/Admin"),
        (f"arn:aws:iam::{ACCOUNT}:user/alice", f"arn:aws:iam::{ACCOUNT}:user/alice"),
        (f"arn:aws-cn:sts::{ACCOUNT}:assumed-role/Ops/x", f"arn:aws-cn:iam::{ACCOUNT}:role/Ops"),
    ],
)
def test_iam_principal_of_a_caller(caller: str, principal: str) -> None:
    assert policies.iam_principal_arn(caller) == principal


def test_role_mapping_puts_users_and_roles_where_the_security_plugin_looks() -> None:
    assert policies.security_role_mapping(ROLE)["backend_roles"] == [ROLE]
    user = f"arn:aws:iam::{ACCOUNT}:user/alice"
    mapping = policies.security_role_mapping(user)
    assert mapping["users"] == [user] and mapping["backend_roles"] == []


def test_the_account_root_and_several_readers_are_mapped_where_they_can_match() -> None:
    root = f"arn:aws:iam::{ACCOUNT}:root"
    user = f"arn:aws:iam::{ACCOUNT}:user/coach"
    mapping = policies.security_role_mapping(root, ROLE, user)
    assert mapping["users"] == [root, user]  # a root request carries no backend role
    assert mapping["backend_roles"] == [ROLE]


def test_security_roles_cover_only_the_heart_rate_indices() -> None:
    writer = policies.security_writer_role(("heart_rate", "heart_rate-dlq"), "hrnb-hr-alert-state")
    permission, state = writer["index_permissions"]
    assert permission["index_patterns"] == ["heart_rate*", "heart_rate-dlq*"]
    assert set(permission["allowed_actions"]) == {"write", "create_index"}
    # The episode state: read and written, one exact index, never created by the function.
    assert state["index_patterns"] == ["hrnb-hr-alert-state*"]
    assert "create_index" not in state["allowed_actions"]
    assert writer["cluster_permissions"] == ["indices:data/write/bulk", "indices:data/read/mget"]
    reader = policies.security_reader_role(("heart_rate",))
    assert reader["index_permissions"][0]["allowed_actions"] == ["read"]


@pytest.mark.parametrize(
    ("region", "partition"),
    [("ap-south-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_partition_for(region: str, partition: str) -> None:
    assert policies.partition_for(region) == partition


def test_readers_are_the_configured_principals_or_else_the_set_up_caller() -> None:
    from hrnb.config import Settings
    from hrnb.provision.security import reader_principals

    caller = f"arn:aws:sts::{ACCOUNT}:assumed-role/Ops/session-1"
    assert reader_principals(Settings(), caller) == (f"arn:aws:iam::{ACCOUNT}:role/Ops",)
    root, coach = f"arn:aws:iam::{ACCOUNT}:root", f"arn:aws:iam::{ACCOUNT}:user/coach"
    configured = Settings(reader_principals=f"{root}, {coach}")
    assert reader_principals(configured, caller) == (root, coach)
