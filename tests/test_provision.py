"""Provisioning: pure builders, then set-up / again / drift / teardown against the local stack
(moto server for the control plane, the real OpenSearch node for templates and indices)."""

from __future__ import annotations

import io
import json
import logging
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from support.private_emulator import private_emulator

from hrnb import provision
from hrnb.config import Settings
from hrnb.errors import ConfigError, ProvisionError
from hrnb.local.code_store import code_store
from hrnb.provision import policies
from hrnb.provision import state as provision_state

ACCOUNT = "123456789012"


# --- helpers -------------------------------------------------------------------------------------
def write_zip(path: Path, entries: dict[str, str]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def artifacts(tmp_path: Path) -> provision.LambdaArtifacts:
    """A tiny valid function zip (set-up does not look inside)."""
    return provision.LambdaArtifacts(
        function_zip=write_zip(tmp_path / "function.zip",
                               {"handler.py": "def lambda_handler(event, context):\n"
                                              "    return {'batchItemFailures': []}\n"}),
    )


@pytest.fixture
def mine(settings: Settings, unique_name: Callable[[str], str],
         tmp_path: Path) -> Iterator[Settings]:
    """Settings with names no other test uses, a private state directory, and a teardown that
    runs whatever the test did."""
    prefix = unique_name("pv")
    own = settings.with_overrides(prefix=prefix, index_name=f"{prefix}-hr",
                                  dlq_index_name=f"{prefix}-hr-dlq", state_dir=tmp_path / "state")
    yield own
    for name in (own.stream_name,):  # a clash test may leave a foreign stream behind
        client = boto3.client("kinesis", **_boto_kwargs(own))
        try:
            client.delete_stream(StreamName=name)
        except client.exceptions.ResourceNotFoundException:
            pass
    provision.teardown(own, wait=False)


def _boto_kwargs(settings: Settings) -> dict[str, Any]:
    from hrnb.config import LOCAL_ACCESS_KEY_ID, LOCAL_SECRET_ACCESS_KEY

    return {"endpoint_url": settings.resolved_aws_endpoint_url, "region_name": settings.region,
            "aws_access_key_id": LOCAL_ACCESS_KEY_ID,
            "aws_secret_access_key": LOCAL_SECRET_ACCESS_KEY}


def by_step(results: tuple[provision.StepResult, ...]) -> dict[str, list[str]]:
    actions: dict[str, list[str]] = {}
    for result in results:
        actions.setdefault(result.step, []).append(result.action)
    return actions


# --- pure ----------------------------------------------------------------------------------------
def test_role_policy_for_settings_names_only_this_prefixes_resources() -> None:
    settings = Settings(prefix="alpha", region="ap-south-1")
    arns = provision.Arns.of(settings, ACCOUNT)
    allowed = {
        f"arn:aws:kinesis:ap-south-1:{ACCOUNT}:stream/alpha-hr-stream",
        f"arn:aws:logs:ap-south-1:{ACCOUNT}:log-group:/aws/lambda/alpha-indexer:*",
        f"arn:aws:es:ap-south-1:{ACCOUNT}:domain/alpha-hr/alpha-heart-rate*",
        f"arn:aws:sqs:ap-south-1:{ACCOUNT}:alpha-indexer-failed",
        f"arn:aws:es:ap-south-1:{ACCOUNT}:domain/alpha-hr/alpha-hr-alert-state*",
        f"arn:aws:sns:ap-south-1:{ACCOUNT}:alpha-hr-alerts",
    }
    document = provision.role_policy(settings, arns)
    assert policies.least_privilege_problems(document, allowed_resources=allowed) == []


def test_domain_request_is_the_reference_configuration() -> None:
    settings = Settings(prefix="alpha")
    master = provision.MasterUser("admin", provision.generate_master_password())
    request = provision.domain_request(settings, provision.Arns.of(settings, ACCOUNT), master)
    assert request["EngineVersion"].startswith("OpenSearch_2.")
    assert request["ClusterConfig"]["InstanceType"] == "t3.small.search"
    assert request["ClusterConfig"]["InstanceCount"] == 1
    assert request["EBSOptions"] == {"EBSEnabled": True, "VolumeType": "gp3", "VolumeSize": 10,
                                     "Iops": 3000, "Throughput": 125}
    assert request["DomainEndpointOptions"] == {"EnforceHTTPS": True,
                                                "TLSSecurityPolicy": "Policy-Min-TLS-1-2-2019-07"}
    assert request["EncryptionAtRestOptions"] == {"Enabled": True}
    assert request["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    security = request["AdvancedSecurityOptions"]
    assert security["Enabled"] and security["InternalUserDatabaseEnabled"]
    assert security["MasterUserOptions"]["MasterUserPassword"] == master.password
    statement = json.loads(request["AccessPolicies"])["Statement"][0]
    assert statement["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:role/alpha-indexer-role"}


def test_domain_drift_names_only_what_differs() -> None:
    settings = Settings(prefix="alpha")
    desired = provision.domain_request(settings, provision.Arns.of(settings, ACCOUNT), None)
    current = {key: value for key, value in desired.items() if key != "TagList"}
    current["ClusterConfig"] = {**desired["ClusterConfig"], "WarmEnabled": False}  # extra key
    assert provision.domain_drift(current, desired) == {}
    current["EBSOptions"] = {**desired["EBSOptions"], "VolumeSize": 20}
    current["DomainEndpointOptions"] = {"EnforceHTTPS": False}
    assert set(provision.domain_drift(current, desired)) == {"EBSOptions",
                                                             "DomainEndpointOptions"}


def test_master_password_meets_the_rules_and_never_shows_in_a_repr() -> None:
    passwords = {provision.generate_master_password() for _ in range(50)}
    assert len(passwords) == 50
    for password in passwords:
        assert len(password) == 32
        assert any(c.islower() for c in password) and any(c.isupper() for c in password)
        assert any(c.isdigit() for c in password) and any(not c.isalnum() for c in password)
    user = provision.MasterUser("admin", next(iter(passwords)))
    assert user.password not in repr(user)


@pytest.mark.parametrize(
    ("change", "setting"),
    [({"batch_size": 0}, "batch_size"), ({"max_retry_attempts": -1}, "max_retry_attempts"),
     ({"max_record_age_s": -1}, "max_record_age_s"),
     ({"batching_window_s": 301}, "batching_window_s")],
)
def test_event_source_options_must_be_bounded(change: dict[str, int], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        provision.EventSourceOptions(**change)
    assert caught.value.setting == setting


def test_default_trigger_matches_the_reference() -> None:
    desired = provision.EventSourceOptions().desired(enabled=True, on_failure="arn:queue")
    assert desired["DestinationConfig"] == {"OnFailure": {"Destination": "arn:queue"}}
    assert desired["BatchSize"] == 2
    assert desired["MaximumBatchingWindowInSeconds"] == 0
    assert desired["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert desired["BisectBatchOnFunctionError"] is True
    assert 0 <= desired["MaximumRetryAttempts"] <= 100
    assert 60 <= desired["MaximumRecordAgeInSeconds"] <= 24 * 3600
    assert provision.EventSourceOptions().starting_position == "TRIM_HORIZON"


def test_template_comparison_sees_through_string_settings() -> None:
    from hrnb.wire.index_schema import index_template

    desired = index_template("heart_rate")
    stored = {**desired, "template": {**desired["template"], "settings": {
        "index": {"number_of_shards": "1", "number_of_replicas": "0"}}}}
    assert provision.template_matches(stored, desired)
    stored["template"]["settings"]["index"]["number_of_replicas"] = "1"
    assert not provision.template_matches(stored, desired)


def test_dashboards_objects_hold_the_reference_chart() -> None:
    settings = Settings(index_name="hr-live", hr_alert_threshold_bpm=160)
    objects = {obj["type"]: obj for obj in provision.dashboards_objects(settings)}
    assert set(objects) == {"index-pattern", "visualization", "dashboard"}
    pattern = objects["index-pattern"]
    assert pattern["attributes"] == {"title": "hr-live*", "timeFieldName": "timestamp"}
    visualization = objects["visualization"]
    state = json.loads(visualization["attributes"]["visState"])
    assert state["type"] == "line"
    metric, buckets = state["aggs"]
    assert metric["type"] == "top_hits"
    assert {key: metric["params"][key] for key in ("field", "size", "sortField", "sortOrder")} \
        == {"field": "heart_rate", "size": 1, "sortField": "timestamp", "sortOrder": "desc"}
    assert buckets["type"] == "date_histogram"
    assert buckets["params"]["field"] == "timestamp" and buckets["params"]["interval"] == "5s"
    assert state["params"]["thresholdLine"]["show"] is True
    assert state["params"]["thresholdLine"]["value"] == 160
    assert visualization["references"][0]["id"] == pattern["id"]
    dashboard = objects["dashboard"]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    (reference,) = dashboard["references"]
    assert reference == {"name": panels[0]["panelRefName"], "type": "visualization",
                         "id": visualization["id"]}


def test_shipped_dashboards_file_is_the_150_bpm_default() -> None:
    lines = (Path(provision.__file__).parent / "data" / "dashboards.ndjson").read_text()
    objects = [json.loads(line) for line in lines.splitlines()]
    vis = next(obj for obj in objects if obj["type"] == "visualization")
    assert json.loads(vis["attributes"]["visState"])["params"]["thresholdLine"]["value"] == 150
    assert next(o for o in objects if o["type"] == "index-pattern")["attributes"]["title"] == \
        "heart_rate*"


def test_cost_estimate_adds_up_and_names_its_source() -> None:
    prices = provision.load_prices()
    assert prices["source"] and prices["as_of"]
    estimate = provision.estimate_cost(Settings(region="us-east-1"), prices,
                                       streaming_hours_per_month=10)
    table = prices["regions"]["us-east-1"]
    instance = next(line for line in estimate.lines if "t3.small.search" in line.item)
    assert instance.hourly_usd == pytest.approx(table["opensearch_instance_hour"]
                                                ["t3.small.search"])
    assert instance.monthly_usd == pytest.approx(instance.hourly_usd * 730)
    assert estimate.monthly_usd == pytest.approx(
        estimate.idle_hourly_usd * 730 + estimate.streaming_hourly_usd * 10)
    assert "priced at" not in estimate.assumptions
    fallback = provision.estimate_cost(Settings(region="ap-south-1"), prices)
    assert fallback.priced_region == "us-east-1"
    assert "no prices for ap-south-1" in fallback.assumptions


def test_provisioned_shards_cost_less_idle_than_on_demand() -> None:
    on_demand = provision.estimate_cost(Settings(stream_shards=0))
    one_shard = provision.estimate_cost(Settings(stream_shards=1))
    two_shards = provision.estimate_cost(Settings(stream_shards=2))
    assert one_shard.idle_hourly_usd < on_demand.idle_hourly_usd
    assert two_shards.idle_hourly_usd > one_shard.idle_hourly_usd


def test_artifacts_from_a_build_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({
        "runtime": "python3.12", "handler": "handler.lambda_handler",
        "function": {"file": "function.zip"},
    }))
    found = provision.LambdaArtifacts.from_build_dir(tmp_path, "arm64")
    assert (found.function_zip, found.architecture) == (tmp_path / "function.zip", "arm64")
    with pytest.raises(ProvisionError, match="build the Lambda first"):
        provision.LambdaArtifacts.from_build_dir(tmp_path / "missing")
    with pytest.raises(ProvisionError, match="read the function zip"):
        found.read()
    (tmp_path / "manifest.json").write_text(json.dumps({"layers": {}}))
    with pytest.raises(ProvisionError, match="not a build manifest"):
        provision.LambdaArtifacts.from_build_dir(tmp_path)


# --- on the local stack --------------------------------------------------------------------------
@pytest.mark.stack
def test_plan_changes_nothing(mine: Settings, artifacts: provision.LambdaArtifacts) -> None:
    result = provision.plan(mine, artifacts)
    assert result.billable is False
    assert {step.action for step in result.steps} <= {"created", "skipped"}
    assert [step.step for step in result.changes][:4] == ["stream", "role", "log group",
                                                          "domain"]
    assert result.cost.monthly_usd > 0
    assert provision.remaining_resources(mine) == ()
    assert provision.master_user_path(mine).exists() is mine.local_security  # the stack's


@pytest.mark.stack
def test_setup_from_nothing_builds_the_reference(
    mine: Settings, artifacts: provision.LambdaArtifacts, opensearch: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages: list[str] = []
    caplog.set_level(logging.DEBUG)
    report = provision.setup(mine, artifacts, progress=messages.append,
                             dashboards="http://127.0.0.1:9")
    shown = "\n".join(messages) + repr(report) + caplog.text
    caplog.set_level(logging.WARNING)  # the checks below log the emulator's echo themselves
    actions = by_step(report.results)
    assert actions == {
        "stream": ["created"], "role": ["created"], "log group": ["created"],
        "domain": ["created"], "failure queue": ["created"],
        "role mapping": ["created" if mine.local_security else "skipped"],
        "index template": ["created", "created"], "index": ["created", "created"],
        "function": ["created"], "trigger": ["created"],
        "dashboards": ["skipped"], "alert state index": ["created"], "alert topic": ["created"],
        "alert log queue": ["created"], "alert subscription": ["created"],
    }
    skipped = {r.step: r.detail for r in report.results if r.action == "skipped"}
    assert mine.local_security or "security plugin" in skipped["role mapping"]
    assert "not reachable" in skipped["dashboards"]
    assert report.opensearch_url == mine.resolved_opensearch_url

    kw = _boto_kwargs(mine)
    stream = boto3.client("kinesis", **kw).describe_stream_summary(
        StreamName=mine.stream_name)["StreamDescriptionSummary"]
    assert stream["StreamModeDetails"]["StreamMode"] == "ON_DEMAND"
    assert stream["RetentionPeriodHours"] == 24

    iam = boto3.client("iam", **kw)
    deployed = iam.get_role_policy(RoleName=mine.role_name,
                                   PolicyName=provision.inline_policy_name(mine))["PolicyDocument"]
    allowed = {stream["StreamARN"],
               f"arn:aws:logs:{mine.region}:{ACCOUNT}:log-group:{mine.log_group_name}:*",
               f"arn:aws:es:{mine.region}:{ACCOUNT}:domain/{mine.domain_name}/{mine.index_name}*",
               f"arn:aws:sqs:{mine.region}:{ACCOUNT}:{mine.failure_queue_name}",
               f"arn:aws:sns:{mine.region}:{ACCOUNT}:{mine.alert_topic_name}"}
    assert policies.least_privilege_problems(deployed, allowed_resources=allowed) == []
    sns = boto3.client("sns", **kw)
    topic = f"arn:aws:sns:{mine.region}:{ACCOUNT}:{mine.alert_topic_name}"
    assert {"Key": provision.OWNER_TAG, "Value": mine.prefix} in sns.list_tags_for_resource(
        ResourceArn=topic)["Tags"]
    (subscription,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert (subscription["Protocol"], subscription["Endpoint"]) == (
        "sqs", f"arn:aws:sqs:{mine.region}:{ACCOUNT}:{mine.alert_log_queue_name}")
    assert iam.list_attached_role_policies(RoleName=mine.role_name)["AttachedPolicies"] == []

    domain = boto3.client("opensearch", **kw).describe_domain(
        DomainName=mine.domain_name)["DomainStatus"]
    assert domain["EngineVersion"].startswith("OpenSearch_2.")
    assert domain["ClusterConfig"]["InstanceType"] == "t3.small.search"
    assert domain["EBSOptions"]["VolumeType"] == "gp3"
    assert domain["EncryptionAtRestOptions"]["Enabled"]
    assert domain["NodeToNodeEncryptionOptions"]["Enabled"]
    assert domain["DomainEndpointOptions"]["TLSSecurityPolicy"] == "Policy-Min-TLS-1-2-2019-07"
    assert domain["AdvancedSecurityOptions"]["Enabled"]

    lam = boto3.client("lambda", **kw)
    function = lam.get_function(FunctionName=mine.function_name)["Configuration"]
    assert function["Runtime"] == "python3.12"
    assert (function["MemorySize"], function["Timeout"]) == (256, 30)
    assert function["Environment"]["Variables"] == {
        "OPENSEARCH_ENDPOINT": mine.resolved_opensearch_url, "INDEX_NAME": mine.index_name,
        "DLQ_INDEX_NAME": mine.dlq_index_name, "HR_ALERT_THRESHOLD": "150",
        "HR_ALERT_THRESHOLDS": "", "HR_ALERT_SUSTAIN_S": "5", "HR_ALERT_REARM_S": "10",
        "HR_ALERT_REARM_MARGIN_BPM": "5", "ALERT_STATE_INDEX": f"{mine.prefix}-hr-alert-state",
        "ALERT_TOPIC_ARN": f"arn:aws:sns:ap-south-1:123456789012:{mine.prefix}-hr-alerts",
        "SNS_ENDPOINT": mine.resolved_aws_endpoint_url}
    assert function.get("Layers", []) == []  # the handler is standard library only
    (mapping,) = lam.list_event_source_mappings(FunctionName=mine.function_name)[
        "EventSourceMappings"]
    assert mapping["State"] == "Disabled"  # the local poller runs it
    assert mapping["BatchSize"] == 2 and mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == (
        f"arn:aws:sqs:{mine.region}:{ACCOUNT}:{mine.failure_queue_name}")

    for alias in (mine.index_name, mine.dlq_index_name):  # write aliases over the indices
        (index,) = opensearch.indices.get_settings(index=alias)
        assert index == f"{alias}-000001"
        (index_settings,) = opensearch.indices.get_settings(index=alias).values()
        assert index_settings["settings"]["index"]["number_of_replicas"] == "0"
        (index_mapping,) = opensearch.indices.get_mapping(index=alias).values()
        assert index_mapping["mappings"]["_meta"] == {"owner": mine.prefix}
    (index_mapping,) = opensearch.indices.get_mapping(index=mine.index_name).values()
    mapping_props = index_mapping["mappings"]["properties"]
    assert mapping_props["timestamp"]["type"] == "date"
    assert mapping_props["heart_rate"]["type"] == "integer"
    assert mapping_props["alert"]["type"] == "boolean"

    digest = __import__("hashlib").sha256(artifacts.function_zip.read_bytes()).hexdigest()
    assert (code_store(mine.cache_dir) / f"{digest}.zip").exists()  # kept by the emulator

    secret_file = provision.master_user_path(mine)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    password = json.loads(secret_file.read_text())["password"]
    assert "Making request for" in shown  # botocore's request log was on ...
    assert password not in shown  # ... and still never carried the password


@pytest.mark.stack
def test_setup_again_changes_nothing(mine: Settings,
                                     artifacts: provision.LambdaArtifacts) -> None:
    provision.setup(mine, artifacts)
    again = provision.setup(mine, artifacts)
    assert not again.changed
    assert {r.action for r in again.results} == {"unchanged", "skipped"}
    assert {r.step for r in again.results if r.action == "skipped"} == (
        {"dashboards"} if mine.local_security else {"role mapping", "dashboards"})
    planned = provision.plan(mine, artifacts)
    assert planned.changes == ()


@pytest.mark.stack
def test_drift_is_repaired(mine: Settings, artifacts: provision.LambdaArtifacts,
                           opensearch: Any) -> None:
    first = provision.setup(mine, artifacts)
    mapping_uuid = next(r.id for r in first.results if r.step == "trigger")
    kw = _boto_kwargs(mine)
    lam = boto3.client("lambda", **kw)
    lam.update_event_source_mapping(UUID=mapping_uuid, BatchSize=10, Enabled=True)
    lam.update_function_configuration(FunctionName=mine.function_name, MemorySize=1024)
    iam = boto3.client("iam", **kw)
    iam.put_role_policy(RoleName=mine.role_name, PolicyName="too-much", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    boto3.client("logs", **kw).put_retention_policy(logGroupName=mine.log_group_name,
                                                    retentionInDays=3653)
    opensearch.indices.put_settings(index=mine.index_name,
                                    body={"index": {"number_of_replicas": 1}})
    boto3.client("opensearch", **kw).update_domain_config(
        DomainName=mine.domain_name, AccessPolicies=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                     "Action": "es:*", "Resource": "*"}]}))

    planned = provision.plan(mine, artifacts)
    assert {step.step for step in planned.changes} == {"trigger", "function", "role",
                                                       "log group", "index", "domain"}
    assert lam.get_event_source_mapping(UUID=mapping_uuid)["BatchSize"] == 10  # plan: no change

    repaired = provision.setup(mine, artifacts)
    changed = {r.step: r.detail for r in repaired.results if r.action == "updated"}
    assert set(changed) == {"trigger", "function", "role", "log group", "index", "domain"}
    assert "BatchSize" in changed["trigger"] and "Enabled" in changed["trigger"]
    assert "too-much" in changed["role"]
    assert "AccessPolicies" in changed["domain"]
    mapping = lam.get_event_source_mapping(UUID=mapping_uuid)
    assert mapping["BatchSize"] == 2 and mapping["State"] == "Disabled"
    assert lam.get_function(FunctionName=mine.function_name)["Configuration"]["MemorySize"] == 256
    assert iam.list_role_policies(RoleName=mine.role_name)["PolicyNames"] == [
        provision.inline_policy_name(mine)]
    (index_settings,) = opensearch.indices.get_settings(index=mine.index_name).values()
    assert index_settings["settings"]["index"]["number_of_replicas"] == "0"
    assert not provision.setup(mine, artifacts).changed


@pytest.mark.stack
def test_new_code_is_deployed_and_an_earlier_hrnbs_layer_detached_and_deleted(
        mine: Settings, artifacts: provision.LambdaArtifacts, tmp_path: Path) -> None:
    provision.setup(mine, artifacts)
    # A deployment by an earlier hrnb: its function ran with a dependency layer, two versions.
    lam = boto3.client("lambda", **_boto_kwargs(mine))
    layer_zip = write_zip(tmp_path / "layer.zip", {"python/hrnb_dep.py": "VALUE = 1\n"})
    for _ in range(2):
        old_layer = lam.publish_layer_version(LayerName=mine.layer_name,
                                              Content={"ZipFile": layer_zip.read_bytes()})
    lam.update_function_configuration(FunctionName=mine.function_name,
                                      Layers=[old_layer["LayerVersionArn"]])
    lam.get_waiter("function_updated_v2").wait(FunctionName=mine.function_name,
                                                WaiterConfig={"Delay": 0.2})
    newer = provision.LambdaArtifacts(
        function_zip=write_zip(tmp_path / "function-2.zip",
                               {"handler.py": "def lambda_handler(event, context):\n"
                                              "    return {'batchItemFailures': [], 'v': 2}\n"}),
    )
    planned = {r.step: r for r in provision.plan(mine, newer).steps}
    assert planned["layer"].action == "deleted"
    assert len(lam.list_layer_versions(LayerName=mine.layer_name)["LayerVersions"]) == 2

    report = provision.setup(mine, newer)

    results = {r.step: r for r in report.results}
    assert results["function"].action == "updated"
    assert "code" in results["function"].detail and "Layers" in results["function"].detail
    assert (results["layer"].action, results["layer"].detail) == ("deleted", "2 version(s)")
    function = lam.get_function(FunctionName=mine.function_name)["Configuration"]
    assert function["CodeSha256"] == provision.code_sha256(newer.function_zip.read_bytes())
    assert function.get("Layers", []) == []
    assert lam.list_layer_versions(LayerName=mine.layer_name)["LayerVersions"] == []
    third = provision.setup(mine, newer)
    assert not third.changed and "layer" not in {r.step for r in third.results}


@pytest.mark.stack
def test_teardown_leaves_nothing(mine: Settings, artifacts: provision.LambdaArtifacts,
                                 opensearch: Any) -> None:
    provision.setup(mine, artifacts)
    preview = provision.teardown_plan(mine)
    assert {r.action for r in preview} == {"deleted"}
    assert provision.remaining_resources(mine) != ()  # the preview deleted nothing

    report = provision.teardown(mine)
    assert report.nothing_billable_remains and report.remaining == ()
    order = [r.step for r in report.results]
    assert order.index("trigger") < order.index("function") < order.index("role")
    assert order.index("index") < order.index("domain")
    kw = _boto_kwargs(mine)
    with pytest.raises(boto3.client("kinesis", **kw).exceptions.ResourceNotFoundException):
        boto3.client("kinesis", **kw).describe_stream_summary(StreamName=mine.stream_name)
    assert boto3.client("lambda", **kw).list_layer_versions(
        LayerName=mine.layer_name)["LayerVersions"] == []
    assert not opensearch.indices.exists(index=mine.index_name)
    assert not opensearch.indices.exists_index_template(
        name=provision.template_name(mine.index_name))
    # The local node's master user belongs to the stack and outlives a teardown.
    assert provision.master_user_path(mine).exists()
    again = provision.teardown(mine)
    assert {r.action for r in again.results} == {"absent"}


@pytest.mark.stack
def test_interrupted_domain_wait_resumes(mine: Settings) -> None:
    def interrupt(message: str) -> None:
        if "waiting" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        provision.ensure_domain(mine, progress=interrupt)
    state_file = mine.state_dir / f"provision-local-{mine.prefix}.json"
    assert json.loads(state_file.read_text())["domain_pending"] == "creation"
    planned = next(step for step in provision.plan(mine).steps if step.step == "domain")
    assert planned.action == "created" and "unfinished" in planned.detail

    resumed = provision.ensure_domain(mine)  # a new kernel: nothing in memory but the file
    assert resumed.action == "created" and "resumed the wait for the creation" in resumed.detail
    assert json.loads(state_file.read_text())["domain_pending"] is None
    assert provision.ensure_domain(mine).action == "unchanged"


@pytest.mark.stack
def test_name_clash_is_an_error_naming_the_resource(
    mine: Settings, artifacts: provision.LambdaArtifacts,
) -> None:
    kinesis = boto3.client("kinesis", **_boto_kwargs(mine))
    kinesis.create_stream(StreamName=mine.stream_name, ShardCount=1)  # someone else's
    with pytest.raises(ProvisionError) as caught:
        provision.setup(mine, artifacts)
    assert caught.value.resource == mine.stream_name
    assert "did not create it" in str(caught.value) and "HRNB_PREFIX" in str(caught.value)
    with pytest.raises(ProvisionError, match=mine.stream_name):
        provision.plan(mine, artifacts)

    report = provision.teardown(mine, wait=False)
    stream_step = next(r for r in report.results if r.step == "stream")
    assert stream_step.action == "skipped"  # never deletes what it did not create
    # ... nor counts it as left over: it is not this prefix's (issue #12 item 1)
    assert not any(mine.stream_name in item for item in report.remaining)
    assert kinesis.describe_stream_summary(StreamName=mine.stream_name)


@pytest.mark.stack
def test_role_name_clash(mine: Settings) -> None:
    iam = boto3.client("iam", **_boto_kwargs(mine))
    iam.create_role(RoleName=mine.role_name,
                    AssumeRolePolicyDocument=json.dumps(policies.lambda_trust_policy()))
    try:
        with pytest.raises(ProvisionError) as caught:
            provision.ensure_role(mine)
        assert caught.value.resource == mine.role_name
    finally:
        iam.delete_role(RoleName=mine.role_name)


@pytest.mark.stack
def test_unknown_region_is_refused(mine: Settings, artifacts: provision.LambdaArtifacts) -> None:
    nowhere = mine.with_overrides(region="xx-nowhere-1")
    with pytest.raises(ProvisionError) as caught:
        provision.setup(nowhere, artifacts)
    assert caught.value.resource == "region xx-nowhere-1"
    assert provision.remaining_resources(mine) == ()


@pytest.mark.stack
def test_region_other_than_the_set_up_one_is_refused(
    mine: Settings, artifacts: provision.LambdaArtifacts,
) -> None:
    provision.ensure_stream(mine)
    provision_state.StateFile(mine).update(region=mine.region)
    elsewhere = mine.with_overrides(region="eu-west-1")
    with pytest.raises(ProvisionError, match=f"set up in region {mine.region}") as caught:
        provision.teardown(elsewhere)
    assert caught.value.resource == "region eu-west-1"


@pytest.fixture(scope="module")
def strict_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second emulator that enforces IAM, so a missing permission is refused for real."""
    with private_emulator(tmp_path_factory.mktemp("strict-cache"),
                          {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}) as url:
        yield url


@pytest.mark.stack
def test_missing_permission_names_resource_and_action(
    strict_emulator: str, mine: Settings, artifacts: provision.LambdaArtifacts,
) -> None:
    strict = mine.with_overrides(aws_endpoint_url=strict_emulator)
    admin = boto3.client("iam", endpoint_url=strict_emulator, region_name=mine.region,
                         aws_access_key_id="admin", aws_secret_access_key="admin")
    # The first three calls are free; after them the emulator checks every request.
    admin.create_user(UserName="viewer")
    key = admin.create_access_key(UserName="viewer")["AccessKey"]
    admin.put_user_policy(UserName="viewer", PolicyName="look-only", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Resource": "*",
                       "Action": ["sts:GetCallerIdentity", "kinesis:DescribeStreamSummary"]}]}))
    viewer = boto3.Session(aws_access_key_id=key["AccessKeyId"],
                           aws_secret_access_key=key["SecretAccessKey"], region_name=mine.region)
    clients = provision.AwsClients(strict, session=viewer)
    with pytest.raises(ProvisionError) as caught:
        provision.setup(strict, artifacts, clients=clients)
    assert caught.value.resource == strict.stream_name
    assert "permission missing (kinesis:CreateStream)" in str(caught.value)


@pytest.mark.stack
def test_teardown_asks_first_and_declining_keeps_everything(
    mine: Settings, artifacts: provision.LambdaArtifacts,
) -> None:
    provision.setup(mine, artifacts)
    shown: list[tuple[provision.StepResult, ...]] = []

    def decline(preview: tuple[provision.StepResult, ...]) -> bool:
        shown.append(preview)
        return False

    assert provision.confirmed_teardown(mine, decline) is None
    (preview,) = shown
    assert {step.resource for step in preview if step.action == "deleted"} >= {
        mine.stream_name, mine.role_name, mine.domain_name, mine.function_name}
    # all still there, with the alert topic, its log queue and the episode state index
    assert len(provision.remaining_resources(mine)) == 12

    report = provision.confirmed_teardown(mine, lambda preview: True)
    assert report is not None and report.nothing_billable_remains

    def must_not_ask(preview: tuple[provision.StepResult, ...]) -> bool:
        raise AssertionError("nothing to delete, nothing to ask")

    empty = provision.confirmed_teardown(mine, must_not_ask)
    assert empty is not None and {step.action for step in empty.results} == {"absent"}


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        ({"users": [], "backend_roles": ["arn"], "reserved": False, "hosts": []},
         {"users": [], "backend_roles": ["arn"], "hosts": []}, True),
        ({"index_permissions": [{"index_patterns": ["hr*"], "allowed_actions": ["write"],
                                 "fls": [], "masked_fields": []}]},
         {"index_permissions": [{"index_patterns": ["hr*"], "allowed_actions": ["write"]}]},
         True),
        ({"backend_roles": ["other"]}, {"backend_roles": ["arn"]}, False),
        ({"backend_roles": ["arn", "extra"]}, {"backend_roles": ["arn"]}, False),
        (None, {"backend_roles": ["arn"]}, False),
        ({"title": "hr*", "fields": "[...]"}, {"title": "hr*"}, True),
    ],
)
def test_covers_ignores_keys_the_service_adds(current: Any, desired: Any,
                                              expected: bool) -> None:
    assert provision.covers(current, desired) is expected


def test_master_user_file_is_private_and_tightened(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(prefix="alpha", state_dir=tmp_path / "state")
    assert provision.load_master_user(settings) is None
    created = provision_state._create_master_user(settings)
    path = provision.master_user_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert created.password not in caplog.text
    path.chmod(0o644)
    assert provision.load_master_user(settings) == created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "restricting it" in caplog.text
    path.write_text("not json")
    with pytest.raises(ProvisionError) as caught:
        provision.load_master_user(settings)
    assert caught.value.resource == str(path)
