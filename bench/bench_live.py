"""Kernel memory and chart update time of the live view over a 3-hour session, in compressed time.

A simulated athlete (:class:`hrnb.sources.simulated.SimulatedSource`, as fast as possible, with
its usual contact losses) feeds :meth:`hrnb.live.LiveDashboard.on_item`, the listener the
streaming session calls in a notebook, for ``--hours`` of session time at 1 Hz. The dashboard's
clock follows the session's (each sample arrives 50 ms after it was measured) and it redraws on
every sample, as it does in real time at 1 Hz (it redraws at most every 0.5 s). No OpenSearch:
this is the kernel side only (model, figure, widgets).

Three passes over the same seeded session:

1. :class:`hrnb.live.LiveModel` alone: time per ``apply``;
2. the dashboard: time per ``on_item`` (model update and redraw), and the process RSS;
3. the dashboard under tracemalloc (which slows Python down, hence apart): the Python memory the
   live view holds, over session time, and where it is allocated.

Writes ``docs/benchmarks/live.md`` and PNG plots under ``docs/benchmarks/img/``::

    python bench/bench_live.py [--hours 3] [--athletes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import psutil  # noqa: E402

from hrnb.live import LiveDashboard, LiveModel, export_png  # noqa: E402
from hrnb.sources.base import ConnectionEvent, Sample  # noqa: E402
from hrnb.sources.simulated import SimulatedSource  # noqa: E402

DOCS = REPO_ROOT / "docs" / "benchmarks"
START = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
ARRIVAL_DELAY = timedelta(milliseconds=50)
CHECKPOINT_S = 300  # memory is read every 5 minutes of session time
REPORTED_AT_MIN = (10, 30, 60, 120, 180)


def progress(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


@dataclass
class Pass:
    """What one pass over the session recorded."""

    item_ms: list[float] = field(default_factory=list)  # per item, in order
    item_at_s: list[float] = field(default_factory=list)  # session time of each item
    memory_at_s: list[float] = field(default_factory=list)  # checkpoints (session seconds)
    memory_mib: list[float] = field(default_factory=list)  # tracemalloc current or RSS
    window_points: int = 0
    seconds: float = 0.0  # wall time of the pass
    top_allocations: list[str] = field(default_factory=list)


async def replay(hours: float, athletes: int, handle: Callable[[Sample | ConnectionEvent,
                                                                datetime], None],
                 checkpoint: Callable[[float], None], *, time_items: bool = True) -> Pass:
    """Run the seeded session as fast as possible through ``handle``; ``checkpoint`` every
    CHECKPOINT_S of session time. ``time_items`` keeps each item's time (not under tracemalloc:
    the lists would count as the view's memory)."""
    source = SimulatedSource([f"athlete-{i + 1}" for i in range(athletes)], rate_hz=1.0,
                             duration_s=hours * 3600, speed=None, seed=11, start_at=START)
    result = Pass()
    next_checkpoint = CHECKPOINT_S
    started = time.perf_counter()
    last_report = started
    async for item in source:
        at = item.received_at if isinstance(item, Sample) else item.at
        session_s = (at - START).total_seconds()
        while session_s >= next_checkpoint:
            checkpoint(next_checkpoint)
            next_checkpoint += CHECKPOINT_S
        before = time.perf_counter()
        handle(item, at + ARRIVAL_DELAY)
        if time_items:
            result.item_ms.append((time.perf_counter() - before) * 1000)
            result.item_at_s.append(session_s)
        if time.perf_counter() - last_report > 10:
            last_report = time.perf_counter()
            progress(f"  {session_s / 3600:.2f} h of {hours:g} h session time")
    checkpoint(next_checkpoint)
    result.seconds = time.perf_counter() - started
    return result


async def model_pass(hours: float, athletes: int) -> Pass:
    model = LiveModel()
    result = await replay(hours, athletes, lambda item, now: model.apply(item, now),
                          lambda _at: None)
    result.window_points = max(len(window.points) for window in model.athletes.values())
    return result


def dashboard(now: list[datetime]) -> LiveDashboard:
    # redraw_every_s=0: one redraw per sample, as at 1 Hz in real time (at most every 0.5 s).
    return LiveDashboard(clock=lambda: now[0], redraw_every_s=0)


async def dashboard_pass(hours: float, athletes: int) -> Pass:
    now = [START]
    view = dashboard(now)
    process = psutil.Process()
    rss: list[tuple[float, float]] = []

    def handle(item: Sample | ConnectionEvent, arrival: datetime) -> None:
        now[0] = arrival
        view.on_item(item)

    result = await replay(hours, athletes, handle,
                          lambda at: rss.append((at, process.memory_info().rss / 2**20)))
    result.memory_at_s = [at for at, _ in rss]
    result.memory_mib = [mib for _, mib in rss]
    result.window_points = max(len(window.points) for window in view.model.athletes.values())
    return result


async def traced_pass(hours: float, athletes: int) -> Pass:
    gc.collect()
    tracemalloc.start()
    baseline = tracemalloc.get_traced_memory()[0]
    now = [START]
    view = dashboard(now)
    traced: list[tuple[float, float]] = []

    def handle(item: Sample | ConnectionEvent, arrival: datetime) -> None:
        now[0] = arrival
        view.on_item(item)

    def checkpoint(at: float) -> None:
        gc.collect()  # count what is held, not garbage awaiting the cycle collector
        traced.append((at, (tracemalloc.get_traced_memory()[0] - baseline) / 2**20))

    result = await replay(hours, athletes, handle, checkpoint, time_items=False)
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    result.memory_at_s = [at for at, _ in traced]
    result.memory_mib = [mib for _, mib in traced]
    root = str(REPO_ROOT) + "/"
    result.top_allocations = [
        f"{stat.size / 2**10:,.0f} KiB in {stat.count:,} blocks: "
        f"{_short(str(stat.traceback[0]), root)}"
        for stat in snapshot.statistics("lineno")[:8]
    ]
    return result


def _short(location: str, root: str) -> str:
    for prefix in (root, sys.prefix + "/", sys.base_prefix + "/"):
        location = location.replace(prefix, "")
    return location


def at_minute(run: Pass, minute: int) -> float:
    """Memory at the checkpoint nearest ``minute`` of session time."""
    index = int(np.argmin(np.abs(np.array(run.memory_at_s) - minute * 60)))
    return run.memory_mib[index]


def per_bucket(run: Pass, q: float, bucket_s: int = 600) -> tuple[list[float], list[float]]:
    at = np.array(run.item_at_s)
    ms = np.array(run.item_ms)
    xs, ys = [], []
    for start in range(0, int(at.max()) + 1, bucket_s):
        chosen = ms[(at >= start) & (at < start + bucket_s)]
        if chosen.size >= 60:  # not the session's last few items (the disconnect)
            xs.append((start + bucket_s / 2) / 60)
            ys.append(float(np.percentile(chosen, q)))
    return xs, ys


def plots(timed: Pass, traced: Pass, img_dir: Path) -> list[str]:
    img_dir.mkdir(parents=True, exist_ok=True)
    update = go.Figure()
    for q, dash in ((50, "solid"), (95, "dash"), (99, "dot")):
        xs, ys = per_bucket(timed, q)
        update.add_scatter(x=xs, y=ys, mode="lines+markers", name=f"p{q}", line={"dash": dash})
    update.update_layout(title="LiveDashboard.on_item (model update + redraw) per 10 minutes",
                         xaxis_title="session time (min)", yaxis_title="ms per item",
                         yaxis={"rangemode": "tozero"})
    memory = go.Figure()
    memory.add_scatter(x=[at / 60 for at in traced.memory_at_s], y=traced.memory_mib,
                       mode="lines+markers", name="Python memory held (tracemalloc)")
    memory.add_scatter(x=[at / 60 for at in timed.memory_at_s], y=timed.memory_mib,
                       mode="lines+markers", name="process RSS", yaxis="y2")
    memory.update_layout(title="Kernel memory over the session",
                         xaxis_title="session time (min)",
                         yaxis={"title": "tracemalloc MiB", "rangemode": "tozero"},
                         yaxis2={"title": "RSS MiB", "overlaying": "y", "side": "right",
                                 "rangemode": "tozero"},
                         legend={"orientation": "h", "y": -0.2}, margin={"r": 80})
    names = ["live-update-time.png", "live-memory.png"]
    for figure, name in zip((update, memory), names, strict=True):
        export_png(figure, img_dir / name, width=1000, height=450)
        progress(f"wrote {img_dir / name}")
    return [f"img/{name}" for name in names]


def render(model: Pass, timed: Pass, traced: Pass, *, hours: float, athletes: int,
           command: str, images: Sequence[str]) -> str:
    items = np.array(timed.item_ms)
    apply_us = np.array(model.item_ms) * 1000
    samples = len(items)
    minutes = [m for m in REPORTED_AT_MIN if m <= hours * 60]
    first, last = minutes[0], minutes[-1]
    plateau = 60 if last > 60 else first  # the seqs awaiting the index check fill in 40 min
    growth_kib_per_h = ((at_minute(traced, last) - at_minute(traced, plateau)) * 1024
                        / max((last - plateau) / 60, 1e-9))
    lines = [
        f"# Benchmark: the live view over a {hours:g}-hour session",
        "",
        f"Command: `{command}`  ",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; load average at the end "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (a shared machine: other work ran "
        "beside it, which shows in the maxima).",
        "",
        f"{athletes} simulated athlete(s) at 1 Hz for {hours:g} h of session time "
        f"({samples:,} items: samples and connection events, contact losses included), replayed "
        "as fast as possible into `LiveDashboard.on_item`, the listener a notebook's streaming "
        "session calls, with the dashboard's clock on session time and one redraw per sample "
        "(in real time it redraws at most every 0.5 s, so at 1 Hz on every sample). The "
        f"dashboard keeps a {LiveDashboard.window_s:g} s window per athlete "
        f"({timed.window_points} points on the chart at the end); the full history is in "
        "OpenSearch. Kernel side only: no index polling.",
        "",
        "## Update time",
        "",
        "| what | p50 | p95 | p99 | max | total |",
        "|---|---:|---:|---:|---:|---:|",
        f"| `LiveModel.apply` alone | {np.percentile(apply_us, 50):.0f} µs | "
        f"{np.percentile(apply_us, 95):.0f} µs | {np.percentile(apply_us, 99):.0f} µs | "
        f"{apply_us.max():,.0f} µs | {model.seconds:.1f} s |",
        f"| `LiveDashboard.on_item` (update + redraw) | {np.percentile(items, 50):.2f} ms | "
        f"{np.percentile(items, 95):.2f} ms | {np.percentile(items, 99):.2f} ms | "
        f"{items.max():.1f} ms | {timed.seconds:.1f} s |",
        "",
        f"At 1 Hz the view spends {np.mean(items) / 10:.2f} % of one core on the chart "
        f"(mean {np.mean(items):.2f} ms per second of data). The update time at the start and "
        f"at the end of the session (p50 per 10 minutes): "
        f"{per_bucket(timed, 50)[1][0]:.2f} ms and {per_bucket(timed, 50)[1][-1]:.2f} ms.",
        "",
        "## Memory",
        "",
        "| session time | " + " | ".join(f"{m} min" for m in minutes) + " |",
        "|---|" + "---:|" * len(minutes),
        "| Python memory held by the live view (tracemalloc, MiB) | "
        + " | ".join(f"{at_minute(traced, m):.2f}" for m in minutes) + " |",
        "| process RSS (MiB) | " + " | ".join(f"{at_minute(timed, m):.0f}" for m in minutes)
        + " |",
        "",
        "Everything the view keeps is bounded: the chart window (10 minutes), the last value "
        "per 5 s within it, the last RR intervals, and the arrivals it compares with the index "
        "(at most 4 per second of window, so at 1 Hz they fill in 40 minutes). "
        f"From {plateau} to {last} minutes the memory the view holds changes by "
        f"{growth_kib_per_h:+,.0f} KiB per hour of session "
        f"({at_minute(traced, plateau):.2f} → {at_minute(traced, last):.2f} MiB). Largest "
        "allocations still held at the end (tracemalloc, by line; the source's own are "
        "included, since it runs in the kernel too, and so is each sample's arrival time, "
        "which this script creates and the view keeps):",
        "",
        "```",
        *traced.top_allocations,
        "```",
        "",
        *(f"![{Path(image).stem}]({image})" for image in images),
        "",
    ]
    return "\n".join(lines)


async def run(hours: float, athletes: int) -> tuple[Pass, Pass, Pass]:
    progress(f"pass 1/3: LiveModel alone, {hours:g} h at 1 Hz")
    model = await model_pass(hours, athletes)
    progress(f"pass 2/3: LiveDashboard update time and RSS ({model.seconds:.0f} s for the model)")
    timed = await dashboard_pass(hours, athletes)
    progress(f"pass 3/3: LiveDashboard under tracemalloc ({timed.seconds:.0f} s for pass 2)")
    traced = await traced_pass(hours, athletes)
    return model, timed, traced


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=3.0, help="session time (3 h)")
    parser.add_argument("--athletes", type=int, default=1)
    parser.add_argument("--output", type=Path, default=DOCS / "live.md")
    args = parser.parse_args(argv)
    if not 0.2 <= args.hours <= 24 or args.athletes < 1:
        parser.error("--hours must be 0.2..24 and --athletes at least 1")
    model, timed, traced = asyncio.run(run(args.hours, args.athletes))
    command = " ".join(["python bench/bench_live.py", *(sys.argv[1:] if argv is None else argv)])
    images = plots(timed, traced, args.output.parent / "img")
    report = render(model, timed, traced, hours=args.hours, athletes=args.athletes,
                    command=command, images=images)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    progress(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
