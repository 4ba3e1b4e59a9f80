# ruff: noqa: F811 (the fixtures imported from test_provision are parameters here)
"""The AWS path without the defects the emulator used to hide (issue #13, reproductions 1-6),
each against the strict emulator (hrnb.local.emulator.Strictness)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.session import get_session
from support.private_emulator import private_emulator
from support.sigv4_gateway import KnownCredentials, SigV4Gateway
from test_provision import _boto_kwargs, artifacts, mine  # noqa: F401 (fixtures)

from hrnb import provision
from hrnb.clients import sigv4_auth
from hrnb.config import Settings
from hrnb.errors import ConfigError, ProvisionError
from hrnb.provision import base as provision_base
from hrnb.provision.state import StateFile
from hrnb.provision.stream import reshard_steps
from hrnb.search_client import opensearch_client

pytestmark = pytest.mark.stack


def _on_aws(local: Settings, **changes: Any) -> Settings:
    """The same prefix on target aws (whose control plane the test swaps for the emulator's
    clients), with a state directory of its own."""
    return Settings(target="aws", region=local.region, prefix=local.prefix,
                    index_name=local.index_name, dlq_index_name=local.dlq_index_name,
                    state_dir=local.state_dir / "aws", **changes)


def _endpoint(local: Settings) -> str:
    return str(boto3.client("opensearch", **_boto_kwargs(local)).describe_domain(
        DomainName=local.domain_name)["DomainStatus"]["Endpoint"])


# --- 1: CreateDomain right after CreateRole -------------------------------------------------------
@pytest.fixture(scope="module")
def slow_iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An emulator whose IAM takes 6 s to propagate: long enough that a role made by the step
    before is still young on a loaded machine, whatever delay the shared stack was given."""
    with private_emulator(tmp_path_factory.mktemp("slow-iam"),
                          {"HRNB_STRICT_IAM_PROPAGATION_S": "6"}) as url:
        yield url


def test_domain_right_after_a_new_role_waits_for_iam(mine: Settings, slow_iam: str) -> None:
    there = mine.with_overrides(aws_endpoint_url=slow_iam)
    messages: list[str] = []
    provision.ensure_role(there)
    result = provision.ensure_domain(there, progress=messages.append)
    assert result.action == "created"
    assert any("waiting for IAM to propagate" in message for message in messages)


def test_propagation_retries_are_bounded(mine: Settings, slow_iam: str) -> None:
    there = mine.with_overrides(aws_endpoint_url=slow_iam)
    provision.ensure_role(there)
    aws = provision.AwsClients(there)
    request = provision.domain_request(there, aws.arns, None)
    started = time.monotonic()
    with pytest.raises(ProvisionError, match="InvalidTypeException: Error setting policy"):
        provision_base._aws_retrying_propagation(
            there.domain_name, "create domain", aws.opensearch.create_domain,
            progress=lambda _message: None, timeout_s=1.0, **request)
    assert time.monotonic() - started < 3.0


# --- 2 and 5: the endpoint, from DescribeDomain ---------------------------------------------------
def test_clients_on_aws_find_the_endpoint_without_a_variable(mine: Settings) -> None:
    provision.ensure_domain(mine)
    aws_settings = _on_aws(mine)
    clients = provision.AwsClients(mine)
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s",
                            region_name=mine.region)
    client = opensearch_client(aws_settings, clients=clients, session=session)
    host = client.transport.hosts[0]["host"]
    assert host == _endpoint(mine)
    state = json.loads((aws_settings.state_dir /
                        f"provision-aws-{mine.prefix}.json").read_text())
    assert state["domain_endpoint"] == host


def test_the_cached_endpoint_serves_when_describe_domain_cannot_be_asked(
        mine: Settings, caplog: pytest.LogCaptureFixture) -> None:
    provision.ensure_domain(mine)
    aws_settings = _on_aws(mine)
    assert provision.data_plane_url(aws_settings, provision.AwsClients(mine)) == (
        f"https://{_endpoint(mine)}")
    nowhere = provision.AwsClients(mine.with_overrides(aws_endpoint_url="http://127.0.0.1:9"))
    nowhere.lambda_  # noqa: B018 (the clients exist; only their endpoint is dead)
    caplog.set_level(logging.WARNING)
    assert provision.data_plane_url(aws_settings, nowhere) == f"https://{_endpoint(mine)}"
    assert "cannot re-check the endpoint" in caplog.text


def test_no_domain_is_a_clear_error(mine: Settings) -> None:
    with pytest.raises(ConfigError, match="run 'hrnb setup'"):
        provision.data_plane_url(_on_aws(mine), provision.AwsClients(mine))


def test_a_re_created_domain_is_found_again_not_the_stale_url(mine: Settings) -> None:
    provision.ensure_domain(mine)
    first = _endpoint(mine)
    boto3.client("opensearch", **_boto_kwargs(mine)).delete_domain(DomainName=mine.domain_name)
    provision.ensure_domain(mine)
    second = _endpoint(mine)
    assert first != second
    stale = _on_aws(mine, opensearch_url=f"https://{first}")
    assert provision.opensearch_url(stale, provision.AwsClients(mine)) == f"https://{second}"
    fresh = _on_aws(mine)
    StateFile(fresh).update(domain_endpoint=first)  # cached before the domain was re-created
    assert provision.data_plane_url(fresh, provision.AwsClients(mine)) == f"https://{second}"


# --- 3: GetFunction without Tags ------------------------------------------------------------------
def test_set_up_again_and_teardown_when_get_function_carries_no_tags(
        mine: Settings, artifacts: provision.LambdaArtifacts) -> None:
    provision.setup(mine, artifacts)
    lam = boto3.client("lambda", **_boto_kwargs(mine))
    assert "Tags" not in lam.get_function(FunctionName=mine.function_name)
    again = provision.setup(mine, artifacts)
    assert next(r for r in again.results if r.step == "function").action == "unchanged"
    report = provision.teardown(mine, wait=False)
    assert next(r for r in report.results if r.step == "function").action == "deleted"
    assert report.nothing_billable_remains
    # A domain's master user file goes with it; the local node's belongs to the stack.
    assert provision.master_user_path(mine).exists() == mine.local_security


# --- 4: stepwise resharding -----------------------------------------------------------------------
@pytest.mark.parametrize(("current", "target", "steps"), [
    (4, 1, [2, 1]), (1, 5, [2, 4, 5]), (5, 2, [3, 2]), (3, 3, []), (10, 1, [5, 3, 2, 1])])
def test_reshard_steps_halve_or_double(current: int, target: int, steps: list[int]) -> None:
    assert reshard_steps(current, target) == steps


def test_one_shard_on_an_on_demand_stream_is_reached_stepwise(mine: Settings) -> None:
    provision.ensure_stream(mine)
    kinesis = boto3.client("kinesis", **_boto_kwargs(mine))
    summary = kinesis.describe_stream_summary(StreamName=mine.stream_name)
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 4
    result = provision.ensure_stream(mine.with_overrides(stream_shards=1))
    assert result.action == "updated"
    summary = kinesis.describe_stream_summary(StreamName=mine.stream_name)[
        "StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 1
    assert summary["StreamModeDetails"]["StreamMode"] == "PROVISIONED"


# --- 6: refreshable credentials -------------------------------------------------------------------
@pytest.fixture
def gateway(settings: Settings) -> Iterator[SigV4Gateway]:
    with SigV4Gateway(str(settings.resolved_opensearch_url), [],
                      region=settings.region) as proxy:
        yield proxy


def test_sigv4_clients_sign_with_renewed_session_credentials(
        settings: Settings, gateway: SigV4Gateway) -> None:
    """Short assumed-role sessions from the emulator's STS: each one the gateway accepts until
    it expires, as AWS does; a client must pick up the renewed one."""
    sts = boto3.client("sts", **_boto_kwargs(settings),
                       config=Config(parameter_validation=False))
    issued: list[str] = []

    def assume() -> dict[str, str]:
        credentials = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/reader",
                                      RoleSessionName="dashboard",
                                      DurationSeconds=2)["Credentials"]
        key = credentials["AccessKeyId"]
        gateway.known[key] = KnownCredentials(key, credentials["SecretAccessKey"],
                                              credentials["SessionToken"])
        issued.append(key)
        expiry = datetime.now(UTC) + timedelta(seconds=2)
        return {"access_key": key, "secret_key": credentials["SecretAccessKey"],
                "token": credentials["SessionToken"], "expiry_time": expiry.isoformat()}

    botocore_session = get_session()
    botocore_session._credentials = RefreshableCredentials.create_from_metadata(
        assume(), assume, "assume-role")
    auth = sigv4_auth(boto3.Session(botocore_session=botocore_session), settings.region)
    assert requests.get(f"{gateway.url}/", auth=auth, timeout=10,
                        verify=gateway.verify).status_code == 200
    time.sleep(2.5)  # the issued credentials expire: their expiry is the scenario
    for key in issued:  # expired: AWS refuses them from now on
        gateway.known.pop(key, None)
    response = requests.get(f"{gateway.url}/", auth=auth, timeout=10, verify=gateway.verify)
    assert response.status_code == 200, gateway.rejections()
    assert len(issued) >= 2


# --- prices ---------------------------------------------------------------------------------------
def test_arm64_lambda_is_priced_at_its_own_rate() -> None:
    prices = provision.load_prices()
    x86 = provision.estimate_cost(Settings(region="us-east-1"), prices)
    arm = provision.estimate_cost(Settings(region="us-east-1"), prices, architecture="arm64")

    def compute(estimate: provision.CostEstimate) -> float:
        return next(line.hourly_usd for line in estimate.lines if line.item.startswith("Lambda"))

    assert compute(arm) < compute(x86)
    assert "arm64" in next(line.basis for line in arm.lines if line.item.startswith("Lambda"))
    assert arm.idle_hourly_usd == x86.idle_hourly_usd
