"""hrnb.query against the real OpenSearch node, on a session whose every value is known.

Athlete ``ana`` session ``s1``: 120 samples at 1 Hz from T0, seq 0..119, with seq 50..54 never
indexed (a 6 s dropout). Heart rate by seq: 0-19 at 95, 20-39 at 130, 40-49 at 155 except 45 at
170, 55-69 at 152, 70-99 at 140, 100-119 at 185. ``ana/s2`` has 3 samples the day before;
``ben/s9`` 10 samples at T0+30..39 s.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from opensearchpy import OpenSearch
from opensearchpy.helpers import bulk
from support import admin_opensearch, free_port

from hrnb import query
from hrnb.config import Settings
from hrnb.errors import ConfigError, QueryError
from hrnb.metrics import zones_from_max_hr
from hrnb.query import search as query_search
from hrnb.query import views as query_views
from hrnb.wire.index_schema import index_template
from hrnb.wire.records import document_id, format_timestamp, make_record

pytestmark = pytest.mark.stack

T0 = datetime(2026, 3, 1, 7, 0, 0, tzinfo=UTC)
MISSING = range(50, 55)


def ana_bpm(seq: int) -> int:
    if seq < 20:
        return 95
    if seq < 40:
        return 130
    if seq < 50:
        return 170 if seq == 45 else 155
    if seq < 70:
        return 152
    if seq < 100:
        return 140
    return 185


def ana_rr(seq: int) -> list[float]:
    base = round(60000 / ana_bpm(seq))
    return [float(base + (seq % 3) * 7), float(base - (seq % 2) * 5)]


def ana_hops_ms(seq: int) -> tuple[int, int, int]:
    """measured→sent, sent→kinesis, kinesis→indexed for one sample."""
    return 5, 20 + seq % 10, 100 + (seq * 37) % 400


def document(athlete: str, session: str, seq: int, at: datetime, bpm: int,
             rr: list[float], hops_ms: tuple[int, int, int] = (5, 20, 100)) -> dict[str, Any]:
    sent = at + timedelta(milliseconds=hops_ms[0])
    arrival = sent + timedelta(milliseconds=hops_ms[1])
    ingested = arrival + timedelta(milliseconds=hops_ms[2])
    record = make_record(athlete_id=athlete, session_id=session, device_id=f"strap-{athlete}",
                         seq=seq, timestamp=at, heart_rate=bpm, rr_intervals_ms=rr,
                         sensor_contact=True, energy_expended=None, sent_at=sent)
    return {**record, "kinesis_arrival": format_timestamp(arrival),
            "ingested_at": format_timestamp(ingested), "alert": bpm > 150}


def known_documents() -> list[dict[str, Any]]:
    docs = [
        document("ana", "s1", seq, T0 + timedelta(seconds=seq), ana_bpm(seq), ana_rr(seq),
                 ana_hops_ms(seq))
        for seq in range(120) if seq not in MISSING
    ]
    day_before = T0 - timedelta(days=1)
    docs += [document("ana", "s2", seq, day_before + timedelta(seconds=seq), 80 + seq,
                      [750.0]) for seq in range(3)]
    docs += [document("ben", "s9", seq, T0 + timedelta(seconds=30 + seq), 100 + seq,
                      [600.0, 610.0]) for seq in range(10)]
    return docs


def create_index(client: OpenSearch, name: str) -> None:
    client.indices.create(index=name, body=index_template(name)["template"])


def index_documents(client: OpenSearch, name: str, docs: list[dict[str, Any]]) -> None:
    actions = [{"_index": name, "_id": document_id(doc), "_source": doc} for doc in docs]
    bulk(client, actions, refresh="wait_for")


@pytest.fixture(scope="module")
def os_client(settings: Settings) -> OpenSearch:
    """One client for the module, on the shared local stack (started if nothing answers)."""
    return admin_opensearch(settings)


@contextlib.contextmanager
def temporary_index(client: OpenSearch, prefix: str,
                    docs: list[dict[str, Any]]) -> Iterator[str]:
    import uuid

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_index(client, name)
    try:
        index_documents(client, name, docs)
        yield name
    finally:
        client.indices.delete(index=name, ignore_unavailable=True)


@pytest.fixture(scope="module")
def known_index(os_client: OpenSearch) -> Iterator[str]:
    """One index with the known session, shared by the read-only tests of this module."""
    with temporary_index(os_client, "hrnb-query-test", known_documents()) as name:
        yield name


# --- samples -------------------------------------------------------------------------------------
def test_last_minutes_returns_exactly_the_window_in_order(os_client, known_index) -> None:
    result = query.last_minutes(os_client, known_index, 1, now=T0 + timedelta(seconds=120))
    assert list(result.df["seq"]) == list(range(60, 120))
    assert set(result.df["athlete_id"]) == {"ana"}
    assert result.df["timestamp"].iloc[0] == pd.Timestamp(T0 + timedelta(seconds=60))
    assert list(result.df["heart_rate"]) == [ana_bpm(s) for s in range(60, 120)]
    assert result.df["rr_intervals_ms"].iloc[0] == ana_rr(60)
    assert result.query["query"]["bool"]["filter"] == [
        {"range": {"timestamp": {"gte": "2026-03-01T07:01:00.000Z",
                                 "lt": "2026-03-01T07:02:00.000Z"}}}
    ]
    shown = result.show_query()
    assert shown.startswith(f"GET {known_index}/_search\n")
    assert json.loads(shown.split("\n", 1)[1]) == result.query


def test_samples_filter_by_athlete_list_and_session(os_client, known_index) -> None:
    both = query.samples(os_client, known_index, athlete_id=["ben", "ana"], session_id="s9")
    assert list(both.df["seq"]) == list(range(10))
    assert set(both.df["athlete_id"]) == {"ben"}


def test_samples_page_through_more_than_one_page(os_client, known_index, monkeypatch) -> None:
    monkeypatch.setattr(query_search, "PAGE_SIZE", 7)  # 128 documents → 19 pages
    result = query.samples(os_client, known_index)
    assert len(result.df) == 128
    assert result.df["timestamp"].is_monotonic_increasing
    keys = list(zip(result.df["athlete_id"], result.df["session_id"], result.df["seq"],
                    strict=True))
    assert len(set(keys)) == 128


def test_a_naive_time_is_refused_by_name(os_client, known_index) -> None:
    with pytest.raises(ConfigError, match="start must be timezone-aware") as caught:
        query.samples(os_client, known_index, start=datetime(2026, 3, 1, 7))
    assert caught.value.setting == "start"


# --- contact loss --------------------------------------------------------------------------------
def contact_documents() -> list[dict[str, Any]]:
    """``cara/c1``: 30 samples at 1 Hz from T0: 160 bpm, then 10 s without skin contact (the
    strap reads 0 bpm), then 120 bpm; RR constant within each stretch."""
    docs = []
    for seq in range(30):
        contact = not 10 <= seq < 20
        bpm = 160 if seq < 10 else 0 if not contact else 120
        at = T0 + timedelta(seconds=seq)
        record = make_record(athlete_id="cara", session_id="c1", device_id="strap-cara", seq=seq,
                             timestamp=at, heart_rate=bpm, sensor_contact=contact,
                             rr_intervals_ms=[60000 / bpm] * 2 if contact else [], sent_at=at)
        stamp = format_timestamp(at)
        docs.append({**record, "kinesis_arrival": stamp, "ingested_at": stamp,
                     "alert": bpm > 150})
    return docs


@pytest.fixture(scope="module")
def contact_index(os_client: OpenSearch) -> Iterator[str]:
    with temporary_index(os_client, "hrnb-query-contact", contact_documents()) as name:
        yield name


def test_contact_loss_is_counted_but_never_averaged_as_0_bpm(os_client, contact_index) -> None:
    row = query.summary(os_client, contact_index, threshold_bpm=150).df.iloc[0]
    assert (row["samples"], row["no_contact"]) == (30, 10)
    assert (row["min_bpm"], row["mean_bpm"], row["max_bpm"]) == (120, 140, 160)
    sessions = query.sessions(os_client, contact_index).df.iloc[0]
    assert (sessions["samples"], sessions["mean_bpm"]) == (30, 140)


def test_contact_loss_is_a_gap_in_series_and_charts(os_client, contact_index) -> None:
    result = query.samples(os_client, contact_index)
    gap = result.df["heart_rate"].isna()
    assert gap.tolist() == [10 <= seq < 20 for seq in range(30)]
    assert not result.df["sensor_contact"][gap].any()
    figure = query.plot_samples(result)
    assert np.isnan(np.asarray(figure.data[0].y, dtype=float)).sum() == 10
    assert not figure.data[0].connectgaps

    last = query.last_per_interval(os_client, contact_index, "10s").df
    assert last["heart_rate"].isna().tolist() == [False, True, False]


def test_contact_loss_counts_for_no_zone_and_ends_an_episode(os_client, contact_index) -> None:
    zones = query.time_in_zones(os_client, contact_index, zones_from_max_hr(200)).df
    assert zones["seconds"].tolist() == [0, 0, 10, 0, 10, 0]
    episodes = query.threshold_crossings(os_client, contact_index, 150).df
    assert episodes[["start", "end", "peak_bpm", "ongoing"]].to_dict("records") == [
        {"start": pd.Timestamp(T0), "end": pd.Timestamp(T0 + timedelta(seconds=10)),
         "peak_bpm": 160, "ongoing": False}]
    rmssd = query.rmssd_per_minute(os_client, contact_index).df.iloc[0]
    assert (rmssd["rmssd_ms"], rmssd["rr_intervals"]) == (0.0, 40)  # no difference across it


# --- last value per interval ---------------------------------------------------------------------
def test_last_value_per_5_s_buckets(os_client, known_index) -> None:
    result = query.last_per_interval(os_client, known_index, "5s", athlete_id="ana",
                                     start=T0, end=T0 + timedelta(minutes=2))
    df = result.df
    # 24 five-second buckets, the one holding seq 50..54 is empty and left out
    expected_starts = [T0 + timedelta(seconds=5 * k) for k in range(24) if k != 10]
    assert list(df["interval_start"]) == [pd.Timestamp(t) for t in expected_starts]
    assert list(df["seq"]) == [5 * k + 4 for k in range(24) if k != 10]
    assert list(df["heart_rate"]) == [ana_bpm(5 * k + 4) for k in range(24) if k != 10]
    assert set(df["samples"]) == {5}
    per_interval = result.query["aggs"]["athletes"]["aggs"]["per_interval"]
    assert per_interval["date_histogram"]["fixed_interval"] == "5s"
    assert per_interval["aggs"]["last"]["top_hits"]["size"] == 1


def test_last_value_per_interval_per_athlete(os_client, known_index) -> None:
    df = query.last_per_interval(os_client, known_index, "10s", start=T0 + timedelta(seconds=30),
                                 end=T0 + timedelta(seconds=40)).df
    assert df[["athlete_id", "seq", "heart_rate", "samples"]].to_dict("records") == [
        {"athlete_id": "ana", "seq": 39, "heart_rate": 130, "samples": 10},
        {"athlete_id": "ben", "seq": 9, "heart_rate": 109, "samples": 10},
    ]


def test_bad_interval_is_refused(os_client, known_index) -> None:
    with pytest.raises(ConfigError, match="interval must be a fixed interval"):
        query.last_per_interval(os_client, known_index, "five seconds")


# --- summary, sessions, athletes -----------------------------------------------------------------
def test_summary_statistics_per_session(os_client, known_index) -> None:
    df = query.summary(os_client, known_index, threshold_bpm=150).df.set_index(
        ["athlete_id", "session_id"])
    bpms = [ana_bpm(s) for s in range(120) if s not in MISSING]
    row = df.loc[("ana", "s1")]
    assert row["samples"] == 115
    assert (row["min_bpm"], row["max_bpm"]) == (95, 185)
    assert row["mean_bpm"] == pytest.approx(statistics.fmean(bpms))
    assert row["std_bpm"] == pytest.approx(statistics.pstdev(bpms))
    assert row["samples_above_threshold"] == sum(b > 150 for b in bpms) == 45
    assert row["first"] == pd.Timestamp(T0)
    assert row["last"] == pd.Timestamp(T0 + timedelta(seconds=119))
    assert df.loc[("ben", "s9")]["samples_above_threshold"] == 0
    assert list(df.index) == [("ana", "s1"), ("ana", "s2"), ("ben", "s9")]


def test_summary_threshold_comes_from_settings(os_client, known_index) -> None:
    with_threshold = Settings.from_env(target="local", index_name=known_index,
                                       hr_alert_threshold_bpm=160)
    df = query.summary(os_client, with_threshold, athlete_id="ana", session_id="s1").df
    assert df["threshold_bpm"].tolist() == [160]
    assert df["samples_above_threshold"].tolist() == [21]  # 170 once and 185 twenty times


def test_summary_follows_composite_pages(os_client, known_index, monkeypatch) -> None:
    original = query_search._composite

    def small_pages(client, index, body, name):
        body["aggs"][name]["composite"]["size"] = 1
        return original(client, index, body, name)

    monkeypatch.setattr(query_views, "_composite", small_pages)
    assert len(query.summary(os_client, known_index).df) == 3


def test_sessions_show_span_devices_and_unindexed_samples(os_client, known_index) -> None:
    df = query.sessions(os_client, known_index, athlete_id="ana").df
    assert df[["session_id", "samples", "min_seq", "max_seq", "not_indexed", "devices",
               "duration_s"]].to_dict("records") == [
        {"session_id": "s1", "samples": 115, "min_seq": 0, "max_seq": 119, "not_indexed": 5,
         "devices": "strap-ana", "duration_s": 119.0},
        {"session_id": "s2", "samples": 3, "min_seq": 0, "max_seq": 2, "not_indexed": 0,
         "devices": "strap-ana", "duration_s": 2.0},
    ]


def test_athletes(os_client, known_index) -> None:
    df = query.athletes(os_client, known_index).df
    assert df[["athlete_id", "sessions", "samples", "latest_bpm", "latest_session_id"]].to_dict(
        "records") == [
        {"athlete_id": "ana", "sessions": 2, "samples": 118, "latest_bpm": 185,
         "latest_session_id": "s1"},
        {"athlete_id": "ben", "sessions": 1, "samples": 10, "latest_bpm": 109,
         "latest_session_id": "s9"},
    ]
    assert df["last_seen"].tolist() == [pd.Timestamp(T0 + timedelta(seconds=119)),
                                        pd.Timestamp(T0 + timedelta(seconds=39))]


# --- zones, crossings ----------------------------------------------------------------------------
def test_time_in_zones(os_client, known_index) -> None:
    result = query.time_in_zones(os_client, known_index, zones_from_max_hr(200),
                                 athlete_id="ana", session_id="s1")
    df = result.df
    assert df["seconds"].tolist() == [20, 0, 20, 54, 1, 20]
    assert df["zone_name"].tolist()[4] == "Z4 Threshold"
    assert df["share"].sum() == pytest.approx(1.0)
    assert df[["low_bpm", "high_bpm"]].iloc[3].tolist() == [140, 160]
    assert result.query["sort"] == query.SAMPLE_SORT


def test_threshold_crossings_with_durations(os_client, known_index) -> None:
    df = query.threshold_crossings(os_client, known_index, 150, athlete_id="ana",
                                   session_id="s1").df
    assert df[["start", "end", "duration_s", "peak_bpm", "samples", "ongoing"]].to_dict(
        "records") == [
        # 40..49, cut by the dropout: the last sample holds its usual 1 s
        {"start": pd.Timestamp(T0 + timedelta(seconds=40)),
         "end": pd.Timestamp(T0 + timedelta(seconds=50)), "duration_s": 10.0,
         "peak_bpm": 170, "samples": 10, "ongoing": False},
        {"start": pd.Timestamp(T0 + timedelta(seconds=55)),
         "end": pd.Timestamp(T0 + timedelta(seconds=70)), "duration_s": 15.0,
         "peak_bpm": 152, "samples": 15, "ongoing": False},
        {"start": pd.Timestamp(T0 + timedelta(seconds=100)),
         "end": pd.Timestamp(T0 + timedelta(seconds=120)), "duration_s": 20.0,
         "peak_bpm": 185, "samples": 20, "ongoing": True},
    ]
    higher = query.threshold_crossings(os_client, known_index, 160, athlete_id="ana").df
    assert higher["peak_bpm"].tolist() == [170, 185]


# --- RMSSD ---------------------------------------------------------------------------------------
def numpy_rmssd_of_runs(runs: list[list[int]]) -> float:
    """Independent: per run of consecutive seqs, numpy diff over the concatenated beats."""
    diffs = [np.diff(np.concatenate([ana_rr(s) for s in run])) for run in runs]
    return float(np.sqrt(np.mean(np.concatenate(diffs) ** 2)))


def test_rmssd_per_minute_against_numpy(os_client, known_index) -> None:
    df = query.rmssd_per_minute(os_client, known_index, athlete_id="ana", session_id="s1").df
    assert df["minute"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(minutes=1))]
    first_minute = [list(range(0, 50)), list(range(55, 60))]  # the dropout splits the run
    second_minute = [list(range(60, 120))]
    assert df["rmssd_ms"].tolist() == pytest.approx(
        [numpy_rmssd_of_runs(first_minute), numpy_rmssd_of_runs(second_minute)], rel=1e-12)
    assert df["rr_intervals"].tolist() == [110, 120]
    assert df["samples"].tolist() == [55, 60]


# --- latency -------------------------------------------------------------------------------------
def inclusive_percentiles(values: list[int]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def test_latency_percentiles_per_hop_and_end_to_end(os_client, known_index) -> None:
    result = query.latency(os_client, known_index, athlete_id="ana", session_id="s1")
    df = result.df.set_index("hop")
    seqs = [s for s in range(120) if s not in MISSING]
    hops = [ana_hops_ms(s) for s in seqs]
    expected = {
        "measured→sent": [h[0] for h in hops],
        "sent→kinesis": [h[1] for h in hops],
        "kinesis→indexed": [h[2] for h in hops],
        "measured→indexed": [sum(h) for h in hops],
    }
    assert list(df.index) == list(expected)
    for hop, values in expected.items():
        row = df.loc[hop]
        assert row["samples"] == 115
        assert (row["p50_ms"], row["p95_ms"], row["p99_ms"]) == pytest.approx(
            inclusive_percentiles(values)), hop
        assert row["max_ms"] == max(values)


def test_searchable_probe_times_first_visibility(os_client, unique_name) -> None:
    """The probe's clock is scripted so the expected latency is exact; the index is real."""
    name = unique_name("hrnb-probe-test")
    create_index(os_client, name)
    try:
        base = T0 + timedelta(hours=1)
        index_documents(os_client, name, [document("cy", "p1", 0, base, 120, [500.0],
                                                   (0, 0, 100))])
        ticks = iter([base + timedelta(seconds=s) for s in (1, 1.2, 3, 3.25, 4, 4.5, 5, 5.5)])
        probe = query.SearchableProbe(os_client, name, athlete_id="cy", clock=lambda: next(ticks))
        assert probe.poll() == 0  # taking stock: seq 0 was already visible
        index_documents(os_client, name, [
            document("cy", "p1", seq, base + timedelta(seconds=seq), 120, [500.0], (0, 0, 100))
            for seq in (1, 2)
        ])
        assert probe.poll() == 2
        assert probe.poll() == 0  # nothing new
        assert probe.last_query["query"]["bool"]["filter"][-1]["range"]["ingested_at"]["gte"] \
            == format_timestamp(base + timedelta(seconds=3 - 30))
        probe.retarget(["cy", "dan"])
        index_documents(os_client, name, [document("cy", "p1", 3, base + timedelta(seconds=3),
                                                   120, [500.0], (0, 0, 100))])
        assert probe.poll() == 0  # following someone new: takes stock again
        assert [(o.seq, o.latency_s) for o in probe.observations] == [(1, 2.25), (2, 1.25)]
        df = query.latency(os_client, name, searchable=probe).df.set_index("hop")
        row = df.loc["measured→searchable"]
        assert row["samples"] == 2
        assert row["p50_ms"] == pytest.approx(1750)
        assert row["max_ms"] == pytest.approx(2250)
        assert df.loc["measured→indexed"]["samples"] == 4
    finally:
        os_client.indices.delete(index=name, ignore_unavailable=True)


# --- what the live panel reads -------------------------------------------------------------------
def test_index_progress(os_client, known_index) -> None:
    df = query.index_progress(os_client, known_index, athlete_id=["ana"]).df
    assert df[["session_id", "indexed", "last_seq"]].to_dict("records") == [
        {"session_id": "s1", "indexed": 115, "last_seq": 119},
        {"session_id": "s2", "indexed": 3, "last_seq": 2},
    ]
    assert df["last_timestamp"].iloc[0] == pd.Timestamp(T0 + timedelta(seconds=119))
    expected_ingested = T0 + timedelta(seconds=119, milliseconds=sum(ana_hops_ms(119)))
    assert df["last_ingested_at"].iloc[0] == pd.Timestamp(expected_ingested)


@pytest.mark.parametrize(
    ("expected", "bucket_size", "missing"),
    [
        ([(0, 119)], 1000, [(50, 54, 5)]),
        ([(0, 119)], 16, [(50, 54, 5)]),
        ([(0, 49), (55, 119)], 16, []),
        ([(10, 52), (54, 125)], 7, [(50, 52, 3), (54, 54, 1), (120, 125, 6)]),
        ([], 1000, []),
    ],
)
def test_missing_seqs(os_client, known_index, expected, bucket_size, missing) -> None:
    df = query.missing_seqs(os_client, known_index, "ana", "s1", expected,
                            bucket_size=bucket_size).df
    assert list(df[["first_seq", "last_seq", "count"]].itertuples(index=False,
                                                                   name=None)) == missing


# --- errors, plots, command line -----------------------------------------------------------------
def test_missing_index_is_a_clear_query_error(os_client, unique_name) -> None:
    with pytest.raises(QueryError, match="does not exist yet: run the set-up"):
        query.summary(os_client, unique_name("hrnb-absent"))


def test_unreachable_opensearch_is_a_clear_query_error() -> None:
    client = OpenSearch(hosts=[f"http://127.0.0.1:{free_port()}"], timeout=2, max_retries=0)
    with pytest.raises(QueryError, match="OpenSearch does not answer") as caught:
        query.athletes(client, "heart_rate")
    assert (caught.value.service, caught.value.action, caught.value.code) == (
        "opensearch", "search", "ConnectionError")
    assert caught.value.resource == "index 'heart_rate'"


def test_every_query_has_a_plot(os_client, known_index) -> None:
    zones = zones_from_max_hr(200)
    figures: list[Callable[[], go.Figure]] = [
        lambda: query.plot_samples(query.samples(os_client, known_index), threshold_bpm=150),
        lambda: query.plot_last_per_interval(query.last_per_interval(os_client, known_index)),
        lambda: query.plot_summary(query.summary(os_client, known_index)),
        lambda: query.plot_time_in_zones(query.time_in_zones(os_client, known_index, zones)),
        lambda: query.plot_crossings(query.threshold_crossings(os_client, known_index)),
        lambda: query.plot_sessions(query.sessions(os_client, known_index)),
        lambda: query.plot_athletes(query.athletes(os_client, known_index)),
        lambda: query.plot_rmssd(query.rmssd_per_minute(os_client, known_index)),
        lambda: query.plot_latency(query.latency(os_client, known_index)),
    ]
    for make in figures:
        fig = make()
        assert isinstance(fig, go.Figure)
        assert fig.data and all(len(trace.x) > 0 for trace in fig.data
                                if getattr(trace, "x", None) is not None)


def test_named_queries_for_the_command_line(os_client, known_index) -> None:
    for name in query.QUERY_NAMES:
        if name == "zones":
            with pytest.raises(ConfigError, match="--max-hr"):
                query.run_named_query(name, os_client, known_index)
            result = query.run_named_query(name, os_client, known_index,
                                           zones=zones_from_max_hr(190))
        elif name == "recent":
            result = query.run_named_query(name, os_client, known_index, minutes=5)
            assert result.df.empty  # the known data is from 2026-03-01, not the last 5 minutes
            continue
        else:
            result = query.run_named_query(name, os_client, known_index)
        assert not result.df.empty, name
    with pytest.raises(ConfigError, match="unknown query 'nope'"):
        query.run_named_query("nope", os_client, known_index)


def test_last_minutes_relative_to_opensearch_now(os_client, unique_name) -> None:
    name = unique_name("hrnb-recent-test")
    create_index(os_client, name)
    try:
        now = datetime.now(UTC)
        index_documents(os_client, name, [
            document("dee", "r1", 0, now - timedelta(minutes=10), 90, []),
            document("dee", "r1", 1, now - timedelta(seconds=30), 91, []),
        ])
        result = query.last_minutes(os_client, name, 5)
        assert result.df["seq"].tolist() == [1]
        assert result.query["query"]["bool"]["filter"] == [
            {"range": {"timestamp": {"gte": "now-300s"}}}]
    finally:
        os_client.indices.delete(index=name, ignore_unavailable=True)
