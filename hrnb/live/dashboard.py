"""The Plotly FigureWidget dashboard: redraws from the model, polls the index in the background."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from hrnb import alerts
from hrnb.config import Settings
from hrnb.errors import HrnbError, QueryError
from hrnb.live.export import DEBIAN_CHROMIUM, export_html, export_png
from hrnb.live.indexed import IndexedStatus, check_index, indexed_html
from hrnb.live.model import (
    Clock,
    LiveModel,
    banner_html,
    header_html,
    interval_xy,
    line_xy,
    title_text,
    utc_now,
)
from hrnb.metrics import (
    HeartRateZones,
)
from hrnb.query import SearchableProbe
from hrnb.sources.base import ConnectionEvent, Sample
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

logger = logging.getLogger(__name__)


COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#bcbd22", "#7f7f7f")


ZONE_FILLS = ("#d9f0d3", "#a6dba0", "#fee08b", "#fdae61", "#f46d43")


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
    client: OpenSearch | None = None
    zones: HeartRateZones | None = None
    zones_by_athlete: dict[str, HeartRateZones] | None = None
    window_s: float = 600.0
    redraw_every_s: float = 0.5
    index_poll_s: float = 3.0
    alerts_poll_s: float = 5.0
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
    notified: Any = field(init=False)
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
                     DEFAULT_ALERT_THRESHOLD_BPM)
        self.model = LiveModel(threshold_bpm=threshold, zones=self.zones,
                               zones_by_athlete=self.zones_by_athlete, window_s=self.window_s)
        self.figure = go.FigureWidget(layout=self._layout())
        self.header = widgets.HTML(header_html([]))
        self.banner = widgets.HTML("")
        self.indexed = widgets.HTML(indexed_html(None),
                                    layout=widgets.Layout(width="340px", padding="0 0 0 12px"))
        self.notified = widgets.HTML(notified_html(None))
        self.widget = widgets.VBox([
            self.banner, self.header, widgets.HBox([self.figure, self.indexed]), self.notified,
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

    async def poll_alerts(self) -> list[alerts.Notification]:
        """Move newly delivered notifications into the log (a worker thread); show them."""
        if self.settings is None:
            raise QueryError("the notifications panel needs settings")
        try:
            listed = await asyncio.to_thread(alerts.delivered, self.settings)
        except HrnbError as exc:  # alerts not set up for this prefix, say: one line, not a trace
            self.notified.value = f"<b>Notified</b> <small>{html.escape(str(exc))}</small>"
            raise QueryError(f"alert notifications: {exc}") from exc
        self.notified.value = notified_html(listed)
        return listed

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
            jobs.append((self.alerts_poll_s, self.poll_alerts, "alerts poll"))
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



def notified_html(notifications: list[alerts.Notification] | None, *, last: int = 5) -> str:
    """The notifications panel: the newest ``last`` episodes notified (once each), newest first."""
    if notifications is None:
        return "<b>Notified</b> <small>(not checked yet)</small>"
    if not notifications:
        return "<b>Notified</b> <small>no episode so far</small>"
    newest = sorted(notifications, key=lambda n: n.start, reverse=True)[:last]
    rows = "".join(f"<li>{html.escape(n.message)}</li>" for n in newest)
    return (f"<b>Notified</b> <small>({len(notifications)} episode(s), via SNS)</small>"
            f"<ul style='margin:0'>{rows}</ul>")
