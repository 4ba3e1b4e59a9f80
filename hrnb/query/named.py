"""The queries the command line offers by name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hrnb.errors import ConfigError
from hrnb.metrics import (
    HeartRateZones,
)
from hrnb.query.scope import IndexLike, QueryResult, _minutes_ago
from hrnb.query.views import (
    athletes,
    last_minutes,
    last_per_interval,
    latency,
    rmssd_per_minute,
    sessions,
    summary,
    threshold_crossings,
    time_in_zones,
)

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

# --- one entry point for the command line -------------------------------------------------------
QUERY_NAMES = ("recent", "last-per-interval", "summary", "zones", "crossings", "sessions",
               "athletes", "rmssd", "latency")


def run_named_query(
    name: str,
    client: OpenSearch,
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

