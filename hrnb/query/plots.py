"""One Plotly figure per query result."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go

from hrnb.metrics import (
    ZONE_NAMES,
)
from hrnb.query.scope import QueryResult
from hrnb.query.views import PERCENTS


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


def plot_last_per_interval(result: QueryResult) -> go.Figure:
    """Step line of the last value per interval, as the reference's dashboard drew it."""
    fig = px.line(result.df, x="interval_start", y="heart_rate", color="athlete_id",
                  line_shape="hv", markers=True,
                  labels={"heart_rate": "last heart rate (bpm)", "interval_start": "interval"})
    return fig


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


def plot_time_in_zones(result: QueryResult) -> go.Figure:
    """Stacked minutes per zone for each athlete/session."""
    df = result.df.assign(
        label=lambda d: d["athlete_id"] + " / " + d["session_id"],
        minutes=lambda d: d["seconds"] / 60,
    )
    return px.bar(df, x="label", y="minutes", color="zone_name",
                  category_orders={"zone_name": list(ZONE_NAMES)},
                  labels={"label": "athlete / session", "minutes": "minutes in zone"})


def plot_crossings(result: QueryResult) -> go.Figure:
    """Episodes above the threshold as bars on a timeline, one row per athlete."""
    df = result.df
    fig = px.timeline(df, x_start="start", x_end="end", y="athlete_id", color="peak_bpm",
                      hover_data=["session_id", "duration_s", "samples"],
                      labels={"peak_bpm": "peak (bpm)"})
    return fig


def plot_sessions(result: QueryResult) -> go.Figure:
    """Sessions as bars on a timeline, one row per athlete."""
    return px.timeline(result.df, x_start="first", x_end="last", y="athlete_id",
                       color="session_id", hover_data=["samples", "not_indexed", "mean_bpm"])


def plot_athletes(result: QueryResult) -> go.Figure:
    """Samples per athlete, coloured by their latest heart rate."""
    return px.bar(result.df, x="athlete_id", y="samples", color="latest_bpm",
                  hover_data=["sessions", "last_seen"])


def plot_rmssd(result: QueryResult) -> go.Figure:
    """RMSSD per minute, one line per athlete/session."""
    return px.line(result.df, x="minute", y="rmssd_ms", color="athlete_id",
                   line_dash="session_id", markers=True,
                   labels={"rmssd_ms": "RMSSD (ms)", "minute": "minute (UTC)"})


def plot_latency(result: QueryResult) -> go.Figure:
    """p50/p95/p99 per hop as grouped bars."""
    long = result.df.melt(id_vars=["hop"], value_vars=[f"p{p}_ms" for p in PERCENTS],
                          var_name="percentile", value_name="ms")
    return px.bar(long, x="hop", y="ms", color="percentile", barmode="group",
                  labels={"ms": "latency (ms)"})

