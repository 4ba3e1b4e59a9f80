"""The stack's two servers do real work over HTTP: Kinesis on the emulator, search on OpenSearch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support import create_function

from hrnb.config import Settings

pytestmark = pytest.mark.stack


def test_kinesis_stream_create_write_read_delete(
    make_aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    kinesis = make_aws_client("kinesis")
    name = unique_name("stack-test")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    try:
        kinesis.put_record(StreamName=name, Data=b'{"heart_rate": 90}', PartitionKey="a1")
        shard = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator)["Records"]
        assert [r["Data"] for r in records] == [b'{"heart_rate": 90}']
    finally:
        kinesis.delete_stream(StreamName=name)
    assert name not in kinesis.list_streams()["StreamNames"]


def test_opensearch_reference_mapping_index_and_search(
    settings: Settings, opensearch: Any, unique_name: Callable[[str], str]
) -> None:
    index = unique_name("stack-test")
    opensearch.indices.create(
        index=index,
        body={
            "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"properties": {"timestamp": {"type": "date"},
                                        "heart_rate": {"type": "integer"}}},
        },
    )
    try:
        for second, bpm in enumerate([88, 91, 155]):
            opensearch.index(
                index=index,
                body={"timestamp": f"2025-07-15T17:10:{second:02d}", "heart_rate": bpm},
            )
        opensearch.indices.refresh(index=index)
        found = opensearch.search(
            index=index, body={"query": {"range": {"heart_rate": {"gt": 150}}}}
        )
        assert [hit["_source"]["heart_rate"] for hit in found["hits"]["hits"]] == [155]
        mapping = opensearch.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert mapping["timestamp"]["type"] == "date"
        assert mapping["heart_rate"]["type"] == "integer"
    finally:
        opensearch.indices.delete(index=index)
    assert opensearch.info()["version"]["number"].startswith(settings.opensearch_version[:4])


def test_emulator_invokes_only_enabled_kinesis_mappings(
    make_aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    """Like AWS, a disabled mapping never runs its function (the local stack's mapping is
    disabled: hrnb.local.poller runs the function). Seen from outside: moto writes each attempt
    to the function's log group."""
    import io
    import zipfile

    kinesis, lam, iam, logs = (make_aws_client(s) for s in ("kinesis", "lambda", "iam", "logs"))
    name = unique_name("emulator-esm")
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as bundle:
        bundle.writestr("h.py", "def h(event, context):\n    return 1\n")
    attempts = {}
    try:
        for enabled in (False, True):
            function = f"{name}-{'on' if enabled else 'off'}"
            create_function(lam, FunctionName=function, Runtime="python3.12", Role=role,
                            Handler="h.h", Code={"ZipFile": code.getvalue()})
            mapping = lam.create_event_source_mapping(
                FunctionName=function, EventSourceArn=arn, StartingPosition="LATEST",
                Enabled=enabled)
            kinesis.put_record(StreamName=name, Data=b"{}", PartitionKey="a1")
            lam.delete_event_source_mapping(UUID=mapping["UUID"])
            groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{function}")
            attempts[enabled] = len(groups["logGroups"])
            lam.delete_function(FunctionName=function)
    finally:
        kinesis.delete_stream(StreamName=name)
        iam.delete_role(RoleName=name)
    assert attempts == {False: 0, True: 1}
