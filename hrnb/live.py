"""The live view: a rolling-window model of what each athlete's watch sends, and a Plotly
``FigureWidget`` dashboard that draws it beside a panel of what OpenSearch has indexed.

Two layers:

* :class:`LiveModel` is pure and bounded: each athlete keeps a window of recent samples
  (``window_s``, hard-capped in points), the last value per ``interval_s``, the last RR
  intervals, connection state and the seqs seen (as ranges). A 3-hour session at 1 Hz holds
  the same memory as a 10-minute one; the full history lives in OpenSearch (:mod:`hrnb.query`).
  Header, banner and panel text come from pure functions of it.
* :class:`LiveDashboard` is thin: its :meth:`~LiveDashboard.on_item` is the listener the
  streaming pump calls for every :class:`~hrnb.sources.base.Sample` and
  :class:`~hrnb.sources.base.ConnectionEvent`; it updates the model and redraws at most every
  ``redraw_every_s`` inside one ``fig.batch_update()``. :meth:`~LiveDashboard.start` adds
  background tasks on the running loop (the notebook kernel's) that keep the header honest
  when data stops, poll OpenSearch through ``asyncio.to_thread`` and time searchability.

The header never shows a frozen value: after a disconnect, lost skin contact, or
``stale_after_s`` without data, bpm, zone and RMSSD read "—".

PNG export drives Debian's ``chromium`` (``/usr/bin/chromium``) through kaleido, never a
downloaded browser: kaleido 1.x hands its ``path`` option to choreographer, which then skips its
own browser search.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from hrnb.config import Settings
from hrnb.errors import ExportError, QueryError
from hrnb.metrics import (
    DEFAULT_MAX_GAP_S,
    Alert,
    HeartRateZones,
    is_above,
    rmssd_ms,
    update_alert,
    zones_from_max_hr,
)
from hrnb.query import SearchableProbe, index_progress, latency, missing_seqs
from hrnb.records import heart_rate_problem
from hrnb.sources.base import ConnectionEvent, Sample

logger = logging.getLogger(__name__)

#: Debian's chromium; PNG export uses it and nothing else.
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
#: Zones until the athlete's own max HR is given.
DEFAULT_MAX_HR_BPM = 190
DASH = "—"
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f")
ZONE_FILLS = ("#d9f0d3", "#a6dba0", "#fee08b", "#fdae61", "#f46d43")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- seqs seen, bounded ------------------------------------------------------------------------
class SeqRanges:
    """A set of seq numbers kept as sorted inclusive ranges, so an unbroken 3-hour session is
    one pair. Past ``max_ranges`` the oldest range is forgotten (counted in ``forgotten``)."""

    def __init__(self, max_ranges: int = 256) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.max_ranges = max_ranges
        self.count = 0
        self.forgotten = 0

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already there."""
        starts, ends = self._starts, self._ends
        if ends and seq == ends[-1] + 1:  # the usual case: the next seq in order
            ends[-1] = seq
        else:
            i = bisect_left(ends, seq)  # first range that ends at or after seq
            if i < len(ends) and starts[i] <= seq:
                return False
            joins_left = i > 0 and ends[i - 1] == seq - 1
            joins_right = i < len(starts) and starts[i] == seq + 1
            if joins_left and joins_right:
                ends[i - 1] = ends[i]
                del starts[i], ends[i]
            elif joins_left:
                ends[i - 1] = seq
            elif joins_right:
                starts[i] = seq
            else:
                starts.insert(i, seq)
                ends.insert(i, seq)
        self.count += 1
        while len(starts) > self.max_ranges:
            self.forgotten += ends[0] - starts[0] + 1
            self.count -= ends[0] - starts[0] + 1
            del starts[0], ends[0]
        return True

    def __contains__(self, seq: int) -> bool:
        i = bisect_left(self._ends, seq)
        return i < len(self._ends) and self._starts[i] <= seq

    def ranges(self, upto: int | None = None) -> list[tuple[int, int]]:
        """The ranges, clipped to seqs ``<= upto`` when given."""
        pairs = zip(self._starts, self._ends, strict=True)
        if upto is None:
            return list(pairs)
        return [(low, min(high, upto)) for low, high in pairs if low <= upto]


# --- one athlete's window ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WindowPoint:
    """A sample on screen; ``after_break`` starts a new line segment (after a dropout)."""

    seq: int
    at: datetime
    bpm: int
    above: bool
    after_break: bool


class AthleteWindow:
    """What the live view keeps for one athlete: all of it bounded."""

    def __init__(self, athlete_id: str, *, window_s: float, max_points: int, rr_window: int,
                 interval_s: float) -> None:
        self.athlete_id = athlete_id
        self.window_s = window_s
        self.interval_s = interval_s
        self.points: deque[WindowPoint] = deque(maxlen=max_points)
        self.interval_last: deque[tuple[datetime, int]] = deque(
            maxlen=math.ceil(window_s / interval_s) + 1)
        self.rr_ms: deque[float] = deque(maxlen=rr_window)
        self.arrivals: deque[tuple[datetime, int]] = deque(maxlen=max_points)
        self.session_id: str | None = None
        self.device_id: str | None = None
        self.seen = SeqRanges()
        self.settled_upto: int | None = None  # highest seq seen longer ago than the grace period
        self.samples_seen = 0
        self.state = "waiting"
        self.detail = ""
        self.current: WindowPoint | None = None  # None: nothing trustworthy to show
        self.last_seq: int | None = None
        self.last_arrival: datetime | None = None
        self.lag_s: float | None = None
        self.alert: Alert | None = None
        self._break_next = False

    def lose_signal(self, state: str, detail: str = "") -> None:
        """Disconnected or no skin contact: nothing current, no alert, RR runs broken."""
        self.state, self.detail = state, detail
        self.current = None
        self.alert = None
        self.rr_ms.clear()
        self._break_next = True

    def add(self, sample: Any, arrival: datetime, threshold_bpm: float) -> None:
        bpm = sample.measurement.heart_rate
        if sample.session_id != self.session_id:
            self.session_id = sample.session_id
            self.seen = SeqRanges()
            self.arrivals.clear()
            self.settled_upto = self.last_seq = None
            self._break_next = True
        self.device_id = sample.device_id
        self.samples_seen += 1
        contact = sample.measurement.sensor_contact
        if heart_rate_problem(bpm, contact) is None:  # what the pipeline indexes (no contact too)
            self.seen.add(sample.seq)
            self.arrivals.append((arrival, sample.seq))
        in_order = self.last_seq is None or sample.seq > self.last_seq
        if not in_order:
            return  # a late duplicate: counted as seen, not drawn again
        if self.last_seq is not None and sample.seq != self.last_seq + 1:
            self.rr_ms.clear()  # beats were lost in between
            self._break_next = True
        self.last_seq = sample.seq
        self.last_arrival = arrival
        self.lag_s = (arrival - sample.received_at).total_seconds()
        if contact is False:
            self.lose_signal("no contact", "sensor reports no skin contact")
            return
        self.state, self.detail = "connected", ""
        point = WindowPoint(sample.seq, sample.received_at, bpm, is_above(bpm, threshold_bpm),
                            self._break_next)
        self._break_next = False
        self.points.append(point)
        horizon = point.at - timedelta(seconds=self.window_s)
        while self.points[0].at < horizon:
            self.points.popleft()
        self.current = point
        self.rr_ms.extend(sample.measurement.rr_intervals_ms)
        self.alert = update_alert(self.alert, point.at, bpm, threshold_bpm)
        bucket = interval_start(point.at, self.interval_s)
        if self.interval_last and self.interval_last[-1][0] == bucket:
            self.interval_last[-1] = (bucket, bpm)
        else:
            self.interval_last.append((bucket, bpm))
        while self.interval_last[0][0] < horizon - timedelta(seconds=self.interval_s):
            self.interval_last.popleft()

    def settle(self, now: datetime, grace_s: float) -> list[tuple[int, int]]:
        """Seq ranges seen more than ``grace_s`` ago: by then they should be indexed."""
        cutoff = now - timedelta(seconds=grace_s)
        while self.arrivals and self.arrivals[0][0] <= cutoff:
            _, seq = self.arrivals.popleft()
            self.settled_upto = seq if self.settled_upto is None else max(self.settled_upto, seq)
        return [] if self.settled_upto is None else self.seen.ranges(upto=self.settled_upto)


def interval_start(at: datetime, interval_s: float) -> datetime:
    """Start of the fixed ``interval_s`` bucket holding ``at`` (aligned to the epoch, as
    OpenSearch's ``date_histogram`` aligns them)."""
    seconds = math.floor(at.timestamp() / interval_s) * interval_s
    return datetime.fromtimestamp(seconds, UTC)


def line_xy(points: Iterable[WindowPoint],
            max_gap_s: float = DEFAULT_MAX_GAP_S) -> tuple[list[Any], list[Any]]:
    """x/y for the heart-rate line, with a ``None`` gap at each dropout so the line never
    bridges missing data."""
    xs: list[Any] = []
    ys: list[Any] = []
    previous: WindowPoint | None = None
    for point in points:
        if previous is not None and (
            point.after_break or (point.at - previous.at).total_seconds() > max_gap_s
        ):
            xs.append(None)
            ys.append(None)
        xs.append(point.at)
        ys.append(point.bpm)
        previous = point
    return xs, ys


def interval_xy(interval_last: Iterable[tuple[datetime, int]],
                interval_s: float) -> tuple[list[Any], list[Any]]:
    """x/y for the last-value-per-interval steps, with a ``None`` gap where whole intervals
    had no sample."""
    xs: list[Any] = []
    ys: list[Any] = []
    previous: datetime | None = None
    for start, bpm in interval_last:
        if previous is not None and (start - previous).total_seconds() > interval_s:
            xs.append(None)
            ys.append(None)
        xs.append(start)
        ys.append(bpm)
        previous = start
    return xs, ys


# --- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderView:
    """One athlete's header line, as text."""

    athlete_id: str
    bpm: str
    zone: str
    rmssd: str
    connection: str
    lag: str
    alert: str | None


@dataclass(frozen=True)
class LiveProgress:
    """What the live side saw of one athlete's current session, for the indexed panel."""

    athlete_id: str
    session_id: str
    seen: int
    last_seq: int | None
    last_at: datetime | None
    settled: tuple[tuple[int, int], ...]


class LiveModel:
    """Every athlete's bounded window, updated by each item from a source."""

    def __init__(
        self,
        *,
        threshold_bpm: float = 150,
        zones: HeartRateZones | None = None,
        zones_by_athlete: dict[str, HeartRateZones] | None = None,
        window_s: float = 600.0,
        max_rate_hz: float = 4.0,
        rr_window: int = 60,
        interval_s: float = 5.0,
        stale_after_s: float = 5.0,
        max_gap_s: float = DEFAULT_MAX_GAP_S,
    ) -> None:
        self.threshold_bpm = threshold_bpm
        self.zones = zones or zones_from_max_hr(DEFAULT_MAX_HR_BPM)
        self.zones_by_athlete = dict(zones_by_athlete or {})
        self.window_s = window_s
        self.max_points = max(1, math.ceil(window_s * max_rate_hz))
        self.rr_window = rr_window
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s
        self.max_gap_s = max_gap_s
        self.athletes: dict[str, AthleteWindow] = {}

    def window(self, athlete_id: str) -> AthleteWindow:
        if athlete_id not in self.athletes:
            self.athletes[athlete_id] = AthleteWindow(
                athlete_id, window_s=self.window_s, max_points=self.max_points,
                rr_window=self.rr_window, interval_s=self.interval_s)
        return self.athletes[athlete_id]

    def zones_for(self, athlete_id: str) -> HeartRateZones:
        return self.zones_by_athlete.get(athlete_id, self.zones)

    def apply(self, item: Sample | ConnectionEvent, now: datetime) -> str:
        """Take one sample or connection event (``now``: when it reached the view); returns
        the athlete it concerns."""
        window = self.window(item.athlete_id)
        if isinstance(item, ConnectionEvent):
            if item.kind in ("disconnected", "contact_lost"):
                state = "disconnected" if item.kind == "disconnected" else "no contact"
                window.lose_signal(state, item.detail)
            else:  # connected, reconnected, contact_restored: wait for a fresh sample
                window.state, window.detail = "connected", item.detail
                window.current = None
            return item.athlete_id
        window.add(item, now, self.threshold_bpm)
        return item.athlete_id

    def header(self, athlete_id: str, now: datetime) -> HeaderView:
        """The header for one athlete at ``now``: "—" for anything not current."""
        window = self.athletes[athlete_id]
        connection = window.state if not window.detail else f"{window.state} ({window.detail})"
        current = window.current
        if current is not None and window.last_arrival is not None:
            silent_s = (now - window.last_arrival).total_seconds()
            if silent_s > self.stale_after_s:
                current = None
                connection = f"no data for {silent_s:.0f} s"
        rmssd = rmssd_ms(window.rr_ms) if current is not None else None
        lag = DASH if window.lag_s is None or current is None else f"{window.lag_s:.2f} s"
        alert = None
        if current is not None and window.alert is not None:
            alert = (f"{athlete_id} above {self.threshold_bpm:g} bpm for "
                     f"{window.alert.duration_s(current.at):.0f} s "
                     f"(now {window.alert.latest_bpm}, peak {window.alert.peak_bpm} bpm)")
        return HeaderView(
            athlete_id=athlete_id,
            bpm=DASH if current is None else f"{current.bpm} bpm",
            zone=DASH if current is None else self.zones_for(athlete_id).name_of(current.bpm),
            rmssd=DASH if rmssd is None else f"{rmssd:.0f} ms",
            connection=connection,
            lag=lag,
            alert=alert,
        )

    def headers(self, now: datetime) -> list[HeaderView]:
        return [self.header(athlete_id, now) for athlete_id in self.athletes]

    def progress(self, now: datetime, grace_s: float) -> list[LiveProgress]:
        """Per athlete with a session: counts, last seq and the settled seq ranges."""
        return [
            LiveProgress(
                athlete_id=window.athlete_id,
                session_id=window.session_id,
                seen=window.seen.count,
                last_seq=window.last_seq,
                last_at=window.points[-1].at if window.points else None,
                settled=tuple(window.settle(now, grace_s)),
            )
            for window in self.athletes.values()
            if window.session_id is not None
        ]


# --- text for the widgets ---------------------------------------------------------------------
def header_html(views: Sequence[HeaderView]) -> str:
    """A small table: one row per athlete."""
    if not views:
        return "<div>waiting for the first sample…</div>"
    cells = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 10px'>{html.escape(text)}</td>" for text in (
            v.athlete_id, v.bpm, v.zone, f"RMSSD {v.rmssd}", v.connection, f"lag {v.lag}",
        )) + "</tr>"
        for v in views
    )
    return f"<table style='font-size:15px'>{cells}</table>"


def banner_html(views: Sequence[HeaderView]) -> str:
    """A red banner while any athlete is above the threshold; empty otherwise."""
    alerts = [v.alert for v in views if v.alert]
    if not alerts:
        return ""
    lines = "<br>".join(f"⚠ {html.escape(text)}" for text in alerts)
    return ("<div style='background:#c62828;color:white;padding:6px 10px;font-weight:bold;"
            f"border-radius:4px'>{lines}</div>")


def title_text(views: Sequence[HeaderView]) -> str:
    """The header folded into one line, for the figure title (and so for exports)."""
    return " | ".join(f"{v.athlete_id} {v.bpm} · {v.zone} · RMSSD {v.rmssd} · {v.connection}"
                      for v in views)


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


def check_index(
    client: Any,
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
        found = index_progress(client, index,
                               athlete_id=[p.athlete_id for p in progress]).df
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


# --- export ------------------------------------------------------------------------------------
def export_html(figure: go.Figure, path: str | Path) -> Path:
    """A self-contained HTML file (plotly.js embedded: it opens offline)."""
    target = Path(path)
    go.Figure(figure).write_html(target, include_plotlyjs=True, full_html=True)
    return target


def export_png(figure: go.Figure, path: str | Path, *, chromium: str | Path = DEBIAN_CHROMIUM,
               width: int = 1200, height: int = 600) -> Path:
    """A PNG rendered by kaleido in Debian's chromium (``path`` in kaleido's options, so it
    never looks for or downloads another browser; MathJax off: no network)."""
    import kaleido

    target = Path(path)
    if not Path(chromium).is_file():
        raise ExportError(
            f"PNG export needs Debian's chromium at {chromium}, which is missing: "
            "run 'apt-get install chromium' (as root)", path=str(target))
    try:
        image = kaleido.calc_fig_sync(
            go.Figure(figure), opts={"format": "png", "width": width, "height": height},
            kopts={"path": str(chromium), "mathjax": False})
    except Exception as exc:  # kaleido and choreographer raise many kinds; name them once
        raise ExportError(f"kaleido could not render {target.name} with {chromium}: {exc}",
                          path=str(target)) from exc
    target.write_bytes(image)
    return target


# --- the dashboard -------------------------------------------------------------------------------
@dataclass
class _Traces:
    line: int
    interval_last: int
    above: int


@dataclass(eq=False)
class LiveDashboard:
    """Live chart + header + alert banner + indexed panel, for several athletes at once.

    Attach ``dashboard.on_item`` (or the dashboard itself: it is callable) to the streaming
    pump, show ``dashboard.widget`` (or the dashboard) in a cell, ``await dashboard.start()``
    for the background refresh, ``await dashboard.stop()`` at the end.
    """

    settings: Settings | None = None
    client: Any = None
    zones: HeartRateZones | None = None
    zones_by_athlete: dict[str, HeartRateZones] | None = None
    window_s: float = 600.0
    redraw_every_s: float = 0.5
    index_poll_s: float = 3.0
    probe_every_s: float = 0.5
    missing_grace_s: float = 30.0
    height: int = 460
    clock: Clock = utc_now
    model: LiveModel = field(init=False)
    figure: go.FigureWidget = field(init=False)
    widget: Any = field(init=False)
    header: Any = field(init=False)
    banner: Any = field(init=False)
    indexed: Any = field(init=False)
    probe: SearchableProbe | None = field(init=False, default=None)
    status: IndexedStatus | None = field(init=False, default=None)
    redraws: int = field(init=False, default=0)
    _traces: dict[str, _Traces] = field(init=False, default_factory=dict)
    _dirty: bool = field(init=False, default=False)
    _last_draw: float = field(init=False, default=-math.inf)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        import ipywidgets as widgets

        threshold = (self.settings.hr_alert_threshold_bpm if self.settings else
                     Settings.__dataclass_fields__["hr_alert_threshold_bpm"].default)
        self.model = LiveModel(threshold_bpm=threshold, zones=self.zones,
                               zones_by_athlete=self.zones_by_athlete, window_s=self.window_s)
        self.figure = go.FigureWidget(layout=self._layout())
        self.header = widgets.HTML(header_html([]))
        self.banner = widgets.HTML("")
        self.indexed = widgets.HTML(indexed_html(None),
                                    layout=widgets.Layout(width="340px", padding="0 0 0 12px"))
        self.widget = widgets.VBox([
            self.banner, self.header, widgets.HBox([self.figure, self.indexed]),
        ])
        if self.client is not None and self.settings is not None:
            self.probe = SearchableProbe(self.client, self.settings.index_name, clock=self.clock)

    def _layout(self) -> go.Layout:
        zones = self.model.zones
        top = max(zones.max_hr_bpm + 10, self.model.threshold_bpm + 20)
        shapes = [
            {"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "y0": band.low_bpm,
             "y1": band.high_bpm or top, "fillcolor": ZONE_FILLS[band.zone - 1],
             "opacity": 0.35, "line": {"width": 0}, "layer": "below"}
            for band in zones.bands()
        ]
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1,
                       "y0": self.model.threshold_bpm, "y1": self.model.threshold_bpm,
                       "line": {"color": "#c62828", "width": 2, "dash": "dash"}})
        annotations = [
            {"xref": "paper", "x": 1, "y": band.low_bpm, "text": band.name, "showarrow": False,
             "xanchor": "right", "yanchor": "bottom", "font": {"size": 10, "color": "#555"}}
            for band in zones.bands()
        ]
        annotations.append({"xref": "paper", "x": 0, "y": self.model.threshold_bpm,
                            "text": f"alert > {self.model.threshold_bpm:g} bpm",
                            "showarrow": False, "xanchor": "left", "yanchor": "bottom",
                            "font": {"color": "#c62828"}})
        return go.Layout(
            height=self.height, margin={"l": 50, "r": 20, "t": 40, "b": 40},
            yaxis={"title": "heart rate (bpm)", "range": [40, top]},
            xaxis={"title": "time (UTC)"}, shapes=shapes, annotations=annotations,
            legend={"orientation": "h", "y": -0.2}, title={"text": "waiting for data",
                                                           "font": {"size": 13}},
        )

    # -- listener ---------------------------------------------------------------------------
    def on_item(self, item: Sample | ConnectionEvent) -> None:
        """The pump's listener: update the model (cheap), redraw when one is due."""
        self.model.apply(item, self.clock())
        self._dirty = True
        if time.monotonic() - self._last_draw >= self.redraw_every_s:
            self.redraw()

    __call__ = on_item

    # -- drawing ----------------------------------------------------------------------------
    def _ensure_traces(self, athlete_id: str) -> _Traces:
        if athlete_id not in self._traces:
            color = COLORS[len(self._traces) % len(COLORS)]
            first = len(self.figure.data)
            self.figure.add_scatter(name=f"{athlete_id}", mode="lines",
                                    line={"color": color, "width": 2}, connectgaps=False)
            self.figure.add_scatter(name=f"{athlete_id} last per {self.model.interval_s:g} s",
                                    mode="lines+markers", line={"color": color, "width": 1,
                                                                "dash": "dot", "shape": "hv"},
                                    marker={"size": 5}, opacity=0.7)
            self.figure.add_scatter(name=f"{athlete_id} > {self.model.threshold_bpm:g} bpm",
                                    mode="markers", marker={"color": "#c62828", "size": 7},
                                    showlegend=False)
            self._traces[athlete_id] = _Traces(first, first + 1, first + 2)
        return self._traces[athlete_id]

    def redraw(self) -> None:
        """Push the model to the widgets in one batch."""
        now = self.clock()
        views = self.model.headers(now)
        with self.figure.batch_update():
            for athlete_id, window in self.model.athletes.items():
                traces = self._ensure_traces(athlete_id)
                xs, ys = line_xy(window.points, self.model.max_gap_s)
                self.figure.data[traces.line].update(x=xs, y=ys)
                xs, ys = interval_xy(window.interval_last, self.model.interval_s)
                self.figure.data[traces.interval_last].update(x=xs, y=ys)
                above = [p for p in window.points if p.above]
                self.figure.data[traces.above].update(x=[p.at for p in above],
                                                      y=[p.bpm for p in above])
            self.figure.layout.title.text = title_text(views) or "waiting for data"
        self.header.value = header_html(views)
        self.banner.value = banner_html(views)
        self._dirty = False
        self._last_draw = time.monotonic()
        self.redraws += 1

    def refresh_header(self) -> None:
        """Header and banner only: keeps "—" honest while no items arrive."""
        views = self.model.headers(self.clock())
        self.header.value = header_html(views)
        self.banner.value = banner_html(views)

    # -- the index side ---------------------------------------------------------------------
    async def poll_index(self) -> IndexedStatus:
        """One poll of the index in a worker thread; the panel shows the result."""
        if self.client is None or self.settings is None:
            raise QueryError("the indexed panel needs an OpenSearch client and settings")
        now = self.clock()
        progress = self.model.progress(now, self.missing_grace_s)
        previous_error = self.status.error if self.status else None
        self.status = await asyncio.to_thread(
            check_index, self.client, self.settings.index_name, progress, now=now,
            probe=self.probe)
        if self.status.error and self.status.error != previous_error:
            logger.warning("live index poll: %s", self.status.error)
        self.indexed.value = indexed_html(self.status)
        return self.status

    async def _every(self, period_s: float, step: Callable[[], Any], what: str) -> None:
        """Run ``step`` every ``period_s`` until cancelled; a failure is logged once (not on
        every retry) and the loop goes on, so the view outlives an OpenSearch outage."""
        problem: str | None = None
        while True:
            try:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
                if problem is not None:
                    logger.info("live %s works again", what)
                    problem = None
            except QueryError as exc:
                if str(exc) != problem:
                    logger.warning("live %s: %s", what, exc)
                problem = str(exc)
            except Exception as exc:  # keep the view alive; the log has the traceback
                if repr(exc) != problem:
                    logger.exception("live %s failed; retrying every %.1f s", what, period_s)
                problem = repr(exc)
            await asyncio.sleep(period_s)

    def _tick(self) -> None:
        if self._dirty:
            self.redraw()
        else:
            self.refresh_header()

    async def _probe_once(self) -> None:
        """Time searchability for the athletes on screen only."""
        assert self.probe is not None
        athletes = sorted(self.model.athletes)
        if not athletes:
            return
        if athletes != self.probe.athlete_id:
            self.probe.retarget(athletes)
        await asyncio.to_thread(self.probe.poll)

    async def start(self) -> None:
        """Background tasks on the running loop: redraw/staleness tick, index poll, probe."""
        if self._tasks:
            return
        jobs: list[tuple[float, Callable[[], Any], str]] = [
            (self.redraw_every_s, self._tick, "redraw")]
        if self.client is not None and self.settings is not None:
            jobs.append((self.index_poll_s, self.poll_index, "index poll"))
            jobs.append((self.probe_every_s, self._probe_once, "searchable probe"))
        for period, step, what in jobs:
            task = asyncio.create_task(self._every(period, step, what), name=f"hrnb-live {what}")
            self._tasks.add(task)

    async def stop(self) -> None:
        """Cancel the background tasks and wait until they have ended; draw a last time."""
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.redraw()

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    # -- output -----------------------------------------------------------------------------
    def export_html(self, path: str | Path) -> Path:
        return export_html(self.figure, path)

    def export_png(self, path: str | Path, *, chromium: str | Path = DEBIAN_CHROMIUM) -> Path:
        return export_png(self.figure, path, chromium=chromium, height=self.height)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
