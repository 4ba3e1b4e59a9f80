"""The one place queries talk to OpenSearch: a search call with its errors translated, paging
with search_after and composite aggregations."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from hrnb.boundary import opensearch_errors
from hrnb.errors import QueryError
from hrnb.query.scope import MAX_DOCS, PAGE_SIZE, SAMPLE_SORT

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


def _search(client: OpenSearch, index: str, body: dict[str, Any]) -> dict[str, Any]:
    """One search; OpenSearch's errors become QueryError naming the index and what to do."""
    from opensearchpy.exceptions import AuthorizationException

    with opensearch_errors(QueryError, "search", f"index {index!r}",
                           missing="it does not exist yet: run the set-up (hrnb setup) or check "
                                   "settings.index_name"):
        try:
            return client.search(index=index, body=body)
        except AuthorizationException as exc:  # signed, but not mapped to a reader role
            raise QueryError(_unmapped_reader(index, exc)) from exc


_USER_RE = re.compile(r"User \[name=(?P<name>[^,\]]+), backend_roles=\[(?P<roles>[^\]]*)\]")


def _unmapped_reader(index: str, exc: Any) -> str:
    """One line for a 403 from fine-grained access control: who is not mapped, and the set-up
    command that maps them to the reader role."""
    reason = json.dumps(exc.info, default=str) if exc.info else str(exc.error)
    found = _USER_RE.search(reason)
    if found is None:
        return (f"OpenSearch refused the query on {index!r} (HTTP 403): your IAM identity is not "
                "mapped to set-up's reader role (<prefix>-operator-reader); add its ARN with "
                "HRNB_READER_PRINCIPALS=<ARN>[,...] hrnb setup")
    roles = [role.strip() for role in found["roles"].split(",") if role.strip()]
    principal = roles[0] if roles else found["name"]  # an assumed role is mapped by its role
    return (f"OpenSearch refused the query on {index!r} (HTTP 403): {principal} is not mapped "
            "to set-up's reader role (<prefix>-operator-reader); add it with "
            f"HRNB_READER_PRINCIPALS={principal}[,...] hrnb setup")


def _fetch_samples(
    client: OpenSearch,
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
    client: OpenSearch, index: str, body: dict[str, Any], name: str
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


def _groups(df: pd.DataFrame) -> Iterable[tuple[tuple[Hashable, ...], pd.DataFrame]]:
    if df.empty:
        return []
    return df.groupby(["athlete_id", "session_id"], sort=True)


# --- time in zones, threshold crossings ----------------------------------------------------------
def _series(client: OpenSearch, index: str, query: dict[str, Any],
            extra: Sequence[str] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:
    source = ["athlete_id", "session_id", "seq", "timestamp", "heart_rate", *extra]
    docs, body = _fetch_samples(client, index, query, source)
    return _frame(docs, source, dates=["timestamp"]), body

