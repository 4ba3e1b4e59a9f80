"""The local event source mapping, run as ``python -m hrnb.local.poller`` against the emulator.

A function is deployed to the emulator from the built zips (kept in the local code store, as
provisioning does), its stream gets a disabled mapping, and the poller process does the rest.
Faults are real: a proxy throttles bulk items, a bad configuration makes the function fail, the
poller is stopped and killed mid-stream.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lambda_helpers import Indices, encoded, good_record
from support import create_function, remove_role_mappings, wait_until
from support.sigv4_gateway import BulkThrottlingProxy

from hrnb.config import Settings
from hrnb.errors import StackError
from hrnb.local.code_store import store_local_code, unpacked_code
from hrnb.local.poller import status_lines
from hrnb.provision.security import ensure_role_mapping
from hrnb.provision.state import read_esm_status as read_status
from infra_scripts.build_lambda import BuildResult

pytestmark = pytest.mark.stack

#: Lambda's Kinesis event record, as documented (and as Powertools' data classes read it).
EVENT_RECORD_KEYS = {"kinesis", "eventSource", "eventVersion", "eventID", "eventName",
                     "invokeIdentityArn", "awsRegion", "eventSourceARN"}
EVENT_PAYLOAD_KEYS = {"kinesisSchemaVersion", "partitionKey", "sequenceNumber", "data",
                      "approximateArrivalTimestamp"}
EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


@dataclass
class Deployed:
    """A function, its role, stream and (disabled) mapping on the emulator."""

    settings: Settings  # state_dir is this test's own; prefix and indices name the role mapping
    name: str
    mapping_uuid: str
    role_arn: str
    indices: Indices

    def count(self, opensearch: Any, index: str | None = None) -> int:
        index = index or self.indices.name
        opensearch.indices.refresh(index=index, ignore_unavailable=True)
        if not opensearch.indices.exists(index=index):
            return 0
        # A count before the new index's primary shard is active answers 503. The server waits up
        # to its default 30 s (opensearch-py takes a `timeout` parameter as its own, in seconds).
        opensearch.cluster.health(index=index, wait_for_status="yellow", request_timeout=35)
        return int(opensearch.count(index=index)["count"])


@pytest.fixture
def deploy(
    settings: Settings, make_aws_client: Callable[..., Any], unique_name: Callable[[str], str],
    lambda_build: BuildResult, indices: Indices, tmp_path: Path,
) -> Iterator[Callable[..., Deployed]]:
    iam, lam, kinesis = (make_aws_client(s) for s in ("iam", "lambda", "kinesis"))
    cleanups: list[Callable[[], Any]] = []

    def deploy_function(*, endpoint: str | None = None, environment: dict[str, str] | None = None,
                        mapped: bool = True, **mapping_options: Any) -> Deployed:
        """``mapped``: the role is mapped to the writer role in the security plugin, as set-up
        does (only on the secured stack; unmapped, its writes get 403)."""
        name = unique_name("hr-test-fn")
        local = settings.with_overrides(state_dir=tmp_path / "state", prefix=unique_name("w")[:10],
                                        index_name=indices.name, dlq_index_name=indices.dlq)
        # Uploaded like any deployment: the emulator keeps the zip in the shared code store.
        function_zip = lambda_build.function.path.read_bytes()
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"Service": "lambda.amazonaws.com"}}]}
        role_arn = iam.create_role(RoleName=local.role_name,
                                   AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        cleanups.append(lambda: iam.delete_role(RoleName=local.role_name))
        if local.local_security:
            cleanups.append(lambda: remove_role_mappings(local))
            if mapped:
                assert ensure_role_mapping(local).action == "created"
        variables = environment if environment is not None else {
            "OPENSEARCH_ENDPOINT": endpoint or str(settings.resolved_opensearch_url),
            "INDEX_NAME": indices.name, "DLQ_INDEX_NAME": indices.dlq,
        }
        function = create_function(
            lam, FunctionName=name, Runtime="python3.12", Role=role_arn,
            Handler="handler.lambda_handler", Code={"ZipFile": function_zip},
            Timeout=30, MemorySize=256,
            Environment={"Variables": variables},
        )
        cleanups.append(lambda: lam.delete_function(FunctionName=name))
        # The emulator reports CodeSha256 as Lambda does: base64 of the zip's sha256.
        assert function["CodeSha256"] == lambda_build.function.code_sha256
        kinesis.create_stream(StreamName=name, ShardCount=1)
        cleanups.append(lambda: kinesis.delete_stream(StreamName=name))
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
        stream_arn = kinesis.describe_stream_summary(
            StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        mapping = lam.create_event_source_mapping(**{
            "FunctionName": name, "EventSourceArn": stream_arn, "Enabled": False,
            "BatchSize": 2, "StartingPosition": "TRIM_HORIZON",
            "FunctionResponseTypes": ["ReportBatchItemFailures"], **mapping_options,
        })
        cleanups.append(lambda: lam.delete_event_source_mapping(UUID=mapping["UUID"]))
        assert mapping["State"] == "Disabled"
        return Deployed(local, name, mapping["UUID"], role_arn, indices)

    yield deploy_function
    for cleanup in reversed(cleanups):
        cleanup()


class PollerProcess:
    """``python -m hrnb.local.poller`` for one function, restartable."""

    def __init__(self, deployed: Deployed, log_path: Path) -> None:
        self.deployed = deployed
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        settings = self.deployed.settings
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hrnb.local.poller", "--state-dir", str(settings.state_dir),
                 "--aws-endpoint-url", str(settings.resolved_aws_endpoint_url),
                 "--region", settings.region, "--function", self.deployed.name,
                 "--poll-interval", "0.1"],
                stderr=log, stdout=subprocess.DEVNULL,
            )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)
            self.process.wait(timeout=30)
        self.process = None

    def shard_status(self) -> dict[str, Any] | None:
        status = read_status(self.deployed.settings.state_dir)
        if not status or not status["mappings"] or not status["mappings"][0]["shards"]:
            return None
        return status["mappings"][0]["shards"][0]

    def batches(self) -> list[dict[str, Any]]:
        """The handler's per-invocation summaries, from the function's log."""
        log = self.deployed.settings.state_dir / "lambda-logs" / f"{self.deployed.name}.log"
        if not log.exists():
            return []
        return [entry for entry in map(json.loads, (
            line for line in log.read_text().splitlines() if line.startswith("{")))
            if entry.get("message") == "batch processed"]


@pytest.fixture
def poller(tmp_path: Path) -> Iterator[Callable[[Deployed], PollerProcess]]:
    started: list[PollerProcess] = []

    def start(deployed: Deployed) -> PollerProcess:
        process = PollerProcess(deployed, tmp_path / "esm.log")
        process.start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def put(make_aws_client: Callable[..., Any], stream: str, session: str, seqs: range) -> None:
    payloads = encoded([good_record(session, seq) for seq in seqs])
    answer = make_aws_client("kinesis").put_records(StreamName=stream, Records=[
        {"Data": data, "PartitionKey": "athlete-1"} for data in payloads])
    assert answer["FailedRecordCount"] == 0


def test_records_arrive_in_batches_of_at_most_batch_size_and_a_restart_skips_and_replays_none(
    deploy: Callable[..., Deployed], poller: Callable[[Deployed], PollerProcess],
    make_aws_client: Callable[..., Any], opensearch: Any,
) -> None:
    deployed = deploy(StartingPosition="LATEST")
    esm = poller(deployed)
    checkpoint_file = deployed.settings.state_dir / "esm" / f"{deployed.mapping_uuid}.json"
    wait_until(checkpoint_file.exists, what="the LATEST iterator")

    put(make_aws_client, deployed.name, "s-esm", range(11))
    wait_until(lambda: deployed.count(opensearch) == 11, what="11 documents")

    batches = esm.batches()
    assert all(1 <= batch["records"] <= 2 for batch in batches)
    assert sum(batch["records"] for batch in batches) == 11
    shard = wait_until(lambda: (s := esm.shard_status()) and s["records_succeeded"] == 11 and s,
                       what="the status file")
    assert shard["iterator_age_ms"] is not None and shard["function_errors"] == 0
    status = read_status(deployed.settings.state_dir)
    assert status is not None
    summary = status_lines(status)
    assert summary[0].startswith(f"{deployed.name} <- {deployed.name} (batch size 2, LATEST")
    assert "11 records in" in summary[1]

    # A graceful stop, records written while it is down, a restart: nothing skipped or replayed.
    esm.stop(signal.SIGTERM)
    put(make_aws_client, deployed.name, "s-esm", range(11, 18))
    esm.start()
    wait_until(lambda: deployed.count(opensearch) == 18, what="18 documents")
    assert sum(batch["records"] for batch in esm.batches()) == 18

    # A crash mid-stream: at most the batch in flight is delivered again, and nothing is lost.
    put(make_aws_client, deployed.name, "s-esm", range(18, 60))
    wait_until(lambda: deployed.count(opensearch) >= 24, what="progress before the crash")
    esm.stop(signal.SIGKILL)
    esm.start()
    wait_until(lambda: deployed.count(opensearch) == 60, what="60 documents")
    delivered = sum(batch["records"] for batch in esm.batches())
    assert 60 <= delivered <= 60 + 2


def test_layers_are_not_mounted_so_code_that_needs_one_fails_and_the_poller_says_why(
    deploy: Callable[..., Deployed], poller: Callable[[Deployed], PollerProcess],
    make_aws_client: Callable[..., Any], opensearch: Any, tmp_path: Path,
) -> None:
    """Stricter than AWS on purpose: a function runs from its own zip alone, so code that
    imports from a layer fails locally, and the poller's log names the layers it did not mount."""
    deployed = deploy(MaximumRetryAttempts=0)
    lam = make_aws_client("lambda")
    layer_zip = tmp_path / "layer.zip"
    with zipfile.ZipFile(layer_zip, "w") as archive:
        archive.writestr("python/only_in_the_layer.py", "VALUE = 1\n")
    layer = lam.publish_layer_version(LayerName=f"{deployed.name}-deps",
                                      Content={"ZipFile": layer_zip.read_bytes()})
    try:
        lam.update_function_configuration(FunctionName=deployed.name,
                                          Layers=[layer["LayerVersionArn"]])
        lam.get_waiter("function_updated_v2").wait(FunctionName=deployed.name,
                                                    WaiterConfig={"Delay": 0.2})
        # hrnb's own function needs no layer: it indexes with one attached.
        put(make_aws_client, deployed.name, "s-layer", range(3))
        esm = poller(deployed)
        wait_until(lambda: deployed.count(opensearch) == 3, what="3 documents")
        log = esm.log_path.read_text()
        assert (f"{deployed.name} has 1 layer(s) attached ({layer['LayerVersionArn']}); the "
                "local poller does not mount layers in /opt") in log
        assert log.count("layer(s) attached") == 1  # once per deployment, not per batch

        # Code that imports from the layer (found in /opt/python on AWS) fails here.
        needs_layer = tmp_path / "needs_layer.zip"
        with zipfile.ZipFile(needs_layer, "w") as archive:
            archive.writestr("handler.py", "import only_in_the_layer\n\n"
                             "def lambda_handler(event, context):\n"
                             "    return {'batchItemFailures': []}\n")
        lam.update_function_code(FunctionName=deployed.name, ZipFile=needs_layer.read_bytes())
        lam.get_waiter("function_updated_v2").wait(FunctionName=deployed.name,
                                                    WaiterConfig={"Delay": 0.2})
        put(make_aws_client, deployed.name, "s-needs-layer", range(2))
        shard = wait_until(lambda: (s := esm.shard_status()) and s["function_errors"] and s,
                           what="the function to fail", timeout_s=60)
        assert "Runtime.ImportModuleError" in shard["last_error"]
        assert "only_in_the_layer" in shard["last_error"]
        assert esm.log_path.read_text().count("layer(s) attached") == 2  # and the redeploy's
        assert deployed.count(opensearch) == 3
    finally:
        lam.delete_layer_version(LayerName=f"{deployed.name}-deps",
                                 VersionNumber=layer["Version"])


def test_the_first_batch_after_an_update_completes_runs_the_new_code(
    deploy: Callable[..., Deployed], poller: Callable[[Deployed], PollerProcess],
    make_aws_client: Callable[..., Any], opensearch: Any, tmp_path: Path,
) -> None:
    """As on AWS: once update_function_code has completed, the next batch runs the new code,
    not the old for a few seconds more."""
    deployed = deploy(MaximumRetryAttempts=0)
    esm = poller(deployed)
    put(make_aws_client, deployed.name, "s-old", range(3))
    wait_until(lambda: deployed.count(opensearch) == 3, what="3 documents")

    new_code = tmp_path / "new_code.zip"
    with zipfile.ZipFile(new_code, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n"
                         "    raise RuntimeError('the new code ran')\n")
    lam = make_aws_client("lambda")
    lam.update_function_code(FunctionName=deployed.name, ZipFile=new_code.read_bytes())
    lam.get_waiter("function_updated_v2").wait(FunctionName=deployed.name,
                                                WaiterConfig={"Delay": 0.2})
    put(make_aws_client, deployed.name, "s-new", range(2))

    shard = wait_until(lambda: (s := esm.shard_status()) and s["records_discarded"] == 2 and s,
                       what="the new code's batch to be given up", timeout_s=60)
    assert "the new code ran" in (shard["last_error"] or "")
    assert shard["function_errors"] == 1
    assert deployed.count(opensearch) == 3  # the old code indexed nothing more


def test_partial_failures_resume_from_the_lowest_failed_record(
    deploy: Callable[..., Deployed], poller: Callable[[Deployed], PollerProcess],
    make_aws_client: Callable[..., Any], opensearch: Any, settings: Settings,
) -> None:
    with BulkThrottlingProxy(str(settings.resolved_opensearch_url)) as proxy:
        # Records 3 and 4 share a batch; 4 is throttled in the first three bulk requests that
        # carry it (one invocation: a try and two in-place retries), so 4 is handed back once.
        proxy.fail_bulk_items(lambda _meta, source: (source or {}).get("seq") == 4, times=3)
        deployed = deploy(endpoint=proxy.url, BatchSize=4)
        esm = poller(deployed)
        put(make_aws_client, deployed.name, "s-partial", range(8))

        wait_until(lambda: deployed.count(opensearch) == 8, what="8 documents")
        shard = wait_until(lambda: (s := esm.shard_status()) and s["records_succeeded"] == 8
                           and s, what="the status file")

    assert shard["partial_failures"] == 1
    assert proxy.items_failed == 3
    sizes = [batch["records"] for batch in esm.batches()]
    # The retry started at record 4, not at the start of its batch: 8 records + 4..7 once more.
    assert sum(sizes) == 8 + 4 and max(sizes) <= 4
    ids = {hit["_id"] for hit in opensearch.search(
        index=deployed.indices.name, body={"size": 100})["hits"]["hits"]}
    assert ids == {f"athlete-1/s-partial/{seq}" for seq in range(8)}


def test_a_failing_function_is_retried_with_backoff_then_its_batch_kept_aside(
    deploy: Callable[..., Deployed], poller: Callable[[Deployed], PollerProcess],
    make_aws_client: Callable[..., Any], opensearch: Any, settings: Settings,
) -> None:
    deployed = deploy(environment={"INDEX_NAME": "unused"}, MaximumRetryAttempts=2)
    esm = poller(deployed)
    put(make_aws_client, deployed.name, "s-broken", range(2))

    shard = wait_until(lambda: (s := esm.shard_status()) and s["records_discarded"] == 2 and s,
                       what="the batch to be given up", timeout_s=60)

    assert shard["function_errors"] == 3  # the first attempt and two retries
    assert "OPENSEARCH_ENDPOINT" in (shard["last_error"] or "")
    esm_dir = deployed.settings.state_dir / "esm"
    discarded = (esm_dir / f"{deployed.mapping_uuid}-discarded.jsonl").read_text()
    kept = [json.loads(line) for line in discarded.splitlines()]
    assert [entry["sequence_number"] for entry in kept] == ["1", "2"]
    assert shard["checkpoint"] == "2"

    # Fixing the function's configuration is picked up without restarting the poller.
    make_aws_client("lambda").update_function_configuration(
        FunctionName=deployed.name, Environment={"Variables": {
            "OPENSEARCH_ENDPOINT": str(settings.resolved_opensearch_url),
            "INDEX_NAME": deployed.indices.name, "DLQ_INDEX_NAME": deployed.indices.dlq}})
    wait_until(lambda: "redeployed" in esm.log_path.read_text(), what="the redeploy")
    put(make_aws_client, deployed.name, "s-fixed", range(3))
    wait_until(lambda: deployed.count(opensearch) == 3, what="3 documents after the fix")


def test_an_unmapped_role_is_refused_and_retried_then_every_record_is_indexed_once_mapped(
    deploy: Callable[..., Deployed], poller: Callable[[Deployed], PollerProcess],
    make_aws_client: Callable[..., Any], opensearch: Any, settings: Settings,
) -> None:
    if not settings.local_security:
        pytest.skip("the local stack runs without security (HRNB_OPENSEARCH_SECURITY=off)")
    deployed = deploy(mapped=False, BatchSize=4)
    esm = poller(deployed)
    put(make_aws_client, deployed.name, "s-fgac", range(6))
    # The function runs as its execution role, which no security-plugin role maps yet.
    shard = wait_until(lambda: (s := esm.shard_status()) and s["partial_failures"] >= 2 and s,
                       what="two refused attempts", timeout_s=60)
    assert shard["records_succeeded"] == 0 and shard["records_discarded"] == 0
    assert deployed.count(opensearch) == 0
    function_log = deployed.settings.state_dir / "lambda-logs" / f"{deployed.name}.log"
    assert "403" in function_log.read_text()

    assert ensure_role_mapping(deployed.settings).action == "created"

    wait_until(lambda: deployed.count(opensearch) == 6, what="6 documents", timeout_s=60)
    shard = wait_until(lambda: (s := esm.shard_status()) and s["records_succeeded"] == 6
                       and s, what="the status file")
    assert shard["records_discarded"] == 0
    hits = opensearch.search(index=deployed.indices.name, body={"size": 100})["hits"]["hits"]
    ids = [hit["_id"] for hit in hits]
    assert sorted(ids) == sorted(f"athlete-1/s-fgac/{seq}" for seq in range(6))
    assert opensearch.count(index=deployed.indices.name)["count"] == 6


def test_the_event_has_lambdas_kinesis_shape(
    through_stream: Callable[..., Any],
) -> None:
    batch = through_stream(encoded([good_record("s-shape", seq) for seq in range(2)]))

    event = batch.event()

    sample = json.loads((EVENTS_DIR / "kinesis_heart_rate.json").read_text())
    for record, sent in zip(event["Records"], batch.records, strict=True):
        assert set(record) == EVENT_RECORD_KEYS == set(sample["Records"][0])
        assert set(record["kinesis"]) == EVENT_PAYLOAD_KEYS == set(sample["Records"][0]["kinesis"])
        assert record["eventID"] == f"{batch.shard_id}:{sent['SequenceNumber']}"
        assert record["eventSource"] == "aws:kinesis"
        assert record["eventName"] == "aws:kinesis:record"
        assert record["kinesis"]["kinesisSchemaVersion"] == "1.0"
        assert isinstance(record["kinesis"]["approximateArrivalTimestamp"], float)


def test_code_is_checked_against_its_digest_before_it_runs(
    lambda_build: BuildResult, tmp_path: Path
) -> None:
    artifact = lambda_build.function
    with pytest.raises(StackError, match="hrnb setup"):
        unpacked_code(tmp_path, artifact.code_sha256)
    stored = store_local_code(tmp_path, artifact.path.read_bytes())
    assert stored.name == f"{artifact.sha256}.zip"
    corrupted = bytearray(stored.read_bytes())
    corrupted[100] ^= 0xFF
    stored.write_bytes(bytes(corrupted))
    with pytest.raises(StackError, match="does not match its sha256"):
        unpacked_code(tmp_path, artifact.code_sha256)
    stored.write_bytes(artifact.path.read_bytes())
    assert (unpacked_code(tmp_path, artifact.code_sha256) / "handler.py").exists()
