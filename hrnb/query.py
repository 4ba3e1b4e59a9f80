"""Stored heart rate as pandas DataFrames, straight from OpenSearch, for notebook cells.

Every query function takes ``(client, index, ...)`` — ``index`` an index name or a
:class:`~hrnb.config.Settings` — plus optional athlete / session filters and a time range, and
returns a :class:`QueryResult`: ``.df`` holds the rows, ``.query`` the request body it sent
(``.show_query()`` prints it as you would paste it into Dev Tools). One ``plot_*`` helper per query
turns a result into a Plotly figure.

What OpenSearch computes and what is computed here:

* counts, statistics, last value per interval, sessions and athletes are aggregations;
* time in zones, threshold crossings, RMSSD and latency need the samples in order (RR intervals
  are stored as an array whose order doc values do not keep), so they page through the
  matching documents with ``search_after`` and apply the pure functions of
  :mod:`hrnb.metrics` — the same ones the live chart uses;
* samples read without skin contact are indexed with ``heart_rate`` null: they count as
  samples (``no_contact`` in :func:`summary`), every bpm statistic skips them, series hold NaN
  there, so charts and the per-sample metrics show a gap, never 0 bpm;
* sample→searchable cannot be read from a document (OpenSearch does not record when a refresh
  made it visible), so :class:`SearchableProbe` measures it by polling and noting when each new
  document is first returned (an upper bound, exact to one poll interval). It compares the
  probe's clock with ``timestamp``, both stamped on the machine receiving the watch.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from hrnb.config import Settings
from hrnb.errors import ConfigError, QueryError
from hrnb.metrics import (
    DEFAULT_MAX_GAP_S,
    ZONE_NAMES,
    HeartRateZones,
    has_heart_rate,
    rmssd_ms_over_runs,
    threshold_episodes,
    time_in_zones_s,
)
from hrnb.records import document_id, format_timestamp, parse_timestamp

logger = logging.getLogger(__name__)

IndexLike = str | Settings
#: One athlete/session id, several (matched with ``terms``), or None for all.
IdFilter = str | Sequence[str] | None
#: A datetime (timezone-aware) or OpenSearch date math such as ``"now-5m"``.
TimeBound = datetime | str | None

#: Documents per page when a query reads samples one by one.
PAGE_SIZE = 5000
#: Refuse to pull more samples than this into the notebook; narrow the range instead.
MAX_DOCS = 500_000
#: Total order of samples: by measurement time, ties by identity (unique: it is the ``_id``).
SAMPLE_SORT = [{"timestamp": "asc"}, {"athlete_id": "asc"}, {"session_id": "asc"}, {"seq": "asc"}]
SAMPLE_COLUMNS = [
    "athlete_id", "session_id", "device_id", "seq", "timestamp", "heart_rate", "sensor_contact",
    "energy_expended", "rr_intervals_ms", "alert",
]
#: Hops a sample makes, named by the document fields that timestamp them.
HOPS = (
    ("measured→sent", "timestamp", "sent_at"),
    ("sent→kinesis", "sent_at", "kinesis_arrival"),
    ("kinesis→indexed", "kinesis_arrival", "ingested_at"),
    ("measured→indexed", "timestamp", "ingested_at"),
)
PERCENTS = (50, 95, 99)
_INTERVAL_RE = re.compile(r"^[1-9]\d*(ms|s|m|h|d)$")
_DEFAULT_THRESHOLD_BPM: int = next(
    f.default for f in fields(Settings) if f.name == "hr_alert_threshold_bpm"
)


@dataclass(frozen=True, eq=False)
class QueryResult:
    """Rows from one query and the request that produced them."""

    df: pd.DataFrame
    query: dict[str, Any]
    index: str

    def show_query(self) -> str:
        """The request as Dev Tools takes it: ``GET <index>/_search`` and the JSON body."""
        return f"GET {self.index}/_search\n{json.dumps(self.query, indent=2, default=str)}"

    def _repr_html_(self) -> str:
        return self.df._repr_html_()  # type: ignore[operator]


# --- building blocks -----------------------------------------------------------------------------
def index_name(index: IndexLike) -> str:
    return index.index_name if isinstance(index, Settings) else index


def _threshold(index: IndexLike, threshold_bpm: int | None) -> int:
    if threshold_bpm is not None:
        return threshold_bpm
    return index.hr_alert_threshold_bpm if isinstance(index, Settings) else _DEFAULT_THRESHOLD_BPM


def _bound(value: datetime | str, name: str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ConfigError(f"{name} must be timezone-aware (UTC), got {value!r}", setting=name)
    return format_timestamp(value)


def _minutes_ago(minutes: float) -> str:
    """OpenSearch date math for ``minutes`` before its ``now`` (whole seconds: date math has
    no milliseconds)."""
    return f"now-{max(1, round(minutes * 60))}s"


def _id_clause(field_name: str, value: IdFilter) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [{"term": {field_name: value}}]
    return [{"terms": {field_name: list(value)}}]


def sample_filter(
    *,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
    start: TimeBound = None,
    end: TimeBound = None,
    time_field: str = "timestamp",
) -> dict[str, Any]:
    """The ``bool`` filter every query shares: ids by ``term``/``terms``, time as
    ``start <= t < end``."""
    clauses = _id_clause("athlete_id", athlete_id) + _id_clause("session_id", session_id)
    span: dict[str, str] = {}
    if start is not None:
        span["gte"] = _bound(start, "start")
    if end is not None:
        span["lt"] = _bound(end, "end")
    if span:
        clauses.append({"range": {time_field: span}})
    return {"bool": {"filter": clauses}}


def _search(client: Any, index: str, body: dict[str, Any]) -> dict[str, Any]:
    """One search; OpenSearch's errors become QueryError naming the index and what to do."""
    from opensearchpy.exceptions import ConnectionError as OSConnectionError
    from opensearchpy.exceptions import NotFoundError, TransportError

    try:
        return client.search(index=index, body=body)
    except NotFoundError as exc:
        raise QueryError(
            f"index {index!r} does not exist yet: run the set-up (hrnb setup) or check "
            "settings.index_name"
        ) from exc
    except OSConnectionError as exc:
        raise QueryError(
            f"cannot reach OpenSearch for index {index!r}: {exc.info or exc.error} "
            "(is the local stack up? 'hrnb local status')"
        ) from exc
    except TransportError as exc:
        raise QueryError(
            f"OpenSearch rejected the query on {index!r} (HTTP {exc.status_code}): {exc.error}"
            f" {json.dumps(exc.info, default=str)[:500] if exc.info else ''}".rstrip()
        ) from exc


def _fetch_samples(
    client: Any,
    index: str,
    query: dict[str, Any],
    source: list[str],
    *,
    max_docs: int = MAX_DOCS,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every matching document's ``source`` fields in :data:`SAMPLE_SORT` order, paged with
    ``search_after``; returns the documents and the first page's request."""
    body: dict[str, Any] = {
        "query": query,
        "size": PAGE_SIZE,
        "sort": SAMPLE_SORT,
        "_source": source,
        "track_total_hits": False,
    }
    first_body = body
    docs: list[dict[str, Any]] = []
    while True:
        hits = _search(client, index, body)["hits"]["hits"]
        docs.extend(hit["_source"] for hit in hits)
        if len(docs) > max_docs:
            raise QueryError(
                f"more than {max_docs} samples match on {index!r}: narrow the time range or "
                "filter by athlete/session"
            )
        if len(hits) < PAGE_SIZE:
            return docs, first_body
        body = {**body, "search_after": hits[-1]["sort"]}


def _to_utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True, format="ISO8601")


def _frame(rows: Iterable[dict[str, Any]], columns: list[str],
           dates: Iterable[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame.from_records(list(rows), columns=columns)
    for name in dates:
        df[name] = _to_utc(df[name])
    return df


def _per_session_body(query: dict[str, Any], aggs: dict[str, Any]) -> dict[str, Any]:
    """A search body with ``aggs`` per (athlete, session), as composite aggregation
    ``sessions`` (paged by :func:`_composite`)."""
    return {
        "size": 0,
        "query": query,
        "aggs": {
            "sessions": {
                "composite": {
                    "size": 500,
                    "sources": [
                        {"athlete_id": {"terms": {"field": "athlete_id"}}},
                        {"session_id": {"terms": {"field": "session_id"}}},
                    ],
                },
                "aggs": aggs,
            }
        },
    }


def _composite(
    client: Any, index: str, body: dict[str, Any], name: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All buckets of composite aggregation ``name``, following ``after_key``."""
    first_body = body
    buckets: list[dict[str, Any]] = []
    while True:
        agg = _search(client, index, body)["aggregations"][name]
        buckets.extend(agg["buckets"])
        after = agg.get("after_key")
        if not agg["buckets"] or after is None:
            return buckets, first_body
        body = copy.deepcopy(body)
        body["aggs"][name]["composite"]["after"] = after


def _epoch_ms_to_utc(value: float | None) -> pd.Timestamp | None:
    return None if value is None else pd.Timestamp(int(value), unit="ms", tz="UTC")


def _groups(df: pd.DataFrame) -> Iterable[tuple[tuple[str, str], pd.DataFrame]]:
    if df.empty:
        return []
    return df.groupby(["athlete_id", "session_id"], sort=True)


# --- samples -------------------------------------------------------------------------------------
def samples(
    client: Any,
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
    client: Any,
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


def plot_samples(result: QueryResult, *, threshold_bpm: float | None = None) -> go.Figure:
    """Heart rate over time, one line per athlete/session."""
    df = result.df
    fig = px.line(df, x="timestamp", y="heart_rate", color="athlete_id",
                  line_dash="session_id", markers=len(df) < 200,
                  labels={"heart_rate": "heart rate (bpm)", "timestamp": "time (UTC)"})
    if threshold_bpm is not None:
        fig.add_hline(y=threshold_bpm, line_dash="dash", line_color="red",
                      annotation_text=f"alert > {threshold_bpm} bpm")
    return fig


# --- last value per interval ---------------------------------------------------------------------
def last_per_interval(
    client: Any,
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
    if not _INTERVAL_RE.match(interval):
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


def plot_last_per_interval(result: QueryResult) -> go.Figure:
    """Step line of the last value per interval, as the reference's dashboard drew it."""
    fig = px.line(result.df, x="interval_start", y="heart_rate", color="athlete_id",
                  line_shape="hv", markers=True,
                  labels={"heart_rate": "last heart rate (bpm)", "interval_start": "interval"})
    return fig


# --- summary statistics --------------------------------------------------------------------------
def summary(
    client: Any,
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


def plot_summary(result: QueryResult) -> go.Figure:
    """Mean bpm per athlete/session with the min–max range as error bars."""
    df = result.df.assign(label=lambda d: d["athlete_id"] + " / " + d["session_id"])
    fig = go.Figure(go.Bar(
        x=df["label"], y=df["mean_bpm"], name="mean",
        error_y={"type": "data", "symmetric": False, "array": df["max_bpm"] - df["mean_bpm"],
                 "arrayminus": df["mean_bpm"] - df["min_bpm"]},
    ))
    fig.update_layout(yaxis_title="heart rate (bpm): mean, min–max",
                      xaxis_title="athlete / session")
    return fig


# --- time in zones, threshold crossings ----------------------------------------------------------
def _series(client: Any, index: str, query: dict[str, Any],
            extra: Sequence[str] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:
    source = ["athlete_id", "session_id", "seq", "timestamp", "heart_rate", *extra]
    docs, body = _fetch_samples(client, index, query, source)
    return _frame(docs, source, dates=["timestamp"]), body


def time_in_zones(
    client: Any,
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


def plot_time_in_zones(result: QueryResult) -> go.Figure:
    """Stacked minutes per zone for each athlete/session."""
    df = result.df.assign(
        label=lambda d: d["athlete_id"] + " / " + d["session_id"],
        minutes=lambda d: d["seconds"] / 60,
    )
    return px.bar(df, x="label", y="minutes", color="zone_name",
                  category_orders={"zone_name": list(ZONE_NAMES)},
                  labels={"label": "athlete / session", "minutes": "minutes in zone"})


def threshold_crossings(
    client: Any,
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


def plot_crossings(result: QueryResult) -> go.Figure:
    """Episodes above the threshold as bars on a timeline, one row per athlete."""
    df = result.df
    fig = px.timeline(df, x_start="start", x_end="end", y="athlete_id", color="peak_bpm",
                      hover_data=["session_id", "duration_s", "samples"],
                      labels={"peak_bpm": "peak (bpm)"})
    return fig


# --- sessions and athletes -----------------------------------------------------------------------
def sessions(
    client: Any,
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


def plot_sessions(result: QueryResult) -> go.Figure:
    """Sessions as bars on a timeline, one row per athlete."""
    return px.timeline(result.df, x_start="first", x_end="last", y="athlete_id",
                       color="session_id", hover_data=["samples", "not_indexed", "mean_bpm"])


def athletes(
    client: Any,
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


def plot_athletes(result: QueryResult) -> go.Figure:
    """Samples per athlete, coloured by their latest heart rate."""
    return px.bar(result.df, x="athlete_id", y="samples", color="latest_bpm",
                  hover_data=["sessions", "last_seen"])


# --- RMSSD per minute ----------------------------------------------------------------------------
def rmssd_per_minute(
    client: Any,
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


def plot_rmssd(result: QueryResult) -> go.Figure:
    """RMSSD per minute, one line per athlete/session."""
    return px.line(result.df, x="minute", y="rmssd_ms", color="athlete_id",
                   line_dash="session_id", markers=True,
                   labels={"rmssd_ms": "RMSSD (ms)", "minute": "minute (UTC)"})


# --- latency -------------------------------------------------------------------------------------
def _percentile_row(hop: str, values_ms: np.ndarray) -> dict[str, Any]:
    values_ms = values_ms[~np.isnan(values_ms)]
    if values_ms.size == 0:
        return {"hop": hop, "samples": 0, **{f"p{p}_ms": np.nan for p in PERCENTS},
                "max_ms": np.nan}
    quantiles = np.percentile(values_ms, PERCENTS)
    return {"hop": hop, "samples": int(values_ms.size),
            **{f"p{p}_ms": float(q) for p, q in zip(PERCENTS, quantiles, strict=True)},
            "max_ms": float(values_ms.max())}


def latency(
    client: Any,
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
    (exact percentiles, linear interpolation, over the matching documents). With a running
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


def plot_latency(result: QueryResult) -> go.Figure:
    """p50/p95/p99 per hop as grouped bars."""
    long = result.df.melt(id_vars=["hop"], value_vars=[f"p{p}_ms" for p in PERCENTS],
                          var_name="percentile", value_name="ms")
    return px.bar(long, x="hop", y="ms", color="percentile", barmode="group",
                  labels={"ms": "latency (ms)"})


@dataclass(frozen=True)
class SearchObservation:
    """A document first returned by a search ``latency_s`` after it was measured."""

    athlete_id: str
    session_id: str
    seq: int
    timestamp: datetime
    latency_s: float


@dataclass
class SearchableProbe:
    """Measures sample→searchable by polling: each poll asks for documents indexed in the last
    ``lookback_s`` and notes, for each one not returned before, when the response arrived minus
    its ``timestamp``. The first poll only takes stock (what is visible then has no known
    moment of becoming so). Poll often (every 0.25–1 s): the figure is an upper bound, exact to
    one poll interval plus one search round trip. Memory is bounded by ``max_observations``.
    """

    client: Any
    index: IndexLike
    athlete_id: IdFilter = None
    session_id: IdFilter = None
    lookback_s: float = 30.0
    max_observations: int = 100_000
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    observations: deque[SearchObservation] = field(init=False)
    last_query: dict[str, Any] | None = field(init=False, default=None)
    _seen: dict[str, float] = field(init=False, default_factory=dict)
    _previous_request: datetime | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.observations = deque(maxlen=self.max_observations)

    def poll(self) -> int:
        """One search (blocking: call it through ``asyncio.to_thread`` from async code);
        returns how many documents became searchable since the previous poll."""
        requested = self.clock()
        since = (self._previous_request or requested) - timedelta(seconds=self.lookback_s)
        query = sample_filter(athlete_id=self.athlete_id, session_id=self.session_id,
                              start=since, time_field="ingested_at")
        docs, self.last_query = _fetch_samples(
            self.client, index_name(self.index), query,
            ["athlete_id", "session_id", "seq", "timestamp", "ingested_at"],
        )
        answered = self.clock()
        taking_stock = self._previous_request is None
        fresh = 0
        for doc in docs:
            key = document_id(doc)
            if key in self._seen:
                continue
            self._seen[key] = parse_timestamp(doc["ingested_at"], field="ingested_at").timestamp()
            if taking_stock:
                continue
            measured = parse_timestamp(doc["timestamp"])
            self.observations.append(SearchObservation(
                doc["athlete_id"], doc["session_id"], doc["seq"], measured,
                (answered - measured).total_seconds(),
            ))
            fresh += 1
        horizon = since.timestamp()
        self._seen = {key: at for key, at in self._seen.items() if at >= horizon}
        self._previous_request = requested
        return fresh

    def retarget(self, athlete_id: IdFilter = None, session_id: IdFilter = None) -> None:
        """Follow other athletes/sessions; the next poll takes stock again, so documents that
        were already visible before they were followed are not timed."""
        self.athlete_id, self.session_id = athlete_id, session_id
        self._previous_request = None

    def latencies_ms(
        self,
        *,
        athlete_id: IdFilter = None,
        session_id: IdFilter = None,
        start: TimeBound = None,
        end: TimeBound = None,
    ) -> np.ndarray:
        """Observed sample→searchable latencies (ms), optionally filtered like the queries
        (date math in ``start``/``end`` is not understood here and is ignored)."""
        def wanted(value: str, selector: IdFilter) -> bool:
            if selector is None:
                return True
            return value == selector if isinstance(selector, str) else value in selector

        low = start if isinstance(start, datetime) else None
        high = end if isinstance(end, datetime) else None
        observed = self.observations.copy()  # one C call: safe while poll() runs in a thread
        return np.array([
            o.latency_s * 1000 for o in observed
            if wanted(o.athlete_id, athlete_id) and wanted(o.session_id, session_id)
            and (low is None or o.timestamp >= low) and (high is None or o.timestamp < high)
        ], dtype=float)


# --- what the live view needs from the index ------------------------------------------------------
def index_progress(
    client: Any,
    index: IndexLike,
    *,
    athlete_id: IdFilter = None,
    session_id: IdFilter = None,
) -> QueryResult:
    """Per athlete and session: documents indexed, highest seq, latest measurement time and
    latest ``ingested_at`` — what the live dashboard's indexed panel shows."""
    name = index_name(index)
    body = _per_session_body(sample_filter(athlete_id=athlete_id, session_id=session_id), {
        "last_seq": {"max": {"field": "seq"}},
        "last_timestamp": {"max": {"field": "timestamp"}},
        "last_ingested_at": {"max": {"field": "ingested_at"}},
    })
    buckets, first_body = _composite(client, name, body, "sessions")
    rows = [
        {
            "athlete_id": b["key"]["athlete_id"],
            "session_id": b["key"]["session_id"],
            "indexed": b["doc_count"],
            "last_seq": int(b["last_seq"]["value"]),
            "last_timestamp": _epoch_ms_to_utc(b["last_timestamp"]["value"]),
            "last_ingested_at": _epoch_ms_to_utc(b["last_ingested_at"]["value"]),
        }
        for b in buckets
    ]
    columns = ["athlete_id", "session_id", "indexed", "last_seq", "last_timestamp",
               "last_ingested_at"]
    return QueryResult(_frame(rows, columns), first_body, name)


def _ranges_to_runs(seqs: Iterable[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if runs and seq == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


def missing_seqs(
    client: Any,
    index: IndexLike,
    athlete_id: str,
    session_id: str,
    expected: Sequence[tuple[int, int]],
    *,
    bucket_size: int = 1000,
) -> QueryResult:
    """Which of the ``expected`` seqs (inclusive ranges, e.g. what the live view saw) are not
    in the index, as runs ``first_seq..last_seq``. A ``histogram`` on seq finds the short
    buckets; only those are read seq by seq."""
    name = index_name(index)
    columns = ["athlete_id", "session_id", "first_seq", "last_seq", "count"]
    if len(expected) > 1000:
        raise ConfigError(
            f"{len(expected)} expected seq ranges: at most 1000 fit in one query",
            setting="expected",
        )
    expected_filter = {
        "bool": {
            "filter": [{"term": {"athlete_id": athlete_id}}, {"term": {"session_id": session_id}}],
            "should": [{"range": {"seq": {"gte": low, "lte": high}}} for low, high in expected],
            "minimum_should_match": 1,
        }
    }
    body = {
        "size": 0,
        "query": expected_filter,
        "aggs": {"per_bucket": {"histogram": {"field": "seq", "interval": bucket_size}}},
    }
    if not expected:
        return QueryResult(_frame([], columns), body, name)
    present = {
        int(b["key"]): b["doc_count"]
        for b in _search(client, name, body)["aggregations"]["per_bucket"]["buckets"]
    }
    wanted: dict[int, int] = {}
    for low, high in expected:
        for bucket in range(low // bucket_size, high // bucket_size + 1):
            start = max(low, bucket * bucket_size)
            stop = min(high, (bucket + 1) * bucket_size - 1)
            wanted[bucket * bucket_size] = wanted.get(bucket * bucket_size, 0) + stop - start + 1
    missing: list[int] = []
    for bucket_start, count in sorted(wanted.items()):
        if present.get(bucket_start, 0) == count:
            continue
        span = {"range": {"seq": {"gte": bucket_start, "lt": bucket_start + bucket_size}}}
        drill = {"bool": {**expected_filter["bool"],
                          "filter": [*expected_filter["bool"]["filter"], span]}}
        hits = _search(client, name, {"size": bucket_size, "query": drill, "_source": False,
                                      "docvalue_fields": ["seq"]})["hits"]["hits"]
        found = {int(hit["fields"]["seq"][0]) for hit in hits}
        missing.extend(
            seq
            for low, high in expected
            for seq in range(max(low, bucket_start), min(high, bucket_start + bucket_size - 1) + 1)
            if seq not in found
        )
    rows = [
        {"athlete_id": athlete_id, "session_id": session_id, "first_seq": first,
         "last_seq": last, "count": last - first + 1}
        for first, last in _ranges_to_runs(missing)
    ]
    return QueryResult(_frame(rows, columns), body, name)


# --- one entry point for the command line -------------------------------------------------------
QUERY_NAMES = ("recent", "last-per-interval", "summary", "zones", "crossings", "sessions",
               "athletes", "rmssd", "latency")


def run_named_query(
    name: str,
    client: Any,
    index: IndexLike,
    *,
    minutes: float | None = None,
    athlete_id: str | None = None,
    session_id: str | None = None,
    interval: str = "5s",
    zones: HeartRateZones | None = None,
    threshold_bpm: int | None = None,
) -> QueryResult:
    """Run one of :data:`QUERY_NAMES` over the last ``minutes`` (None: all data) — what
    ``hrnb query NAME`` calls."""
    start = None if minutes is None else _minutes_ago(minutes)
    scope: dict[str, Any] = {"athlete_id": athlete_id, "start": start}
    if name == "recent":
        return last_minutes(client, index, minutes or 5, athlete_id=athlete_id,
                            session_id=session_id)
    if name == "last-per-interval":
        return last_per_interval(client, index, interval, session_id=session_id, **scope)
    if name == "summary":
        return summary(client, index, threshold_bpm=threshold_bpm, session_id=session_id, **scope)
    if name == "zones":
        if zones is None:
            raise ConfigError("the zones query needs a max heart rate (--max-hr)",
                              setting="max_hr_bpm")
        return time_in_zones(client, index, zones, session_id=session_id, **scope)
    if name == "crossings":
        return threshold_crossings(client, index, threshold_bpm, session_id=session_id, **scope)
    if name == "sessions":
        return sessions(client, index, **scope)
    if name == "athletes":
        return athletes(client, index, start=start)
    if name == "rmssd":
        return rmssd_per_minute(client, index, session_id=session_id, **scope)
    if name == "latency":
        return latency(client, index, session_id=session_id, **scope)
    raise ConfigError(f"unknown query {name!r}; choose from {', '.join(QUERY_NAMES)}",
                      setting="query")
