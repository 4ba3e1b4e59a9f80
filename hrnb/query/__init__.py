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

from hrnb.query.named import QUERY_NAMES, run_named_query
from hrnb.query.plots import (
    plot_athletes,
    plot_crossings,
    plot_last_per_interval,
    plot_latency,
    plot_rmssd,
    plot_samples,
    plot_sessions,
    plot_summary,
    plot_time_in_zones,
)
from hrnb.query.progress import SearchableProbe, SearchObservation, index_progress, missing_seqs
from hrnb.query.scope import (
    MAX_DOCS,
    PAGE_SIZE,
    SAMPLE_COLUMNS,
    SAMPLE_SORT,
    IdFilter,
    IndexLike,
    QueryResult,
    TimeBound,
    index_name,
    sample_filter,
)
from hrnb.query.views import (
    HOPS,
    PERCENTS,
    athletes,
    last_minutes,
    last_per_interval,
    latency,
    rmssd_per_minute,
    samples,
    sessions,
    summary,
    threshold_crossings,
    time_in_zones,
)

__all__ = [
    "HOPS",
    "IdFilter",
    "IndexLike",
    "MAX_DOCS",
    "PAGE_SIZE",
    "PERCENTS",
    "QUERY_NAMES",
    "QueryResult",
    "SAMPLE_COLUMNS",
    "SAMPLE_SORT",
    "SearchObservation",
    "SearchableProbe",
    "TimeBound",
    "athletes",
    "index_name",
    "index_progress",
    "last_minutes",
    "last_per_interval",
    "latency",
    "missing_seqs",
    "plot_athletes",
    "plot_crossings",
    "plot_last_per_interval",
    "plot_latency",
    "plot_rmssd",
    "plot_samples",
    "plot_sessions",
    "plot_summary",
    "plot_time_in_zones",
    "rmssd_per_minute",
    "run_named_query",
    "sample_filter",
    "samples",
    "sessions",
    "summary",
    "threshold_crossings",
    "time_in_zones",
]
