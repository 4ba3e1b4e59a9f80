"""Cold start and memory of the local OpenSearch node with fine-grained access control (security
plugin, TLS, SigV4 front) against the plain node. Writes docs/benchmarks/node.md.

Each run starts a stack of its own (emulator and node, no poller) on free ports in a fresh state
directory, so the node initialises its data (and, secured, its security index) from nothing, as
on a first ``hrnb local up``; the distribution is already unpacked in the cache. Start time is
``launcher.up`` until both servers answer their health checks (the secured one through the
front, as the master user); RSS is the node's process tree after ``--idle`` seconds.

    python bench/bench_node.py [--runs 1] [--idle 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from hrnb.config import Settings
from hrnb.local import launcher

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "node.md"


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def one_run(security: bool, idle_s: float) -> tuple[float, float]:
    """(seconds until healthy, node RSS in MiB) of a fresh stack."""
    with tempfile.TemporaryDirectory(prefix="hrnb-bench-node-") as tmp:
        settings = Settings.from_env(
            target="local", state_dir=Path(tmp), aws_port=free_port(),
            opensearch_port=free_port(), opensearch_node_port=free_port(),
            opensearch_security=security, opensearch_url=None, aws_endpoint_url=None)
        launcher.ensure_opensearch(settings, progress=progress)  # unpacking is not start-up
        started = time.monotonic()
        try:
            launcher.up(settings, poller=False, progress=lambda _m: None)
            elapsed = time.monotonic() - started
            time.sleep(idle_s)
            rss = launcher.status(settings).service(launcher.OPENSEARCH).rss_mb or 0.0
        finally:
            launcher.down(settings, wipe=True, progress=lambda _m: None)
    return elapsed, rss


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=DOC)
    args = parser.parse_args(argv)
    rows = []
    for security in (False, True):
        label = "secured (plugin, TLS, front)" if security else "plain"
        starts, rsses = [], []
        for run in range(args.runs):
            elapsed, rss = one_run(security, args.idle)
            progress(f"{label} run {run + 1}: healthy after {elapsed:.1f} s, RSS {rss:.0f} MiB")
            starts.append(elapsed)
            rsses.append(rss)
        rows.append((label, statistics.median(starts), min(starts), max(starts),
                     statistics.median(rsses)))
    heap = Settings.from_env(target="local").opensearch_heap_mb
    lines = [
        "# Local OpenSearch node: secured against plain",
        "",
        f"`python bench/bench_node.py --runs {args.runs} --idle {args.idle:g}` on "
        f"{datetime.now(UTC):%Y-%m-%d} ({platform.machine()}, {os.cpu_count()} CPUs, shared with "
        f"other work), OpenSearch {Settings().opensearch_version}, heap {heap} MB. Cold start: a "
        "fresh state directory (first initialisation of the data and, secured, of the security "
        "index), from spawn until healthy. RSS: the node's process tree after the idle time.",
        "",
        "| node | cold start median (s) | min | max | RSS median (MiB) |",
        "|---|---:|---:|---:|---:|",
        *(f"| {label} | {median:.1f} | {low:.1f} | {high:.1f} | {rss:.0f} |"
          for label, median, low, high, rss in rows),
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
