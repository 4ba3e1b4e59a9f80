"""The indexer's execution role and its least-privilege inline policy."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from hrnb.config import Settings
from hrnb.provision import policies
from hrnb.provision.base import (
    OWNER_TAG,
    Action,
    Arns,
    AwsClients,
    StepResult,
    _aws,
    _owned_or_skip,
    _require_owned,
    _tag_list,
)


# --- IAM role ----------------------------------------------------------------------------------
def ensure_role(settings: Settings, clients: AwsClients | None = None) -> StepResult:
    """The indexer's execution role with exactly one inline least-privilege policy."""
    return _role_step(settings, clients or AwsClients(settings), apply=True)


def inline_policy_name(settings: Settings) -> str:
    return f"{settings.prefix}-indexer-least-privilege"


def role_policy(settings: Settings, arns: Arns) -> policies.PolicyDocument:
    """The indexer role's inline policy for these settings."""
    return policies.indexer_role_policy(
        stream=arns.stream,
        log_group=arns.log_group,
        domain=arns.domain,
        index_names=(settings.index_name, settings.dlq_index_name, settings.alert_state_index),
        failure_queue=arns.queue,
        alert_topic=arns.alert_topic,
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

