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

from hrnb.live.dashboard import COLORS, ZONE_FILLS, LiveDashboard
from hrnb.live.export import DEBIAN_CHROMIUM, export_html, export_png
from hrnb.live.indexed import IndexedRow, IndexedStatus, check_index, indexed_html
from hrnb.live.model import (
    DASH,
    DEFAULT_MAX_HR_BPM,
    AthleteWindow,
    Clock,
    HeaderView,
    LiveModel,
    LiveProgress,
    SeqRanges,
    WindowPoint,
    banner_html,
    header_html,
    interval_start,
    interval_xy,
    line_xy,
    title_text,
    utc_now,
)
from hrnb.live.session import (
    CHECK_ATHLETE_ID,
    SUMMARY_FILE,
    AthleteReport,
    LiveSession,
    PipelineCheck,
    SessionReport,
    format_report,
    verify_pipeline,
    write_report,
)

__all__ = [
    "AthleteReport",
    "AthleteWindow",
    "CHECK_ATHLETE_ID",
    "COLORS",
    "Clock",
    "DASH",
    "DEBIAN_CHROMIUM",
    "DEFAULT_MAX_HR_BPM",
    "HeaderView",
    "IndexedRow",
    "IndexedStatus",
    "LiveDashboard",
    "LiveModel",
    "LiveProgress",
    "LiveSession",
    "PipelineCheck",
    "SUMMARY_FILE",
    "SeqRanges",
    "SessionReport",
    "WindowPoint",
    "ZONE_FILLS",
    "banner_html",
    "check_index",
    "export_html",
    "export_png",
    "format_report",
    "header_html",
    "indexed_html",
    "interval_start",
    "interval_xy",
    "line_xy",
    "title_text",
    "utc_now",
    "verify_pipeline",
    "write_report",
]
