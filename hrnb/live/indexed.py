"""What OpenSearch holds of the live session, for the panel beside the chart."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from hrnb.errors import QueryError
from hrnb.live.model import DASH, LiveProgress
from hrnb.query import SearchableProbe, index_progress, latency, missing_seqs

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


@dataclass(frozen=True)
class IndexedRow:
    """One athlete's session as seen live and as found in the index."""

    athlete_id: str
    session_id: str
    seen_live: int
    indexed: int
    last_indexed_seq: int | None
    last_indexed_at: datetime | None
    lag_s: float | None  # how far the index's latest sample trails the live stream's
    missing: int  # seen live longer ago than the grace period, not in the index
    missing_runs: str  # e.g. "50–54, 61"


@dataclass(frozen=True, eq=False)
class IndexedStatus:
    """One poll of the index."""

    checked_at: datetime
    rows: tuple[IndexedRow, ...] = ()
    latency: pd.DataFrame | None = None
    error: str | None = None


def indexed_rows(client: OpenSearch, index: str,
                 progress: Sequence[LiveProgress]) -> tuple[IndexedRow, ...]:
    """Each athlete's session as seen live against what the index holds (blocking: several
    searches; QueryError if one fails). The indexed panel and the session report both use it;
    ``missing`` counts the ``settled`` seqs the index lacks."""
    if not progress:
        return ()
    found = index_progress(client, index, athlete_id=[p.athlete_id for p in progress]).df
    rows = []
    for p in progress:
        match = found[(found["athlete_id"] == p.athlete_id)
                      & (found["session_id"] == p.session_id)]
        missing = missing_seqs(client, index, p.athlete_id, p.session_id, p.settled).df
        last_at = None if match.empty else match["last_timestamp"].iloc[0].to_pydatetime()
        rows.append(IndexedRow(
            athlete_id=p.athlete_id,
            session_id=p.session_id,
            seen_live=p.seen,
            indexed=0 if match.empty else int(match["indexed"].iloc[0]),
            last_indexed_seq=None if match.empty else int(match["last_seq"].iloc[0]),
            last_indexed_at=last_at,
            lag_s=(p.last_at - last_at).total_seconds() if p.last_at and last_at else None,
            missing=int(missing["count"].sum()),
            missing_runs=", ".join(
                f"{a}" if a == b else f"{a}–{b}"
                for a, b in zip(missing["first_seq"], missing["last_seq"], strict=True)),
        ))
    return tuple(rows)


def check_index(
    client: OpenSearch,
    index: str,
    progress: Sequence[LiveProgress],
    *,
    now: datetime,
    probe: SearchableProbe | None = None,
    latency_window_s: float = 120.0,
) -> IndexedStatus:
    """Compare the live side with the index (blocking: several searches). A failed query
    becomes ``error`` on the status, so the panel says so and the next poll tries again."""
    if not progress:
        return IndexedStatus(checked_at=now)
    try:
        rows = indexed_rows(client, index, progress)
        latencies = latency(client, index, athlete_id=[p.athlete_id for p in progress],
                            session_id=[p.session_id for p in progress],
                            start=now - timedelta(seconds=latency_window_s),
                            searchable=probe).df
    except QueryError as exc:
        return IndexedStatus(checked_at=now, error=str(exc))
    return IndexedStatus(checked_at=now, rows=tuple(rows), latency=latencies)


def indexed_html(status: IndexedStatus | None) -> str:
    """The indexed panel: per athlete count, last sample, lag, missing; then latency."""
    if status is None:
        return "<b>Indexed</b><div>not checked yet</div>"
    parts = [f"<b>Indexed</b> <small>(checked {status.checked_at:%H:%M:%S} UTC)</small>"]
    if status.error:
        parts.append(f"<div style='color:#c62828'>{html.escape(status.error)}</div>")
    for row in status.rows:
        last = DASH if row.last_indexed_at is None else (
            f"#{row.last_indexed_seq} at {row.last_indexed_at:%H:%M:%S}")
        lag = DASH if row.lag_s is None else f"{row.lag_s:.1f} s"
        missing = "none" if not row.missing else f"{row.missing} ({row.missing_runs})"
        parts.append(
            f"<div><b>{html.escape(row.athlete_id)}</b>: {row.indexed} indexed of "
            f"{row.seen_live} seen · last {last} · behind live {lag} · missing {missing}</div>")
    if status.latency is not None:
        for hop in ("measured→indexed", "measured→searchable"):
            found = status.latency[status.latency["hop"] == hop]
            if found.empty or not found["samples"].iloc[0]:
                continue
            r = found.iloc[0]
            parts.append(f"<div>{hop}: p50 {r['p50_ms']:.0f} · p95 {r['p95_ms']:.0f} · "
                         f"p99 {r['p99_ms']:.0f} ms <small>({r['samples']} samples)</small></div>")
    return "".join(parts)

