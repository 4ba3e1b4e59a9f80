"""The emulator is as strict as AWS where hrnb's defects would hide (hrnb.local.emulator
Strictness), each behaviour checked over HTTP; and each can be switched off."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from support.private_emulator import private_emulator

from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY, Settings
from hrnb.errors import ConfigError
from hrnb.local.emulator import Strictness
from hrnb.provision import policies

pytestmark = pytest.mark.stack

ACCOUNT = "123456789012"
_ZIP = (b"PK\x05\x06" + b"\x00" * 18)  # an empty zip: enough for CreateFunction


def _client(url: str, service: str, **keys: str) -> Any:
    """A client of the emulator; parameters are not validated, so that a DurationSeconds
    below AWS's 900 reaches the emulator, which honours it."""
    return boto3.client(service, endpoint_url=url, region_name="ap-south-1",
                        aws_access_key_id=keys.get("key", LOCAL_ACCESS_KEY_ID),
                        aws_secret_access_key=keys.get("secret", LOCAL_SECRET_ACCESS_KEY),
                        aws_session_token=keys.get("token"),
                        config=Config(parameter_validation=False))


def _code(caught: pytest.ExceptionInfo[ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def _new_role(iam: Any, name: str) -> str:
    return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(
        policies.lambda_trust_policy()))["Role"]["Arn"])


def _domain_policy(name: str, principal: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": principal}, "Action": "es:ESHttpPost",
        "Resource": f"arn:aws:es:ap-south-1:{ACCOUNT}:domain/{name}/*"}]})


def _until_accepted(call: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # polling interval


@pytest.fixture
def url(settings: Settings) -> str:
    return str(settings.resolved_aws_endpoint_url)


def test_a_young_role_in_a_domain_policy_is_refused_until_iam_propagates(
        url: str, unique_name: Callable[[str], str]) -> None:
    iam, opensearch = _client(url, "iam"), _client(url, "opensearch")
    domain = unique_name("young")
    role = _new_role(iam, unique_name("young-role"))
    with pytest.raises(ClientError) as caught:
        opensearch.create_domain(DomainName=domain, AccessPolicies=_domain_policy(domain, role))
    assert _code(caught) == "InvalidTypeException"
    assert "Error setting policy" in str(caught.value)
    _until_accepted(lambda: opensearch.create_domain(
        DomainName=domain, AccessPolicies=_domain_policy(domain, role)))
    other = _new_role(iam, unique_name("young-role"))
    with pytest.raises(ClientError) as caught:
        opensearch.update_domain_config(DomainName=domain,
                                        AccessPolicies=_domain_policy(domain, other))
    assert _code(caught) == "InvalidTypeException"
    opensearch.delete_domain(DomainName=domain)


def test_a_young_role_cannot_be_assumed_by_lambda(url: str,
                                                  unique_name: Callable[[str], str]) -> None:
    iam, lambda_ = _client(url, "iam"), _client(url, "lambda")
    role = _new_role(iam, unique_name("fn-role"))
    name = unique_name("young-fn")

    def create() -> Any:
        return lambda_.create_function(FunctionName=name, Runtime="python3.12", Role=role,
                                       Handler="h.h", Code={"ZipFile": _ZIP})

    with pytest.raises(ClientError) as caught:
        create()
    assert _code(caught) == "InvalidParameterValueException"
    assert "cannot be assumed by Lambda" in str(caught.value)
    _until_accepted(create)
    lambda_.delete_function(FunctionName=name)


def test_domain_endpoints_carry_a_hash_that_changes_when_re_created(
        url: str, unique_name: Callable[[str], str]) -> None:
    opensearch = _client(url, "opensearch")
    name = unique_name("hashed")
    endpoints = []
    for _ in range(2):
        opensearch.create_domain(DomainName=name)
        endpoints.append(opensearch.describe_domain(DomainName=name)["DomainStatus"]["Endpoint"])
        opensearch.delete_domain(DomainName=name)
    for endpoint in endpoints:
        assert re.fullmatch(rf"search-{name}-[a-z0-9]{{26}}\.ap-south-1\.es\.amazonaws\.com",
                            endpoint)
    assert endpoints[0] != endpoints[1]


def test_update_shard_count_halves_or_doubles_and_needs_an_active_stream(
        url: str, unique_name: Callable[[str], str]) -> None:
    kinesis = _client(url, "kinesis")
    name = unique_name("reshard")
    kinesis.create_stream(StreamName=name, ShardCount=4)
    try:
        for target in (1, 9):
            with pytest.raises(ClientError) as caught:
                kinesis.update_shard_count(StreamName=name, TargetShardCount=target,
                                           ScalingType="UNIFORM_SCALING")
            assert _code(caught) == "LimitExceededException"
        kinesis.update_shard_count(StreamName=name, TargetShardCount=2,
                                   ScalingType="UNIFORM_SCALING")
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        assert summary["StreamStatus"] == "UPDATING"
        with pytest.raises(ClientError) as caught:
            kinesis.update_shard_count(StreamName=name, TargetShardCount=1,
                                       ScalingType="UNIFORM_SCALING")
        assert _code(caught) == "ResourceInUseException"
        kinesis.get_waiter("stream_exists").wait(StreamName=name,
                                                 WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        kinesis.update_shard_count(StreamName=name, TargetShardCount=1,
                                   ScalingType="UNIFORM_SCALING")
    finally:
        kinesis.delete_stream(StreamName=name)


def test_get_function_has_no_tags_without_enforcement_but_list_tags_has(
        url: str, unique_name: Callable[[str], str]) -> None:
    iam, lambda_ = _client(url, "iam"), _client(url, "lambda")
    role = _new_role(iam, unique_name("tags-role"))
    name = unique_name("tagged")
    created = _until_accepted(lambda: lambda_.create_function(
        FunctionName=name, Runtime="python3.12", Role=role, Handler="h.h",
        Code={"ZipFile": _ZIP}, Tags={"hrnb:prefix": "x"}))
    try:
        assert "Tags" not in lambda_.get_function(FunctionName=name)
        assert lambda_.list_tags(Resource=created["FunctionArn"])["Tags"] == {"hrnb:prefix": "x"}
    finally:
        lambda_.delete_function(FunctionName=name)


def test_requests_with_expired_session_credentials_are_refused(
        url: str, unique_name: Callable[[str], str]) -> None:
    sts = _client(url, "sts")
    role = f"arn:aws:iam::{ACCOUNT}:role/{unique_name('session')}"
    issued = sts.assume_role(RoleArn=role, RoleSessionName="short",
                             DurationSeconds=1)["Credentials"]
    keys = {"key": issued["AccessKeyId"], "secret": issued["SecretAccessKey"],
            "token": issued["SessionToken"]}
    kinesis = _client(url, "kinesis", **keys)
    kinesis.list_streams()
    time.sleep(1.2)  # the 1 s credentials expire: their expiry is the scenario
    with pytest.raises(ClientError) as caught:
        kinesis.list_streams()
    assert _code(caught) == "ExpiredTokenException"
    with pytest.raises(ClientError) as caught:
        _client(url, "sts", **keys).get_caller_identity()
    assert _code(caught) == "ExpiredToken"


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An emulator with every strict behaviour switched off, as docs/operations.md says."""
    off = {"HRNB_STRICT_IAM_PROPAGATION_S": "0", "HRNB_STRICT_DOMAIN_ENDPOINTS": "0",
           "HRNB_STRICT_RESHARDING": "0", "HRNB_STRICT_FUNCTION_TAGS": "0",
           "HRNB_STRICT_SESSION_EXPIRY": "0"}
    with private_emulator(tmp_path_factory.mktemp("lenient-cache"), off) as lenient_url:
        yield lenient_url


def test_each_strict_behaviour_can_be_switched_off(lenient: str) -> None:
    iam, lambda_ = _client(lenient, "iam"), _client(lenient, "lambda")
    opensearch, kinesis = _client(lenient, "opensearch"), _client(lenient, "kinesis")
    role = _new_role(iam, "lenient-role")
    opensearch.create_domain(DomainName="lenient", AccessPolicies=_domain_policy("lenient", role))
    endpoint = opensearch.describe_domain(DomainName="lenient")["DomainStatus"]["Endpoint"]
    assert endpoint == "lenient.ap-south-1.es.amazonaws.com"
    lambda_.create_function(FunctionName="lenient", Runtime="python3.12", Role=role,
                            Handler="h.h", Code={"ZipFile": _ZIP}, Tags={"k": "v"})
    assert lambda_.get_function(FunctionName="lenient")["Tags"] == {"k": "v"}
    kinesis.create_stream(StreamName="lenient", ShardCount=4)
    kinesis.update_shard_count(StreamName="lenient", TargetShardCount=1,
                               ScalingType="UNIFORM_SCALING")
    issued = _client(lenient, "sts").assume_role(RoleArn=role, RoleSessionName="s",
                                                 DurationSeconds=1)["Credentials"]
    time.sleep(1.2)  # the 1 s credentials expire: their expiry is the scenario
    _client(lenient, "kinesis", key=issued["AccessKeyId"], secret=issued["SecretAccessKey"],
            token=issued["SessionToken"]).list_streams()


@pytest.mark.parametrize(("variable", "value"), [("HRNB_STRICT_IAM_PROPAGATION_S", "soon"),
                                                 ("HRNB_STRICT_STREAM_UPDATING_S", "x")])
def test_a_bad_strictness_setting_is_named(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Strictness.from_env({variable: value})
    assert caught.value.setting == variable


def test_strictness_defaults_and_switches() -> None:
    assert Strictness.from_env({}) == Strictness()
    assert Strictness().iam_propagation_s == 5.0
    off = Strictness.from_env({"HRNB_STRICT_FUNCTION_TAGS": "0",
                               "HRNB_STRICT_SESSION_EXPIRY": "off"})
    assert not off.function_tags and not off.session_expiry and off.resharding


