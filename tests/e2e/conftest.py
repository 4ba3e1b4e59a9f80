"""Fixtures of the end-to-end fault suite: a whole pipeline per test on the local stack.

``pipeline(...)`` provisions through :mod:`hrnb.provision` on the local target, exactly as
``hrnb setup`` does, under a prefix and a state directory of the test's own: the stream, the
role, the domain in the emulator, the index templates and indices on the OpenSearch node, the
function from the zip built once per session, and the disabled trigger. Its own
poller process (``python -m hrnb.local.poller``) then runs the function from those zips. On
request, a FaultProxy sits between the producer and the emulator, another between the function and
the
node, and the indices live on a private OpenSearch node that the test may restart. Everything
is torn down afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import Pipeline, PollerProcess, say
from support import admin_opensearch, free_port, wait_until
from support.faultproxy import FaultProxy

from hrnb import provision
from hrnb.clients import aws_client
from hrnb.config import Settings
from hrnb.local import launcher
from hrnb.provision.function import local_trigger_reading

PipelineFactory = Callable[..., Pipeline]


@pytest.fixture
def pipeline(
    settings: Settings,
    lambda_artifacts: provision.LambdaArtifacts,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[PipelineFactory]:
    """A factory of provisioned pipelines, each torn down after the test.

    ``kinesis_proxy``: the producer writes through a FaultProxy in front of the emulator.
    ``opensearch_proxy``: a FaultProxy class put between the function (its OPENSEARCH_ENDPOINT)
    and the node. ``private_opensearch``: the indices live on a node of this test's own, on a
    free port, which the test may stop and start (the shared node serves other tests).
    ``options``: the trigger's settings (default: set-up's). Other keywords are settings of
    the pipeline (e.g. ``alert_thresholds``).
    """
    with contextlib.ExitStack() as cleanup:

        def make(*, kinesis_proxy: bool = False,
                 opensearch_proxy: type[FaultProxy] | None = None,
                 private_opensearch: bool = False, shards: int = 2,
                 options: provision.EventSourceOptions | None = None,
                 **overrides: Any) -> Pipeline:
            prefix = unique_name("e2e")
            home = tmp_path / prefix
            home.mkdir()
            node_settings = settings
            if private_opensearch:
                # A plain node: the SigV4 front of a secured one lives in the shared emulator.
                node_settings = settings.with_overrides(
                    opensearch_port=free_port(), opensearch_url=None,
                    state_dir=home / "opensearch-node", opensearch_security=False)
                say(f"private OpenSearch node on {node_settings.resolved_opensearch_url}")
                cleanup.callback(launcher.down, node_settings, only=(launcher.OPENSEARCH,))
                launcher.up(node_settings, poller=False, progress=say)
            node_url = str(node_settings.resolved_opensearch_url)
            function_url = node_url
            search_proxy = None
            if opensearch_proxy is not None:
                search_proxy = opensearch_proxy(node_url)
                search_proxy.start()
                cleanup.callback(search_proxy.stop)
                function_url = search_proxy.url
            own = node_settings.with_overrides(
                prefix=prefix, index_name=f"{prefix}-hr", dlq_index_name=f"{prefix}-hr-dlq",
                state_dir=home / "state", stream_shards=shards, opensearch_url=function_url,
                **overrides)

            cleanup.callback(_teardown, own, search_proxy)
            report = provision.setup(own, lambda_artifacts, options=options)
            mapping_uuid = next(step.id for step in report.results if step.step == "trigger")
            assert mapping_uuid is not None
            function = aws_client(own, "lambda").get_function_configuration(
                FunctionName=own.function_name)
            assert function["Environment"]["Variables"]["OPENSEARCH_ENDPOINT"] == function_url
            say(f"provisioned {prefix}: {own.stream_name} ({shards} shards) -> "
                f"{own.function_name} -> {function_url} ({own.index_name})")

            poller = PollerProcess(own, home / "esm.log")
            cleanup.callback(poller.stop)
            poller.start()
            kinesis = aws_client(own, "kinesis")
            wait_until(lambda: local_trigger_reading(own, mapping_uuid), timeout_s=60,
                       what="the poller reading the trigger on every shard")

            producer_settings = own
            writer_proxy = None
            if kinesis_proxy:
                writer_proxy = FaultProxy(str(settings.resolved_aws_endpoint_url))
                writer_proxy.start()
                cleanup.callback(writer_proxy.stop)
                producer_settings = own.with_overrides(aws_endpoint_url=writer_proxy.url)
            return Pipeline(
                settings=own,
                node_settings=node_settings,
                mapping_uuid=mapping_uuid,
                poller=poller,
                search=admin_opensearch(node_settings),
                kinesis=kinesis,
                producer_settings=producer_settings,
                spool_path=home / "spool.sqlite3",
                kinesis_proxy=writer_proxy,
                opensearch_proxy=search_proxy,
            )

        yield make


def _teardown(own: Settings, search_proxy: FaultProxy | None) -> None:
    """Everything set-up created goes; a fault left on the proxy must not block that."""
    if search_proxy is not None:
        search_proxy.clear()
    report = provision.teardown(own, wait=False)
    assert not report.remaining, f"teardown left {', '.join(report.remaining)}"


@pytest.fixture
def free_ports() -> Callable[[], tuple[int, int]]:
    """Two free loopback ports (an emulator's and an OpenSearch node's)."""
    return lambda: (free_port(), free_port())
