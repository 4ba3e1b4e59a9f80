"""Benchmark the Lambda consumer against what the node can take: plain, pre-serialised ``_bulk``.

Side by side in one run, on the same events (real records read back off the emulated stream),
the same documents and ids, and the same OpenSearch node:

- **plain**: the documents the handler would write, serialised into ``_bulk`` bodies beforehand
  and posted unsigned (the handler's request otherwise, on its HTTP client ``hrnb.wire.http1``),
  one request per batch, on one keep-alive connection from this process; only the status and
  the answer's ``"errors":false`` are checked (no JSON parsing);
- **plain, halves**: the same bodies cut in two, both halves in flight at once on two
  connections: what the node takes from two requests without any decoding;
- **handler**: ``lambda/handler.py`` as built by ``infra_scripts/build_lambda.py``, run by
  ``hrnb.local.worker`` on python3.12: decoding, validation, SigV4 signing, per-item answers
  (a batch of 50 or more in two halves, two requests in flight);
- **before** (with ``--before SRC``): the handler of another source tree (a checkout of an
  earlier commit), built and run the same way;
- **handler, phases**: the handler's zips again with ``bench/handler_phases.py`` marking when
  each phase of an invocation ends (decoding, sending, waiting, logging): where its
  time goes under the same conditions; its throughput is not reported.

For batch sizes 100 and 500, every round posts each batch once per approach, the approaches
interleaved batch by batch (their order rotating); docs/s = records / summed time, best of
``--rounds``. The handler's time is the invocation's Duration as the worker reports it (what
Lambda bills: the event handed over, the answer written). Every index is checked to hold exactly
the records sent.

Also measured: the CPU per request of http.client and of ``hrnb.wire.http1``, the handler's
CPU per record without the HTTP round trip
(``bench/handler_probe.py`` in the Lambda interpreter), its cold start in fresh workers (process,
imports, init and a first batch of 100), its import times (``-X importtime``), and Lambda's cost
per million records at 128 MB from the measured Durations. Writes ``docs/benchmarks/handler.md``.
Needs the local stack (``hrnb local up``). Usage::

    python bench/bench_handler.py [--records 6000] [--rounds 3] [--before SRC]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aws_lambda_powertools as powertools
import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/support: the helpers the tests use

from support import handler_module, put_payloads, read_shard  # noqa: E402

from hrnb.clients import aws_client  # noqa: E402
from hrnb.config import Settings  # noqa: E402
from hrnb.local import launcher  # noqa: E402
from hrnb.local.code_store import store_local_code, unpacked_code  # noqa: E402
from hrnb.local.worker import FunctionSpec, LambdaWorker, find_runtime_python  # noqa: E402
from hrnb.provision.alerts import sns_endpoint  # noqa: E402
from hrnb.provision.indices import concrete_index, ensure_alert_state  # noqa: E402
from hrnb.search_client import opensearch_client  # noqa: E402
from hrnb.wire import http1  # noqa: E402
from hrnb.wire.index_schema import dead_letter_template, index_template  # noqa: E402
from hrnb.wire.kinesis import KinesisEvent, kinesis_event  # noqa: E402
from hrnb.wire.records import (  # noqa: E402
    decode_record,
    document_id,
    encode_record,
    format_timestamp,
    make_record,
)
from infra_scripts.build_lambda import build  # noqa: E402

BATCH_SIZES = (100, 500)
#: Request sizes (documents) of the node's time per request.
NODE_SIZES = (10, 25, 50, 100, 250, 500)
ATHLETE = "athlete-bench"


def _whole(records: Sequence[Any]) -> list[Sequence[Any]]:
    return [records]


def _halves(records: Sequence[Any]) -> list[Sequence[Any]]:
    half = (len(records) + 1) // 2
    return [records[:half], records[half:]]


#: The plain approaches: one request per batch, and the batch's halves in flight at once.
PLAIN = {"plain": _whole, "plain, halves": _halves}
#: The handler configured as set-up configures it: episode alerts on.
ALERTS_ON = "handler, alerts on"
#: The handler's zips in a second worker of their own: the same code measured twice in one run,
#: so the report shows how far this machine's noise moves a ratio.
AGAIN = "handler, again"
#: The handler again, its phases timed by bench/handler_phases.py (its throughput not reported).
PHASES = "handler, phases"
#: The handler's ``_bulk`` query (into aliases only, the answer filtered to what it reads).
BULK_QUERY = handler_module().BULK_QUERY
ROLE_ARN = "arn:aws:iam::123456789012:role/hrnb-bench-indexer"
MEMORY_MB = 128
#: AWS Lambda list price, x86, us-east-1, first pricing tier (aws.amazon.com/lambda/pricing).
PRICE_PER_GB_S = 0.0000166667
PRICE_PER_REQUEST = 0.20 / 1_000_000
#: Lambda gives a function 1 vCPU at 1,769 MB, and CPU in proportion below that.
MB_PER_VCPU = 1769
TARGET_RATIO = 0.8
TARGET_CPU_US = 20.0
TARGET_COLD_MS = 250.0
_REPORT_RE = re.compile(r"^REPORT RequestId: (\S+)\tDuration: ([0-9.]+) ms", re.MULTILINE)
_PROBE = REPO_ROOT / "bench" / "handler_probe.py"
_PHASES_MODULE = REPO_ROOT / "bench" / "handler_phases.py"
_PHASES_LINE = re.compile(r"^PHASES (.*)$", re.MULTILINE)
NO_BYTECODE = "handler, zips without .pyc"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Approach:
    """One way of indexing, with each round's per-batch seconds, per batch size."""

    name: str
    seconds: dict[int, list[list[float]]] = field(default_factory=dict)

    def best_docs_per_s(self, size: int, records: int) -> float:
        return max(records / sum(batches) for batches in self.seconds[size])

    def best_round(self, size: int) -> list[float]:
        return min(self.seconds[size], key=sum)


class PlainBulk:
    """Pre-serialised, unsigned ``_bulk`` bodies on keep-alive connections: one request per
    batch (*plain*), or the batch's halves in flight at once on two (*plain, halves*).

    The same request as the handler's without its signature (the path, ``require_alias`` and
    the ``filter_path`` that shortens the answer), on the same lean client
    (``hrnb.wire.http1``): the reference pays nothing the handler avoids."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.host = parts.netloc
        self.connections = [http1.Connection(parts.hostname, parts.port, None) for _ in range(2)]

    def post(self, index: str, *bodies: bytes) -> tuple[float, bytes]:
        """Seconds from the first request sent to the last answer read, and the first answer."""
        target = f"/{index}/_bulk?{BULK_QUERY}"
        headers = {"Host": self.host, "Content-Type": "application/json"}
        started = time.perf_counter()
        for connection, body in zip(self.connections, bodies, strict=False):
            connection.send("POST", target, headers, body, 60)
        answers = []
        for connection, _ in zip(self.connections, bodies, strict=False):
            status, answer = connection.read_response()
            answers.append(answer)
            if status != 200 or b'"errors":false' not in answer[:64]:
                raise SystemExit(f"plain _bulk failed: {status} {answer[:300]!r}")
        return time.perf_counter() - started, answers[0]


class NodeCpu:
    """CPU seconds the local OpenSearch node's processes (the JVM and whatever started it) have
    used so far: sampled around each *plain* request, the node's cost per document."""

    def __init__(self, settings: Settings) -> None:
        pid = launcher.status(settings).service(launcher.OPENSEARCH).pid
        if pid is None:
            raise SystemExit("the OpenSearch node was not started by hrnb: start the stack with "
                             "HRNB_OPENSEARCH_SECURITY=off hrnb local up")
        root = psutil.Process(pid)
        self.processes = [root, *root.children(recursive=True)]

    def seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes)


def client_cpu(url: str, index: str, bodies: Sequence[bytes], rounds: int) -> dict[str, float]:
    """CPU µs per request (this process, ``time.process_time``) of posting these bodies and
    reading the answers, with http.client and with ``hrnb.wire.http1``: the same request on a
    keep-alive connection, the clients taking turns; per request the best of the rounds."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    target = f"/{index}/_bulk?{BULK_QUERY}"
    headers = {"Host": parts.netloc, "Content-Type": "application/json"}
    stdlib = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    lean = http1.Connection(parts.hostname, parts.port, None)

    def with_stdlib(body: bytes) -> bytes:
        stdlib.request("POST", target, body=body, headers=headers)
        return stdlib.getresponse().read()

    def with_lean(body: bytes) -> bytes:
        lean.send("POST", target, headers, body, 60)
        return lean.read_response()[1]

    best = {name: [math.inf] * len(bodies) for name in ("http.client", "http1")}
    try:
        for _ in range(rounds):
            for number, body in enumerate(bodies):
                for name, post in (("http.client", with_stdlib), ("http1", with_lean)):
                    started = time.process_time()
                    answer = post(body)
                    best[name][number] = min(best[name][number], time.process_time() - started)
                    if b'"errors":false' not in answer[:64]:
                        raise SystemExit(f"{name} _bulk failed: {answer[:300]!r}")
    finally:
        stdlib.close()
        lean.close()
    return {name: statistics.fmean(times) * 1e6 for name, times in best.items()}


def node_request_ms(plain: PlainBulk, indices: Mapping[str, str],
                    records: Sequence[Mapping[str, Any]],
                    rounds: int) -> dict[str, dict[int, float]]:
    """The node's time for one plain ``_bulk`` request by its number of documents, into each
    of ``indices`` (by translog durability), one request at a time, the sizes and indices
    taking turns (median ms over the rounds): its fixed cost per request against its cost per
    document, which is what posting a batch in parts costs the node."""
    now = datetime.now(UTC)
    bodies = {(durability, size): plain_body(index, records[:size], now)
              for durability, index in indices.items() for size in NODE_SIZES}
    times: dict[tuple[str, int], list[float]] = {key: [] for key in bodies}
    for _ in range(rounds):
        for durability, size in bodies:
            seconds, _ = plain.post(indices[durability], bodies[durability, size])
            times[durability, size].append(seconds * 1000)
    return {durability: {size: statistics.median(times[durability, size]) for size in NODE_SIZES}
            for durability in indices}


class AlertsOn:
    """What set-up gives the function in production besides its indices: an episode state index
    and an SNS topic (``ALERT_TOPIC_ARN``), so each batch also reads and writes the state and
    each new episode is published. A prefix of the bench's own keeps them apart."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.with_overrides(prefix=f"hb{uuid.uuid4().hex[:8]}")
        self.sns = aws_client(settings, "sns")
        self.opensearch = opensearch_client(settings, timeout=60)
        self.topic_arn = ""

    def create(self) -> None:
        ensure_alert_state(self.settings, url=str(self.settings.resolved_opensearch_url))
        self.topic_arn = self.sns.create_topic(Name=f"{self.settings.prefix}-hr-alerts")["TopicArn"]
        # A queue subscribed to the topic: the episodes published are counted from it.
        sqs = aws_client(self.settings, "sqs")
        self.queue_url = sqs.create_queue(QueueName=f"{self.settings.prefix}-alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "QueueArn"])["Attributes"]["QueueArn"]
        self.sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn,
                           Attributes={"RawMessageDelivery": "true"})

    @property
    def environment(self) -> dict[str, str]:
        return {**self.settings.alert_rules.environment(),
                "ALERT_STATE_INDEX": self.settings.alert_state_index,
                "ALERT_TOPIC_ARN": self.topic_arn, "SNS_ENDPOINT": sns_endpoint(self.settings)}

    def forget(self) -> None:
        """Drop the athlete's episode state, as if the batches were new samples."""
        self.opensearch.delete(index=self.settings.alert_state_index, id=ATHLETE, refresh=True,
                               ignore=[404])

    def notified(self) -> int:
        """Messages on the subscribed queue: the episodes published over all rounds."""
        sqs = aws_client(self.settings, "sqs")
        attributes = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    def delete(self) -> None:
        name = self.settings.alert_state_index
        self.opensearch.indices.delete(index=f"{name}*", ignore_unavailable=True)
        if self.topic_arn:
            self.sns.delete_topic(TopicArn=self.topic_arn)
            aws_client(self.settings, "sqs").delete_queue(QueueUrl=self.queue_url)


def plain_body(index: str, records: Sequence[Mapping[str, Any]], now: datetime) -> bytes:
    """The documents and ids the handler writes for these event records, as one ``_bulk`` body."""
    if not records:
        return b""
    lines = []
    for record in records:
        kinesis = record["kinesis"]
        parsed = decode_record(base64.b64decode(kinesis["data"]))
        arrival = datetime.fromtimestamp(float(kinesis["approximateArrivalTimestamp"]), tz=UTC)
        document = {**parsed, "kinesis_arrival": format_timestamp(arrival),
                    "ingested_at": format_timestamp(now),
                    "alert": parsed["heart_rate"] is not None and parsed["heart_rate"] > 150}
        lines.append(json.dumps({"index": {"_index": index, "_id": document_id(parsed)}},
                                separators=(",", ":")))
        lines.append(json.dumps(document, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def stream_records(settings: Settings, count: int) -> tuple[list[dict[str, Any]], str, str]:
    """Put ``count`` records on a fresh stream and read them back (GetRecords entries)."""
    kinesis = aws_client(settings, "kinesis")
    name = f"hrnb-bench-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2})
    try:
        start = datetime.now(UTC) - timedelta(hours=1)
        payloads = [encode_record(make_record(
            athlete_id=ATHLETE, session_id="bench", device_id="strap", seq=seq,
            timestamp=start + timedelta(milliseconds=500 * seq), heart_rate=60 + seq % 120,
            rr_intervals_ms=(600.0,), sensor_contact=True)) for seq in range(count)]
        put_payloads(kinesis, name, payloads, ATHLETE)
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        shard_id = kinesis.list_shards(StreamName=name)["Shards"][0]["ShardId"]
        return read_shard(kinesis, name, shard_id, at_least=count), summary["StreamARN"], shard_id
    finally:
        kinesis.delete_stream(StreamName=name)


@dataclass(frozen=True)
class Deployment:
    """A handler's code, unpacked as the poller unpacks it, with its zips' sizes (zipped,
    unzipped bytes)."""

    task_root: Path
    sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # zip name -> sizes


def deploy(source_root: Path, work: Path, settings: Settings) -> Deployment:
    """Build a tree's zips with that tree's own build script (an earlier tree's zips as it
    shipped them, without bytecode say) and unpack them as the poller does. An earlier tree's
    dependency layer (before #16 was closed) is unpacked into the same directory, after the
    function's files: the worker runs a function from one directory, and the handler finds its
    imports as it did in ``/var/task`` and ``/opt/python``."""
    out = work / "build"
    if source_root == REPO_ROOT:
        build(out, source_root=source_root)
    else:
        command = [sys.executable, str(source_root / "infra_scripts" / "build_lambda.py")]
        environment = {**os.environ, "PYTHONPATH": str(source_root)}
        # Trees from before #16 built a layer per architecture and ask which; later ones don't.
        usage = subprocess.run([*command, "--help"], check=True, cwd=source_root,
                               env=environment, capture_output=True, text=True).stdout
        arch = ["--arch", "x86_64"] if "--arch" in usage else []
        subprocess.run([*command, "--out", str(out), *arch], check=True, cwd=source_root,
                       env=environment, stdout=subprocess.DEVNULL)
    manifest = json.loads((out / "manifest.json").read_text())
    local = settings.with_overrides(state_dir=work / "state")
    layer = manifest.get("layers", {}).get("x86_64", {}).get("file")  # an older tree's
    zips = ["function.zip", *([layer] if layer else [])]
    sizes = {}
    for name in zips:
        store_local_code(local.state_dir, (out / name).read_bytes())
        with zipfile.ZipFile(out / name) as archive:
            sizes[name] = ((out / name).stat().st_size,
                           sum(info.file_size for info in archive.infolist()))
    task_root = unpacked_code(local.state_dir, manifest["function"]["code_sha256"])
    if layer:
        merged = work / "task"
        shutil.copytree(task_root, merged)
        with zipfile.ZipFile(out / layer) as archive:
            for info in archive.infolist():
                target = merged / info.filename.removeprefix("python/")
                if info.filename.startswith("python/") and not info.is_dir() \
                        and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(info))
        task_root = merged
    return Deployment(task_root, sizes)


def write_aliases(opensearch: Any, index: str) -> None:
    """``index`` and ``<index>-dlq`` as set-up makes them: templates, an index behind each
    write alias (the handler writes with ``require_alias``)."""
    for alias, template in ((index, index_template), (f"{index}-dlq", dead_letter_template)):
        opensearch.indices.put_index_template(name=alias, body=template(concrete_index(alias)))
        opensearch.indices.create(index=concrete_index(alias),
                                  body={"aliases": {alias: {"is_write_index": True}}})


def function_environment(settings: Settings, index: str) -> dict[str, str]:
    return {
        "OPENSEARCH_ENDPOINT": str(settings.resolved_opensearch_url),
        "INDEX_NAME": index, "DLQ_INDEX_NAME": f"{index}-dlq",
        "AWS_REGION": settings.region, "AWS_ACCESS_KEY_ID": "HRNBBENCHKEY",
        "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_SESSION_TOKEN": "bench-token",
    }


def worker_for(deployment: Deployment, python: str, environment: Mapping[str, str],
               log_path: Path, handler: str = "handler.lambda_handler") -> LambdaWorker:
    spec = FunctionSpec(
        function_name="bench-indexer", function_arn="arn:bench:indexer",
        handler=handler, task_root=deployment.task_root, python=python, timeout_s=900,
        memory_mb=MEMORY_MB, environment=dict(environment),
    )
    return LambdaWorker(spec, log_path=log_path)


def with_phases(deployment: Deployment, work: Path) -> Deployment:
    """The deployment's function code with bench/handler_phases.py beside ``handler.py``."""
    task_root = work / "phases-task"
    shutil.copytree(deployment.task_root, task_root)
    shutil.copy(_PHASES_MODULE, task_root / _PHASES_MODULE.name)
    return Deployment(task_root)


def phase_marks(log_path: Path) -> dict[str, tuple[float, float]]:
    """Per phase (bench/handler_phases.py), the median over the invocations that sent records
    of when it ended: (wall ms, CPU ms) from the invocation's start."""
    ends: dict[str, list[tuple[float, float]]] = {}
    for line in _PHASES_LINE.findall(log_path.read_text()):
        marks = json.loads(line)
        if not any(phase == "part 1 sent" for phase, _, _ in marks):
            continue  # the empty batch that loads the handler
        for phase, wall, cpu in marks:
            ends.setdefault(phase, []).append((wall, cpu))
    return {phase: (statistics.median(w for w, _ in at), statistics.median(c for _, c in at))
            for phase, at in ends.items()}


def billed_ms(log_path: Path) -> dict[str, float]:
    """Request id -> Duration (ms) from the worker's REPORT lines."""
    return {rid: float(ms) for rid, ms in _REPORT_RE.findall(log_path.read_text())}


def cold_start(deployment: Deployment, python: str, environment: Mapping[str, str],
               event: KinesisEvent, work: Path, *, bytecode: bool = True
               ) -> tuple[float, float]:
    """A fresh worker's first invocation: (the Duration it reports, which is the handler's
    imports, init and a first batch, as Lambda's Init Duration plus Duration; the round trip,
    which adds the process start and the worker's own start-up), in ms.

    The worker runs a fresh copy of the unpacked zips, so it finds only the bytecode the zips
    carry, as on Lambda, whose code directories are read-only (the local worker would otherwise
    find what an earlier start compiled and wrote). Without ``bytecode`` the copy loses the
    zips' ``__pycache__`` folders: what shipping no bytecode costs."""
    fresh = work / f"cold-{uuid.uuid4().hex[:8]}"
    copy = Deployment(fresh / "task")
    shutil.copytree(deployment.task_root, copy.task_root)
    if not bytecode:
        for cache in sorted(fresh.rglob("__pycache__")):
            shutil.rmtree(cache)
    log_path = fresh.with_suffix(".log")
    try:
        with worker_for(copy, python, environment, log_path) as worker:
            result = worker.invoke(event)
    finally:
        shutil.rmtree(fresh)
    if not result.ok or result.payload != {"batchItemFailures": []}:
        raise SystemExit(f"cold start failed: {result.error or result.payload}")
    return billed_ms(log_path)[result.request_id], result.duration_ms


def import_times(deployments: Mapping[str, Deployment], python: str,
                 rounds: int = 10) -> dict[str, dict[str, float]]:
    """``-X importtime`` of each handler module, the handlers interleaved round by round: ms
    (cumulative, best of rounds) of the handler and of each package it imports that takes over
    1 ms, and (``modules``) how many modules importing it loads, a count no load changes."""
    best: dict[str, dict[str, float]] = {name: {} for name in deployments}
    for _ in range(rounds):
        for name, deployment in deployments.items():
            code = (f"import sys; sys.path[:0] = [{str(deployment.task_root)!r}]; "
                    "import handler")
            done = subprocess.run([python, "-I", "-S", "-X", "importtime", "-c", code],
                                  capture_output=True, text=True, check=True)
            lines = [line for line in done.stderr.splitlines()
                     if line.startswith("import time:")]
            start = max(i for i, line in enumerate(lines) if line.endswith("| handler"))
            subtree = [lines[start]]
            for line in reversed(lines[:start]):  # children are printed before their parent
                if _import_depth(line) == 0:
                    break
                subtree.append(line)
            best[name]["modules"] = len(subtree)
            for line in subtree:
                _, cumulative, module = (part.strip()
                                         for part in line.split(":", 1)[1].split("|"))
                if module == "handler" or _import_depth(line) == 1:  # the handler's own imports
                    ms = int(cumulative) / 1000
                    best[name][module] = min(ms, best[name].get(module, math.inf))
    return {name: {module: ms for module, ms in times.items()
                   if ms >= 1 or module in ("handler", "modules")}
            for name, times in best.items()}


def _import_depth(line: str) -> int:
    """Nesting of one ``-X importtime`` line: its name is indented two spaces a level."""
    name = line.rsplit("|", 1)[1]
    return (len(name) - len(name.lstrip()) - 1) // 2


def probe_cpu(deployment: Deployment, python: str, environment: Mapping[str, str],
              batches: Mapping[int, tuple[list[KinesisEvent], bytes, bytes]], work: Path,
              rounds: int) -> dict[str, dict[str, float]]:
    spec_path, output = work / "probe-input.json", work / "probe-output.json"
    spec_path.write_text(json.dumps({
        # Powertools, for its Kinesis data classes alone (measured against reading the dict).
        "paths": [str(deployment.task_root), str(Path(powertools.__file__).parents[1])],
        "environment": dict(environment), "rounds": rounds, "output": str(output),
        "batches": {str(size): {"events": events, "answer": first.decode(),
                                "rewrite_answer": rewrite.decode()}
                    for size, (events, first, rewrite) in batches.items()},
    }))
    subprocess.run([python, "-I", "-S", str(_PROBE), str(spec_path)], check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(output.read_text())


def cost_per_million(durations_ms: Sequence[float], batch_size: int) -> float:
    """USD per million records at 128 MB: each invocation billed to the next whole ms."""
    per_invocation = [math.ceil(ms) / 1000 * MEMORY_MB / 1024 * PRICE_PER_GB_S
                      + PRICE_PER_REQUEST for ms in durations_ms]
    return statistics.fmean(per_invocation) * 1_000_000 / batch_size


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=6000,
                        help="records per batch size (a multiple of 500)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold-samples", type=int, default=5)
    parser.add_argument("--cpu-rounds", type=int, default=7)
    parser.add_argument("--before", type=Path, help="source tree of the handler to compare with")
    parser.add_argument("--note", default="", help="conditions of the run, for the report")
    parser.add_argument("--output", type=Path,
                        default=REPO_ROOT / "docs" / "benchmarks" / "handler.md")
    args = parser.parse_args(argv)
    if args.records % max(BATCH_SIZES) or args.rounds < 2:
        parser.error("--records must be a multiple of 500 and --rounds at least 2")
    settings = Settings.from_env(target="local")
    if settings.local_security:
        # Both handlers sign with made-up keys that the SigV4 front rightly refuses.
        raise SystemExit("bench_handler measures indexing, not access control: run it on a plain "
                         "node (HRNB_OPENSEARCH_SECURITY=off hrnb local up)")
    opensearch = opensearch_client(settings, timeout=60)
    python = find_runtime_python("python3.12") or sys.executable
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="hrnb-bench-") as tmp:
        work = Path(tmp)
        progress("building the Lambda zips ...")
        sources = {"handler": REPO_ROOT}
        if args.before:
            sources["before"] = args.before.resolve()
        deployments = {name: deploy(root, work / name, settings) for name, root in sources.items()}
        progress(f"writing {args.records} records to the emulated stream and reading them back")
        records, stream_arn, shard_id = stream_records(settings, args.records)

        approaches = {name: Approach(name)
                      for name in (*PLAIN, *deployments, AGAIN, ALERTS_ON, PHASES)}
        phased = with_phases(deployments["handler"], work)
        phases: dict[int, dict[str, tuple[float, float]]] = {}
        answers: dict[int, tuple[list[KinesisEvent], bytes, bytes]] = {}
        cold_index = f"hrnb-bench-cold-{uuid.uuid4().hex[:6]}"
        created: list[str] = [cold_index]
        plain = PlainBulk(str(settings.resolved_opensearch_url))
        node = NodeCpu(settings)
        node_cpu: dict[int, list[float]] = {}  # per batch size: per round, node CPU s in plain
        alerts = AlertsOn(settings)
        try:
            alerts.create()
            write_aliases(opensearch, cold_index)
            cold_event = kinesis_event(records[:100], shard_id=shard_id, stream_arn=stream_arn,
                                       region=settings.region, role_arn=ROLE_ARN)
            progress("cold starts and import times, the handlers interleaved ...")
            environment = function_environment(settings, cold_index)
            cold: dict[str, list[tuple[float, float]]] = {
                name: [] for name in (*deployments, NO_BYTECODE)}
            for _ in range(args.cold_samples):
                for name, deployment in deployments.items():
                    cold[name].append(cold_start(deployment, python, environment, cold_event,
                                                 work))
                cold[NO_BYTECODE].append(cold_start(deployments["handler"], python, environment,
                                                    cold_event, work, bytecode=False))
            imports = import_times(deployments, python)
            for size in BATCH_SIZES:
                events = [kinesis_event(records[i:i + size], shard_id=shard_id,
                                        stream_arn=stream_arn, region=settings.region,
                                        role_arn=ROLE_ARN)
                          for i in range(0, len(records), size)]
                indices = {name: f"hrnb-bench-{re.sub('[^a-z]+', '-', name)}-{size}-"
                                 f"{uuid.uuid4().hex[:6]}"
                           for name in approaches}
                for index in indices.values():
                    write_aliases(opensearch, index)
                    created.append(index)
                now = datetime.now(UTC)
                bodies = {name: [tuple(plain_body(indices[name], part, now)
                                       for part in parts(event["Records"]))
                                 for event in events]
                          for name, parts in PLAIN.items()}
                workers = {name: worker_for(deployment, python,
                                            function_environment(settings, indices[name]),
                                            work / f"{indices[name]}.log")
                           for name, deployment in deployments.items()}
                workers[AGAIN] = worker_for(
                    deployments["handler"], python, function_environment(settings, indices[AGAIN]),
                    work / f"{indices[AGAIN]}.log")
                workers[ALERTS_ON] = worker_for(
                    deployments["handler"], python,
                    {**function_environment(settings, indices[ALERTS_ON]), **alerts.environment},
                    work / f"{indices[ALERTS_ON]}.log")
                workers[PHASES] = worker_for(
                    phased, python, function_environment(settings, indices[PHASES]),
                    work / f"{indices[PHASES]}.log", handler="handler_phases.lambda_handler")
                try:
                    for worker in workers.values():  # init (imports) kept out of the rounds
                        worker.invoke({"Records": []})
                    progress(f"batch size {size}: {len(events)} batches x {args.rounds} rounds")
                    names = list(approaches)
                    for round_number in range(args.rounds):
                        alerts.forget()  # each round's samples are news to the episode state
                        timings: dict[str, list[tuple[str, float]]] = {n: [] for n in names}
                        for number, event in enumerate(events):
                            shift = (round_number + number) % len(names)
                            for name in names[shift:] + names[:shift]:
                                if name in PLAIN:
                                    node_before = node.seconds()
                                    seconds, answer = plain.post(indices[name],
                                                                 *bodies[name][number])
                                    if name == "plain":
                                        node_cpu.setdefault(size, [0.0] * args.rounds)[
                                            round_number] += node.seconds() - node_before
                                    timings[name].append(("", seconds))
                                    if number == 0 and name == "plain":
                                        # "created" items, then "updated" ones
                                        first = answers.get(size, (events, answer))[1]
                                        answers[size] = (events, first, answer)
                                    continue
                                result = workers[name].invoke(event)
                                if result.payload != {"batchItemFailures": []}:
                                    raise SystemExit(f"{name} failed: {result.error}")
                                timings[name].append((result.request_id, 0.0))
                        for name in names:
                            if name not in PLAIN:
                                billed = billed_ms(workers[name].log_path)
                                timings[name] = [(rid, billed[rid] / 1000)
                                                 for rid, _ in timings[name]]
                            approaches[name].seconds.setdefault(size, []).append(
                                [seconds for _, seconds in timings[name]])
                        progress("  round {}: {}".format(round_number + 1, ", ".join(
                            f"{n} {len(records) / sum(approaches[n].seconds[size][-1]):,.0f}"
                            for n in names)) + " docs/s")
                finally:
                    for worker in workers.values():
                        worker.close()
                phases[size] = phase_marks(workers[PHASES].log_path)
                for name, index in indices.items():
                    opensearch.indices.refresh(index=index)
                    stored = opensearch.count(index=index)["count"]
                    if stored != len(records):
                        raise SystemExit(f"{name} stored {stored} of {len(records)} records")

            progress("the node's time per request by its size ...")
            node_indices = {durability: f"hrnb-bench-node-{durability}-{uuid.uuid4().hex[:6]}"
                            for durability in ("request", "async")}
            for durability, index in node_indices.items():
                write_aliases(opensearch, index)
                created.append(index)
                opensearch.indices.put_settings(index=concrete_index(index), body={
                    "index.translog.durability": durability})
            node_ms = node_request_ms(plain, node_indices, kinesis_event(
                records[:max(NODE_SIZES)], shard_id=shard_id, stream_arn=stream_arn,
                region=settings.region, role_arn=ROLE_ARN)["Records"], args.rounds)
            progress("HTTP clients' CPU per request, batch 100 ...")
            client_index = f"hrnb-bench-client-{uuid.uuid4().hex[:6]}"
            write_aliases(opensearch, client_index)
            created.append(client_index)
            now = datetime.now(UTC)
            clients = client_cpu(str(settings.resolved_opensearch_url), client_index,
                                 [plain_body(client_index, kinesis_event(
                                     records[i:i + 100], shard_id=shard_id,
                                     stream_arn=stream_arn, region=settings.region,
                                     role_arn=ROLE_ARN)["Records"], now)
                                  for i in range(0, len(records), 100)], args.cpu_rounds)
            progress("handler CPU per record without the HTTP round trip ...")
            cpu = probe_cpu(deployments["handler"], python,
                            function_environment(settings, cold_index), answers, work,
                            args.cpu_rounds)
            notified = alerts.notified()
        finally:
            alerts.delete()
            for index in created:
                opensearch.indices.delete(index=f"{index}*", ignore_unavailable=True)
                opensearch.indices.delete_index_template(name=index, ignore=[404])
                opensearch.indices.delete_index_template(name=f"{index}-dlq", ignore=[404])

    node_us = {size: min(rounds) / len(records) * 1e6 for size, rounds in node_cpu.items()}
    report = render(approaches, phases, cpu, clients, node_us, node_ms, cold, imports, notified,
                    records=len(records), python=python, args=args,
                    load=(load_before, os.getloadavg()),
                    sizes={name: d.sizes for name, d in deployments.items()})
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    progress(f"wrote {args.output}")
    return 0


def render_phases(approaches: Mapping[str, Approach],
                  phases: Mapping[int, Mapping[str, tuple[float, float]]]) -> list[str]:
    """Where an invocation's time goes: the phase marks beside the plain request's time."""
    def median_ms(name: str, size: int) -> float:
        return statistics.median(s for batches in approaches[name].seconds[size]
                                 for s in batches) * 1000
    order = list(dict.fromkeys(phase for size in BATCH_SIZES for phase in phases[size]))
    lines = [
        "", "## Where an invocation's time goes", "",
        f"*{PHASES}*: when each phase of an invocation ended, in ms from its start, and the CPU "
        "the worker had used by then: the median over the invocations of all rounds. "
        "`bench/handler_phases.py` wraps the packaged handler's own functions (the indexer "
        "asked for, each request's lines ready, sent and answered, the batch line) and runs in "
        "a worker of its own, taking its turn in every round. Wall time beyond CPU is waiting: "
        "for the node's answers, or for a core. For comparison, the median request of *plain* "
        "took " + " and ".join(f"{median_ms('plain', size):.2f} ms at batch {size}"
                                for size in BATCH_SIZES)
        + ", the median Duration of *handler* " + " and ".join(
            f"{median_ms('handler', size):.2f}" for size in BATCH_SIZES) + ".",
        "",
        "| phase ended | " + " | ".join(f"batch {size} ms | CPU ms" for size in BATCH_SIZES)
        + " |",
        "|---|" + "---:|---:|" * len(BATCH_SIZES),
    ]
    for phase in order:
        cells = [f"{phases[size][phase][0]:.2f} | {phases[size][phase][1]:.2f}"
                 if phase in phases[size] else "– | –" for size in BATCH_SIZES]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")

    def summary(size: int) -> str:
        wall = {phase: at for phase, (at, _) in phases[size].items()}
        sent = [at for phase, at in wall.items() if phase.endswith(" sent")]
        answered = max(at for phase, at in wall.items() if phase.endswith(" answered"))
        # The entry (the log started), and everything from the batch line on (line and exit).
        logging = wall["log started"] + wall["end"] - wall["batch line in"]
        return (f"at batch {size}, {wall['part 1 sent']:.2f} ms before the node has any work "
                f"(the entry, the first part decoded, signed and sent), "
                f"{answered - max(sent):.2f} ms waiting for the answers after the last part "
                f"went out, {logging:.2f} ms in the entry, the batch line and the exit")
    lines += ["", "Medians of the marks, so only roughly additive: "
              + "; ".join(summary(size) for size in BATCH_SIZES) + "."]
    return lines


def render_node(node_ms: Mapping[str, Mapping[int, float]], rounds: int) -> list[str]:
    """The node's time per request by size, the straight line through it, and how much of
    its fixed cost is the translog's sync before each answer."""
    durable, unsynced = node_ms["request"], node_ms["async"]
    per_doc, fixed = statistics.linear_regression(list(durable), list(durable.values()))
    sync_ms = statistics.median(durable[size] - unsynced[size] for size in durable)
    lines = ["", "## The node's time per request", "",
             "*plain* alone, one request at a time into an index of its own, the sizes taking "
             f"turns (median of {rounds} requests each). *ms* is with the translog synced to "
             "disk before each answer (`index.translog.durability: request`, the default, what "
             "set-up and AWS use); *ms, async* the same requests into an index set to `async` "
             "(synced every 5 s), measured alongside only to show what the sync costs:", "",
             "| documents | ms | µs per document | ms, async |", "|---:|---:|---:|---:|"]
    lines += [f"| {size} | {ms:.2f} | {ms / size * 1000:.0f} | {unsynced[size]:.2f} |"
              for size, ms in durable.items()]
    lines += ["", f"A straight line through them (least squares): {fixed:.2f} ms per request "
              f"plus {per_doc * 1000:.0f} µs per document, so each request costs the node about "
              f"as much as {fixed / per_doc:.0f} documents; of that, {sync_ms:.2f} ms (the "
              "median difference) is the sync, which the node makes once per request. A batch "
              "posted in two parts pays the request's cost once more than in one, against the "
              "decoding of the second part overlapping the node's work on the first."]
    return lines


def _ok(met: bool) -> str:
    return "met" if met else "**not met**"


def render(approaches: Mapping[str, Approach],
           phases: Mapping[int, Mapping[str, tuple[float, float]]],
           cpu: Mapping[str, Mapping[str, float]],
           clients: Mapping[str, float], node_us: Mapping[int, float],
           node_ms: Mapping[str, Mapping[int, float]],
           cold: Mapping[str, Sequence[tuple[float, float]]],
           imports: Mapping[str, Mapping[str, float]], notified: int, *,
           records: int, python: str, args: argparse.Namespace,
           load: tuple[Sequence[float], Sequence[float]],
           sizes: Mapping[str, Mapping[str, tuple[int, int]]]) -> str:
    handler, plain = approaches["handler"], approaches["plain"]
    halves, alerting = approaches["plain, halves"], approaches[ALERTS_ON]
    again = approaches[AGAIN]

    def ratio(approach: Approach, size: int) -> float:
        return approach.best_docs_per_s(size, records) / plain.best_docs_per_s(size, records)
    before = approaches.get("before")
    command = (f"python bench/bench_handler.py --records {args.records} --rounds {args.rounds} "
               f"--cold-samples {args.cold_samples} --cpu-rounds {args.cpu_rounds}")
    if before is not None:
        commit = subprocess.run(["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip() or "?"
        command += (f" --before SRC`, SRC a checkout of {commit} "
                    f"(`git worktree add SRC {commit}`)")
    else:
        command += "`"
    lines = [
        "# Benchmark: the Lambda consumer against plain `_bulk`",
        "",
        f"Command: `{command}, with `HRNB_OPENSEARCH_SECURITY=off hrnb local up`: a plain HTTP "
        "node, so that neither side pays the SigV4 front (unsigned plain `_bulk` cannot pass it); "
        "the handler still signs every request.  ",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({os.cpu_count()} cores, shared), worker interpreter `{Path(python).name}`, "
        f"OpenSearch node on loopback; load average {load[0][0]:.1f} at the start, "
        f"{load[1][0]:.1f} at the end; this process at niceness {os.nice(0)}. {args.note}",
        "",
        f"{records:,} records per batch size, written to the emulated stream and read back. "
        "Side by side, against the same node, with the same documents and ids, the approaches "
        "interleaved batch by batch (order rotating):",
        "",
        "- **plain**: the same documents serialised into `_bulk` bodies beforehand, one "
        "request per batch posted unsigned on a keep-alive connection, the answer checked for "
        "`\"errors\":false` only: the target's reference (issue #16). It is the handler's "
        "request without the signature (`require_alias`, and the `filter_path` that shortens "
        "the answer) on the handler's own HTTP client, `hrnb.wire.http1`, so the reference "
        "pays nothing the handler avoids;",
        "- **handler**: `lambda/handler.py` from its built zips in `hrnb.local.worker` "
        "(decoding, validation, dead-letter routing, SigV4 signing, per-item answers), timed "
        "by the Duration the worker reports for each invocation (what Lambda bills). It posts "
        "a batch of 50 or more in two halves, the second decoded while the node indexes the "
        "first, so two requests are in flight at once;",
        f"- **{AGAIN}**: the same zips in a second worker, into an index of its own: the same "
        "code measured twice in one run, so the difference between *handler* and it is what "
        "this machine's noise does to a ratio;",
        "- **plain, halves**: as *plain*, but each batch's halves posted at once on two "
        "connections and both answers awaited: what the node takes from two requests in "
        "flight without any decoding, the handler's ceiling with its two halves;",
        "- **alerts on**: the same handler configured as set-up configures it, with an episode "
        "state index and an SNS topic (`ALERT_TOPIC_ARN`): each batch also writes the "
        "athlete's episode state (reading it when the worker has not kept it, and before "
        "announcing an episode) and each new episode is published (the state is "
        "dropped before each round, so every round's samples are news; "
        f"{notified} episodes were published over all rounds). *handler* runs without them;",
        f"- **{PHASES}**: the handler's zips again, in a worker of their own, with "
        "`bench/handler_phases.py` marking when each phase of an invocation ends (below); its "
        "throughput is not reported;",
    ]
    if before is not None:
        lines.append("- **before**: the handler of the `--before` tree, its zips built by that "
                     "tree's own build script, run the same way;")
    lines += [
        "",
        f"docs/s = records / summed time, best of {args.rounds} rounds; every index is checked "
        "to hold exactly the records sent.",
        "",
        "## Throughput",
        "",
        "| batch size | plain docs/s | handler docs/s | handler / plain |"
        + " again docs/s | again / plain |"
        + (" before docs/s | before / plain |" if before else "")
        + " plain, halves docs/s | handler / plain, halves | alerts on docs/s | "
        "alerts on / plain |",
        "|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if before else "")
        + "---:|---:|---:|---:|",
    ]
    for size in BATCH_SIZES:
        best_plain = plain.best_docs_per_s(size, records)
        best_handler = handler.best_docs_per_s(size, records)
        best_halves = halves.best_docs_per_s(size, records)
        row = (f"| {size} | {best_plain:,.0f} | {best_handler:,.0f} | "
               f"**{best_handler / best_plain:.2f}x** |")
        best_again = again.best_docs_per_s(size, records)
        row += f" {best_again:,.0f} | {best_again / best_plain:.2f}x |"
        if before:
            best_before = before.best_docs_per_s(size, records)
            row += f" {best_before:,.0f} | {best_before / best_plain:.2f}x |"
        best_alerting = alerting.best_docs_per_s(size, records)
        row += (f" {best_halves:,.0f} | {best_handler / best_halves:.2f}x |"
                f" {best_alerting:,.0f} | {best_alerting / best_plain:.2f}x |")
        lines.append(row)
    def per_round(size: int) -> list[float]:
        return [sum(p) / sum(h) for p, h in zip(plain.seconds[size], handler.seconds[size],
                                                 strict=True)]

    lines += ["", "Per round (handler / plain, the two measured side by side in the round): "
              + "; ".join(f"batch {size}: " + ", ".join(f"{r:.2f}" for r in per_round(size))
                          + f" (median {statistics.median(per_round(size)):.2f})"
                          for size in BATCH_SIZES)
              + ". The best rounds of each approach need not be the same round, so the ratio "
              "of the bests moves with one lucky round of either; the median of the rounds' "
              "own ratios moves less."]
    lines += render_phases(approaches, phases)
    lines += render_node(node_ms, args.rounds)
    ratios_met = all(ratio(handler, size) >= TARGET_RATIO for size in BATCH_SIZES)
    worst_cpu = max(cpu[str(s)]["invocation"] for s in BATCH_SIZES)
    warm_cold = statistics.median(reported for reported, _ in cold["handler"])
    lines += [
        "",
        "## CPU per record without the HTTP round trip",
        "",
        "`bench/handler_probe.py` runs in the worker's interpreter with only the unpacked zips on "
        "its path and times with `time.process_time` (this process's CPU, no waiting), batch by "
        f"batch, the best of {args.cpu_rounds} rounds for each batch, over all {records:,} "
        "records. *invocation* is `lambda_handler` on every event, the whole path (its log "
        "lines, decoding, validation, the bodies, SigV4 signing, reading and "
        "sorting the answers), with the transport's sending replaced by the node's real answer "
        "to the first write of a batch that size, cut to each request's items: its items say "
        "`created`, as on a first delivery; the next column hands back the answer to a rewrite "
        "(`updated`), as on a redelivery. The function runs without `ALERT_TOPIC_ARN`: the "
        "indexer alone, episode alerts (issue #17: a state read and write per batch, a publish "
        "per new episode) off. The other columns time steps of it alone; *fixed* is "
        "`lambda_handler` on an empty batch (the log's start, the batch line), its share "
        "per record of a batch that size.",
        "",
        "| batch size | invocation µs/record | same, rewrite | decode + validate | "
        "`_bulk` body | SigV4 | fixed |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in BATCH_SIZES:
        figures = cpu[str(size)]
        lines.append(f"| {size} | **{figures['invocation']:.1f}** | "
                     f"{figures['invocation_rewrite']:.1f} | "
                     f"{figures['decode_validate']:.1f} | {figures['body']:.1f} | "
                     f"{figures['sign']:.2f} | {figures['fixed']:.2f} |")
    figures = cpu[str(max(BATCH_SIZES))]
    lines += [
        "",
        "Choices, measured (µs per record, batch size "
        f"{max(BATCH_SIZES)}):",
        "",
        f"- Decoding the event: Powertools' Kinesis data classes (`KinesisStreamEvent`, "
        f"`data_as_bytes`, the arrival time) {figures['powertools_decode']:.2f}, the event dict "
        f"read directly {figures['dict_decode']:.2f}. The handler reads the dict.",
        f"- Validation: `decode_record` (`json.loads`, then field by field) takes "
        f"{figures['json_validate']:.2f}; `canonical_record`, one regular expression for the "
        "exact compact form the producer writes plus the checks it cannot make (integer "
        f"ranges, real dates, the rr numbers), {figures['canonical']:.2f}, with the same "
        "answer (tests/test_records.py). The handler tries it first and leaves every other "
        "payload, and every error message, to `decode_record`.",
        f"- JSON: the stdlib parses a payload in {figures['json_decode']:.2f} and encodes a "
        f"document in {figures['json_encode']:.2f}. On the fast path the handler does neither: "
        "the payload is the record's own compact JSON, so the document's is it plus three "
        "fields, byte for byte what encoding it gives. orjson would cut both but adds 376 KB "
        "unpacked (130 KB zipped, 3.13.0 x86_64), the handler's only dependency.",
        f"- Signing: `hrnb.wire.sigv4` (stdlib hmac/hashlib) signs a body in "
        f"{figures['sign'] * max(BATCH_SIZES):.0f} µs, {figures['sign']:.2f} per record. "
        "Per record, signing is cheap whichever library does it; what requests and "
        "requests-aws4auth cost is their import at every cold start (`requests` in the "
        "import times of the handler before #16) and five packages in a layer.",
        f"- HTTP: posting a batch of 100 and reading the answer took {clients['http.client']:.0f} "
        f"µs of CPU per request with the stdlib's http.client (the head and the body in two "
        f"writes, the answer's headers parsed by the `email` package) and "
        f"{clients['http1']:.0f} with `hrnb.wire.http1` (one write, the status and framing "
        "headers read directly); the same request to the same node, the two taking turns, "
        "best of the CPU rounds per request. The handler posts over `hrnb.wire.http1` on "
        "keep-alive connections, two when a batch goes out in halves.",
        "- Logging: `hrnb.wire.jsonlog` writes the batch line (in *fixed*) and dead letters, "
        "once per batch or per bad record, as JSON lines with Powertools Logger's keys. An "
        "invocation's log work (its start and the batch line, written to memory) took "
        f"{cpu['log']['jsonlog']:.0f} µs of CPU with it and "
        f"{cpu['log']['powertools']:.0f} µs with Powertools' Logger and its "
        "`inject_lambda_context` (the logging module's record, the caller lookup, the "
        "formatter's key merging), best of the CPU rounds; in place, where the worker wakes "
        "with cold caches, several times that (the phase marks above). Powertools' Logger "
        "was the last thing a layer held.",
        "- Dependencies: none; the function zip carries the handler and `hrnb.wire`, and "
        "there is no layer (before #16: Powertools, jmespath and typing-extensions, and "
        "opensearch-py, requests, requests-aws4auth with their closure). Zip sizes "
        "(zipped / unzipped KB), bytecode included where the zips carry it: "
        + "; ".join(f"{name}: " + ", ".join(
            f"{zip_name} {zipped / 1024:,.0f} / {unzipped / 1024:,.0f}"
            for zip_name, (zipped, unzipped) in zips.items()) for name, zips in sizes.items())
        + ".",
        "",
        "## Cold start in the worker",
        "",
        "A fresh worker process per sample on python3.12 (`-I -S`, only the zips on its path), "
        "the handlers taking turns, "
        "timed from the invocation sent to the answer back: process start, imports, init and a "
        "first batch of 100 records indexed: *reported* is the Duration the worker reports for "
        "that first invocation (the handler's imports, init and the batch: what Lambda reports "
        "as Init Duration plus Duration), *round trip* adds the process start and the "
        "emulator's own worker start-up (Lambda's runtime start, not the function's). "
        "Each sample runs a fresh copy of the unpacked "
        "zips, so it finds only the bytecode the zips carry, as on Lambda, whose code "
        "directories are read-only: a handler shipped without `.pyc` compiles every module it "
        "imports at every cold start. The handler's zips carry unchecked-hash bytecode for "
        f"python3.12; *{NO_BYTECODE}* is the same zips with it taken out.",
        "",
        f"| handler | reported ms (median of {args.cold_samples}) | min | max | "
        "round trip ms (median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, timings in cold.items():
        reported = [first for first, _ in timings]
        lines.append(f"| {name} | {statistics.median(reported):.0f} | {min(reported):.0f} | "
                     f"{max(reported):.0f} | "
                     f"{statistics.median(trip for _, trip in timings):.0f} |")
    lines += [
        "",
        "Importing the handler loads "
        + ", ".join(f"{times['modules']:.0f} modules ({name})" for name, times in imports.items())
        + ". Import times (`python3.12 -X importtime`, cumulative ms, best of 10, bytecode "
        "compiled by the first round where the zips carry none): "
        + "; ".join(f"{name}: " + ", ".join(
            f"`{module}` {ms:.0f}" for module, ms in sorted(times.items(), key=lambda i: -i[1])
            if module != "modules") for name, times in imports.items()) + ".",
        "",
        "## Cost per million records on Lambda (128 MB, x86)",
        "",
        f"List price (us-east-1, x86, first tier): ${PRICE_PER_GB_S:.10f} per GB-second and "
        f"${PRICE_PER_REQUEST * 1e6:.2f} per million requests. From the measured Duration of "
        "each invocation of the best round, billed to the next whole ms.",
        "",
        "| batch size | handler ms / invocation | handler $ / M records |"
        + (" before ms / invocation | before $ / M records |" if before else ""),
        "|---:|---:|---:|" + ("---:|---:|" if before else ""),
    ]
    for size in BATCH_SIZES:
        best = handler.best_round(size)
        row = (f"| {size} | {statistics.fmean(best) * 1000:.1f} | "
               f"{cost_per_million([s * 1000 for s in best], size):.4f} |")
        if before:
            best_before = before.best_round(size)
            row += (f" {statistics.fmean(best_before) * 1000:.1f} | "
                    f"{cost_per_million([s * 1000 for s in best_before], size):.4f} |")
        lines.append(row)
    lines += [
        "",
        f"These Durations were measured here, with the machine's load above. At 128 MB Lambda "
        f"gives the function "
        f"about {MEMORY_MB / MB_PER_VCPU:.0%} of a vCPU, so its CPU-bound part (above) runs "
        "correspondingly longer there: the fewer CPU µs per record, the more the saving grows "
        "at 128 MB.",
        "",
        "## Targets (issue #16)",
        "",
        f"- handler at least {TARGET_RATIO}x plain `_bulk` at batch sizes 100 and 500: "
        + ", ".join(f"{ratio(handler, size):.3f}x at {size}" for size in BATCH_SIZES)
        + f" (best of rounds), {_ok(ratios_met)}; the same zips in the second worker "
        "(*handler, again*): "
        + ", ".join(f"{ratio(again, size):.3f}x at {size}" for size in BATCH_SIZES)
        + ", which is how far this run's noise moves the ratio;",
        f"- CPU per record without the HTTP round trip at most {TARGET_CPU_US:.0f} µs: "
        f"{worst_cpu:.1f} µs, {_ok(worst_cpu <= TARGET_CPU_US)};",
        f"- cold start in the worker on python3.12 at most {TARGET_COLD_MS:.0f} ms: "
        f"{warm_cold:.0f} ms (median reported), {_ok(warm_cold <= TARGET_COLD_MS)}.",
        "",
        "The issue states the ratio for the indexer; as set-up deploys it (*alerts on*), the "
        "function also writes each athlete's episode state once per batch (a round trip after "
        "the indexing, which it must follow) and publishes each new episode: "
        + ", ".join(f"{ratio(alerting, size):.2f}x plain at batch {size}"
                    for size in BATCH_SIZES) + ".",
        "",
        "Where the time goes: while each *plain* request was in flight the node used "
        f"{node_us[BATCH_SIZES[0]]:.0f} µs of CPU per document at batch {BATCH_SIZES[0]} and "
        f"{node_us[BATCH_SIZES[1]]:.0f} at batch {BATCH_SIZES[1]} (its processes' user and "
        "system time, best round, its background work included); the handler used "
        f"{cpu[str(BATCH_SIZES[0])]['invocation']:.1f} and "
        f"{cpu[str(BATCH_SIZES[1])]['invocation']:.1f} µs per record. The node and the "
        f"function share this machine's {os.cpu_count()} cores, so every µs the function "
        "computes here is taken from the node; on AWS the domain runs on machines of its own.",
        "",
        "Absolute figures move with the load of this shared 2-core machine (other work runs "
        "beside the benchmark); the ratios are measured interleaved in one run.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
