"""What a query selects: the index, athlete and session filters, the time range, and the
pure request-body pieces built from them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from hrnb.config import Settings
from hrnb.errors import ConfigError
from hrnb.wire.alert import DEFAULT_ALERT_THRESHOLD_BPM
from hrnb.wire.records import format_timestamp

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


_INTERVAL_RE = re.compile(r"[1-9]\d*(ms|s|m|h|d)")  # fullmatch: "$" accepts a newline


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
    return (index.hr_alert_threshold_bpm if isinstance(index, Settings)
            else DEFAULT_ALERT_THRESHOLD_BPM)


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

