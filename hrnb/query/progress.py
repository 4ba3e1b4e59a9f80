"""What the index holds of a stream: indexed against seen, missing sequence ranges, and the
sample-to-searchable probe."""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from hrnb.errors import ConfigError
from hrnb.query.scope import IdFilter, IndexLike, QueryResult, TimeBound, index_name, sample_filter
from hrnb.query.search import (
    _composite,
    _epoch_ms_to_utc,
    _fetch_samples,
    _frame,
    _per_session_body,
    _search,
)
from hrnb.wire.records import document_id, parse_timestamp

if TYPE_CHECKING:
    from opensearchpy import OpenSearch


# --- seqs seen, bounded ------------------------------------------------------------------------
class SeqRanges:
    """A set of seq numbers kept as sorted inclusive ranges, so an unbroken 3-hour session is
    one pair. Past ``max_ranges`` the oldest range is forgotten (counted in ``forgotten``)."""

    def __init__(self, max_ranges: int = 256) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.max_ranges = max_ranges
        self.count = 0
        self.forgotten = 0

    def add(self, seq: int) -> bool:
        """Record ``seq``; False when it was already there."""
        starts, ends = self._starts, self._ends
        if ends and seq == ends[-1] + 1:  # the usual case: the next seq in order
            ends[-1] = seq
        else:
            i = bisect_left(ends, seq)  # first range that ends at or after seq
            if i < len(ends) and starts[i] <= seq:
                return False
            joins_left = i > 0 and ends[i - 1] == seq - 1
            joins_right = i < len(starts) and starts[i] == seq + 1
            if joins_left and joins_right:
                ends[i - 1] = ends[i]
                del starts[i], ends[i]
            elif joins_left:
                ends[i - 1] = seq
            elif joins_right:
                starts[i] = seq
            else:
                starts.insert(i, seq)
                ends.insert(i, seq)
        self.count += 1
        while len(starts) > self.max_ranges:
            self.forgotten += ends[0] - starts[0] + 1
            self.count -= ends[0] - starts[0] + 1
            del starts[0], ends[0]
        return True

    def __contains__(self, seq: int) -> bool:
        i = bisect_left(self._ends, seq)
        return i < len(self._ends) and self._starts[i] <= seq

    def ranges(self, upto: int | None = None) -> list[tuple[int, int]]:
        """The ranges, clipped to seqs ``<= upto`` when given."""
        pairs = zip(self._starts, self._ends, strict=True)
        if upto is None:
            return list(pairs)
        return [(low, min(high, upto)) for low, high in pairs if low <= upto]


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

    client: OpenSearch
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
    client: OpenSearch,
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
    client: OpenSearch,
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
    expected_filter: dict[str, Any] = {
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

