"""Query latency on a big index: "last N minutes" and "last value per 5 s" for one athlete.

The index holds ``--docs`` documents (1,000,000 by default) with the real ``heart_rate`` mapping
(:func:`hrnb.wire.index_schema.index_template`): ``--athletes`` athletes at 1 Hz side by side,
so one athlete's session is docs/athletes seconds long (10,000 s, 2.8 h, by default). It is
bulk-loaded
with opensearch-py's ``helpers.parallel_bulk`` (refresh off while loading) into a dedicated index
that is kept between runs, since loading takes a minute or two; ``--rebuild`` loads it again and
``--delete`` removes it.

Each query is the notebook's own call (:func:`hrnb.query.last_minutes`,
:func:`hrnb.query.last_per_interval`) for one athlete, with ``now``/``end`` pinned to the data's
last timestamp so every run asks the same question. Timed: the whole call (request, response,
pandas frame) and OpenSearch's own ``took`` for the same request body, over ``--repeat`` runs
after three warm-up runs. Writes ``docs/benchmarks/query.md`` and a PNG plot. Needs the OpenSearch
node of the local stack (``hrnb local up``)::

    python bench/bench_query.py [--docs 1000000] [--athletes 100] [--repeat 30] [--rebuild]
    python bench/bench_query.py --delete
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
from opensearchpy import helpers  # noqa: E402

from hrnb.config import Settings  # noqa: E402
from hrnb.live import export_png  # noqa: E402
from hrnb.provision.security import _admin_opensearch  # noqa: E402
from hrnb.query import QueryResult, last_minutes, last_per_interval  # noqa: E402
from hrnb.wire.index_schema import index_template  # noqa: E402
from hrnb.wire.records import format_timestamp  # noqa: E402

INDEX = "hrnb-bench-query"
DOCS = REPO_ROOT / "docs" / "benchmarks"
#: The data's clock: fixed, so a kept index answers the same questions on every run.
DATA_END = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LAST_MINUTES = (1, 5, 15, 60)
PER_INTERVAL_MINUTES = (5, 15, 60, 120)


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- the index ---------------------------------------------------------------------------------
def athlete_id(number: int) -> str:
    return f"q{number:03d}"


def documents(total: int, athletes: int, index: str) -> Iterator[dict[str, Any]]:
    """Bulk actions: ``athletes`` athletes at 1 Hz, interleaved in time, ending at DATA_END,
    with the fields the pipeline writes (measured, sent, Kinesis arrival, ingested)."""
    seconds = -(-total // athletes)
    start = DATA_END - timedelta(seconds=seconds)
    rng = np.random.default_rng(42)
    heart_rates = rng.integers(60, 185, size=total)
    made = 0
    for second in range(seconds):
        measured = start + timedelta(seconds=second)
        stamps = [format_timestamp(measured + timedelta(milliseconds=ms)) for ms in (0, 3, 40,
                                                                                     180)]
        for number in range(athletes):
            if made == total:
                return
            athlete = athlete_id(number)
            heart_rate = int(heart_rates[made])
            yield {
                "_index": index,
                "_id": f"{athlete}/bench/{second}",
                "_source": {
                    "schema": 1, "athlete_id": athlete, "session_id": "bench",
                    "device_id": f"strap-{number:03d}", "seq": second,
                    "timestamp": stamps[0], "heart_rate": heart_rate,
                    "rr_intervals_ms": [round(60000 / heart_rate, 1)], "sensor_contact": True,
                    "energy_expended": None, "sent_at": stamps[1],
                    "kinesis_arrival": stamps[2], "ingested_at": stamps[3],
                    "alert": heart_rate > 150,
                },
            }
            made += 1


@dataclass(frozen=True)
class Load:
    docs: int
    seconds: float | None  # None: the index was already there


def ensure_index(client: Any, index: str, total: int, athletes: int, *, rebuild: bool) -> Load:
    """The benchmark index with ``total`` documents: kept if complete, else (re)loaded. Its
    shard request cache is off: repeating one aggregation would otherwise time a cache hit
    (a dashboard's ``now``-relative queries are never cached either)."""
    if client.indices.exists(index=index):
        found = client.count(index=index)["count"]
        if found == total and not rebuild:
            progress(f"reusing index {index} ({found:,} documents); --rebuild loads it again")
            client.indices.put_settings(index=index,
                                        body={"index": {"requests.cache.enable": False}})
            return Load(found, None)
        progress(f"index {index} holds {found:,} documents; loading it again")
        client.indices.delete(index=index)
    template = index_template(index)["template"]
    client.indices.create(index=index, body={
        "settings": {**template["settings"], "refresh_interval": "-1",
                     "requests.cache.enable": False},
        "mappings": template["mappings"],
    })
    started = time.monotonic()
    loaded = 0
    for ok, item in helpers.parallel_bulk(client, documents(total, athletes, index),
                                          thread_count=2, chunk_size=5000, request_timeout=120):
        if not ok:
            raise SystemExit(f"bulk load failed: {item}")
        loaded += 1
        if loaded % 100_000 == 0:
            elapsed = time.monotonic() - started
            progress(f"  loaded {loaded:,} of {total:,} ({loaded / elapsed:,.0f} docs/s)")
    client.indices.put_settings(index=index, body={"index": {"refresh_interval": "1s"}})
    client.indices.refresh(index=index)
    seconds = time.monotonic() - started
    found = client.count(index=index)["count"]
    if found != total:
        raise SystemExit(f"{found:,} documents in {index} after loading {total:,}")
    progress(f"loaded {total:,} documents in {seconds:.0f} s ({total / seconds:,.0f} docs/s)")
    return Load(total, seconds)


# --- timing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    name: str
    rows: int
    call_ms: tuple[float, ...]  # the hrnb.query call, end to end
    took_ms: tuple[float, ...]  # OpenSearch's own time for the same body

    def call(self, q: float) -> float:
        return float(np.percentile(self.call_ms, q))

    def took(self, q: float) -> float:
        return float(np.percentile(self.took_ms, q))


def time_query(name: str, run: Callable[[], QueryResult], client: Any, index: str,
               repeat: int) -> Timing:
    for _ in range(3):  # warm-up: caches, connection, first pandas use
        result = run()
    calls, tooks = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        calls.append((time.perf_counter() - started) * 1000)
        tooks.append(float(client.search(index=index, body=result.query)["took"]))
    timing = Timing(name, len(result.df), tuple(calls), tuple(tooks))
    progress(f"  {name}: {timing.rows} rows, call p50 {timing.call(50):.1f} ms, "
             f"p95 {timing.call(95):.1f} ms; OpenSearch took p50 {timing.took(50):.0f} ms")
    return timing


def measure(client: Any, index: str, athlete: str, repeat: int,
            session_minutes: float) -> list[Timing]:
    timings = []
    for minutes in LAST_MINUTES:
        timings.append(time_query(
            f"last {minutes} min", lambda m=minutes: last_minutes(
                client, index, m, athlete_id=athlete, now=DATA_END), client, index, repeat))
    spans = [m for m in PER_INTERVAL_MINUTES if m < session_minutes] + [session_minutes]
    for minutes in spans:
        label = (f"last value per 5 s, {minutes:g} min" if minutes != session_minutes
                 else f"last value per 5 s, whole session ({minutes:.0f} min)")
        timings.append(time_query(
            label, lambda m=minutes: last_per_interval(
                client, index, "5s", athlete_id=athlete, start=DATA_END - timedelta(minutes=m),
                end=DATA_END, max_athletes=1), client, index, repeat))
    return timings


# --- report ------------------------------------------------------------------------------------
def plot(timings: Sequence[Timing], path: Path, docs: int) -> str:
    figure = go.Figure()
    names = [t.name for t in timings]
    figure.add_bar(x=names, y=[t.call(50) for t in timings], name="call p50",
                   error_y={"type": "data", "symmetric": False,
                            "array": [t.call(95) - t.call(50) for t in timings]})
    figure.add_bar(x=names, y=[t.took(50) for t in timings], name="OpenSearch took p50")
    figure.update_layout(barmode="group", yaxis_title="ms (error bar: up to p95)",
                         title=f"One athlete on a {docs:,}-document index")
    path.parent.mkdir(parents=True, exist_ok=True)
    export_png(figure, path, width=1100, height=500)
    progress(f"wrote {path}")
    return f"img/{path.name}"


def render(timings: Sequence[Timing], load: Load, *, index: str, athletes: int, store: str,
           repeat: int, command: str, image: str) -> str:
    per_athlete = load.docs // athletes
    loaded = ("reused from an earlier run (kept between runs)" if load.seconds is None else
              f"loaded in this run with `helpers.parallel_bulk` (2 threads, 5,000 per request, "
              f"refresh off) in {load.seconds:.0f} s, {load.docs / load.seconds:,.0f} docs/s")
    lines = [
        f"# Benchmark: queries on a {load.docs:,}-document index",
        "",
        f"Command: `{command}`  ",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, against the local "
        f"OpenSearch node (one node, heap as `hrnb local up` sets it); load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}. The node and the machine were shared "
        "with other work during the run, so single slow runs show up in p95.",
        "",
        f"Index `{index}`: {load.docs:,} documents with the pipeline's mapping, {athletes} "
        f"athletes at 1 Hz side by side ({per_athlete:,} samples, "
        f"{per_athlete / 3600:.1f} h each), one shard, {store} on disk; {loaded}. The shard "
        "request cache is off for this index, so a repeated aggregation is computed again "
        "rather than answered from the cache (as a dashboard's `now-…` queries are).",
        "",
        f"Each row is the notebook's call for one athlete ({athletes - 1} others share the "
        f"index), timed over {repeat} runs after 3 warm-up runs: the whole call (request, JSON, "
        "pandas frame) and OpenSearch's own `took` for the same request body. `last N min` is "
        "`hrnb.query.last_minutes` (every sample, paged in time order with `search_after`); "
        "`last value per 5 s` is `hrnb.query.last_per_interval` (`terms` → `date_histogram` → "
        "`top_hits` size 1, the reference dashboard's metric).",
        "",
        "| query | rows | call p50 ms | call p95 ms | call max ms | OpenSearch took p50 ms | "
        "took p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        lines.append(f"| {t.name} | {t.rows:,} | {t.call(50):.1f} | {t.call(95):.1f} | "
                     f"{max(t.call_ms):.1f} | {t.took(50):.0f} | {t.took(95):.0f} |")
    lines += [
        "",
        f"![query latency]({image})",
        "",
        "Reading the table: the filter on one athlete and a time range is answered from the "
        "index in a few milliseconds; what grows with the span is the number of rows fetched "
        "and turned into a DataFrame (`last N min`) or the number of 5-second buckets each "
        "running a `top_hits` (`last value per 5 s`). The difference between the call and "
        "`took` is the HTTP round trip, JSON decoding and pandas.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--athletes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per query")
    parser.add_argument("--index", default=INDEX)
    parser.add_argument("--rebuild", action="store_true", help="load the index again")
    parser.add_argument("--delete", action="store_true", help="delete the index and exit")
    parser.add_argument("--output", type=Path, default=DOCS / "query.md")
    args = parser.parse_args(argv)
    settings = Settings.from_env(target="local")
    client = _admin_opensearch(settings, str(settings.resolved_opensearch_url), timeout=120)
    if args.delete:
        if client.indices.exists(index=args.index):
            client.indices.delete(index=args.index)
            progress(f"deleted index {args.index}")
        else:
            progress(f"no index {args.index}: nothing to delete")
        return 0
    if args.docs < args.athletes or args.athletes < 1 or args.repeat < 1:
        parser.error("need --docs >= --athletes >= 1 and --repeat >= 1")
    load = ensure_index(client, args.index, args.docs, args.athletes, rebuild=args.rebuild)
    store = client.cat.indices(index=args.index, h="store.size").strip()
    session_minutes = args.docs // args.athletes / 60
    athlete = athlete_id(args.athletes // 2)
    progress(f"timing queries for athlete {athlete} ({args.repeat} runs each)")
    timings = measure(client, args.index, athlete, args.repeat, session_minutes)
    command = " ".join(["python bench/bench_query.py", *(sys.argv[1:] if argv is None else argv)])
    image = plot(timings, args.output.parent / "img" / "query-latency.png", load.docs)
    report = render(timings, load, index=args.index, athletes=args.athletes, store=store,
                    repeat=args.repeat, command=command, image=image)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    progress(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
