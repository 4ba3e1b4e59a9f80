"""The AWS emulator of the local stack: moto's own server (`python -m hrnb.local.emulator`), started
with fidelity fixes.

moto runs the function of every Kinesis event source mapping on each put, even when the mapping
is disabled, which AWS never does, by trying to start it in Docker. The local stack creates its
mapping disabled because :mod:`hrnb.local.poller` runs the function; without this fix every
record put costs a failed Docker attempt and a log line (measured in docs/benchmarks/pipeline.md
as most of
the emulator's PutRecords time).

It also adds the AWS behaviours moto lacks where hrnb's defects would hide (:class:`Strictness`):
IAM propagation delay, hashed domain endpoints, UpdateShardCount limits, GetFunction without
Tags, expiring STS sessions. Each is on by default and switched off by its ``HRNB_STRICT_*``
variable.

With fine-grained access control on, the same process serves the local domain endpoint
(:mod:`hrnb.local.front`), which verifies SigV4 against the credentials moto keeps in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import string
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hrnb.config import Settings
from hrnb.errors import ConfigError
from hrnb.local.code_store import store_local_code


class _StreamWithMappings:
    """A view of a moto stream that shows only some of its event source mappings."""

    def __init__(self, stream: Any, mappings: dict[str, Any]) -> None:
        self._stream = stream
        self.lambda_event_source_mappings = mappings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def honour_disabled_mappings() -> None:
    """Make moto's Kinesis puts invoke only enabled mappings, as AWS does."""
    from moto.kinesis.models import Stream

    original = Stream.put_record

    def put_record(self: Any, partition_key: str, explicit_hash_key: str, data: str) -> Any:
        mappings = self.lambda_event_source_mappings
        enabled = {arn: esm for arn, esm in mappings.items() if getattr(esm, "enabled", True)}
        if len(enabled) == len(mappings):
            return original(self, partition_key, explicit_hash_key, data)
        view = _StreamWithMappings(self, enabled)  # duck-types moto's Stream
        return original(view, partition_key, explicit_hash_key, data)  # type: ignore[arg-type]

    Stream.put_record = put_record  # type: ignore[method-assign]


def keep_deployed_code(cache_dir: Path) -> None:
    """Write every zip moto decodes (functions, and layers, which the poller does not run) into
    the local code store, where the poller finds it by the CodeSha256 the emulator reports
    (moto keeps the code but cannot hand it back over its API)."""
    from moto.awslambda import models

    original = models._zipfile_content

    def zipfile_content(zipfile_content: str | bytes) -> tuple[bytes, int, str, str]:
        result = original(zipfile_content)
        store_local_code(cache_dir, result[0])
        return result

    models._zipfile_content = zipfile_content


# --- strict AWS behaviours ---------------------------------------------------------------------
def _flag(environ: Mapping[str, str], name: str, default: bool = True) -> bool:
    raw = environ.get(name, "").strip().lower()
    return default if raw == "" else raw not in ("0", "false", "no", "off")


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    try:
        return default if raw == "" else max(0.0, float(raw))
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds", setting=name) from None


@dataclass(frozen=True)
class Strictness:
    """Which AWS behaviours moto lacks the emulator adds; each is on by default and can be
    switched off for debugging with its ``HRNB_STRICT_*`` variable (docs/operations.md)."""

    iam_propagation_s: float = 5.0  # HRNB_STRICT_IAM_PROPAGATION_S; 0: off
    domain_endpoints: bool = True  # HRNB_STRICT_DOMAIN_ENDPOINTS
    resharding: bool = True  # HRNB_STRICT_RESHARDING
    stream_updating_s: float = 1.0  # HRNB_STRICT_STREAM_UPDATING_S
    function_tags: bool = True  # HRNB_STRICT_FUNCTION_TAGS
    session_expiry: bool = True  # HRNB_STRICT_SESSION_EXPIRY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Strictness:
        env = os.environ if environ is None else environ
        return cls(
            iam_propagation_s=_seconds(env, "HRNB_STRICT_IAM_PROPAGATION_S", 5.0),
            domain_endpoints=_flag(env, "HRNB_STRICT_DOMAIN_ENDPOINTS"),
            resharding=_flag(env, "HRNB_STRICT_RESHARDING"),
            stream_updating_s=_seconds(env, "HRNB_STRICT_STREAM_UPDATING_S", 1.0),
            function_tags=_flag(env, "HRNB_STRICT_FUNCTION_TAGS"),
            session_expiry=_flag(env, "HRNB_STRICT_SESSION_EXPIRY"),
        )

    def apply(self) -> None:
        if self.iam_propagation_s > 0:
            delay_iam_propagation(self.iam_propagation_s)
        if self.domain_endpoints:
            hash_domain_endpoints()
        if self.resharding:
            limit_resharding(self.stream_updating_s)
        if self.function_tags:
            hide_function_tags()
        if self.session_expiry:
            expire_sessions()


def _young_principal(arn: str, delay_s: float) -> bool:
    """True when ``arn`` names an IAM role or user created less than ``delay_s`` ago: AWS's
    other services do not see it yet."""
    from moto.core.utils import utcnow
    from moto.iam.models import iam_backends

    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "iam":
        return False
    kind, _, rest = parts[5].partition("/")
    try:
        backend = iam_backends[parts[4]][parts[1]]
        if kind == "role":
            entity: Any = backend.get_role_by_arn(arn)
        elif kind == "user":
            entity = backend.get_user(rest.rsplit("/", 1)[-1])
        else:
            return False
    except Exception:  # unknown principal: not this behaviour's business
        return False
    created = entity.create_date
    now = utcnow() if created.tzinfo is None else datetime.now(UTC)
    return (now - created).total_seconds() < delay_s


def _policy_principals(document: str | None) -> list[str]:
    try:
        statements = json.loads(document or "{}").get("Statement") or []
    except (ValueError, AttributeError):
        return []
    found = []
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal") if isinstance(statement, dict) else None
        aws = principal.get("AWS") if isinstance(principal, dict) else None
        found.extend(aws if isinstance(aws, list) else [aws] if aws else [])
    return [arn for arn in found if arn != "*"]


def delay_iam_propagation(delay_s: float) -> None:
    """A role or user younger than ``delay_s`` is unknown to OpenSearch Service (a domain access
    policy naming it is refused with InvalidTypeException) and to Lambda (CreateFunction says the
    role cannot be assumed), as on AWS while IAM propagates."""
    from moto.awslambda.exceptions import InvalidParameterValueException
    from moto.awslambda.models import LambdaBackend
    from moto.core.exceptions import JsonRESTError
    from moto.opensearch.models import OpenSearchServiceBackend

    class InvalidTypeException(JsonRESTError):
        code = 409

    def refuse_young(policy: str | None) -> None:
        young = [arn for arn in _policy_principals(policy) if _young_principal(arn, delay_s)]
        if young:
            raise InvalidTypeException(
                "InvalidTypeException",
                f"Error setting policy: [{policy}] (principal {young[0]} is not valid yet)")

    create_domain = OpenSearchServiceBackend.create_domain
    update_domain_config = OpenSearchServiceBackend.update_domain_config
    create_function = LambdaBackend.create_function

    def checked_create_domain(self: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_young(kwargs.get("access_policies"))
        return create_domain(self, *args, **kwargs)

    def checked_update_domain_config(self: Any, *args: Any, **kwargs: Any) -> Any:
        refuse_young(kwargs.get("access_policies"))
        return update_domain_config(self, *args, **kwargs)

    def checked_create_function(self: Any, spec: dict[str, Any]) -> Any:
        if _young_principal(str(spec.get("Role", "")), delay_s):
            raise InvalidParameterValueException(
                "The role defined for the function cannot be assumed by Lambda.")
        return create_function(self, spec)

    OpenSearchServiceBackend.create_domain = checked_create_domain  # type: ignore[method-assign]
    OpenSearchServiceBackend.update_domain_config = (  # type: ignore[method-assign]
        checked_update_domain_config)
    LambdaBackend.create_function = checked_create_function  # type: ignore[method-assign]


def hash_domain_endpoints() -> None:
    """Domain endpoints carry a random part, new for every created domain
    (``search-<name>-<hash>.<region>.es.amazonaws.com``), as on AWS."""
    from moto.opensearch.models import OpenSearchServiceBackend

    original = OpenSearchServiceBackend.create_domain

    def create_domain(self: Any, *args: Any, **kwargs: Any) -> Any:
        domain = original(self, *args, **kwargs)
        alphabet = string.ascii_lowercase + string.digits
        hashed = "".join(secrets.choice(alphabet) for _ in range(26))
        host = f"search-{domain.domain_name}-{hashed}.{self.region_name}.es.amazonaws.com"
        if domain.endpoint is not None:
            domain.endpoint = host
        else:
            domain.endpoints = {"vpc": f"vpc-{host.removeprefix('search-')}"}
        return domain

    OpenSearchServiceBackend.create_domain = create_domain  # type: ignore[method-assign]


def limit_resharding(updating_s: float) -> None:
    """UpdateShardCount halves or doubles at most, on an ACTIVE stream only; it and
    UpdateStreamMode leave the stream UPDATING for ``updating_s``, as AWS does for minutes."""
    from moto.core.exceptions import JsonRESTError
    from moto.kinesis.exceptions import ResourceInUseError
    from moto.kinesis.models import KinesisBackend, Stream

    def get_status(self: Any) -> str:
        if self.__dict__.get("_hrnb_status") == "UPDATING" and (
                time.monotonic() >= self.__dict__.get("_hrnb_active_at", 0.0)):
            self.__dict__["_hrnb_status"] = "ACTIVE"
        return str(self.__dict__.get("_hrnb_status", "ACTIVE"))

    def set_status(self: Any, value: str) -> None:
        self.__dict__["_hrnb_status"] = value

    Stream.status = property(get_status, set_status)  # type: ignore[assignment]

    def updating(stream: Any) -> None:
        stream.status = "UPDATING"
        stream.__dict__["_hrnb_active_at"] = time.monotonic() + updating_s

    update_shard_count = KinesisBackend.update_shard_count
    update_stream_mode = KinesisBackend.update_stream_mode

    def limited_update_shard_count(self: Any, stream_arn: str | None, stream_name: str | None,
                                   target_shard_count: int) -> Any:
        stream = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name)
        if stream.status != "ACTIVE":
            raise ResourceInUseError(
                f"Stream {stream.stream_name} under account {self.account_id} not ACTIVE, "
                f"instead in state {stream.status}")
        current = len([shard for shard in stream.shards.values() if shard.is_open])
        if not current / 2 <= target_shard_count <= current * 2:
            raise JsonRESTError(
                "LimitExceededException",
                f"UpdateShardCount cannot scale {stream.stream_name} from {current} to "
                f"{target_shard_count} shards: at most double or half the current count per "
                "call")
        result = update_shard_count(self, stream_arn, stream_name,  # type: ignore[arg-type]
                                    target_shard_count)
        updating(stream)
        return result

    def updating_stream_mode(self: Any, stream_arn: str, stream_mode: dict[str, str]) -> None:
        update_stream_mode(self, stream_arn, stream_mode)
        updating(self._find_stream_by_arn(stream_arn))

    KinesisBackend.update_shard_count = limited_update_shard_count  # type: ignore[method-assign]
    KinesisBackend.update_stream_mode = updating_stream_mode  # type: ignore[method-assign]


def _auth_enforced() -> bool:
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin

    return bool(ActionAuthenticatorMixin.request_count
                >= moto_settings.INITIAL_NO_AUTH_ACTION_COUNT)


def hide_function_tags() -> None:
    """GetFunction carries ``Tags`` only when the caller may ``lambda:ListTags``, as on AWS.
    Without IAM enforcement the emulator cannot tell, so it assumes the caller may not: code
    must work either way, and the stricter answer is the one that finds the defects."""
    from moto.awslambda.responses import LambdaResponse
    from moto.core.exceptions import HTTPException
    from moto.iam.access_control import IAMRequest

    original = LambdaResponse.get_function

    def get_function(self: Any) -> str:
        answer = json.loads(original(self))
        if "Tags" not in answer:
            return json.dumps(answer)
        may_list = False
        if _auth_enforced():
            try:
                IAMRequest(account_id=self.current_account, method=self.method,
                           path=self.raw_path, data=self.data, body=self.raw_body,
                           headers=self.headers, action="ListTags").check_action_permitted(
                    answer["Configuration"]["FunctionArn"])
                may_list = True
            except HTTPException:
                may_list = False
        if not may_list:
            del answer["Tags"]
        return json.dumps(answer)

    LambdaResponse.get_function = get_function  # type: ignore[method-assign]


_CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/")


def expire_sessions() -> None:
    """Requests signed with STS session credentials (AssumeRole) past their expiration are
    refused with ExpiredToken(Exception), as AWS does; moto accepts them forever. Any
    DurationSeconds is honoured, so tests can use a short one."""
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import JsonRESTError, _RESTError
    from moto.core.utils import utcnow
    from moto.sts.models import sts_backends
    from moto.utilities.utils import get_partition

    class ExpiredTokenXml(_RESTError):  # the query protocol (STS, IAM)
        code = 400

    class ExpiredTokenJson(JsonRESTError):
        code = 400

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action

    def authenticate(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        found = _CREDENTIAL_RE.search(self.headers.get("Authorization") or "")
        if found:
            key, region, service = found.groups()
            try:
                backend = sts_backends[self.current_account][get_partition(region)]
                session = backend.get_assumed_role_from_access_key(key)
            except Exception:  # not a session key this emulator issued
                session = None
            if session is not None and session.expiration <= utcnow():
                message = "The security token included in the request is expired"
                if service in ("sts", "iam"):
                    raise ExpiredTokenXml("ExpiredToken", message)
                raise ExpiredTokenJson("ExpiredTokenException", message)
        original(self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = (  # type: ignore[method-assign]
        authenticate)


# --- IAM enforcement (moto's INITIAL_NO_AUTH_ACTION_COUNT) ---------------------------------------
def enforce_like_aws() -> None:
    """Two fixes to moto's IAM enforcement, which matter only once it is on.

    moto authorises most services' actions against the resource ``*`` because it does not work
    out the ARN; a statement scoped to an ARN (or narrowed by a condition moto cannot evaluate)
    would then refuse everything. Such statements are judged by their actions alone, the
    finest grain moto can check (IAM, STS and SQS requests still name their resource).
    And CreateFunction / UpdateFunctionConfiguration check ``iam:PassRole`` on the role, as
    AWS does (moto never asks). Lambda and OpenSearch Service signatures are not recomputed
    (moto gets them wrong)."""
    from moto.awslambda.responses import LambdaResponse
    from moto.iam.access_control import IAMPolicyStatement, IAMRequest

    judged = IAMPolicyStatement.is_action_permitted

    def is_action_permitted(self: Any, action: str, resource: str = "*",
                            principal: str | None = None,
                            incoming_condition_values: dict[str, str] | None = None) -> Any:
        statement = self._statement
        if resource == "*" and principal is None and "Resource" in statement:
            relaxed = {key: value for key, value in statement.items() if key != "Condition"}
            relaxed["Resource"] = "*"
            return judged(IAMPolicyStatement(relaxed), action, resource, principal,
                          incoming_condition_values)
        return judged(self, action, resource, principal, incoming_condition_values)

    IAMPolicyStatement.is_action_permitted = is_action_permitted  # type: ignore[method-assign]

    checked_signature = IAMRequest.check_signature

    def check_signature(self: Any) -> None:
        # moto recomputes the signatures of REST services (Lambda, OpenSearch Service) wrongly
        # in server mode: every one mismatches. The key is still checked, the action
        # authorised.
        if self._service not in ("es", "lambda"):
            checked_signature(self)

    IAMRequest.check_signature = check_signature  # type: ignore[method-assign]

    def check_pass_role(response: Any) -> None:
        if not _auth_enforced():
            return
        try:
            role = json.loads(response.body or "{}").get("Role")
        except ValueError:
            return
        if not role:
            return
        request = IAMRequest(account_id=response.current_account, method=response.method,
                             path=response.raw_path, data=response.data,
                             body=response.raw_body, headers=response.headers,
                             action="PassRole")
        request._action = "iam:PassRole"
        request.check_action_permitted(role)

    for name in ("create_function", "update_function_configuration"):
        original = getattr(LambdaResponse, name)

        def checked(self: Any, _original: Any = original) -> Any:
            check_pass_role(self)
            return _original(self)

        setattr(LambdaResponse, name, checked)


def main(argv: Sequence[str] | None = None) -> None:
    """moto's server command line (``-H HOST -p PORT``), with the fixes applied first; with
    ``--front-port``, also the local domain endpoint (:mod:`hrnb.local.front`), which reads the
    emulator's credentials in this process."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--front-port", type=int)
    parser.add_argument("--node-url")
    parser.add_argument("--tls-dir", type=Path)
    parser.add_argument("--region")
    ours, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    honour_disabled_mappings()
    keep_deployed_code(Settings.from_env().cache_dir)
    Strictness.from_env().apply()
    enforce_like_aws()
    if ours.front_port:
        from hrnb.local.front import Front
        from hrnb.local.tls import LocalTls

        Front(port=ours.front_port, node_url=ours.node_url, tls=LocalTls(ours.tls_dir),
              region=ours.region).start()
    from moto.server import main as moto_main

    moto_main(rest)


if __name__ == "__main__":
    main()
