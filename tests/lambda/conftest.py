"""Fixtures for the Lambda consumer: the built zips, a worker running them, indices, real events.

Events are built from records written to and read back from the emulated stream, then run by
the packaged handler in a worker process, exactly as the local event source mapping does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lambda_helpers import ROLE_ARN, Indices, UnpackedCode
from support import put_payloads, read_shard

from hrnb.local.code_store import store_local_code, unpacked_code
from hrnb.local.worker import FunctionSpec, LambdaWorker, find_runtime_python
from hrnb.provision.indices import concrete_index
from hrnb.wire.index_schema import dead_letter_template, index_template
from hrnb.wire.kinesis import KinesisEvent, kinesis_event
from infra_scripts.build_lambda import BuildResult


@pytest.fixture(scope="session")
def unpacked(lambda_build: BuildResult, tmp_path_factory: pytest.TempPathFactory) -> UnpackedCode:
    """The zip as the poller finds it: stored by sha256, checked, unpacked."""
    state_dir = tmp_path_factory.mktemp("state")
    store_local_code(state_dir, lambda_build.function.path.read_bytes())
    return UnpackedCode(
        state_dir=state_dir,
        task_root=unpacked_code(state_dir, lambda_build.function.code_sha256),
    )


@pytest.fixture(scope="session")
def runtime_python() -> str:
    return find_runtime_python("python3.12") or sys.executable


@pytest.fixture
def indices(opensearch: Any, unique_name: Callable[[str], str]) -> Iterator[Indices]:
    """A heart-rate index and its dead-letter index as set-up makes them: the production
    templates, and write aliases (the function writes with ``require_alias``)."""
    name = unique_name("hr-test")
    names = Indices(name=name, dlq=f"{name}-dlq")
    for alias, body in ((names.name, index_template(concrete_index(names.name))),
                        (names.dlq, dead_letter_template(concrete_index(names.dlq)))):
        opensearch.indices.put_index_template(name=alias, body=body)
        opensearch.indices.create(index=concrete_index(alias),
                                  body={"aliases": {alias: {"is_write_index": True}}})
    yield names
    opensearch.indices.delete(
        index=f"{concrete_index(names.name)},{concrete_index(names.dlq)}", ignore_unavailable=True)
    for template in (names.name, names.dlq):
        opensearch.indices.delete_index_template(name=template)


WorkerFactory = Callable[..., LambdaWorker]


@pytest.fixture
def start_worker(
    unpacked: UnpackedCode, runtime_python: str, tmp_path: Path
) -> Iterator[WorkerFactory]:
    """Start workers running the packaged handler; each is stopped after the test."""
    workers: list[LambdaWorker] = []

    def start(environment: Mapping[str, str], *, task_root: Path | None = None,
              timeout_s: float = 30.0) -> LambdaWorker:
        spec = FunctionSpec(
            function_name="hrnb-test-indexer",
            function_arn="arn:aws:lambda:ap-south-1:123456789012:function:hrnb-test-indexer",
            handler="handler.lambda_handler",
            task_root=task_root or unpacked.task_root,
            python=runtime_python,
            environment=dict(environment),
            timeout_s=timeout_s,
        )
        worker = LambdaWorker(spec, log_path=tmp_path / f"function-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.close()


@dataclass(frozen=True)
class StreamBatch:
    """Records put on a real (emulated) stream and read back, as the poller sees them."""

    stream_arn: str
    shard_id: str
    records: list[dict[str, Any]]  # GetRecords entries

    def event(self, records: Sequence[dict[str, Any]] | None = None) -> KinesisEvent:
        return kinesis_event(
            self.records if records is None else records, shard_id=self.shard_id,
            stream_arn=self.stream_arn, region="ap-south-1", role_arn=ROLE_ARN,
        )


StreamWriter = Callable[[Sequence[bytes]], StreamBatch]


@pytest.fixture
def through_stream(
    make_aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> Iterator[StreamWriter]:
    """Put payloads on a fresh one-shard stream and read them back off it."""
    kinesis = make_aws_client("kinesis")
    created: list[str] = []

    def write(payloads: Sequence[bytes]) -> StreamBatch:
        name = unique_name("hr-test-stream")
        kinesis.create_stream(StreamName=name, ShardCount=1)
        created.append(name)
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
        put_payloads(kinesis, name, payloads)
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        shard_id = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        records = read_shard(kinesis, name, shard_id, at_least=len(payloads))
        assert len(records) == len(payloads)
        return StreamBatch(summary["StreamARN"], shard_id, records)

    yield write
    for name in created:
        kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)
