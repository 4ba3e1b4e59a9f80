"""Query functions: each returns a QueryResult whose DataFrame a notebook cell shows."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hrnb.errors import ConfigError
from hrnb.metrics import (
    DEFAULT_MAX_GAP_S,
    ZONE_NAMES,
    HeartRateZones,
    has_heart_rate,
    percentile,
    rmssd_ms_over_runs,
    threshold_episodes,
    time_in_zones_s,
)
from hrnb.query.progress import SearchableProbe
from hrnb.query.scope import (
    _INTERVAL_RE,
    SAMPLE_COLUMNS,
    IdFilter,
    IndexLike,
    QueryResult,
    TimeBound,
    _minutes_ago,
    _threshold,
    index_name,
    sample_filter,
)
from hrnb.query.search import (
    _composite,
    _epoch_ms_to_utc,
    _fetch_samples,
    _frame,
    _groups,
    _per_session_body,
    _search,
    _series,
)

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

#: Hops a sample makes, named by the document fields that timestamp them.
HOPS = (
    ("measured→sent", "timestamp", "sent_at"),
    ("sent→kinesis", "sent_at", "kinesis_arrival"),
    ("kinesis→indexed", "kinesis_arrival", "ingested_at"),
    ("measured→indexed", "timestamp", "ingested_at"),
)


PERCENTS = (50, 95, 99)


# --- samples -------------------------------------------------------------------------------------
def samples(
    client: OpenSearch,
    index: IndexLike,
    *,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """Every sample in the range, in time order, one row each."""
    name = index_name(index)
    query = sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end)
    docs, body = _fetch_samples(client, name, query, SAMPLE_COLUMNS)
    return QueryResult(_frame(docs, SAMPLE_COLUMNS, dates=["timestamp"]), body, name)


def last_minutes(
    client: OpenSearch,
    index: IndexLike,
    minutes: float = 5,
    *,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    now: datetime | None = None,
) -> QueryResult:
    """The samples of the last ``minutes`` (OpenSearch's ``now`` unless ``now`` is given)."""
    if not minutes > 0:
        raise ConfigError(f"minutes must be positive, got {minutes!r}", setting="minutes")
    start = _minutes_ago(minutes) if now is None else now - timedelta(minutes=minutes)
    return samples(client, index, athlete_id=athlete_id, session_id=session_id, start=start,
                   end=now)


# --- last value per interval ---------------------------------------------------------------------
def last_per_interval(
    client: OpenSearch,
    index: IndexLike,
    interval: str = "5s",
    *,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
    max_athletes: int = 100,
) -> QueryResult:
    """The last heart rate in each ``interval`` per athlete (the reference dashboard's metric):
    ``terms`` → ``date_histogram`` → ``top_hits`` (size 1, latest first). Empty intervals are
    left out, so a dropout shows as a gap; so does an interval that ended without skin contact
    (its last heart rate is null)."""
    if not _INTERVAL_RE.fullmatch(interval):
        raise ConfigError(
            f"interval must be a fixed interval like 5s, 1m or 500ms, got {interval!r}",
            setting="interval",
        )
    name = index_name(index)
    body = {
        "size": 0,
        "query": sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end),
        "aggs": {
            "athletes": {
                "terms": {"field": "athlete_id", "size": max_athletes, "order": {"_key": "asc"}},
                "aggs": {
                    "per_interval": {
                        "date_histogram": {
                            "field": "timestamp", "fixed_interval": interval, "min_doc_count": 1,
                        },
                        "aggs": {
                            "last": {
                                "top_hits": {
                                    "size": 1,
                                    "sort": [{"timestamp": "desc"}, {"seq": "desc"}],
                                    "_source": ["heart_rate", "timestamp", "seq", "session_id"],
                                }
                            }
                        },
                    }
                },
            }
        },
    }
    response = _search(client, name, body)
    rows = []
    for athlete in response["aggregations"]["athletes"]["buckets"]:
        for bucket in athlete["per_interval"]["buckets"]:
            last = bucket["last"]["hits"]["hits"][0]["_source"]
            rows.append({
                "athlete_id": athlete["key"],
                "interval_start": _epoch_ms_to_utc(bucket["key"]),
                "heart_rate": last["heart_rate"],
                "timestamp": last["timestamp"],
                "seq": last["seq"],
                "session_id": last["session_id"],
                "samples": bucket["doc_count"],
            })
    columns = ["athlete_id", "interval_start", "heart_rate", "timestamp", "seq", "session_id",
               "samples"]
    df = _frame(rows, columns, dates=["timestamp"])
    df["interval_start"] = pd.to_datetime(df["interval_start"], utc=True)
    return QueryResult(df, body, name)


# --- summary statistics --------------------------------------------------------------------------
def summary(
    client: OpenSearch,
    index: IndexLike,
    *,
    threshold_bpm: int | None = None,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """Per athlete and session: samples, how many had no skin contact, time span, min/mean/max/std
    bpm (of the samples with a heart rate) and how many samples were above the alert threshold
    (one composite aggregation)."""
    name = index_name(index)
    threshold = _threshold(index, threshold_bpm)
    scope = sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end)
    body = _per_session_body(scope, {
        "bpm": {"extended_stats": {"field": "heart_rate"}},
        "first": {"min": {"field": "timestamp"}},
        "last": {"max": {"field": "timestamp"}},
        "above": {"filter": {"range": {"heart_rate": {"gt": threshold}}}},
        "no_contact": {"filter": {"term": {"sensor_contact": False}}},
    })
    buckets, first_body = _composite(client, name, body, "sessions")
    rows = [
        {
            "athlete_id": b["key"]["athlete_id"],
            "session_id": b["key"]["session_id"],
            "samples": b["doc_count"],
            "no_contact": b["no_contact"]["doc_count"],
            "first": _epoch_ms_to_utc(b["first"]["value"]),
            "last": _epoch_ms_to_utc(b["last"]["value"]),
            "min_bpm": b["bpm"]["min"],
            "mean_bpm": b["bpm"]["avg"],
            "max_bpm": b["bpm"]["max"],
            "std_bpm": b["bpm"]["std_deviation"],
            "samples_above_threshold": b["above"]["doc_count"],
            "threshold_bpm": threshold,
        }
        for b in buckets
    ]
    columns = ["athlete_id", "session_id", "samples", "no_contact", "first", "last", "min_bpm",
               "mean_bpm", "max_bpm", "std_bpm", "samples_above_threshold", "threshold_bpm"]
    return QueryResult(_frame(rows, columns), first_body, name)


def time_in_zones(
    client: OpenSearch,
    index: IndexLike,
    zones: HeartRateZones,
    *,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """Seconds and share of time per zone 0..5, per athlete and session; each sample holds
    until the next (see :func:`hrnb.metrics.sample_durations_s`)."""
    name = index_name(index)
    query = sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end)
    series, body = _series(client, name, query)
    bands = {band.zone: band for band in zones.bands()}
    rows = []
    for (athlete, session), group in _groups(series):
        seconds = time_in_zones_s(list(group["timestamp"]), list(group["heart_rate"]), zones,
                                  max_gap_s)
        total = sum(seconds.values())
        for zone, spent in seconds.items():
            band = bands.get(zone)
            rows.append({
                "athlete_id": athlete, "session_id": session, "zone": zone,
                "zone_name": ZONE_NAMES[zone],
                "low_bpm": band.low_bpm if band else 0.0,
                "high_bpm": band.high_bpm if band else zones.lower_bounds_bpm[0],
                "seconds": spent, "share": spent / total if total else 0.0,
            })
    columns = ["athlete_id", "session_id", "zone", "zone_name", "low_bpm", "high_bpm", "seconds",
               "share"]
    return QueryResult(_frame(rows, columns), body, name)


def threshold_crossings(
    client: OpenSearch,
    index: IndexLike,
    threshold_bpm: int | None = None,
    *,
    max_gap_s: float = DEFAULT_MAX_GAP_S,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """Each episode above the alert threshold with its start, end, duration and peak
    (see :func:`hrnb.metrics.threshold_episodes`)."""
    name = index_name(index)
    threshold = _threshold(index, threshold_bpm)
    query = sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end)
    series, body = _series(client, name, query)
    rows = []
    for (athlete, session), group in _groups(series):
        for episode in threshold_episodes(list(group["timestamp"]), list(group["heart_rate"]),
                                          threshold, max_gap_s):
            rows.append({"athlete_id": athlete, "session_id": session,
                         "threshold_bpm": threshold, **asdict(episode)})
    columns = ["athlete_id", "session_id", "threshold_bpm", "start", "end", "duration_s",
               "peak_bpm", "samples", "ongoing"]
    df = _frame(rows, columns)
    for column in ("start", "end"):
        df[column] = pd.to_datetime(df[column], utc=True)
    return QueryResult(df, body, name)


# --- sessions and athletes -----------------------------------------------------------------------
def sessions(
    client: OpenSearch,
    index: IndexLike,
    *,
    athlete_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """One row per athlete and session: time span, samples, seq range (a gap between
    ``samples`` and ``max_seq - min_seq + 1`` is samples never indexed), devices, bpm."""
    name = index_name(index)
    body = _per_session_body(sample_filter(athlete_id=athlete_id, start=start, end=end), {
        "first": {"min": {"field": "timestamp"}},
        "last": {"max": {"field": "timestamp"}},
        "seq": {"stats": {"field": "seq"}},
        "bpm": {"stats": {"field": "heart_rate"}},
        "devices": {"terms": {"field": "device_id", "size": 10}},
    })
    buckets, first_body = _composite(client, name, body, "sessions")
    rows = []
    for b in buckets:
        first, last = _epoch_ms_to_utc(b["first"]["value"]), _epoch_ms_to_utc(b["last"]["value"])
        assert first is not None and last is not None  # a bucket has >= 1 timestamped sample
        rows.append({
            "athlete_id": b["key"]["athlete_id"],
            "session_id": b["key"]["session_id"],
            "first": first,
            "last": last,
            "duration_s": (last - first).total_seconds(),
            "samples": b["doc_count"],
            "min_seq": int(b["seq"]["min"]),
            "max_seq": int(b["seq"]["max"]),
            "not_indexed": int(b["seq"]["max"] - b["seq"]["min"] + 1) - b["doc_count"],
            "devices": ", ".join(d["key"] for d in b["devices"]["buckets"]),
            "mean_bpm": b["bpm"]["avg"],
            "max_bpm": b["bpm"]["max"],
        })
    columns = ["athlete_id", "session_id", "first", "last", "duration_s", "samples", "min_seq",
               "max_seq", "not_indexed", "devices", "mean_bpm", "max_bpm"]
    return QueryResult(_frame(rows, columns), first_body, name)


def athletes(
    client: OpenSearch,
    index: IndexLike,
    *,
    start: TimeBound = None,
    end: TimeBound = None,
    max_athletes: int = 1000,
) -> QueryResult:
    """One row per athlete: sessions, samples, first and last seen, latest heart rate."""
    name = index_name(index)
    body = {
        "size": 0,
        "query": sample_filter(start=start, end=end),
        "aggs": {
            "athletes": {
                "terms": {"field": "athlete_id", "size": max_athletes, "order": {"_key": "asc"}},
                "aggs": {
                    "sessions": {"cardinality": {"field": "session_id"}},
                    "first": {"min": {"field": "timestamp"}},
                    "last": {"max": {"field": "timestamp"}},
                    "latest": {
                        "top_hits": {"size": 1, "sort": [{"timestamp": "desc"}],
                                     "_source": ["heart_rate", "session_id"]}
                    },
                },
            }
        },
    }
    response = _search(client, name, body)
    rows = []
    for b in response["aggregations"]["athletes"]["buckets"]:
        latest = b["latest"]["hits"]["hits"][0]["_source"]
        rows.append({
            "athlete_id": b["key"],
            "sessions": b["sessions"]["value"],
            "samples": b["doc_count"],
            "first_seen": _epoch_ms_to_utc(b["first"]["value"]),
            "last_seen": _epoch_ms_to_utc(b["last"]["value"]),
            "latest_bpm": latest["heart_rate"],
            "latest_session_id": latest["session_id"],
        })
    columns = ["athlete_id", "sessions", "samples", "first_seen", "last_seen", "latest_bpm",
               "latest_session_id"]
    return QueryResult(_frame(rows, columns), body, name)


# --- RMSSD per minute ----------------------------------------------------------------------------
def rmssd_per_minute(
    client: OpenSearch,
    index: IndexLike,
    *,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """RMSSD (ms) of the RR intervals measured in each minute, per athlete and session.

    Successive differences are taken only between beats of consecutive samples (``seq`` + 1):
    a sample missing from the index, or read without skin contact, breaks the run instead of
    inventing a difference.
    """
    name = index_name(index)
    query = sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end)
    series, body = _series(client, name, query, extra=["rr_intervals_ms"])
    rows = []
    for (athlete, session), group in _groups(series):
        group = group.sort_values("seq")
        minutes = group["timestamp"].dt.floor("min")
        for minute, in_minute in group.groupby(minutes, sort=True):
            runs: list[list[float]] = []
            previous_seq: int | None = None
            for seq, bpm, rr in zip(in_minute["seq"], in_minute["heart_rate"],
                                    in_minute["rr_intervals_ms"], strict=True):
                if not has_heart_rate(bpm):
                    previous_seq = None  # contact lost: the next beats start a new run
                    continue
                if previous_seq is None or seq != previous_seq + 1:
                    runs.append([])
                runs[-1].extend(rr if isinstance(rr, list) else [])
                previous_seq = seq
            rows.append({
                "athlete_id": athlete, "session_id": session, "minute": minute,
                "rmssd_ms": rmssd_ms_over_runs(runs),
                "rr_intervals": sum(len(run) for run in runs),
                "samples": len(in_minute),
            })
    columns = ["athlete_id", "session_id", "minute", "rmssd_ms", "rr_intervals", "samples"]
    df = _frame(rows, columns)
    df["minute"] = pd.to_datetime(df["minute"], utc=True)
    df["rmssd_ms"] = df["rmssd_ms"].astype(float)
    return QueryResult(df, body, name)


# --- latency -------------------------------------------------------------------------------------
def _percentile_row(hop: str, values_ms: np.ndarray) -> dict[str, Any]:
    values_ms = values_ms[~np.isnan(values_ms)]
    if values_ms.size == 0:
        return {"hop": hop, "samples": 0, **{f"p{p}_ms": np.nan for p in PERCENTS},
                "max_ms": np.nan}
    ordered = np.sort(values_ms)
    return {"hop": hop, "samples": int(values_ms.size),
            **{f"p{p}_ms": percentile(ordered, p / 100) for p in PERCENTS},
            "max_ms": float(ordered[-1])}


def latency(
    client: OpenSearch,
    index: IndexLike,
    *,
    searchable: SearchableProbe | None = None,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
) -> QueryResult:
    """p50/p95/p99 and max (ms) of each hop a sample made — measured→sent→Kinesis→indexed —
    and of measured→indexed end to end, read from the timestamps each document carries
    (exact percentiles as :func:`hrnb.metrics.percentile` defines them, over the matching
    documents). With a running
    :class:`SearchableProbe`, a ``measured→searchable`` row too."""
    name = index_name(index)
    query = sample_filter(athlete_id=athlete_id, session_id=session_id, start=start, end=end)
    stamps = ["timestamp", "sent_at", "kinesis_arrival", "ingested_at"]
    docs, body = _fetch_samples(client, name, query, ["athlete_id", "session_id", *stamps])
    df = _frame(docs, ["athlete_id", "session_id", *stamps], dates=stamps)
    rows = [
        _percentile_row(hop, ((df[later] - df[earlier]).dt.total_seconds() * 1000).to_numpy(
            dtype=float, na_value=np.nan))
        for hop, earlier, later in HOPS
    ]
    if searchable is not None:
        rows.append(_percentile_row("measured→searchable", searchable.latencies_ms(
            athlete_id=athlete_id, session_id=session_id, start=start, end=end)))
    columns = ["hop", "samples", *(f"p{p}_ms" for p in PERCENTS), "max_ms"]
    return QueryResult(_frame(rows, columns), body, name)

