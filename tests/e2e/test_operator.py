"""Issue #12: what an operator does to the local stack loses nothing a command acknowledged.

Each test is one reproduction of the issue, run as a new user would on a real emulator, OpenSearch
node and poller (following every prefix of its state directory, as ``hrnb local up`` starts it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from operator_stack import OperatorStack, PrivateServices
from support import admin_opensearch, wait_until
from support.faultproxy import FaultProxy, Respond, kinesis_operation

from hrnb import provision
from hrnb.clients import aws_client
from hrnb.config import Settings
from hrnb.errors import ProvisionError
from hrnb.stream.producer import kinesis_client

pytestmark = pytest.mark.stack


@pytest.fixture
def ops(settings: Settings, lambda_artifacts: provision.LambdaArtifacts,
        tmp_path: Path) -> Iterator[OperatorStack]:
    stack = OperatorStack(settings, lambda_artifacts, tmp_path)
    stack.poller.start()
    try:
        yield stack
    finally:
        stack.close()


def _all_indexed(ops: OperatorStack, own: Settings, summary) -> None:  # type: ignore[no-untyped-def]
    check = summary.index_check
    assert check is not None and check.missing == 0, check and check.line()
    assert check.acknowledged == summary.producer.sent == summary.samples
    assert sum(ops.keys(own).values()) >= summary.samples


def test_setup_right_before_streaming_loses_nothing(ops: OperatorStack,
                                                    unique_name: Callable[[str], str]) -> None:
    """Item 2: teardown; setup && stream, three times: every time every record is indexed (a
    LATEST trigger on a 5 s reload indexed 3/3, 2/3, 0/3)."""
    own = ops.settings(unique_name("again"))
    for attempt in range(3):
        ops.teardown(own)
        ops.setup(own)
        summary = ops.stream(own, seconds=3, seed=attempt)
        assert summary.samples == 3
        _all_indexed(ops, own, summary)
        assert summary.complete


def test_a_prefix_set_up_after_local_up_is_served(ops: OperatorStack,
                                                  unique_name: Callable[[str], str]) -> None:
    """Item 4: the poller was started before either prefix existed; both are read."""
    first, race = ops.settings(unique_name("first")), ops.settings(unique_name("race"))
    ops.setup(first)
    ops.setup(race)  # returns once the poller reads its trigger
    for own in (first, race):
        _all_indexed(ops, own, ops.stream(own, seconds=7, athletes=2))


def test_streaming_without_setup_stops_before_any_sample(
    ops: OperatorStack, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Item 3 (second half): ``HRNB_PREFIX=fresh hrnb stream`` before ``hrnb setup``: one line
    naming ``hrnb setup``, exit 1, no stream created, nothing spooled."""
    fresh = ops.settings(unique_name("fresh"))
    env = {**os.environ, "HRNB_PREFIX": fresh.prefix, "HRNB_STATE_DIR": str(fresh.state_dir)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "hrnb", "stream", "--duration", "3",
                           "--athlete", "X", "--spool", str(tmp_path / "spool.sqlite3")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "run 'hrnb setup' first" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60
    assert fresh.stream_name not in aws_client(fresh, "kinesis").list_streams()["StreamNames"]
    assert not (tmp_path / "spool.sqlite3").exists()


def test_another_prefixs_teardown_leaves_my_data(ops: OperatorStack,
                                                unique_name: Callable[[str], str]) -> None:
    """Item 1: ``HRNB_PREFIX=other hrnb teardown --yes`` deleted the indices prefix ``hrnb``
    made, then waited ~11 min on a stream it had skipped."""
    mine, other = ops.settings(unique_name("mine")), ops.settings(unique_name("other"))
    ops.setup(mine)
    summary = ops.stream(mine, seconds=5)
    _all_indexed(ops, mine, summary)
    before = ops.keys(mine)
    # The other prefix has a stream of the same name that it did not set up (someone else's).
    kinesis = aws_client(other, "kinesis")
    kinesis.create_stream(StreamName=other.stream_name, ShardCount=1)
    try:
        started = time.monotonic()
        report = provision.teardown(other)
        took = time.monotonic() - started
    finally:
        kinesis.delete_stream(StreamName=other.stream_name)
    assert took < 30, f"teardown of another prefix took {took:.0f} s"
    assert not [r for r in report.results if r.action == "deleted"], report.results
    assert any(r.step == "stream" and r.action == "skipped" for r in report.results)
    assert ops.keys(mine) == before
    # Shared index names (an explicit HRNB_INDEX_NAME): set-up refuses, teardown leaves them.
    sharing = other.with_overrides(index_name=mine.index_name)
    with pytest.raises(ProvisionError, match="owned by prefix"):
        provision.setup(sharing, ops.artifacts)
    provision.teardown(sharing, wait=False)
    assert ops.keys(mine) == before


def test_the_function_never_writes_where_setup_put_no_mapping(
    ops: OperatorStack, unique_name: Callable[[str], str]
) -> None:
    """Item 10: with set-up's index gone, records are retried (not indexed into an index
    OpenSearch auto-creates with a dynamic mapping) and indexed once set-up ran again."""
    own = ops.settings(unique_name("alias"))
    ops.setup(own)
    first = ops.stream(own, seconds=3, seed=1)
    _all_indexed(ops, own, first)
    admin = admin_opensearch(own)
    for alias in (own.index_name, own.dlq_index_name):  # as item 1's teardown did
        admin.indices.delete(index=f"{alias}-000001")
    second = ops.stream(own, seconds=4, seed=2, verify_timeout_s=3)
    assert second.producer.sent == 4
    assert second.index_check is not None and second.index_check.missing == 4
    assert not second.complete
    time.sleep(2)  # the poller keeps retrying meanwhile
    for alias in (own.index_name, own.dlq_index_name):
        assert not admin.indices.exists(index=alias), f"{alias} was auto-created"
    ops.setup(own)
    # The first 3 went with the deleted index; the 4 retried ones arrive, once each.
    wait_until(lambda: sum(ops.keys(own).values()) == 4, timeout_s=60,
               what="the retried records in the re-created index")
    assert set(ops.keys(own).values()) == {1}
    mapping = admin.indices.get_mapping(index=own.index_name)
    (properties,) = [m["mappings"]["properties"] for m in mapping.values()]
    assert properties["athlete_id"]["type"] == "keyword"


def test_flush_timeout_bounds_the_command_when_kinesis_is_down(
    ops: OperatorStack, unique_name: Callable[[str], str]
) -> None:
    """Item 7: ``--flush-timeout 3`` with Kinesis down took 43 s (close() added up to 30 s)."""
    own = ops.settings(unique_name("down"))
    ops.setup(own)
    with FaultProxy(str(own.resolved_aws_endpoint_url)) as proxy:
        proxy.set_fault(Respond(503, b"{}", match=kinesis_operation("PutRecords")))
        client = kinesis_client(own.with_overrides(aws_endpoint_url=proxy.url))
        started = time.monotonic()
        summary = ops.stream(own, seconds=3, flush_timeout_s=3, client=client)
        took = time.monotonic() - started
    assert summary.unsent == 3 and not summary.complete
    assert summary.index_check is not None and summary.index_check.acknowledged == 0
    assert took < 10, f"took {took:.1f} s with --flush-timeout 3"


def test_an_emulator_restart_needs_setup_again(
    settings: Settings, lambda_artifacts: provision.LambdaArtifacts, tmp_path: Path,
    unique_name: Callable[[str], str], free_ports: Callable[[], tuple[int, int]],
) -> None:
    """Item 3: after the emulator restarted (and forgot everything), streaming re-created the
    stream untagged and with no trigger, and spooled into it. Now it stops, naming set-up;
    set-up then rebuilds, and what is streamed is indexed."""
    services = PrivateServices(settings, tmp_path, *free_ports())
    services.up()
    ops = OperatorStack(services.settings, lambda_artifacts, tmp_path)
    try:
        ops.poller.start()
        own = ops.settings(unique_name("amnesia"))
        ops.setup(own)
        _all_indexed(ops, own, ops.stream(own, seconds=3))
        services.restart("aws")
        with pytest.raises(ProvisionError, match="does not exist .*run 'hrnb setup' first"):
            ops.stream(own, seconds=3, seed=2)
        assert own.stream_name not in aws_client(own, "kinesis").list_streams()["StreamNames"]
        ops.setup(own)
        _all_indexed(ops, own, ops.stream(own, seconds=3, seed=3))
    finally:
        ops.close()
        services.down()
