"""hrnb.live: the bounded rolling-window model (pure), the widget layer, exports through Debian's
chromium, and the indexed panel against the real OpenSearch node."""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import admin_opensearch, eventually

from hrnb.config import Settings
from hrnb.errors import ExportError
from hrnb.hrm import Measurement
from hrnb.live import (
    DASH,
    DEBIAN_CHROMIUM,
    LiveDashboard,
    LiveModel,
    SeqRanges,
    WindowPoint,
    banner_html,
    export_png,
    header_html,
    indexed_html,
    interval_start,
    interval_xy,
    line_xy,
)
from hrnb.metrics import zones_from_max_hr, zones_karvonen
from hrnb.sources.base import ConnectionEvent, Sample

T0 = datetime(2026, 3, 1, 7, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample(seq: int, bpm: int, *, athlete: str = "ana", session: str = "s1",
           seconds: float | None = None, rr: tuple[float, ...] = (),
           contact: bool | None = True) -> Sample:
    when = at(seq if seconds is None else seconds)
    return Sample(athlete, session, f"strap-{athlete}", seq, when,
                  Measurement(bpm, contact, None, rr))


def event(kind: str, seconds: float, athlete: str = "ana") -> ConnectionEvent:
    return ConnectionEvent(kind, at(seconds), athlete, f"strap-{athlete}")  # type: ignore[arg-type]


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def feed(model: LiveModel, items: list[Any], *, lag_s: float = 0.25) -> None:
    for item in items:
        when = item.received_at if isinstance(item, Sample) else item.at
        model.apply(item, when + timedelta(seconds=lag_s))


# --- seq ranges ----------------------------------------------------------------------------------
def test_seq_ranges_merge_in_and_out_of_order() -> None:
    seen = SeqRanges()
    for seq in [0, 1, 2, 5, 6, 4, 9, 3, 2]:
        seen.add(seq)
    assert seen.ranges() == [(0, 6), (9, 9)]
    assert seen.count == 8
    assert not seen.add(5)
    assert 4 in seen and 7 not in seen and 9 in seen
    assert seen.ranges(upto=5) == [(0, 5)]
    seen.add(8)
    seen.add(7)
    assert seen.ranges() == [(0, 9)]


def test_seq_ranges_stay_bounded() -> None:
    seen = SeqRanges(max_ranges=3)
    for seq in range(0, 20, 2):  # ten isolated seqs
        seen.add(seq)
    assert seen.ranges() == [(14, 14), (16, 16), (18, 18)]
    assert (seen.count, seen.forgotten) == (3, 7)


# --- the rolling window --------------------------------------------------------------------------
def test_window_memory_is_bounded_over_a_three_hour_session() -> None:
    model = LiveModel(window_s=600, rr_window=60)
    three_hours = 3 * 3600
    rr = (800.0, 810.0)

    def run(first: int, last: int) -> None:
        for seq in range(first, last):
            if seq % 997 == 0:  # an occasional lost notification
                continue
            model.apply(sample(seq, 120 + seq % 40, rr=rr), at(seq + 0.2))

    tracemalloc.start()  # before the first sample: everything the window holds is traced
    run(0, 3600)
    window = model.athletes["ana"]
    before = tracemalloc.take_snapshot()
    run(3600, three_hours)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 64 * 1024, f"memory grew by {growth} bytes over two more hours"
    assert len(window.points) <= 601
    assert window.points[-1].at - window.points[0].at <= timedelta(seconds=600)
    assert len(window.interval_last) <= 122
    assert len(window.rr_ms) == 60
    assert window.samples_seen == three_hours - len(range(0, three_hours, 997))
    assert len(window.seen.ranges()) == len(range(0, three_hours, 997))  # one per dropout


def test_last_value_per_interval_in_the_window() -> None:
    model = LiveModel(interval_s=5)
    feed(model, [sample(seq, 100 + seq) for seq in range(12)])
    assert list(model.athletes["ana"].interval_last) == [(at(0), 104), (at(5), 109), (at(10), 111)]
    assert interval_start(at(7.9), 5) == at(5)
    xs, ys = interval_xy([(at(0), 104), (at(5), 109), (at(20), 111)], 5)
    assert ys == [104, 109, None, 111]  # no sample in 10..20 s: no step drawn across it


def test_line_breaks_at_dropouts_instead_of_bridging_them() -> None:
    points = [
        WindowPoint(0, at(0), 100, False, False),
        WindowPoint(1, at(1), 101, False, False),
        WindowPoint(2, at(9), 102, False, False),  # 8 s gap
        WindowPoint(3, at(10), 103, False, True),  # after a reconnect
    ]
    xs, ys = line_xy(points, max_gap_s=5)
    assert ys == [100, 101, None, 102, None, 103]
    assert xs[2] is None and xs[3] == at(9)


# --- header: value, zone, RMSSD, connection, lag ------------------------------------------------
def test_header_shows_current_bpm_zone_rmssd_and_lag() -> None:
    model = LiveModel(zones=zones_from_max_hr(200), rr_window=6)
    rr_stream = [(800.0, 812.0), (790.0,), (805.0, 799.0), (820.0,)]
    feed(model, [sample(seq, 130, rr=rr) for seq, rr in enumerate(rr_stream)], lag_s=0.25)
    view = model.header("ana", at(3.5))
    beats = np.array([800.0, 812.0, 790.0, 805.0, 799.0, 820.0])
    expected = np.sqrt(np.mean(np.diff(beats) ** 2))
    assert view.bpm == "130 bpm"
    assert view.zone == "Z2 Endurance"
    assert view.rmssd == f"{expected:.0f} ms"
    assert view.connection == "connected"
    assert view.lag == "0.25 s"
    assert view.alert is None


def test_zones_per_athlete_by_either_method() -> None:
    model = LiveModel(zones=zones_from_max_hr(190),
                      zones_by_athlete={"ben": zones_karvonen(190, 60)})
    feed(model, [sample(0, 150, athlete="ana"), sample(0, 150, athlete="ben")])
    assert model.header("ana", at(0.5)).zone == "Z3 Tempo"  # 150 ≥ 0.7 × 190 = 133
    assert model.header("ben", at(0.5)).zone == "Z2 Endurance"  # 138 ≤ 150 < 151


@pytest.mark.parametrize(
    ("loss", "connection"),
    [
        (event("disconnected", 3), "disconnected"),
        (event("contact_lost", 3), "no contact"),
        (sample(3, 0, contact=False), "no contact (sensor reports no skin contact)"),
    ],
)
def test_header_shows_dash_when_signal_is_lost(loss: Any, connection: str) -> None:
    model = LiveModel()
    feed(model, [sample(seq, 160, rr=(700.0, 690.0)) for seq in range(3)] + [loss])
    view = model.header("ana", at(3.5))
    assert (view.bpm, view.zone, view.rmssd, view.lag) == (DASH, DASH, DASH, DASH)
    assert view.connection == connection
    assert view.alert is None  # an alert needs a current value
    assert DASH in header_html([view]) and "160" not in header_html([view])


def test_reconnect_shows_dash_until_a_fresh_sample() -> None:
    model = LiveModel()
    feed(model, [sample(0, 120), sample(1, 121), event("disconnected", 2),
                 event("reconnected", 9)])
    assert model.header("ana", at(9.1)).bpm == DASH
    assert model.header("ana", at(9.1)).connection == "connected"
    feed(model, [sample(2, 125, seconds=9.5)])
    assert model.header("ana", at(9.8)).bpm == "125 bpm"
    xs, ys = line_xy(model.athletes["ana"].points)
    assert ys == [120, 121, None, 125]


def test_header_goes_to_dash_when_data_stops_arriving() -> None:
    model = LiveModel(stale_after_s=5)
    feed(model, [sample(0, 120)], lag_s=0.1)
    assert model.header("ana", at(5)).bpm == "120 bpm"
    stale = model.header("ana", at(7))
    assert stale.bpm == DASH
    assert stale.connection == "no data for 7 s"


def test_rr_run_restarts_after_a_lost_sample() -> None:
    model = LiveModel()
    feed(model, [sample(0, 120, rr=(800.0, 900.0)), sample(2, 120, rr=(700.0, 710.0))])
    assert list(model.athletes["ana"].rr_ms) == [700.0, 710.0]
    assert model.header("ana", at(2.5)).rmssd == "10 ms"


# --- alerts --------------------------------------------------------------------------------------
def test_alert_banner_raised_kept_and_cleared() -> None:
    model = LiveModel(threshold_bpm=150)
    feed(model, [sample(0, 148), sample(1, 151), sample(2, 170), sample(3, 160)])
    window = model.athletes["ana"]
    assert [p.above for p in window.points] == [False, True, True, True]
    view = model.header("ana", at(3.5))
    assert view.alert == "ana above 150 bpm for 2 s (now 160, peak 170 bpm)"
    assert "ana above 150 bpm" in banner_html([view])
    feed(model, [sample(4, 150)])
    assert model.header("ana", at(4.5)).alert is None
    assert banner_html(model.headers(at(4.5))) == ""


# --- what the indexed panel will ask for ---------------------------------------------------------
def test_progress_lists_only_seqs_settled_past_the_grace_period() -> None:
    model = LiveModel()
    # seq 5 reads 0 bpm without contact: indexed as a gap; seq 7 reads 300 bpm: dead-lettered
    items = [sample(s, {5: 0, 7: 300}.get(s, 120), contact=s != 5) for s in range(10)]
    for item in items:
        model.apply(item, item.received_at)
    [progress] = model.progress(at(5.5) + timedelta(seconds=30), grace_s=30)
    assert progress.settled == ((0, 5),)
    assert (progress.seen, progress.last_seq) == (9, 9)
    late = model.progress(at(60), grace_s=30)[0]
    assert late.settled == ((0, 6), (8, 9))


def test_a_late_duplicate_is_not_drawn_twice() -> None:
    model = LiveModel()
    feed(model, [sample(0, 100), sample(1, 101), sample(1, 101), sample(2, 102)])
    assert [p.seq for p in model.athletes["ana"].points] == [0, 1, 2]


# --- the widget layer ----------------------------------------------------------------------------
def test_dashboard_draws_several_athletes_in_batched_throttled_redraws() -> None:
    clock = Clock(at(0))
    dashboard = LiveDashboard(redraw_every_s=3600, clock=clock)
    for seq in range(30):
        clock.now = at(seq + 0.1)
        dashboard.on_item(sample(seq, 140 + seq))
        dashboard(sample(seq, 100, athlete="ben"))  # the dashboard itself is a listener
    assert dashboard.redraws == 1  # the first item drew; the rest waited for the throttle
    dashboard.redraw()
    names = [trace.name for trace in dashboard.figure.data]
    assert names == ["ana", "ana last per 5 s", "ana > 150 bpm",
                     "ben", "ben last per 5 s", "ben > 150 bpm"]
    assert list(dashboard.figure.data[0].y) == [140 + seq for seq in range(30)]
    assert list(dashboard.figure.data[2].y) == [140 + seq for seq in range(11, 30)]
    assert list(dashboard.figure.data[1].y) == [144, 149, 154, 159, 164, 169]
    assert "169 bpm" in dashboard.header.value and "100 bpm" in dashboard.header.value
    assert "ana above 150 bpm" in dashboard.banner.value
    assert "ana 169 bpm" in dashboard.figure.layout.title.text
    shapes = dashboard.figure.layout.shapes
    assert len(shapes) == 6 and shapes[-1].y0 == 150  # five zone bands, then the threshold


def test_dashboard_tick_turns_a_silent_athlete_to_dash() -> None:
    async def scenario() -> tuple[str, str]:
        clock = Clock(at(0.1))
        dashboard = LiveDashboard(redraw_every_s=0.01, clock=clock)
        dashboard.on_item(sample(0, 133))
        before = dashboard.header.value
        await dashboard.start()
        assert dashboard.running and len(dashboard._tasks) == 1  # no client: no index tasks
        clock.now = at(30)
        after = await eventually(lambda: "no data for 30 s" in dashboard.header.value
                                 and dashboard.header.value, what="the tick's redraw")
        await dashboard.stop()
        assert not dashboard.running and not dashboard._tasks
        return before, after

    before, after = asyncio.run(scenario())
    assert "133 bpm" in before
    assert "133 bpm" not in after and DASH in after and "no data for 30 s" in after


def test_export_html_is_self_contained(tmp_path: Path) -> None:
    dashboard = LiveDashboard(redraw_every_s=0)
    for seq in range(5):
        dashboard.on_item(sample(seq, 120 + seq))
    target = dashboard.export_html(tmp_path / "live.html")
    text = target.read_text()
    assert '<script src="http' not in text  # plotly.js embedded: opens offline
    assert len(text) > 1_000_000
    assert '"name":"ana"' in text.replace(" ", "")


@pytest.mark.skipif(not DEBIAN_CHROMIUM.is_file(),
                    reason="needs Debian's chromium: apt-get install chromium")
def test_export_png_through_debian_chromium(tmp_path: Path) -> None:
    dashboard = LiveDashboard(redraw_every_s=0, height=400)
    for seq in range(5):
        dashboard.on_item(sample(seq, 120 + seq))
    target = dashboard.export_png(tmp_path / "live.png")
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 400)


def test_export_png_without_chromium_says_how_to_install_it(tmp_path: Path) -> None:
    dashboard = LiveDashboard()
    with pytest.raises(ExportError, match="apt-get install chromium") as caught:
        export_png(dashboard.figure, tmp_path / "x.png", chromium=tmp_path / "no-chromium")
    assert caught.value.path == str(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_indexed_panel_text_before_any_poll() -> None:
    assert "not checked yet" in indexed_html(None)


# --- the indexed panel against the real OpenSearch node -------------------------------------------
@pytest.fixture
def panel_index(settings: Settings) -> Iterator[tuple[Any, Settings]]:
    from opensearchpy.helpers import bulk

    from hrnb.wire.index_schema import index_template
    from hrnb.wire.records import document_id, format_timestamp

    name = f"hrnb-live-test-{uuid.uuid4().hex[:8]}"
    settings = settings.with_overrides(index_name=name)
    client = admin_opensearch(settings)
    client.indices.create(index=name, body=index_template(name)["template"])
    docs = []
    for seq in range(20):
        if seq in (7, 8):
            continue  # lost on the way
        item = sample(seq, 120 + seq)
        record = item.to_record(sent_at=item.received_at + timedelta(milliseconds=10))
        docs.append({
            **record,
            "kinesis_arrival": format_timestamp(item.received_at + timedelta(milliseconds=30)),
            "ingested_at": format_timestamp(item.received_at + timedelta(milliseconds=200 + seq)),
            "alert": False,
        })
    bulk(client, [{"_index": name, "_id": document_id(d), "_source": d} for d in docs],
         refresh="wait_for")
    try:
        yield client, settings
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


@pytest.mark.stack
def test_indexed_panel_counts_lag_missing_and_latency(panel_index) -> None:
    client, settings = panel_index
    clock = Clock(at(0))
    dashboard = LiveDashboard(settings, client, redraw_every_s=3600, missing_grace_s=10,
                              clock=clock)
    for seq in range(25):  # 20..24 still on their way: not missing yet
        clock.now = at(seq + 0.1)
        dashboard.on_item(sample(seq, 120 + seq))
    clock.now = at(33)  # seqs up to 22 arrived more than 10 s ago
    status = asyncio.run(dashboard.poll_index())
    assert status.error is None
    [row] = status.rows
    assert (row.seen_live, row.indexed, row.last_indexed_seq) == (25, 18, 19)
    assert row.lag_s == 5.0  # live is at seq 24, the index at seq 19
    assert (row.missing, row.missing_runs) == (5, "7–8, 20–22")
    latency = status.latency.set_index("hop")
    assert latency.loc["measured→indexed"]["samples"] == 18
    assert latency.loc["measured→indexed"]["max_ms"] == 219
    text = dashboard.indexed.value
    assert "18 indexed of 25 seen" in text and "missing 5 (7–8, 20–22)" in text
    assert "behind live 5.0 s" in text and "measured→indexed: p50" in text


@pytest.mark.stack
def test_indexed_panel_reports_a_missing_index_and_keeps_polling(settings, caplog) -> None:
    settings = settings.with_overrides(index_name=f"hrnb-absent-{uuid.uuid4().hex[:8]}")

    async def scenario() -> LiveDashboard:
        clock = Clock(at(0.1))
        dashboard = LiveDashboard(settings, admin_opensearch(settings), index_poll_s=0.05,
                                  probe_every_s=0.05, alerts_poll_s=0.05, redraw_every_s=0.05,
                                  clock=clock)
        runs = {"poll_index": 0, "_probe_once": 0, "poll_alerts": 0}

        def counted(name: str) -> Any:
            step = getattr(dashboard, name)

            async def run() -> Any:
                runs[name] += 1
                return await step()
            return run

        for name in runs:  # the loops start on these attributes
            setattr(dashboard, name, counted(name))
        dashboard.on_item(sample(0, 120))
        await dashboard.start()
        assert len(dashboard._tasks) == 4
        # Each loop fails again and again (a machine under load is slow, never wrong): a
        # repeated failure must be told once.
        await eventually(lambda: min(runs.values()) >= 4, timeout_s=30, what=f"polls {runs}")
        await dashboard.stop()
        return dashboard

    with caplog.at_level("WARNING", logger="hrnb.live"):
        dashboard = asyncio.run(scenario())
    assert not dashboard.running
    assert dashboard.status is not None and "does not exist yet" in dashboard.status.error
    assert "does not exist yet" in dashboard.indexed.value
    # polled at least four times, told once per loop (alerts are not set up for this prefix either)
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("hrnb.live")]
    assert len(warnings) == 3, warnings
    assert {w.split(":")[0] for w in warnings} == {"live index poll", "live searchable probe",
                                                   "live alerts poll"}
    assert "does not exist: run hrnb setup" in dashboard.notified.value
