"""Benchmark replay of a large CSV: time to the first sample and peak memory, whatever the size.

Writes a CSV of ``--mb`` megabytes (1 Hz heart rate with RR intervals, one athlete), then replays
it as fast as possible (``ReplaySource(speed=None)``) in a fresh child process, which reports when
its first sample came out, how many samples it replayed within ``--seconds`` and its peak RSS
(``ru_maxrss``). Targets (issue #12): first sample in under 2 s and under 150 MB RSS for 200 MB.
Writes ``docs/benchmarks/replay.md``. Usage::

    python bench/bench_replay.py [--mb 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOC = REPO_ROOT / "docs" / "benchmarks" / "replay.md"

#: Run in the child: replay for a while, then print what it measured as JSON.
CHILD = """
import asyncio, json, resource, sys, time
from hrnb.sources import ReplaySource, Sample

async def main(path, seconds):
    started = time.monotonic()
    first_s, count = None, 0
    source = ReplaySource(path, speed=None)
    async with source:
        async for item in source:
            if isinstance(item, Sample):
                count += 1
                if first_s is None:
                    first_s = time.monotonic() - started
                if time.monotonic() - started > seconds:
                    break
    elapsed = time.monotonic() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first_sample_s": first_s, "samples": count, "elapsed_s": elapsed,
                      "peak_rss_mb": rss_mb}))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def write_csv(path: Path, megabytes: int, progress: bool = True) -> int:
    """A 1 Hz recording of about ``megabytes`` MB; returns its row count."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    target = megabytes * 1024 * 1024
    rows = 0
    with path.open("w") as out:
        out.write("timestamp,heart_rate,rr_intervals_ms\n")
        written = 0
        while written < target:
            lines = []
            for _ in range(10_000):
                bpm = 60 + rows % 120
                moment = (start + timedelta(seconds=rows)).isoformat(timespec="milliseconds")
                lines.append(f"{moment},{bpm},{60000 / bpm:.1f} {60000 / bpm + 3:.1f}\n")
                rows += 1
            chunk = "".join(lines)
            out.write(chunk)
            written += len(chunk)
            if progress and rows % 500_000 == 0:
                print(f"  wrote {written / 1e6:.0f} MB ({rows:,} rows)", flush=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--mb", type=int, default=200, help="CSV size in MB")
    options.add_argument("--seconds", type=float, default=20.0, help="replay this long")
    options.add_argument("--output", type=Path, default=DOC)
    args = options.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hrnb-bench-replay-") as tmp:
        path = Path(tmp) / "large.csv"
        print(f"writing a {args.mb} MB CSV ...", flush=True)
        rows = write_csv(path, args.mb)
        size_mb = path.stat().st_size / 1e6
        print(f"replaying {size_mb:.0f} MB ({rows:,} rows) for up to {args.seconds:g} s ...",
              flush=True)
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.seconds)],
                             capture_output=True, text=True, check=True, cwd=REPO_ROOT)
        wall_s = time.monotonic() - started
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rate = result["samples"] / result["elapsed_s"]
    print(f"first sample after {result['first_sample_s']:.3f} s; {result['samples']:,} samples "
          f"in {result['elapsed_s']:.1f} s ({rate:,.0f}/s); "
          f"peak RSS {result['peak_rss_mb']:.0f} MB")
    lines = [
        "# Replay of a large CSV",
        "",
        f"`python bench/bench_replay.py --mb {args.mb} --seconds {args.seconds:g}` on "
        f"{platform.machine()}, Python {platform.python_version()}, "
        f"{datetime.now(UTC):%Y-%m-%d}.",
        "",
        "The file is read as it is replayed (a chunk of 512 rows at a time in a worker thread), "
        "so the first sample does not wait for the whole file and memory does not grow with it.",
        "",
        "| file | rows | first sample | replayed | rate | peak RSS (child) |",
        "|---|---|---|---|---|---|",
        f"| {size_mb:.0f} MB CSV | {rows:,} | {result['first_sample_s']:.3f} s | "
        f"{result['samples']:,} in {result['elapsed_s']:.1f} s | {rate:,.0f} samples/s | "
        f"{result['peak_rss_mb']:.0f} MB |",
        "",
        "Targets: first sample under 2 s, peak RSS under 150 MB "
        f"({'met' if result['first_sample_s'] < 2 and result['peak_rss_mb'] < 150 else 'missed'}"
        f"). Child process wall time including interpreter start: {wall_s:.1f} s.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
