"""End to end on the local stack: latency per hop, loss, duplicates and CPU/memory per process.

Each scenario gets a pipeline of its own (a fresh prefix: stream, role, function, trigger, index,
provisioned by :func:`hrnb.provision.setup` exactly as ``hrnb setup`` does) and its own local
event source mapping poller (``python -m hrnb.local.poller``), which runs the built Lambda zips in a
worker process. A producer subprocess (this file's ``produce`` role) streams simulated athletes at
1 Hz
in real time through :class:`hrnb.stream.session.StreamSession` and
:class:`hrnb.stream.producer.KinesisProducer`, as ``hrnb stream`` does. Meanwhile this process
samples CPU and RSS of every process of the pipeline with psutil and times sample→searchable with
:class:`hrnb.query.SearchableProbe`.

Scenarios: one athlete for 2 minutes; then N athletes for 60 s (N = 10, 100, 1000), then a few
runs that search for the largest N whose p99 sample→indexed stays under 2 s with no loss (the
first guess is 80 % of the rate a failing run sustained; an N that missed the target although
the pipeline kept up is run once more, since the servers are shared). Each scenario's index is
read back:
every expected (athlete, seq) must be there once (loss), the stream is read back for records sent
twice, documents written more than once are counted (``_version`` > 1), and
:func:`hrnb.query.latency` gives the percentiles per hop.

When a run misses the target, a diagnosis follows for the largest such N: a short run with the
producer, the poller and a private emulator (started like the shared one, but serving one
request at a time under cProfile) profiled, the same with the emulator's Docker client failing at
once (``DOCKER_HOST=none://``), and the full run again on a private emulator with Docker off,
side by side with the shared one.

Writes ``docs/benchmarks/pipeline.md`` and PNG plots under ``docs/benchmarks/img/``. Needs the
local stack (``hrnb local up``); runs for about 15 minutes with the defaults::

    python bench/bench_pipeline.py [--athletes 10,100,1000] [--duration 60] [--single-duration 120]
                                   [--search-runs 2] [--shards 4] [--batch-size 500]
                                   [--no-diagnosis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/support: the helpers the tests use

import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import psutil  # noqa: E402
from support import free_port, key_of, read_stream  # noqa: E402

from hrnb import provision  # noqa: E402
from hrnb.clients import aws_client  # noqa: E402
from hrnb.config import Settings  # noqa: E402
from hrnb.live import export_png  # noqa: E402
from hrnb.local.launcher import stop_process_group  # noqa: E402
from hrnb.provision.security import _admin_opensearch  # noqa: E402
from hrnb.query import SearchableProbe, latency, plot_latency  # noqa: E402
from hrnb.wire.records import encode_record, make_record  # noqa: E402
from infra_scripts.build_lambda import build  # noqa: E402

TARGET_SINGLE_P99_S = 1.0
TARGET_SCALE_P99_S = 2.0
PROBED_ATHLETES = 10  # sample→searchable is timed on this many athletes of a run
PROFILE_SECONDS = 10.0  # the profiled diagnosis run is short: profiling slows everything
DOCS = REPO_ROOT / "docs" / "benchmarks"
ROLES = ("producer", "poller", "lambda worker", "emulator (moto)", "OpenSearch")
STAMPS = ("timestamp", "sent_at", "kinesis_arrival", "ingested_at")
HOP_NAMES = ("measured→sent", "sent→kinesis", "kinesis→indexed", "measured→indexed")

#: The emulator as ``python -m moto.server`` runs it, but serving requests one at a time on the
#: main thread so that cProfile sees all of them; the profile is written on SIGTERM.
PROFILED_EMULATOR = '''\
import cProfile, signal, sys
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication, MotoRequestHandler, create_backend_app)
from werkzeug.serving import run_simple

port, out = int(sys.argv[1]), sys.argv[2]
profiler = cProfile.Profile()

def stop(*_):
    profiler.disable()
    profiler.dump_stats(out)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
profiler.enable()
run_simple("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
'''


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- the producer subprocess --------------------------------------------------------------------
def produce_main(argv: Sequence[str]) -> int:
    """``bench_pipeline.py produce``: simulated athletes → StreamSession → KinesisProducer; a JSON
    summary on stdout, progress on stderr."""
    parser = argparse.ArgumentParser(prog="bench_pipeline.py produce")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--aws-port", type=int, required=True)
    parser.add_argument("--athletes", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args(argv)
    settings = Settings.from_env(target="local", prefix=args.prefix, state_dir=args.state_dir,
                                 aws_port=args.aws_port)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    summary = asyncio.run(_produce(settings, args.athletes, args.duration))
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    print(json.dumps(summary))
    return 0


async def _produce(settings: Settings, athletes: int, duration_s: float) -> dict[str, Any]:
    from hrnb.sources.simulated import SimulatedSource
    from hrnb.stream.producer import KinesisProducer
    from hrnb.stream.session import StreamProgress, StreamSession

    # No contact losses, as in the runs docs/benchmarks.md reports, so every sample carries a
    # heart rate and the figures stay comparable.
    source = SimulatedSource(athlete_ids(athletes), rate_hz=1.0, duration_s=duration_s,
                             speed=1.0, seed=7, contact_loss_every_s=None)
    started = time.monotonic()

    def show(state: StreamProgress) -> None:
        metrics = state.producer
        progress(f"  producer {state.elapsed_s:5.0f} s: {state.samples} samples, "
                 f"sent {metrics.sent}, spooled {metrics.spooled}, queue {metrics.queue_depth}, "
                 f"{metrics.calls} PutRecords calls")

    async with KinesisProducer.from_settings(settings) as producer:
        session = StreamSession(source, producer, on_progress=show, progress_every_s=10.0,
                                flush_timeout_s=600.0)
        summary = await session.run()
    metrics = summary.producer
    return {"samples": summary.samples, "submitted": summary.submitted,
            "invalid": summary.invalid, "refused": summary.refused, "sent": metrics.sent,
            "unsent": metrics.unsent, "calls": metrics.calls, "retried": metrics.retried,
            "failed": metrics.failed, "seconds": time.monotonic() - started,
            "flush_s": time.monotonic() - started - summary.duration_s}


def athlete_ids(count: int) -> list[str]:
    return [f"a{i:04d}" for i in range(count)]


# --- processes and their CPU/memory ------------------------------------------------------------
def listening_pid(port: int) -> int | None:
    """The process listening on ``port`` on this machine (the shared stack's servers)."""
    for connection in psutil.net_connections(kind="tcp"):
        if (connection.status == psutil.CONN_LISTEN and connection.laddr
                and connection.laddr.port == port and connection.pid):
            return connection.pid
    return None


@dataclass
class Usage:
    """CPU (% of one core) and RSS (MiB) samples of one role over a run."""

    cpu: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)

    @property
    def cpu_mean(self) -> float:
        return float(np.mean(self.cpu)) if self.cpu else math.nan

    @property
    def cpu_max(self) -> float:
        return max(self.cpu) if self.cpu else math.nan

    @property
    def rss_peak(self) -> float:
        return max(self.rss_mib) if self.rss_mib else math.nan


class ProcessSampler:
    """Samples each role's processes (pids found anew every tick) once a second, in a thread."""

    def __init__(self, roles: dict[str, Callable[[], list[int]]], every_s: float = 1.0) -> None:
        self.roles = roles
        self.every_s = every_s
        self.usage = {role: Usage() for role in roles}
        self.machine_cpu: list[float] = []  # % of all cores
        self._processes: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> ProcessSampler:
        psutil.cpu_percent()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _process(self, pid: int) -> psutil.Process:
        if pid not in self._processes:
            self._processes[pid] = psutil.Process(pid)
            self._processes[pid].cpu_percent()  # the first call only starts the count
        return self._processes[pid]

    def _run(self) -> None:
        for find in self.roles.values():
            for pid in find():
                with contextlib.suppress(psutil.Error):
                    self._process(pid)
        while not self._stop.wait(self.every_s):
            self.machine_cpu.append(psutil.cpu_percent())
            for role, find in self.roles.items():
                cpu = rss = 0.0
                for pid in find():
                    with contextlib.suppress(psutil.Error):
                        process = self._process(pid)
                        cpu += process.cpu_percent()
                        rss += process.memory_info().rss / 2**20
                self.usage[role].cpu.append(cpu)
                self.usage[role].rss_mib.append(rss)


def children_of(pid: int | None) -> list[int]:
    if pid is None:
        return []
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


# --- where the AWS side runs --------------------------------------------------------------------
@dataclass(frozen=True)
class Emulator:
    """The moto server a scenario provisions on and streams through."""

    label: str
    port: int
    pid: int


def shared_emulator() -> Emulator:
    port = Settings.from_env(target="local").aws_port
    pid = listening_pid(port)
    if pid is None:
        raise SystemExit(f"nothing listens on 127.0.0.1:{port}: start the local stack "
                         "with 'hrnb local up'")
    return Emulator("shared local stack", port, pid)


@contextlib.contextmanager
def private_emulator(workdir: Path, label: str, *, docker_host: str | None = None,
                     profile_to: Path | None = None) -> Iterator[Emulator]:
    """A moto server of this benchmark's own on a free loopback port, started the way
    ``hrnb local up`` starts it (``DOCKER_HOST`` and the profiler aside); stopped afterwards."""
    import urllib.request

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["MOTO_PORT"] = str(port)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    if profile_to:
        launcher = workdir / "profiled_emulator.py"
        launcher.write_text(PROFILED_EMULATOR)
        command = [sys.executable, str(launcher), str(port), str(profile_to)]
    else:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = (workdir / f"emulator-{port}.log").open("ab")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2):
                    break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the private emulator did not start; see {log.name}") from exc
                time.sleep(0.2)
        progress(f"private emulator ({label}) on 127.0.0.1:{port}")
        yield Emulator(label, port, process.pid)
    finally:
        stop_group(process)
        log.close()


# --- one scenario ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    shards: int
    batch_size: int
    poll_interval_s: float


@dataclass
class Outcome:
    """What one scenario measured."""

    athletes: int
    duration_s: float
    emulator: str
    expected: int  # samples the source produced
    indexed: int  # distinct documents found
    missing: int  # expected (athlete, seq) not in the index
    stream_duplicates: int  # records on the stream beyond the first of each (athlete, seq)
    rewritten: int  # documents written more than once (_version > 1)
    dead_lettered: int
    caught_up_s: float  # from the source's end until the last document was indexed
    cold_start_s: float  # warm-up record put -> indexed (first invocation, imports included)
    hops: list[dict[str, Any]]  # latency() rows
    usage: dict[str, Usage]
    machine_cpu_mean: float  # % of all cores
    load_average: tuple[float, float, float]
    producer: dict[str, Any]
    per_doc_s: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    profiles: dict[str, Path] = field(default_factory=dict)

    def hop(self, name: str) -> dict[str, Any]:
        return next(row for row in self.hops if row["hop"] == name)

    @property
    def p99_indexed_s(self) -> float:
        return self.hop("measured→indexed")["p99_ms"] / 1000

    @property
    def sent_per_s(self) -> float:
        """Records Kinesis acknowledged per second, over the producer's whole run."""
        return self.producer["sent"] / self.producer["seconds"]

    def carries(self, target_s: float) -> bool:
        return (self.missing == 0 and self.stream_duplicates == 0 and self.rewritten == 0
                and self.dead_lettered == 0 and self.p99_indexed_s <= target_s)


@contextlib.contextmanager
def pipeline(workdir: Path, build_dir: Path, config: Config, emulator: Emulator,
             profile: Path | None) -> Iterator[tuple[Settings, subprocess.Popen[bytes]]]:
    """A provisioned prefix and its poller; everything torn down afterwards."""
    prefix = f"bp{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env(target="local").with_overrides(
        prefix=prefix, index_name=f"{prefix}-hr", dlq_index_name=f"{prefix}-hr-dlq",
        state_dir=workdir / prefix, stream_shards=config.shards, aws_port=emulator.port)
    options = provision.EventSourceOptions(batch_size=config.batch_size, batching_window_s=0,
                                           starting_position="TRIM_HORIZON")
    provision.setup(settings, provision.LambdaArtifacts.from_build_dir(build_dir), options=options)
    runner = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    log = (workdir / f"{prefix}-esm.log").open("ab")
    poller = subprocess.Popen(
        [*runner, "-m", "hrnb.local.poller", "--state-dir", str(settings.state_dir),
         "--aws-endpoint-url", str(settings.resolved_aws_endpoint_url), "--region",
         settings.region, "--function", settings.function_name,
         "--poll-interval", str(config.poll_interval_s)],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        yield settings, poller
    finally:
        stop_group(poller)
        log.close()
        provision.teardown(settings, wait=False)


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Stop the process group this benchmark started (children included)."""
    stop_process_group(process.pid, timeout_s)
    process.wait()


def count(client: Any, index: str) -> int:
    client.indices.refresh(index=index)
    return client.count(index=index)["count"]


def warm_up(settings: Settings, client: Any, timeout_s: float = 90.0) -> float:
    """One record through the whole pipeline, so the first invocation's imports (Lambda's cold
    start) are not in the figures; its document is deleted again. Returns the seconds it took."""
    kinesis = aws_client(settings, "kinesis")
    record = make_record(athlete_id="warmup", session_id="warmup", device_id="bench", seq=0,
                         timestamp=datetime.now(UTC), heart_rate=60, rr_intervals_ms=(1000.0,),
                         sensor_contact=True)
    started = time.monotonic()
    kinesis.put_record(StreamName=settings.stream_name, Data=encode_record(record),
                       PartitionKey="warmup")
    while count(client, settings.index_name) < 1:
        if time.monotonic() - started > timeout_s:
            raise SystemExit(f"the warm-up record was not indexed within {timeout_s:.0f} s; "
                             f"see the poller log beside {settings.state_dir}")
        time.sleep(0.2)
    took = time.monotonic() - started
    client.delete(index=settings.index_name, id="warmup/warmup/0", refresh=True)
    return took


def probe_loop(probe: SearchableProbe, stop: threading.Event, every_s: float = 0.25) -> None:
    while not stop.is_set():
        try:
            probe.poll()
        except Exception as exc:  # a failed poll only loses one observation round
            progress(f"  searchable probe: {exc}")
        stop.wait(every_s)


def wait_for_index(client: Any, index: str, wanted: int, *, stall_s: float = 30.0,
                   cap_s: float = 600.0) -> int:
    """Wait until ``wanted`` documents are indexed, or nothing new arrived for ``stall_s``."""
    started = last_change = last_report = time.monotonic()
    indexed = count(client, index)
    while indexed < wanted:
        now = time.monotonic()
        if now - last_change > stall_s or now - started > cap_s:
            break
        time.sleep(0.25)
        found = count(client, index)
        if found != indexed:
            indexed, last_change = found, time.monotonic()
        if time.monotonic() - last_report > 5:
            progress(f"  indexed {indexed:,} of {wanted:,}")
            last_report = time.monotonic()
    return indexed


def read_stream_keys(settings: Settings) -> Counter[tuple[str, str, int]]:
    """(athlete, session, seq) of every record on the stream, counted."""
    streamed = read_stream(aws_client(settings, "kinesis"), settings.stream_name)
    return Counter(key_of(item.record) for item in streamed)


def read_documents(client: Any, index: str) -> list[dict[str, Any]]:
    from opensearchpy import helpers

    return [
        {**hit["_source"], "_version": hit["_version"]}
        for hit in helpers.scan(client, index=index, query={"version": True},
                                _source=["athlete_id", "session_id", "seq", *STAMPS], size=5000)
    ]


def seconds_between(docs: Sequence[dict[str, Any]], earlier: str, later: str) -> np.ndarray:
    def epoch(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()

    return np.array([epoch(doc[later]) - epoch(doc[earlier]) for doc in docs])


def run_scenario(athletes: int, duration_s: float, *, emulator: Emulator, workdir: Path,
                 build_dir: Path, config: Config, opensearch_pid: int,
                 profile: bool = False) -> Outcome:
    progress(f"scenario: {athletes:,} athlete(s) at 1 Hz for {duration_s:.0f} s "
             f"({emulator.label})")
    stack = Settings.from_env(target="local")
    client = _admin_opensearch(stack, str(stack.resolved_opensearch_url), timeout=120)
    tag = f"{athletes}-{uuid.uuid4().hex[:4]}"
    profiles = {"poller": workdir / f"poller-{tag}.prof",
                "producer": workdir / f"producer-{tag}.prof"} if profile else {}
    with pipeline(workdir, build_dir, config, emulator, profiles.get("poller")) as (
            settings, poller):
        index = settings.index_name
        cold = warm_up(settings, client)
        progress(f"  pipeline {settings.prefix} ready; warm-up record indexed in {cold:.1f} s "
                 "(first invocation, imports included)")
        probe = SearchableProbe(client, index,
                                athlete_id=athlete_ids(min(athletes, PROBED_ATHLETES)))
        probe.poll()
        command = [sys.executable, str(Path(__file__).resolve()), "produce",
                   "--prefix", settings.prefix, "--state-dir", str(settings.state_dir),
                   "--aws-port", str(emulator.port), "--athletes", str(athletes),
                   "--duration", str(duration_s)]
        if profile:
            command += ["--profile", str(profiles["producer"])]
        stop_probe = threading.Event()
        prober = threading.Thread(target=probe_loop, args=(probe, stop_probe), daemon=True)
        prober.start()
        producer = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO_ROOT)
        roles: dict[str, Callable[[], list[int]]] = {
            "producer": lambda: [producer.pid],
            "poller": lambda: [poller.pid],
            "lambda worker": lambda: children_of(poller.pid),
            "emulator (moto)": lambda: [emulator.pid],
            "OpenSearch": lambda: [opensearch_pid],
        }
        with ProcessSampler(roles) as sampler:
            out, _ = producer.communicate()
        if producer.returncode != 0:
            raise SystemExit(f"the producer subprocess failed (exit {producer.returncode})")
        summary = json.loads(out)
        ended = time.monotonic()
        progress(f"  source ended: {summary['samples']:,} samples, {summary['sent']:,} on the "
                 f"stream in {summary['calls']:,} PutRecords calls; waiting for the index")
        wait_for_index(client, index, summary["submitted"])
        caught_up_s = summary["flush_s"] + time.monotonic() - ended
        time.sleep(2.0)  # the probe's last round sees the last refresh
        stop_probe.set()
        prober.join()

        result = latency(client, index, searchable=probe)
        docs = read_documents(client, index)
        keys = {(doc["athlete_id"], doc["seq"]) for doc in docs}
        want = {(athlete, seq) for athlete in athlete_ids(athletes)
                for seq in range(round(duration_s))}
        stream_keys = read_stream_keys(settings)
        dead = count(client, settings.dlq_index_name)
    outcome = Outcome(
        athletes=athletes, duration_s=duration_s, emulator=emulator.label,
        expected=max(len(want), summary["samples"]), indexed=len(docs),
        missing=len(want - keys), stream_duplicates=sum(n - 1 for n in stream_keys.values()),
        rewritten=sum(1 for doc in docs if doc["_version"] > 1), dead_lettered=dead,
        caught_up_s=caught_up_s, cold_start_s=cold, hops=result.df.to_dict("records"),
        usage=sampler.usage,
        machine_cpu_mean=float(np.mean(sampler.machine_cpu)) if sampler.machine_cpu else math.nan,
        load_average=os.getloadavg(), producer=summary,
        per_doc_s={"measured→indexed": seconds_between(docs, "timestamp", "ingested_at"),
                   "seq": np.array([doc["seq"] for doc in docs])},
        profiles=profiles,
    )
    p = outcome.hop("measured→indexed")
    progress(f"  {athletes:,} athlete(s): {outcome.indexed:,}/{outcome.expected:,} indexed, "
             f"missing {outcome.missing}, duplicates on stream {outcome.stream_duplicates}, "
             f"written twice {outcome.rewritten}, dead-lettered {dead}; measured→indexed p50 "
             f"{p['p50_ms']:.0f} / p95 {p['p95_ms']:.0f} / p99 {p['p99_ms']:.0f} ms; CPU "
             + ", ".join(f"{role} {usage.cpu_mean:.0f}%" for role, usage in sampler.usage.items()))
    return outcome


# --- searching the largest N -------------------------------------------------------------------
def _round_down(value: float) -> int:
    """Down to two significant digits (730 → 730, 1234 → 1200)."""
    if value < 10:
        return max(1, int(value))
    step = 10 ** (len(str(int(value))) - 2)
    return int(value // step * step)


def carried_counts(outcomes: Sequence[Outcome], target_s: float) -> dict[int, bool]:
    """Per N: whether a run at N carried it (a repeated N carries if one of its runs did)."""
    verdict: dict[int, bool] = {}
    for o in outcomes:
        verdict[o.athletes] = verdict.get(o.athletes, False) or o.carries(target_s)
    return verdict


def to_repeat(outcomes: Sequence[Outcome], target_s: float) -> int | None:
    """The smallest N that missed the target although the pipeline kept up (it had caught up
    within 2 s of the source's end, with nothing lost): a stall of the shared servers does
    that, so it is run once more before the search goes on."""
    verdict = carried_counts(outcomes, target_s)
    runs = Counter(o.athletes for o in outcomes)
    kept_up = sorted(o.athletes for o in outcomes
                     if not verdict[o.athletes] and runs[o.athletes] == 1 and o.caught_up_s < 2
                     and o.missing == 0)
    return kept_up[0] if kept_up else None


def next_candidate(outcomes: Sequence[Outcome], target_s: float, ceiling: int) -> int | None:
    """The next N to try: 80 % of the best rate a failing N above the largest carried N
    sustained, if that lies between them; else bisect between them (to 10 %), or double past
    the largest when nothing failed."""
    verdict = carried_counts(outcomes, target_s)
    best = max((n for n, ok in verdict.items() if ok), default=0)
    failed = sorted(n for n, ok in verdict.items() if not ok and n > best)
    if not failed:
        candidate = best * 2
        return candidate if 0 < candidate <= ceiling else None
    above = failed[0]
    if above - best <= max(1, best // 10):
        return None
    rate = max(o.sent_per_s for o in outcomes if o.athletes in failed)
    guess = _round_down(0.8 * rate)
    if best < guess < above and guess not in verdict:
        return guess
    candidate = _round_down((best + above) / 2)
    return candidate if best < candidate < above and candidate not in verdict else None


# --- profiles ----------------------------------------------------------------------------------
def _function_time(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Cumulative seconds of the function ``name`` in a file ending with ``suffix``."""
    return sum(values[3] for (path, _, function), values in stats.stats.items()  # type: ignore[attr-defined]
               if path.endswith(suffix) and function == name)


#: What the emulator spent its time on, as (label, file suffix, function).
EMULATOR_PARTS = (
    ("all requests", "moto/core/responses.py", "call_action"),
    ("PutRecords", "moto/kinesis/responses.py", "put_records"),
    ("· trying to run the mapped function in Docker, once per record",
     "moto/awslambda/models.py", "send_kinesis_message"),
    ("· finding the shard's last sequence number, once per record",
     "moto/kinesis/models.py", "get_max_sequence_number"),
    ("GetRecords", "moto/kinesis/responses.py", "get_records"),
)


def emulator_breakdown(path: Path) -> list[tuple[str, float]]:
    stats = pstats.Stats(str(path))
    return [(label, _function_time(stats, suffix, name))
            for label, suffix, name in EMULATOR_PARTS]


def top_functions(path: Path, top: int = 10) -> str:
    """The top functions by own time of a profile, as pstats prints them."""
    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    prefixes = (str(REPO_ROOT) + "/", sys.prefix + "/", sys.base_prefix + "/")
    text = "\n".join(lines[start:])
    for prefix in prefixes:
        text = text.replace(prefix, "")
    return text


#: Built-ins a process sits in while it waits for a socket, a thread or a lock.
WAITING = ("poll' of 'select.epoll", "poll' of 'select.poll", "recv_into' of '_socket.socket",
           "acquire' of '_thread.lock", "recv' of '_socket.socket")


def waiting_share(path: Path) -> float:
    """The share of a profiled process's time spent waiting (network, threads)."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    waited = sum(values[2] for (_, _, function), values in stats.stats.items()  # type: ignore[attr-defined]
                 if any(name in function for name in WAITING))
    return waited / total if total else math.nan


# --- plots and report --------------------------------------------------------------------------
def save_png(figure: go.Figure, name: str, img_dir: Path) -> str:
    img_dir.mkdir(parents=True, exist_ok=True)
    export_png(figure, img_dir / name, width=1000, height=480)
    progress(f"wrote {img_dir / name}")
    return f"img/{name}"


def plot_single(outcome: Outcome, img_dir: Path) -> list[str]:
    import pandas as pd

    from hrnb.query import QueryResult

    bars = plot_latency(QueryResult(pd.DataFrame(outcome.hops), {}, ""))
    bars.update_layout(title=f"One athlete at 1 Hz for {outcome.duration_s:.0f} s: latency per "
                             "hop (p50/p95/p99)")
    timeline = go.Figure()
    order = np.argsort(outcome.per_doc_s["seq"])
    timeline.add_scatter(x=outcome.per_doc_s["seq"][order],
                         y=outcome.per_doc_s["measured→indexed"][order] * 1000,
                         mode="markers", name="measured→indexed")
    timeline.add_hline(y=TARGET_SINGLE_P99_S * 1000, line_dash="dash", line_color="red",
                       annotation_text="target p99 1 s")
    timeline.update_layout(title="One athlete: measured→indexed per sample",
                           xaxis_title="sample (seq, 1 per second)", yaxis_title="ms")
    return [save_png(bars, "pipeline-single-hops.png", img_dir),
            save_png(timeline, "pipeline-single-timeline.png", img_dir)]


def plot_scale(scale: Sequence[Outcome], fixed: Outcome | None, img_dir: Path) -> list[str]:
    runs = sorted(scale, key=lambda o: o.athletes)
    xs = [o.athletes for o in runs]
    lat = go.Figure()
    for p, dash in ((50, "dot"), (95, "dash"), (99, "solid")):
        lat.add_scatter(x=xs, y=[o.hop("measured→indexed")[f"p{p}_ms"] / 1000 for o in runs],
                        mode="lines+markers", name=f"p{p} measured→indexed",
                        line={"dash": dash})
    if fixed is not None:
        lat.add_scatter(x=[fixed.athletes], y=[fixed.p99_indexed_s], mode="markers",
                        marker={"symbol": "star", "size": 14},
                        name=f"p99, {fixed.emulator}")
    lat.add_hline(y=TARGET_SCALE_P99_S, line_dash="dash", line_color="red",
                  annotation_text="target p99 2 s")
    lat.update_layout(title="N athletes at 1 Hz: measured→indexed",
                      xaxis={"title": "athletes", "type": "log"},
                      yaxis={"title": "seconds", "type": "log"})
    cpu = go.Figure()
    labels = [f"{o.athletes:,}" for o in runs] + ([f"{fixed.athletes:,} (Docker off)"]
                                                   if fixed else [])
    for role in ROLES:
        cpu.add_bar(x=labels, y=[o.usage[role].cpu_mean for o in [*runs, *([fixed] if fixed
                                                                         else [])]],
                    name=role)
    cpu.update_layout(barmode="stack", title="Mean CPU while streaming, % of one core "
                      "(the machine has 2 cores = 200 %)",
                      xaxis_title="athletes", yaxis_title="% of one core")
    return [save_png(lat, "pipeline-scale-latency.png", img_dir),
            save_png(cpu, "pipeline-scale-cpu.png", img_dir)]


def _ms(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.0f}"


def _hop_p99(outcome: Outcome, hop: str) -> float:
    return outcome.hop(hop)["p99_ms"]


def scale_tables(runs: Sequence[Outcome]) -> list[str]:
    lines = [
        "| athletes | emulator | seconds | samples | indexed | missing | stream dup. | "
        "written twice | dead-lettered | p50 ms | p95 ms | p99 ms | max ms | "
        "p99 searchable ms | caught up s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in runs:
        row = o.hop("measured→indexed")
        lines.append(
            f"| {o.athletes:,} | {o.emulator} | {o.duration_s:.0f} | {o.expected:,} | "
            f"{o.indexed:,} | {o.missing} | {o.stream_duplicates} | {o.rewritten} | "
            f"{o.dead_lettered} | {_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} | "
            f"{_ms(row['p99_ms'])} | {_ms(row['max_ms'])} | "
            f"{_ms(o.hop('measured→searchable')['p99_ms'])} | {o.caught_up_s:.1f} |")
    lines += ["", "p99 per hop (ms), and the rate Kinesis acknowledged records at:", "",
              "| athletes | emulator | " + " | ".join(HOP_NAMES)
              + " | records/s acknowledged | PutRecords calls | records/call |",
              "|---:|---|" + "---:|" * (len(HOP_NAMES) + 3)]
    for o in runs:
        calls = o.producer["calls"]
        lines.append(f"| {o.athletes:,} | {o.emulator} | "
                     + " | ".join(_ms(_hop_p99(o, hop)) for hop in HOP_NAMES)
                     + f" | {o.sent_per_s:,.0f} | {calls:,} | "
                     f"{o.producer['sent'] / max(calls, 1):.1f} |")
    lines += ["", "CPU while the producer ran (mean / max, % of one core; 2 cores = 200 %) and "
              "peak RSS (MiB) per process:", "",
              "| athletes | emulator | " + " | ".join(ROLES) + " | machine (of 200 %) | "
              "load avg at the end |", "|---:|---|" + "---|" * len(ROLES) + "---:|---|"]
    for o in runs:
        cells = [f"{u.cpu_mean:.0f} / {u.cpu_max:.0f} %, {u.rss_peak:.0f} MiB"
                 for u in (o.usage[role] for role in ROLES)]
        lines.append(f"| {o.athletes:,} | {o.emulator} | " + " | ".join(cells)
                     + f" | {o.machine_cpu_mean * 2:.0f} % | "
                     f"{' '.join(f'{x:.1f}' for x in o.load_average)} |")
    return lines


def diagnosis_lines(failing: Outcome, profiled: Outcome | None, profiled_off: Outcome | None,
                    fixed: Outcome | None) -> list[str]:
    offered = failing.athletes
    worst = max(HOP_NAMES[:3], key=lambda hop: _hop_p99(failing, hop))
    lines = [
        "## Where the time goes", "",
        f"At {failing.athletes:,} athletes on the {failing.emulator}, p99 measured→indexed is "
        f"{failing.p99_indexed_s:.1f} s, {failing.p99_indexed_s / TARGET_SCALE_P99_S:.1f}× the "
        f"2 s target. The hop that takes it is **{worst}** (p99 "
        f"{_hop_p99(failing, worst) / 1000:.1f} s). The athletes offer {offered:,} records/s; "
        f"Kinesis acknowledged {failing.sent_per_s:,.0f}/s over the producer's run, so the "
        f"producer's spool fills and every sample waits longer than the one before. The "
        f"emulator process used {failing.usage['emulator (moto)'].cpu_mean:.0f} % of a core on "
        f"average (max {failing.usage['emulator (moto)'].cpu_max:.0f} %; Python's GIL keeps it "
        f"to about one core) while the producer used "
        f"{failing.usage['producer'].cpu_mean:.0f} %: the producer waits for PutRecords "
        "answers.", "",
    ]
    off_shares: dict[str, float] = {}
    if profiled is not None and "emulator" in profiled.profiles:
        shipped = emulator_breakdown(profiled.profiles["emulator"])
        off = (emulator_breakdown(profiled_off.profiles["emulator"])
               if profiled_off is not None and "emulator" in profiled_off.profiles else None)
        header = "| part | as shipped: s | share |" + (" Docker off: s | share |" if off else "")
        rows = []
        for index, (label, seconds) in enumerate(shipped):
            row = f"| {label} | {seconds:.1f} | {seconds / (shipped[0][1] or math.nan):.0%} |"
            if off:
                off_seconds = off[index][1]
                off_shares[label] = off_seconds / (off[0][1] or math.nan)
                row += f" {off_seconds:.1f} | {off_shares[label]:.0%} |"
            rows.append(row)
        lines += [
            f"**Profile.** {profiled.athletes:,} athletes for {profiled.duration_s:.0f} s on a "
            "private emulator started like the shared one but serving one request at a time "
            "under cProfile (so every request is seen; profiling slows it), with the producer "
            "and the poller under cProfile too"
            + ("; then the same on a private emulator with `DOCKER_HOST=none://`, which makes "
               "moto's Docker client fail at once" if off else "")
            + ". The emulator's time:", "",
            header, "|---|---:|---:|" + ("---:|---:|" if off else ""), *rows, "",
            "For every record put on a stream that has an event source mapping, moto tries to "
            "run the mapped function in a Docker container, whether the mapping is enabled or "
            "not (the local target creates it disabled, since `hrnb.local.poller` runs the "
            "function). "
            "There is no Docker here, so each attempt builds two Docker clients that fail, and "
            "writes the failure to the function's log group in the emulator. moto also finds "
            "a shard's last sequence number by listing every record of the shard, once per "
            "record put, so a put costs more the longer the run. Neither happens on AWS.", "",
        ]
        for name, waits_for in (("producer", "Kinesis (the emulator) and its spool thread"),
                                ("poller", "GetRecords answers and the Lambda worker")):
            path = profiled.profiles.get(name)
            if path is not None and path.exists():
                lines += [f"{name.capitalize()}: {waiting_share(path):.0%} of its time is spent "
                          f"waiting for {waits_for}; top functions by own time:", "", "```",
                          top_functions(path), "```", ""]
    if fixed is not None:
        lines += [
            f"**Side by side.** The same {fixed.athletes:,}-athlete, "
            f"{fixed.duration_s:.0f}-second run on a private emulator started exactly like the "
            "shared one except `DOCKER_HOST=none://`, so that moto's Docker client fails at "
            "once (the same pipeline, mapping and shards; unlike the shared emulator it starts "
            "empty and serves only this run, but the profile above, of an equally fresh "
            "private emulator, shows that the Docker attempts are the cost):", "",
            "| emulator | p50 ms | p95 ms | p99 ms | p99 sent→kinesis ms | "
            "p99 kinesis→indexed ms | records/s acknowledged | emulator CPU mean | missing | "
            "duplicates |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for o in (failing, fixed):
            row = o.hop("measured→indexed")
            lines.append(
                f"| {o.emulator} | {_ms(row['p50_ms'])} | {_ms(row['p95_ms'])} | "
                f"{_ms(row['p99_ms'])} | {_ms(_hop_p99(o, 'sent→kinesis'))} | "
                f"{_ms(_hop_p99(o, 'kinesis→indexed'))} | {o.sent_per_s:,.0f} | "
                f"{o.usage['emulator (moto)'].cpu_mean:.0f} % | {o.missing} | "
                f"{o.stream_duplicates + o.rewritten} |")
        verdict = ("meets the 2 s target" if fixed.carries(TARGET_SCALE_P99_S) else
                   f"misses the 2 s target by {fixed.p99_indexed_s / TARGET_SCALE_P99_S:.1f}×")
        lines += [
            "",
            f"p99 falls {failing.p99_indexed_s / fixed.p99_indexed_s:.1f}× and the records/s "
            f"acknowledged rise {fixed.sent_per_s / failing.sent_per_s:.1f}×. Without the "
            f"Docker attempts the pipeline {verdict} at {fixed.athletes:,} "
            f"athletes (p99 {fixed.p99_indexed_s:.2f} s; worst hop "
            f"{max(HOP_NAMES[:3], key=lambda hop: _hop_p99(fixed, hop))}, the emulator at "
            f"{fixed.usage['emulator (moto)'].cpu_mean:.0f} % of a core)."
            + (f" What is left is still the emulator: with Docker off, the per-record "
               f"invocation attempt (the event built, the Docker client failing at once, the "
               f"failure written to the log group) takes {off_shares[EMULATOR_PARTS[2][0]]:.0%} "
               f"of its request time and the sequence-number scan "
               f"{off_shares[EMULATOR_PARTS[3][0]]:.0%}." if off_shares else "")
            + " The fixes belong in how the local stack runs the emulator, not in the pipeline: "
            "`DOCKER_HOST=none://` in its environment (measured here), and not letting moto "
            "invoke a disabled mapping at all, as AWS never does.",
            "",
        ]
    return lines


def render(single: Outcome | None, scale: Sequence[Outcome], largest: Outcome | None,
           diagnosis: tuple[Outcome | None, Outcome | None, Outcome | None], config: Config,
           command: str,
           images: dict[str, list[str]], started_load: str, worker_python: str) -> str:
    memory_gib = psutil.virtual_memory().total / 2**30
    lines = [
        "# Benchmark: the whole pipeline on the local stack",
        "",
        f"Command: `{command}`  ",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, {memory_gib:.0f} GiB, Python {platform.python_version()} "
        f"(Lambda worker `{worker_python}`). Load average at the start {started_load}.",
        "",
        "The machine is shared: the emulator (moto) and the OpenSearch node of the local stack "
        "served other work (other engineers' test suites) during the runs, so their CPU "
        "figures include that load and absolute latencies are noisy; the machine column shows "
        "how busy both cores were. Compare runs within this report, which were measured one "
        "after the other in one session.",
        "",
        "**Set-up per scenario.** A fresh prefix provisioned with `hrnb.provision.setup` (stream, "
        "role, function from the built zips, trigger, index template and index), its own local "
        "event source mapping poller (`python -m hrnb.local.poller`, which runs the handler from "
        "the zips "
        "in a worker process on the python3.12 runtime), and a producer subprocess streaming "
        "simulated athletes in real time through `StreamSession` and `KinesisProducer` (the "
        "`hrnb stream` path, on-disk spool included). One warm-up record goes through first, so "
        "the worker's cold start (imports) is reported apart and not in the percentiles.",
        "",
        f"**Mapping configuration (chosen for scale).** A stream of {config.shards} provisioned "
        f"shards: what an on-demand stream starts with on AWS (4 MB/s and 4,000 records/s of "
        f"writes); 1,000 athletes at 1 Hz need at least 2 by the 1,000 records/s per shard "
        f"limit. BatchSize {config.batch_size} and MaximumBatchingWindowInSeconds 0: a batch "
        "leaves with whatever a poll found, so one athlete's sample is never held back, and many "
        "athletes' samples share one invocation and one `_bulk` request. StartingPosition "
        "TRIM_HORIZON, ReportBatchItemFailures, bisect on error. The local poller polls each "
        f"idle shard every {config.poll_interval_s:g} s (AWS polls a shard about once a second) "
        "and runs one invocation at a time (shards take turns), like one Lambda execution "
        "environment; OpenSearch refreshes every 1 s (its default).",
        "",
        "Hops are read from the timestamps each document carries: `timestamp` (sample measured, "
        "stamped by the source), `sent_at` (handed to the producer), `kinesis_arrival` "
        "(ApproximateArrivalTimestamp), `ingested_at` (stamped by the handler when it builds the "
        "bulk request, so the bulk round trip is not in measured→indexed but is in "
        "measured→searchable). measured→searchable is timed by `SearchableProbe` polling every "
        "0.25 s (an upper bound, exact to one poll plus one search round trip), on at most "
        f"{PROBED_ATHLETES} athletes of a run.",
        "",
    ]
    if single is not None:
        lines += [f"## One athlete at 1 Hz for {single.duration_s:.0f} s", "",
                  "| hop | samples | p50 ms | p95 ms | p99 ms | max ms |",
                  "|---|---:|---:|---:|---:|---:|"]
        for row in single.hops:
            lines.append(f"| {row['hop']} | {row['samples']} | {_ms(row['p50_ms'])} | "
                         f"{_ms(row['p95_ms'])} | {_ms(row['p99_ms'])} | {_ms(row['max_ms'])} |")
        p99 = single.p99_indexed_s
        lines += [
            "",
            f"**Target p99 measured→indexed ≤ {TARGET_SINGLE_P99_S:g} s: "
            f"{'met' if p99 <= TARGET_SINGLE_P99_S else 'missed'}** (measured "
            f"{p99 * 1000:.0f} ms). {single.indexed} of {single.expected} samples indexed, "
            f"{single.missing} missing, {single.stream_duplicates} duplicates on the stream, "
            f"{single.rewritten} documents written twice, {single.dead_lettered} dead-lettered. "
            f"Cold start (first invocation, imports included): {single.cold_start_s:.1f} s. "
            f"Most of kinesis→indexed is the wait for the shard's next poll (0 to "
            f"{config.poll_interval_s * 1000:.0f} ms); measured→searchable adds the bulk "
            "request, the refresh interval (up to 1 s) and the probe's own poll.",
            "",
            *(f"![{Path(image).stem}]({image})" for image in images.get("single", [])),
            "",
        ]
    profiled, profiled_off, fixed = diagnosis
    if scale:
        runs = sorted(scale, key=lambda o: o.athletes)
        lines += [
            "## N athletes at 1 Hz",
            "",
            "Loss and duplicates are counted three ways: every expected (athlete, seq) must be "
            "in the index (missing); every record on the stream is read back and keyed by "
            "(athlete, session, seq) (stream dup.: the producer sent one twice); documents "
            "whose `_version` is above 1 were indexed more than once (written twice: a batch "
            "re-delivered). The `_id` is athlete/session/seq, so the index itself cannot hold a "
            "sample twice. Caught up: seconds from the source's end (the 60 s of samples) "
            "until the last document was indexed, i.e. how far behind the pipeline was. The "
            "search for the largest N starts at 80 % of the rate a failing run sustained. An N "
            "that missed the target although the pipeline kept up (caught up within 2 s) is "
            "run once more, since a stall of the shared servers can cause that; it counts as "
            "carried if either run did, and both are listed.",
            "",
            *scale_tables(runs + ([fixed] if fixed else [])),
            "",
            *(f"![{Path(image).stem}]({image})" for image in images.get("scale", [])),
            "",
            "## Targets",
            "",
        ]
        if single is not None:
            lines.append(f"- p99 measured→indexed ≤ 1 s for one athlete at 1 Hz: "
                         f"**{'met' if single.p99_indexed_s <= 1 else 'missed'}**, "
                         f"{single.p99_indexed_s * 1000:.0f} ms.")
        thousand = next((o for o in runs if o.athletes == 1000), None)
        if thousand is not None:
            ok = thousand.carries(TARGET_SCALE_P99_S)
            lines.append(
                f"- 1,000 athletes at 1 Hz with zero loss and p99 ≤ 2 s: "
                f"**{'met' if ok else 'missed'}** on the shared local stack: missing "
                f"{thousand.missing}, duplicates {thousand.stream_duplicates + thousand.rewritten}"
                f", p99 {thousand.p99_indexed_s:.2f} s"
                + ("" if ok else f" ({thousand.p99_indexed_s / TARGET_SCALE_P99_S:.1f}× the "
                   "target; see below where the time goes)") + ".")
            if fixed is not None:
                lines.append(
                    f"  With the emulator's Docker attempts off: p99 "
                    f"{fixed.p99_indexed_s:.2f} s, missing {fixed.missing}, duplicates "
                    f"{fixed.stream_duplicates + fixed.rewritten} "
                    f"(**{'met' if fixed.carries(TARGET_SCALE_P99_S) else 'missed'}**).")
        if largest is not None:
            lines.append(f"- Largest N carried on the shared local stack (zero loss, zero "
                         f"duplicates, p99 ≤ 2 s) among the runs above: **{largest.athletes:,} "
                         f"athletes** (p99 {largest.p99_indexed_s:.2f} s).")
        else:
            lines.append("- No run carried its load with p99 ≤ 2 s.")
        lines.append("")
        verdict = carried_counts(runs, TARGET_SCALE_P99_S)
        failing = next((o for o in sorted(runs, key=lambda o: -o.athletes)
                        if not verdict[o.athletes]), None)
        if failing is not None and (profiled or fixed):
            lines += diagnosis_lines(failing, profiled, profiled_off, fixed)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["produce"]:
        return produce_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--athletes", default="10,100,1000", help="N for the scale runs")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per scale run")
    parser.add_argument("--single-duration", type=float, default=120.0,
                        help="seconds of the one-athlete run (0: skip it)")
    parser.add_argument("--search-runs", type=int, default=2,
                        help="extra runs searching the largest N under the p99 target")
    parser.add_argument("--max-athletes", type=int, default=4000, help="the search's ceiling")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--poll-interval", type=float, default=0.25)
    parser.add_argument("--no-diagnosis", action="store_true",
                        help="skip the profile and the side-by-side run when a target is missed")
    parser.add_argument("--output", type=Path, default=DOCS / "pipeline.md")
    args = parser.parse_args(argv)
    counts = [int(part) for part in args.athletes.split(",") if part.strip()]
    if (any(n < 1 for n in counts) or args.duration < 5 or args.search_runs < 0
            or args.single_duration < 0):
        parser.error("athlete counts must be positive, --duration at least 5 s, "
                     "--search-runs and --single-duration not negative")
    config = Config(shards=args.shards, batch_size=args.batch_size,
                    poll_interval_s=args.poll_interval)
    shared = shared_emulator()
    opensearch_pid = listening_pid(Settings.from_env(target="local").opensearch_port)
    if opensearch_pid is None:
        raise SystemExit("the OpenSearch node is not running: start it with 'hrnb local up'")
    from hrnb.local.worker import find_runtime_python

    worker_python = Path(find_runtime_python("python3.12") or sys.executable).name
    started_load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    command = " ".join(["python bench/bench_pipeline.py", *argv])
    img_dir = args.output.parent / "img"
    profiled = profiled_off = fixed = None
    with tempfile.TemporaryDirectory(prefix="hrnb-bench-pipeline-") as tmp:
        workdir = Path(tmp)
        progress("building the Lambda zips ...")
        build(workdir / "build", architectures=("x86_64",))
        common = {"workdir": workdir, "build_dir": workdir / "build", "config": config,
                  "opensearch_pid": opensearch_pid}
        single = (run_scenario(1, args.single_duration, emulator=shared, **common)
                  if args.single_duration else None)
        scale = [run_scenario(n, args.duration, emulator=shared, **common) for n in counts]
        repeat = to_repeat(scale, TARGET_SCALE_P99_S) if args.search_runs else None
        if repeat is not None:
            progress(f"{repeat:,} athletes missed the target but kept up: once more")
            scale.append(run_scenario(repeat, args.duration, emulator=shared, **common))
        for _ in range(args.search_runs):
            candidate = next_candidate(scale, TARGET_SCALE_P99_S, args.max_athletes)
            if candidate is None:
                break
            progress(f"searching the largest N under p99 {TARGET_SCALE_P99_S:g} s: "
                     f"trying {candidate:,}")
            scale.append(run_scenario(candidate, args.duration, emulator=shared, **common))
        verdict = carried_counts(scale, TARGET_SCALE_P99_S)
        failing = max((o for o in scale if not verdict[o.athletes]),
                      key=lambda o: o.athletes, default=None)
        if failing is not None and not args.no_diagnosis:
            progress(f"diagnosis: {failing.athletes:,} athletes missed the target")
            emulator_profile = workdir / "emulator.prof"
            with private_emulator(workdir, "private, profiled",
                                  profile_to=emulator_profile) as emulator:
                profiled = run_scenario(failing.athletes, PROFILE_SECONDS, emulator=emulator,
                                        profile=True, **common)
            profiled.profiles["emulator"] = emulator_profile
            off_profile = workdir / "emulator-docker-off.prof"
            with private_emulator(workdir, "private, profiled, Docker off",
                                  docker_host="none://", profile_to=off_profile) as emulator:
                profiled_off = run_scenario(failing.athletes, PROFILE_SECONDS,
                                            emulator=emulator, **common)
            profiled_off.profiles["emulator"] = off_profile
            with private_emulator(workdir, "private, Docker off",
                                  docker_host="none://") as emulator:
                fixed = run_scenario(failing.athletes, args.duration, emulator=emulator,
                                     **common)
        carried = [o for o in scale if o.carries(TARGET_SCALE_P99_S)]
        largest = max(carried, key=lambda o: o.athletes, default=None)
        report = render(single, scale, largest, (profiled, profiled_off, fixed), config,
                        command,
                        {"single": plot_single(single, img_dir) if single else [],
                         "scale": plot_scale(scale, fixed, img_dir) if scale else []},
                        started_load, worker_python)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    progress(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
