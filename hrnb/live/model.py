"""The pure, bounded model of the live view: a rolling window per athlete, the last value per
interval, connection state and the seqs seen; header and banner text are pure functions of it."""

from __future__ import annotations

import html
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hrnb.metrics import (
    DEFAULT_MAX_GAP_S,
    Alert,
    HeartRateZones,
    is_above,
    rmssd_ms,
    update_alert,
    zones_from_max_hr,
)
from hrnb.query.progress import SeqRanges
from hrnb.sources.base import ConnectionEvent, Sample
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM
from hrnb.wire.records import heart_rate_problem

#: Zones until the athlete's own max HR is given.
DEFAULT_MAX_HR_BPM = 190


DASH = "—"


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


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
        threshold_bpm: float = DEFAULT_ALERT_THRESHOLD_BPM,
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

