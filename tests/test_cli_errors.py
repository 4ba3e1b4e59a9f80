"""Every command, with the world against it, says what is wrong in one line and exits non-zero.

The worlds: the emulator down and OpenSearch down (their ports point at closed loopback ports),
no AWS credentials on the ``aws`` target (empty AWS_* environment and config files, no instance
metadata, and AWS_ENDPOINT_URL on a closed loopback port so that even a bug could not reach
AWS), and unwritable or unreadable paths. All commands run at once as subprocesses (module
fixture), so the whole matrix costs about as much as its slowest command.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import free_port

from hrnb.clients import aws_client
from hrnb.config import Settings

#: Commands run on the target that applies; the scenario supplies the environment.
HRNB = (sys.executable, "-m", "hrnb")


@dataclass(frozen=True)
class Case:
    scenario: str
    args: tuple[str, ...]
    needle: str  # what the one error line must say
    env: Mapping[str, str] = field(default_factory=dict)
    report: int | None = None  # not an error: the exit code of a report whose stdout says it


#: ``{file}`` is a regular file (nothing can be created below it), ``{build}`` a Lambda build
#: directory with a manifest, ``{tmp}`` a directory.
CASES = [
        # --- the emulator down ------------------------------------------------------------
        Case("emulator-down", ("stream", "--duration", "1"), "kinesis does not answer"),
        Case("emulator-down", ("setup", "--build-dir", "{build}"), "does not answer"),
        Case("emulator-down", ("setup", "--dry-run"), "does not answer"),
        Case("emulator-down", ("teardown", "--yes"), "does not answer"),
        Case("emulator-down", ("local", "down"), "stopped: nothing", report=0),
        Case("emulator-down", ("redrive",), "sqs does not answer"),
        Case("emulator-down", ("policy",), "sts does not answer"),
        Case("emulator-down", ("local", "status"), "stack NOT healthy", report=1),
        # --- OpenSearch down ----------------------------------------------------------------
        Case("opensearch-down", ("query", "recent"), "OpenSearch does not answer"),
        Case("opensearch-down", ("query", "zones", "--max-hr", "190"),
             "OpenSearch does not answer"),
        # --- the aws target without credentials ---------------------------------------------
        Case("aws-no-credentials", ("stream", "--duration", "1"), "no AWS credentials"),
        Case("aws-no-credentials", ("setup", "--build-dir", "{build}"), "no AWS credentials"),
        Case("aws-no-credentials", ("setup", "--dry-run"), "no AWS credentials"),
        Case("aws-no-credentials", ("teardown", "--yes"), "no AWS credentials"),
        Case("aws-no-credentials", ("query", "recent"), "no AWS credentials"),
        Case("aws-no-credentials", ("redrive",), "no AWS credentials"),
        Case("aws-no-credentials", ("policy",), "no AWS credentials"),
        Case("aws-no-credentials", ("demo",), "local stack only"),
        Case("aws-no-credentials", ("local", "up"), "'local' target only"),
        # --- unwritable or unreadable paths -------------------------------------------------
        Case("bad-paths", ("local", "up"), "cannot create the state directory",
             {"HRNB_STATE_DIR": "{file}/state"}),
        Case("bad-paths", ("local", "status"), "cannot read the pid file",
             {"HRNB_STATE_DIR": "{file}/state"}),
        Case("bad-paths", ("local", "down"), "cannot read the pid file",
             {"HRNB_STATE_DIR": "{file}/state"}),
        Case("bad-paths", ("setup", "--dry-run"), "state file",
             {"HRNB_STATE_DIR": "{file}/state"}),
        Case("bad-paths", ("query", "recent", "--csv", "/nonexistent/dir/x.csv"),
             "--csv /nonexistent/dir/x.csv: the directory /nonexistent/dir does not exist"),
        Case("bad-paths", ("query", "recent", "--csv", "{file}/x.csv"), "--csv"),
        Case("bad-paths", ("query", "recent", "--minutes", "nan"),
             "--minutes must be positive, got nan"),
        Case("bad-paths", ("stream", "--source", "replay:{tmp}"),
             "replay reads .fit or .csv files"),
        Case("bad-paths", ("demo", "--build-dir", "/nonexistent/build"), "no Lambda build"),
        Case("bad-paths", ("demo", "--build-dir", "{build}", "--out", "{file}/out"),
             "cannot create the output directory"),
        Case("bad-paths", ("setup", "--build-dir", "/nonexistent/build"), "/nonexistent/build"),
        Case("bad-paths", ("setup", "--build-dir", "{file}/build"), "Not a directory"),
        Case("bad-paths", ("scan", "--timeout", "0.2"), "No Bluetooth stack"),
        Case("bad-paths", ("recording", "/nonexistent/x.fit"),
             "cannot read /nonexistent/x.fit: No such file or directory"),
        Case("bad-paths", ("recording", "{tmp}/binary.csv"), "is not a UTF-8 text CSV file"),
]


@dataclass(frozen=True)
class World:
    tmp: Path
    file: Path
    build: Path
    environments: Mapping[str, Mapping[str, str]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("cli-errors")
    (tmp / "a-file").write_text("not a directory\n")
    (tmp / "binary.csv").write_bytes(b"\xff\xfe" + bytes(range(256)) * 4)
    (tmp / "build").mkdir()
    (tmp / "build" / "manifest.json").write_text(json.dumps({  # the zip is never read: set-up
        "function": {"file": "function.zip"}, "handler": "handler.lambda_handler"}))  # fails first
    for name in ("aws-config", "aws-credentials"):
        (tmp / name).write_text("")
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("AWS_", "HRNB_", "BOTO"))}
    local = {**clean, "HRNB_TARGET": "local", "HRNB_AWS_PORT": str(free_port()),
             "HRNB_OPENSEARCH_PORT": str(free_port()), "HRNB_STATE_DIR": str(tmp / "state"),
             "HRNB_PREFIX": "hrnb-cli-errors"}
    no_credentials = {
        **clean, "HRNB_TARGET": "aws", "HRNB_STATE_DIR": str(tmp / "state-aws"),
        "HRNB_OPENSEARCH_URL": "https://search-hrnb-hr.ap-south-1.es.amazonaws.com",
        "AWS_CONFIG_FILE": str(tmp / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_MAX_ATTEMPTS": "1",
    }
    return World(tmp=tmp, file=tmp / "a-file", build=tmp / "build", environments={
        "emulator-down": local, "opensearch-down": local, "bad-paths": local,
        "aws-no-credentials": no_credentials})


def _run(case: Case, world: World,
         environments: Mapping[str, Mapping[str, str]] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    places = {"file": world.file, "build": world.build, "tmp": world.tmp}
    args = [arg.format(**places) for arg in case.args]
    env = {**(environments or world.environments)[case.scenario],
           **{name: value.format(**places) for name, value in case.env.items()}}
    return subprocess.run([*HRNB, *args], capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL, cwd=world.tmp)


@pytest.fixture(scope="module")
def results(world: World) -> list[subprocess.CompletedProcess[str]]:
    """Every case's outcome, the commands run concurrently (each takes a second or two)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda case: _run(case, world), CASES))


@pytest.mark.parametrize(
    "number", range(len(CASES)),
    ids=[f"{case.scenario}:{' '.join(case.args)}" for case in CASES])
def test_one_line_no_traceback(number: int, results: list[subprocess.CompletedProcess[str]]
                               ) -> None:
    _check(CASES[number], results[number])


#: Cases that need the emulator up (the failure comes after the stream exists).
STACK_CASES = [
    Case("opensearch-down", ("setup", "--build-dir", "{build}"), "OpenSearch does not answer"),
    Case("opensearch-down", ("teardown", "--yes"), "OpenSearch does not answer"),
    # Streaming needs a set-up pipeline: without one (this prefix has none) the command stops at
    # its first check, before the source or the spool is opened (a binary .csv is tested
    # through 'recording' above).
    Case("bad-paths", ("stream", "--source", "replay:{tmp}/binary.csv", "--flush-timeout", "5"),
         "run 'hrnb setup' first"),
    Case("bad-paths", ("stream", "--duration", "1", "--spool", "{file}/spool.sqlite3"),
         "run 'hrnb setup' first"),
]


@pytest.fixture(scope="module")
def stack_results(settings: Settings, world: World,
                  ) -> Iterator[list[subprocess.CompletedProcess[str]]]:
    """STACK_CASES on the running stack under a prefix and indices of their own: set-up and
    then teardown with OpenSearch down (in that order), the stream cases meanwhile; a teardown
    with OpenSearch up removes what set-up created."""
    prefix = f"clierr{uuid.uuid4().hex[:6]}"
    up = {**world.environments["bad-paths"], "HRNB_PREFIX": prefix,
          "HRNB_INDEX_NAME": f"{prefix}-hr", "HRNB_DLQ_INDEX_NAME": f"{prefix}-hr-dlq",
          "HRNB_STATE_DIR": str(world.tmp / prefix),
          "HRNB_STACK_STATE_DIR": str(settings.local_stack_dir),
          "HRNB_AWS_ENDPOINT_URL": str(settings.resolved_aws_endpoint_url),
          "HRNB_OPENSEARCH_URL": str(settings.resolved_opensearch_url)}
    down = {**up, "HRNB_OPENSEARCH_URL": f"http://127.0.0.1:{free_port()}"}
    own_stream = {**up, "HRNB_PREFIX": f"{prefix}s"}  # set-up must create its stream itself
    environments = {"opensearch-down": down, "bad-paths": own_stream}
    with ThreadPoolExecutor(max_workers=3) as pool:
        in_order = pool.submit(lambda: [_run(case, world, environments)
                                        for case in STACK_CASES[:2]])
        streams = list(pool.map(lambda case: _run(case, world, environments), STACK_CASES[2:]))
        outcomes = [*in_order.result(), *streams]
    yield outcomes
    cleanup = subprocess.run([*HRNB, "teardown", "--yes"], capture_output=True, text=True,
                             timeout=300, env=up, stdin=subprocess.DEVNULL)
    assert "nothing hrnb created remains" in cleanup.stdout, cleanup.stderr
    kinesis = aws_client(settings, "kinesis")
    with contextlib.suppress(kinesis.exceptions.ResourceNotFoundException):
        kinesis.delete_stream(StreamName=f"{prefix}s-hr-stream")


@pytest.mark.stack
@pytest.mark.parametrize(
    "number", range(len(STACK_CASES)),
    ids=[f"{case.scenario}:{' '.join(case.args)}" for case in STACK_CASES])
def test_one_line_no_traceback_on_the_stack(
    number: int, stack_results: list[subprocess.CompletedProcess[str]]) -> None:
    _check(STACK_CASES[number], stack_results[number])


def _check(case: Case, result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    if case.report is not None:  # status says "not running", down "nothing to stop"
        assert result.returncode == case.report, result.stderr
        assert case.needle in result.stdout
        return
    if case.args[0] == "scan" and os.path.exists("/run/dbus/system_bus_socket"):
        pytest.skip("this machine has a system D-Bus; the case needs one without BlueZ")
    errors = [line for line in result.stderr.splitlines() if line.startswith("hrnb: ")]
    assert result.returncode != 0, result.stderr
    assert len(errors) == 1, result.stderr
    assert errors[0] == result.stderr.splitlines()[-1], result.stderr
    assert case.needle in errors[0], result.stderr
    assert "unexpected error" not in errors[0], result.stderr
    assert "hrnb-local-secret" not in result.stderr + result.stdout
